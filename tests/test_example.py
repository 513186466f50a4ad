"""The README's Dassl-free example runs and learns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def test_core_example_runs_without_dassl():
    # Block dassl and yacs imports: the example must not need them.
    code = (
        "import sys; sys.modules['dassl'] = None; sys.modules['yacs'] = None; "
        f"sys.argv = ['train_core.py', '--steps', '40']; sys.path.insert(0, {str(ROOT / 'examples')!r}); "
        "import train_core; acc = train_core.main(sys.argv[1:]); assert acc >= 45, acc"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "* accuracy:" in out.stdout
