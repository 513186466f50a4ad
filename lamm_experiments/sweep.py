"""Benchmark sweeps: the job list of a table, run so that failures, restarts and several workers are safe.

A *job* is one or more ``scripts/lamm/*.sh`` calls (a base-to-new job trains, then tests; a cross-dataset job
trains on the source, then tests every target). A job is finished when every step's folder holds
``results.json``; finished jobs are skipped, so rerunning the same command resumes a sweep.

* A failing step is recorded (``sweep_failed.json`` with its console log beside it) and the sweep goes on; the
  sweep exits with 1 at the end, after a summary of done / skipped / failed jobs.
* Several workers (``--workers N`` or ``--gpus 0,1,...``: one worker per GPU, pinned with
  ``CUDA_VISIBLE_DEVICES``) take jobs from the same list; an atomic lock file in the job's folder (created with
  ``O_CREAT | O_EXCL``, naming its owner's host and pid and its job's process group) makes sure no job runs twice.
  A lock of this host whose runner is dead and whose job has no live process is stale and taken over; a job
  folder whose ``train.py`` lock (``run.lock``) is held by a live process is not started.
* Jobs die with their runner: each step runs in a process group of its own under a guard that stops it when the
  runner dies, ``kill -9`` included, or is stopped by SIGTERM, SIGINT or SIGHUP (:mod:`lamm_experiments.jobproc`);
  a stopped sweep exits with 128 + the signal's number, and rerunning it resumes.
* ``--engine submitit`` submits one array job per sweep to SLURM (or submitit's ``local``/``debug`` executors),
  one task per unfinished job; rerunning the same command submits only what is still unfinished.

Only the standard library; ``submitit`` is imported when that engine is used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from lamm_experiments import jobproc, protocols
from lamm_experiments.jobproc import group_alive
from lamm_experiments.results import usable
from lamm_plugin.errors import UserError, run_main
from lamm_plugin.files import write_text
from lamm_plugin.layout import RESULTS_FILENAME
from lamm_plugin.run_lock import FolderLock, RunLock, owner_alive

__all__ = [
    "Job",
    "Step",
    "JobLock",
    "SweepStopped",
    "build_jobs",
    "build_protocol_jobs",
    "run_job",
    "run_worker",
    "main",
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO, "scripts", "lamm")
LOCK_FILENAME = "sweep.lock"
FAILED_FILENAME = "sweep_failed.json"
CONSOLE_FILENAME = "console.txt"
BENCHMARKS = ("fewshot", "base2new", "xd")
#: The tables a protocol sweep can fill: the benchmarks, and the continual protocols (``continual``).
PROTOCOL_BENCHMARKS = (*BENCHMARKS, "continual")
#: Read by the trainers into ``results.json`` (``"protocol": {"name", "method"}``); unset for a run started by hand.
PROTOCOL_ENV = "LAMM_PROTOCOL"
PROTOCOL_METHOD_ENV = "LAMM_PROTOCOL_METHOD"

ELEVEN = "caltech101 dtd eurosat fgvc_aircraft food101 oxford_flowers oxford_pets stanford_cars sun397 ucf101 imagenet"
XD_TARGETS = ELEVEN.replace(" imagenet", "") + " imagenetv2 imagenet_sketch imagenet_a imagenet_r"
# Environment read by the sweep and passed on to the job scripts (see scripts/lamm/common.sh).
DEFAULTS = {
    "TRAINER": "LAMM_CoOp",
    "CFG": "vit_b16_ep50_ctxv1",
    "SEEDS": "1 2 3",
    "DATASETS": ELEVEN,
    "SHOTS_LIST": "1 2 4 8 16",
    "SHOTS": "16",
    "SOURCE": "imagenet",
    "XD_TARGETS": XD_TARGETS,
    "OUTPUT": "./output",
    "DATA": "./data",
}


@dataclass
class Step:
    """One script call; finished when ``out_dir/results.json`` exists and is usable (:func:`results.usable`)."""

    argv: list[str]
    out_dir: str

    def finished(self) -> bool:
        # A damaged results.json (empty, truncated, no finite accuracy) is no finished job: it runs again.
        return usable(os.path.join(self.out_dir, RESULTS_FILENAME))


@dataclass
class Job:
    """Steps run in order; when the first fails, the others (which need its model) are not run."""

    name: str
    steps: list[Step]
    env: dict[str, str] = field(default_factory=dict)
    #: The protocol's choice for this job (:class:`lamm_experiments.protocols.Choice`); None outside a protocol.
    choice: Optional[protocols.Choice] = None

    @property
    def folder(self) -> str:
        return self.steps[0].out_dir

    def finished(self) -> bool:
        return all(step.finished() for step in self.steps)

    def failed_since(self, since: float) -> bool:
        """True when this job failed in the current sweep (started at ``since``)."""
        path = os.path.join(self.folder, FAILED_FILENAME)
        try:
            return os.path.getmtime(path) >= since
        except OSError:
            return False


def _words(env: dict[str, str], key: str) -> list[str]:
    return env.get(key, DEFAULTS[key]).split()


def build_jobs(bench: str, opts: Sequence[str] = (), environ: Optional[dict[str, str]] = None) -> list[Job]:
    """Every job of ``bench`` (``fewshot``, ``base2new``, ``xd``), in the order of ``sweep.sh``: seed by seed.

    ``opts`` (``KEY VALUE`` config overrides) are appended to every job; ``environ`` (default ``os.environ``)
    supplies ``TRAINER``, ``CFG``, ``SEEDS``, ``DATASETS``, ``SHOTS_LIST``, ``SHOTS``, ``SOURCE``, ``XD_TARGETS``,
    ``OUTPUT`` and ``DATA`` as documented in ``scripts/lamm/sweep.sh``.
    """
    if bench not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {bench!r}: use one of {', '.join(BENCHMARKS)} (continual: sweep.sh)")
    if len(opts) % 2:
        raise ValueError(f"Config overrides come in KEY VALUE pairs; got an odd number: {' '.join(opts)}")
    env = dict(os.environ if environ is None else environ)
    check_environment(bench, env)
    get = {key: env.get(key, default) for key, default in DEFAULTS.items()}
    trainer, cfg, out, shots = get["TRAINER"], get["CFG"], get["OUTPUT"], get["SHOTS"]
    job_env = {key: get[key] for key in ("TRAINER", "CFG", "OUTPUT", "DATA", "SHOTS", "SOURCE")}
    opts = list(opts)
    tail = f"{trainer}/{cfg}"

    def script(name: str, *args: str) -> list[str]:
        return ["bash", os.path.join(SCRIPTS, name), *args, *opts]

    jobs = []
    for seed in _words(env, "SEEDS"):
        if bench == "fewshot":
            for k in _words(env, "SHOTS_LIST"):
                for ds in _words(env, "DATASETS"):
                    step = Step(script("fewshot.sh", ds, k, seed), f"{out}/fewshot/{ds}/shots_{k}/{tail}/seed{seed}")
                    jobs.append(Job(f"fewshot {ds} shots={k} {tail} seed={seed}", [step], job_env))
        elif bench == "base2new":
            for ds in _words(env, "DATASETS"):
                common = f"{ds}/shots_{shots}/{tail}/seed{seed}"
                steps = [
                    Step(script("base2new_train.sh", ds, seed), f"{out}/base2new/train_base/{common}"),
                    Step(script("base2new_test.sh", ds, seed), f"{out}/base2new/test_new/{common}"),
                ]
                jobs.append(Job(f"base2new {ds} {tail} seed={seed}", steps, job_env))
        else:
            source = get["SOURCE"]
            steps = [Step(script("xd_train.sh", seed), f"{out}/xd/train/{source}/shots_{shots}/{tail}/seed{seed}")]
            for ds in _words(env, "XD_TARGETS"):
                steps.append(
                    Step(script("xd_test.sh", ds, seed), f"{out}/xd/test/{ds}/shots_{shots}/{tail}/seed{seed}")
                )
            jobs.append(Job(f"xd {source} -> {len(steps) - 1} targets {tail} seed={seed}", steps, job_env))
    return jobs


def dataset_config(name: str, env: dict[str, str]) -> Optional[str]:
    """The dataset yaml the job scripts use for ``name`` (``DATASET_CONFIGS`` folders first, as
    ``scripts/lamm/common.sh``), or None when there is none."""
    folders = [d for d in env.get("DATASET_CONFIGS", "").split(":") if d] + [os.path.join(REPO, "configs", "datasets")]
    return next((p for p in (os.path.join(d, f"{name}.yaml") for d in folders) if os.path.isfile(p)), None)


def check_environment(bench: str, env: dict[str, str], configs: bool = False) -> None:
    """What the jobs of a sweep would find wrong first: numbers that are no numbers (checked before any job), and
    with ``configs`` (``--dry-run``; a real sweep records each such job as failed and goes on) dataset and method
    configs that do not exist.

    Raises:
        UserError: Naming the variable or file and what to do.
    """
    numbers = ["SEEDS", "SHOTS"] + (["SHOTS_LIST"] if bench == "fewshot" else [])
    for key in numbers:
        bad = [w for w in _words(env, key) if not w.lstrip("-").isdigit()]
        if bad:
            raise UserError(f"{key}={env.get(key, DEFAULTS[key])!r}: {' '.join(bad)} is not a whole number.")
    if not configs:
        return
    datasets = _words(env, "XD_TARGETS") + [env.get("SOURCE", DEFAULTS["SOURCE"])] if bench == "xd" else []
    missing = [ds for ds in dict.fromkeys(datasets or _words(env, "DATASETS")) if dataset_config(ds, env) is None]
    if missing:
        where = f"DATASET_CONFIGS={env['DATASET_CONFIGS']} or " if env.get("DATASET_CONFIGS") else ""
        raise UserError(
            f"No dataset config {', '.join(f'{ds}.yaml' for ds in missing)} in {where}{REPO}/configs/datasets/: name "
            "a dataset of configs/datasets/, or put NAME.yaml (e.g. a copy of configs/datasets/folder.yaml) in a "
            "folder named by DATASET_CONFIGS."
        )
    trainer, cfg = env.get("TRAINER", DEFAULTS["TRAINER"]), env.get("CFG", DEFAULTS["CFG"])
    config = os.path.join(REPO, "configs", "trainers", trainer, f"{cfg}.yaml")
    if not os.path.isfile(config):
        raise UserError(f"TRAINER={trainer} CFG={cfg}: no config {config}; name a config of configs/trainers/.")


def build_protocol_jobs(
    bench: str,
    protocol: str,
    methods: Optional[Sequence[str]] = None,
    opts: Sequence[str] = (),
    environ: Optional[dict[str, str]] = None,
) -> list[Job]:
    """Every job of ``protocol`` (:mod:`lamm_experiments.protocols`) for ``bench``: its methods (or ``methods``),
    datasets, shot counts and seeds, each with the config and overrides the protocol gives.

    The runs go under ``OUTPUT/<protocol>/`` (the folders of ``build_jobs`` below it), so runs of two protocols
    never share a folder; a cross-dataset protocol that tests another protocol's model (``model_from``) starts its
    job with that protocol's run (skipped when it is finished). ``SEEDS``, ``DATASETS``, ``SHOTS_LIST`` and
    ``XD_TARGETS`` from ``environ`` narrow the protocol's own (a value outside the protocol is refused); ``opts``
    come after the protocol's overrides.
    """
    proto = protocols.get_protocol(protocol)
    if bench != proto.kind:
        raise ValueError(
            f"protocol {protocol!r} belongs to the {proto.kind} table (run it with 'sweep.sh {proto.kind} --protocol "
            f"{protocol}'), not to {bench}"
        )
    env = dict(os.environ if environ is None else environ)

    def narrowed(key: str, allowed: Sequence[Any]) -> list[str]:
        words = env.get(key, "").split() or [str(a) for a in allowed]
        outside = [w for w in words if w not in {str(a) for a in allowed}]
        if outside:
            raise ValueError(
                f"{key}={' '.join(outside)} is outside protocol {protocol!r} ({' '.join(map(str, allowed))})"
            )
        return words

    names = list(methods) if methods else proto.method_names()
    plans = [proto.method(name) for name in names]  # KeyError names the protocol's methods
    seeds = narrowed("SEEDS", proto.seeds)
    datasets = narrowed("DATASETS", proto.datasets)
    shots_list = narrowed("SHOTS_LIST" if bench == "fewshot" else "SHOTS", proto.shots)
    targets = narrowed("XD_TARGETS", proto.targets) if proto.targets else []
    out = os.path.join(env.get("OUTPUT", DEFAULTS["OUTPUT"]), proto.name)
    jobs = []
    for plan in plans:
        if plan.eval_only:
            jobs.extend(_eval_only_jobs(proto, plan, [*datasets, *targets], shots_list, out, env, opts))
            continue
        for seed in seeds:
            for k in shots_list:
                for ds in datasets:
                    choice = protocols.resolve(proto.name, plan.name, ds, int(k))
                    job_env = {**env, "TRAINER": choice.trainer, "CFG": choice.config, "OUTPUT": out, "SHOTS": k,
                               "SHOTS_LIST": k, "SEEDS": seed, "DATASETS": ds, "SOURCE": ds,
                               "XD_TARGETS": " ".join(targets), **dict(choice.env)}  # fmt: skip
                    extra = [*choice.opts(), *opts]
                    tail = f"{ds}/shots_{k}/{choice.trainer}/{choice.config}"
                    if proto.model_from:
                        built = [_tested_model_job(proto, plan.name, ds, k, seed, targets, out, env, opts)]
                    elif bench == "continual" and proto.sets:
                        steps = [
                            Step(
                                ["bash", os.path.join(SCRIPTS, "twoset_train.sh"), ds, part, seed, *extra],
                                f"{out}/twoset/{part}/{tail}/seed{seed}",
                            )
                            for part in proto.sets
                        ]
                        built = [Job(f"twoset {ds} {choice.trainer}/{choice.config} seed={seed}", steps)]
                    elif bench == "continual":
                        shared = job_env.get("SHARED") or "freeze"
                        step = Step(
                            ["bash", os.path.join(SCRIPTS, "continual.sh"), ds, seed, *extra],
                            f"{out}/continual/{tail}/shared_{shared}/seed{seed}",
                        )
                        built = [Job(f"continual {ds} {choice.trainer}/{choice.config} seed={seed}", [step])]
                    else:
                        built = build_jobs(bench, extra, job_env)
                    for job in built:
                        job.name = f"{proto.name} {plan.name}: {job.name}"
                        base = job.env or {
                            key: job_env.get(key, DEFAULTS.get(key, ""))
                            for key in ("TRAINER", "CFG", "OUTPUT", "DATA", "SHOTS")
                        }
                        job.env = {**base, **dict(choice.env), PROTOCOL_ENV: proto.name,
                                   PROTOCOL_METHOD_ENV: plan.name}  # fmt: skip
                        # a tested model's job names the protocol's own source before the model's
                        job.choice = (
                            replace(choice, sources=(proto.source, *choice.sources)) if proto.model_from else choice
                        )
                        jobs.append(job)
    return jobs


def _tested_model_job(
    proto: protocols.Protocol,
    method: str,
    source: str,
    shots: str,
    seed: str,
    targets: Sequence[str],
    out: str,
    env: dict[str, str],
    opts: Sequence[str],
) -> Job:
    """A job of a protocol that tests another protocol's model (``model_from``): that protocol's few-shot run on
    the source (its own folder, protocol and overrides; skipped when finished), then ``xd_test.sh`` on every target
    with that run as ``MODEL_DIR`` at the protocol's ``load_epoch``."""
    src = protocols.resolve(proto.model_from, method, source, int(shots))
    src_out = os.path.join(os.path.dirname(out), proto.model_from)
    model_dir = f"{src_out}/fewshot/{source}/shots_{shots}/{src.trainer}/{src.config}/seed{seed}"
    train_env = [f"OUTPUT={src_out}", f"{PROTOCOL_ENV}={proto.model_from}", f"{PROTOCOL_METHOD_ENV}={method}"]
    steps = [Step(["env", *train_env, "bash", os.path.join(SCRIPTS, "fewshot.sh"), source, shots, seed,
                   *src.opts(), *opts], model_dir)]  # fmt: skip
    tail = f"shots_{shots}/{src.trainer}/{src.config}/seed{seed}"
    for target in targets:
        argv = ["bash", os.path.join(SCRIPTS, "xd_test.sh"), target, seed, *src.opts(), *opts]
        steps.append(Step(argv, f"{out}/xd/test/{target}/{tail}"))
    job_env = {"TRAINER": src.trainer, "CFG": src.config, "OUTPUT": out, "DATA": env.get("DATA", DEFAULTS["DATA"]),
               "SHOTS": shots, "SOURCE": source, "MODEL_DIR": model_dir,
               "LOADEP": str(proto.load_epoch or "")}  # fmt: skip
    return Job(f"xd {proto.model_from} model {source} -> {len(targets)} targets {src.trainer}/{src.config} "
               f"seed={seed}", steps, job_env)  # fmt: skip


#: The class subsets an evaluation-only method is tested on, per table (folders ``zeroshot/<part>/...``): the
#: folder part and ``DATASET.SUBSAMPLE_CLASSES``; a cross-dataset table's source and targets are all classes.
EVAL_ONLY_SUBSETS = {
    "fewshot": (("all", "all"),),
    "base2new": (("base", "base"), ("new", "new")),
    "xd": (("xd_source", "all"), ("xd_target", "all")),
}


def _eval_only_jobs(
    proto: protocols.Protocol,
    plan: protocols.MethodPlan,
    datasets: Sequence[str],
    shots_list: Sequence[str],
    out: str,
    env: dict[str, str],
    opts: Sequence[str],
) -> list[Job]:
    """The jobs of a method that trains nothing (zero-shot CLIP): one per dataset, whatever the seeds and shot
    counts, each evaluating the table's class subsets with ``scripts/zsclip/zeroshot.sh`` (``SUB`` names the
    subset, ``PART`` the folder; a cross-dataset table evaluates its source once and each target once)."""
    if proto.kind not in EVAL_ONLY_SUBSETS:
        raise ValueError(f"protocol {proto.name!r}: an evaluation-only method has no {proto.kind} jobs")
    script = os.path.join(os.path.dirname(SCRIPTS), "zsclip", "zeroshot.sh")
    jobs = []
    for ds in datasets:
        parts = EVAL_ONLY_SUBSETS[proto.kind]
        if proto.kind == "xd":
            parts = parts[:1] if ds in proto.datasets else parts[1:]
        choice = protocols.resolve(proto.name, plan.name, proto.datasets[0] if proto.targets else ds,
                                   int(shots_list[0]))  # fmt: skip
        extra = [*choice.opts(), *opts]
        steps = [
            Step(["env", f"SUB={sub}", f"PART={part}", "bash", script, ds, *extra],
                 f"{out}/zeroshot/{part}/{ds}/{choice.trainer}/{choice.config}")
            for part, sub in parts
        ]  # fmt: skip
        job_env = {"DATA": env.get("DATA", DEFAULTS["DATA"]), "TRAINER": choice.trainer, "CFG": choice.config,
                   "OUTPUT": out, PROTOCOL_ENV: proto.name, PROTOCOL_METHOD_ENV: plan.name}  # fmt: skip
        name = f"{proto.name} {plan.name}: zeroshot {ds} {choice.trainer}/{choice.config}"
        jobs.append(Job(name, steps, job_env, choice))
    return jobs


def describe(job: Job) -> list[str]:
    """The lines ``--dry-run`` prints under a protocol job: trainer, config, overrides and their sources."""
    c = job.choice
    if c is None:
        return []
    lines = [f"    protocol {c.protocol}, method {c.method}: {c.trainer}/{c.config}"]
    if c.overrides:
        lines.append(f"    overrides: {' '.join(c.opts())}")
    if c.env:
        lines.append(f"    environment: {' '.join(f'{k}={v}' for k, v in c.env)}")
    lines.append(f"    source: {'; '.join(dict.fromkeys(str(s) for s in c.sources))}")
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Locks


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


class JobLock(FolderLock):
    """An exclusive lock file ``<folder>/sweep.lock`` holding ``{"host", "pid", "time", "command", "job_pgid"}``.

    ``pid`` is the runner (the sweep worker), ``job_pgid`` the process group of the job it started
    (:mod:`lamm_experiments.jobproc`). ``acquire()`` is atomic (``O_CREAT | O_EXCL``). A lock of this host is stale
    when its runner is dead *and* no process of its job's group lives: a job whose runner was killed is not started
    a second time while it still runs. Locks of other hosts are never broken (their pids mean nothing here):
    delete the file by hand when such a worker died.
    """

    def __init__(self, folder: str) -> None:
        super().__init__(folder, LOCK_FILENAME)

    def stale(self) -> bool:
        """True when neither the runner nor a process of its job lives (see the class docstring)."""
        owner = self.owner()
        if owner is None:
            return super().stale()  # being written right now (young), or damaged (old)
        if owner.get("host") != socket.gethostname():
            return False
        return not owner_alive(owner) and not group_alive(_int(owner.get("job_pgid")))

    def set_job(self, pgid: int) -> None:
        """Record the process group of the job started under this lock (the file is replaced atomically)."""
        owner = self.owner()
        if not self.held or owner is None:
            return
        tmp = f"{self.path}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({**owner, "job_pgid": pgid}, f)
        os.replace(tmp, self.path)

    def describe(self) -> str:
        """Who holds the lock, for the sweep's listing: the runner, and its job when the runner is gone."""
        owner = self.owner()
        if owner is None:
            return f"an unreadable lock file {self.path} (being written, or damaged: taken over when a minute old)"
        text = self.describe_owner()
        pgid = _int(owner.get("job_pgid"))
        here = owner.get("host") == socket.gethostname()
        if here and not owner_alive(owner) and group_alive(pgid):
            return f"{text}: that sweep is gone, its job (process group {pgid}) is still running and being stopped"
        return f"{text}; lock file {self.path}: if that process is gone (its machine is down), delete the file"


def _run_in_progress(folder: str) -> Optional[str]:
    """The owner of a live ``train.py`` lock (``run.lock``) in ``folder``, or None (a train.py that outlived a
    runner without job records, or one started by hand)."""
    run = RunLock(folder)
    owner = run.owner()
    if owner is None:
        return None
    if owner.get("host") == socket.gethostname() and not owner_alive(owner):
        return None
    return f"train.py ({run.describe_owner()}; lock file {run.path})"


class SweepStopped(Exception):
    """A stop signal reached the sweep; its running jobs were stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# ---------------------------------------------------------------------------------------------------------------
# Running


def run_job(job: Job, since: Optional[float] = None) -> dict[str, Any]:
    """Run ``job`` under its lock. Returns ``{"name", "status", "seconds", "log"?, "owner"?}``.

    status: ``done`` (ran and finished), ``skipped`` (already finished), ``taken`` (another worker holds its lock,
    its job still runs, or it failed earlier in this sweep) or ``failed`` (``log``: the console file of the failing
    step). Each step runs under a guard that stops it when this process dies or is stopped (:mod:`.jobproc`).

    Raises:
        SweepStopped: A stop signal came while a step ran (the step was stopped; nothing is recorded as failed).
    """
    since = time.time() if since is None else since
    if job.finished():
        return {"name": job.name, "status": "skipped", "seconds": 0.0}
    lock = JobLock(job.folder)
    if not lock.acquire():
        return {"name": job.name, "status": "taken", "seconds": 0.0, "owner": lock.describe()}
    start = time.time()
    try:
        if job.finished():  # finished by another worker between the check and the lock
            return {"name": job.name, "status": "skipped", "seconds": 0.0}
        if job.failed_since(since):
            return {"name": job.name, "status": "taken", "seconds": 0.0, "owner": "failed earlier in this sweep"}
        for step in job.steps:
            running = _run_in_progress(step.out_dir)
            if running is not None:
                return {"name": job.name, "status": "taken", "seconds": 0.0, "owner": running}
        failure = None
        for i, step in enumerate(job.steps):
            if step.finished():
                continue
            os.makedirs(step.out_dir, exist_ok=True)
            log = os.path.join(step.out_dir, CONSOLE_FILENAME)
            with open(log, "a") as f:
                f.write(f"$ {' '.join(step.argv)}\n")
                f.flush()
                guard = jobproc.start_job(step.argv, {**os.environ, **job.env}, f)
                lock.set_job(guard.pid)
                try:
                    rc = guard.wait()
                finally:
                    jobproc.finished(guard)
            if jobproc.stopped_by() is not None:
                raise SweepStopped(jobproc.stopped_by())
            if rc != 0 or not step.finished():
                failure = failure or {"log": log, "returncode": rc, "step": " ".join(step.argv)}
                if i == 0:
                    break  # the later steps need this step's model
        seconds = time.time() - start
        if failure is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(job.folder, FAILED_FILENAME))
            return {"name": job.name, "status": "done", "seconds": seconds}
        record = {"name": job.name, "status": "failed", "seconds": seconds, **failure, "time": time.time()}
        write_text(os.path.join(job.folder, FAILED_FILENAME), json.dumps(record, indent=2))
        return record
    finally:
        lock.release()


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def run_worker(jobs: Sequence[Job], since: float, label: str = "") -> list[dict[str, Any]]:
    """Take the jobs one by one (skipping finished and locked ones), printing ``[i/N]`` progress and an ETA."""
    outcomes = []
    durations: list[float] = []
    n = len(jobs)
    prefix = f"[{label}] " if label else ""
    for i, job in enumerate(jobs, 1):
        if jobproc.stopped_by() is not None:
            raise SweepStopped(jobproc.stopped_by())
        result = run_job(job, since)
        outcomes.append(result)
        status = result["status"]
        if status in ("done", "failed"):
            durations.append(result["seconds"])
        left = sum(not j.finished() for j in jobs[i:])
        eta = f", ETA {_fmt_time(left * sum(durations) / len(durations))}" if durations and left else ""
        what = {"done": f"done in {result['seconds']:.0f} s", "skipped": "already finished, skipped"}.get(status, "")
        if status == "taken":
            what = f"taken by {result.get('owner')}"
        elif status == "failed":
            what = f"FAILED (exit {result['returncode']}), log: {result['log']}"
        print(f"{prefix}[{i}/{n}] {job.name}: {what}{eta}", flush=True)
        if status == "failed":
            print(_tail(result["log"]).rstrip(), flush=True)
    return outcomes


def merge(jobs: Sequence[Job], outcomes: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """One status per job (a job run by one worker and seen as taken by others counts once, as run)."""
    rank = {"failed": 3, "done": 2, "skipped": 1, "taken": 0}
    best: dict[str, dict[str, Any]] = {}
    for o in outcomes:
        if o["name"] not in best or rank[o["status"]] > rank[best[o["name"]]["status"]]:
            best[o["name"]] = o
    summary: dict[str, list[dict[str, Any]]] = {"done": [], "skipped": [], "failed": [], "not run": []}
    for job in jobs:
        o = best.get(job.name)
        if o is None or o["status"] == "taken":
            summary["not run"].append(o or {"name": job.name})
        else:
            summary[o["status"]].append(o)
    return summary


def print_summary(summary: dict[str, list[dict[str, Any]]], seconds: float) -> int:
    counts = ", ".join(f"{len(v)} {k}" for k, v in summary.items() if v or k != "not run")
    print(f"Sweep summary: {counts} ({_fmt_time(seconds)})", flush=True)
    for o in summary["failed"]:
        print(f"  failed: {o['name']}\n    log: {o['log']}", flush=True)
    for o in summary["not run"]:
        print(f"  not run: {o['name']} (locked by {o.get('owner')})", flush=True)
    return 1 if summary["failed"] or summary["not run"] else 0


def _spawn_workers(args: argparse.Namespace, argv: Sequence[str], since: float) -> list[dict[str, Any]]:
    devices = [d for d in args.gpus.split(",") if d] if args.gpus else [None] * args.workers
    procs = []
    for k, device in enumerate(devices):
        out = os.path.join(args.state_dir, f"worker{k}_{os.getpid()}.json")
        env = dict(os.environ)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        label = f"w{k}" + (f" gpu{device}" if device is not None else "")
        cmd = [
            sys.executable,
            os.path.join(REPO, "scripts", "sweep.py"),
            *argv,
            "--_worker",
            label,
            "--_since",
            str(since),
        ]
        cmd += ["--_outcomes", out, "--_parent", str(os.getpid()), "--workers", "1", "--gpus", ""]
        proc = subprocess.Popen(cmd, env={**env, "PYTHONPATH": _pythonpath(env)})
        jobproc.stop_with_me(proc)
        procs.append((proc, out))
    outcomes = []
    for proc, out in procs:
        proc.wait()
        if jobproc.stopped_by() is not None:
            continue
        try:
            with open(out) as f:
                outcomes += json.load(f)
            os.remove(out)
        except (OSError, ValueError, TypeError) as e:  # a worker killed before or while writing them
            print(f"warning: a worker exited with {proc.returncode} without its outcomes ({out}: {e}); its jobs "
                  "count as not run", file=sys.stderr)  # fmt: skip
    if jobproc.stopped_by() is not None:
        raise SweepStopped(jobproc.stopped_by())
    return outcomes


def _pythonpath(env: dict[str, str]) -> str:
    parts = [REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(parts)


def _submitit(args: argparse.Namespace, jobs: Sequence[Job], since: float) -> list[dict[str, Any]]:
    try:
        import submitit
    except ImportError:
        raise SystemExit("--engine submitit needs submitit: pip install submitit") from None
    todo = [job for job in jobs if not job.finished()]
    outcomes = [{"name": j.name, "status": "skipped", "seconds": 0.0} for j in jobs if j.finished()]
    if not todo:
        return outcomes
    executor = submitit.AutoExecutor(folder=args.submitit_folder, cluster=args.cluster)
    params: dict[str, Any] = {"timeout_min": args.timeout_min, "name": "lamm_sweep"}
    if args.cluster in (None, "slurm"):
        params.update(gpus_per_node=args.gpus_per_job, cpus_per_task=args.cpus_per_job)
        params["slurm_array_parallelism"] = args.array_parallelism
        if args.partition:
            params["slurm_partition"] = args.partition
    executor.update_parameters(**params)
    handles = executor.map_array(run_job, todo, [since] * len(todo))
    print(f"Submitted {len(handles)} jobs ({handles[0].job_id.split('_')[0]}), logs in {args.submitit_folder}")
    if args.no_wait:
        return outcomes + [{"name": j.name, "status": "taken", "owner": h.job_id} for j, h in zip(todo, handles)]
    for i, (job, handle) in enumerate(zip(todo, handles), 1):
        try:
            result = handle.result()
        except Exception as e:  # the task itself crashed (node failure, timeout): record it, keep waiting
            result = {
                "name": job.name,
                "status": "failed",
                "seconds": 0.0,
                "returncode": -1,
                "log": str(handle.paths.stderr),
            }
            print(f"task error: {str(e).splitlines()[-1] if str(e) else e!r}", file=sys.stderr)
        outcomes.append(result)
        print(f"[{i}/{len(todo)}] {job.name}: {result['status']}", flush=True)
    return outcomes


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``scripts/lamm/sweep.sh``: the sweep under the one error handler; returns the exit status."""
    return run_main(lambda: _main(argv), argv)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="scripts/lamm/sweep.sh",
        description="Run every job of a benchmark table (see docs/RUN.md, 'Sweeps').",
        epilog="Environment: TRAINER, CFG, DATA, OUTPUT, SEEDS, DATASETS, SHOTS_LIST, SHOTS, SOURCE, XD_TARGETS, "
        "DRY_RUN=1, SWEEP_STOP_GRACE (seconds a stopped job gets before it is killed, default 60).",
    )
    parser.add_argument("bench", choices=PROTOCOL_BENCHMARKS, help="continual: only with --protocol")
    parser.add_argument("opts", nargs="*", help="KEY VALUE config overrides passed to every job")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs and their state, run nothing")
    parser.add_argument(
        "--protocol",
        default=os.environ.get("SWEEP_PROTOCOL", ""),
        help="run a protocol's jobs (lamm_experiments/protocols.py; TRAINER and CFG come from it)",
    )
    parser.add_argument("--methods", default="", help="with --protocol: comma-separated methods (default: all)")
    parser.add_argument("--workers", type=int, default=1, help="parallel workers on this machine (CPU)")
    parser.add_argument("--gpus", default=os.environ.get("GPUS", ""), help="comma-separated GPU ids: one worker each")
    parser.add_argument("--engine", choices=("local", "submitit"), default="local")
    parser.add_argument("--cluster", default=None, help="submitit cluster: slurm (default: auto), local, debug")
    parser.add_argument("--partition", default=None, help="SLURM partition")
    parser.add_argument("--timeout-min", type=int, default=24 * 60, help="submitit: time limit of one job")
    parser.add_argument("--gpus-per-job", type=int, default=1)
    parser.add_argument("--cpus-per-job", type=int, default=8)
    parser.add_argument("--array-parallelism", type=int, default=64, help="SLURM: jobs of the array at once")
    parser.add_argument("--no-wait", action="store_true", help="submitit: submit and return")
    parser.add_argument("--_worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--_since", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_outcomes", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_parent", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_intermixed_args(argv)
    try:
        if args.protocol:
            methods = [m.strip() for m in args.methods.split(",") if m.strip()]
            jobs = build_protocol_jobs(args.bench, args.protocol, methods, args.opts)
        elif args.bench == "continual":
            raise ValueError("continual sweeps without --protocol run through scripts/lamm/sweep.sh continual")
        else:
            jobs = build_jobs(args.bench, args.opts)
    except UserError:
        raise
    except (KeyError, ValueError) as e:
        parser.error(str(e.args[0]) if isinstance(e, KeyError) else str(e))
    output = os.environ.get("OUTPUT", DEFAULTS["OUTPUT"])
    args.state_dir = os.path.join(output, args.bench)
    args.submitit_folder = os.path.join(output, args.bench, "submitit", "%j")
    since = time.time() if args._since is None else args._since

    if args.dry_run or os.environ.get("DRY_RUN") == "1":
        for env in dict.fromkeys(json.dumps(job.env, sort_keys=True) for job in jobs if job.choice is None):
            check_environment(args.bench, {**os.environ, **json.loads(env)}, configs=True)
        for i, job in enumerate(jobs, 1):
            state = "finished" if job.finished() else "to run"
            print(f"[{i}/{len(jobs)}] {job.name} ({state})")
            for line in describe(job):
                print(line)
            for step in job.steps:
                print(f"    {' '.join(step.argv)}")
        print(f"{len(jobs)} jobs, {sum(not j.finished() for j in jobs)} to run")
        return 0

    with jobproc.stop_jobs_on_signals():
        try:
            return _run(args, argv, jobs, since)
        except SweepStopped as stop:
            name = signal.Signals(stop.signum).name
            print(
                f"Sweep stopped by {name}: its running jobs were stopped (their folders keep the checkpoints written "
                "so far); rerun the same command to resume.",
                file=sys.stderr,
                flush=True,
            )
            return 128 + stop.signum


def _run(args: argparse.Namespace, argv: Sequence[str], jobs: Sequence[Job], since: float) -> int:
    if args._worker:  # one worker of several, spawned below; it dies with the sweep that spawned it
        jobproc.set_parent_death_signal(signal.SIGTERM)
        if args._parent is not None and os.getppid() != args._parent:
            raise SweepStopped(signal.SIGTERM)
        outcomes = run_worker(jobs, since, args._worker)
        write_text(args._outcomes, json.dumps(outcomes))
        return 0

    start = time.time()
    print(f"{len(jobs)} jobs ({args.bench}), {sum(not j.finished() for j in jobs)} to run", flush=True)
    if args.engine == "submitit":
        outcomes = _submitit(args, jobs, since)
    elif args.gpus or args.workers > 1:
        os.makedirs(args.state_dir, exist_ok=True)
        outcomes = _spawn_workers(args, [a for a in argv if a not in ("--_worker",)], since)
    else:
        outcomes = run_worker(jobs, since)
    return print_summary(merge(jobs, outcomes), time.time() - start)


if __name__ == "__main__":
    sys.exit(main())
