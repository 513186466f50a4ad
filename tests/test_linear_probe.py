"""Linear-probe CLIP: the regularisation search equals CoOp's ``lpclip/linear_probe.py``, and the trainer runs
from ``train.py``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")
pytest.importorskip("sklearn", reason="scikit-learn comes with Dassl")

from runs import read_logs, results, run_train, tiny_opts  # noqa: E402

from lamm_plugin.dassl.linear_probe import search_regularization  # noqa: E402

pytestmark = pytest.mark.dassl


def _features(n_per_class: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian clusters (the search has something to choose), labels in order."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(classes, 8))
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + 1.5 * rng.normal(size=(len(labels), 8)), labels


@pytest.mark.e2e
def test_search_equals_coops_linear_probe_script(tmp_path):
    """CoOp's script on saved features (its own few-shot sampling) chooses the same C and reaches the same test
    accuracy as :func:`search_regularization` on the same few-shot sets, at every shot count."""
    script = Path(os.environ.get("COOP_ORIGINAL_REPO", ""), "lpclip", "linear_probe.py")
    if not os.environ.get("COOP_ORIGINAL_REPO") or not script.is_file():
        pytest.skip("set COOP_ORIGINAL_REPO to a checkout of CoOp to run its lpclip/linear_probe.py")
    classes, steps = 3, 3
    splits = {"train": _features(20, classes, 1), "val": _features(6, classes, 2), "test": _features(30, classes, 3)}
    (tmp_path / "feat" / "Toy").mkdir(parents=True)
    for split, (x, y) in splits.items():
        np.savez(tmp_path / "feat" / "Toy" / split, feature_list=x, label_list=y)
    args = ["--dataset", "Toy", "--feature_dir", "feat", "--num_step", str(steps), "--num_run", "1"]
    out = subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    details = (tmp_path / "report" / f"feat_s{steps}r1_details.txt").read_text().splitlines()
    theirs = {}  # shots -> (C, test accuracy) of the last step
    for line in details:
        shots, c, acc = re.match(r"Toy, seed 1, (\d+) shot, weight (\S+), test_acc (\S+)", line).groups()
        theirs[int(shots)] = (float(c), float(acc))

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = splits["train"], splits["val"], splits["test"]
    for shots, val_shots in {1: 1, 2: 2, 4: 4, 8: 4, 16: 4}.items():
        np.random.seed(1)  # the script's sampling, drawn in its order
        train = [np.random.choice(np.where(y_train == c)[0], shots, replace=False) for c in range(classes)]
        val = [np.random.choice(np.where(y_val == c)[0], val_shots, replace=False) for c in range(classes)]
        train, val = np.concatenate(train), np.concatenate(val)
        classifier, c, _ = search_regularization((x_train[train], y_train[train]), (x_val[val], y_val[val]), steps)
        accuracy = 100 * np.mean(classifier.predict(x_test) == y_test)
        assert c == pytest.approx(theirs[shots][0], rel=1e-9), (shots, c, theirs[shots])
        assert f"{accuracy:.2f}" == f"{theirs[shots][1]:.2f}", (shots, accuracy, theirs[shots])


def test_search_keeps_the_lower_end_on_a_tie():
    """Without a validation signal (every C ties), the grid's first value (1e6) is the peak and the lower end of
    its interval (1e5) is kept at every step, as the original's ``acc_left < acc_right`` test does."""
    train, val = _features(4, 3, 1), _features(1, 3, 2)
    x = np.zeros_like(val[0])  # identical inputs: every classifier predicts one class for all, every C ties
    _, c, _ = search_regularization(train, (x, val[1]), steps=3)
    assert c == pytest.approx(1e5, rel=1e-12)


def test_linear_probe_trains_and_evaluates_from_train_py(tmp_path):
    out = str(tmp_path / "lp")
    trainer = run_train("LinearProbeCLIP", str(tmp_path / "data"), out, small=tiny_opts(epochs=1, lr=None, shots=2))
    assert trainer.classifier is not None and trainer.optim is None
    assert re.search(r"Linear probe: C = \S+ \(validation accuracy", read_logs(out))
    result = results(out)
    assert result["trainer"] == "LinearProbeCLIP" and 0 <= result["accuracy"] <= 100 and not result["untrained"]
