"""LAMM without Dassl: train and evaluate on the synthetic shapes with a plain PyTorch loop.

    python examples/train_core.py                                   # tiny random CLIP, CPU, ~1 minute
    python examples/train_core.py --method promptsrc                # PromptSRC + LAMM, GPA over the epochs
    python examples/train_core.py --method prograd --steps 40       # ProGrad + LAMM: its projected gradient
    python examples/train_core.py --backbone ViT-B/16 --device cuda --image-size 224

This is the whole recipe for other training loops: build CLIP, build the model, optimise
``model.trainable_parameters()`` after ``model.forward_backward(images, labels)`` (forward, then the method's
backward of ``out.losses["total"]``; ProGrad projects its gradient), call ``model.method.on_epoch_end`` after each epoch
(PromptSRC's Gaussian prompt aggregation lives there), evaluate with ``model(images).logits``.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from lamm_experiments.synthetic import make_tensors
from lamm_plugin import CoOpConfig, LAMMConfig, PromptSRCConfig, build_model, load_clip
from lamm_plugin.methods import METHODS


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tiny-vit", help="CLIP name, e.g. ViT-B/16 (downloads weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--method", default="coop", choices=sorted(METHODS), help="coop: LAMM alone; others: defaults")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of len(train) / 32 random batches of 32")
    parser.add_argument("--steps", type=int, default=0, help="train this many steps instead (whole epochs)")
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--image-size", type=int, default=0, help="resize images (0: the backbone's size)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    clip = load_clip(args.backbone, device=args.device)
    size = args.image_size or clip.image_size
    mean = torch.tensor(clip.mean, device=args.device).view(1, 3, 1, 1)
    std = torch.tensor(clip.std, device=args.device).view(1, 3, 1, 1)

    def prepare(split: str, n: int):
        data = make_tensors(split, num_per_class=n, num_classes=args.classes, seed=args.seed)
        images = F.interpolate(data.images.to(args.device), size=size, mode="bicubic", align_corners=False)
        return (images - mean) / std, data.labels.to(args.device), data.classnames

    x_train, y_train, names = prepare("train", args.shots)
    x_test, y_test, _ = prepare("test", 32)

    batch_size = 32
    steps_per_epoch = max(1, math.ceil(len(x_train) / batch_size))
    epochs = math.ceil(args.steps / steps_per_epoch) if args.steps > 0 else args.epochs
    if args.method == "coop":
        # LAMM alone: the context stays "a photo of a"; only the label embeddings learn.
        cfg = CoOpConfig(ctx_init="a photo of a", train_ctx=False)
    elif args.method == "promptsrc":
        # Prompts in every block of the towers (up to 9); the Gaussian of GPA centred on the last quarter. The random
        # tiny CLIP's zero-shot is at chance, so agreeing with it is weighted low.
        depth = min(9, clip.text_blocks, clip.image_blocks)
        cfg = PromptSRCConfig(prompt_depth_text=depth, prompt_depth_vision=depth, text_loss_weight=0.1)
        cfg.image_loss_weight, cfg.gpa_mean, cfg.gpa_std = 0.1, 0.75 * epochs, max(1.0, epochs / 8)
    else:
        cfg = None  # the method's defaults
    model = build_model(args.method, clip, names, cfg, LAMMConfig(), shots=args.shots).to(args.device)
    optim = torch.optim.SGD(model.trainable_parameters(), lr=args.lr, momentum=0.9)
    generator = torch.Generator().manual_seed(args.seed)

    def accuracy() -> float:
        model.eval()
        with torch.no_grad():
            return (model(x_test).logits.argmax(-1) == y_test).float().mean().item() * 100

    print(f"classes: {names}")
    print(f"* accuracy before training: {accuracy():.2f}%")
    step = 0
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            batch = torch.randint(0, len(x_train), (batch_size,), generator=generator).to(args.device)
            model.train()
            optim.zero_grad()
            # Forward and backward (the method's own backward: total.backward() unless the host changes gradients).
            losses = model.forward_backward(x_train[batch], y_train[batch]).losses
            optim.step()
            step += 1
            if step % 20 == 0 or step == epochs * steps_per_epoch:
                print(f"step {step}: " + " ".join(f"{k} {v.item():.4f}" for k, v in losses.items()))
        # What a method does at an epoch's end (PromptSRC: Gaussian prompt aggregation; nothing for most).
        model.method.on_epoch_end(model, epoch, epochs)
    final = accuracy()
    print(f"* accuracy: {final:.2f}%")
    return final


if __name__ == "__main__":
    main()
