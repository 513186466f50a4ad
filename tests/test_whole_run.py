"""Whole runs of the originals' own ``train.py`` against ours (``benchmarks/whole_run.py``): the same generated
DTD-layout data, seed, small random CLIP and config, CPU, float32, 4 epochs of 4 batches.

Every batch's images, labels and pixels and every step's learning rate must be equal, every step's loss within 1e-5
relative, every test prediction equal and the learned tensors within 1e-5; where an original makes another numeric
choice than ours, ``Case.differs`` says which and the bounds are wider. The random state after building and the
learned tensors when training starts must be equal too (VPT, IVLP and PromptSRC draw their deep prompts inside CLIP's
construction, as their originals; the fp32 cases exactly). The
``fp16`` cases run both in ``PREC fp16`` (ours with ``FP16_LEARNED True``): every learned tensor must have the
original's dtype, and the bounds are fp16 rounding's (``whole_run.FP16``); those whose original takes minutes in fp16
on a CPU (MaPLe's) carry the marker ``slow`` (``Case.slow``). The
patches each original needs here are named in ``whole_run.PATCHES`` (per case in ``Case.patches``). Needs the
checkouts named by COOP_ORIGINAL_REPO, LAMM_OFFICIAL_REPO, MAPLE_ORIGINAL_REPO, KGCOOP_ORIGINAL_REPO,
PROMPTSRC_ORIGINAL_REPO, and Dassl.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import whole_run  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.dassl]


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=[pytest.mark.slow] * bool(case.slow)) for name, case in whole_run.CASES.items()]
)
def test_whole_run_equals_the_original_train_py(name, tmp_path):
    variable = whole_run.CASES[name].repo_env
    if not os.environ.get(variable):
        pytest.skip(f"the original code is not given: set {variable} to its checkout")
    case = whole_run.CASES[name]
    diff = whole_run.run_case(name, str(tmp_path))
    steps = whole_run.EPOCHS * (whole_run.CLASSES * whole_run.SHOTS // whole_run.BATCH)
    assert diff["steps"] == (steps, steps), diff
    assert diff["same batches"] and diff["same lrs"], diff
    assert diff["same random state after building"], diff
    assert diff["initial max diff"] == 0, diff
    assert diff["loss rel. diff"] < case.loss_rtol, (diff, case.differs)
    equal, n_theirs, n_ours = diff["predictions"]
    assert n_theirs == n_ours == whole_run.CLASSES * whole_run.PER_CLASS[2], diff
    assert equal >= n_theirs - case.predictions_differ, (diff, case.differs)
    assert diff["learned max diff"] < case.learned_atol, (diff, case.differs)
    assert not diff["dtypes differ"], diff  # each learned tensor in the original's dtype (FP16_LEARNED in fp16)
    if case.grad_rtol is not None:
        assert diff["first grad rel. diff"] < case.grad_rtol, (diff, case.differs)
