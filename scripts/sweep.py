"""``scripts/lamm/sweep.sh`` for fewshot, base2new and xd: see ``lamm_experiments/sweep.py`` and docs/RUN.md."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lamm_experiments.sweep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
