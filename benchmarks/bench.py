"""Speed and memory tables (ViT-B/16 architecture, random weights: no download needed).

    python benchmarks/bench.py text            # text encoder: full length vs EOT-truncated
    python benchmarks/bench.py step            # one training step per method, vs a naive LAMM
    python benchmarks/bench.py step --device cuda --classes 10 100 1000

Each case runs in a fresh process so that its peak memory is its own (CUDA: peak allocated; CPU: peak RSS of the
process, which includes the ~0.6 GB of CLIP weights).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from typing import Callable

import torch
from tabulate import tabulate

from lamm_plugin import LAMM, LAMMConfig, build_model, load_clip
from lamm_plugin.config import CoOpConfig, MaPLeConfig, VPTConfig
from lamm_plugin.encoders import TextEncoder

WORDS = ["dog", "golden retriever", "bernese mountain dog", "sea lion", "red fox", "oak tree", "fire truck"]


def classnames(n: int) -> list[str]:
    return [f"{WORDS[i % len(WORDS)]} {i}" for i in range(n)]


def _time(fn: Callable[[], None], device: str, repeats: int) -> float:
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def _peak_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- text encoder ---------------------------------------------------------------------------------------------------
def text_case(n_prompts: int, truncate: bool, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    clip = load_clip("ViT-B/16", pretrained="", device=device)
    encoder = TextEncoder(clip.model, truncate=truncate)
    tokens = clip.tokenizer([f"X X X X X X X X X X X X X X X X {n}." for n in classnames(n_prompts)]).to(device)
    ctx = torch.zeros(16, encoder.token_embedding.weight.shape[1], device=device, requires_grad=True)
    base = encoder.embed(tokens).detach()
    eot = encoder.eot_index(tokens)

    def step() -> None:
        prompts = torch.cat([base[:, :1], ctx.expand(n_prompts, -1, -1), base[:, 17:]], dim=1)  # CoOp-length
        encoder(prompts, eot).sum().backward()

    seconds = _time(step, device, repeats)
    return {"prompts": n_prompts, "truncate": truncate, "positions": int(eot.max()) + 1 if truncate else 77,
            "ms": 1000 * seconds, "peak MB": _peak_mb(device)}  # fmt: skip


# ---- training step --------------------------------------------------------------------------------------------------
class NaiveLAMM(LAMM):
    """The same loss computed the straightforward way: full-length prompts, two separate text passes."""

    def encode_text(self, reference: bool = False):
        prompt = self.method.text_prompt()
        prompts = self._with_context(prompt)
        learned = self.label_embedding.splice(prompts, self._label_rows()[0], self.flat_position)
        text = self.text(learned, self.eot, prompt.deep, prompt.deep_start)
        ref = self.text(prompts, self.eot, prompt.deep, prompt.deep_start) if reference else None
        return text, ref


METHODS = {
    "CoOp": ("coop", CoOpConfig(ctx_init="a photo of a"), False),
    "LAMM alone": ("coop", CoOpConfig(ctx_init="a photo of a", train_ctx=False), True),
    "CoOp+LAMM": ("coop", CoOpConfig(ctx_init="a photo of a"), True),
    "CoOp+LAMM naive": ("coop", CoOpConfig(ctx_init="a photo of a"), "naive"),
    "MaPLe": ("maple", MaPLeConfig(), False),
    "MaPLe+LAMM": ("maple", MaPLeConfig(), True),
    "VPT": ("vpt", VPTConfig(), False),
    "VPT+LAMM": ("vpt", VPTConfig(), True),
}


def step_case(name: str, n_classes: int, device: str, repeats: int, batch: int = 4) -> dict:
    method, cfg, lamm = METHODS[name]
    torch.manual_seed(0)
    clip = load_clip("ViT-B/16", pretrained="", device=device)
    names = classnames(n_classes)
    if lamm == "naive":
        model = build_model(method, clip, names, cfg, LAMMConfig(truncate_text=False, cache_reference=False), 16)
        model = NaiveLAMM(model.method, clip, names, model.cfg, shots=16)
    else:
        model = build_model(method, clip, names, cfg, LAMMConfig(enabled=bool(lamm)), shots=16)
    model.to(device).train()
    optim = torch.optim.SGD(model.trainable_parameters(), lr=1e-3, momentum=0.9)
    images = torch.randn(batch, 3, 224, 224, device=device)
    labels = torch.arange(batch, device=device) % n_classes
    losses = {}

    def step() -> None:
        out = model(images, labels)
        optim.zero_grad()
        out.losses["total"].backward()
        optim.step()
        losses.setdefault("first", out.losses["total"].item())  # loss before any update

    seconds = _time(step, device, repeats)
    return {"method": name, "classes": n_classes, "ms/step": 1000 * seconds, "peak MB": _peak_mb(device),
            "loss": losses["first"]}  # fmt: skip


def _worker(fn, args, queue) -> None:
    queue.put(fn(*args))


def _isolated(fn, *args) -> dict:
    """``fn(*args)`` in a fresh process; a process that dies (e.g. killed for memory) gives a row saying so."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(fn, args, queue))
    proc.start()
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except Exception:  # queue.Empty: still running, or dead
            if not proc.is_alive():
                result = {
                    "case": repr(args[:2]),
                    "failed": f"process exited with code {proc.exitcode} (out of memory?)",
                }
                break
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=["text", "step"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--classes", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--truncate", choices=["both", "on", "off"], default="both", help="text table: which passes")
    args = parser.parse_args()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device_name}, torch {torch.__version__}")
    rows = []
    if args.table == "text":
        for n in args.classes or [10, 100, 1000]:
            for truncate in {"both": (False, True), "on": (True,), "off": (False,)}[args.truncate]:
                rows.append(_isolated(text_case, n, truncate, args.device, args.repeats))
                print(rows[-1], flush=True)
    else:
        for n in args.classes or [10, 100]:
            for name in args.methods:
                rows.append(_isolated(step_case, name, n, args.device, args.repeats))
                print(rows[-1], flush=True)
    print(tabulate(rows, headers="keys", floatfmt=".1f", tablefmt="github"))


if __name__ == "__main__":
    main()
