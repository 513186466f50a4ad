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

from lamm_plugin import CoOpConfig, build_model, official_preset
from lamm_plugin.backbone import CLIPBundle
from lamm_plugin.tokens import clean_classname

SMALL_VIT = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "patch_size": 8, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}
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


@functools.cache
def _import_official(official: str):
    """The official CLIP builder and CoOp trainer, imported once (see :mod:`originals`)."""
    official_clip, official_coop = originals.import_original(official, "clip.clip", "trainers.coop")
    return official_clip, official_coop


def compare(official: str, origin_clip: bool, seed: int = 0) -> dict[str, float]:
    """Loss and gradient differences between our ``official`` preset and the official code."""
    official_clip, official_coop = _import_official(official)

    torch.manual_seed(seed)
    ours_clip = CLIP(**SMALL_VIT).eval().requires_grad_(False)
    with torch.no_grad():
        ours_clip.token_embedding.weight.normal_(std=0.2)  # a realistic scale for the text tower
        # The official builder stores weights in fp16 before casting back: give both sides fp16-exact values.
        for param in ours_clip.parameters():
            param.copy_(param.half().float())
    bundle = CLIPBundle(ours_clip, _Tokenizer(), "small-vit", "small-vit", "", "fp32", 32, (0.5,) * 3, (0.5,) * 3)

    theirs_clip = official_clip.build_model(
        {k: v.clone() for k, v in ours_clip.state_dict().items()},
        {"trainer": "CoOp", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0},
    ).float()
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

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))

    result = {
        "loss ours": loss_ours.item(),
        "loss official": loss_theirs.item(),
        "loss rel. diff": abs(loss_ours.item() - loss_theirs.item()) / abs(loss_theirs.item()),
        "label grad rel. diff": rel(
            ours.label_embedding.weight.grad, theirs.prompt_learner.token_classes.grad.reshape(-1, step.shape[-1])
        ),
    }
    if not origin_clip:
        result["ctx grad rel. diff"] = rel(ours.method.ctx.grad, theirs.prompt_learner.ctx.grad)
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


if __name__ == "__main__":
    main()
