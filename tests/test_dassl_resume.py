"""Runs that survive kills and reruns, and refuse wrong inputs with a message that says what to do.

The fault-injection test SIGKILLs ``train.py`` processes at chosen moments (inside an epoch, between writing a
checkpoint and renaming it into place, between a checkpoint and its index, during the final evaluation), reruns
the same command each time, and requires the end state to equal an uninterrupted run's bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

import torch  # noqa: E402
from runs import REPO, tiny_opts, train_args  # noqa: E402

from lamm_plugin.dassl import PromptTrainer  # noqa: E402
from lamm_plugin.dassl.compat import CheckpointFormatError  # noqa: E402

pytestmark = [pytest.mark.dassl, pytest.mark.e2e]

# 4 classes, 2 shots, batch 4: 2 steps per epoch; 4 epochs at lr 0.05.
OPTS = tiny_opts(epochs=4, lr="0.05", test_batch=8, print_freq=None)

# Runs train.py in a fresh process, after arranging to SIGKILL itself at the moment KILL_AT names.
DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    import train
    from lamm_plugin.dassl import PromptTrainer
    from lamm_plugin.dassl.results import RecordingEvaluator

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    point = os.environ.get("KILL_AT", "")
    if point.startswith("step:"):  # inside an epoch, before step <batch> of epoch <epoch> (0-based)
        epoch, batch = map(int, point[5:].split(","))
        forward_backward = PromptTrainer.forward_backward
        def fail(self, b):
            if self.epoch == epoch and self.batch_idx == batch:
                die()
            return forward_backward(self, b)
        PromptTrainer.forward_backward = fail
    elif point.startswith("rename:"):  # the n-th rename onto <name>: the file is written, not yet in place
        name, n = point[7:].split(":")
        replace, seen = os.replace, []
        def fail(src, dst):
            if os.path.basename(dst) == name:
                seen.append(dst)
                if len(seen) == int(n):
                    die()
            return replace(src, dst)
        os.replace = fail
    elif point == "eval":  # the first batch of the final evaluation
        RecordingEvaluator.process = lambda self, output, label: die()
    train.main(train.parse_args(sys.argv[1:]))
    """
)


def cli(root, out, *flags: str, opts: tuple[str, ...] = ()) -> list[str]:
    """train.py's arguments: the flags, then the config overrides (which must come last)."""
    return train_args("LAMM_CoOp", str(root), str(out), *flags, small=OPTS, opts=opts)


def train_process(root, out, kill_at: str = "") -> subprocess.CompletedProcess:
    args = cli(root, out)
    env = {**os.environ, "KILL_AT": kill_at}
    code = DRIVER.format(repo=REPO)
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def load(path):
    return torch.load(path, weights_only=True)


def assert_same(a, b, where=""):
    """Bitwise equality of nested checkpoint contents."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def comparable(results: dict) -> dict:
    """results.json without what legitimately differs between two runs (times, output folder)."""
    drop = {"timings", "config"}
    return {k: v for k, v in results.items() if k not in drop}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """One uninterrupted run."""
    out = str(tmp_path_factory.mktemp("reference"))
    proc = train_process(data_root, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_killed_anywhere_and_rerun_ends_bit_identical(data_root, reference, tmp_path):
    out = str(tmp_path / "killed")
    folder = os.path.join(out, "prompt_learner")
    kills = [
        "step:0,1",  # epoch 1, before any checkpoint; the reference run wrote the few-shot cache: starts again
        "step:1,1",  # epoch 2, second step: resumes from epoch 1
        "rename:model.pth.tar-3:1",  # epoch 3's checkpoint written but not renamed: resumes from epoch 2
        "rename:checkpoint:2",  # epoch 4's checkpoint in place, the index still names epoch 3
        "eval",  # during the final evaluation
    ]
    for kill_at in kills:
        proc = train_process(data_root, out, kill_at)
        assert proc.returncode == -9, f"{kill_at}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        assert not os.path.exists(os.path.join(out, "results.json"))
        if kill_at.startswith("rename:checkpoint"):
            with open(os.path.join(folder, "checkpoint")) as f:
                assert f.read().strip() == "model.pth.tar-3" and os.path.isfile(os.path.join(folder, "model.pth.tar-4"))
    proc = train_process(data_root, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-4"]  # no partial write left behind
    ours, theirs = (load(os.path.join(d, "prompt_learner", "model.pth.tar-4")) for d in (out, reference))
    for key in ("state_dict", "optimizer", "scheduler", "rng", "epoch", "classnames"):
        assert_same(ours[key], theirs[key], key)
    with open(os.path.join(out, "results.json")) as f, open(os.path.join(reference, "results.json")) as g:
        killed, uninterrupted = json.load(f), json.load(g)
    assert comparable(killed) == comparable(uninterrupted) and killed["epoch"] == 4
    # Training time adds up over the six processes; every log line is in the one log.txt.
    assert killed["timings"]["train_seconds"] > 0
    assert sorted(os.listdir(out)).count("log.txt") == 1 and not any(f.startswith("log.txt-") for f in os.listdir(out))
    with open(os.path.join(out, "log.txt")) as f:
        log = f.read()
    assert log.count("run started again") == 5 and log.count("* accuracy:") == 1


def test_rerunning_a_finished_run_neither_retrains_nor_clobbers(data_root, reference):
    path = os.path.join(reference, "results.json")
    with open(path) as f:
        before = f.read()
    proc = train_process(data_root, reference)
    assert proc.returncode == 0
    assert "This run is finished" in proc.stdout and "epoch [" not in proc.stdout and "* accuracy" not in proc.stdout
    with open(path) as f:
        assert f.read() == before


def test_every_epoch_is_saved_and_checkpoint_freq_says_which_stay(data_root, tmp_path):
    out = str(tmp_path / "freq")
    saved = []
    save_model = PromptTrainer.save_model

    def record(self, epoch, directory, *args, **kwargs):
        save_model(self, epoch, directory, *args, **kwargs)
        saved.append(sorted(os.listdir(os.path.join(directory, "prompt_learner"))))

    import train

    args = cli(data_root, out, opts=("TRAIN.CHECKPOINT_FREQ", "0"))
    PromptTrainer.save_model = record
    try:
        train.main(train.parse_args(args))
    finally:
        PromptTrainer.save_model = save_model
    # Dassl's CHECKPOINT_FREQ 0 keeps only the last epoch, but each epoch was on disk until the next one was.
    assert [[f for f in files if f.startswith("model.pth")] for files in saved] == [
        ["model.pth.tar-1"],
        ["model.pth.tar-1", "model.pth.tar-2"],
        ["model.pth.tar-2", "model.pth.tar-3"],
        ["model.pth.tar-3", "model.pth.tar-4"],
    ]
    assert sorted(f for f in os.listdir(os.path.join(out, "prompt_learner")) if f.startswith("model")) == [
        "model.pth.tar-4"
    ]


def test_checkpoints_are_found_without_the_index_and_damaged_ones_are_named(data_root, reference, tmp_path):
    import shutil

    import train

    folder = tmp_path / "copy"
    shutil.copytree(os.path.join(reference, "prompt_learner"), folder / "prompt_learner")
    os.remove(folder / "prompt_learner" / "checkpoint")  # a folder holding only model.pth.tar-4
    assert sorted(os.listdir(folder / "prompt_learner")) == ["model.pth.tar-4"]
    evaluate = cli(data_root, str(tmp_path / "eval"), "--eval-only", "--model-dir", str(folder))
    trainer = train.main(train.parse_args(evaluate))
    with open(os.path.join(reference, "results.json")) as f:
        assert trainer.evaluator.results["accuracy"] == json.load(f)["accuracy"]

    damaged = folder / "prompt_learner" / "model.pth.tar-4"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(CheckpointFormatError, match=rf"{damaged}.*is damaged.*delete it"):
        train.main(train.parse_args(evaluate))
    damaged.write_bytes(b"")
    resume = cli(data_root, str(folder))
    with pytest.raises(CheckpointFormatError, match=rf"{damaged}.*is damaged.*resumes from the checkpoint before"):
        train.main(train.parse_args(resume))


def test_checkpoint_of_other_clip_weights_is_refused(data_root, reference, tmp_path):
    import train

    other = tmp_path / "other.pt"
    torch.manual_seed(123)
    from lamm_plugin import load_clip

    torch.save(load_clip("tiny-vit").model.state_dict(), other)
    opts = ("MODEL.BACKBONE.PRETRAINED", str(other))
    args = cli(data_root, str(tmp_path / "eval"), "--eval-only", "--model-dir", reference, opts=opts)
    with pytest.raises(ValueError, match="trained on other weights of this backbone.*ALLOW_OTHER_WEIGHTS"):
        train.main(train.parse_args(args))
    trainer = train.main(train.parse_args([*args, "MODEL.BACKBONE.ALLOW_OTHER_WEIGHTS", "True"]))
    assert trainer.evaluator.results["accuracy"] is not None


@pytest.mark.parametrize(
    ("requested", "recorded", "weight"), [("100", 4, 1 / 4), ("0", "all", 1.0), ("-3", "all", 1.0)]
)
def test_shots_are_recorded_as_used(data_root, tmp_path, requested, recorded, weight):
    import train

    out = str(tmp_path / "shots")
    args = cli(data_root, out, opts=("OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", requested))
    trainer = train.main(train.parse_args(args))
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results["shots"] == recorded and results["shots_requested"] == int(requested)
    assert trainer.model.loss.param_weight == weight
    with open(os.path.join(out, "log.txt")) as f:
        log = f.read()
    if requested == "100":
        assert "Note: DATASET.NUM_SHOTS 100, but 4 of 4 classes have fewer training images" in log
        assert "K = 4 shots" in log
    else:
        assert f"DATASET.NUM_SHOTS {requested}: training on the full training set" in log


def test_eval_only_without_weights_says_so(data_root, tmp_path):
    import train

    out = str(tmp_path / "untrained")
    train.main(train.parse_args(cli(data_root, out, "--eval-only")))
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results["untrained"] is True and results["checkpoint"] is None
    with open(os.path.join(out, "log.txt")) as f:
        assert "Note: no --model-dir given: this evaluates the untrained model" in f.read()


def test_core_log_messages_reach_log_txt(data_root, reference, tmp_path):
    import train

    out = str(tmp_path / "new")
    args = cli(data_root, out, "--eval-only", "--model-dir", reference, opts=("DATASET.SUBSAMPLE_CLASSES", "new"))
    train.main(train.parse_args(args))
    with open(os.path.join(out, "log.txt")) as f:
        assert "Label embeddings: 2 of 2 classes loaded, 0 keep CLIP's embeddings; 2 more kept" in f.read()
