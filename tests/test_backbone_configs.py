"""The CoOp family's configs for CoOp's other backbones (RN50, RN101, ViT-B/32) build and train: one optimiser step
of ``train.py`` with a random-weight backbone of that architecture (RN50 and RN101 through the attention-pooling
image tower), then the evaluation that writes ``results.json``.

Full-size random models on a CPU: two classes, one image each, one batch; the image resolution is the config's.
"""

from __future__ import annotations

import json
import os
import time

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

import torch  # noqa: E402

import lamm_plugin.dassl.trainer as trainer_module  # noqa: E402
import train  # noqa: E402
from lamm_plugin import load_clip  # noqa: E402
from lamm_plugin.dassl import PromptTrainer  # noqa: E402

pytestmark = [pytest.mark.dassl, pytest.mark.e2e]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKBONES = {"rn50": "RN50", "rn101": "RN101", "vit_b32": "ViT-B/32"}
# (trainer, config name after the backbone prefix): CoOp, LAMM alone, CoOp+LAMM, KgCoOp (+ LAMM), zero-shot.
FAMILY = [
    ("CoOp", "_ep50"),
    ("LAMM_CoOp", "_ep50_ctxv1_frozen"),
    ("LAMM_CoOp", "_ep50_ctxv1"),
    ("KgCoOp", "_ep100_ctxv1"),
    ("LAMM_KgCoOp", "_ep100_ctxv1"),
    ("ZeroshotCLIP", ""),
]
TINY = [
    "MODEL.BACKBONE.PRETRAINED", "",  # random weights of the config's architecture
    "OPTIM.MAX_EPOCH", "1",
    "DATASET.NUM_SHOTS", "1",
    "DATASET.SYNTHETIC.NUM_CLASSES", "2",
    "DATASET.SYNTHETIC.TRAIN_PER_CLASS", "1",
    "DATASET.SYNTHETIC.VAL_PER_CLASS", "1",
    "DATASET.SYNTHETIC.TEST_PER_CLASS", "1",
    "DATALOADER.NUM_WORKERS", "0",
    "DATALOADER.TRAIN_X.BATCH_SIZE", "2",
    "DATALOADER.TEST.BATCH_SIZE", "2",
]  # fmt: skip


# CoOp+LAMM (context and labels trained) on each backbone in the default suite, about 12 s each on 2 CPU cores;
# the other five configs of each backbone (about 60 s per backbone) under the slow marker.
CASES = [
    pytest.param(t, c, id=f"{t}{c}", marks=() if (t, c) == ("LAMM_CoOp", "_ep50_ctxv1") else pytest.mark.slow)
    for t, c in FAMILY
]


@pytest.mark.parametrize("trainer, tail", CASES)
@pytest.mark.parametrize("prefix", list(BACKBONES))
def test_backbone_config_trains_a_step(prefix, trainer, tail, tmp_path, monkeypatch):
    config = os.path.join(REPO, "configs", "trainers", trainer, f"{prefix}{tail}.yaml")
    out = str(tmp_path / "out")
    states = []
    before_epoch = PromptTrainer.before_epoch

    def record(self):
        # every trainable tensor before the first step
        states.append({n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad})
        before_epoch(self)

    monkeypatch.setattr(PromptTrainer, "before_epoch", record)
    built = []

    def spy_load_clip(*args, **kwargs):
        built.append(load_clip(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(trainer_module, "load_clip", spy_load_clip)
    node = trainer.upper()
    args = [
        "--root", str(tmp_path / "data"),
        "--seed", "1",
        "--trainer", trainer,
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "synthetic_shapes.yaml"),
        "--config-file", config,
        "--output-dir", out,
        *(["--eval-only"] if trainer == "ZeroshotCLIP" else []),
        *TINY,
        # fp32: the step's numerics are not under test here, and CPU fp16 kernels are slow
        f"TRAINER.{node}.PREC", "fp32",
    ]  # fmt: skip
    start = time.time()
    trainer_obj = train.main(train.parse_args(args))
    seconds = time.time() - start
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results["backbone"] == BACKBONES[prefix] and results["num_classes"] == 2
    assert results["config"]["MODEL"]["BACKBONE"]["PRETRAINED"] == ""
    (clip,) = built
    assert clip.pretrained == ""
    towers = {type(m).__name__: m for m in clip.model.modules()}
    if prefix.startswith("rn"):
        assert "ModifiedResNet" in towers and "VisionTransformer" not in towers
        assert type(towers["ModifiedResNet"].attnpool).__name__ == "AttentionPool2d"
    else:
        assert "VisionTransformer" in towers and "ModifiedResNet" not in towers
    if trainer == "ZeroshotCLIP":
        assert results["untrained"] and results["epoch"] is None
        return
    assert results["epoch"] == 1 and len(states) == 1
    after = dict(trainer_obj.model.named_parameters())
    assert states[0] and all(after[n].requires_grad for n in states[0])
    unchanged = [n for n, v in states[0].items() if torch.equal(v, after[n].detach())]
    assert not unchanged, f"unchanged after the step: {unchanged}"
    print(f"{prefix} {trainer}{tail}: {seconds:.1f} s")
