"""The sweep's jobs with real processes: a job dies with its runner (``kill -9`` of the sweep included), and a
job lock is not stale while the job's processes live, so a rerun never starts a job twice."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from lamm_experiments import sweep as S
from lamm_plugin.run_lock import LOCK_FILENAME as RUN_LOCK

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP_PY = os.path.join(REPO, "scripts", "sweep.py")
FAKE = os.path.join(REPO, "tests", "fixtures", "fake_train.py")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's"),
]


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    wrapper = tmp_path / "python_fake"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(0o755)
    return {
        **os.environ,
        "PYTHON": str(wrapper),
        "PYTHONPATH": REPO,
        "FAKE_TRAIN_LOG": str(tmp_path / "calls.txt"),
        "FAKE_TRAIN_PIDS": str(tmp_path / "pids.txt"),
        "DATA": str(tmp_path / "data"),
        "OUTPUT": str(tmp_path / "output"),
        "SEEDS": "1",
        "DATASETS": "dtd",
        "SHOTS_LIST": "1",
    }


def alive(pid: int) -> bool:
    """A process that exists and is no zombie (a killed orphan stays a zombie until its new parent reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def lines(path: str) -> list[str]:
    return open(path).read().split() if os.path.exists(path) else []


def wait_for(condition, seconds: float) -> bool:
    end = time.time() + seconds
    while time.time() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def start_sweep(env: dict[str, str], *args: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, SWEEP_PY, "fewshot", *args], env={**env, **extra},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def rerun(env: dict[str, str], **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SWEEP_PY, "fewshot"], env={**env, **extra}, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def job_started(env: dict[str, str], count: int = 1) -> int:
    assert wait_for(lambda: len(lines(env["FAKE_TRAIN_PIDS"])) >= count, 60), "the job did not start"
    return int(lines(env["FAKE_TRAIN_PIDS"])[count - 1])


@pytest.mark.parametrize("workers", ["1", "2"])
def test_kill_9_of_the_sweep_takes_its_job_with_it(env, workers):
    sweep = start_sweep(env, "--workers", workers, FAKE_TRAIN_SECONDS="120")
    try:
        job = job_started(env)
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.wait(timeout=30)
        assert wait_for(lambda: not alive(job), 30), "the job outlived its sweep"
    finally:
        for pid in map(int, lines(env["FAKE_TRAIN_PIDS"])):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    again = rerun(env)  # the rerun finds nothing alive: it takes the lock and runs the job, once
    assert again.returncode == 0 and "1 done" in again.stdout, again.stdout + again.stderr
    assert len(lines(env["FAKE_TRAIN_LOG"])) == 2


def test_the_lock_of_a_dead_sweep_is_not_stale_while_its_job_lives(env):
    """A job that ignores the stop: the rerun neither starts a second one nor breaks its lock until it is gone."""
    sweep = start_sweep(env, FAKE_TRAIN_SECONDS="120", FAKE_TRAIN_IGNORE_TERM="1", SWEEP_STOP_GRACE="6")
    try:
        job = job_started(env)
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.wait(timeout=30)
        assert alive(job)  # still in its stop grace
        again = rerun(env)
        assert again.returncode == 1 and "not run" in again.stdout, again.stdout + again.stderr
        assert "is still running and being stopped" in again.stdout, again.stdout
        assert len(lines(env["FAKE_TRAIN_LOG"])) == 1 and alive(job)
        assert wait_for(lambda: not alive(job), 30), "the job was not killed after its stop grace"
    finally:
        for pid in map(int, lines(env["FAKE_TRAIN_PIDS"])):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    again = rerun(env)
    assert again.returncode == 0 and "1 done" in again.stdout, again.stdout + again.stderr
    assert len(lines(env["FAKE_TRAIN_LOG"])) == 2


def test_a_live_train_py_in_the_job_folder_is_not_started_again(env, tmp_path):
    """A train.py left by an older sweep (no job record in the lock) still holds its run folder's lock."""
    (job,) = S.build_jobs("fewshot", environ=env)
    os.makedirs(job.folder)
    dead = subprocess.Popen(["true"])
    dead.wait()
    other = subprocess.Popen(["sleep", "60"])
    try:
        with open(os.path.join(job.folder, S.LOCK_FILENAME), "w") as f:
            json.dump({"host": socket.gethostname(), "pid": dead.pid, "time": 0}, f)
        with open(os.path.join(job.folder, RUN_LOCK), "w") as f:
            json.dump({"host": socket.gethostname(), "pid": other.pid, "time": time.time()}, f)
        out = rerun(env)
        assert out.returncode == 1 and "not run" in out.stdout and str(other.pid) in out.stdout, out.stdout
        assert lines(env["FAKE_TRAIN_LOG"]) == []
    finally:
        other.kill()
        other.wait()
    out = rerun(env)  # its owner gone: both locks are stale, the job runs
    assert out.returncode == 0 and "1 done" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_sweep_stops_its_job_and_says_so(env, signum):
    sweep = start_sweep(env, FAKE_TRAIN_SECONDS="120")
    try:
        job = job_started(env)
        sweep.send_signal(signum)
        out, _ = sweep.communicate(timeout=60)
        assert wait_for(lambda: not alive(job), 30), "the job outlived its stopped sweep"
    finally:
        for pid in map(int, lines(env["FAKE_TRAIN_PIDS"])):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert sweep.returncode == 128 + signum, out
    assert "stopped" in out and "rerun the same command" in out, out
    assert not os.path.exists(os.path.join(S.build_jobs("fewshot", environ=env)[0].folder, S.FAILED_FILENAME))
    again = rerun(env)
    assert again.returncode == 0 and "1 done" in again.stdout, again.stdout + again.stderr


def test_an_unreadable_lock_is_named_and_taken_over_when_old(env):
    (job,) = S.build_jobs("fewshot", environ=env)
    os.makedirs(job.folder)
    lock = os.path.join(job.folder, S.LOCK_FILENAME)
    open(lock, "w").close()  # empty: being written right now, or left damaged
    out = rerun(env)
    assert out.returncode == 1 and f"unreadable lock file {lock}" in out.stdout, out.stdout
    os.utime(lock, (time.time() - 120, time.time() - 120))
    out = rerun(env)
    assert out.returncode == 0 and "1 done" in out.stdout, out.stdout + out.stderr


def test_the_job_guard_runs_from_a_checkout_that_is_not_installed(tmp_path):
    """The guard is started as ``python -I lamm_experiments/jobproc.py``: no PYTHONPATH, no script folder on
    sys.path. ``-S`` also hides site-packages (an installed copy), as in a checkout used without ``pip install``."""
    guard = os.path.join(REPO, "lamm_experiments", "jobproc.py")
    cmd = [sys.executable, "-I", "-S", guard, str(os.getpid()), "1", "--", sys.executable, "-c", "print('job ran')"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "job ran" in out.stdout
