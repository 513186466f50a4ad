"""Aggregate ``results.json`` files over seeds into a table (mean ± std): see :mod:`lamm_experiments.parse_results`.

Examples::

    python scripts/parse_results.py output/fewshot
    python scripts/parse_results.py output/fewshot --metric macro_f1 --format csv
    python scripts/parse_results.py output/base2new --base2new      # base, new and harmonic mean per row
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lamm_experiments.parse_results import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
