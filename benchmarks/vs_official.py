"""Training step and evaluation of the official LAMM code against ours (``python benchmarks/bench.py official``).

Both sides get the same random ViT-B/16 weights (one open_clip state dict; the official builder reads it as an
OpenAI checkpoint), the same images, labels and class names. The official side runs as its trainers run it: the
model in fp16 (``PREC: fp16``) or fp32 under autocast (``amp``), SGD over its prompt learner. Ours runs as
``lamm_plugin.dassl.trainer`` runs it (autocast and a GradScaler under ``amp``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from lamm_plugin import CoOpConfig, LAMMConfig, MaPLeConfig, build_model, load_clip
from lamm_plugin.cuda_graph import GraphedForward, GraphedStep

REPO = Path(__file__).resolve().parents[1]
BATCH = 32
EVAL_BATCH = 100
DEVICE = "cuda"  # ``bench.py official --device cpu`` runs the logic on a CPU
GRAPHS = True  # our training step as the trainer runs it on a GPU: replayed from a CUDA graph

#: name -> (our method, our config, official trainer module, official ``origin_clip`` (context frozen))
CASES = {
    "CoOp+LAMM": ("coop", CoOpConfig(ctx_init="a photo of a"), "coop", False),
    "LAMM alone": ("coop", CoOpConfig(ctx_init="a photo of a", train_ctx=False), "coop", True),
    "MaPLe+LAMM": ("maple", MaPLeConfig(), "maple", False),
}


def _own_attention(model, on: bool) -> bool:
    model.text.own_attention = on
    return True


def _image_checkpointing(model, on: bool) -> bool:
    if not model.method.prompts_image_tower:
        return False
    model.image.checkpoint = on
    return True


#: Our step with a fast path that is off by default turned on (name -> switch(model, on), which says whether it
#: applies): the measurement that would turn the default on (docs/DESIGN.md, section 3): our attention in the text
#: blocks (``OWN_ATTENTION True``), the image blocks' activation checkpointing (``CHECKPOINT_IMAGE True``, methods
#: with visual prompts).
VARIANTS = {"own attention": _own_attention, "image checkpointing": _image_checkpointing}


def classnames(n: int) -> list[str]:
    """The real class list with ``n`` names: Caltech101's for 100, ImageNet's (or its first ``n``) otherwise.

    ImageNet's list (CoOp's names) holds "missile" and "sunglasses" twice; the official code keys its label
    embeddings by name and stops with a size mismatch on it, so a repeat gets a suffix (" 2") on both sides.
    """
    folder = REPO / "tests" / "fixtures" / "classnames"
    source = "caltech101" if n == 100 else "imagenet"
    names = (folder / f"{source}.txt").read_text().splitlines()
    if n > len(names):
        raise ValueError(f"at most {len(names)} class names available")
    unique: list[str] = []
    for name in names[:n]:
        unique.append(name if name not in unique else f"{name} 2")
    return unique


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _timed(step: Callable[[], Any], warmup: int, steps: int) -> tuple[float, float]:
    """``(median ms per call, peak allocated MB)``, synchronised with the GPU."""
    for _ in range(warmup):
        step()
    _sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        _sync()
        times.append(1000 * (time.perf_counter() - start))
    peak = torch.cuda.max_memory_allocated() / 2**20 if DEVICE == "cuda" else float("nan")
    return statistics.median(times), peak


def _fresh() -> None:
    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---- the official side -----------------------------------------------------------------------------------------
def _official_cfg(case: str, n_names: int, precision: str):
    from yacs.config import CfgNode as CN

    method, _, _, origin_clip = CASES[case]
    cfg = CN()
    if method == "coop":
        cfg.TRAINER = CN({"COOP": CN({"N_CTX": 16, "CSC": False, "CTX_INIT": "a photo of a", "PREC": precision})})
        cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"
    else:
        cfg.TRAINER = CN({"MAPLE": CN({"N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": precision})})
        cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9
    cfg.INPUT = CN({"SIZE": (224, 224)})
    cfg.DATASET = CN({"SUBSAMPLE_CLASSES": "all"})
    cfg.origin_clip, cfg.random_init, cfg.eval_only = origin_clip, False, False
    cfg.triplet_loss, cfg.shots = True, 16
    return cfg


def official_model(case: str, names: list[str], state_dict: dict, precision: str, official: str):
    """The official ``CustomCLIP`` and its optimiser, as its trainer builds them."""
    from host_parity import import_original

    method, _, trainer, origin_clip = CASES[case]
    clip, module = import_original(official, trainer)
    details = {"trainer": "CoOp" if method == "coop" else "MaPLe", "vision_depth": 0, "language_depth": 0}
    details.update(vision_ctx=0, language_ctx=0, maple_length=2)
    model = clip.build_model({k: v.clone() for k, v in state_dict.items()}, details)  # fp16, as released CLIP
    if precision in ("fp32", "amp"):  # the trainers' rule: CLIP stays fp16 only under fp16
        model.float()
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        custom = module.CustomCLIP(_official_cfg(case, len(names), precision), names, model)
    for name, param in custom.named_parameters():  # the trainers' selection
        param.requires_grad_("prompt_learner" in name and not (origin_clip and name == "prompt_learner.ctx"))
    custom.to(DEVICE).train()
    params = [p for p in custom.parameters() if p.requires_grad]
    return custom, torch.optim.SGD(params, lr=2e-3, momentum=0.9, weight_decay=5e-4)


def official_step(custom, optim, images, labels, precision: str, scaler) -> Callable[[], float]:
    def step() -> float:
        if precision == "amp":
            with _autocast(precision):
                loss = custom(images, labels)
            optim.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optim)
            scaler.update()
        else:
            loss = custom(images, labels)
            optim.zero_grad()
            loss.backward()
            optim.step()
        return loss

    return step


def official_eval(custom, images, precision: str) -> Callable[[], Any]:
    custom.eval()

    @torch.no_grad()
    def run():
        with _autocast(precision):
            return custom(images)

    return run


# ---- our side --------------------------------------------------------------------------------------------------
def our_model(case: str, names: list[str], weights: str, precision: str):
    method, cfg, _, _ = CASES[case]
    clip = load_clip("ViT-B/16", pretrained=weights, precision=precision, device=DEVICE)
    model = build_model(method, clip, names, cfg, LAMMConfig(), shots=16).to(DEVICE).train()
    optim = torch.optim.SGD(model.trainable_parameters(), lr=2e-3, momentum=0.9, weight_decay=5e-4)
    return model, optim


def _autocast(precision: str):
    if precision != "amp":
        return contextlib.nullcontext()
    return torch.autocast(DEVICE, dtype=torch.float16 if DEVICE == "cuda" else torch.bfloat16)


def our_step(model, optim, images, labels, precision: str, scaler) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        with _autocast(precision):
            loss = model(images, labels).losses["total"]
        optim.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optim)
            scaler.update()
        else:
            loss.backward()
            optim.step()
        return loss

    return step


def graphed_step(graphed: GraphedStep, optim, images, labels, scaler) -> Callable[[], torch.Tensor]:
    """The trainer's step on a GPU: forward and backward replayed from the graph, the optimiser step eager."""

    def step() -> torch.Tensor:
        out = graphed(images, labels)
        if scaler is not None:
            scaler.step(optim)
            scaler.update()
        else:
            optim.step()
        return out.losses["total"]

    return step


def graph_vs_eager(model, graphed: GraphedStep, images, labels, precision: str, scaler) -> float:
    """Largest difference of loss and gradients between the replayed graph and the eager pass, relative to the
    largest gradient (same parameters, no update in between)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    eager_loss = graphed.forward_backward(images, labels).losses["total"].detach().clone()
    eager = [p.grad.clone() for p in params]
    loss = graphed(images, labels).losses["total"]
    scale = max(float(g.abs().max()) for g in eager)
    diff = max(float((p.grad - g).abs().max()) for p, g in zip(params, eager)) / scale
    return max(diff, float((loss - eager_loss).abs()) / max(abs(float(eager_loss)), 1e-12))


def our_eval(model, images, precision: str) -> Callable[[], Any]:
    """Our evaluation batch as the trainers run it: on a GPU replayed from a CUDA graph (GraphedForward; its
    capture happens here, before the timing), else eager."""
    model.eval()
    graphed = GraphedForward(model, torch.float16 if precision == "amp" else None) if GRAPHS else None

    @torch.no_grad()
    def run():
        logits = graphed(images) if graphed is not None else None
        if logits is not None:
            return logits
        with _autocast(precision):
            return model(images).logits

    run()  # first sight of the batch shape: eager
    run()  # the capture
    return run


# ---- one case ---------------------------------------------------------------------------------------------------
def measure(side: str, case: str, n_classes: int, precision: str, weights: str, official: Optional[str],
            steps: int = 8, profile: Optional[str] = None) -> dict[str, Any]:  # fmt: skip
    """One row: ms per training step, peak MB, first loss, eval images/s."""
    _fresh()
    names = classnames(n_classes)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, 224, 224, generator=g).to(DEVICE)
    labels = (torch.arange(BATCH) * 7 % n_classes).to(DEVICE)
    eval_images = torch.randn(EVAL_BATCH, 3, 224, 224, generator=g).to(DEVICE)
    scaler = None
    if side == "official" and precision == "amp":  # the official trainers scale the loss under amp only
        scaler = torch.amp.GradScaler(DEVICE)
    if side == "ours" and precision in ("fp16", "amp"):  # ours under fp16 too (fp32 master weights)
        scaler = torch.amp.GradScaler(DEVICE)
    if side == "official":
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model, optim = official_model(case, names, state, precision, official)
        step = official_step(model, optim, images, labels, precision, scaler)
    else:
        model, optim = our_model(case, names, weights, precision)
        step = our_step(model, optim, images, labels, precision, scaler)
    first_loss = float(step())  # the loss before any update: both sides start from the same weights
    extra: dict[str, Any] = {}
    if side == "ours":  # what turning on a path that is off by default changes, eagerly, before any capture
        for name, switch in VARIANTS.items():
            if switch(model, True):
                _fresh()
                extra[f"ms/step eager, {name}"], extra[f"peak MB eager, {name}"] = _timed(step, 1, steps)
                switch(model, False)
    _fresh()
    ms, peak = _timed(step, warmup=1, steps=steps)
    if side == "ours" and GRAPHS and DEVICE == "cuda":
        extra["ms/step eager"], extra["peak MB eager"] = ms, peak
        try:
            _fresh()  # the peak below covers the capture (its warm-up steps are eager) and the replays
            graphed = GraphedStep(model, torch.float16 if precision == "amp" else None, scaler)
            extra["graph vs eager"] = graph_vs_eager(model, graphed, images, labels, precision, scaler)
            if graphed.disabled:
                raise RuntimeError("capture failed")
            step = graphed_step(graphed, optim, images, labels, scaler)
            ms, peak = _timed(step, warmup=1, steps=steps)
        except Exception as error:  # noqa: BLE001 - keep the eager numbers
            extra["graph"] = f"{type(error).__name__}: {error}"[:120]
    if profile:
        _profile(step, profile, f"{side} {case}, {n_classes} classes, {precision}")
    run_eval = (official_eval if side == "official" else our_eval)(model, eval_images, precision)
    eval_ms, _ = _timed(run_eval, warmup=1, steps=max(2, steps // 2))
    row = {"side": side, "case": case, "classes": n_classes, "precision": precision, "ms/step": ms,
           "peak MB": peak, "first loss": first_loss, "eval img/s": EVAL_BATCH / eval_ms * 1000, **extra}  # fmt: skip
    del model, optim, step, run_eval
    _fresh()
    return row


def _profile(step: Callable[[], Any], path: str, title: str, steps: int = 5) -> None:
    """Top kernels and operators by GPU time, and the CPU time per step, appended to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    _sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        _sync()
    events = prof.key_averages()
    with open(path, "a") as f:
        f.write(f"\n==== {title}: {steps} steps\n")
        f.write(events.table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))
        f.write("\n")
        f.write(events.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=70))
        kernels = sum(e.count for e in events if e.device_type.name == "CUDA")
        cpu = sum(e.self_cpu_time_total for e in events) / 1000
        f.write(f"\nper step: {kernels / steps:.0f} GPU kernels, {cpu / steps:.1f} ms CPU\n")


def save_random_weights(path: str) -> None:
    """One random ViT-B/16 (open_clip layout, fp32) that both sides load."""
    torch.manual_seed(0)
    clip = load_clip("ViT-B/16", pretrained="", device="cpu")
    torch.save(clip.model.state_dict(), path)
