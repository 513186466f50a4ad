"""Reading and writing the files a user gives and keeps, one way everywhere.

* :func:`write_atomic` / :func:`write_text`: a file is written whole or not at all (a temporary file beside it,
  flushed to disk, then renamed over it): a full disk or a kill leaves the old file as it was, never a file cut in
  the middle. New files follow the umask.
* :func:`read_text`: a text file (class names, lists, splits, yaml) reads the same with or without a UTF-8
  byte-order mark and with ``\\r\\n`` line ends; bytes that are not UTF-8 give a :class:`~lamm_plugin.errors.UserError`
  naming the file.

Only the standard library.
"""

from __future__ import annotations

import io
import os
import os.path as osp
from collections.abc import Callable
from typing import IO

from lamm_plugin.errors import MissingFileError, UserError

__all__ = ["WriteError", "check_output", "open_text", "read_text", "save_figure", "write_atomic", "write_text"]


def write_atomic(path: str, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, flush it to disk, then rename it to ``path``.

    On any error (a full disk: ``OSError``) the temporary file is removed and ``path`` is left as it was.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    # The rename itself reaches the disk once the folder's entry does.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_figure(fig: object, path: str, **kwargs: object) -> str:
    """Save a matplotlib figure to ``path`` whole or not at all (the format from the ending); returns ``path``."""
    kind = osp.splitext(path)[1].lstrip(".").lower() or "png"
    return _write_whole(path, lambda f: fig.savefig(f, format=kind, **kwargs), "figure")


class WriteError(UserError, OSError):
    """A file could not be written (a full disk, no permission); nothing was written (an older file is as it was)."""


def check_output(path: str, option: str = "--output") -> None:
    """Refuse, before any work, an output file that cannot be written: a folder, or a place whose folder cannot be
    made or written to. ``option`` names where the path was given."""
    if osp.isdir(path):
        raise UserError(f"{option} {path} is a folder: give a file name in it.")
    folder = osp.dirname(osp.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise UserError(f"{option} {path}: cannot create its folder {folder} ({err.strerror}).") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"{option} {path}: the folder {folder} is not writable; give another place.")


def write_text(path: str, text: str, option: str = "") -> str:
    """Write ``text`` (UTF-8, line ends as given) to ``path`` whole or not at all (:func:`write_atomic`); returns
    ``path``.

    Raises:
        UserError: ``path`` is a folder (nothing is written).
        WriteError: The write failed (a full disk); a file that was at ``path`` is as it was.
    """
    data = text.encode("utf-8")
    return _write_whole(path, lambda f: f.write(data), option)


def _write_whole(path: str, write: Callable[[IO[bytes]], object], option: str) -> str:
    """:func:`write_atomic` after :func:`check_output`; a failed write becomes a :class:`WriteError`."""
    check_output(path, option or "output file")
    try:
        write_atomic(path, write)
    except OSError as err:
        raise WriteError(
            f"Could not write {path}: {err.strerror or err}. Nothing was written (a file that was there is as it "
            "was): free space, or give another place."
        ) from err
    return path


def read_text(path: str, what: str = "") -> str:
    """The text of ``path`` with a UTF-8 byte-order mark dropped and ``\\r\\n``/``\\r`` line ends read as ``\\n``.

    Args:
        path: The file.
        what: What the file should hold (``"class names"``), for the error messages.

    Raises:
        MissingFileError: No file at ``path`` (the message says relative to which folder when it is relative).
        UserError: The file is not UTF-8 text.
    """
    try:
        with open(path, encoding="utf-8-sig") as f:  # newline=None: universal line ends
            return f.read()
    except FileNotFoundError:
        raise MissingFileError(missing_file_message(path, what)) from None
    except UnicodeDecodeError as err:
        kind = f" ({what})" if what else ""
        raise UserError(
            f"{path}{kind} is not UTF-8 text (byte {err.start}: {err.reason}): save it as UTF-8 text, or give the "
            "right file."
        ) from None


def open_text(path: str, what: str = "") -> io.StringIO:
    """:func:`read_text` as a file object (``with open_text(path) as f: for line in f: ...``), so every reader of a
    text file we are given reads it the same way."""
    return io.StringIO(read_text(path, what))


def missing_file_message(path: str, what: str = "") -> str:
    """``No <what> file at PATH``, with the folder a relative path was looked for in."""
    kind = f"{what} file" if what else "file"
    where = "" if osp.isabs(path) else f" (looked for relative to the current folder {os.getcwd()})"
    return f"No {kind} at {path}{where}."
