"""Downloads: HTTP(S) with resume and checksums, Google Drive through gdown.

A download goes to ``<file>.part`` and is renamed once complete and verified, so nothing is lost on a crash: an
interrupted download resumes with an HTTP Range request when the command runs again.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm import tqdm

from .errors import ChecksumError, DownloadError

_CHUNK = 1 << 20


def _drive_url(file_id: str) -> str:
    return f"https://drive.google.com/file/d/{file_id}/view"


@dataclass(frozen=True)
class Source:
    """A remote file: a URL or a Google Drive id, with optional checksums (None when not known)."""

    filename: str
    url: str = ""
    drive_id: str = ""
    md5: Optional[str] = None
    sha256: Optional[str] = None

    @property
    def location(self) -> str:
        return self.url or _drive_url(self.drive_id)


def file_digest(path: Union[str, os.PathLike], algorithm: str) -> str:
    """Hex digest of a file (``md5`` or ``sha256``), read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def checksum_problem(path: Path, md5: Optional[str], sha256: Optional[str]) -> Optional[str]:
    """None if ``path`` matches every given checksum, else a description of the mismatch."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            actual = file_digest(path, algorithm)
            if actual.lower() != expected.lower():
                return f"{algorithm} is {actual}, expected {expected}"
    return None


def _content_range_start(header: Optional[str]) -> Optional[int]:
    """Start offset of a ``Content-Range: bytes <start>-<end>/<total>`` header."""
    m = re.match(r"bytes (\d+)-", header or "")
    return int(m.group(1)) if m else None


def download(
    url: str,
    dest: Union[str, os.PathLike],
    md5: Optional[str] = None,
    sha256: Optional[str] = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial download.

    An existing ``dest`` is verified and kept. A ``dest.part`` left by an interrupted run is resumed with an
    HTTP Range request (restarted if the server ignores the range). The file is renamed to ``dest`` only once
    complete and verified.

    Args:
        url: HTTP(S) URL.
        dest: Final path.
        md5: Expected MD5 hex digest, or None.
        sha256: Expected SHA-256 hex digest, or None.
        timeout: Socket timeout in seconds.
        progress: Show a tqdm progress bar.

    Returns:
        ``dest`` as a Path.

    Raises:
        DownloadError: The server answered with an error or the transfer ended early (``.part`` is kept).
        ChecksumError: The complete file has the wrong checksum. A freshly downloaded ``.part`` is deleted (a
            resumed file may have been corrupted, so the next run starts from scratch); an existing ``dest``
            is left alone.
    """
    dest = Path(dest)
    if dest.exists():
        problem = checksum_problem(dest, md5, sha256)
        if problem:
            raise ChecksumError(f"{dest} exists but its {problem}; delete it and run again")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0

    headers = {"User-Agent": "lamm-plugin-datasets/1.0"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    total: Optional[int] = None
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code != 416 or not offset:
            raise DownloadError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from e
        # 416 Range Not Satisfiable: the partial file already holds every byte; the checksum decides below.
        response = None
    except (URLError, OSError) as e:
        raise DownloadError(f"downloading {url} failed: {e}") from e

    if response is not None:
        with response:
            resumed = response.status == 206 and _content_range_start(response.headers.get("Content-Range")) == offset
            if offset and not resumed:
                offset = 0  # the server sent the whole file (or another range): start over
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            bar = tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not progress,
            )
            with bar, open(part, "ab" if offset else "wb") as f:
                try:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        f.write(chunk)
                        bar.update(len(chunk))
                except (OSError, ValueError, http.client.HTTPException) as e:
                    raise DownloadError(f"downloading {url} was interrupted ({e}); run again to resume") from e
        size = part.stat().st_size
        if total is not None and size != total:
            raise DownloadError(f"downloading {url} stopped at {size} of {total} bytes; run again to resume")

    problem = checksum_problem(part, md5, sha256)
    if problem:
        part.unlink()
        raise ChecksumError(f"{url}: the downloaded file's {problem}; it was deleted, run again to retry")
    os.replace(part, dest)
    return dest


def drive_download(file_id: str, dest: Union[str, os.PathLike]) -> Path:
    """Download a Google Drive file with gdown (which resumes and publishes the file only when complete).

    Raises:
        DownloadError: gdown failed; the message gives the Drive link to download the file by hand.
    """
    import gdown

    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    error: Optional[Exception] = None
    try:
        gdown.download(id=file_id, output=str(dest), quiet=False, resume=True)
    except Exception as e:  # gdown raises its own exception types, varying by version
        error = e
    if not dest.exists():
        raise DownloadError(
            f"Google Drive download of {dest.name} failed ({error or 'no file written'}); download it from "
            f"{_drive_url(file_id)} and save it as {dest}"
        ) from error
    return dest


def fetch_source(source: Source, dest: Path) -> Path:
    """Download ``source`` to ``dest`` by URL or Drive id, verifying any known checksum."""
    if source.url:
        return download(source.url, dest, md5=source.md5, sha256=source.sha256)
    path = drive_download(source.drive_id, dest)
    problem = checksum_problem(path, source.md5, source.sha256)
    if problem:
        path.unlink()
        raise ChecksumError(f"{source.location}: the downloaded file's {problem}; it was deleted, run again to retry")
    return path
