"""Speed and memory tables (ViT-B/16 architecture, random weights: no download needed).

    python benchmarks/bench.py text            # text encoder: full length vs EOT-truncated
    python benchmarks/bench.py step            # one training step per method, vs a naive LAMM
    python benchmarks/bench.py step --device cuda --classes 10 100 1000
    python benchmarks/bench.py official --official /path/to/LAMM --device cuda    # against the official code
    python benchmarks/bench.py loader --workers 4 8 16      # images/s of the training loader alone
    python benchmarks/bench.py evalcache --backbone ViT-B/32   # first vs later evaluations of a test set

``step`` rows per host, with and without LAMM; the ``naive`` rows compute the same loss the straightforward way
(full-length prompts, separate passes for learned and original labels; CoCoOp's the way its original code does,
a Python loop over the images). ``--step-batch`` sets the images per step (CoCoOp's papers: 1).
Each case runs in a fresh process so that its peak memory is its own (CUDA: peak allocated; CPU:
peak RSS of the process, which includes the ~0.6 GB of CLIP weights).

``evalcache`` times the evaluation of one test set (JPEGs of 500x375, Dassl's test loader and transform, CoOp+LAMM
on random weights, ``--classes`` names) through the trainers' evaluation loop: without the feature cache, the first
time with it (computes and stores the image features) and the second time (reads them).

``official`` times one training step (forward, backward, SGD) of the official LAMM code (github.com/gaojingsheng/
LAMM, imported from a checkout, never copied) and of ours on the same random ViT-B/16 weights, images, labels and
class names (Caltech101's 100 names, ImageNet's 1000), batch 32, median over steps after warm-up with CUDA
synchronisation, peak allocated memory per case; and the evaluation throughput (images/s over test batches of 100:
the official code encodes the class prompts for every batch, ours once per evaluation).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from typing import Callable, Optional

import torch
from tabulate import tabulate

from lamm_plugin import (
    LAMM,
    CoCoOpConfig,
    CoOpConfig,
    KgCoOpConfig,
    LAMMConfig,
    MaPLeConfig,
    PromptSRCConfig,
    VPTConfig,
    build_model,
    load_clip,
)
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

    def encode_text_per_image(self, image, reference: bool = False):
        """CoCoOp the way its original code runs: a Python loop over the images, each image's prompts encoded
        at full length, learned and original labels in separate passes."""
        texts, refs = [], []
        for ctx in self.method.image_context(image):
            prompts = self._per_image_context(self.base_prompts, ctx.unsqueeze(0))[0]
            learned = self.label_embedding.splice(prompts, self._label_rows()[0], self.flat_position)
            texts.append(self.text(learned, self.eot))
            if reference:
                refs.append(self.text(prompts, self.eot))
        return torch.stack(texts), torch.stack(refs) if reference else None


METHODS = {
    "CoOp": ("coop", CoOpConfig(ctx_init="a photo of a"), False),
    "LAMM alone": ("coop", CoOpConfig(ctx_init="a photo of a", train_ctx=False), True),
    "CoOp+LAMM": ("coop", CoOpConfig(ctx_init="a photo of a"), True),
    "CoOp+LAMM naive": ("coop", CoOpConfig(ctx_init="a photo of a"), "naive"),
    "MaPLe": ("maple", MaPLeConfig(), False),
    "MaPLe+LAMM": ("maple", MaPLeConfig(), True),
    "VPT": ("vpt", VPTConfig(), False),
    "VPT+LAMM": ("vpt", VPTConfig(), True),
    "CoCoOp": ("cocoop", CoCoOpConfig(), False),
    "CoCoOp+LAMM": ("cocoop", CoCoOpConfig(), True),
    "CoCoOp+LAMM naive": ("cocoop", CoCoOpConfig(), "naive"),
    "KgCoOp": ("kgcoop", KgCoOpConfig(), False),
    "KgCoOp+LAMM": ("kgcoop", KgCoOpConfig(), True),
    "PromptSRC": ("promptsrc", PromptSRCConfig(), False),
    "PromptSRC+LAMM": ("promptsrc", PromptSRCConfig(), True),
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


def loader_table(args) -> None:
    """Images/s of the training loader alone: a trainer config's transforms over JPEGs of ImageNet's typical size."""
    import os
    import tempfile

    from dassl.config import get_cfg_default
    from dassl.data.transforms import build_transform
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    import lamm_plugin.dassl  # noqa: F401 - adds the LAMM config nodes

    cfg = get_cfg_default()
    cfg.merge_from_file(args.config)
    transform = build_transform(cfg, is_train=True)
    paths = _write_jpegs(tempfile.mkdtemp(), args.images)

    class Files(Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int):
            return transform(Image.open(paths[i]).convert("RGB")), 0

    rows = []
    batch = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    for workers in args.workers or [cfg.DATALOADER.NUM_WORKERS]:
        loader = DataLoader(Files(), batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
        for _ in loader:  # warm-up epoch (workers start, files in the page cache)
            pass
        start = time.perf_counter()
        n = sum(images.shape[0] for images, _ in loader)
        seconds = time.perf_counter() - start
        ms = 1000 * seconds * batch / n
        rows.append({"workers": workers, "batch": batch, "images/s": n / seconds, "ms/batch": ms})
        print(rows[-1], flush=True)
    print(f"config: {args.config}, {os.cpu_count()} CPUs, {args.images} JPEGs of 500x375")
    print(tabulate(rows, headers="keys", floatfmt=".1f", tablefmt="github"))


def _write_jpegs(folder: str, n: int) -> list[str]:
    """``n`` JPEGs of 500x375 (ImageNet's typical size) with smooth random content, so that they decode like photos."""
    import os

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = os.path.join(folder, f"{i}.jpg")
        small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def evalcache_table(args) -> None:
    """Seconds of an evaluation of one test set: without the cache, filling it, reading it (the trainers' loop)."""
    import os
    import shutil
    import tempfile

    from dassl.config import get_cfg_default
    from dassl.data.data_manager import build_data_loader
    from dassl.data.datasets import Datum
    from dassl.data.transforms import build_transform

    from lamm_plugin.dassl import LAMM_TRAINERS
    from lamm_plugin.feature_cache import FeatureCache

    folder = tempfile.mkdtemp()
    n_classes = (args.classes or [100])[0]
    items = [Datum(impath=p, label=i % n_classes) for i, p in enumerate(_write_jpegs(folder, args.images))]
    trainer_class = LAMM_TRAINERS["LAMM_CoOp"]
    cfg = get_cfg_default()
    clip = load_clip(args.backbone, pretrained="", precision=args.precision, device=args.device)
    cfg.INPUT.SIZE = (clip.image_size, clip.image_size)
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = list(clip.mean), list(clip.std)
    cfg.DATALOADER.NUM_WORKERS = (args.workers or [min(4, os.cpu_count() or 1)])[0]
    cfg.TRAINER[trainer_class.NODE].PREC = args.precision
    loader = build_data_loader(
        cfg, data_source=items, batch_size=args.eval_batch, tfm=build_transform(cfg, is_train=False), is_train=False
    )
    model = build_model("coop", clip, classnames(n_classes), CoOpConfig(ctx_init="a photo of a"), LAMMConfig())
    # The evaluation half of a trainer only: no dataset or optimiser is built.
    trainer = trainer_class.__new__(trainer_class)
    trainer.cfg, trainer.device, trainer.model = cfg, torch.device(args.device), model.to(args.device).eval()

    def evaluate(cache) -> tuple[float, torch.Tensor]:
        trainer._feature_cache = cache
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        logits = torch.cat([out.cpu() for out, _ in trainer.loader_logits(loader)])
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, logits

    cache = FeatureCache(os.path.join(folder, "cache"))
    with torch.no_grad():  # the class text features, computed once per evaluation set-up in every row alike
        trainer.model.logits_from_image_features(torch.zeros(1, clip.embed_dim, device=args.device))
    rows, reference = [], None
    for label, use in (("no cache", None), ("first (fills the cache)", cache), ("second (reads it)", cache)):
        seconds, logits = evaluate(use)
        reference = logits if reference is None else reference
        same = bool(torch.equal(logits, reference))
        rows.append({"evaluation": label, "seconds": seconds, "images/s": len(items) / seconds, "same logits": same})
        print(rows[-1], flush=True)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"{args.backbone} random weights, {args.precision}, {device_name}, {len(items)} JPEGs of 500x375, "
        f"{n_classes} classes, test batch {args.eval_batch}, {cfg.DATALOADER.NUM_WORKERS} loader workers; "
        f"second vs first: {rows[1]['seconds'] / rows[2]['seconds']:.1f}x faster"
    )
    print(tabulate(rows, headers="keys", floatfmt=".2f", tablefmt="github"))
    shutil.rmtree(folder)


def _official_case(settings: tuple, measure: tuple) -> dict:
    """One row of the official table (run in a fresh process by :func:`_isolated`)."""
    import vs_official

    vs_official.DEVICE, vs_official.BATCH, vs_official.EVAL_BATCH, vs_official.GRAPHS = settings
    side, case, n, precision = measure[:4]
    try:
        return vs_official.measure(*measure)
    except Exception as error:  # noqa: BLE001 - one failing case must not hide the others
        failed = f"{type(error).__name__}: {error}"[:200]
        return {"side": side, "case": case, "classes": n, "precision": precision, "failed": failed}


def official_table(args) -> None:
    """Rows for both sides, then one line per (case, classes, our precision) with the ratios."""
    import os
    import tempfile

    import vs_official

    if not args.official:
        raise SystemExit("the official table needs --official PATH (a checkout of github.com/gaojingsheng/LAMM)")
    vs_official.DEVICE, vs_official.BATCH, vs_official.EVAL_BATCH = args.device, args.batch, args.eval_batch
    vs_official.GRAPHS = not args.no_graphs
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device: {device_name}, torch {torch.__version__}, batch {vs_official.BATCH}")
    weights = os.path.join(tempfile.mkdtemp(), "vit_b16_random.pt")
    vs_official.save_random_weights(weights)
    rows, summary = [], []
    for case in args.cases or list(vs_official.CASES):
        for n in args.classes or [100, 1000]:
            theirs = {}
            for side, precisions in (("official", args.official_precisions), ("ours", args.precisions)):
                for precision in precisions:
                    settings = (args.device, args.batch, args.eval_batch, not args.no_graphs)
                    profile = args.profile if side == "ours" else None
                    measure = (side, case, n, precision, weights, args.official, args.steps, profile)
                    row = _isolated(_official_case, settings, measure)  # its own process: its own peak memory
                    rows.append(row)
                    print(row, flush=True)
                    if side == "official" and "ms/step" in row:
                        theirs[precision] = row
                    if side == "ours" and "ms/step" in row:
                        for ref_precision, ref in theirs.items():
                            summary.append({
                                "case": case, "classes": n, "official": ref_precision, "ours": precision,
                                "step speed-up": ref["ms/step"] / row["ms/step"],
                                "memory ratio": ref["peak MB"] / row["peak MB"],
                                "eval speed-up": row["eval img/s"] / ref["eval img/s"],
                                "loss diff": abs(row["first loss"] - ref["first loss"]),
                            })  # fmt: skip
    print(tabulate(rows, headers="keys", floatfmt=".4g", tablefmt="github"))
    print()
    print(tabulate(summary, headers="keys", floatfmt=".3g", tablefmt="github"))
    _write_json(args.json, rows, summary)


def _write_json(path: Optional[str], rows: list[dict], summary: Optional[list[dict]] = None) -> None:
    """``--json``: the rows (and the official table's summary) for scripts (``benchmarks/gpu_check.py``)."""
    if path:
        with open(path, "w") as f:
            json.dump({"rows": rows, "summary": summary or []}, f, indent=1, default=str)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=["text", "step", "official", "loader", "evalcache"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--classes", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--step-batch", type=int, default=4, help="step table: images per training step")
    parser.add_argument("--truncate", choices=["both", "on", "off"], default="both", help="text table: which passes")
    parser.add_argument("--official", help="official table: checkout of github.com/gaojingsheng/LAMM")
    parser.add_argument("--cases", nargs="+", default=None, help="official table: CoOp+LAMM, 'LAMM alone', MaPLe+LAMM")
    parser.add_argument("--precisions", nargs="+", default=["fp16", "amp"], help="official table: ours")
    parser.add_argument("--official-precisions", nargs="+", default=["fp16"], help="official table: theirs")
    parser.add_argument("--steps", type=int, default=8, help="official table: timed steps per case")
    parser.add_argument("--profile", help="official table: file that gets torch.profiler tables of our cases")
    parser.add_argument("--batch", type=int, default=32, help="official table: training batch")
    parser.add_argument("--no-graphs", action="store_true", help="official table: our step without CUDA graphs")
    parser.add_argument("--eval-batch", type=int, default=100, help="official table: test batch")
    parser.add_argument("--config", default="configs/trainers/LAMM_CoOp/vit_b16_ep50_ctxv1.yaml", help="loader table")
    parser.add_argument("--images", type=int, default=512, help="loader table: JPEGs per epoch; evalcache: test set")
    parser.add_argument("--backbone", default="ViT-B/16", help="evalcache table: random weights of this backbone")
    parser.add_argument("--precision", default="fp32", help="evalcache table: CLIP's precision")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="loader table (default: the config's)")
    parser.add_argument("--json", default=None, help="step, text and official tables: also write the rows here")
    args = parser.parse_args()
    if args.table == "loader":
        loader_table(args)
        return
    if args.table == "evalcache":
        evalcache_table(args)
        return
    if args.table == "official":
        official_table(args)
        return
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
                rows.append(_isolated(step_case, name, n, args.device, args.repeats, args.step_batch))
                print(rows[-1], flush=True)
    print(tabulate(rows, headers="keys", floatfmt=".1f", tablefmt="github"))
    _write_json(args.json, rows)


if __name__ == "__main__":
    main()
