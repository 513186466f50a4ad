"""Archive extraction: zip and tar files unpacked into a dataset folder, safely and without half-done states.

An archive is unpacked into a temporary folder inside the dataset folder and moved into place afterwards; paths
that would leave the folder are refused.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Union

from tqdm import tqdm

from .errors import PrepareError

# Folders that archives made on macOS carry along; never part of a dataset.
_JUNK = ("__MACOSX",)


def unpack(archive: Path, into: Path) -> None:
    """Unpack a zip or tar(.gz/.tgz) archive into ``into``, refusing paths that leave it."""
    name = archive.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for member in tqdm(members, desc=f"extracting {archive.name}", unit="file"):
                zf.extract(member, into)  # zipfile drops absolute and ".." components
        return
    if not re.search(r"\.(tar|tar\.gz|tgz|tar\.bz2|tar\.xz)$", name):
        raise PrepareError(f"do not know how to extract {archive}")
    with tarfile.open(archive) as tf:
        for member in tqdm(tf, desc=f"extracting {archive.name}", unit="file"):
            if hasattr(tarfile, "data_filter"):
                tf.extract(member, into, filter="data")
            else:  # Python without extraction filters: refuse what the "data" filter would refuse
                target = (into / member.name).resolve()
                if not str(target).startswith(str(into.resolve())) or member.issym() or member.islnk():
                    raise PrepareError(f"{archive}: refusing to extract {member.name!r}")
                tf.extract(member, into)


def merge_move(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest``; if both are folders, move ``src``'s entries in (recursively)."""
    if dest.is_dir() and src.is_dir():
        for child in src.iterdir():
            merge_move(child, dest / child.name)
        src.rmdir()
        return
    if dest.exists() or dest.is_symlink():
        if dest.is_dir():
            shutil.rmtree(dest)
        else:
            dest.unlink()
    os.replace(src, dest)


def extract_archive(
    archive: Union[str, os.PathLike], dest_dir: Union[str, os.PathLike], creates: str, nested: str = ""
) -> None:
    """Extract ``archive`` so that ``dest_dir/creates`` exists.

    The archive is unpacked into a temporary folder inside ``dest_dir``. A single top-level folder that is not
    the first component of ``creates`` is descended into (``food-101/`` in ``food-101.tar.gz``, ``dtd/``,
    ``fgvc-aircraft-2013b/data/``), and the entries found there are moved into ``dest_dir``.

    Args:
        archive: The archive.
        dest_dir: The dataset folder.
        creates: Path relative to ``dest_dir`` that the archive provides.
        nested: Path of an archive inside ``archive`` to extract instead (Caltech-101's zip holds a tar.gz).

    Raises:
        PrepareError: ``creates`` is not in the archive.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    tmp = dest_dir / f".extract-{archive.name}"
    if tmp.exists():
        shutil.rmtree(tmp)  # left by an interrupted run
    tmp.mkdir(parents=True)
    try:
        unpack(archive, tmp)
        if nested:
            inner = tmp / nested
            if not inner.is_file():
                raise PrepareError(f"{archive} does not contain {nested}")
            inner_tmp = dest_dir / f".extract-{inner.name}"
            if inner_tmp.exists():
                shutil.rmtree(inner_tmp)
            inner_tmp.mkdir()
            unpack(inner, inner_tmp)
            shutil.rmtree(tmp)
            tmp = inner_tmp
        top = tmp
        head = Path(creates).parts[0]
        while True:
            entries = [p for p in top.iterdir() if p.name not in _JUNK]
            if len(entries) == 1 and entries[0].is_dir() and entries[0].name != head:
                top = entries[0]
            else:
                break
        if not (top / head).exists():
            found = sorted(p.name for p in entries)[:10]
            raise PrepareError(f"{archive} does not contain {head!r} where expected (found {found})")
        for entry in entries:
            merge_move(entry, dest_dir / entry.name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    if not (dest_dir / creates).exists():
        raise PrepareError(f"extracting {archive} did not create {dest_dir / creates}")
