"""One command that checks every GPU-only path: each trainer in each precision, a reload, the GPU tests, benchmarks.

    bash benchmarks/gpu_check.sh --output $OUT/gpu_check          # one GPU, ViT-B/16 with random weights
    bash benchmarks/gpu_check.sh --only 'LAMM_MaPLe:*' 'tests'     # a subset (a rerun of what failed)
    bash benchmarks/gpu_check.sh --device cpu --smoke              # the logic on a CPU, one tiny case

What it runs, each piece a *case* with a name that ``--only`` / ``--skip`` match (shell patterns):

- ``<trainer>:<precision>``: ``train.py`` for one short epoch on the synthetic shapes, for every trainer the
  registry derives (``LAMM_<Host>`` for each method with a LAMM variant, the baseline ``<Host>`` for every method,
  :data:`lamm_plugin.methods.METHODS`) in every precision (:data:`lamm_plugin.layout.PRECISIONS`), with the
  trainer's ViT-B/16 config (``--backbone tiny-vit``: its ``demo_cpu.yaml``); a trainer that learns nothing
  (zero-shot CLIP) runs ``--eval-only``;
- ``reload:<trainer>:<precision>``: the first finished training run reloaded with ``--eval-only``; its accuracy
  must equal the training run's;
- ``tests``: ``tests/test_cuda_graph.py``, whose GPU tests skip on a CPU (every method case of ``tests/cases.py``:
  the step replayed from a CUDA graph equals the eager step); on a GPU a skip is a failure;
- ``bench:official-<N>``: ``bench.py official`` against the official LAMM code at N = 100 and 1000 classes (its
  checkout: ``LAMM_OFFICIAL_REPO``, else ``shared/originals/LAMM`` in the repository, else
  ``../shared/originals/LAMM`` beside it); ``bench:step`` (``bench.py step``, 100 classes) and ``bench:run``
  (``bench.py run``: whole runs per phase) only when ``--only`` names them.

Every case runs in its own process with a hard timeout, so one that raises, dies or hangs gives a ``fail`` or
``timeout`` row and the others go on. The timeout of a case is ``--timeout-ratio`` times its CPU seconds in
``benchmarks/gpu_check_seconds.json`` (the same case with the tiny CLIP on one CPU thread, measured with
``--device cpu --precisions fp32 fp16 bf16 amp --record-seconds``; a case not listed takes the largest listed
value), at least ``--min-timeout``; ``--timeout S`` sets one value for all. The ratio is the slowdown allowed from
that CPU run to a ViT-B/16 run on a shared GPU: each run's ``seconds.json`` holds its cases' seconds, and the
table's last line gives the measured GPU/CPU ratios, from which ``--timeout-ratio`` is set. Training cases run
``--jobs`` at a time (the first alone: it writes the synthetic set), so their seconds include waiting for the GPU;
the GPU tests run beside them; the benchmarks run alone afterwards, so their timings are their own.
``--deadline`` bounds the whole command: a case still running then is stopped (``timeout``), one not started is
``skipped``, and the table is written; rerun what is missing with ``--only``.

Each training run checks its fast paths on their first use (:mod:`lamm_plugin.fast_paths`: the CUDA graphs of the
training step and of the evaluation forward, our attention in the text blocks) and records in ``results.json``
whether each passed, fell back to the eager computation, or was not used (our attention, off by default, is turned
on in these runs so that it is checked too); the table's ``fast paths`` column says it per case, a second table per
path over all cases, and a path that fell back anywhere fails the command. Evaluation runs in batches of
``--test-batch`` so that an evaluation repeats a batch shape and its graph is captured.

Everything goes under ``--output``: ``table.md`` (the tables, rewritten after every case, so a run killed
from outside still leaves it), ``summary.json``, ``seconds.json`` (each case's seconds, for the timeouts of the
next run), ``runs/<case>/`` (``console.txt`` with the traceback, ``log.txt``, ``results.json``), ``tests.txt``,
``bench_*.txt`` / ``bench_*.json``; ``--archive FILE`` packs it (checkpoints left out) into one ``.tar.gz``.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Optional

from tabulate import tabulate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from lamm_plugin.layout import PRECISIONS, RESULTS_FILENAME  # noqa: E402 - after the path of the repository

#: The fast paths a training run records (``results.json``, ``fast_paths``; :data:`lamm_plugin.fast_paths.PATHS`),
#: by their short names in the table.
FAST_PATHS = {"cuda_graph_step": "graph step", "cuda_graph_eval": "graph eval", "text_attention": "attention"}
FELL_BACK = "fell back"

DATASET_CONFIG = "configs/datasets/synthetic_shapes.yaml"
#: Test files whose GPU tests skip on a CPU; run here, where they must pass.
GPU_TESTS = ("tests/test_cuda_graph.py",)
BENCH_STEP_METHODS = ("CoOp+LAMM", "CoOp+LAMM naive", "MaPLe+LAMM", "VPT+LAMM", "CoCoOp+LAMM", "PromptSRC+LAMM")
OFFICIAL_CLASSES = (100, 1000)
#: CPU seconds per case (``--record-seconds``), the base of each case's timeout.
SECONDS_FILE = os.path.join(REPO, "benchmarks", "gpu_check_seconds.json")
#: Where the official LAMM checkout is looked for when ``LAMM_OFFICIAL_REPO`` is unset (as ``.ci/run`` looks).
OFFICIAL_CANDIDATES = ("shared/originals/LAMM", "../shared/originals/LAMM")
#: Files left out of ``--archive`` (checkpoints: large, and nothing to read in them).
ARCHIVE_SKIP = re.compile(r"(\.pth\.tar(-\d+)?|checkpoint)$")
#: Status words of the table.
OK, FAIL, TIMEOUT, SKIPPED = "ok", "fail", "timeout", "skipped"
#: No case starts with fewer seconds than this left before ``--deadline``.
MIN_START = 10.0


@dataclass(frozen=True)
class Trainer:
    """A trainer the registry derives: its class name, config node, method and whether it learns anything."""

    name: str
    node: str
    method: str
    learns: bool = True


def registry_trainers() -> list[Trainer]:
    """Every trainer of this repository: ``LAMM_<Host>`` per method with a LAMM variant, then every baseline."""
    from lamm_plugin.dassl.config import baseline_node, lamm_node
    from lamm_plugin.methods import METHODS

    lamm = [Trainer(f"LAMM_{cls.display_name}", lamm_node(m), m) for m, cls in METHODS.items() if cls.lamm_variant]
    # A method without a LAMM variant has nothing to learn (zero-shot CLIP): its baseline is evaluated only.
    base = [Trainer(cls.display_name, baseline_node(m), m, cls.lamm_variant) for m, cls in METHODS.items()]
    return lamm + base


def vit_b16_config(trainer: str) -> str:
    """The trainer's main ViT-B/16 config: the first ``vit_b16*.yaml`` that is no variant (official, frozen, ...)."""
    folder = os.path.join(REPO, "configs", "trainers", trainer)
    variants = ("_official", "_frozen", "_cross_datasets", "_few_shot")
    names = sorted(n for n in os.listdir(folder) if n.startswith("vit_b16") and n.endswith(".yaml"))
    main = [n for n in names if not any(v in n for v in variants)]
    if not main:
        raise FileNotFoundError(f"{folder} holds no ViT-B/16 config (vit_b16*.yaml): add one for the GPU check")
    return os.path.join(folder, main[0])


@dataclass
class Case:
    """One row of the table."""

    name: str
    kind: str  # "train", "reload", "tests", "bench"
    precision: str = "-"
    argv: list[str] = field(default_factory=list)
    output_dir: str = ""
    timeout: float = 0.0
    reload_of: Optional[Case] = None
    trainer: Optional[Trainer] = None
    status: str = "not run"
    detail: str = ""
    seconds: Optional[float] = None
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def finish(self, status: str, detail: str = "") -> None:
        self.status, self.detail = status, detail


# ---- one training case, in its own process ------------------------------------------------------------------------
def _run_train(argv: list[str], console: str, status_file: str) -> None:
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


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class Running:
    """A training case's process and when it started."""

    def __init__(self, ctx, case: Case) -> None:
        if os.path.isdir(case.output_dir):
            shutil.rmtree(case.output_dir)  # a leftover run would be resumed instead of trained
        os.makedirs(case.output_dir)
        self.case = case
        self.console = os.path.join(case.output_dir, "console.txt")
        self.status_file = os.path.join(case.output_dir, "case_status.json")
        self.start = time.time()
        self.proc = ctx.Process(target=_run_train, args=(case.argv, self.console, self.status_file))
        self.proc.start()

    def poll(self) -> bool:
        """Whether the case is over (finished, died, or killed for its timeout); then its row is filled in."""
        case = self.case
        if self.proc.is_alive() and time.time() - self.start < case.timeout:
            return False
        if self.proc.is_alive():
            _kill_group(self.proc.pid)
            self.proc.join()
            case.finish(TIMEOUT, f"killed after {case.timeout:.0f} s ({_last_line(_read(self.console))})")
        else:
            self.proc.join()
            if os.path.isfile(self.status_file):
                with open(self.status_file) as f:
                    status = json.load(f)
                case.finish(OK) if status["ok"] else case.finish(FAIL, status["error"])
            else:
                last = _last_line(_read(self.console))
                case.finish(FAIL, f"process exited with code {self.proc.exitcode} ({last})")
            _kill_group(self.proc.pid)  # loader workers left behind
        case.seconds = time.time() - self.start
        results_file = os.path.join(case.output_dir, RESULTS_FILENAME)
        if case.ok:
            if os.path.isfile(results_file):
                with open(results_file) as f:
                    case.results = json.load(f)
            else:
                case.finish(FAIL, f"finished without {RESULTS_FILENAME}")
        if case.ok and case.reload_of is not None:
            expected, got = case.reload_of.results.get("accuracy"), case.results.get("accuracy")
            if got != expected:
                case.finish(FAIL, f"accuracy {got} after reload, {expected} after training")
        return True


def _read(path: str) -> str:
    if not os.path.isfile(path):
        return ""
    with open(path, errors="replace") as f:
        return f.read()


# ---- the cases ----------------------------------------------------------------------------------------------------
def train_argv(
    args: argparse.Namespace, trainer: Trainer, precision: str, output_dir: str, flags: tuple[str, ...] = ()
) -> list[str]:
    """``train.py`` arguments: one short epoch of ``trainer``'s config on the synthetic shapes."""
    if args.backbone == "tiny-vit":
        config = os.path.join(REPO, "configs", "trainers", trainer.name, "demo_cpu.yaml")
    else:
        config = vit_b16_config(trainer.name)
    if not trainer.learns and "--eval-only" not in flags:
        flags = (*flags, "--eval-only")
    argv = [
        "--root", args.root,
        "--seed", "1",
        "--trainer", trainer.name,
        "--dataset-config-file", os.path.join(REPO, DATASET_CONFIG),
        "--config-file", config,
        "--output-dir", output_dir,
        *flags,
        f"TRAINER.{trainer.node}.PREC", precision,
        f"TRAINER.{trainer.node}.OWN_ATTENTION", "True",  # off by default: on here, so that its check runs too
        "MODEL.BACKBONE.PRETRAINED", "",  # random weights: nothing to download
        "OPTIM.MAX_EPOCH", "1",
        "DATASET.NUM_SHOTS", str(args.shots),
        "DATASET.SYNTHETIC.NUM_CLASSES", str(args.classes),
        "DATASET.SYNTHETIC.TRAIN_PER_CLASS", str(max(args.shots, 1)),
        "DATASET.SYNTHETIC.VAL_PER_CLASS", "1",
        "DATASET.SYNTHETIC.TEST_PER_CLASS", str(args.test_per_class),
        "DATALOADER.TEST.BATCH_SIZE", str(args.test_batch),
        "DATALOADER.NUM_WORKERS", str(args.workers),
        "TRAIN.CHECKPOINT_FREQ", "1",
        "USE_CUDA", str(args.device == "cuda"),
    ]  # fmt: skip
    return argv + list(args.opts)


def load_seconds(path: str) -> dict[str, float]:
    """CPU seconds per case name, as ``--record-seconds`` wrote them (empty when the file is missing)."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("seconds"), dict):
        raise ValueError(f"{path}: expected {{'seconds': {{case: seconds}}}}; rewrite it with --record-seconds")
    return {str(k): float(v) for k, v in data["seconds"].items()}


def case_timeout(args: argparse.Namespace, name: str, cpu_seconds: dict[str, float]) -> float:
    """``--timeout``, else ``--timeout-ratio`` x the case's CPU seconds (the largest listed when it has none)."""
    if args.timeout is not None:
        return args.timeout
    base = cpu_seconds.get(name, max(cpu_seconds.values(), default=args.min_timeout))
    return max(args.min_timeout, args.timeout_ratio * base)


def selected(args: argparse.Namespace, name: str) -> bool:
    if args.only and not any(fnmatch.fnmatchcase(name, p) for p in args.only):
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in args.skip)


def build_cases(args: argparse.Namespace, trainers: list[Trainer]) -> tuple[list[Case], list[Case]]:
    """The training cases (``<trainer>:<precision>``) and the others (tests, benchmarks) that ``args`` select."""
    cpu_seconds = load_seconds(args.seconds_file)
    runs = os.path.join(args.output, "runs")
    train = []
    for trainer in trainers:
        for precision in args.precisions:
            name = f"{trainer.name}:{precision}"
            if not selected(args, name):
                continue
            folder = os.path.join(runs, f"{trainer.name}_{precision}")
            argv = train_argv(args, trainer, precision, folder)
            case = Case(name, "train", precision, argv, folder, case_timeout(args, name, cpu_seconds))
            case.trainer = trainer
            train.append(case)
    others = []
    if args.device == "cuda":
        others.append(Case("tests", "tests"))
        others += [Case(f"bench:official-{n}", "bench", " ".join(args.official_precisions)) for n in OFFICIAL_CLASSES]
        # The step table of every host: only when named exactly (it does not fit the default time budget).
        if "bench:step" in args.only:
            others.append(Case("bench:step", "bench", "fp32"))
        # Whole train.py runs per phase (bench.py run, ViT-B/16, 10 classes, 16 shots): only when named, as above.
        if "bench:run" in args.only:
            others.append(Case("bench:run", "bench", "fp16"))
    return train, [case for case in others if selected(args, case.name)]


def reload_case(args: argparse.Namespace, source: Case, cpu_seconds: dict[str, float]) -> Case:
    """``--eval-only`` of ``source``'s checkpoint; its accuracy must equal the training run's."""
    trainer = source.trainer
    folder = source.output_dir + "_reload"
    flags = ("--eval-only", "--model-dir", source.output_dir, "--load-epoch", "1")
    name = f"reload:{source.name}"
    argv = train_argv(args, trainer, source.precision, folder, flags)
    timeout = case_timeout(args, source.name, cpu_seconds)
    return Case(name, "reload", source.precision, argv, folder, timeout, reload_of=source, trainer=trainer)


# ---- tests and benchmarks (subprocesses) -------------------------------------------------------------------------
def _subprocess(cmd: list[str], log: str, timeout: float, env: Optional[dict[str, str]] = None) -> Optional[int]:
    """Run ``cmd`` from the repository root, output into ``log``; the exit code, ``None`` after a timeout."""
    with open(log, "w") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
            return None


def run_tests(args: argparse.Namespace, case: Case) -> None:
    """The tests that only a GPU runs; a skip counts as a failure there."""
    log = os.path.join(args.output, "tests.txt")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *GPU_TESTS]
    code = _subprocess(cmd, log, case.timeout)
    last = _last_line(_read(log))
    if code is None:
        case.finish(TIMEOUT, f"killed after {case.timeout:.0f} s ({last})")
    elif code != 0 or "skipped" in last:
        case.finish(FAIL, last)
    else:
        case.finish(OK, last)


def official_repo() -> Optional[str]:
    """The official LAMM checkout: ``LAMM_OFFICIAL_REPO``, else the first of :data:`OFFICIAL_CANDIDATES`."""
    given = os.environ.get("LAMM_OFFICIAL_REPO")
    if given:
        return given
    for candidate in OFFICIAL_CANDIDATES:
        path = os.path.normpath(os.path.join(REPO, candidate))
        if os.path.isdir(path):
            return path
    return None


def bench_arguments(args: argparse.Namespace, what: str, official: str) -> list[str]:
    """``bench.py``'s arguments for benchmark case ``bench:<what>`` (``step``, ``run`` or ``official-<N>``)."""
    if what == "step":
        return ["step", "--device", "cuda", "--classes", "100", "--repeats", "5", "--methods", *BENCH_STEP_METHODS]
    if what == "run":
        return [
            "run", "--backbone", "ViT-B/16", "--run-config", "configs/trainers/LAMM_CoOp/vit_b16_ep50_ctxv1.yaml",
            "--run-precision", "fp16", "--run-classes", "10", "--per-class", "40", "--shots", "16",
            "--run-workers", "8",
        ]  # fmt: skip
    n = what.rsplit("-", 1)[1]
    return [
        "official", "--device", "cuda", "--official", official, "--classes", n, "--steps", str(args.official_steps),
        "--precisions", *args.official_precisions, "--official-precisions", *args.official_precisions,
    ]  # fmt: skip


def run_bench(args: argparse.Namespace, case: Case) -> None:
    """``bench.py step``, ``run`` or ``official`` on CUDA; the rows go to ``bench_<what>.json``."""
    what = case.name.split(":", 1)[1]
    log, json_file = (os.path.join(args.output, f"bench_{what}.{ext}") for ext in ("txt", "json"))
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "bench.py")]
    repo = official_repo() if what.startswith("official") else ""
    if repo is None:
        case.finish(FAIL, "official LAMM checkout not found: set LAMM_OFFICIAL_REPO or copy it to shared/originals")
        return
    cmd += bench_arguments(args, what, repo)
    if what == "run":  # its phase table is the text log; no rows to summarise
        code = _subprocess(cmd, log, case.timeout)
        status = TIMEOUT if code is None else OK if code == 0 else FAIL
        case.finish(status, f"exit code {code}: {_last_line(_read(log))} (table in {os.path.basename(log)})")
        return
    cmd += ["--json", json_file]
    code = _subprocess(cmd, log, case.timeout)
    if code is None:
        case.finish(TIMEOUT, f"killed after {case.timeout:.0f} s (see {os.path.basename(log)})")
        return
    if code != 0 or not os.path.isfile(json_file):
        case.finish(FAIL, f"exit code {code}: {_last_line(_read(log))}")
        return
    with open(json_file) as f:
        data = json.load(f)
    failed = [row for row in data["rows"] if "failed" in row]
    case.results = data
    detail = "; ".join(bench_detail(data))
    case.finish(FAIL if failed else OK, (f"{len(failed)} row(s) failed; " if failed else "") + detail)


def bench_detail(data: dict[str, Any]) -> list[str]:
    """Short summaries of a benchmark's rows: speed-ups against the official code, or ms per step."""
    if data.get("summary"):
        return [
            f"{s['case']} {s['ours']}/{s['official']}: step {s['step speed-up']:.2f}x, "
            f"memory {1 / s['memory ratio']:.2f} of theirs, eval {s['eval speed-up']:.2f}x"
            for s in data["summary"]
        ]
    return [f"{r['method']} {r['ms/step']:.1f} ms" for r in data["rows"] if "ms/step" in r]


# ---- the table ----------------------------------------------------------------------------------------------------
def _fmt(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fast_path_cell(results: dict[str, Any]) -> str:
    """A run's fast paths in a few words: ``graph step passed, graph eval not used, attention fell back (0.03)``."""
    record = results.get("fast_paths") or {}
    cells = []
    for path, short in FAST_PATHS.items():
        entry = record.get(path)
        if entry:
            difference = entry.get("difference")
            extra = f" ({difference:.2g})" if entry["state"] == FELL_BACK and difference is not None else ""
            cells.append(f"{short} {entry['state']}{extra}")
    return ", ".join(cells) or "-"


def fast_path_table(cases: list[Case]) -> str:
    """Per fast path, over the training runs: how many passed their self-check, fell back (which), were switched
    off or not used, and the largest difference a check found."""
    runs = [c for c in cases if c.kind == "train" and c.results.get("fast_paths")]
    rows = []
    for path, short in FAST_PATHS.items():
        entries = [(c, c.results["fast_paths"][path]) for c in runs if path in c.results["fast_paths"]]
        count = {state: sum(e["state"] == state for _, e in entries) for state in ("passed", FELL_BACK, "off")}
        differences = [e["difference"] for _, e in entries if e.get("difference") is not None]
        fell = [c.name for c, e in entries if e["state"] == FELL_BACK]
        rows.append([
            f"{path} ({short})", count["passed"], count[FELL_BACK], count["off"],
            len(entries) - sum(count.values()), f"{max(differences):.2g}" if differences else "-",
            ", ".join(fell) or "-",
        ])  # fmt: skip
    headers = ["fast path", "passed", "fell back", "off", "not used", "largest difference", "fell back in"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def fell_back(cases: list[Case]) -> list[str]:
    """``case: path`` for every fast path that fell back in a training run."""
    return [
        f"{c.name}: {path}"
        for c in cases
        if c.kind == "train"
        for path, entry in (c.results.get("fast_paths") or {}).items()
        if entry.get("state") == FELL_BACK
    ]


def table(cases: list[Case]) -> str:
    rows = []
    for case in cases:
        timings = case.results.get("timings", {}) if case.kind in ("train", "reload") else {}
        detail = case.detail
        if case.kind == "train" and case.ok:
            peak, ms = timings.get("peak_memory_mb"), timings.get("ms_per_step")
            detail = (f"{ms:.1f} ms/step" if ms else "evaluated only") + (f", peak {peak:.0f} MB" if peak else "")
        detail = detail if len(detail) <= 400 else detail[:397] + "..."
        accuracy = case.results.get("accuracy") if case.kind in ("train", "reload") else None
        paths = fast_path_cell(case.results) if case.kind == "train" else "-"
        rows.append([case.name, case.precision, case.status, _fmt(case.seconds), _fmt(accuracy, 2), paths, detail])
    headers = ["case", "precision", "status", "seconds", "accuracy (%)", "fast paths", "detail"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def write_report(args: argparse.Namespace, cases: list[Case], start: float, header: str, final: bool) -> str:
    """Write ``table.md``, ``summary.json`` and ``seconds.json``; returns the text of ``table.md``."""
    counts = {s: sum(c.status == s for c in cases) for s in (OK, FAIL, TIMEOUT, SKIPPED)}
    pending = sum(c.status == "not run" for c in cases)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items()) + (f", {pending} not run yet" if pending else "")
    fell = fell_back(cases)
    summary += f"; fast paths fell back: {', '.join(fell)}" if fell else "; no fast path fell back"
    lines = [header, table(cases), fast_path_table(cases)]
    lines.append(f"{summary}; total {time.time() - start:.0f} s. Output: {args.output}")
    ratios = seconds_ratios(args, cases)
    if ratios:
        lines.append(
            f"seconds / CPU seconds ({os.path.basename(args.seconds_file)}): median {ratios[len(ratios) // 2]:.1f}, "
            f"max {ratios[-1]:.1f} over {len(ratios)} cases (timeouts: {args.timeout_ratio:g} x, at least "
            f"{args.min_timeout:.0f} s)"
        )
    text = "\n\n".join(lines)
    with open(os.path.join(args.output, "table.md"), "w") as f:
        f.write(text + "\n")
    rows = [
        {k: getattr(c, k) for k in ("name", "kind", "precision", "status", "detail", "seconds", "timeout")}
        | {"accuracy": c.results.get("accuracy") if c.kind in ("train", "reload") else None}
        | {"fast_paths": c.results.get("fast_paths") if c.kind == "train" else None}
        for c in cases
    ]
    with open(os.path.join(args.output, "summary.json"), "w") as f:
        json.dump({"header": header, "final": final, "counts": counts, "fell_back": fell, "cases": rows}, f, indent=1)
    seconds = {c.name: round(c.seconds, 1) for c in cases if c.kind == "train" and c.ok and c.seconds is not None}
    with open(os.path.join(args.output, "seconds.json"), "w") as f:
        json.dump({"device": args.device, "backbone": args.backbone, "jobs": args.jobs, "seconds": seconds}, f,
                  indent=1)  # fmt: skip
    if final and args.record_seconds:  # merged into what the file holds: a subset run updates its cases
        merged = {**load_seconds(args.seconds_file), **seconds}
        with open(args.seconds_file, "w") as f:
            json.dump({"measured": header, "seconds": dict(sorted(merged.items()))}, f, indent=1)
            f.write("\n")
    return text


def seconds_ratios(args: argparse.Namespace, cases: list[Case]) -> list[float]:
    """Sorted ratios of each finished training case's seconds to its CPU seconds (the timeouts' base)."""
    cpu = load_seconds(args.seconds_file)
    done = [c for c in cases if c.kind == "train" and c.ok and c.seconds and cpu.get(c.name)]
    return sorted(c.seconds / cpu[c.name] for c in done)


def archive(args: argparse.Namespace, path: str) -> None:
    """Pack ``--output`` into ``path`` (``.tar.gz``), checkpoints left out."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(args.output, arcname="gpu_check", filter=lambda t: None if ARCHIVE_SKIP.search(t.name) else t)


# ---- arguments ----------------------------------------------------------------------------------------------------
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument(
        "--backbone",
        choices=["vit-b16", "tiny-vit"],
        default=None,
        help="vit-b16: each trainer's ViT-B/16 config; tiny-vit: its demo_cpu.yaml (tiny random CLIP, 32 px images); "
        "default: vit-b16 on CUDA, tiny-vit on a CPU",
    )
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=None,
                        help="default: all on CUDA, fp32 and bf16 on a CPU")  # fmt: skip
    parser.add_argument("--only", nargs="+", default=[], metavar="PATTERN",
                        help="run only the cases whose name matches one of these shell patterns "
                        "('LAMM_MaPLe:*', '*:bf16', 'tests', 'bench:*', 'reload:*')")  # fmt: skip
    parser.add_argument("--skip", nargs="+", default=[], metavar="PATTERN", help="leave out matching cases")
    parser.add_argument("--list", action="store_true", help="print the selected case names and exit")
    parser.add_argument("--smoke", action="store_true", help="one tiny case (LAMM_CoOp:fp32) and its reload")
    parser.add_argument("--root", default=None, help="dataset root (synthetic set made here; default <output>/data)")
    parser.add_argument("--output", default=os.path.join(REPO, "output", "gpu_check"), help="output folder")
    parser.add_argument("--archive", default=None, metavar="FILE", help="pack the output folder into FILE (.tar.gz)")
    parser.add_argument("--shots", type=int, default=4, help="training images per class")
    parser.add_argument("--classes", type=int, default=10, help="classes of the synthetic set")
    parser.add_argument("--test-per-class", type=int, default=4, help="test images per class")
    parser.add_argument("--test-batch", type=int, default=8,
                        help="DATALOADER.TEST.BATCH_SIZE: small, so that evaluations repeat a batch shape")  # fmt: skip
    parser.add_argument("--workers", type=int, default=None,
                        help="DATALOADER.NUM_WORKERS (default: 2 on CUDA, 0 on CPU)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=None, help="training cases at once (default: 8 on CUDA, 1 on CPU)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per case, instead of the ratio rule")
    parser.add_argument(
        "--timeout-ratio",
        type=float,
        default=8.0,
        help="a case's timeout: this x its CPU seconds in --seconds-file (see the module docstring)",
    )
    parser.add_argument("--min-timeout", type=float, default=60.0, help="the shortest timeout of a case")
    parser.add_argument("--tests-timeout", type=float, default=300.0, help="seconds for the GPU tests")
    parser.add_argument("--bench-timeout", type=float, default=200.0, help="seconds for each benchmark")
    parser.add_argument("--official-precisions", nargs="+", default=["fp16"], help="bench.py official: both sides")
    parser.add_argument("--official-steps", type=int, default=5, help="bench.py official: timed steps per case")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds by which the whole check ends: a running case is stopped then, none starts "
                        f"with under {MIN_START:.0f} s left (default: 510 on CUDA, none on a CPU)")  # fmt: skip
    parser.add_argument("--seconds-file", default=SECONDS_FILE, help="CPU seconds per case, the base of the timeouts")
    parser.add_argument("--record-seconds", action="store_true",
                        help="write the seconds of the finished training cases to --seconds-file")  # fmt: skip
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every training run")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.backbone = args.backbone or ("vit-b16" if cuda else "tiny-vit")
    args.precisions = args.precisions or (list(PRECISIONS) if cuda else ["fp32", "bf16"])
    args.workers = (2 if cuda else 0) if args.workers is None else args.workers  # on a CPU, workers compete
    args.jobs = (8 if cuda else 1) if args.jobs is None else args.jobs
    args.deadline = (510.0 if cuda else float("inf")) if args.deadline is None else args.deadline
    if args.smoke:
        args.only = args.only or ["LAMM_CoOp:fp32", "reload:*"]
        args.precisions = ["fp32"] if args.precisions == ["fp32", "bf16"] else args.precisions
        args.classes, args.shots, args.test_per_class = min(args.classes, 4), min(args.shots, 2), 2
    args.output = os.path.abspath(args.output)
    args.root = os.path.abspath(args.root or os.path.join(args.output, "data"))
    if args.opts and args.opts[0] == "--":
        args.opts = args.opts[1:]
    return args


# ---- the check ----------------------------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> int:
    start = time.time()
    args = parse_args(argv)
    header = f"# GPU check ({args.device}, backbone {args.backbone})"
    train_cases, other_cases = build_cases(args, registry_trainers())
    if args.list:
        print("\n".join(c.name for c in train_cases + other_cases))
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("No CUDA device: run on a machine with a GPU, or check the logic with --device cpu.")
            return 2
        header += f"\n\ndevice: {torch.cuda.get_device_name()}, torch {torch.__version__}, {os.cpu_count()} CPUs"
    cpu_seconds = load_seconds(args.seconds_file)
    os.makedirs(os.path.join(args.output, "runs"), exist_ok=True)
    cases: list[Case] = list(train_cases)
    reload_wanted = selected(args, "reload:*")
    print(header, flush=True)
    print(f"{len(train_cases)} training cases, {args.jobs} at a time; then {[c.name for c in other_cases]}", flush=True)

    def left() -> float:
        """Seconds until ``--deadline``; a case gets at most this long, and none starts with under 10 s left."""
        return args.deadline - (time.time() - start)

    def timed(case: Case, run) -> None:
        began = time.time()
        run(args, case)
        case.seconds = time.time() - began

    # The GPU tests (tiny CLIP, not timed) run beside the training cases; the benchmarks run alone afterwards.
    tests = [c for c in other_cases if c.kind == "tests"]
    benches = [c for c in other_cases if c.kind == "bench"]
    threads = []
    for case in tests:
        cases.append(case)
        case.timeout = min(args.tests_timeout, left())
        threads.append(threading.Thread(target=timed, args=(case, run_tests), daemon=True))
        threads[-1].start()

    # Training cases fork from a server that imported train.py once (no CUDA there), each with its own CUDA context.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["train"])
    queue, running, reload = list(train_cases), [], None
    while queue or running:
        # The first case runs alone: it writes the synthetic set and its few-shot split, which the others then read.
        limit = args.jobs if any(c.seconds is not None for c in cases if c.kind == "train") else 1
        while queue and len(running) < limit:
            case = queue.pop(0)
            if left() < MIN_START:
                case.finish(SKIPPED, f"--deadline {args.deadline:.0f} s")
                continue
            case.timeout = min(case.timeout, left())
            running.append(Running(ctx, case))
        for item in [r for r in running if r.poll()]:
            running.remove(item)
            case = item.case
            print(f"{case.name}: {case.status} ({case.seconds:.1f} s) {case.detail}", flush=True)
            write_report(args, cases, start, header, final=False)
            if reload is None and reload_wanted and case.kind == "train" and case.ok and case.results.get("accuracy"):
                reload = reload_case(args, case, cpu_seconds)
                cases.append(reload)
                queue.insert(0, reload)
        time.sleep(0.2)
    if reload is None and reload_wanted:
        cases.append(Case("reload:-", "reload", status=FAIL, detail="no finished training run to reload"))
    for thread, case in zip(threads, tests):
        thread.join()
        print(f"{case.name}: {case.status} ({case.seconds:.1f} s) {case.detail}", flush=True)

    for case in benches:
        cases.append(case)
        if left() < MIN_START:
            case.finish(SKIPPED, f"--deadline {args.deadline:.0f} s")
            continue
        case.timeout = min(args.bench_timeout, left())
        print(f"{case.name} ...", end=" ", flush=True)
        timed(case, run_bench)
        print(f"{case.status} ({case.seconds:.1f} s) {case.detail}", flush=True)
        write_report(args, cases, start, header, final=False)

    text = write_report(args, cases, start, header, final=True)
    if args.archive:
        archive(args, args.archive)
    print("\n" + text, flush=True)
    return 0 if all(case.ok for case in cases) and not fell_back(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
