"""Whole runs of an original repository's own ``train.py`` against ours: the same data folder, seed, weights, config.

Each comparison runs the original's ``train.py`` as a user runs it (``runpy`` with its command line, its
``datasets/``, ``trainers/``, ``clip/`` and ``configs/``), then ours, on one generated data folder in DTD's layout
(``dtd/images/<class>/*.png`` and ``split_zhou_DescribableTextures.json``) with the same small random CLIP (OpenAI's
layout; the originals' ``clip.build_model`` and our backbone both build it from the file's shapes), CPU, float32.
Both runs are observed from outside: the trainer that ``build_trainer`` returns gets recording wrappers around its
``forward_backward`` and its evaluator's ``process``, which keep every batch's images and labels, the learning rate
and loss of every step and the test logits; the learned tensors are read when the run has ended.

Only what an original cannot do here is patched, each named in :data:`PATCHES`: its CLIP loader gets the weight file
(``clip._download`` names the file; nothing can be downloaded), Dassl's warm-up scheduler (which passes ``verbose``
to torch's scheduler: refused by torch >= 2.7) is the project's same schedule without that argument, and, for the
originals that cast prompts to fp16 inside an fp32 model on a GPU, ``Tensor.half`` returns the tensor unchanged.

The ``fp16`` cases run both sides in ``PREC fp16``, as the originals' published configs do, ours with
``FP16_LEARNED True`` (each learned tensor in the original's dtype, plain SGD): there the originals' ``.half()`` casts
are what they mean and stay, and the bounds are what fp16 rounding explains (:data:`FP16`). ``--fp32-master`` runs
them with ``FP16_LEARNED False`` instead, to see what the comparison tells apart.

    python benchmarks/whole_run.py [--fp32-master] [case ...]   # every case by default; prints the comparison table
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import re
import runpy
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import host_parity  # noqa: E402
import originals  # noqa: E402

#: The small CLIP both sides build from the file's shapes (OpenAI's builder infers heads as width // 64).
SMALL_CLIP = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}
#: Three blocks a tower, for the hosts with deep prompts in both towers (their code takes any width; the towers'
#: widths differ, so that the comparison pairs each text prompt with a text prompt).
DEEP_CLIP = {
    **SMALL_CLIP,
    "vision_cfg": {**SMALL_CLIP["vision_cfg"], "layers": 3, "width": 128},
    "text_cfg": {**SMALL_CLIP["text_cfg"], "layers": 3},
}
#: MaPLe's code hard-codes the widths of ViT-B (text 512, vision 768): the host comparisons' small ViT.
MAPLE_CLIP = host_parity.HOST_VIT

#: The generated data: classes, images per class (train, val, test), shots, batch, epochs.
CLASSES, PER_CLASS, SHOTS, BATCH, EPOCHS = 8, (4, 4, 5), 4, 8, 4

#: What an original cannot do here, and what stands in for it (each applied only to the original's run).
PATCHES = {
    "clip._download": "returns the weight file: the original's loader reads it (a state dict) and builds from it",
    "build_lr_scheduler": "Dassl's warm-up wrappers pass `verbose` to torch's scheduler, refused by torch >= 2.7: "
    "lamm_plugin.dassl.compat.build_lr_scheduler builds the same schedule without it",
    "Tensor.half": "a no-op in the original's run (its prompts are cast to fp16 inside an fp32 model for a GPU)",
    "cuda": "`Tensor.cuda` and `Module.cuda` are no-ops in the original's run (it moves features to a GPU itself)",
}


@dataclass
class Case:
    """One comparison: the original's command line and ours on the same data, seed and weights."""

    repo_env: str  # the variable naming the original's checkout
    original: list[str]  # its train.py's arguments besides --root/--seed/--output-dir/--dataset-config-file
    ours: list[str]  # our train.py's arguments besides the same
    opts: list[str] = field(default_factory=list)  # config overrides both sides get
    original_opts: list[str] = field(default_factory=list)
    our_opts: list[str] = field(default_factory=list)
    clip: dict = field(default_factory=lambda: SMALL_CLIP)
    backbone: str = "ViT-B/32"
    patches: tuple[str, ...] = ("clip._download", "build_lr_scheduler")
    #: Where a numeric choice of the original is not ours: the bounds the comparison holds to, and why.
    loss_rtol: float = 1e-5
    learned_atol: float = 1e-5
    grad_rtol: Optional[float] = None  # the first step's gradients, relative to each one's largest entry
    predictions_differ: int = 0  # test predictions that may differ
    differs: str = ""
    #: Why the comparison is too slow for CI's end-to-end tier (then it runs with the marker ``slow``), if it is.
    slow: str = ""


def _same_host(trainer: str, config: str, repo_env: str, opts: tuple[str, ...] | list[str] = (), **kwargs) -> Case:
    """The original's ``trainer`` and ours with the config of the same name (``configs/trainers/<trainer>/<config>``
    in each repository), both in fp32."""
    path = f"configs/trainers/{trainer}/{config}.yaml"
    return Case(
        repo_env=repo_env,
        original=["--trainer", trainer, "--config-file", path],
        ours=["--trainer", trainer, "--config-file", str(REPO / path)],
        opts=[f"TRAINER.{trainer.upper()}.PREC", "fp32", *opts],
        **kwargs,
    )


def _official_coop(our_config: str, *flags: str, our_opts: tuple[str, ...] | list[str] = ()) -> Case:
    """The official LAMM code's CoOp run (``--triplet-loss`` and ``flags``) against ``LAMM_CoOp`` with ``our_config``
    (a ``LAMM_CoOp`` config), both in fp32."""
    return Case(
        repo_env="LAMM_OFFICIAL_REPO",
        original=[
            "--trainer",
            "CoOp",
            "--config-file",
            "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml",
            "--triplet-loss",
            *flags,
        ],  # fmt: skip
        ours=["--trainer", "LAMM_CoOp", "--config-file", str(REPO / "configs/trainers/LAMM_CoOp" / our_config)],
        original_opts=["TRAINER.COOP.PREC", "fp32"],
        our_opts=["TRAINER.LAMM_COOP.PREC", "fp32", "TRAINER.LAMM_COOP.FP16_LEARNED", "False", *our_opts],
        backbone="ViT-B/16",
    )


CASES: dict[str, Case] = {
    "CoOp": _same_host(
        "CoOp",
        "vit_b32_ep50",
        "COOP_ORIGINAL_REPO",
    ),
    "official CoOp+LAMM": _official_coop("vit_b16_ep50_ctxv1_official.yaml"),
    "official LAMM alone": _official_coop("vit_b16_ep50_ctxv1_frozen_official.yaml", "--origin-clip"),
    "official LAMM alone, random init": _official_coop(
        "vit_b16_ep50_ctxv1_frozen_official.yaml",
        "--origin-clip",
        "--random-init",
        our_opts=["TRAINER.LAMM.RANDOM_INIT", "True"],
    ),
    "official MaPLe+LAMM": Case(
        repo_env="LAMM_OFFICIAL_REPO",
        original=[
            "--trainer",
            "MaPLe",
            "--config-file",
            "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
            "--triplet-loss",
        ],  # fmt: skip
        ours=[
            "--trainer",
            "LAMM_MaPLe",
            "--config-file",
            str(REPO / "configs/trainers/LAMM_MaPLe/vit_b16_c2_ep5_batch4_2ctx_official.yaml"),
        ],  # fmt: skip
        original_opts=["TRAINER.MAPLE.PREC", "fp32", "TRAINER.MAPLE.PROMPT_DEPTH", "3"],
        our_opts=[
            "TRAINER.LAMM_MAPLE.PREC",
            "fp32",
            "TRAINER.LAMM_MAPLE.FP16_LEARNED",
            "False",
            "TRAINER.LAMM_MAPLE.PROMPT_DEPTH",
            "3",
        ],  # fmt: skip
        clip=MAPLE_CLIP,
        backbone="ViT-B/16",
        patches=("clip._download", "build_lr_scheduler", "Tensor.half"),
    ),
    "CoCoOp": _same_host(
        "CoCoOp",
        "vit_b16_c4_ep10_batch1_ctxv1",
        "COOP_ORIGINAL_REPO",
        backbone="ViT-B/16",
    ),
    "MaPLe": _same_host(
        "MaPLe",
        "vit_b16_c2_ep5_batch4_2ctx",
        "MAPLE_ORIGINAL_REPO",
        opts=["TRAINER.MAPLE.PROMPT_DEPTH", "3"],
        our_opts=["TRAINER.MAPLE.CLONE_DEEP_PROJ", "True"],
        clip=MAPLE_CLIP,
        backbone="ViT-B/16",
        patches=("clip._download", "build_lr_scheduler", "Tensor.half"),
    ),
    "VPT": _same_host(
        "VPT",
        "vit_b16_c2_ep5_batch4_4",
        "MAPLE_ORIGINAL_REPO",
        opts=["TRAINER.VPT.PROMPT_DEPTH_VISION", "3"],
        clip=DEEP_CLIP,
        backbone="ViT-B/16",
        patches=("clip._download", "build_lr_scheduler", "Tensor.half", "cuda"),
    ),
    "IVLP": _same_host(
        "IVLP",
        "vit_b16_c2_ep5_batch4_2+2ctx",
        "MAPLE_ORIGINAL_REPO",
        opts=["TRAINER.IVLP.PROMPT_DEPTH_VISION", "3", "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "3"],
        clip=DEEP_CLIP,
        backbone="ViT-B/16",
        patches=("clip._download", "build_lr_scheduler", "Tensor.half"),
    ),
    "KgCoOp": Case(
        repo_env="KGCOOP_ORIGINAL_REPO",
        original=["--trainer", "KgCoOp", "--config-file", "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml"],
        ours=["--trainer", "KgCoOp", "--config-file", str(REPO / "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml")],
        original_opts=["TRAINER.COOP.PREC", "fp32", "TRAINER.COOP.N_CTX", "4", "TRAINER.COOP.W", "8.0"],
        our_opts=["TRAINER.KGCOOP.PREC", "fp32"],
        backbone="ViT-B/16",
        patches=("clip._download", "build_lr_scheduler", "cuda"),
    ),
    "PromptSRC": _same_host(
        "PromptSRC",
        "vit_b16_c2_ep20_batch4_4+4ctx",
        "PROMPTSRC_ORIGINAL_REPO",
        opts=["TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "3", "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "3"],
        # GPA over the 4 epochs; the original's keys are ints, ours floats (yacs merges neither into the other)
        original_opts=["TRAINER.PROMPTSRC.GPA_MEAN", "3", "TRAINER.PROMPTSRC.GPA_STD", "1"],
        our_opts=["TRAINER.PROMPTSRC.GPA_MEAN", "3.0", "TRAINER.PROMPTSRC.GPA_STD", "1.0"],
        clip=DEEP_CLIP,
        backbone="ViT-B/16",
        patches=("clip._download", "build_lr_scheduler", "Tensor.half", "cuda"),
    ),
}


def in_fp16(case: Case, fp16_learned: bool = True, **kwargs) -> Case:
    """``case`` with ``PREC fp16`` on both sides, ours with ``FP16_LEARNED`` (the learned tensors in fp16 where the
    original keeps them so, plain SGD): the original's ``.half()`` casts are what they mean there, so unpatched."""
    node = next(opt.rsplit(".", 1)[0] for opt in case.our_opts + case.opts if opt.endswith(".PREC"))

    def fp16(opts: list[str]) -> list[str]:
        return [
            "fp16" if key.endswith(".PREC") else str(fp16_learned) if key.endswith(".FP16_LEARNED") else value
            for key, value in zip(["", *opts], opts)
        ]

    learned = [] if f"{node}.FP16_LEARNED" in case.our_opts else [f"{node}.FP16_LEARNED", str(fp16_learned)]
    return dataclasses.replace(
        case,
        opts=fp16(case.opts),
        original_opts=fp16(case.original_opts),
        our_opts=fp16(case.our_opts) + learned,
        patches=tuple(p for p in case.patches if p != "Tensor.half"),
        **kwargs,
    )


#: Why the fp16 runs differ: both compute in fp16 (CLIP's matmuls, attention, features) with other code.
FP16 = dict(
    loss_rtol=4e-3,
    learned_atol=5e-4,
    grad_rtol=1e-2,
    predictions_differ=1,
    differs="both compute in fp16 with other code (ours truncates the text at the end token and computes the "
    "logits in fp32; the original's loss is an fp16 number, 2^-9 apart near 2): each loss within 4 fp16 spacings "
    "(4e-3 relative; measured up to 2.1e-3), the first step's gradients within 1e-2 of each tensor's largest entry "
    "(about 20 fp16 unit roundoffs, 2^-11, over the towers' forward and backward; measured up to 5.2e-3), the "
    "learned tensors within two fp16 spacings of the label rows' values (2^-12 in [0.25, 0.5): 5e-4; measured up to "
    "2.4e-4), each in the original's dtype; one of the 40 test predictions may differ (CoCoOp's and MaPLe+LAMM's "
    "do; CoCoOp's image has the original's two top logits two fp16 spacings apart, 2.6035 and 2.5996)",
)
#: Runs of the original MaPLe code in fp16 on a CPU take minutes (torch's fp16 matmul with an untransposed right
#: operand, which the backward of every linear layer takes, is 50 times slower there than fp32).
MAPLE_FP16_SLOW = "the original's fp16 run takes about 5 minutes on a CPU (its 512- and 768-wide towers)"
CASES["CoOp fp16"] = in_fp16(CASES["CoOp"], **FP16)
CASES["CoCoOp fp16"] = in_fp16(CASES["CoCoOp"], **FP16)
CASES["official CoOp+LAMM fp16"] = in_fp16(CASES["official CoOp+LAMM"], **FP16)
CASES["KgCoOp fp16"] = in_fp16(CASES["KgCoOp"], **FP16)
CASES["IVLP fp16"] = in_fp16(CASES["IVLP"], **FP16)
#: PromptSRC's fp16 run: its self-regularisation's L1 terms (weights 25 and 10) take the sign of the difference of
#: prompted and frozen features, nearly equal at the start, which fp16 rounding flips for some entries (first-step
#: gradients up to 1.1e-2 of the largest entry measured across CPU kernel settings), and GPA sums every epoch's
#: prompts in fp16 (learned tensors up to 7.1e-4 apart, three fp16 spacings at 0.5).
PROMPTSRC_FP16 = {
    **FP16,
    "grad_rtol": 5e-2,
    "learned_atol": 1.5e-3,
    "differs": FP16["differs"] + "; PromptSRC: its L1 terms' signs and its fp16 GPA sums, bounds 5e-2 and 1.5e-3",
}
CASES["PromptSRC fp16"] = in_fp16(CASES["PromptSRC"], **PROMPTSRC_FP16)
CASES["MaPLe fp16"] = in_fp16(CASES["MaPLe"], **FP16, slow=MAPLE_FP16_SLOW)
CASES["official MaPLe+LAMM fp16"] = in_fp16(CASES["official MaPLe+LAMM"], **FP16, slow=MAPLE_FP16_SLOW)


# ---- data and weights --------------------------------------------------------------------------------------------
def make_data(root: str) -> str:
    """The generated images in DTD's layout under ``root/dtd`` (a few-shot cache there is removed)."""
    from lamm_experiments import synthetic

    folder = os.path.join(root, "dtd")
    n_train, n_val, n_test = PER_CLASS
    synthetic.write_image_folder(
        folder, num_train=n_train, num_val=n_val, num_test=n_test, num_classes=CLASSES, image_size=32,
        split_filename="split_zhou_DescribableTextures.json",
    )  # fmt: skip
    cache = os.path.join(folder, "split_fewshot")
    for name in os.listdir(cache) if os.path.isdir(cache) else []:
        os.remove(os.path.join(cache, name))
    return root


def make_weights(path: str, shapes: dict, seed: int = 0) -> str:
    """Random CLIP weights in OpenAI's layout, fp16-exact (the originals' builder stores them in fp16 first)."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(**shapes)
    with torch.no_grad():
        model.token_embedding.weight.normal_(std=0.2)  # a realistic scale for the text tower
        for param in model.parameters():
            param.copy_(param.half().float())
    torch.save(model.state_dict(), path)
    return path


# ---- observing a run ---------------------------------------------------------------------------------------------
@dataclass
class Record:
    """What a run showed: per step the images, labels, learning rate and loss; the test logits; learned tensors."""

    images: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    lrs: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    logits: list = field(default_factory=list)
    learned: dict = field(default_factory=dict)
    dtypes: dict = field(default_factory=dict)  # the learned tensors' dtypes
    seconds: float = 0.0
    trainer: Any = None
    rng_after_build: Any = None  # torch's random state when the trainer is built (what training draws from)
    initial: dict = field(default_factory=dict)  # the learned tensors when training starts
    first_grads: dict = field(default_factory=dict)  # the learned tensors' gradients of the first step


def _observe(trainer, record: Record) -> None:
    """Recording wrappers on this trainer object (its class and code stay as they are)."""
    forward_backward, process = trainer.forward_backward, trainer.evaluator.process

    def recorded_step(batch):
        if not record.images:
            record.initial = learned_tensors(trainer.model)
        record.images.append(batch["img"].detach().clone())
        record.labels.append(batch["label"].detach().clone())
        record.lrs.append(trainer.get_current_lr())
        summary = forward_backward(batch)
        record.losses.append(float(summary["loss"]))
        if len(record.losses) == 1:
            named = trainer.model.named_parameters()
            record.first_grads = {n: p.grad.detach().float().clone() for n, p in named if p.grad is not None}
        return summary

    def recorded_process(output, label):
        record.logits.append(output.detach().float().clone())
        return process(output, label)

    trainer.forward_backward = recorded_step
    trainer.evaluator.process = recorded_process
    record.trainer = trainer
    record.rng_after_build = torch.get_rng_state()


def learned_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def _patched(obj, name: str, value):
    saved = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, saved)


@contextlib.contextmanager
def _console_kept():
    """Dassl's ``setup_logger`` replaces ``sys.stdout`` by a tee that closes the console when it is collected: the
    console is put back and the tee's own reference to it replaced, so that nothing closes it."""
    console = sys.stdout
    try:
        yield
    finally:
        tee, sys.stdout = sys.stdout, console
        if tee is not console and hasattr(tee, "console"):
            tee.console = io.StringIO()


def common_args(root: str, out: str, dataset_config: str, seed: int) -> list[str]:
    return ["--root", root, "--seed", str(seed), "--output-dir", out, "--dataset-config-file", dataset_config]


def small_opts(case: Case) -> list[str]:
    return [
        "DATASET.NUM_SHOTS", str(SHOTS),
        "OPTIM.MAX_EPOCH", str(EPOCHS),
        "DATALOADER.TRAIN_X.BATCH_SIZE", str(BATCH),
        "DATALOADER.TEST.BATCH_SIZE", "100",
        "DATALOADER.NUM_WORKERS", "0",
        "INPUT.SIZE", "(32, 32)",
        "MODEL.BACKBONE.NAME", case.backbone,
        "USE_CUDA", "False",
        *case.opts,
    ]  # fmt: skip


def run_original(case: Case, repo: str, root: str, out: str, weights: str, seed: int = 1) -> Record:
    """The original's ``train.py`` as ``python train.py ...`` runs it, in this process, observed."""
    import dassl.engine
    import dassl.optim

    from lamm_plugin.dassl import compat

    record = Record()
    argv = [
        "train.py",
        *common_args(root, out, os.path.join(repo, "configs/datasets/dtd.yaml"), seed),
        *case.original,
        *small_opts(case),
        *case.original_opts,
    ]
    argv = [os.path.join(repo, a) if a.startswith("configs/") else a for a in argv]
    real_build = dassl.engine.build_trainer

    def build_trainer(cfg):
        # The original's modules are imported by now: hand over the weights and the scheduler fix (PATCHES).
        sys.modules["clip.clip"]._download = lambda url, root=None: weights
        for module in [m for k, m in sys.modules.items() if k.startswith("trainers.")]:
            if hasattr(module, "build_lr_scheduler"):
                module.build_lr_scheduler = compat.build_lr_scheduler
        trainer = real_build(cfg)
        _observe(trainer, record)
        return trainer

    half = (lambda self, *a, **k: self) if "Tensor.half" in case.patches else torch.Tensor.half
    cuda = "cuda" in case.patches
    tensor_cuda = (lambda self, *a, **k: self) if cuda else torch.Tensor.cuda
    module_cuda = (lambda self, *a, **k: self) if cuda else torch.nn.Module.cuda
    start = time.perf_counter()
    with (
        originals.original_modules(repo),
        _patched(dassl.engine, "build_trainer", build_trainer),
        _patched(sys, "argv", argv),
        _console_kept(),
        _patched(torch.Tensor, "half", half),
        _patched(torch.Tensor, "cuda", tensor_cuda),
        _patched(torch.nn.Module, "cuda", module_cuda),
        contextlib.chdir(repo),
    ):
        runpy.run_path(os.path.join(repo, "train.py"), run_name="__main__")
    record.seconds = time.perf_counter() - start
    record.learned = learned_tensors(record.trainer.model)
    record.dtypes = {n: p.dtype for n, p in record.trainer.model.named_parameters() if p.requires_grad}
    return record


def run_ours(case: Case, root: str, out: str, weights: str, seed: int = 1) -> Record:
    """Our ``train.py`` with the same command line, in this process, observed."""
    sys.path.insert(0, str(REPO))
    import train

    record = Record()
    real_build = train.build_trainer

    def build_trainer(cfg):
        trainer = real_build(cfg)
        _observe(trainer, record)
        return trainer

    argv = [
        *common_args(root, out, str(REPO / "configs/datasets/dtd.yaml"), seed),
        *case.ours,
        *small_opts(case),
        "MODEL.BACKBONE.PRETRAINED",
        weights,
        *case.our_opts,
    ]
    start = time.perf_counter()
    with _patched(train, "build_trainer", build_trainer):
        train.main(train.parse_args(argv))
    record.seconds = time.perf_counter() - start
    record.learned = learned_tensors(record.trainer.model)
    record.dtypes = {n: p.dtype for n, p in record.trainer.model.named_parameters() if p.requires_grad}
    return record


# ---- comparing ---------------------------------------------------------------------------------------------------
def _pair_learned(theirs: dict, ours: dict) -> list[tuple[str, str]]:
    """Learned tensors paired by shape, else by size (the official LAMM code's ``[classes, tokens, width]`` labels are
    our ``[classes * tokens, width]`` label table), in order of registration where several share one."""
    pairs, left = [], dict(ours)
    # The originals' deep prompts live in the transformer blocks (``...resblocks.<i>.VPT_shallow``), registered
    # before their shallow prompt; ours hold the shallow prompt first, then the deep ones by layer.
    block = re.compile(r"resblocks\.(\d+)\.")
    order = sorted(theirs, key=lambda n: (1, int(block.search(n).group(1))) if block.search(n) else (0, 0))
    for name in order:
        value = theirs[name]
        match = next((k for k, v in left.items() if v.shape == value.shape), None)
        match = match or next((k for k, v in left.items() if v.numel() == value.numel()), None)
        if match is None:
            raise AssertionError(f"the original's learned {name} {tuple(value.shape)} has no counterpart in ours")
        pairs.append((name, match))
        del left[match]
    if left:
        raise AssertionError(f"ours learns {sorted(left)} besides the original's {sorted(theirs)}")
    return pairs


def compare(theirs: Record, ours: Record) -> dict[str, Any]:
    """How the two runs differ (steps, batches, learning rates, losses, predictions, learned tensors)."""
    steps = min(len(theirs.losses), len(ours.losses))
    same_batches = all(
        torch.equal(a, b) and torch.equal(c, d)
        for a, b, c, d in zip(theirs.images, ours.images, theirs.labels, ours.labels)
    )
    loss_rel = max((abs(a - b) / max(abs(a), 1e-12) for a, b in zip(theirs.losses, ours.losses)), default=float("nan"))
    pred_a = torch.cat(theirs.logits).argmax(1) if theirs.logits else torch.empty(0)
    pred_b = torch.cat(ours.logits).argmax(1) if ours.logits else torch.empty(0)
    pairs = _pair_learned(theirs.learned, ours.learned)

    def max_diff(a: dict, b: dict) -> float:
        return max(((a[x].flatten() - b[y].flatten()).abs().max().item() for x, y in pairs), default=float("nan"))

    learned, initial = max_diff(theirs.learned, ours.learned), max_diff(theirs.initial, ours.initial)
    # Per learned tensor, the first step's largest gradient difference relative to that gradient's largest entry.
    grad_rel = max(
        (
            ((g := theirs.first_grads[a].flatten()) - ours.first_grads[b].flatten()).abs().max().item()
            / max(g.abs().max().item(), 1e-30)
            for a, b in pairs
            if a in theirs.first_grads and b in ours.first_grads
        ),
        default=float("nan"),
    )
    first = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(theirs.losses[:1], ours.losses[:1])]
    dtypes = [(a, str(theirs.dtypes[a]), str(ours.dtypes[b])) for a, b in pairs]
    return {
        "same random state after building": torch.equal(theirs.rng_after_build, ours.rng_after_build),
        "steps": (len(theirs.losses), len(ours.losses)),
        "same batches": same_batches and len(theirs.images) == len(ours.images),
        "same lrs": theirs.lrs == ours.lrs,
        "loss rel. diff": loss_rel,
        "first loss rel. diff": first[0] if first else float("nan"),
        "first grad rel. diff": grad_rel,
        "predictions": (int((pred_a == pred_b).sum()), len(pred_a), len(pred_b)),
        "initial max diff": initial,
        "learned max diff": learned,
        "dtypes differ": [d for d in dtypes if d[1] != d[2]],
        "seconds": (round(theirs.seconds, 1), round(ours.seconds, 1)),
        "compared steps": steps,
    }


def run_case(name: str, work: Optional[str] = None) -> dict[str, Any]:
    """Both runs of ``CASES[name]`` in a fresh folder; returns :func:`compare`'s differences."""
    case = CASES[name]
    repo = os.environ.get(case.repo_env, "")
    if not repo:
        raise RuntimeError(f"set {case.repo_env} to the original's checkout")
    with contextlib.ExitStack() as stack:
        work = work or stack.enter_context(tempfile.TemporaryDirectory())
        weights = make_weights(os.path.join(work, "clip.pt"), case.clip)
        root = make_data(os.path.join(work, "data"))
        theirs = run_original(case, repo, root, os.path.join(work, "original"), weights)
        make_data(root)  # the same folder without the original's few-shot cache
        ours = run_ours(case, root, os.path.join(work, "ours"), weights)
        return compare(theirs, ours)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", default=list(CASES), help=f"of {list(CASES)}")
    parser.add_argument(
        "--fp32-master",
        action="store_true",
        help="run the fp16 cases with our FP16_LEARNED False (fp32 master weights and a GradScaler): what the "
        "comparison tells apart",
    )
    args = parser.parse_args(argv)
    if args.fp32_master:
        fp16_cases = [name for name in args.cases if "fp16" in CASES[name].opts + CASES[name].our_opts]
        CASES.update({name: in_fp16(CASES[name], fp16_learned=False) for name in fp16_cases})
    rows = []
    for name in args.cases:
        diff = run_case(name)
        rows.append((name, diff))
    print(
        "| host | steps | same batches, lrs | initial max diff | first loss, gradients rel. diff | max loss rel. diff "
        "| predictions equal | learned max diff | learned dtypes | s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, d in rows:
        eq, n, _ = d["predictions"]
        dtypes = "same" if not d["dtypes differ"] else f"{len(d['dtypes differ'])} differ"
        print(
            f"| {name} | {d['steps'][0]} | {d['same batches']}, {d['same lrs']} | {d['initial max diff']:.1e} | "
            f"{d['first loss rel. diff']:.1e}, {d['first grad rel. diff']:.1e} | {d['loss rel. diff']:.1e} | {eq}/{n} "
            f"| {d['learned max diff']:.1e} | {dtypes} | {d['seconds'][0]} + {d['seconds'][1]} |"
        )


if __name__ == "__main__":
    main()
