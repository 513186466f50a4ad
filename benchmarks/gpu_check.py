"""One command that checks every GPU-only path: each LAMM trainer in each precision, a reload, the step benchmark.

    bash benchmarks/gpu_check.sh                       # one GPU, ViT-B/16 with random weights, ~4 minutes
    bash benchmarks/gpu_check.sh --device cpu --backbone tiny-vit --precisions fp32 bf16   # the logic, on a CPU

For every trainer (``LAMM_CoOp``, ``LAMM_MaPLe``, ``LAMM_VPT``) and precision (``fp16``, ``bf16``, ``amp``,
``fp32``) it trains one short epoch of ``train.py`` with the trainer's ViT-B/16 config on the synthetic shapes
(random CLIP weights: nothing is downloaded), then reloads one finished run with ``--eval-only`` (its accuracy
must equal the training run's), then runs ``benchmarks/bench.py step`` on CUDA. It prints one table (trainer,
precision, ok / error, accuracy, ms per training step, peak GPU memory), writes it to ``<output>/table.md`` and
exits with 1 when any case failed.

Each case runs ``train.py``'s ``main`` in its own process (forked from a server that imported ``train`` once), with
its console output in ``<output>/runs/<case>/console.txt`` and a hard timeout; a case that raises, dies or times
out gives an ``error: ...`` row and the others go on.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Optional

from tabulate import tabulate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINERS = {
    "LAMM_CoOp": ("LAMM_COOP", "configs/trainers/LAMM_CoOp/vit_b16_ep50_ctxv1.yaml"),
    "LAMM_MaPLe": ("LAMM_MAPLE", "configs/trainers/LAMM_MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"),
    "LAMM_VPT": ("LAMM_VPT", "configs/trainers/LAMM_VPT/vit_b16_c2_ep5_batch4_4.yaml"),
}
PRECISIONS = ("fp16", "bf16", "amp", "fp32")
DATASET_CONFIG = "configs/datasets/synthetic_shapes.yaml"
# The tiny random CLIP has 3 blocks per tower and takes 32 px images.
TINY_OPTS = {
    "LAMM_CoOp": [],
    "LAMM_MaPLe": ["TRAINER.LAMM_MAPLE.PROMPT_DEPTH", "2"],
    "LAMM_VPT": ["TRAINER.LAMM_VPT.PROMPT_DEPTH_VISION", "3"],
}
#: Test files whose GPU tests skip on a CPU; run here, where they must pass.
GPU_TESTS = ("tests/test_cuda_graph.py",)
BENCH_METHODS = ("CoOp+LAMM", "CoOp+LAMM naive", "MaPLe+LAMM", "VPT+LAMM")


@dataclass
class Case:
    trainer: str
    precision: str
    output_dir: str
    argv: list[str]
    reload_of: Optional[Case] = None  # the training run an --eval-only case reloads
    reload: bool = False
    status: str = "not run"
    results: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def label(self) -> str:
        return f"{self.trainer} {self.precision}" + (" --eval-only" if self.reload else "")


# ---- one case, in its own process ---------------------------------------------------------------------------------
def _run_case(argv: list[str], console: str, status_file: str) -> None:
    """``python train.py ARGV`` in this process, output into ``console``; the outcome goes to ``status_file``."""
    os.setpgrp()  # the parent kills the whole group (data-loader workers included) on a timeout
    fd = os.open(console, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    status: dict[str, Any] = {"ok": True}
    try:
        import train

        print(f"train.py {' '.join(argv)}", flush=True)
        train.main(train.parse_args(argv))
    except BaseException as err:  # noqa: B036  (SystemExit and KeyboardInterrupt are case failures too)
        traceback.print_exc()
        status = {"ok": False, "error": _last_line("".join(traceback.format_exception_only(type(err), err)))}
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    with open(status_file, "w") as f:
        json.dump(status, f)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _kill_group(proc: mp.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def run_case(ctx, case: Case, timeout: float) -> None:
    if os.path.isdir(case.output_dir):
        shutil.rmtree(case.output_dir)  # a leftover run would be resumed instead of trained
    os.makedirs(case.output_dir)
    console = os.path.join(case.output_dir, "console.txt")
    status_file = os.path.join(case.output_dir, "case_status.json")
    start = time.time()
    proc = ctx.Process(target=_run_case, args=(case.argv, console, status_file))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        _kill_group(proc)
        proc.join()
        case.status = f"error: timed out after {timeout:.0f} s"
    elif os.path.isfile(status_file):
        with open(status_file) as f:
            status = json.load(f)
        case.status = "ok" if status["ok"] else f"error: {status['error']}"
    else:
        last = "no output"
        if os.path.isfile(console):
            with open(console, errors="replace") as f:
                last = _last_line(f.read())
        case.status = f"error: process exited with code {proc.exitcode} ({last})"
    case.seconds = time.time() - start
    results_file = os.path.join(case.output_dir, "results.json")
    if case.ok:
        if os.path.isfile(results_file):
            with open(results_file) as f:
                case.results = json.load(f)
        else:
            case.status = "error: finished without results.json"
    if case.ok and case.reload_of is not None:
        expected, got = case.reload_of.results.get("accuracy"), case.results.get("accuracy")
        if got != expected:
            case.status = f"error: accuracy {got} after reload, {expected} after training"


# ---- the check ----------------------------------------------------------------------------------------------------
def train_argv(
    args: argparse.Namespace, trainer: str, precision: str, output_dir: str, flags: tuple[str, ...] = ()
) -> list[str]:
    """``train.py`` arguments: one short epoch of ``trainer``'s ViT-B/16 config on the synthetic shapes."""
    node, config = TRAINERS[trainer]
    argv = [
        "--root", args.root,
        "--seed", "1",
        "--trainer", trainer,
        "--dataset-config-file", os.path.join(REPO, DATASET_CONFIG),
        "--config-file", os.path.join(REPO, config),
        "--output-dir", output_dir,
        *flags,
        f"TRAINER.{node}.PREC", precision,
        "MODEL.BACKBONE.PRETRAINED", "",  # random weights: nothing to download
        "OPTIM.MAX_EPOCH", "1",
        "DATASET.NUM_SHOTS", str(args.shots),
        "DATASET.SYNTHETIC.TEST_PER_CLASS", str(args.test_per_class),
        "DATALOADER.NUM_WORKERS", str(args.workers),
        "TRAIN.CHECKPOINT_FREQ", "1",
        "USE_CUDA", str(args.device == "cuda"),
    ]  # fmt: skip
    if args.backbone == "tiny-vit":
        argv += ["MODEL.BACKBONE.NAME", "tiny-vit", "INPUT.SIZE", "(32, 32)", *TINY_OPTS[trainer]]
    return argv + list(args.opts)


def _fmt(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(cases: list[Case]) -> str:
    rows = []
    for case in cases:
        timings = case.results.get("timings", {})
        status = case.status if len(case.status) <= 160 else case.status[:157] + "..."
        rows.append(
            [
                case.trainer,
                case.precision + (" (reload)" if case.reload else ""),
                status,
                _fmt(case.results.get("accuracy"), 2),
                _fmt(timings.get("ms_per_step")),
                _fmt(timings.get("peak_memory_mb"), 0),
                _fmt(case.seconds),
            ]
        )
    headers = ["trainer", "precision", "result", "accuracy (%)", "ms/step", "peak MB", "seconds"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def run_benchmark(args: argparse.Namespace) -> tuple[bool, str]:
    """``bench.py step`` on CUDA; returns (ok, its table)."""
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "bench.py"), "step", "--device", "cuda"]
    cmd += ["--classes", *map(str, args.bench_classes), "--repeats", "5", "--methods", *BENCH_METHODS]
    print(f"$ {' '.join(cmd)}", flush=True)
    log = os.path.join(args.output, "bench.txt")
    with open(log, "w") as f:
        try:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=args.bench_timeout, cwd=REPO)
            code: Optional[int] = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    with open(log, errors="replace") as f:
        lines = f.read().splitlines()
    table_lines = [line for line in lines if line.startswith("|")]
    device = next((line for line in lines if line.startswith("device:")), "")
    if code is None:
        return False, f"error: timed out after {args.bench_timeout:.0f} s (see {log})"
    if code != 0 or not table_lines:
        return False, f"error: exit code {code}: {_last_line(chr(10).join(lines))} (see {log})"
    failed = "failed" in table_lines[0]  # bench.py adds a "failed" column when a case's process died
    return not failed, "\n".join([device, *table_lines])


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument(
        "--backbone",
        choices=["vit-b16", "tiny-vit"],
        default="vit-b16",
        help="vit-b16: the configs' ViT-B/16; tiny-vit: the tiny random CLIP with 32 px images",
    )
    parser.add_argument("--trainers", nargs="+", choices=list(TRAINERS), default=list(TRAINERS))
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--root", default=os.path.join(REPO, "data"), help="dataset root (synthetic set made here)")
    parser.add_argument("--output", default=os.path.join(REPO, "output", "gpu_check"), help="output folder")
    parser.add_argument("--shots", type=int, default=16, help="training images per class (16 at most)")
    parser.add_argument("--test-per-class", type=int, default=8, help="test images per class")
    parser.add_argument(
        "--workers", type=int, default=None, help="DATALOADER.NUM_WORKERS (default: 4 on CUDA, 0 on CPU)"
    )
    parser.add_argument("--timeout", type=float, default=120, help="seconds per case before it is killed")
    parser.add_argument("--bench-classes", type=int, nargs="+", default=[100], help="class counts for bench.py")
    parser.add_argument("--bench-timeout", type=float, default=180, help="seconds for the whole benchmark")
    parser.add_argument("--no-bench", action="store_true", help="skip the step benchmark (always skipped on CPU)")
    parser.add_argument("--no-tests", action="store_true", help="skip the GPU tests (always skipped on CPU)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every run")
    return parser.parse_args(argv)


def run_gpu_tests(args) -> tuple[bool, str]:
    """The tests that only a GPU runs (they skip elsewhere); on a GPU a skip counts as a failure."""
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *GPU_TESTS]
    try:
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=args.timeout)
        output, ok = proc.stdout + proc.stderr, proc.returncode == 0
    except subprocess.TimeoutExpired as error:
        output, ok = f"timed out after {error.timeout:.0f} s", False
    lines = [line for line in output.strip().splitlines() if line.strip()]
    ok = ok and not any("skipped" in line.lower() for line in lines[-1:])
    return ok, "\n".join(["```", *lines[-15:], "```"])


def main(argv: Optional[list[str]] = None) -> int:
    start = time.time()
    args = parse_args(argv)
    args.root, args.output = os.path.abspath(args.root), os.path.abspath(args.output)
    if args.workers is None:
        args.workers = 4 if args.device == "cuda" else 0  # on a CPU, loader workers compete with the model
    if args.opts and args.opts[0] == "--":
        args.opts = args.opts[1:]
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("No CUDA device: run on a machine with a GPU, or check the logic with --device cpu.")
            return 2
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    runs = os.path.join(args.output, "runs")
    os.makedirs(runs, exist_ok=True)
    tests_ok, tests_table = True, "(skipped: --device cpu)" if args.device == "cpu" else "(skipped: --no-tests)"
    if args.device == "cuda" and not args.no_tests:
        tests_ok, tests_table = run_gpu_tests(args)
        print(tests_table, flush=True)

    cases = []
    for trainer in args.trainers:
        for precision in args.precisions:
            folder = os.path.join(runs, f"{trainer}_{precision}")
            cases.append(Case(trainer, precision, folder, train_argv(args, trainer, precision, folder)))

    # Cases fork from a server that imported train.py once (no CUDA there), each with its own CUDA context.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["train"])
    sys.path.insert(0, REPO)
    for i, case in enumerate(cases, 1):
        print(f"[{i}/{len(cases) + 1}] {case.label} ...", end=" ", flush=True)
        run_case(ctx, case, args.timeout)
        print(f"{case.status} ({case.seconds:.1f} s)", flush=True)

    # Reload the first finished run (precisions in the order given) with --eval-only.
    source = next((c for c in cases if c.ok and c.results.get("accuracy") is not None), None)
    if source is not None:
        folder = source.output_dir + "_reload"
        flags = ("--eval-only", "--model-dir", source.output_dir, "--load-epoch", "1")
        argv = train_argv(args, source.trainer, source.precision, folder, flags)
        reload = Case(source.trainer, source.precision, folder, argv, reload_of=source, reload=True)
        print(f"[{len(cases) + 1}/{len(cases) + 1}] {reload.label} ...", end=" ", flush=True)
        run_case(ctx, reload, args.timeout)
        print(f"{reload.status} ({reload.seconds:.1f} s)", flush=True)
    else:
        reload = Case("-", "-", "", [], reload=True, status="error: no finished run to reload")
    cases.append(reload)

    bench_ok, bench_table = True, "(skipped: --device cpu)" if args.device == "cpu" else "(skipped: --no-bench)"
    if args.device == "cuda" and not args.no_bench:
        bench_ok, bench_table = run_benchmark(args)

    n_ok = sum(case.ok for case in cases)
    summary = f"{n_ok} of {len(cases)} runs ok, GPU tests {'ok' if tests_ok else 'failed'}, "
    summary += f"benchmark {'ok' if bench_ok else 'failed'}"
    text = "\n\n".join(
        [
            f"# GPU check ({args.device}, backbone {args.backbone})",
            table(cases),
            f"## GPU tests ({' '.join(GPU_TESTS)})",
            tests_table,
            "## Step benchmark (benchmarks/bench.py step)",
            bench_table,
            f"{summary}; total {time.time() - start:.0f} s. Logs: {runs}/<case>/console.txt",
        ]
    )
    with open(os.path.join(args.output, "table.md"), "w") as f:
        f.write(text + "\n")
    print("\n" + text, flush=True)
    return 0 if n_ok == len(cases) and bench_ok and tests_ok else 1


if __name__ == "__main__":
    sys.exit(main())
