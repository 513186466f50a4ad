"""The recipe language: the steps that prepare a dataset, and :class:`Recipe`, which lists them with what a complete
folder holds.

A step is done when its output exists, so running a recipe again skips what is there. The recipes themselves are
data, in :mod:`.recipes`.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

from .archives import extract_archive
from .download import Source, fetch_source
from .errors import PrepareError


@dataclass(frozen=True)
class Fetch:
    """Place a remote file in the dataset folder as ``dest``; or copy it from ``copy_from`` (relative to the
    data root) when that exists."""

    source: Source
    dest: str
    copy_from: str = ""

    def done(self, folder: Path) -> bool:
        return (folder / self.dest).exists()

    def run(self, folder: Path, downloads: Path, keep_archives: bool) -> None:
        target = folder / self.dest
        if self.copy_from:
            src = folder.parent / self.copy_from
            if src.is_file():
                print(f"Copying {src} to {target}")
                shutil.copyfile(src, target)
                return
        fetch_source(self.source, target)


@dataclass(frozen=True)
class Extract:
    """Download an archive into the downloads folder and extract it so that ``creates`` exists."""

    source: Source
    creates: str
    nested: str = ""

    def done(self, folder: Path) -> bool:
        return (folder / self.creates).exists()

    def run(self, folder: Path, downloads: Path, keep_archives: bool) -> None:
        archive = fetch_source(self.source, downloads / self.source.filename)
        print(f"Extracting {archive} into {folder}")
        try:
            extract_archive(archive, folder, self.creates, self.nested)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
            raise PrepareError(f"{archive} is damaged ({e}); delete it and run again") from e
        if not keep_archives:
            archive.unlink()


@dataclass(frozen=True)
class Build:
    """Run ``func(folder, downloads, keep_archives)``, which must create ``creates``."""

    func: Callable[[Path, Path, bool], None]
    creates: str
    description: str

    def done(self, folder: Path) -> bool:
        return (folder / self.creates).exists()

    def run(self, folder: Path, downloads: Path, keep_archives: bool) -> None:
        print(f"{self.description} in {folder}")
        self.func(folder, downloads, keep_archives)


Step = Union[Fetch, Extract, Build]


@dataclass(frozen=True)
class Recipe:
    """How to prepare one dataset and how to recognise a complete folder.

    Attributes:
        name: Registered dataset name.
        folder: Folder under the data root (the dataset class's ``dataset_dir``).
        config: Stem of ``configs/datasets/<config>.yaml``.
        required: Paths relative to ``folder`` that the dataset class needs.
        steps: What the command does, in order; a step whose output exists is skipped.
        manual: Instructions for the parts that cannot be downloaded.
        split_file: CoOp split file whose image list ``--check`` verifies.
        image_subdir: Folder the split file's paths are relative to.
        class_folders: ``(subdir, n)``: ``subdir`` must hold ``n`` class folders.
        aliases: Other names accepted on the command line.
        image_lists: Files whose lines start with an image id (FGVC-Aircraft's split lists), for ``--decode``.
        list_image_path: Where the image of id ``{}`` in :attr:`image_lists` is, relative to ``folder``.
    """

    name: str
    folder: str
    config: str
    required: tuple[str, ...]
    steps: tuple[Step, ...] = ()
    manual: str = ""
    split_file: str = ""
    image_subdir: str = ""
    class_folders: tuple[tuple[str, int], ...] = ()
    aliases: tuple[str, ...] = field(default=())
    image_lists: tuple[str, ...] = ()
    list_image_path: str = ""


def split_recipe(
    name: str, folder: str, config: str, image_subdir: str, split_drive_id: str, steps: tuple[Step, ...] = (), **kw
) -> Recipe:
    """A dataset read through a CoOp split file: ``split_zhou_<name>.json``, fetched from Google Drive last.

    Args:
        name: Registered dataset name.
        folder: Folder under the data root.
        config: Stem of the dataset config.
        image_subdir: Folder the split file's paths are relative to (``""``: the dataset folder).
        split_drive_id: Google Drive id of CoOp's split file.
        steps: The steps before the split file.
        **kw: More :class:`Recipe` fields (``required`` replaces the image folder and the split file).
    """
    split_file = f"split_zhou_{name}.json"
    required = kw.pop("required", ((image_subdir,) if image_subdir else ()) + (split_file,))
    return Recipe(
        name,
        folder,
        config,
        required=required,
        steps=(*steps, Fetch(Source(split_file, drive_id=split_drive_id), split_file)),
        split_file=split_file,
        image_subdir=image_subdir,
        **kw,
    )


def imagenet_variant(
    name: str, folder: str, config: str, image_subdir: str, n: int, classnames: Source, steps=(), **kw
) -> Recipe:
    """An ImageNet test set: an image folder of ``n`` classes plus ImageNet's ``classnames.txt``, copied from
    ``imagenet/`` when that has it, else downloaded from ``classnames``."""
    return Recipe(
        name,
        folder,
        config,
        required=(image_subdir, "classnames.txt"),
        steps=(*steps, Fetch(classnames, "classnames.txt", copy_from="imagenet/classnames.txt")),
        image_subdir=image_subdir,
        class_folders=((image_subdir, n),),
        **kw,
    )
