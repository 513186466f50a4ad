"""A run's life on the tiny CLIP: no fp16 optimiser step lost, a non-finite loss stops the run in every precision,
a resume or a finished folder answers only for the experiment asked, ``OPTIM.MAX_EPOCH 0`` is marked untrained, a
failed final evaluation keeps the trained run, and a damaged checkpoint gets one message everywhere."""

from __future__ import annotations

import glob
import json
import os

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

import torch  # noqa: E402
from runs import killed_after_first_epoch, read_logs, results, run_train, tiny_opts  # noqa: E402

from lamm_plugin import fast_paths  # noqa: E402
from lamm_plugin.dassl import PromptTrainer  # noqa: E402
from lamm_plugin.dassl.results import RecordingEvaluator  # noqa: E402
from lamm_plugin.errors import UserError  # noqa: E402

pytestmark = [pytest.mark.dassl, pytest.mark.e2e]

# 4 classes, 2 shots, batch 4: 2 optimiser steps per epoch.
SMALL = tiny_opts()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("data"))


def run(data_root: str, out: str, *extra: str, trainer: str = "LAMM_CoOp", opts: tuple[str, ...] = ()):
    return run_train(trainer, data_root, out, *extra, small=SMALL, opts=opts)


def count_updates(monkeypatch) -> list[int]:
    """Counts the optimiser's ``step`` calls that ran (a GradScaler's skipped step does not call it)."""
    counts = [0]
    build_model = PromptTrainer.build_model

    def build_and_count(self):
        build_model(self)
        step = self.optim.step

        def counted(*args, **kwargs):
            counts[0] += 1
            return step(*args, **kwargs)

        self.optim.step = counted

    monkeypatch.setattr(PromptTrainer, "build_model", build_and_count)
    return counts


# ---- fp16: no optimiser step lost ------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp16", "amp"])
@pytest.mark.parametrize("logit_scale", [None, "100"])
def test_every_batch_updates_the_learned_tensors_under_a_grad_scaler(precision, logit_scale, data_root, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    counts = count_updates(monkeypatch)
    opts = ("TRAINER.LAMM_COOP.PREC", precision)
    if logit_scale:
        # A larger logit scale overflows fp16 gradients at more of the GradScaler's starting scales.
        build_model = PromptTrainer.build_model

        def with_scale(self):
            build_model(self)
            with torch.no_grad():
                self.model.frozen[0].logit_scale.fill_(torch.log(torch.tensor(float(logit_scale))).item())

        monkeypatch.setattr(PromptTrainer, "build_model", with_scale)
    trainer = run(data_root, str(tmp_path / "out"), opts=opts)
    assert trainer.num_batches == 2
    assert counts[0] == 2 * 2, f"{counts[0]} optimiser updates for 4 batches"
    assert results(str(tmp_path / "out"))["accuracy"] is not None


def test_no_step_is_lost_on_the_graphed_step_either(data_root, tmp_path, monkeypatch, graph_stand_in):
    """The trainer's GraphedStep on the CPU stand-in of a CUDA graph (conftest.EagerReplay): the overflowing first
    batch is replayed at lower scales (the redo is outside the graph), and the self-check compares the redone batch."""
    counts = count_updates(monkeypatch)
    out = str(tmp_path / "out")
    trainer = run(data_root, out, opts=("TRAINER.LAMM_COOP.PREC", "fp16"))
    # Every batch updates once; the first batch's replays at lower scales come on top of one replay per batch.
    assert counts[0] == 4 and trainer.graphed.captures == 1 and graph_stand_in.replays > 4
    assert results(out)["fast_paths"]["cuda_graph_step"]["state"] == "passed"


def _learned(out: str) -> dict[str, torch.Tensor]:
    (path,) = glob.glob(os.path.join(out, "prompt_learner", "model.pth.tar-*"))
    return torch.load(path, weights_only=True)["state_dict"]


def test_a_graph_that_differs_falls_back_before_any_update_and_the_run_says_so(data_root, tmp_path, graph_stand_in):
    """On the stand-in, a replay equals the eager step: a run with the graphs passes its self-checks and learns what
    a run without them learns, bit for bit; a replay off by 1e-3 falls back before its first optimiser update (the
    same learned tensors again), warns once per path and says so in ``results.json``."""
    # 4 test batches, the second one captured (the feature cache off: it would evaluate without the image tower).
    small = ("OPTIM.MAX_EPOCH", "1", "DATALOADER.TEST.BATCH_SIZE", "4", "LAMM_CACHE.TEST_FEATURES", "False")
    runs = {}
    for name, inject, graphs in (("eager", 0.0, "False"), ("graphed", 0.0, "True"), ("broken", 1e-3, "True")):
        fast_paths.reset()  # each run is a process of its own in real use: no verdict carries over
        graph_stand_in.inject = inject
        runs[name] = str(tmp_path / name)
        run(data_root, runs[name], opts=(*small, "TRAINER.LAMM_COOP.CUDA_GRAPH", graphs))
    records = {name: results(out)["fast_paths"] for name, out in runs.items()}
    paths = ("cuda_graph_step", "cuda_graph_eval")
    assert [records["eager"][p]["state"] for p in paths] == ["off", "off"]
    assert [records["graphed"][p]["state"] for p in paths] == ["passed", "passed"]
    assert [records["broken"][p]["state"] for p in paths] == ["fell back", "fell back"]
    assert all(records[name]["text_attention"]["state"] == "off" for name in runs)  # off by default
    step = records["broken"]["cuda_graph_step"]
    assert step["switch"] == "TRAINER.LAMM_COOP.CUDA_GRAPH" and step["device"] == "cpu"
    assert step["difference"] == pytest.approx(1e-3, rel=1e-2) and step["bound"] == 0
    for name in ("graphed", "broken"):
        assert results(runs[name])["accuracy"] == results(runs["eager"])["accuracy"]
        learned, expected = _learned(runs[name]), _learned(runs["eager"])
        tensors = [key for key, value in expected.items() if torch.is_tensor(value)]
        assert tensors and all(torch.equal(learned[key], expected[key]) for key in tensors), name
    log = read_logs(runs["broken"])
    assert log.count("fell back to the eager computation") == 2  # one warning per path
    assert "CUDA graph of the training step on cpu" in log and "TRAINER.LAMM_COOP.CUDA_GRAPH False turns" in log


def test_fp16_learned_tensors_as_the_original_code_where_a_config_asks(data_root, tmp_path, monkeypatch):
    counts = count_updates(monkeypatch)
    opts = ("TRAINER.LAMM_COOP.PREC", "fp16", "TRAINER.LAMM_COOP.FP16_LEARNED", "True", "OPTIM.MAX_EPOCH", "1")
    trainer = run(data_root, str(tmp_path / "out"), opts=opts)
    assert trainer.scaler is None and counts[0] == trainer.num_batches
    assert all(p.dtype == torch.float16 for p in trainer.model.trainable_parameters())
    assert results(str(tmp_path / "out"))["accuracy"] is not None
    with pytest.raises(ValueError, match="FP16_LEARNED"):
        run(data_root, str(tmp_path / "amp"), opts=("TRAINER.LAMM_COOP.PREC", "amp", *opts[2:]))


# ---- a non-finite loss stops the run ----------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp16", "amp", "fp32"])
def test_a_huge_learning_rate_stops_the_run_in_every_precision(precision, data_root, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(FloatingPointError, match=r"(?s)non-finite.*OPTIM\.LR.*PREC") as err:
        run(data_root, out, opts=("TRAINER.LAMM_COOP.PREC", precision, "OPTIM.LR", "1e9", "OPTIM.MAX_EPOCH", "4"))
    assert isinstance(err.value, UserError)  # one line on the command line, no traceback
    assert not os.path.exists(os.path.join(out, "results.json"))
    kept = glob.glob(os.path.join(out, "prompt_learner", "model.pth.tar-*"))
    assert kept, "the last good checkpoint is kept"
    for path in kept:
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if torch.is_tensor(v) and v.is_floating_point())
        assert os.path.basename(path) in str(err.value)


# ---- a resume or a finished folder answers only for the experiment asked -----------------------------------------
def interrupted(data_root: str, out: str, monkeypatch) -> None:
    killed_after_first_epoch(monkeypatch, run, data_root, out)


def test_resume_with_a_config_that_changes_results_is_refused(data_root, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    interrupted(data_root, out, monkeypatch)
    with pytest.raises(ValueError, match=r"(?s)OPTIM\.LR: 0\.01 -> 0\.001.*TRAINER\.LAMM\.LOGIT_WEIGHT.*--output-dir"):
        run(data_root, out, opts=("OPTIM.LR", "0.001", "TRAINER.LAMM.LOGIT_WEIGHT", "3.0"))
    assert not os.path.exists(os.path.join(out, "results.json"))
    # What cannot change results goes through: the run resumes.
    resumed = run(data_root, out, opts=("TRAIN.PRINT_FREQ", "5", "TRAIN.CHECKPOINT_FREQ", "1"))
    assert resumed.start_epoch == 1 and results(out)["config"]["OPTIM"]["LR"] == 0.01


def test_a_finished_folder_answers_only_for_its_own_experiment(data_root, tmp_path, capsys):
    out = str(tmp_path / "out")
    run(data_root, out)
    before = results(out)
    with pytest.raises(ValueError, match=r"(?s)OPTIM\.LR.*delete"):
        run(data_root, out, opts=("OPTIM.LR", "0.02"))
    with pytest.raises(ValueError, match=r"DATASET\.SYNTHETIC\.NUM_CLASSES"):
        run(data_root, out, opts=("DATASET.SYNTHETIC.NUM_CLASSES", "5"))
    capsys.readouterr()
    run(data_root, out, opts=("DATALOADER.NUM_WORKERS", "1"))
    assert "This run is finished" in capsys.readouterr().out
    assert results(out) == before


def test_a_finished_folder_with_an_unusable_accuracy_is_evaluated_again(data_root, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "out")
    run(data_root, out)
    path = os.path.join(out, "results.json")
    before = results(out)
    with open(path, "w") as f:
        json.dump({**before, "accuracy": "52.5%"}, f)
    updates = count_updates(monkeypatch)
    capsys.readouterr()
    run(data_root, out)
    assert "holds no usable accuracy ('52.5%')" in capsys.readouterr().out
    assert updates[0] == 0 and results(out)["accuracy"] == before["accuracy"]


# ---- OPTIM.MAX_EPOCH 0 -------------------------------------------------------------------------------------------
def test_zero_epochs_is_recorded_as_untrained_with_a_warning(data_root, tmp_path):
    out = str(tmp_path / "out")
    run(data_root, out, opts=("OPTIM.MAX_EPOCH", "0"))
    assert results(out)["untrained"] is True and results(out)["epoch"] == 0
    assert "OPTIM.MAX_EPOCH 0" in read_logs(out)


# ---- a failed final evaluation keeps the trained run ---------------------------------------------------------------
def test_failed_final_evaluation_keeps_the_run_and_a_rerun_only_evaluates(data_root, tmp_path, monkeypatch):
    out = str(tmp_path / "out")

    def fail(self, output, label):
        raise RuntimeError("simulated evaluation failure")

    monkeypatch.setattr(RecordingEvaluator, "process", fail)
    with pytest.raises(RuntimeError, match="simulated evaluation failure"):
        run(data_root, out)
    monkeypatch.undo()
    log = read_logs(out)
    assert os.path.isfile(os.path.join(out, "prompt_learner", "model.pth.tar-2"))
    assert "Training is complete" in log and "model.pth.tar-2" in log and "without training again" in log
    updates = count_updates(monkeypatch)
    run(data_root, out)
    assert updates[0] == 0 and results(out)["epoch"] == 2 and results(out)["accuracy"] is not None


# ---- one message for a damaged checkpoint --------------------------------------------------------------------------
def test_a_damaged_checkpoint_gets_one_message_in_train_and_interpret(data_root, tmp_path):
    from lamm_experiments import interpret
    from lamm_plugin.dassl import compat

    out = str(tmp_path / "out")
    run(data_root, out, opts=("OPTIM.MAX_EPOCH", "1"))
    path = os.path.join(out, "prompt_learner", "model.pth.tar-1")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:200])
    with pytest.raises(compat.CheckpointFormatError) as from_train:
        compat.load_checkpoint(path)
    with pytest.raises(ValueError) as from_interpret:
        interpret.load_checkpoint(path)
    assert str(from_interpret.value) == str(from_train.value)
    assert "weights_only=False" not in str(from_interpret.value) and "delete it" in str(from_interpret.value)
