"""``python -m datasets.prepare``: see :mod:`datasets.prepare`."""

import sys

from .cli import main

sys.exit(main())
