"""Speed and memory tables (ViT-B/16 architecture, random weights: no download needed).

    python benchmarks/bench.py text            # text encoder: full length vs EOT-truncated
    python benchmarks/bench.py step            # one training step per method, vs a naive LAMM
    python benchmarks/bench.py step --device cuda --classes 10 100 1000
    python benchmarks/bench.py official --official /path/to/LAMM --device cuda    # against the official code
    python benchmarks/bench.py loader --workers 4 8 16      # images/s of the training loader alone, Dassl's and ours
    python benchmarks/bench.py evalcache --backbone ViT-B/32   # first vs later evaluations of a test set
    python benchmarks/bench.py run             # one whole train.py run per variant, time per phase
    python benchmarks/bench.py sweep           # a few-shot sweep (shots x seeds) of whole runs per variant

``step`` rows per host, with and without LAMM; the ``naive`` rows compute the same loss the straightforward way
(full-length prompts, separate passes for learned and original labels; CoCoOp's the way its original code does,
a Python loop over the images). ``--step-batch`` sets the images per step (CoCoOp's papers: 1).
Each case runs in a fresh process so that its peak memory is its own (CUDA: peak allocated; CPU:
peak RSS of the process, which includes the ~0.6 GB of CLIP weights).

``evalcache`` times the evaluation of one test set (JPEGs of 500x375, Dassl's test loader and transform, CoOp+LAMM
on random weights, ``--classes`` names) through the trainers' evaluation loop: without the feature cache, the first
time with it (computes and stores the image features) and the second time (reads them).

``run`` and ``sweep`` time whole ``train.py`` processes (LAMM_CoOp, random CLIP weights, generated JPEGs of
500x375 in Caltech101's layout) and split each into start-up (the command to the first training step: imports,
CLIP, dataset, loaders, text features), data (dataset listing, few-shot check, decoded-image cache), waiting for the
training loader, training steps, evaluations and the rest (checkpoints, logs), from the timers the trainer records
in ``results.json`` (``timings.phases``); a variant switches one saving off (a key this repository's config lacks is
named instead). The official code's whole run needs a GPU.

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


def write_jpegs(folder: str, n: int, seed: int = 0, size: tuple[int, int] = (500, 375)) -> list[str]:
    """``n`` JPEGs of ImageNet's typical size and file size (~100 KB: smooth content plus pixel noise, which a
    photo's texture costs the decoder; smooth content alone gives ~40 KB files that decode twice as fast)."""
    import os

    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = os.path.join(folder, f"{i:05d}.jpg")
        small = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
        pixels = np.asarray(small).astype(np.int16) + rng.normal(0, 16, (size[1], size[0], 3)).astype(np.int16)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def loader_table(args) -> None:
    """Images/s of the training loader alone, Dassl's (``DatasetWrapper``, decoding every image in every epoch) and
    ours (``LAMM_CACHE.DECODED_IMAGES``: decoded once), with a trainer config's transforms, over JPEGs of ImageNet's
    typical size; per worker: images/s over the workers (the main process for 0)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        _loader_table(args, folder)


def _loader_table(args, folder: str) -> None:
    import os

    from dassl.config import get_cfg_default
    from dassl.data.data_manager import build_data_loader
    from dassl.data.datasets import Datum
    from dassl.data.transforms import build_transform

    import lamm_plugin.dassl  # noqa: F401 - adds the LAMM config nodes
    from lamm_plugin.dassl import decoded

    cfg = get_cfg_default()
    cfg.merge_from_file(args.config)
    paths = write_jpegs(folder, args.images)
    kb = sum(os.path.getsize(p) for p in paths) / len(paths) / 1024
    items = [Datum(impath=p, label=i % 10, classname=str(i % 10)) for i, p in enumerate(paths)]
    batch = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    rows = []
    for workers in args.workers or [cfg.DATALOADER.NUM_WORKERS]:
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = workers
        for name in ("Dassl (uncached)", "ours (decoded once)"):
            dassl = build_data_loader(cfg, cfg.DATALOADER.TRAIN_X.SAMPLER, items, batch_size=batch,
                                      tfm=build_transform(cfg, is_train=True), is_train=True)  # fmt: skip
            fill = time.perf_counter()
            loader = dassl if name.startswith("Dassl") else decoded.cached_train_loader(cfg, dassl)
            fill = time.perf_counter() - fill
            for _ in loader:  # warm-up epoch (workers start, files in the page cache)
                pass
            best = 0.0
            for _ in range(args.repeats):  # the best epoch: the machine may be shared
                start = time.perf_counter()
                n = sum(b["img"].shape[0] for b in loader)
                best = max(best, n / (time.perf_counter() - start))
            rows.append({"loader": name, "workers": workers, "batch": batch, "images/s": best,
                         "images/s per worker": best / max(workers, 1), "ms/batch": 1000 * batch / best,
                         "cache fill s": fill if not name.startswith("Dassl") else None})  # fmt: skip
            print(rows[-1], flush=True)
        rows[-1]["speed-up"] = rows[-1]["images/s"] / rows[-2]["images/s"]
    print(f"config: {args.config}, {os.cpu_count()} CPUs, {args.images} JPEGs of 500x375 (mean {kb:.0f} KB)")
    print(tabulate(rows, headers="keys", floatfmt=".1f", tablefmt="github"))


# ---- whole runs -----------------------------------------------------------------------------------------------------
#: Per-phase columns of the whole-run tables, from ``results.json``'s ``timings.phases``.
PHASES = ("startup", "data", "loader_wait", "steps", "evaluation")
#: ``--variants`` of the whole-run tables: the config options each adds to ours (the savings switched off).
VARIANTS = {
    "ours": [],
    "ours, decoded-image cache off": ["LAMM_CACHE.DECODED_IMAGES", "False"],
    "ours, feature cache off": ["LAMM_CACHE.TEST_FEATURES", "False", "LAMM_CACHE.TEXT_FEATURES", "False"],
}
#: Class folders of the generated dataset (Caltech101's layout, a split made from the folders on first use).
RUN_CLASSES = ["airplane", "bonsai", "butterfly", "camera", "chair", "dolphin", "ferry", "kangaroo", "lotus", "piano"]


def known_opts(opts: list[str]) -> tuple[list[str], list[str]]:
    """``opts`` (key, value pairs) split into those whose key this repository's config has, and the missing keys."""
    from dassl.config import get_cfg_default

    import lamm_plugin.dassl  # noqa: F401 - adds the LAMM config nodes
    from lamm_plugin.dassl.config import all_keys

    keys = set(all_keys(get_cfg_default()))
    pairs = list(zip(opts[::2], opts[1::2]))
    return [x for k, v in pairs if k in keys for x in (k, v)], [k for k, _ in pairs if k not in keys]


def write_run_data(root: str, classes: int, per_class: int) -> None:
    """Caltech101's folder layout under ``root`` with ``per_class`` generated JPEGs per class (500x375)."""
    import os

    for i, name in enumerate(RUN_CLASSES[:classes]):
        write_jpegs(os.path.join(root, "caltech-101", "101_ObjectCategories", name), per_class, seed=i)


def timed_run(args, root: str, output_dir: str, shots: int, seed: int, opts: list[str]) -> dict:
    """One ``python train.py`` in its own process; its wall time and the phases its ``results.json`` records."""
    import json
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [
        sys.executable, os.path.join(repo, "train.py"), "--root", root, "--seed", str(seed),
        "--trainer", "LAMM_CoOp", "--dataset-config-file", os.path.join(repo, "configs/datasets/caltech101.yaml"),
        "--config-file", os.path.join(repo, args.run_config), "--output-dir", output_dir,
        "DATASET.NUM_SHOTS", str(shots), "OPTIM.MAX_EPOCH", str(args.epochs),
        "DATALOADER.NUM_WORKERS", str(args.run_workers), "DATALOADER.TRAIN_X.BATCH_SIZE", str(args.run_batch),
        "MODEL.BACKBONE.NAME", args.backbone, "MODEL.BACKBONE.PRETRAINED", "False",
        "TRAINER.LAMM_COOP.PREC", args.run_precision, *opts,
    ]  # fmt: skip
    start = time.time()
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    wall = time.time() - start
    if done.returncode != 0:
        return {"wall s": wall, "failed": (done.stderr or done.stdout).strip().splitlines()[-1][:200]}
    with open(os.path.join(output_dir, "results.json")) as f:
        phases = json.load(f)["timings"]["phases"]
    row = {"wall s": wall, "startup s": phases["first_step_at"] - start}  # from the command, interpreter included
    row.update({f"{name} s": phases[f"{name}_seconds"] for name in PHASES[1:]})
    row["other s"] = wall - row["startup s"] - sum(row[f"{name} s"] for name in PHASES[2:])
    return row


def runs_table(args) -> None:
    """Whole ``train.py`` runs (``run``) or a few-shot sweep of them (``sweep``: shots x seeds), per variant."""
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        _runs_table(args, root)


def _runs_table(args, root: str) -> None:
    import tempfile

    write_run_data(root, args.run_classes, args.per_class)
    jobs = [(s, seed) for s in args.shots for seed in args.seeds] if args.table == "sweep" else [(args.shots[0], 1)]
    variants, rows = {}, []
    for variant in args.variants:
        opts, missing = known_opts(VARIANTS[variant])
        if missing:
            rows.append({"variant": variant, "failed": f"not in this config: {', '.join(missing)}"})
        else:
            variants[variant] = opts
    totals: dict[str, dict] = {variant: {} for variant in variants}
    for shots, seed in jobs:  # the variants interleaved, job by job: a shared machine's drift hits them alike
        for variant, opts in variants.items():
            total = totals[variant]
            if "failed" in total:
                continue
            out = tempfile.mkdtemp(prefix=f"{variant.replace(' ', '_').replace(',', '')}_", dir=root)
            row = timed_run(args, root, out, shots, seed, opts)
            if "failed" in row:
                totals[variant] = row
                continue
            for key, value in row.items():
                total[key] = total.get(key, 0.0) + value
            print(variant, shots, seed, row, flush=True)
    rows = [{"variant": v, "runs": len(jobs), **t} for v, t in totals.items()] + rows
    rows.append({"variant": "official code (gaojingsheng/LAMM)", "runs": len(jobs), "failed": "n/a (needs a GPU)"})
    what = f"shots {args.shots} x seeds {args.seeds}" if args.table == "sweep" else f"{args.shots[0]} shots, seed 1"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"{args.table}: LAMM_CoOp {args.run_config}, {args.backbone} random weights, {args.run_precision}, "
        f"{args.run_classes} classes of generated 500x375 JPEGs, {what}, {args.epochs} epochs, batch "
        f"{args.run_batch}, {args.run_workers} workers, device {device}"
    )
    print(tabulate(rows, headers="keys", floatfmt=".1f", tablefmt="github"))


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
    items = [Datum(impath=p, label=i % n_classes) for i, p in enumerate(write_jpegs(folder, args.images))]
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


def build_parser() -> argparse.ArgumentParser:
    """The command line of every table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=["text", "step", "official", "loader", "evalcache", "run", "sweep"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--classes", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (loader: epochs, the best kept)")
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
    parser.add_argument("--backbone", default="ViT-B/32", help="evalcache, run and sweep: random weights of this CLIP")
    parser.add_argument("--precision", default="fp32", help="evalcache table: CLIP's precision")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="loader table (default: the config's)")
    parser.add_argument("--run-config", default="configs/trainers/LAMM_CoOp/vit_b32_ep50_ctxv1.yaml", help="run/sweep")
    parser.add_argument(
        "--run-precision", default="fp32" if not torch.cuda.is_available() else "fp16", help="run/sweep"
    )
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2], help="run (the first) / sweep")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="sweep")
    parser.add_argument("--epochs", type=int, default=2, help="run/sweep")
    parser.add_argument("--run-classes", type=int, default=5, choices=range(1, len(RUN_CLASSES) + 1), help="run/sweep")
    parser.add_argument(
        "--per-class", type=int, default=12, help="run/sweep: generated JPEGs per class (split 50/20/30)"
    )
    parser.add_argument("--run-batch", type=int, default=32, help="run/sweep")
    parser.add_argument("--run-workers", type=int, default=2, help="run/sweep: DATALOADER.NUM_WORKERS")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="run/sweep")
    parser.add_argument("--json", default=None, help="step, text and official tables: also write the rows here")
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    if args.table in ("run", "sweep"):
        runs_table(args)
        return
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
