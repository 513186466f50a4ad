"""An exclusive lock on a run folder, so that two processes never train into one folder at once.

The lock is a file (``run.lock``) created atomically with ``O_CREAT | O_EXCL``; it holds the owner's host, pid,
start time and command line, and is removed when the owner ends. A lock whose pid is dead on this host, or runs
another process than the owner (the pid was reused: its start time differs), is stale (its owner was killed with
SIGKILL, or the machine restarted) and is taken over; a lock from another host is never
broken, since its pid means nothing here. This is the rule of the sweep's job locks (``sweep.lock``), written once
here with only the standard library so that the sweep can use it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from typing import Any, Optional

from lamm_plugin.errors import UserError

__all__ = ["LOCK_FILENAME", "FolderLock", "RunLock", "RunLockedError", "owner_alive", "pid_alive", "process_start"]

LOCK_FILENAME = "run.lock"
#: An unreadable lock file younger than this is being written right now; older, it is damaged and stale.
UNREADABLE_GRACE_SECONDS = 60.0


class RunLockedError(UserError, RuntimeError):
    """The run folder is locked by another live process; the message names it (host, pid, since when)."""


def process_state(pid: int) -> Optional[str]:
    """The state letter of ``/proc/<pid>/stat`` (``Z``: zombie), or None without /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> Optional[str]:
    """An identity of process ``pid`` that a later process with the same pid does not share: this boot's id and
    the process's start time (clock ticks after boot, ``/proc/<pid>/stat`` field 22); None without /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = f.read().rsplit(")", 1)[1].split()[19]
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except (OSError, IndexError):
        return None
    return f"{boot}/{ticks}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (one owned by another user counts as alive; a zombie, dead and
    not yet reaped, does not: where no process reaps it, it would otherwise hold its locks for ever)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return process_state(pid) != "Z"


def owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the process of a lock record (of this host) still runs: its pid runs and, when the record has a
    ``start``, it is the same process (not a later one that got the pid)."""
    try:
        pid = int(owner.get("pid", -1))
    except (TypeError, ValueError):
        return False
    if not pid_alive(pid):
        return False
    started = owner.get("start")
    return started is None or process_start(pid) in (None, started)


class FolderLock:
    """An exclusive lock file ``<folder>/<filename>`` holding ``{"host", "pid", "start", "time", "command"}`` of its
    owner (``start``: :func:`process_start`, which tells the owner from a later process that got its pid).

    Args:
        folder: The folder to lock (created when missing).
        filename: Name of the lock file in it.
    """

    def __init__(self, folder: str, filename: str) -> None:
        self.path = os.path.join(folder, filename)
        self.held = False

    def owner(self) -> Optional[dict[str, Any]]:
        """The owner record of the lock file, or None when there is none or it cannot be read."""
        try:
            with open(self.path) as f:
                owner = json.load(f)
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    def stale(self) -> bool:
        """True when the lock's owner is gone: a dead pid of this host, or a damaged file older than a minute."""
        owner = self.owner()
        if owner is None:
            try:
                return time.time() - os.path.getmtime(self.path) > UNREADABLE_GRACE_SECONDS
            except OSError:
                return True
        return owner.get("host") == socket.gethostname() and not owner_alive(owner)

    def acquire(self) -> bool:
        """Take the lock; False when a live owner holds it. A stale lock is removed and taken (by one taker)."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self.stale():
                    return False
                stale = f"{self.path}.stale.{os.getpid()}"
                try:
                    os.rename(self.path, stale)  # of several takers, only one wins the rename
                    os.remove(stale)
                except OSError:
                    return False
                continue
            record = {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid()),
                      "time": time.time(), "command": sys.argv}  # fmt: skip
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            self.held = True
            return True
        return False

    def release(self) -> None:
        """Remove the lock file if this object holds it."""
        if self.held:
            self.held = False
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)

    def describe_owner(self) -> str:
        """``host <h>, pid <p>, since <time>`` of the current owner, for messages."""
        owner = self.owner() or {}
        since = owner.get("time")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
        return f"host {owner.get('host', '?')}, pid {owner.get('pid', '?')}, since {when}"


class RunLock(FolderLock):
    """The lock of a training run's output folder (``<output>/run.lock``)."""

    def __init__(self, folder: str) -> None:
        super().__init__(folder, LOCK_FILENAME)

    def acquire_or_raise(self) -> None:
        """Take the lock, or raise :class:`RunLockedError` naming the owner and what to do."""
        if self.acquire():
            return
        folder = os.path.dirname(self.path)
        owner = self.owner() or {}
        other_host = owner.get("host") not in (None, socket.gethostname())
        remedy = (
            "If that process is gone (its machine is down), delete the lock file and rerun"
            if other_host
            else "Wait for it to end (or stop it), then rerun this command to resume; or give another --output-dir. If "
            "that process is no run of this folder, delete the lock file and rerun"
        )
        raise RunLockedError(
            f"{folder} is in use by another run ({self.describe_owner()}; lock file {self.path}). Nothing was "
            f"changed in that folder. {remedy}."
        )

    def __enter__(self) -> RunLock:
        self.acquire_or_raise()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
