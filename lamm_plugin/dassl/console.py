"""What a run shows on the console and what it keeps in ``log.txt``: the two can differ.

``train.py`` tees stdout into the run's ``log.txt``. Everything printed reaches the log; the console gets a short
version: the argument, config and system dumps and Dassl's building chatter go to the log only (``--verbose``
brings them back), and the progress lines are short on the console while the log keeps every loss term.

The protocol is duck-typed on ``sys.stdout``, so that code printing through it works under any stdout (a host
repository's Dassl ``Logger``, pytest's capture): a stream with ``write_split(console, log)`` writes different
text to each side; any other stream gets the log's text, the complete one, as it did before.

A log must hold every line printed before a ``kill -9``: ``train.py``'s tee writes ``log.txt`` line by line, and
:func:`line_buffered_log` makes a host's Dassl ``Logger`` (``setup_logger`` in CoOp's ``train.py``) do the same.
"""

from __future__ import annotations

import io
import sys
from typing import Optional

__all__ = ["NOTICE_PREFIXES", "emit", "is_notice", "line_buffered_log"]

#: Lines that reach the console even while the console is quiet (building a trainer prints them in log-only mode):
#: what a user must see, notes about the data or config, warnings, errors and the drawn seed.
NOTICE_PREFIXES = ("Note:", "Warning", "Error", "No --seed given", "Removed ")


def is_notice(line: str) -> bool:
    """Whether ``line`` must reach the console even while only the log is written."""
    return line.lstrip().startswith(NOTICE_PREFIXES)


def emit(console: Optional[str], log: Optional[str] = None) -> None:
    """Print ``console`` on the console and ``log`` (default: the same text) into the run's log, one line each;
    ``console=None`` writes the log only.

    Where stdout cannot tell the two apart (no ``write_split``), ``log`` is printed: nothing is lost from a log.
    """
    full = console if log is None else log
    if full is None:
        raise ValueError("emit() needs console or log text")
    split = getattr(sys.stdout, "write_split", None)
    if split is None:
        print(full)
    else:
        split("" if console is None else console + "\n", full + "\n")


def line_buffered_log(stream: object = None) -> bool:
    """Make the log file of ``stream`` (default ``sys.stdout``: a Dassl ``Logger`` or any tee with a ``file``)
    line-buffered, so that each printed line is in the file when it is printed; True when it was changed.

    Dassl's ``Logger`` opens ``log.txt`` with the default buffer: a run killed by SIGKILL would lose the lines of
    its last minutes. Dassl is not changed: only the file object it opened is reconfigured.
    """
    file = getattr(sys.stdout if stream is None else stream, "file", None)
    if isinstance(file, io.TextIOWrapper) and not file.closed and not file.line_buffering:
        file.reconfigure(line_buffering=True)
        return True
    return False
