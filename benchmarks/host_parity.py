"""Compare our host methods with their original code: logits and gradients on the same random CLIP.

MaPLe, VPT and IVLP against github.com/muzairkhattak/multimodal-prompt-learning (``trainers/maple.py``,
``trainers/vpt.py``, ``trainers/independentVL.py`` and its ``clip/`` package), CoOp and CoCoOp against
github.com/KaiyangZhou/CoOp (``trainers/coop.py``, ``trainers/cocoop.py``), KgCoOp against
github.com/htyao89/KgCoOp (its ``KgCoOp/`` folder: ``trainers/kgcoop.py``), PromptSRC against
github.com/muzairkhattak/PromptSRC (``trainers/promptsrc.py``: its model and its trainer's loss,
self-regularisation included), ProGrad against github.com/BeierZhu/Prompt-align (``ProGrad.public/trainers/
prograd.py``: its model, zero-shot teacher and loss; ``prograd_backward_and_update`` of its Dassl fork's
``Dassl.ProGrad.pytorch/dassl/engine/trainer.py``: the projected gradient).
Nothing of them is copied here: their modules are imported from the given checkouts (and need Dassl). Both sides
get the same random CLIP weights (widths MaPLe hard-codes: text 512, vision 768), the same prompt values, images
and labels; the loss is cross-entropy on the logits (KgCoOp: plus ``W`` times its knowledge-guided term, with
its hand-crafted text features from the same CLIP weights in fp16, as both compute them by default).

The originals cast visual prompts to fp16 (``.half()``) inside an fp32 model, which rounds their values and
gradients. The comparison runs with that cast made a no-op (``exact``) and reports the difference it makes
(``with_half_cast``); ours computes in the model's dtype (README, "Fidelity").

    python benchmarks/host_parity.py --maple /path/to/multimodal-prompt-learning --coop /path/to/CoOp \
        --kgcoop /path/to/KgCoOp/KgCoOp
        --promptsrc /path/to/PromptSRC --prograd /path/to/Prompt-align
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from open_clip.model import CLIP

from lamm_plugin import (
    CoCoOpConfig,
    CoOpConfig,
    IVLPConfig,
    KgCoOpConfig,
    LAMMConfig,
    MaPLeConfig,
    ProGradConfig,
    PromptSRCConfig,
    VPTConfig,
    build_model,
)
from lamm_plugin.backbone import CLIPBundle

sys.path.insert(0, str(Path(__file__).resolve().parent))
import originals  # noqa: E402
from official_parity import _Tokenizer  # noqa: E402

#: A small ViT with the widths MaPLe's code hard-codes (text 512, vision 768; heads = width // 64).
HOST_VIT = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 768, "patch_size": 16, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 3},
}
CLASSNAMES = ["golden_retriever", "bernese mountain dog", "sea lion", "red fox", "common goldeneye duck"]

#: Cases: name -> (our method, our config, original repository key).
CASES = {
    "maple-shallow": ("maple", MaPLeConfig(prompt_depth=1), "maple"),
    "maple-deep": ("maple", MaPLeConfig(prompt_depth=3), "maple"),
    "vpt-shallow": ("vpt", VPTConfig(n_ctx_vision=4, prompt_depth_vision=1), "maple"),
    "vpt-deep": ("vpt", VPTConfig(n_ctx_vision=4, prompt_depth_vision=3), "maple"),
    "coop-end": ("coop", CoOpConfig(n_ctx=4, class_token_position="end"), "coop"),
    "coop-middle": ("coop", CoOpConfig(n_ctx=4, class_token_position="middle"), "coop"),
    "coop-front": ("coop", CoOpConfig(n_ctx=4, class_token_position="front"), "coop"),
    "coop-csc": ("coop", CoOpConfig(n_ctx=4, csc=True), "coop"),
    "coop-init": ("coop", CoOpConfig(ctx_init="a photo of a"), "coop"),
    "cocoop-init": ("cocoop", CoCoOpConfig(ctx_init="a photo of a"), "coop"),
    "cocoop-random": ("cocoop", CoCoOpConfig(n_ctx=4, ctx_init=""), "coop"),
    "kgcoop-init": ("kgcoop", KgCoOpConfig(ctx_init="a photo of a", dataset="OxfordPets"), "kgcoop"),
    "kgcoop-random": ("kgcoop", KgCoOpConfig(n_ctx=4, ctx_init="", dataset="DescribableTextures"), "kgcoop"),
    "promptsrc-shallow": ("promptsrc", PromptSRCConfig(prompt_depth_text=1, prompt_depth_vision=1), "promptsrc"),
    "promptsrc-deep": ("promptsrc", PromptSRCConfig(prompt_depth_text=3, prompt_depth_vision=2), "promptsrc"),
    "ivlp-shallow": ("ivlp", IVLPConfig(prompt_depth_text=1, prompt_depth_vision=1), "maple"),
    "ivlp-deep": ("ivlp", IVLPConfig(prompt_depth_text=3, prompt_depth_vision=2), "maple"),
    # ProGrad's CTX_INIT True (the template's words after zeros; "pet," tokenises into two tokens) and random init.
    "prograd-init": ("prograd", ProGradConfig(n_ctx=16, dataset="OxfordPets"), "prograd"),
    "prograd-init-food": ("prograd", ProGradConfig(n_ctx=10, dataset="Food101", grad_lambda=0.8), "prograd"),
    "prograd-random": ("prograd", ProGradConfig(n_ctx=4, template_init=False, dataset="EuroSAT"), "prograd"),
}
#: The original trainer module of a method, where it is not named after the method.
ORIGINAL_MODULES = {"ivlp": "independentVL"}


def import_original(path: str, trainer: str):
    """``(clip module, trainers.<trainer> module)`` of a checkout (see :mod:`originals`)."""
    clip, module = originals.import_original(path, "clip.clip", f"trainers.{trainer}")
    return clip, module


@contextlib.contextmanager
def _half_is_identity(active: bool):
    """Make ``Tensor.half()`` a no-op (the originals' casts of fp32 prompts), to compare the arithmetic."""
    if not active:
        yield
        return
    original = torch.Tensor.half
    torch.Tensor.half = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.half = original


@contextlib.contextmanager
def _cuda_is_identity():
    """Make ``.cuda()`` a no-op: the original KgCoOp moves its hand-crafted features to the GPU while building."""
    saved = torch.Tensor.cuda, torch.nn.Module.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = saved


def _cfg(method: str, cfg):
    from yacs.config import CfgNode as CN

    node = CN()
    node.INPUT = CN({"SIZE": (32, 32)})
    if method == "coop":
        node.TRAINER = CN({"COOP": CN({"N_CTX": cfg.n_ctx, "CTX_INIT": cfg.ctx_init, "CSC": cfg.csc})})
        node.TRAINER.COOP.CLASS_TOKEN_POSITION = cfg.class_token_position
    elif method == "cocoop":
        node.TRAINER = CN({"COCOOP": CN({"N_CTX": cfg.n_ctx, "CTX_INIT": cfg.ctx_init, "PREC": "fp32"})})
    elif method == "kgcoop":
        node.TRAINER = CN({"COOP": CN({"N_CTX": cfg.n_ctx, "CTX_INIT": cfg.ctx_init, "CSC": cfg.csc})})
        node.TRAINER.COOP.CLASS_TOKEN_POSITION = cfg.class_token_position
        node.TRAINER.COOP.W = cfg.kg_weight
        node.TRAINER.COCOOP = CN({"PREC": "fp32"})
        node.DATASET = CN({"NAME": cfg.dataset})
    elif method == "promptsrc":
        keys = ("N_CTX_TEXT", "N_CTX_VISION", "CTX_INIT", "PROMPT_DEPTH_TEXT", "PROMPT_DEPTH_VISION")
        keys += ("TEXT_LOSS_WEIGHT", "IMAGE_LOSS_WEIGHT")
        node.TRAINER = CN({"PROMPTSRC": CN({k: getattr(cfg, k.lower()) for k in keys})})
        node.TRAINER.PROMPTSRC.PREC = "fp32"
        node.OPTIM = CN({"MAX_EPOCH": 20})
    elif method == "ivlp":
        keys = ("N_CTX_TEXT", "N_CTX_VISION", "CTX_INIT", "PROMPT_DEPTH_TEXT", "PROMPT_DEPTH_VISION")
        node.TRAINER = CN({"IVLP": CN({k: getattr(cfg, k.lower()) for k in keys})})
    elif method == "maple":
        node.TRAINER = CN({"MAPLE": CN({"N_CTX": cfg.n_ctx, "CTX_INIT": cfg.ctx_init})})
        node.TRAINER.MAPLE.PROMPT_DEPTH = cfg.prompt_depth
    else:
        node.TRAINER = CN({"VPT": CN({"N_CTX_VISION": cfg.n_ctx_vision})})
        node.TRAINER.VPT.PROMPT_DEPTH_VISION = cfg.prompt_depth_vision
    return node


def prograd_paths(path: str) -> tuple[Path, Path]:
    """ProGrad's ``ProGrad.public`` folder and its Dassl fork's ``trainer.py`` in a checkout of Prompt-align."""
    root = Path(path)
    return root / "ProGrad.public", root / "Dassl.ProGrad.pytorch" / "dassl" / "engine" / "trainer.py"


def _prograd_cfg(cfg: ProGradConfig):
    from yacs.config import CfgNode as CN

    node = CN()
    node.INPUT = CN({"SIZE": (32, 32)})
    node.DATASET = CN({"NAME": cfg.dataset})
    node.MODEL = CN({"BACKBONE": CN({"NAME": "host-vit"})})
    node.TRAINER = CN({"COOP": CN({"N_CTX": cfg.n_ctx, "CTX_INIT": cfg.template_init, "CSC": cfg.csc})})
    node.TRAINER.COOP.CLASS_TOKEN_POSITION = cfg.class_token_position
    node.LOSS = CN({"NAME": "prograd", "T": cfg.kl_temperature, "LAMBDA": cfg.grad_lambda})
    return node


def compare_prograd(case: str, path: str, seed: int = 0) -> dict[str, float]:
    """ProGrad: the initial context, the logits, both loss terms and the projected gradient of one step, against
    the original model, zero-shot teacher, ``ProGradLoss`` and the fork's ``prograd_backward_and_update`` (its
    optimiser a zero-learning-rate SGD, so the step leaves the values as they were). ``conflict`` is 1 when the
    step's gradients conflicted (the projection acted), 0 when the cross-entropy gradient was kept."""
    _, cfg, _ = CASES[case]
    public, fork_trainer = prograd_paths(path)
    ours_clip = _random_clip(seed)
    clip, module = import_original(str(public), "prograd")
    state = {k: v.clone() for k, v in ours_clip.state_dict().items()}
    module.load_clip_to_cpu = lambda _cfg: clip.build_model({k: v.clone() for k, v in state.items()}).float()
    node = _prograd_cfg(cfg)
    theirs = module.CustomCLIP(node, CLASSNAMES, module.load_clip_to_cpu(node)).float().train()
    teacher = module.CLIP(node, CLASSNAMES)
    for p in [*theirs.parameters(), *teacher.parameters()]:
        p.requires_grad_(False)
    bundle = CLIPBundle(ours_clip, _Tokenizer(), "host-vit", "host-vit", "", "fp32", 32, (0.5,) * 3, (0.5,) * 3)
    ours = build_model("prograd", bundle, CLASSNAMES, cfg, LAMMConfig(enabled=False)).train()
    ctx_theirs = theirs.prompt_learner.ctx
    result = {}
    if cfg.template_init:  # the original's initialisation from the template (random init: values set below)
        result["init abs"] = float((ours.method.ctx.detach() - ctx_theirs).abs().max())
    pairs = [("ctx", ours.method.ctx, ctx_theirs)]
    if not cfg.template_init:  # random on both sides: give both the same values
        images, labels = _same_values_and_batch(pairs, seed)
    else:
        ctx_theirs.requires_grad_(True)
        g = torch.Generator().manual_seed(seed + 1)
        images, labels = torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 3, 1, 4])

    out = ours.forward_backward(images, labels)
    # The original trainer's forward_backward (fp32 branch): its model, its teacher, its loss, the fork's update.
    spec = importlib.util.spec_from_file_location("prograd_fork_trainer", fork_trainer)
    fork = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fork)
    trainer = fork.TrainerBase()
    trainer.register_model("prompt_learner", theirs.prompt_learner, torch.optim.SGD([ctx_theirs], lr=0.0))
    logits_theirs = theirs(images)
    with torch.no_grad():
        zero_shot = teacher(images)
    xe, kl = module.ProGradLoss(T=node.LOSS.T)(logits_theirs, zero_shot.detach(), labels)
    general = torch.autograd.grad(kl, [ctx_theirs], retain_graph=True)[0]
    trainer.prograd_backward_and_update(xe, kl, node.LOSS.LAMBDA)

    def diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
        absolute = float((a - b).abs().max())
        return absolute, absolute / max(float(b.abs().max()), 1e-12)

    result["logits abs"], result["logits rel"] = diff(out.logits.detach(), logits_theirs.detach())
    result["loss abs"], result["loss rel"] = diff(out.losses["ce"].detach(), xe.detach())
    result["kl abs"], result["kl rel"] = diff(out.losses["prograd_kl"].detach(), kl.detach())
    result["grad abs"], result["grad rel"] = diff(ours.method.ctx.grad, ctx_theirs.grad)
    ce_grad = torch.autograd.grad(F.cross_entropy(theirs(images), labels), [ctx_theirs])[0]
    result["conflict"] = float(torch.dot(ce_grad.flatten(), general.flatten()) < 0)
    return result


def _random_clip(seed: int) -> CLIP:
    torch.manual_seed(seed)
    model = CLIP(**HOST_VIT).eval().requires_grad_(False)
    with torch.no_grad():
        model.token_embedding.weight.normal_(std=0.2)
        for param in model.parameters():  # the originals store fp16 weights before casting back: fp16-exact values
            param.copy_(param.half().float())
    return model


@contextlib.contextmanager
def _cuda_is_identity():
    """Make ``.cuda()`` a no-op (the original PromptSRC moves its frozen features to the GPU), to run on a CPU."""
    tensor, module = torch.Tensor.cuda, torch.nn.Module.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = tensor, module


def _original_promptsrc(path: str, ours_clip: CLIP, cfg: PromptSRCConfig):
    """The original PromptSRC ``CustomCLIP`` and its module; frozen CLIP is built from our weights, not downloaded."""
    clip, module = import_original(path, "promptsrc")

    def build(design: dict):
        return clip.build_model({k: v.clone() for k, v in ours_clip.state_dict().items()}, design).float()

    def load_clip_to_cpu(node, zero_shot_model=False):
        if zero_shot_model:
            return build(
                {"trainer": "IVLP", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0}
            )
        return build(
            {
                "trainer": "IVLP",
                "vision_depth": cfg.prompt_depth_vision,
                "language_depth": cfg.prompt_depth_text,
                "vision_ctx": cfg.n_ctx_vision,
                "language_ctx": cfg.n_ctx_text,
            }
        )

    module.load_clip_to_cpu = load_clip_to_cpu
    with _cuda_is_identity():
        custom = module.CustomCLIP(_cfg("promptsrc", cfg), CLASSNAMES, load_clip_to_cpu(None)).float().train()
    return custom, module


def _their_promptsrc_loss(module, theirs, node, images: torch.Tensor, labels: torch.Tensor):
    """The original trainer's ``forward_backward`` (loss and backward; its optimiser step a no-op, no GPA)."""

    class _NoStep:
        def zero_grad(self):
            pass

        def step(self):
            pass

    trainer = module.PromptSRC.__new__(module.PromptSRC)
    trainer.__dict__.update(model=theirs, optim=_NoStep(), scaler=None, cfg=node, batch_idx=0, num_batches=2)
    trainer.__dict__.update(step_counter=1, device=torch.device("cpu"))
    with _cuda_is_identity():
        return trainer.forward_backward({"img": images, "label": labels})["loss"]


def _promptsrc_pairs(ours, theirs, cfg: PromptSRCConfig):
    m, visual, text = ours.method, theirs.image_encoder, theirs.text_encoder
    pairs = [("ctx", m.ctx, theirs.prompt_learner.ctx), ("visual", m.visual, visual.VPT)]
    for i, p in enumerate(m.deep_text):
        pairs.append((f"deep_text.{i}", p, text.transformer.resblocks[i + 1].VPT_shallow))
    for i, p in enumerate(m.deep_visual):
        pairs.append((f"deep_visual.{i}", p, visual.transformer.resblocks[i + 1].VPT_shallow))
    return pairs


def compare_promptsrc(case: str, path: str, exact: bool = True, seed: int = 0) -> dict[str, float]:
    """PromptSRC: largest differences of the total loss (cross-entropy plus self-regularisation), the logits
    and each learned tensor's gradient, against the original model and trainer loss."""
    _, cfg, _ = CASES[case]
    ours_clip = _random_clip(seed)
    with _half_is_identity(exact):
        theirs, module = _original_promptsrc(path, ours_clip, cfg)
    bundle = CLIPBundle(ours_clip, _Tokenizer(), "host-vit", "host-vit", "", "fp32", 32, (0.5,) * 3, (0.5,) * 3)
    ours = build_model("promptsrc", bundle, CLASSNAMES, cfg, LAMMConfig(enabled=False)).train()
    for p in theirs.parameters():
        p.requires_grad_(False)
    pairs = _promptsrc_pairs(ours, theirs, cfg)
    images, labels = _same_values_and_batch(pairs, seed)

    out = ours(images, labels)
    out.losses["total"].backward()
    with _half_is_identity(exact):
        loss_theirs = _their_promptsrc_loss(module, theirs, _cfg("promptsrc", cfg), images, labels)
        theirs.eval()
        with torch.no_grad():
            logits_theirs = theirs(images)
    loss_ours = float(out.losses["total"].detach())

    def diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
        absolute = float((a - b).abs().max())
        return absolute, absolute / max(float(b.abs().max()), 1e-12)

    result = {"loss abs": abs(loss_ours - loss_theirs), "loss rel": abs(loss_ours - loss_theirs) / abs(loss_theirs)}
    result["logits abs"], result["logits rel"] = diff(out.logits.detach(), logits_theirs)
    grads = [diff(p.grad, q.grad) for _, p, q in pairs]
    result["grad abs"] = max(a for a, _ in grads)
    result["grad rel"] = max(r for _, r in grads)
    return result


def _original_model(case: str, path: str, ours_clip: CLIP):
    method, cfg, _ = CASES[case]
    clip, module = import_original(path, ORIGINAL_MODULES.get(method, method))
    state = {k: v.clone() for k, v in ours_clip.state_dict().items()}
    if method == "kgcoop":  # a second CLIP for its hand-crafted prompts: the same weights, kept in fp16 as it keeps it
        module.load_clip_to_cpu = lambda _cfg: clip.build_model({k: v.clone() for k, v in state.items()})
    if method in ("coop", "cocoop", "kgcoop"):
        model = clip.build_model(state)
    elif method == "ivlp":
        details = {"trainer": "IVLP", "vision_depth": cfg.prompt_depth_vision, "language_depth": cfg.prompt_depth_text}
        details.update(vision_ctx=cfg.n_ctx_vision, language_ctx=cfg.n_ctx_text)
        model = clip.build_model(state, details)
    else:
        details = {"trainer": {"maple": "MaPLe", "vpt": "VPT"}[method], "language_depth": 0, "language_ctx": 0}
        if method == "maple":
            details.update(vision_depth=0, vision_ctx=0, maple_length=cfg.n_ctx)
        else:
            details.update(vision_depth=cfg.prompt_depth_vision, vision_ctx=cfg.n_ctx_vision)
        model = clip.build_model(state, details)
    model = model.float()
    with _cuda_is_identity():
        custom = module.CustomCLIP(_cfg(method, cfg), CLASSNAMES, model).float().eval()
    return custom


def _pairs(method: str, ours, theirs) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, our tensor, their tensor) for every learned tensor of the host method."""
    m = ours.method
    if method in ("coop", "kgcoop"):
        return [("ctx", m.ctx, theirs.prompt_learner.ctx)]
    if method == "cocoop":
        net = theirs.prompt_learner.meta_net
        pairs = [("ctx", m.ctx, theirs.prompt_learner.ctx)]
        for layer in ("linear1", "linear2"):
            for w in ("weight", "bias"):
                pairs.append(
                    (f"meta_net.{layer}.{w}", getattr(getattr(m.meta_net, layer), w), getattr(getattr(net, layer), w))
                )
        return pairs
    if method == "ivlp":  # PromptSRC's tensors, in the same places of the original model
        return _promptsrc_pairs(ours, theirs, None)
    if method == "maple":
        pl = theirs.prompt_learner
        pairs = [("ctx", m.ctx, pl.ctx), ("proj.weight", m.proj.weight, pl.proj.weight)]
        pairs.append(("proj.bias", m.proj.bias, pl.proj.bias))
        for i, (p, q) in enumerate(zip(m.deep_text, pl.compound_prompts_text)):
            pairs.append((f"deep_text.{i}", p, q))
        for i, (p, q) in enumerate(zip(m.deep_proj, pl.compound_prompt_projections)):
            pairs += [(f"deep_proj.{i}.weight", p.weight, q.weight), (f"deep_proj.{i}.bias", p.bias, q.bias)]
        return pairs
    visual = theirs.image_encoder
    pairs = [("shallow", m.shallow, visual.VPT)]
    for i, p in enumerate(m.deep):
        pairs.append((f"deep.{i}", p, visual.transformer.resblocks[i + 1].VPT_shallow))
    return pairs


def _their_logits_and_loss(method: str, cfg, theirs, images: torch.Tensor, labels: torch.Tensor):
    if method == "kgcoop":  # KgCoOp's trainer: CE + W * score
        logits, score = theirs(images)
        return logits, F.cross_entropy(logits, labels) + cfg.kg_weight * score
    logits = _their_logits(method, theirs, images)
    return logits, F.cross_entropy(logits, labels)


def _their_logits(method: str, theirs, images: torch.Tensor) -> torch.Tensor:
    if method != "vpt":
        return theirs(images)
    # The original VPT forward moves its fixed text features with .cuda(); this is the same computation on CPU.
    image = theirs.image_encoder(images)
    text = theirs.embeddings.return_fixed_embeddings()
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    return theirs.logit_scale.exp() * image @ text.t()


def _same_values_and_batch(pairs, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Give each (ours, theirs) pair the same random values (distinct per tensor: placement errors show; fp16-exact),
    make theirs trainable, and draw the batch both sides see."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, p, q in pairs:
            p.copy_(0.1 * torch.randn(p.shape, generator=g).half().float())
            q.copy_(p)
            q.requires_grad_(True)
    return torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 3, 1, 4])


def compare(case: str, path: str, exact: bool = True, seed: int = 0) -> dict[str, float]:
    """Largest absolute and relative differences of logits and of each learned tensor's gradient."""
    method, cfg, _ = CASES[case]
    if method == "promptsrc":
        return compare_promptsrc(case, path, exact, seed)
    if method == "prograd":
        return compare_prograd(case, path, seed)
    ours_clip = _random_clip(seed)
    theirs = _original_model(case, path, ours_clip)
    bundle = CLIPBundle(ours_clip, _Tokenizer(), "host-vit", "host-vit", "", "fp32", 32, (0.5,) * 3, (0.5,) * 3)
    ours = build_model(method, bundle, CLASSNAMES, cfg, LAMMConfig(enabled=False)).train()
    for p in theirs.parameters():
        p.requires_grad_(False)
    pairs = _pairs(method, ours, theirs)
    images, labels = _same_values_and_batch(pairs, seed)

    out = ours(images, labels)
    logits_ours, loss_ours = out.logits, out.losses["total"]
    loss_ours.backward()
    with _half_is_identity(exact):
        logits_theirs, loss_theirs = _their_logits_and_loss(method, cfg, theirs, images, labels)
        loss_theirs.backward()

    def diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
        absolute = float((a - b).abs().max())
        return absolute, absolute / max(float(b.abs().max()), 1e-12)

    result = {}
    result["logits abs"], result["logits rel"] = diff(logits_ours.detach(), logits_theirs.detach())
    result["loss abs"], result["loss rel"] = diff(loss_ours.detach(), loss_theirs.detach())
    grads = [diff(p.grad, q.grad) for _, p, q in pairs]
    result["grad abs"] = max(a for a, _ in grads)
    result["grad rel"] = max(r for _, r in grads)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maple", help="checkout of github.com/muzairkhattak/multimodal-prompt-learning")
    parser.add_argument("--coop", help="checkout of github.com/KaiyangZhou/CoOp")
    parser.add_argument("--kgcoop", help="the KgCoOp/ folder of a checkout of github.com/htyao89/KgCoOp")
    parser.add_argument("--promptsrc", help="checkout of github.com/muzairkhattak/PromptSRC")
    parser.add_argument("--prograd", help="checkout of github.com/BeierZhu/Prompt-align")
    args = parser.parse_args()
    print("| case | cast | logits abs | logits rel | loss rel | grad abs | grad rel |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for case, (_, _, repo) in CASES.items():
        path = getattr(args, repo)
        if not path:
            continue
        # The original PromptSRC's .half() casts of fp32 tensors stop it on a CPU (mixed-dtype matmul): exact only.
        for exact in (True,) if repo in ("promptsrc", "prograd") else (True, False):
            r = compare(case, path, exact)
            cast = "no-op" if exact else ".half()"
            print(
                f"| {case} | {cast} | {r['logits abs']:.2e} | {r['logits rel']:.2e} | {r['loss rel']:.2e} | "
                f"{r['grad abs']:.2e} | {r['grad rel']:.2e} |"
            )


if __name__ == "__main__":
    main()
