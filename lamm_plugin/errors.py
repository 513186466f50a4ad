"""One error handler for every command: a user's mistake gets its message, a bug of ours its traceback.

:class:`UserError` is the type of an error whose message says what happened, which file or key it came from and
what to do (a mistyped key, a missing file, an unreadable image, a full disk, a held lock). Every entry point
(``train.py``, ``continual.py``, ``python -m lamm_plugin.predict``, ``python -m lamm_experiments.interpret``,
``python -m datasets.prepare``, the sweep and table scripts) runs its work through :func:`run_main`: a
:class:`UserError` prints ``Error: <message>`` on stderr and exits with 1 (its traceback too with ``--verbose``);
any other exception is a bug of ours and keeps its traceback.

Only the standard library: importing this module imports neither torch nor Dassl.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Optional

__all__ = ["MissingFileError", "UserError", "run_main"]


class UserError(ValueError):
    """A mistake in what the user gave (or a state of the machine they can change): the message names the file or
    key and the remedy. A ``ValueError``, so callers that catch those keep working."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist; the message says where it was looked for."""


def run_main(main: Callable[[], Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Run a command's ``main()``; returns its exit status, 1 after a :class:`UserError`.

    Args:
        main: The command's work; returns its exit status (``None``: 0).
        argv: The command's arguments (default ``sys.argv[1:]``); ``--verbose`` among them shows the traceback of
            a user's error too.
    """
    try:
        return main() or 0
    except UserError as err:
        if "--verbose" in (sys.argv[1:] if argv is None else argv):
            traceback.print_exc()
        sys.stdout.flush()
        print(f"Error: {err}", file=sys.stderr, flush=True)
        return 1
