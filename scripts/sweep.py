"""``scripts/lamm/sweep.sh`` for fewshot, base2new and xd: see ``lamm_plugin/sweep.py`` and docs/RUN.md."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _light import light_import  # noqa: E402

if __name__ == "__main__":
    sys.exit(light_import("sweep").main())
