"""Checking a prepared dataset: the paths its dataset class needs, its class folders, the images its split lists,
whether each image file is complete (``--check``: its format's end marker is there) and (``--decode``) whether
every image decodes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Union

from tqdm import tqdm

from .steps import Recipe


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


# ---- complete files: a cheap check of every image, exact for the files it doubts -------------------------------
_TAIL = 64
_PADDING = b"\x00\r\n \t"


def looks_complete(path: Union[str, os.PathLike]) -> bool:
    """Whether an image file is whole, from its first and last bytes only (no decoding).

    JPEG must end with its end-of-image marker (``FF D9``, padding after it allowed), PNG with its ``IEND`` chunk,
    GIF with its trailer, and a BMP or WebP file must be as long as its header says. A file cut short by a broken
    download or copy fails this; so does an empty file and one with no known image header. TIFF files pass
    (their end cannot be told without reading the file); damage inside a file of the right length is only found
    by decoding (``--decode``).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL))
            tail = f.read()
    except OSError:
        return False
    if head.startswith(b"\xff\xd8\xff"):
        return tail.rstrip(_PADDING).endswith(b"\xff\xd9")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return tail.rstrip(_PADDING).endswith(b"IEND\xaeB`\x82")
    if head.startswith((b"GIF87a", b"GIF89a")):
        return tail.rstrip(b"\x00").endswith(b";")
    if head.startswith(b"BM") and len(head) >= 6:
        return int.from_bytes(head[2:6], "little") <= size
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return int.from_bytes(head[4:8], "little") + 8 <= size
    return head.startswith((b"II*\x00", b"MM\x00*"))


def damaged_problems(recipe: Recipe, root: Union[str, os.PathLike], workers: int = 1) -> list[str]:
    """One problem per image the dataset's splits reference whose file is damaged (empty, cut short, no image).

    Every file is checked with :func:`looks_complete`; those it doubts are decoded (:func:`decode_image`), so a
    file is reported only when it does not decode. Cheaper than decoding everything (``--decode``), which also
    finds damage inside files of the right length.
    """
    try:
        paths = referenced_images(recipe, root)
    except (ValueError, KeyError, TypeError, IndexError):  # a malformed split file (reported by the check)
        return []
    doubtful = []
    with (
        ThreadPoolExecutor(max(1, workers)) as pool,
        tqdm(total=len(paths), desc=f"{recipe.name}: checking file ends", unit="img") as bar,
    ):
        for start in range(0, len(paths), _DECODE_CHUNK):  # chunks: a million futures at once would not fit
            chunk = paths[start : start + _DECODE_CHUNK]
            doubtful += [path for path, ok in zip(chunk, pool.map(looks_complete, chunk)) if not ok]
            bar.update(len(chunk))
    bad = decode_images(doubtful, workers, desc=f"{recipe.name}: decoding doubtful files") if doubtful else []
    if not bad:
        return []
    return [f"{len(bad)} of {len(paths)} images are damaged (repair or replace them):"] + [
        f"{path}: {error}" for path, error in bad
    ]
