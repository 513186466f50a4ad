"""Linear-probe CLIP: the regularisation search equals CoOp's ``lpclip/linear_probe.py``, the trainer runs from
``train.py``, and its checkpoint keeps the classifier that ``--eval-only`` and the predictor apply."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")
pytest.importorskip("sklearn", reason="scikit-learn comes with Dassl")

from runs import read_logs, results, run_train, tiny_opts, train_args  # noqa: E402
from trainer_eval import train_recorded  # noqa: E402

from lamm_experiments.tables import load_runs  # noqa: E402
from lamm_plugin.dassl import linear_probe  # noqa: E402
from lamm_plugin.dassl.linear_probe import classifier_tensors, search_regularization  # noqa: E402
from lamm_plugin.errors import UserError  # noqa: E402
from lamm_plugin.layout import read_checkpoint  # noqa: E402
from lamm_plugin.predict import LINEAR_PROBE, Predictor, find_run_checkpoint, main, probe_logits  # noqa: E402

pytestmark = pytest.mark.dassl

#: One "epoch" (the fit), 4 classes, 2 shots.
SMALL = tiny_opts(epochs=1, lr=None, shots=2)


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


@pytest.mark.parametrize("classes", [2, 3])
def test_classifier_tensors_give_sklearns_log_probabilities(classes):
    """The saved classifier's log-softmax is scikit-learn's ``predict_log_proba`` (two classes: its sigmoid), over
    the classes it was fitted on; a class it never saw gets minus infinity."""
    from sklearn.linear_model import LogisticRegression

    (x, y), (x_test, _) = _features(6, classes, 1), _features(3, classes, 2)
    classifier = LogisticRegression(max_iter=1000, C=0.1).fit(x, y + 1)  # labels 1..classes: label 0 is unseen
    logits = probe_logits(classifier_tensors(classifier), torch.from_numpy(x_test).float(), classes + 1)
    expected = classifier.predict_log_proba(x_test.astype(np.float32).astype(np.float64))
    assert logits.dtype == torch.float32 and torch.all(logits[:, 0] == -math.inf)
    np.testing.assert_allclose(logits[:, 1:].numpy(), expected, rtol=1e-6, atol=1e-6)  # float32 of float64 values


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """One linear-probe run on the synthetic shapes (its final evaluation's logits recorded)."""
    root = tmp_path_factory.mktemp("lp")
    # The folder layout of a few-shot sweep, so that the tables read it.
    out = str(root / "fewshot" / "synthetic" / "shots_2" / "LinearProbeCLIP" / "demo_cpu" / "seed1")
    return train_recorded(train_args("LinearProbeCLIP", str(root / "data"), out, small=SMALL)), root


def test_linear_probe_trains_and_evaluates_from_train_py(probe_run):
    run, root = probe_run
    assert run.trainer.probe is not None and run.trainer.optim is None
    assert re.search(r"Linear probe: C = \S+ \(validation accuracy", read_logs(run.out))
    result = results(run.out)
    assert result["trainer"] == "LinearProbeCLIP" and 0 <= result["accuracy"] <= 100 and not result["untrained"]
    assert result["method"] == "linear_probe" and not result["lamm"]  # what it is, not the CLIP it builds on
    # The tables read the run (their method is the folder's trainer/config).
    (table_run,) = load_runs(str(root), ["fewshot"])
    assert (table_run.method, table_run.shots, table_run.accuracy) == ("LinearProbeCLIP/demo_cpu", 2, run.accuracy)


def test_checkpoint_holds_the_classifier_as_tensors(probe_run):
    run, _ = probe_run
    state = read_checkpoint(find_run_checkpoint(run.out))  # weights_only=True
    probe = state[LINEAR_PROBE]
    classes = len(run.trainer.dm.dataset.classnames)
    assert probe["weight"].shape == (classes, run.trainer.model.frozen[0].visual.output_dim)
    assert probe["bias"].shape == (classes,) and probe["classes"].tolist() == list(range(classes))


def test_eval_only_loads_the_classifier(probe_run, tmp_path, monkeypatch):
    """``--eval-only --model-dir`` evaluates the saved classifier: nothing is fitted, the logits are the run's."""
    run, root = probe_run

    def no_fit(*args, **kwargs):
        raise AssertionError("--eval-only fitted the classifier again")

    monkeypatch.setattr(linear_probe, "search_regularization", no_fit)
    out = str(tmp_path / "eval")
    again = train_recorded(
        train_args("LinearProbeCLIP", str(root / "data"), out, "--eval-only", "--model-dir", run.out, small=SMALL)
    )
    assert torch.equal(again.logits, run.logits)
    result = results(out)
    assert result["method"] == "linear_probe" and result["checkpoint"]["epoch"] == 1 and not result["untrained"]
    with pytest.raises(UserError, match="LinearProbeCLIP --eval-only needs --model-dir"):
        run_train("LinearProbeCLIP", str(root / "data"), str(tmp_path / "none"), "--eval-only", small=SMALL)


def test_predictor_applies_the_classifier(probe_run, tmp_path, capsys):
    """:class:`Predictor` of a linear-probe run gives the trainer's logits to the bit (same batches)."""
    run, _ = probe_run
    predictor = Predictor.from_run(run.out, device="cpu")
    assert torch.equal(run.logits_of(predictor), run.logits)
    assert predictor.info["method"] == "linear_probe"
    assert [p.label for p in predictor.predict(run.paths)] == run.predictions
    assert main([run.out, run.paths[0], "--format", "json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["top"][0]["label"] == run.predictions[0]
    with pytest.raises(UserError, match="predicts only the classes it was fitted on"):
        Predictor.from_run(run.out, device="cpu", classes=predictor.classnames[:2])


def test_a_checkpoint_without_its_classifier_is_refused(probe_run, tmp_path):
    """A linear-probe checkpoint that holds no classifier is refused by name, not evaluated as zero-shot CLIP."""
    run, root = probe_run
    copy = shutil.copytree(run.out, tmp_path / "old")
    path = find_run_checkpoint(str(copy))
    state = read_checkpoint(path)
    del state[LINEAR_PROBE]
    torch.save(state, path)
    with pytest.raises(UserError, match=rf"{re.escape(str(copy))}.*holds no linear-probe classifier"):
        Predictor.from_run(copy, device="cpu")
    with pytest.raises(UserError, match="holds no linear-probe classifier"):
        run_train(
            "LinearProbeCLIP", str(root / "data"), str(tmp_path / "eval"), "--eval-only", "--model-dir", str(copy),
            small=SMALL,
        )  # fmt: skip
