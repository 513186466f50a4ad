"""End-to-end runs of ``train.py`` (in process) on the synthetic dataset with the tiny random CLIP.

Each LAMM trainer trains with a warm-up + cosine schedule, crashes after epoch 1, resumes from its output folder,
and reloads with ``--eval-only`` to the same accuracy; base-to-new evaluation maps learned labels by class name.
"""

from __future__ import annotations

import contextlib
import os

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

import torch  # noqa: E402
from runs import killed_after_first_epoch, read_logs, results, run_train, tiny_opts, train_args  # noqa: E402

import train  # noqa: E402
from lamm_plugin.config import LAMMConfig  # noqa: E402
from lamm_plugin.dassl import PromptTrainer  # noqa: E402

pytestmark = [pytest.mark.dassl, pytest.mark.e2e]

# 4 classes (2 base + 2 new), 2 shots: 8 training images, 2 batches per epoch; two epochs at lr 0.01.
SMALL_DATA = tiny_opts()
LOSS_TERMS = ("ce", "param_alignment", "feature_alignment", "logit_alignment")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("data"))


def run(trainer: str, data_root: str, output_dir: str, *extra: str, opts: tuple[str, ...] = ()) -> PromptTrainer:
    """``python train.py`` with the demo config of ``trainer`` on the small synthetic dataset."""
    return run_train(trainer, data_root, output_dir, *extra, small=SMALL_DATA, opts=opts)


def epoch_lines(log: str, epoch: int) -> list[str]:
    return [line for line in log.splitlines() if line.startswith(f"epoch [{epoch}/")]


@pytest.mark.parametrize("trainer", ["LAMM_CoOp", "LAMM_MaPLe", "LAMM_VPT", "LAMM_PromptSRC"])
def test_train_crash_resume_eval(trainer, data_root, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    opts = ("TRAIN.CHECKPOINT_FREQ", "1")

    # Epoch 1 is the constant warm-up (lr 1e-5); then the run dies.
    killed_after_first_epoch(monkeypatch, run, trainer, data_root, out, opts=opts)
    first = torch.load(os.path.join(out, "prompt_learner", "model.pth.tar-1"), weights_only=True)
    assert first["epoch"] == 1 and first["method"] == trainer.split("_")[1].lower()
    assert not os.path.exists(os.path.join(out, "results.json"))

    # Restart with the same output folder: resumes at epoch 2 with the restored weights, optimiser and schedule.
    restored = {}
    before_epoch = PromptTrainer.before_epoch

    def record_start(self):
        restored.setdefault("state", {k: v.clone() for k, v in self.model.checkpoint_state()["state_dict"].items()
                                      if torch.is_tensor(v)})  # fmt: skip
        before_epoch(self)

    monkeypatch.setattr(PromptTrainer, "before_epoch", record_start)
    resumed = run(trainer, data_root, out, opts=opts)
    monkeypatch.undo()
    assert resumed.start_epoch == 1
    for key, value in restored["state"].items():
        torch.testing.assert_close(value, first["state_dict"][key], rtol=0, atol=0)

    log = read_logs(out)
    assert "Previous epoch: 1" in log and "Loaded optimizer" in log and "Loaded scheduler" in log
    # The lr printed with the first batch of an epoch is the epoch's (the last batch shows the next one).
    warmup, second = epoch_lines(log, 1), epoch_lines(log, 2)
    assert warmup and "lr 1.0000e-05" in warmup[0]
    # A scheduler that was not restored would still be in its warm-up (1e-5) here.
    assert second and "lr 1.0000e-02" in second[0]
    assert all(f" {term} " in second[-1] for term in ("loss", "acc", *LOSS_TERMS))
    assert "* accuracy:" in log

    trained = results(out)
    assert trained["trainer"] == trainer and trained["epoch"] == 2 and trained["lamm"] is True
    assert trained["shots"] == 2 and trained["seed"] == 1 and trained["num_samples"] == 16
    assert len(trained["classnames"]) == 4
    assert [c["classname"] for c in trained["per_class"].values()] == trained["classnames"]
    assert list(trained["per_class"]) == ["0", "1", "2", "3"]
    assert trained["config"]["TRAINER"]["NAME"] == trainer and trained["timings"]["train_seconds"] > 0

    # Reload the last checkpoint for evaluation only: same accuracy, to full precision.
    evaluated = os.path.join(out, "eval")
    run(trainer, data_root, evaluated, "--eval-only", "--model-dir", out, "--load-epoch", "2")
    again = results(evaluated)
    assert again["accuracy"] == trained["accuracy"] and again["macro_f1"] == trained["macro_f1"]
    assert again["per_class"] == trained["per_class"]
    assert again["checkpoint"]["epoch"] == 2
    # Last-epoch checkpoints carry val_result None, which Dassl's load_model cannot format.
    assert "val_result=None" in read_logs(evaluated)


def test_base_to_new_maps_labels_by_name(data_root, tmp_path):
    out = str(tmp_path / "base")
    # No warm-up and a large step, so that the learned labels and context move measurably in one epoch.
    fast = ("OPTIM.WARMUP_EPOCH", "-1", "OPTIM.LR", "0.5", "OPTIM.MAX_EPOCH", "1")
    base = run("LAMM_CoOp", data_root, out, opts=(*fast, "DATASET.SUBSAMPLE_CLASSES", "base"))
    assert results(out)["classnames"] == ["red circle", "blue square"]

    def evaluate(folder: str, subset: str, *model: str) -> PromptTrainer:
        folder = str(tmp_path / folder)
        trainer = run("LAMM_CoOp", data_root, folder, "--eval-only", *model, opts=("DATASET.SUBSAMPLE_CLASSES", subset))
        assert results(folder)["subsample_classes"] == subset
        return trainer

    load = ("--model-dir", out, "--load-epoch", "1")
    new, full = evaluate("new", "new", *load), evaluate("all", "all", *load)
    untrained = evaluate("untrained", "all")
    assert results(str(tmp_path / "new"))["classnames"] == ["green triangle", "yellow star"]

    images = next(iter(full.test_loader))["img"]

    def logits(trainer: PromptTrainer) -> dict[str, torch.Tensor]:
        trainer.model.eval()
        with torch.no_grad():
            out = trainer.model(images).logits
        return {name: out[:, i] for i, name in enumerate(trainer.dm.dataset.classnames)}

    base_l, new_l, full_l, untrained_l = logits(base), logits(new), logits(full), logits(untrained)
    for name in base_l:  # learned labels follow their class into the larger class set
        torch.testing.assert_close(full_l[name], base_l[name], rtol=1e-5, atol=1e-5)
        assert (full_l[name] - untrained_l[name]).abs().max() > 1e-4
    for name in new_l:
        torch.testing.assert_close(full_l[name], new_l[name], rtol=1e-5, atol=1e-5)


def test_random_init_key_starts_training_at_random_and_spares_evaluation(data_root, tmp_path):
    """``TRAINER.LAMM.RANDOM_INIT True`` (the official ``--random-init``): the trained classes' labels and their
    alignment anchor start from N(0, 0.02^2); an evaluation builds the names' embeddings, so the classes the
    checkpoint does not cover (new classes) keep them."""
    out = str(tmp_path / "base")
    key = ("TRAINER.LAMM.RANDOM_INIT", "True", "OPTIM.MAX_EPOCH", "1", "DATASET.SUBSAMPLE_CLASSES")
    trained = run("LAMM_CoOp", data_root, out, opts=(*key, "base"))
    plain = run(
        "LAMM_CoOp", data_root, str(tmp_path / "plain"), "--eval-only", opts=("DATASET.SUBSAMPLE_CLASSES", "base")
    )
    assert trained.lamm_cfg.random_init and "RANDOM_INIT" in read_logs(out)
    emb, names = trained.model.label_embedding, plain.model.label_embedding
    assert not torch.allclose(emb.init, names.init)  # the anchor is the random start, not the names
    assert 0.01 < emb.init.std().item() < 0.04
    full = run("LAMM_CoOp", data_root, str(tmp_path / "all"), "--eval-only", "--model-dir", out, "--load-epoch", "1",
               opts=(*key, "all"))  # fmt: skip
    untrained = run(
        "LAMM_CoOp", data_root, str(tmp_path / "untrained"), "--eval-only", opts=(*key[:2], *key[-1:], "all")
    )
    rows, names_rows = full.model.label_embedding.rows(), untrained.model.label_embedding.rows()
    new = [i for i, n in enumerate(full.model.label_embedding.classnames) if n in ("green triangle", "yellow star")]
    spans = [range(sum(full.model.label_embedding.counts[:i]), sum(full.model.label_embedding.counts[: i + 1]))
             for i in new]  # fmt: skip
    picked = [j for span in spans for j in span]
    assert picked and torch.equal(rows[picked], names_rows[picked])


def test_continual_two_stages_do_not_interfere(data_root, tmp_path):
    # LAMM alone (context frozen): stage 1 learns the base labels, stage 2 the new ones; the combined model
    # (stage 1 through MODEL.INIT_WEIGHTS, stage 2 through --model-dir) scores each half exactly as its stage did.
    frozen = (
        "TRAINER.LAMM_COOP.TRAIN_CTX",
        "False",
        "OPTIM.WARMUP_EPOCH",
        "-1",
        "OPTIM.LR",
        "0.5",
        "OPTIM.MAX_EPOCH",
        "1",
    )
    stage, trained = {}, {}
    for sub in ("base", "new"):
        stage[sub] = str(tmp_path / sub)
        trained[sub] = run("LAMM_CoOp", data_root, stage[sub], opts=(*frozen, "DATASET.SUBSAMPLE_CLASSES", sub))
    init = ("MODEL.INIT_WEIGHTS", os.path.join(stage["base"], "prompt_learner", "model.pth.tar-1"))
    load = ("--eval-only", "--model-dir", stage["new"], "--load-epoch", "1")
    folder = str(tmp_path / "test_all")
    combined = run("LAMM_CoOp", data_root, folder, *load, opts=(*frozen, *init, "DATASET.SUBSAMPLE_CLASSES", "all"))
    assert "Initialised learned tensors from" in read_logs(folder)
    assert len(results(folder)["classnames"]) == 4

    images = next(iter(combined.test_loader))["img"]
    with torch.no_grad():
        combined_logits = combined.model.eval()(images).logits
        for sub in ("base", "new"):
            logits = trained[sub].model.eval()(images).logits
            for i, name in enumerate(trained[sub].dm.dataset.classnames):
                j = combined.dm.dataset.classnames.index(name)
                torch.testing.assert_close(combined_logits[:, j], logits[:, i], rtol=1e-5, atol=1e-5)


def test_checkpoint_of_another_method_backbone_or_baseline_is_refused(data_root, tmp_path):
    out = str(tmp_path / "coop")
    run("LAMM_CoOp", data_root, out, opts=("OPTIM.MAX_EPOCH", "1"))
    load = ("--eval-only", "--model-dir", out, "--load-epoch", "1")
    with pytest.raises(ValueError, match="method 'coop'"):
        run("LAMM_MaPLe", data_root, str(tmp_path / "e1"), *load)
    with pytest.raises(ValueError, match="backbone 'tiny-vit'"):
        run("LAMM_CoOp", data_root, str(tmp_path / "e2"), *load, opts=("MODEL.BACKBONE.NAME", "tiny-rn"))
    with pytest.raises(ValueError, match="LAMM"):
        run("CoOp", data_root, str(tmp_path / "e3"), *load)
    with pytest.raises(FileNotFoundError, match=r"model\.pth\.tar-7.*found: model\.pth\.tar-1"):
        run("LAMM_CoOp", data_root, str(tmp_path / "e4"), "--eval-only", "--model-dir", out, "--load-epoch", "7")


def test_baselines(data_root, tmp_path):
    out = str(tmp_path / "coop")
    coop = run("CoOp", data_root, out, opts=("OPTIM.MAX_EPOCH", "1"))
    assert results(out)["lamm"] is False and coop.model.label_embedding is None
    assert set(LOSS_TERMS[1:]).isdisjoint(epoch_lines(read_logs(out), 1)[-1].split())
    # Without --load-epoch and without model-best.pth.tar (TEST.FINAL_MODEL last_step), the last one is loaded.
    run("CoOp", data_root, str(tmp_path / "coop_eval"), "--eval-only", "--model-dir", out)
    assert results(str(tmp_path / "coop_eval"))["accuracy"] == results(out)["accuracy"]

    zs = str(tmp_path / "zs")
    zeroshot = run("ZeroshotCLIP", data_root, zs, "--eval-only")
    assert zeroshot.optim is None and not zeroshot.model.trainable_parameters()
    assert results(zs)["method"] == "zeroshot" and results(zs)["checkpoint"] is None


@pytest.mark.parametrize("host", ["CoCoOp", "KgCoOp", "ProGrad"])
def test_more_hosts_train_and_reload(host, data_root, tmp_path, monkeypatch):
    """CoCoOp, KgCoOp and ProGrad, with and without LAMM: train, log their own terms, reload to the same accuracy;
    the trainer's step back-propagates through the method's hook (ProGrad's projection)."""
    from lamm_plugin.methods import METHODS

    method_terms = {"KgCoOp": ("kg_alignment",), "ProGrad": ("prograd_kl",)}.get(host, ())
    cls, calls = METHODS[host.lower()], []
    hook = cls.backward
    monkeypatch.setattr(cls, "backward", lambda self, *args: calls.append(1) or hook(self, *args))
    for trainer in (host, f"LAMM_{host}"):
        out = str(tmp_path / trainer)
        calls.clear()
        run(trainer, data_root, out, opts=("OPTIM.MAX_EPOCH", "1"))
        assert len(calls) == 2  # one epoch of two steps
        line = epoch_lines(read_logs(out), 1)[-1]
        lamm = trainer.startswith("LAMM_")
        terms = (*LOSS_TERMS, *method_terms) if lamm else ("ce", *method_terms)
        assert all(f" {term} " in line for term in terms), line
        assert lamm or set(LOSS_TERMS[1:]).isdisjoint(line.split())
        assert results(out)["method"] == host.lower() and results(out)["lamm"] is lamm
        run(trainer, data_root, str(tmp_path / f"{trainer}_eval"), "--eval-only", "--model-dir", out)
        assert results(str(tmp_path / f"{trainer}_eval"))["accuracy"] == results(out)["accuracy"]


def test_best_val(data_root, tmp_path):
    out = str(tmp_path / "best")
    opts = ("OPTIM.MAX_EPOCH", "1", "TEST.FINAL_MODEL", "best_val")
    run("LAMM_CoOp", data_root, out, opts=opts)
    best = torch.load(os.path.join(out, "prompt_learner", "model-best.pth.tar"), weights_only=True)
    assert isinstance(best["val_result"], float) and best["epoch"] == 1
    assert "Deploy the model with the best val performance" in read_logs(out)


@pytest.mark.parametrize("precision", ["fp16", "bf16", "amp"])
@pytest.mark.parametrize("trainer", ["LAMM_CoOp", "LAMM_MaPLe", "LAMM_VPT"])
def test_precision_honoured_with_strict_dtypes(trainer, precision, data_root, tmp_path, monkeypatch, strict_dtypes):
    """Each precision trains and evaluates with every CLIP layer receiving its own weights' dtype (as on CUDA)."""
    out = str(tmp_path / precision)
    hooks = contextlib.ExitStack()
    build_model = PromptTrainer.build_model

    def build_with_strict_dtypes(self):
        build_model(self)
        hooks.enter_context(strict_dtypes(self.model.frozen[0], self.model))

    monkeypatch.setattr(PromptTrainer, "build_model", build_with_strict_dtypes)
    node = trainer.upper()
    with hooks:
        trained = run(trainer, data_root, out, opts=("OPTIM.MAX_EPOCH", "1", f"TRAINER.{node}.PREC", precision))
    assert trained.precision == precision and results(out)["precision"] == precision
    assert results(out)["accuracy"] is not None
    weights = trained.model.frozen[0].visual.conv1.weight.dtype
    assert weights == {"fp16": torch.float16, "bf16": torch.bfloat16, "amp": torch.float32}[precision]
    assert (trained.scaler is not None) == (precision in ("fp16", "amp"))
    assert all(p.dtype == torch.float32 for p in trained.model.trainable_parameters())
    losses = [line for line in read_logs(out).splitlines() if line.startswith("epoch [1/1]")]
    assert losses and "nan" not in losses[-1].lower()


def test_bf16_and_configs_cleaned_by_host(data_root, tmp_path):
    out = str(tmp_path / "bf16")
    trainer = run("LAMM_VPT", data_root, out, opts=("OPTIM.MAX_EPOCH", "1", "TRAINER.LAMM_VPT.PREC", "bf16"))
    assert results(out)["precision"] == "bf16" and results(out)["accuracy"] is not None
    assert all(p.dtype == torch.float32 for p in trainer.model.trainable_parameters())

    # Some hosts call Dassl's clean_cfg, which keeps only TRAINER.<trainer name>, here on a config left unfrozen:
    # the trainer puts TRAINER.LAMM back with the user's values (tests/test_dassl_dropin.py: the hosts' own flows).
    from dassl.config import clean_cfg
    from dassl.engine import build_trainer

    out = str(tmp_path / "clean")
    opts = ("TRAINER.LAMM.LOGIT_WEIGHT", "0.5")
    args = train.parse_args(train_args("LAMM_CoOp", data_root, out, small=SMALL_DATA, opts=opts))
    cfg = train.setup_cfg(args)
    cfg.defrost()
    clean_cfg(cfg, "LAMM_CoOp")
    assert "LAMM" not in cfg.TRAINER and "LAMM_COOP" in cfg.TRAINER
    cleaned = build_trainer(cfg)
    assert cleaned.lamm_cfg.logit_weight == 0.5 != LAMMConfig().logit_weight
    assert cfg.TRAINER.LAMM.LOGIT_WEIGHT == 0.5


def test_console_is_short_and_log_keeps_everything(data_root, tmp_path, capsys):
    out = str(tmp_path / "quiet")
    run("LAMM_CoOp", data_root, out)
    console = capsys.readouterr().out
    log = read_logs(out)
    lines = console.splitlines()
    # The header instead of the dumps; the real device although USE_CUDA is True.
    assert lines[0].startswith("LAMM_CoOp on SyntheticShapes: 4 classes, 2 shots (8 train, 8 val, 16 test images)")
    assert "precision fp32" in lines[1] and "device cpu (USE_CUDA is True, but no CUDA device" in lines[1]
    assert lines[2] == f"output: {out}" and "config.yaml" in lines[3] and "log.txt" in lines[3]
    for dump in ("** Arguments **", "** Config **", "** System info **", "USE_CUDA: True", "Building transform_train"):
        assert dump not in console and dump in log
    assert max(map(len, lines)) < 120 + len(out)  # only the lines that name the output folder are longer
    progress = [line for line in lines if line.startswith("epoch ")]
    assert len(progress) == 4 and all(len(line) < 100 and "eta " in line for line in progress)
    # The log keeps Dassl's full line with every term, and every checkpoint saved.
    assert all(f" {term} " in epoch_lines(log, 2)[-1] for term in ("loss", "acc", "time", "data", *LOSS_TERMS))
    assert log.count("Checkpoint saved to") == 2 and "Checkpoint saved" not in console
    assert [line for line in lines if line.startswith("checkpoint: ")] == [
        f"checkpoint: epoch 1/2 -> {out}/prompt_learner/model.pth.tar-1 (each epoch's replaces the previous)",
        f"checkpoint: epoch 2/2 -> {out}/prompt_learner/model.pth.tar-2 (the run's final one)",
    ]
    assert "* accuracy:" in console
    with open(os.path.join(out, "config.yaml")) as f:
        assert f"OUTPUT_DIR: {out}" in f.read()

    verbose = str(tmp_path / "verbose")
    run("LAMM_CoOp", data_root, verbose, "--verbose")
    console = capsys.readouterr().out
    assert "** Config **" in console and "** System info **" in console and "Building transform_train" in console
