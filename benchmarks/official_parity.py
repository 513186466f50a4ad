"""Compare our ``official`` preset with the official LAMM code (loss value and gradients, float32).

Needs a checkout of the official repository (github.com/gaojingsheng/LAMM) and Dassl; nothing of it is
copied here: its modules are imported from the given path. Both sides get the same random CLIP weights (a
small ViT whose widths are multiples of 64, since the official builder infers heads as width // 64), the same
images, labels and class names.

    python benchmarks/official_parity.py --official /path/to/LAMM
"""

from __future__ import annotations

import argparse
import functools

import originals
import torch
from open_clip.model import CLIP

from lamm_plugin import CoOpConfig, MaPLeConfig, build_model, official_preset
from lamm_plugin.backbone import CLIPBundle
from lamm_plugin.tokens import clean_classname

SMALL_VIT = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "patch_size": 8, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}
#: The official MaPLe code hard-codes ViT-B/16's widths (text 512, vision 768); 3 layers keep it small.
SMALL_MAPLE = {
    **SMALL_VIT,
    "vision_cfg": {**SMALL_VIT["vision_cfg"], "width": 768, "layers": 3},
    "text_cfg": {**SMALL_VIT["text_cfg"], "width": 512, "heads": 8, "layers": 3},
}
MAPLE_DEPTH = 3
CLASSNAMES = ["golden_retriever", "bernese mountain dog", "sea lion", "red fox", "common goldeneye duck"]


def official_cfg(origin_clip: bool):
    from yacs.config import CfgNode as CN

    cfg = CN()
    cfg.TRAINER = CN()
    cfg.TRAINER.COOP = CN(
        {"N_CTX": 16, "CSC": False, "CTX_INIT": "a photo of a", "PREC": "fp32", "CLASS_TOKEN_POSITION": "end"}
    )
    cfg.INPUT = CN({"SIZE": (32, 32)})
    cfg.DATASET = CN({"SUBSAMPLE_CLASSES": "all"})
    cfg.origin_clip, cfg.random_init, cfg.eval_only = origin_clip, False, False
    cfg.triplet_loss, cfg.shots = True, 1
    return cfg


def official_maple_cfg():
    """The official MaPLe+LAMM run's config (``--triplet-loss``, ``--shots 1``), fp32, depth 3."""
    from yacs.config import CfgNode as CN

    cfg = official_cfg(origin_clip=False)
    cfg.TRAINER.pop("COOP")
    cfg.TRAINER.MAPLE = CN({"N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": "fp32", "PROMPT_DEPTH": MAPLE_DEPTH})
    return cfg


@functools.cache
def _import_official(official: str):
    """The official CLIP builder and CoOp and MaPLe trainers, imported once (see :mod:`originals`)."""
    return originals.import_original(official, "clip.clip", "trainers.coop", "trainers.maple")


def _clips(official_clip, shapes: dict, trainer: str, seed: int):
    """The same random CLIP for both sides: ours (a :class:`CLIPBundle`) and the official builder's, float32."""
    torch.manual_seed(seed)
    ours_clip = CLIP(**shapes).eval().requires_grad_(False)
    with torch.no_grad():
        ours_clip.token_embedding.weight.normal_(std=0.2)  # a realistic scale for the text tower
        # The official builder stores weights in fp16 before casting back: give both sides fp16-exact values.
        for param in ours_clip.parameters():
            param.copy_(param.half().float())
    bundle = CLIPBundle(ours_clip, _Tokenizer(), "small-vit", "small-vit", "", "fp32", 32, (0.5,) * 3, (0.5,) * 3)
    design = {"trainer": trainer, "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0}
    if trainer == "MaPLe":
        design["maple_length"] = 2
    theirs_clip = official_clip.build_model({k: v.clone() for k, v in ours_clip.state_dict().items()}, design)
    return bundle, theirs_clip.float()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def compare(official: str, origin_clip: bool, seed: int = 0) -> dict[str, float]:
    """Loss and gradient differences between our ``official`` preset and the official code."""
    official_clip, official_coop, _ = _import_official(official)
    bundle, theirs_clip = _clips(official_clip, SMALL_VIT, "CoOp", seed)
    theirs = official_coop.CustomCLIP(official_cfg(origin_clip), CLASSNAMES, theirs_clip)
    for name, param in theirs.named_parameters():
        param.requires_grad_("prompt_learner" in name and (name != "prompt_learner.ctx" or not origin_clip))
    theirs.train()

    ours = build_model(
        "coop",
        bundle,
        CLASSNAMES,
        CoOpConfig(ctx_init="a photo of a", train_ctx=not origin_clip),
        official_preset("coop"),
    ).train()

    g = torch.Generator().manual_seed(seed + 1)
    images = torch.randn(8, 3, 32, 32, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 1])
    with torch.no_grad():  # move the labels and the context off their initial values: every term then matters
        step = 0.05 * torch.randn(theirs.prompt_learner.token_classes.shape, generator=g)
        theirs.prompt_learner.token_classes.add_(step)
        ours.label_embedding.weight.add_(step.reshape(-1, step.shape[-1]))
        ctx_step = 0.05 * torch.randn(theirs.prompt_learner.ctx.shape, generator=g)
        theirs.prompt_learner.ctx.add_(ctx_step)
        ours.method.ctx.add_(ctx_step)

    loss_theirs = theirs(images, labels)
    loss_theirs.backward()
    loss_ours = ours(images, labels).losses["total"]
    loss_ours.backward()

    result = {
        "loss ours": loss_ours.item(),
        "loss official": loss_theirs.item(),
        "loss rel. diff": abs(loss_ours.item() - loss_theirs.item()) / abs(loss_theirs.item()),
        "label grad rel. diff": _rel(
            ours.label_embedding.weight.grad, theirs.prompt_learner.token_classes.grad.reshape(-1, step.shape[-1])
        ),
    }
    if not origin_clip:
        result["ctx grad rel. diff"] = _rel(ours.method.ctx.grad, theirs.prompt_learner.ctx.grad)
    return result


def compare_maple(official: str, seed: int = 0, **preset_changes) -> dict[str, float]:
    """Our MaPLe with the ``official`` preset (``preset_changes`` replace its fields) against the official MaPLe+LAMM
    code: the prompt embeddings of both branches (learned labels; the original prompt of the reference branch) and
    their end-of-text positions, then one step's loss and gradients, from the same prompts and projections (the
    official code's fp16 casts of its visual prompts made no-ops, as in ``host_parity.py``)."""
    import dataclasses

    from host_parity import _half_is_identity  # here: host_parity imports this module

    official_clip, _, official_maple = _import_official(official)
    bundle, theirs_clip = _clips(official_clip, SMALL_MAPLE, "MaPLe", seed)
    theirs = official_maple.CustomCLIP(official_maple_cfg(), CLASSNAMES, theirs_clip).float()  # undoes proj.half()
    for name, param in theirs.named_parameters():
        param.requires_grad_("prompt_learner" in name)
    theirs.train()
    preset = dataclasses.replace(official_preset("maple"), **preset_changes)
    method = MaPLeConfig(prompt_depth=MAPLE_DEPTH, clone_deep_proj=True)
    ours = build_model("maple", bundle, CLASSNAMES, method, preset).train()

    learner = theirs.prompt_learner
    with torch.no_grad():  # the official code draws its prompts and projections elsewhere: start ours from its values
        ours.method.ctx.copy_(learner.ctx)
        ours.method.proj.load_state_dict(learner.proj.state_dict())
        for mine, its in zip(ours.method.deep_text, learner.compound_prompts_text):
            mine.copy_(its)
        for mine, its in zip(ours.method.deep_proj, learner.compound_prompt_projections):
            mine.load_state_dict(its.state_dict())
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # move the labels and the context off their initial values: every term then matters
        step = 0.05 * torch.randn(learner.token_classes.shape, generator=g)
        learner.token_classes.add_(step)
        ours.label_embedding.weight.add_(step.reshape(-1, step.shape[-1]))
        ctx_step = 0.05 * torch.randn(learner.ctx.shape, generator=g)
        learner.ctx.add_(ctx_step)
        ours.method.ctx.add_(ctx_step)

    with torch.no_grad():
        original = ours._with_context(ours.method.text_prompt())
        learned, length = ours._with_labels(original), original.shape[1]
        prompts = {
            "learned prompt max diff": (learned, learner()[0][:, :length]),
            "reference prompt max diff": (original, learner.forward_test()[0][:, :length]),
        }
    result = {k: float((a - b).abs().max()) for k, (a, b) in prompts.items()}
    result["same end-of-text positions"] = torch.equal(ours.eot, theirs.tokenized_prompts.argmax(dim=-1))

    images = torch.randn(8, 3, 32, 32, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 1])
    with _half_is_identity(True):  # its visual prompts' fp16 casts inside an fp32 model (README, "Fidelity")
        loss_theirs = theirs(images, labels)
        loss_theirs.backward()
    loss_ours = ours(images, labels).losses["total"]
    loss_ours.backward()
    width = step.shape[-1]
    result.update(
        {
            "loss rel. diff": abs(loss_ours.item() - loss_theirs.item()) / abs(loss_theirs.item()),
            "label grad rel. diff": _rel(
                ours.label_embedding.weight.grad, learner.token_classes.grad.reshape(-1, width)
            ),
            "ctx grad rel. diff": _rel(ours.method.ctx.grad, learner.ctx.grad),
            "deep text grad rel. diff": max(
                _rel(a.grad, b.grad) for a, b in zip(ours.method.deep_text, learner.compound_prompts_text)
            ),
        }
    )
    return result


class _Tokenizer:
    """open_clip's tokenizer (same BPE vocabulary as the official code's)."""

    def __init__(self) -> None:
        from open_clip import SimpleTokenizer

        self._tok = SimpleTokenizer()
        self.encoder, self.context_length = self._tok.encoder, self._tok.context_length

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text)

    def __call__(self, texts):
        return self._tok(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="checkout of github.com/gaojingsheng/LAMM")
    args = parser.parse_args()
    assert all(clean_classname(n) for n in CLASSNAMES)
    for origin_clip, label in ((False, "CoOp+LAMM"), (True, "LAMM alone")):
        result = compare(args.official, origin_clip)
        print(label + ": " + ", ".join(f"{k} {v:.3g}" for k, v in result.items()))
    result = compare_maple(args.official)
    print("MaPLe+LAMM: " + ", ".join(f"{k} {v:.3g}" for k, v in result.items()))


if __name__ == "__main__":
    main()
