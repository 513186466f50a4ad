"""Job processes that die with their runner, and stop when it stops.

A sweep runs each job (``bash scripts/lamm/<script>.sh ...``, which runs ``train.py``) under a *guard*: this file
run as a script, a small standard-library process that leads a process group of its own and starts the job in it.

* The guard asks Linux for a signal when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGTERM)``), so that a runner
  killed with ``kill -9`` still takes its job with it: the guard stops the whole group (the job script, its
  ``train.py`` and their data-loader workers), where a parent-death signal on the script alone would leave its
  ``train.py`` running with parent 1.
* Stopping is ``SIGTERM`` to the group (``train.py`` keeps its checkpoints and ends), then ``SIGKILL`` to the group
  after a grace period (``SWEEP_STOP_GRACE`` seconds, default 60) for a job that does not end.
* The runner stops its guards on SIGTERM, SIGINT and SIGHUP (:func:`stop_jobs_on_signals`); the job's group is not
  the terminal's, so a Ctrl-C reaches the job only this way.

The runner records the guard's pid, which is the job's process-group id, in the job's lock; a lock whose runner is
dead is not stale while a process of that group lives (:func:`group_alive`). Without ``prctl`` (not Linux), a job
still stops with a runner that is stopped by a signal, but not with one killed by SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import IO, Any, Optional

if not __package__:  # run as the job guard (``python -I jobproc.py``): the repository root is not on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lamm_plugin.run_lock import pid_alive  # noqa: E402

__all__ = [
    "STOP_GRACE_SECONDS",
    "STOP_SIGNALS",
    "group_alive",
    "process_alive",
    "set_parent_death_signal",
    "start_job",
    "stop_jobs",
    "stop_jobs_on_signals",
    "stop_with_me",
    "stopped_by",
]

#: Seconds between a job's SIGTERM and its SIGKILL (override with ``SWEEP_STOP_GRACE``).
STOP_GRACE_SECONDS = 60.0
#: Signals that stop a runner and its jobs.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))
_PR_SET_PDEATHSIG = 1

_running: dict[int, subprocess.Popen] = {}  # guard pid -> guard, of this process
_children: list[subprocess.Popen] = []  # other processes to stop with this one (the workers of a sweep)
_stopped: list[int] = []  # the signal that stopped this process, once one came


def set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent ends; False where it cannot (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


#: Whether a process of this host runs (zombies count as dead): one rule for run locks and job locks.
process_alive = pid_alive


def _group_members(pgid: int) -> Optional[list[int]]:
    """The live (not zombie) processes of group ``pgid`` listed in /proc; None without /proc."""
    if not os.path.isdir("/proc"):
        return None
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields after the command: state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(name))
    return members


def group_alive(pgid: int) -> bool:
    """Whether a process of process group ``pgid`` runs on this host (zombies do not count)."""
    if pgid <= 0:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    members = _group_members(pgid)
    return members is None or bool(members)


def stop_grace() -> float:
    """Seconds a stopped job gets before it is killed (``SWEEP_STOP_GRACE``, default :data:`STOP_GRACE_SECONDS`)."""
    try:
        return max(0.0, float(os.environ.get("SWEEP_STOP_GRACE", STOP_GRACE_SECONDS)))
    except ValueError:
        return STOP_GRACE_SECONDS


def start_job(argv: Sequence[str], env: dict[str, str], stdout: IO[Any]) -> subprocess.Popen:
    """Start ``argv`` under a guard (see the module docstring); returns the guard, whose pid is the group id.

    Wait on the returned process as on the job itself: its exit status is the job's (``128 + N`` when the job
    ended by signal N). Once this process was stopped by a signal (:func:`stopped_by`), nothing is started: the
    guard is started and stops at once.
    """
    cmd = [sys.executable, "-I", os.path.abspath(__file__), str(os.getpid()), str(stop_grace()), "--", *argv]
    guard = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True)
    _running[guard.pid] = guard
    if _stopped:
        guard.send_signal(signal.SIGTERM)
    return guard


def finished(guard: subprocess.Popen) -> None:
    """Forget a guard that was waited for."""
    _running.pop(guard.pid, None)


def stop_jobs() -> None:
    """Ask every running job of this process (and every child registered with :func:`stop_with_me`) to stop."""
    for proc in list(_running.values()) + _children:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)


def stop_with_me(proc: subprocess.Popen) -> None:
    """Stop ``proc`` (a worker process) with the jobs when this process is stopped by a signal."""
    _children.append(proc)
    if _stopped:
        proc.send_signal(signal.SIGTERM)


def stopped_by() -> Optional[int]:
    """The signal that stopped this process (within :func:`stop_jobs_on_signals`), or None."""
    return _stopped[0] if _stopped else None


@contextlib.contextmanager
def stop_jobs_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, a stop signal stops the running jobs and is remembered (:func:`stopped_by`); the caller
    finishes waiting for them and ends. Main thread only (elsewhere the block changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: Any) -> None:
        if not _stopped:
            _stopped.append(signum)
        stop_jobs()

    previous = {s: signal.signal(s, on_signal) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# ---- the guard -------------------------------------------------------------------------------------------------


def _guard(argv: Sequence[str]) -> int:
    """``<runner pid> <grace seconds> -- <job argv...>``: run the job in this process's group; see the module."""
    runner, grace, command = int(argv[0]), float(argv[1]), list(argv[3:])
    stopping: list[int] = []
    group = os.getpgrp()

    def kill_group() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # this guard included: nothing of the job may outlive it

    def stop(signum: int, frame: Any) -> None:
        if stopping:
            return
        stopping.append(signum)
        timer = threading.Timer(grace, kill_group)
        timer.daemon = True
        timer.start()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)  # comes back here once, ignored above

    for s in STOP_SIGNALS:
        signal.signal(s, stop)
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != runner:  # the runner died before the parent-death signal was set
        return 128 + signal.SIGTERM
    try:
        job = subprocess.Popen(command)
    except OSError as e:
        print(f"cannot start {command[0]}: {e}", flush=True)
        return 127
    if stopping:  # stopped while starting it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
    rc = job.wait()
    # Stopped: the job script may end before its train.py; wait for the whole group (the timer kills it at the end
    # of the grace period, this guard included).
    while stopping and [pid for pid in _group_members(group) or [] if pid != os.getpid()]:
        time.sleep(0.1)
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(_guard(sys.argv[1:]))
