"""Download the datasets and lay them out in the folders the dataset classes read (CoOp's layout).

Usage::

    python -m datasets.prepare NAME [NAME ...] --root DATA [--check] [--decode] [--keep-archives]

``NAME`` is a registered dataset name (``OxfordPets``), a config name (``oxford_pets``) or ``all``. For each
dataset the command

* downloads the archives into ``DATA/downloads/`` with a progress bar, resuming an interrupted download
  (HTTP Range requests) and verifying the MD5 checksum where one is known;
* downloads CoOp's split files (and the few extra files CoOp publishes) from Google Drive with gdown;
* extracts the archives into the expected layout, then deletes them (unless ``--keep-archives``);
* checks the result and prints what is still missing, with instructions for what cannot be downloaded
  (ImageNet, Stanford Cars, ImageNet-Sketch).

``--check`` only verifies existing folders: it prints every missing path and, for datasets with a split file,
how many of the listed images are missing. ``--decode`` also opens and fully decodes every image the splits
reference (as training does) and lists each one that fails, with its error. The exit code is non-zero if any
dataset is incomplete or any image does not decode.

Nothing is lost on a crash: downloads go to ``<file>.part`` and are renamed when complete (run the command
again to resume), and archives are extracted into a temporary folder that is moved into place afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm import tqdm

from .safe_pickle import NUMPY_GLOBALS, restricted_load

__all__ = [
    "RECIPES",
    "RECIPES_LIST",
    "Build",
    "ChecksumError",
    "DownloadError",
    "Extract",
    "Fetch",
    "PrepareError",
    "Recipe",
    "Source",
    "check_dataset",
    "decode_image",
    "decode_images",
    "decode_problems",
    "download",
    "drive_download",
    "extract_archive",
    "fetch_source",
    "file_digest",
    "main",
    "prepare_dataset",
    "referenced_images",
    "resolve_names",
]

DOWNLOAD_DIRNAME = "downloads"
_CHUNK = 1 << 20
# Folders that archives made on macOS carry along; never part of a dataset.
_JUNK = ("__MACOSX",)


class PrepareError(RuntimeError):
    """A dataset could not be prepared; the message says what to do."""


class DownloadError(PrepareError):
    """A download failed or is incomplete (a partial ``.part`` file is kept for resuming)."""


class ChecksumError(DownloadError):
    """A downloaded file does not have the expected checksum."""


# ----------------------------------------------------------------------------------------------------------------
# Downloads


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


def _checksum_problem(path: Path, md5: Optional[str], sha256: Optional[str]) -> Optional[str]:
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
        problem = _checksum_problem(dest, md5, sha256)
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

    problem = _checksum_problem(part, md5, sha256)
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
    problem = _checksum_problem(path, source.md5, source.sha256)
    if problem:
        path.unlink()
        raise ChecksumError(f"{source.location}: the downloaded file's {problem}; it was deleted, run again to retry")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Extraction


def _unpack(archive: Path, into: Path) -> None:
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


def _merge_move(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest``; if both are folders, move ``src``'s entries in (recursively)."""
    if dest.is_dir() and src.is_dir():
        for child in src.iterdir():
            _merge_move(child, dest / child.name)
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
        _unpack(archive, tmp)
        if nested:
            inner = tmp / nested
            if not inner.is_file():
                raise PrepareError(f"{archive} does not contain {nested}")
            inner_tmp = dest_dir / f".extract-{inner.name}"
            if inner_tmp.exists():
                shutil.rmtree(inner_tmp)
            inner_tmp.mkdir()
            _unpack(inner, inner_tmp)
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
            _merge_move(entry, dest_dir / entry.name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    if not (dest_dir / creates).exists():
        raise PrepareError(f"extracting {archive} did not create {dest_dir / creates}")


# ----------------------------------------------------------------------------------------------------------------
# Recipes


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


def _split_json(name: str, drive_id: str) -> Fetch:
    filename = f"split_zhou_{name}.json"
    return Fetch(Source(filename, drive_id=drive_id), filename)


def _split_recipe(
    name: str, folder: str, config: str, image_subdir: str, split_drive_id: str, steps: tuple[Step, ...] = (), **kw
) -> Recipe:
    """A dataset read through a CoOp split file."""
    split_file = f"split_zhou_{name}.json"
    required = kw.pop("required", ((image_subdir,) if image_subdir else ()) + (split_file,))
    return Recipe(
        name,
        folder,
        config,
        required=required,
        steps=(*steps, _split_json(name, split_drive_id)),
        split_file=split_file,
        image_subdir=image_subdir,
        **kw,
    )


IMAGENET_CLASSNAMES = Source("classnames.txt", drive_id="1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF")


def _imagenet_variant(name: str, folder: str, config: str, image_subdir: str, n: int, steps=(), **kw) -> Recipe:
    """An ImageNet test set: an image folder plus ImageNet's ``classnames.txt`` (copied from ``imagenet/``)."""
    return Recipe(
        name,
        folder,
        config,
        required=(image_subdir, "classnames.txt"),
        steps=(*steps, Fetch(IMAGENET_CLASSNAMES, "classnames.txt", copy_from="imagenet/classnames.txt")),
        image_subdir=image_subdir,
        class_folders=((image_subdir, n),),
        **kw,
    )


def _write_cifar100(folder: Path, downloads: Path, keep_archives: bool) -> None:
    """Download CIFAR-100 (python version) and write ``images/{train,test}/<class>/<index>.png``."""
    import numpy as np
    from PIL import Image

    archive = fetch_source(CIFAR100_SOURCE, downloads / CIFAR100_SOURCE.filename)
    tmp = folder / ".extract-cifar100"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        _unpack(archive, tmp)
        src = tmp / "cifar-100-python"
        remedy = f"Delete {archive} and run the command again to download it anew."
        names = restricted_load(src / "meta", {}, remedy, encoding="latin1")["fine_label_names"]
        images_tmp = tmp / "images"
        for split in ("train", "test"):
            batch = restricted_load(src / split, NUMPY_GLOBALS, remedy, encoding="latin1")
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # [N,H,W,3]
            for name in names:
                (images_tmp / split / name).mkdir(parents=True, exist_ok=True)
            for i, (image, label) in enumerate(tqdm(zip(data, batch["fine_labels"]), total=len(data), desc=split)):
                Image.fromarray(image).save(images_tmp / split / names[label] / f"{i:05d}.png")
        with open(folder / "classnames_for_cifar100.txt", "w") as f:
            f.writelines(f"{name} {name.replace('_', ' ')}\n" for name in sorted(names))
        _merge_move(images_tmp, folder / "images")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not keep_archives:
        archive.unlink()


def _write_synthetic(folder: Path, downloads: Path, keep_archives: bool) -> None:
    from lamm_experiments.synthetic import write_image_folder

    write_image_folder(folder)


CIFAR100_SOURCE = Source(
    "cifar-100-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
)

IMAGENET_MANUAL = """\
ImageNet cannot be downloaded automatically (its terms require an account at https://image-net.org).
Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org/download.php and place
the images as
    {folder}/images/train/<wnid>/*.JPEG   (1000 class folders, e.g. n01440764)
    {folder}/images/val/<wnid>/*.JPEG     (1000 class folders: sort the 50,000 validation images into class
                                           folders, e.g. with the valprep.sh script of PyTorch's ImageNet example)
Symbolic links to an existing copy work. classnames.txt (CLIP's class names) is downloaded by this command."""

CARS_MANUAL = """\
Stanford Cars cannot be downloaded automatically: its original links (ai.stanford.edu/~jkrause/cars) are offline.
Get cars_train.tgz, cars_test.tgz, car_devkit.tgz and cars_test_annos_withlabels.mat from a mirror (e.g. the
"stanford-cars-dataset" copies on Kaggle) and arrange them as
    {folder}/cars_train/*.jpg
    {folder}/cars_test/*.jpg
    {folder}/devkit/                              (only needed without the split file)
    {folder}/cars_test_annos_withlabels.mat       (only needed without the split file)
The split file split_zhou_StanfordCars.json is downloaded by this command."""

SKETCH_MANUAL = """\
ImageNet-Sketch is not downloaded automatically. Get ImageNet-Sketch.zip via the links at
https://github.com/HaohanWang/ImageNet-Sketch, extract it and rename its sketch/ folder so that
    {folder}/images/<wnid>/*.JPEG   (1000 class folders)
classnames.txt is copied from imagenet/ (or downloaded) by this command."""

RECIPES_LIST: tuple[Recipe, ...] = (
    Recipe(
        "ImageNet",
        "imagenet",
        "imagenet",
        required=("images/train", "images/val", "classnames.txt"),
        steps=(Fetch(IMAGENET_CLASSNAMES, "classnames.txt"),),
        manual=IMAGENET_MANUAL,
        class_folders=(("images/train", 1000), ("images/val", 1000)),
    ),
    _split_recipe(
        "Caltech101",
        "caltech-101",
        "caltech101",
        "101_ObjectCategories",
        "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN",
        steps=(
            Extract(
                Source(
                    "caltech-101.zip",
                    url="https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
                    md5="3138e1922a9193bfa496528edbbc45d0",
                ),
                creates="101_ObjectCategories",
                nested="caltech-101/101_ObjectCategories.tar.gz",
            ),
        ),
    ),
    _split_recipe(
        "OxfordPets",
        "oxford_pets",
        "oxford_pets",
        "images",
        "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs",
        steps=(
            Extract(
                Source(
                    "images.tar.gz",
                    url="https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
                    md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
                ),
                creates="images",
            ),
            Extract(
                Source(
                    "annotations.tar.gz",
                    url="https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
                    md5="95a8c909bbe2e81eed6a22bccdf3f68f",
                ),
                creates="annotations",
            ),
        ),
    ),
    _split_recipe(
        "StanfordCars",
        "stanford_cars",
        "stanford_cars",
        "",
        "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT",
        required=("cars_train", "cars_test", "split_zhou_StanfordCars.json"),
        manual=CARS_MANUAL,
    ),
    _split_recipe(
        "OxfordFlowers",
        "oxford_flowers",
        "oxford_flowers",
        "jpg",
        "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT",
        steps=(
            Extract(
                Source(
                    "102flowers.tgz",
                    url="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",
                    md5="52808999861908f626f3c1f4e79d11fa",
                ),
                creates="jpg",
            ),
            Fetch(
                Source(
                    "imagelabels.mat",
                    url="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat",
                    md5="e0620be6f572b9609742df49c70aed4d",
                ),
                "imagelabels.mat",
            ),
            Fetch(Source("cat_to_name.json", drive_id="1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0"), "cat_to_name.json"),
        ),
    ),
    _split_recipe(
        "Food101",
        "food-101",
        "food101",
        "images",
        "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl",
        steps=(
            Extract(
                Source(
                    "food-101.tar.gz",
                    url="http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
                    md5="85eeb15f3717b99a5da872d97d918f87",
                ),
                creates="images",
            ),
        ),
    ),
    Recipe(
        "FGVCAircraft",
        "fgvc_aircraft",
        "fgvc_aircraft",
        required=(
            "images",
            "variants.txt",
            "images_variant_train.txt",
            "images_variant_val.txt",
            "images_variant_test.txt",
        ),
        steps=(
            Extract(
                Source(
                    "fgvc-aircraft-2013b.tar.gz",
                    url="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
                ),
                creates="images",
            ),
        ),
        image_lists=("images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt"),
        list_image_path="images/{}.jpg",
    ),
    _split_recipe(
        "SUN397",
        "sun397",
        "sun397",
        "SUN397",
        "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq",
        steps=(
            Extract(
                Source(
                    "SUN397.tar.gz",
                    url="http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
                    md5="8ca2778205c41d23104230ba66911c7a",
                ),
                creates="SUN397",
            ),
            Extract(
                Source("Partitions.zip", url="https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip"),
                creates="ClassName.txt",
            ),
        ),
    ),
    _split_recipe(
        "DescribableTextures",
        "dtd",
        "dtd",
        "images",
        "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x",
        steps=(
            Extract(
                Source(
                    "dtd-r1.0.1.tar.gz",
                    url="https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                    md5="fff73e5086ae6bdbea199a49dfb8a4c1",
                ),
                creates="images",
            ),
        ),
        aliases=("DTD",),
    ),
    _split_recipe(
        "EuroSAT",
        "eurosat",
        "eurosat",
        "2750",
        "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o",
        steps=(
            Extract(
                # The original madm.dfki.de link is offline; this is the same RGB archive, as torchvision uses it.
                Source(
                    "EuroSAT.zip",
                    url="https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
                    "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
                    md5="c8fa014336c82ac7804f0398fcb19387",
                ),
                creates="2750",
            ),
        ),
    ),
    _split_recipe(
        "UCF101",
        "ucf101",
        "ucf101",
        "UCF-101-midframes",
        "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y",
        steps=(
            Extract(
                Source("UCF-101-midframes.zip", drive_id="10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O"),
                creates="UCF-101-midframes",
            ),
        ),
    ),
    _imagenet_variant(
        "ImageNetV2",
        "imagenetv2",
        "imagenetv2",
        "imagenetv2-matched-frequency-format-val",
        1000,
        steps=(
            Extract(
                Source(
                    "imagenetv2-matched-frequency.tar.gz",
                    url="https://s3-us-west-2.amazonaws.com/imagenetv2public/imagenetv2-matched-frequency.tar.gz",
                ),
                creates="imagenetv2-matched-frequency-format-val",
            ),
        ),
    ),
    _imagenet_variant("ImageNetSketch", "imagenet-sketch", "imagenet_sketch", "images", 1000, manual=SKETCH_MANUAL),
    _imagenet_variant(
        "ImageNetA",
        "imagenet-adversarial",
        "imagenet_a",
        "imagenet-a",
        200,
        steps=(
            Extract(
                Source("imagenet-a.tar", url="https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar"),
                creates="imagenet-a",
            ),
        ),
    ),
    _imagenet_variant(
        "ImageNetR",
        "imagenet-rendition",
        "imagenet_r",
        "imagenet-r",
        200,
        steps=(
            Extract(
                Source("imagenet-r.tar", url="https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"),
                creates="imagenet-r",
            ),
        ),
    ),
    Recipe(
        "MYCIFAR100",
        "cifar100",
        "cifar100",
        required=("images/train", "images/test"),
        steps=(Build(_write_cifar100, "images", "Writing CIFAR-100 as PNG files"),),
        class_folders=(("images/train", 100), ("images/test", 100)),
        aliases=("CIFAR100",),
    ),
    Recipe(
        "SyntheticShapes",
        "synthetic_shapes",
        "synthetic_shapes",
        required=("images", "split_zhou_SyntheticShapes.json"),
        steps=(Build(_write_synthetic, "split_zhou_SyntheticShapes.json", "Generating the synthetic images"),),
        split_file="split_zhou_SyntheticShapes.json",
        image_subdir="images",
        aliases=("synthetic",),
    ),
)

RECIPES: dict[str, Recipe] = {r.name: r for r in RECIPES_LIST}


def _key(name: str) -> str:
    return name.lower().replace("-", "_")


def resolve_names(names: Sequence[str]) -> list[Recipe]:
    """Recipes for command-line names (registered names, config names, aliases, ``all``; any case).

    Raises:
        KeyError: An unknown name; the message lists the known ones.
    """
    lookup = {}
    for r in RECIPES_LIST:
        for n in (r.name, r.config, *r.aliases):
            lookup[_key(n)] = r
    out: list[Recipe] = []
    for name in names:
        if _key(name) == "all":
            chosen = list(RECIPES_LIST)
        elif _key(name) in lookup:
            chosen = [lookup[_key(name)]]
        else:
            raise KeyError(f"unknown dataset {name!r}; choose from: all, {', '.join(r.name for r in RECIPES_LIST)}")
        out.extend(r for r in chosen if r not in out)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Checking


def _count_missing_images(split_path: Path, image_dir: Path) -> tuple[int, int, list[str]]:
    """``(missing, total, first missing paths)`` for the images a split file lists."""
    with open(split_path) as f:
        split = json.load(f)
    missing, total, examples = 0, 0, []
    for key in ("train", "val", "test"):
        for entry in split[key]:
            total += 1
            path = image_dir / entry[0]
            if not path.is_file():
                missing += 1
                if len(examples) < 3:
                    examples.append(str(path))
    return missing, total, examples


def check_dataset(recipe: Recipe, root: Union[str, os.PathLike]) -> list[str]:
    """Problems with a prepared dataset folder (an empty list when it is complete).

    Checks the required paths, the number of class folders, and that the split file is valid JSON listing
    only existing images.
    """
    folder = Path(root).expanduser().resolve() / recipe.folder
    if not folder.is_dir():
        return [f"missing folder {folder}"]
    problems = [f"missing {folder / p}" for p in recipe.required if not (folder / p).exists()]
    for subdir, n in recipe.class_folders:
        path = folder / subdir
        if path.is_dir():
            found = sum(1 for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
            if found != n:
                problems.append(f"{path} has {found} class folders, expected {n}")
    split_path = folder / recipe.split_file if recipe.split_file else None
    if split_path is not None and split_path.is_file():
        try:
            missing, total, examples = _count_missing_images(split_path, folder / recipe.image_subdir)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            problems.append(f"{split_path} is malformed ({type(e).__name__}: {e}); delete it and run again")
        else:
            if missing:
                problems.append(
                    f"{missing} of {total} images listed in {split_path.name} are missing, e.g. {', '.join(examples)}"
                )
    return problems


#: Extensions of image files, for folders whose every image counts (no split file names them).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_DECODE_CHUNK = 1024


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def referenced_images(recipe: Recipe, root: Union[str, os.PathLike]) -> list[Path]:
    """The existing image files that the dataset's splits are read from, in a fixed order, without duplicates.

    * datasets with a split file: the images it lists (without the file: every image under the image folder,
      from which the dataset class would create the split);
    * FGVC-Aircraft: the images its split lists name;
    * image-folder datasets (ImageNet and its variants, CIFAR-100): every file in every class folder, which is
      what their dataset classes read.

    Missing images are left out (``--check`` counts them).
    """
    folder = Path(root).expanduser().resolve() / recipe.folder
    paths: list[Path] = []
    split_path = folder / recipe.split_file if recipe.split_file else None
    if split_path is not None and split_path.is_file():
        with open(split_path) as f:
            split = json.load(f)
        paths = [folder / recipe.image_subdir / entry[0] for key in ("train", "val", "test") for entry in split[key]]
    elif split_path is not None and (folder / recipe.image_subdir).is_dir():
        paths = sorted(p for p in (folder / recipe.image_subdir).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    for name in recipe.image_lists:
        if (folder / name).is_file():
            with open(folder / name) as f:
                ids = [line.split(maxsplit=1)[0] for line in f if line.strip()]
            paths += [folder / recipe.list_image_path.format(i) for i in ids]
    for subdir, _ in recipe.class_folders:
        if (folder / subdir).is_dir():
            for class_dir in _subdirs(folder / subdir):
                paths += _files(class_dir)
    return [p for p in dict.fromkeys(paths) if p.is_file()]


def decode_image(path: Union[str, os.PathLike]) -> Optional[str]:
    """None if the image opens and decodes completely, else ``"<error type>: <message>"``.

    Decodes as Dassl's ``read_image`` does for training and evaluation: ``Image.open(path).convert("RGB")``,
    which reads every pixel.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.convert("RGB")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
        return f"{type(e).__name__}: {e}"
    return None


def decode_images(paths: Sequence[Path], workers: int = 1, desc: str = "decoding") -> list[tuple[Path, str]]:
    """``(path, error)`` for every image of ``paths`` that does not decode, in order; with a progress bar.

    Args:
        paths: Image files.
        workers: Threads decoding in parallel (PIL releases the GIL while it decodes).
        desc: Label of the progress bar.
    """
    bad: list[tuple[Path, str]] = []
    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(total=len(paths), desc=desc, unit="img") as bar:
        for start in range(0, len(paths), _DECODE_CHUNK):
            chunk = paths[start : start + _DECODE_CHUNK]
            for path, error in zip(chunk, pool.map(decode_image, chunk)):
                if error is not None:
                    bad.append((path, error))
                bar.update()
    return bad


def decode_problems(recipe: Recipe, root: Union[str, os.PathLike], workers: int = 1) -> list[str]:
    """One problem per image the dataset's splits reference that cannot be decoded (see :func:`decode_images`)."""
    try:
        paths = referenced_images(recipe, root)
    except (ValueError, KeyError, TypeError, IndexError) as e:  # a malformed split file (reported by the check)
        return [f"cannot list the images to decode ({type(e).__name__}: {e})"]
    bad = decode_images(paths, workers, desc=f"{recipe.name}: decoding")
    if not bad:
        return []
    return [f"{len(bad)} of {len(paths)} images cannot be decoded (repair or replace them):"] + [
        f"{path}: {error}" for path, error in bad
    ]


# ----------------------------------------------------------------------------------------------------------------
# Preparing


def prepare_dataset(recipe: Recipe, root: Union[str, os.PathLike], keep_archives: bool = False) -> list[str]:
    """Run the recipe's steps (skipping those already done) and return the remaining problems.

    Raises:
        PrepareError: A step failed (download, checksum, extraction).
    """
    root = Path(root).expanduser().resolve()
    folder = root / recipe.folder
    folder.mkdir(parents=True, exist_ok=True)
    downloads = root / DOWNLOAD_DIRNAME
    for step in recipe.steps:
        if step.done(folder):
            continue
        step.run(folder, downloads, keep_archives)
    return check_dataset(recipe, root)


def _report(recipe: Recipe, root: Path, problems: list[str], show_manual: bool, show_command: bool = True) -> None:
    if not problems:
        print(f"[ok] {recipe.name}: {root / recipe.folder}")
        return
    print(f"[incomplete] {recipe.name}:")
    for p in problems:
        print(f"  - {p}")
    if show_manual and recipe.manual:
        print("  " + recipe.manual.format(folder=root / recipe.folder).replace("\n", "\n  "))
    elif not show_manual and show_command:
        print(f"  prepare it with: python -m datasets.prepare {recipe.name} --root {root}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit code (0: every dataset complete)."""
    parser = argparse.ArgumentParser(
        prog="python -m datasets.prepare",
        description="Download and lay out datasets in CoOp's folder format (see docs/DATASETS.md).",
    )
    parser.add_argument("names", nargs="+", metavar="NAME", help="dataset names, e.g. OxfordPets or oxford_pets; 'all'")
    parser.add_argument("--root", required=True, help="data root (DATASET.ROOT), e.g. $DATA")
    parser.add_argument("--check", action="store_true", help="only verify existing folders; download nothing")
    parser.add_argument("--keep-archives", action="store_true", help=f"keep archives in ROOT/{DOWNLOAD_DIRNAME}/")
    parser.add_argument(
        "--decode",
        action="store_true",
        help="also open and fully decode every image the splits reference; list those that fail",
    )
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="threads decoding images (--decode)"
    )
    args = parser.parse_args(argv)
    try:
        recipes = resolve_names(args.names)
    except KeyError as e:
        parser.error(e.args[0])
    root = Path(args.root).expanduser().resolve()

    failed = []
    for recipe in recipes:
        if args.check:
            problems = check_dataset(recipe, root)
        else:
            print(f"== {recipe.name} -> {root / recipe.folder}")
            try:
                problems = prepare_dataset(recipe, root, keep_archives=args.keep_archives)
            except (PrepareError, OSError) as e:
                problems = [f"{type(e).__name__}: {e}"]
        # Preparing again does not replace an image that exists, so the prepare command is no advice for those.
        undecodable = decode_problems(recipe, root, args.workers) if args.decode else []
        _report(
            recipe,
            root,
            problems + undecodable,
            show_manual=not args.check and bool(problems),
            show_command=bool(problems),
        )
        if problems or undecodable:
            failed.append(recipe.name)
    if failed:
        print(f"Incomplete: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
