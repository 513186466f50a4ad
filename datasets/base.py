"""Shared machinery of the Dassl dataset classes, in CoOp's on-disk formats.

Every behaviour that published numbers depend on follows CoOp (Zhou et al., "Learning to Prompt for
Vision-Language Models", IJCV 2022) exactly, so that existing data folders and few-shot caches are reused as
they are and a seed selects the same images:

* split files ``split_zhou_<Name>.json``: ``{"train": [[relpath, label, classname], ...], "val": ..., "test":
  ...}`` with paths relative to the dataset's image folder;
* few-shot sampling with Dassl's ``generate_fewshot_dataset`` (the global ``random`` module, seeded by the
  trainer with ``set_random_seed(cfg.SEED)`` before the dataset is built): ``K`` training images per class and
  ``min(K, 4)`` validation images per class, cached in ``split_fewshot/shot_{K}-seed_{S}.pkl`` (a class with
  fewer than ``K`` images contributes all it has); a run that reads a cache makes the same ``random`` draws again
  (and drops them), so the random state after building the dataset never depends on whether the cache existed;
  caches are read with a restricted unpickler that admits
  only ``Datum`` and plain data, so a cache found in a data folder cannot execute code;
* base-to-new subsampling: the first ``ceil(n / 2)`` sorted labels are the base classes, the rest the new
  classes, each relabelled from 0;
* when a split file is missing, the split is created from the raw annotations with the same random calls as
  CoOp's code (so the global random state, and hence the few-shot subsets, evolve the same way). Prefer the
  published split files: ``python -m datasets.prepare NAME --root DATA`` downloads them.

Caches hold absolute image paths (CoOp's format, kept so that CoOp-family code reads ours and we read theirs);
what is read from one is resolved under the current dataset folder (the part of the stored path after the
dataset's folder name), so a data folder copied or moved with its caches trains on its own images. A few-shot
cache naming an image this folder's split does not have raises :class:`StaleCacheError`.

The sampled few-shot images are decoded when the dataset is built, before any training: a corrupt one raises
:class:`BadImageError` naming it and the command that lists every bad image of the dataset. With
``LAMM_CACHE.DECODED_IMAGES`` the decoded training images are kept (:attr:`FewShotDataset.decoded`) for the
training loader, so each is decoded once.

A missing folder or file raises :class:`DatasetNotPreparedError`, whose message names the path and the prepare
command; a malformed split file raises :class:`DatasetFormatError`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import random
import re
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
from yacs.config import CfgNode

from lamm_plugin.errors import MissingFileError, UserError
from lamm_plugin.files import open_text, write_atomic

from .safe_pickle import DATUM_GLOBALS, restricted_load

__all__ = [
    "BadImageError",
    "DatasetFormatError",
    "DatasetNotPreparedError",
    "EvalOnlyDataset",
    "FewShotDataset",
    "SplitFileDataset",
    "StaleCacheError",
    "camel_to_words",
    "check_command",
    "decode_image",
    "find_bad_images",
    "list_class_folders",
    "load_datum_pickle",
    "make_datum",
    "prepare_command",
    "read_class_folders",
    "read_classnames",
    "read_split",
    "rebase_impaths",
    "register_dataset",
    "select_classes",
    "split_folders",
    "split_per_class",
    "split_trainval",
    "subsample_classes",
    "write_split",
]

SUBSAMPLE_CHOICES = ("all", "base", "new")
FEWSHOT_DIRNAME = "split_fewshot"
Split = list[Datum]


class DatasetNotPreparedError(MissingFileError):
    """A folder or file that a dataset needs does not exist."""


class DatasetFormatError(UserError):
    """A dataset file exists but does not have the expected format."""


class StaleCacheError(DatasetFormatError):
    """A few-shot cache names images that this copy of the dataset does not have (it was drawn from another)."""


class BadImageError(DatasetFormatError):
    """An image of the dataset cannot be decoded; the message names it and the command that lists every bad one."""


def register_dataset(cls: type) -> type:
    """Class decorator: register ``cls`` in Dassl's ``DATASET_REGISTRY`` unless its name is taken.

    Host repositories (CoOp, MaPLe, ...) register classes with the same names and formats first; Dassl's
    registry raises on a duplicate, so the host's class is kept and this one stays importable but unregistered.
    """
    if cls.__name__ not in DATASET_REGISTRY.registered_names():
        DATASET_REGISTRY.register(cls)
    return cls


def prepare_command(name: str, root: str) -> str:
    """The shell command that prepares dataset ``name`` under ``root``."""
    return f"python -m datasets.prepare {name} --root {root}"


def check_command(name: str, root: str) -> str:
    """The shell command that lists every image of dataset ``name`` under ``root`` that does not decode."""
    return f"{prepare_command(name, root)} --check --decode"


def _decoded(path: str) -> tuple[Any, Optional[str]]:
    """``(RGB image, None)`` when the image decodes completely as Dassl's ``read_image`` reads it, else
    ``(None, "<error type>: <message>")``."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB"), None  # reads every pixel: a truncated file fails here, not at open
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... for broken files
        return None, f"{type(e).__name__}: {e}"


def _opened(path: str) -> tuple[None, Optional[str]]:
    """``(None, None)`` when the image's header opens as Dassl's ``read_image`` opens it (a known format, not a
    decompression bomb), else ``(None, "<error type>: <message>")``. Reads the header only: cheap for any split."""
    from PIL import Image

    try:
        with Image.open(path):
            return None, None
    except Exception as e:  # UnidentifiedImageError, DecompressionBombError, OSError, ...
        return None, f"{type(e).__name__}: {e}"


def decode_image(path: str) -> Optional[str]:
    """None if the image decodes completely as Dassl's ``read_image`` reads it, else ``"<error type>: <message>"``."""
    return _decoded(path)[1]


def find_bad_images(
    paths: Sequence[str],
    limit: Optional[int] = None,
    workers: int = 0,
    keep: Optional[Callable[[str, Any], object]] = None,
    header_only: bool = False,
) -> list[tuple[str, str]]:
    """``(path, error)`` of the images of ``paths`` that do not decode, in order, at most ``limit`` of them.

    Args:
        paths: Image files.
        limit: Stop after this many bad images (None: look at all).
        workers: Decoding threads (PIL releases the GIL while it decodes); 0 = one per CPU, at most 8.
        keep: Called with ``(path, decoded RGB image)`` for every image that decodes, in order (the decoded-image
            cache keeps them); without it the decoded pixels are dropped.
        header_only: Only open each image (its header: format and size, which finds unknown formats and
            decompression bombs) instead of decoding every pixel.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    bad: list[tuple[str, str]] = []
    chunk = 256 if keep is None else 64  # decoded images of a chunk are held until kept
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(paths), chunk):
            part = paths[start : start + chunk]
            for path, (image, error) in zip(part, pool.map(_opened if header_only else _decoded, part)):
                if error is not None:
                    bad.append((path, error))
                elif keep is not None:
                    keep(path, image)
            if limit is not None and len(bad) >= limit:
                return bad[:limit]
    return bad


def bad_images_message(
    bad: Sequence[tuple[str, str]], name: str, root: str, where: str, command: Optional[str] = None
) -> str:
    """What :class:`BadImageError` says: the images (at most 5), why they fail, and the command listing all
    (``command``, default :func:`check_command` of ``name`` and ``root``)."""
    shown = "\n".join(f"  {path} ({error})" for path, error in bad[:5])
    more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
    return (
        f"{name}: {len(bad)} image(s) {where} cannot be decoded:\n{shown}{more}\n"
        f"Repair or replace them; list every image of the dataset that does not decode with: "
        f"{command or check_command(name, root)}"
    )


def _path_parts(path: str) -> list[str]:
    # Caches written on Windows hold backslashes.
    return [part for part in re.split(r"[\\/]+", path) if part]


def rebase_impaths(items: Split, dataset_dir: str) -> Split:
    """``items`` with each image path moved under ``dataset_dir``: the part after the last path component equal to
    the dataset folder's name is kept (``/old/data/oxford_pets/images/x.jpg`` -> ``<dataset_dir>/images/x.jpg``).

    Paths that do not contain the folder's name are kept as they are. Labels and class names are unchanged.
    """
    name = os.path.basename(os.path.normpath(dataset_dir))
    out = []
    for item in items:
        parts = _path_parts(item.impath)
        if name in parts:
            i = len(parts) - 1 - parts[::-1].index(name)
            impath = os.path.join(dataset_dir, *parts[i + 1 :])
            if impath != item.impath:
                item = _datum(impath, item.label, item.classname, item.domain)
        out.append(item)
    return out


def _datum(impath: str, label: int, classname: str, domain: int = 0) -> Datum:
    """A ``Datum`` without Dassl's existence check (existence is checked where it matters, with a message)."""
    item = Datum.__new__(Datum)
    item._impath, item._label, item._classname, item._domain = impath, label, classname, domain
    return item


def _listdir(path: str, sort: bool = True) -> list[str]:
    """Non-hidden entries of a folder (Dassl's ``listdir_nohidden``).

    With ``sort=False`` the order is the file system's, which is what CoOp uses for images within a class:
    few-shot sampling and split creation depend on it, so it is kept for parity with caches made by CoOp.
    """
    names = [n for n in os.listdir(path) if not n.startswith(".")]
    return sorted(names) if sort else names


def _check_split_entries(name: str, path: str, entries: object) -> list:
    if not isinstance(entries, list):
        raise DatasetFormatError(f"{path}: '{name}' must be a list of [relpath, label, classname], got {entries!r}")
    for i, entry in enumerate(entries):
        ok = (
            isinstance(entry, (list, tuple))
            and len(entry) == 3
            and isinstance(entry[0], str)
            and isinstance(entry[1], int)
            and not isinstance(entry[1], bool)
            and isinstance(entry[2], str)
        )
        if not ok:
            raise DatasetFormatError(
                f"{path}: entry {i} of '{name}' is {entry!r}, expected [relpath, label, classname]"
            )
    return entries


def make_datum(impath: str, label: int, classname: str, listed_in: str = "") -> Datum:
    """A ``Datum``, or :class:`DatasetNotPreparedError` naming the image (and the list naming it) if it is missing.

    Dassl's ``Datum`` only fails an ``assert`` on a missing file.
    """
    if not os.path.isfile(impath):
        raise DatasetNotPreparedError(f"image not found: {impath}" + (f" (listed in {listed_in})" if listed_in else ""))
    return Datum(impath=impath, label=label, classname=classname)


def load_datum_pickle(path: str, keys: Sequence[str]) -> dict[str, Split]:
    """Read a pickled ``{key: [Datum, ...]}`` (a few-shot cache, an image listing) without executing code.

    Only Dassl's ``Datum`` and plain containers and scalars are admitted (:mod:`datasets.safe_pickle`); files
    written by CoOp or Dassl (``pickle.dump(..., protocol=pickle.HIGHEST_PROTOCOL)``) are read as they are.

    Args:
        path: The pickle file; it is derived data, so every error says to delete it to regenerate it.
        keys: Keys the dict must have.

    Raises:
        UnsafePickleError: The file names any other function or class (nothing in it is executed).
        PickleLoadError: The file is not a readable pickle.
        DatasetFormatError: The file holds something else than lists of ``Datum`` under ``keys``.
    """
    remedy = f"It is derived data: delete it to regenerate it (rm {path})."
    data = restricted_load(path, DATUM_GLOBALS, remedy)
    if not isinstance(data, dict) or any(k not in data for k in keys):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DatasetFormatError(f"{path} must hold a dict with keys {list(keys)}, found {found}. {remedy}")
    datum = DATUM_GLOBALS[("dassl.data.datasets.base_dataset", "Datum")]()
    for key in keys:
        items = data[key]
        ok = isinstance(items, list) and all(
            type(d) is datum
            and isinstance(getattr(d, "_impath", None), str)
            and type(getattr(d, "_label", None)) is int
            and isinstance(getattr(d, "_classname", None), str)
            for d in items
        )
        if not ok:
            raise DatasetFormatError(f"{path}: '{key}' must be a list of Dassl Datum objects. {remedy}")
    return data


def read_split(path: str, image_dir: str) -> tuple[Split, Split, Split]:
    """Read a CoOp split file.

    Args:
        path: The ``split_zhou_*.json`` file.
        image_dir: Folder that the relative paths in the file start from.

    Returns:
        ``(train, val, test)`` lists of ``Datum``.

    Raises:
        DatasetFormatError: The file is not valid JSON or lacks the expected structure.
        DatasetNotPreparedError: Images listed in the file do not exist.
    """
    try:
        with open_text(path, "split file") as f:
            split = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path} is not valid JSON ({e}); delete it and prepare the dataset again") from e
    if not isinstance(split, dict) or any(k not in split for k in ("train", "val", "test")):
        keys = sorted(split) if isinstance(split, dict) else type(split).__name__
        raise DatasetFormatError(f"{path} must be a JSON object with keys 'train', 'val' and 'test', got {keys}")

    out = []
    missing: list[str] = []
    for name in ("train", "val", "test"):
        items = []
        for relpath, label, classname in _check_split_entries(name, path, split[name]):
            impath = os.path.join(image_dir, relpath)
            if not os.path.isfile(impath):
                missing.append(impath)
                continue
            items.append(Datum(impath=impath, label=label, classname=classname))
        out.append(items)
    if missing:
        raise DatasetNotPreparedError(
            f"{len(missing)} image(s) listed in {path} do not exist, e.g. {missing[0]}; "
            f"is the image folder {image_dir} complete?"
        )
    return out[0], out[1], out[2]


def write_split(train: Split, val: Split, test: Split, path: str, image_dir: str) -> None:
    """Write a CoOp split file with paths relative to ``image_dir`` (atomically: temporary file, then rename)."""

    def entries(items: Split) -> list:
        return [[os.path.relpath(d.impath, image_dir), d.label, d.classname] for d in items]

    split = {"train": entries(train), "val": entries(val), "test": entries(test)}
    text = json.dumps(split, indent=4, separators=(",", ": "))
    write_atomic(path, lambda f: f.write(text.encode()))
    print(f"Saved split to {path}")


def split_trainval(trainval: Split, p_val: float = 0.2) -> tuple[Split, Split]:
    """Split ``trainval`` per class into train and val, as CoOp's ``OxfordPets.split_trainval`` does.

    Classes are visited in order of first appearance; each class's indices are shuffled with the global
    ``random`` module and the first ``round(n * p_val)`` go to val.
    """
    tracker: dict[int, list[int]] = defaultdict(list)
    for idx, item in enumerate(trainval):
        tracker[item.label].append(idx)
    train, val = [], []
    for label, idxs in tracker.items():
        n_val = round(len(idxs) * p_val)
        if n_val < 1:
            raise DatasetFormatError(f"class {label} has {len(idxs)} train+val image(s): too few to split off val")
        random.shuffle(idxs)
        for n, idx in enumerate(idxs):
            (val if n < n_val else train).append(trainval[idx])
    return train, val


def split_per_class(
    groups: Iterable[tuple[int, str, list[str]]], p_trn: float = 0.5, p_val: float = 0.2
) -> tuple[Split, Split, Split]:
    """Split each class's images into train/val/test fractions, as CoOp's ``read_and_split_data`` does.

    Args:
        groups: ``(label, classname, impaths)`` per class, in the order the random calls are made.
        p_trn: Fraction for training (rounded).
        p_val: Fraction for validation (rounded); the rest is test.
    """
    train, val, test = [], [], []
    for label, classname, impaths in groups:
        impaths = list(impaths)
        random.shuffle(impaths)
        n = len(impaths)
        n_train, n_val = round(n * p_trn), round(n * p_val)
        if n_train < 1 or n_val < 1 or n - n_train - n_val < 1:
            raise DatasetFormatError(f"class {classname!r} has {n} image(s): too few for a train/val/test split")
        for dest, chunk in ((train, impaths[:n_train]), (val, impaths[n_train : n_train + n_val])):
            dest.extend(Datum(impath=p, label=label, classname=classname) for p in chunk)
        test.extend(Datum(impath=p, label=label, classname=classname) for p in impaths[n_train + n_val :])
    return train, val, test


def split_folders(
    image_dir: str,
    p_trn: float = 0.5,
    p_val: float = 0.2,
    ignored: Sequence[str] = (),
    new_cnames: Optional[Mapping[str, str]] = None,
) -> tuple[Split, Split, Split]:
    """Split a one-folder-per-class image tree (CoOp's ``DescribableTextures.read_and_split_data``).

    Labels follow the sorted folder names (``ignored`` folders dropped); ``new_cnames`` renames folders to
    class names. Like CoOp, images are taken in file-system order (``os.listdir``) before shuffling, so a split
    made here equals CoOp's made on the same folder; it can differ on another file system.
    """
    groups = []
    for label, folder in enumerate(c for c in _listdir(image_dir) if c not in ignored):
        folder_dir = os.path.join(image_dir, folder)
        impaths = [os.path.join(folder_dir, im) for im in _listdir(folder_dir, sort=False)]
        groups.append((label, (new_cnames or {}).get(folder, folder), impaths))
    return split_per_class(groups, p_trn, p_val)


def select_classes(splits: Sequence[Split], labels: Sequence[int]) -> list[Split]:
    """Keep only items whose label is in ``labels``, relabelled ``labels[i] -> i``, in every split."""
    relabel = {y: i for i, y in enumerate(labels)}
    return [
        [Datum(impath=d.impath, label=relabel[d.label], classname=d.classname) for d in split if d.label in relabel]
        for split in splits
    ]


def subsample_classes(*splits: Split, subsample: str = "all") -> list[Split]:
    """CoOp's base-to-new protocol: keep the base (first half) or new (second half) classes.

    The labels of the first split are sorted and cut at ``ceil(n / 2)``; the kept labels are renumbered from 0.

    Args:
        splits: Lists of ``Datum``; the first one defines the label set.
        subsample: ``all``, ``base`` or ``new``.
    """
    if subsample not in SUBSAMPLE_CHOICES:
        raise UserError(f"DATASET.SUBSAMPLE_CLASSES must be one of {SUBSAMPLE_CHOICES}, got {subsample!r}")
    if subsample == "all":
        return list(splits)
    labels = sorted({d.label for d in splits[0]})
    m = math.ceil(len(labels) / 2)
    print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    return select_classes(splits, labels[:m] if subsample == "base" else labels[m:])


def read_classnames(path: str) -> OrderedDict[str, str]:
    """Read ``<folder> <class name with spaces>`` lines (ImageNet's ``classnames.txt``) into an ordered dict."""
    classnames: OrderedDict[str, str] = OrderedDict()
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            folder, _, name = line.partition(" ")
            if not name:
                raise DatasetFormatError(f"{path}:{lineno}: expected '<folder> <class name>', got {line!r}")
            classnames[folder] = name
    return classnames


def list_class_folders(image_dir: str, ignored: Sequence[str] = ()) -> list[str]:
    """Sorted sub-folder names of ``image_dir`` (files and ``ignored`` names skipped)."""
    return [f for f in _listdir(image_dir) if f not in ignored and os.path.isdir(os.path.join(image_dir, f))]


def read_class_folders(image_dir: str, folders: Sequence[str], classnames: Mapping[str, str]) -> Split:
    """All images of a one-folder-per-class tree; label ``i`` is ``folders[i]``, named by ``classnames``.

    Images are taken in file-system order, as CoOp does (few-shot sampling depends on the order).

    Raises:
        DatasetFormatError: A folder has no entry in ``classnames``.
        DatasetNotPreparedError: A folder does not exist.
    """
    items = []
    for label, folder in enumerate(folders):
        folder_dir = os.path.join(image_dir, folder)
        if folder not in classnames:
            raise DatasetFormatError(f"class folder {folder_dir} has no class name")
        if not os.path.isdir(folder_dir):
            raise DatasetNotPreparedError(f"class folder not found: {folder_dir}")
        for imname in _listdir(folder_dir, sort=False):
            items.append(Datum(impath=os.path.join(folder_dir, imname), label=label, classname=classnames[folder]))
    return items


def camel_to_words(name: str, sep: str = "_") -> str:
    """``ApplyEyeMakeup`` -> ``Apply_Eye_Makeup`` (CoOp's UCF101 class names)."""
    return sep.join(re.findall("[A-Z][^A-Z]*", name))


class _DatasetMixin:
    """The "missing path" error shared by every dataset class."""

    root = ""

    def require(self, path: str, what: str = "path", hint: str = "") -> str:
        """Return ``path`` if it exists, else raise :class:`DatasetNotPreparedError` naming it.

        Args:
            path: File or folder that must exist.
            what: Short description for the message.
            hint: Extra advice appended to the message.
        """
        if os.path.exists(path):
            return path
        msg = (
            f"{type(self).__name__}: {what} not found: {path}\n"
            f"Prepare the dataset with: {prepare_command(type(self).__name__, self.root)}\n"
            f"(check an existing folder with --check; see docs/DATASETS.md)"
        )
        raise DatasetNotPreparedError(msg + (f"\n{hint}" if hint else ""))

    def decode_command(self) -> str:
        """The shell command that lists every image of this dataset that does not decode."""
        return check_command(type(self).__name__, self.root)


class FewShotDataset(_DatasetMixin, DatasetBase):
    """A CoOp-style dataset: read the full splits, sample few shots per seed, optionally keep base/new classes.

    Subclasses set :attr:`dataset_dir` and implement :meth:`read_data`.

    Attributes:
        dataset_dir: Folder name under ``DATASET.ROOT`` (class attribute); the absolute path on instances.
        has_val: False for datasets whose validation set is the test set (ImageNet): few-shot caches then hold
            only ``train`` and only the training set is sampled, as in CoOp.
    """

    dataset_dir = ""
    has_val = True

    def __init__(self, cfg: CfgNode) -> None:
        self.root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.dataset_dir = os.path.join(self.root, self.folder_name(cfg))
        self.split_fewshot_dir = os.path.join(self.dataset_dir, FEWSHOT_DIRNAME)
        self.prepare(cfg)

        train, val, test = self.read_data()
        num_shots = int(cfg.DATASET.NUM_SHOTS)
        train, val = self.sample_few_shot(train, val, num_shots, cfg.SEED)
        subsample = cfg.DATASET.get("SUBSAMPLE_CLASSES", "all")
        if self.has_val:
            train, val, test = subsample_classes(train, val, test, subsample=subsample)
        else:
            train, test = subsample_classes(train, test, subsample=subsample)
            val = test
        #: The decoded training images, kept for the training loader (``LAMM_CACHE.DECODED_IMAGES``), or None.
        self.decoded = None
        if num_shots >= 1:
            # Few-shot subsets are small: decode them now rather than fail in the middle of an epoch, and keep the
            # decoded training images when the decoded-image cache is on (decoded once, not again by the loader).
            from lamm_plugin.dassl.decoded import store_for

            self.decoded = store_for(cfg)
            self.check_images(
                train + (val if self.has_val else []), "in the sampled few-shot subset", self.decoded, train
            )
        # Every image of every split opens (header only: cheap), so an image that cannot stops the run now, named,
        # and not after training.
        splits = {
            "in the training set": train if num_shots < 1 else [],
            "in the validation set": [] if val is test else val or [],  # no validation set: the test set serves
            "in the test set": test,
        }
        for where, items in splits.items():
            self.check_images(items, where, header_only=True)
        super().__init__(train_x=train, val=val, test=test)

    def check_images(
        self, items: Split, where: str, store: Any = None, kept: Sequence[Datum] = (), header_only: bool = False
    ) -> None:
        """Decode every image of ``items`` (``header_only``: open it); raise :class:`BadImageError` naming those
        that fail.

        Args:
            items: The images to check.
            where: Which images they are, for the message.
            store: A :class:`~lamm_plugin.dassl.decoded.DecodedImages` that keeps the decoded images of ``kept``.
            kept: The items whose decoded images ``store`` keeps (the training images).
        """
        wanted = {d.impath for d in kept}
        keep = (lambda path, image: path in wanted and store.put(path, image)) if store is not None else None
        bad = find_bad_images(list(dict.fromkeys(d.impath for d in items)), keep=keep, header_only=header_only)
        if bad:
            raise BadImageError(bad_images_message(bad, type(self).__name__, self.root, where, self.decode_command()))

    def folder_name(self, cfg: CfgNode) -> str:
        """Folder of the dataset under ``DATASET.ROOT`` (the class attribute :attr:`dataset_dir`)."""
        return type(self).dataset_dir

    def prepare(self, cfg: CfgNode) -> None:
        """Make sure the dataset folder exists; datasets that create their files override this."""
        self.require(self.dataset_dir, "dataset folder")

    def read_data(self) -> tuple[Split, Optional[Split], Split]:
        """The full ``(train, val, test)`` splits; ``val`` is None when :attr:`has_val` is False."""
        raise NotImplementedError

    def sample_few_shot(
        self, train: Split, val: Optional[Split], num_shots: int, seed: int
    ) -> tuple[Split, Optional[Split]]:
        """``num_shots`` training (and ``min(num_shots, 4)`` validation) images per class, cached per seed.

        The cache ``split_fewshot/shot_{K}-seed_{S}.pkl`` is CoOp's: a pickled ``{"train": [Datum],
        "val": [Datum]}`` (only ``train`` when :attr:`has_val` is False). An existing cache is read without
        executing code (:func:`load_datum_pickle`) and its images are looked up in this folder's full splits
        (:meth:`resolve_cached`). A class with fewer than ``num_shots`` images keeps them all.
        """
        if num_shots < 1:
            return train, val
        path = os.path.join(self.split_fewshot_dir, f"shot_{num_shots}-seed_{seed}.pkl")
        if os.path.exists(path):
            print(f"Loading preprocessed few-shot data from {path}")
            data = load_datum_pickle(path, ("train", "val") if self.has_val else ("train",))
            # The draws that wrote the cache are made again (and dropped), so that Python's ``random`` continues
            # as after a run that wrote it: a run restarted before its first checkpoint continues as the first
            # attempt did, which is also the original code's first run.
            with contextlib.redirect_stdout(io.StringIO()):
                self.generate_fewshot_dataset(train, num_shots=num_shots)
                if self.has_val:
                    self.generate_fewshot_dataset(val, num_shots=min(num_shots, 4))
            cached_train = self.resolve_cached(path, "train", data["train"], train)
            return cached_train, (self.resolve_cached(path, "val", data["val"], val) if self.has_val else val)

        train = self.generate_fewshot_dataset(train, num_shots=num_shots)
        data = {"train": train}
        if self.has_val:
            val = self.generate_fewshot_dataset(val, num_shots=min(num_shots, 4))
            data["val"] = val
        print(f"Saving preprocessed few-shot data to {path}")
        os.makedirs(self.split_fewshot_dir, exist_ok=True)
        write_atomic(path, lambda f: pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL))
        return train, val

    def resolve_cached(self, path: str, key: str, cached: Split, full: Split) -> Split:
        """The images of a few-shot cache's ``key`` list, as this dataset folder's split has them.

        Each cached path is moved under this dataset folder (:func:`rebase_impaths`) and must be an image of the
        full split ``full`` with the same label; else (a cache from another copy or version of the data, whose
        paths may name another machine's folder) it is stale and refused.

        Raises:
            StaleCacheError: Some cached images are not in ``full``; the message names them and the cache.
        """
        by_path = {d.impath: d for d in full}
        by_suffix: Optional[dict[tuple[str, ...], Datum]] = None
        resolved, stale = [], []
        for item, moved in zip(cached, rebase_impaths(cached, self.dataset_dir)):
            found = by_path.get(moved.impath)
            if found is None:
                # A path without this dataset's folder name (another layout): match the longest path suffix.
                if by_suffix is None:
                    by_suffix = {tuple(_path_parts(os.path.relpath(d.impath, self.dataset_dir))): d for d in full}
                parts = _path_parts(item.impath)
                for n in range(len(parts), 0, -1):
                    found = by_suffix.get(tuple(parts[-n:]))
                    if found is not None:
                        break
            if found is None or found.label != item.label or found.classname != item.classname:
                stale.append(item.impath)
            else:
                resolved.append(found)
        if stale:
            raise StaleCacheError(
                f"{path} is a stale few-shot cache: {len(stale)} of its {len(cached)} '{key}' images are not in this "
                f"copy of the dataset ({self.dataset_dir}) with the same label, e.g. {stale[0]}. It was drawn from "
                f"another copy or version of the data; using it would train on other images. Delete it to draw the "
                f"few-shot subset again: rm {path}"
            )
        return resolved


class SplitFileDataset(FewShotDataset):
    """A dataset described by a CoOp split file ``split_zhou_<Name>.json``.

    Subclasses set :attr:`image_subdir` (folder the split's relative paths start from; ``""`` for the dataset
    folder itself) and implement :meth:`make_split`, which creates the split from the raw annotations when the
    split file is missing (CoOp's behaviour).
    """

    image_subdir = "images"

    @property
    def image_dir(self) -> str:
        return os.path.join(self.dataset_dir, self.image_subdir)

    @property
    def split_path(self) -> str:
        return os.path.join(self.dataset_dir, f"split_zhou_{type(self).__name__}.json")

    def read_data(self) -> tuple[Split, Split, Split]:
        self.require(self.image_dir, "image folder")
        if os.path.exists(self.split_path):
            print(f"Reading split from {self.split_path}")
            return read_split(self.split_path, self.image_dir)
        print(
            f"Split file {self.split_path} not found: creating a new split from the raw annotations. It differs "
            f"from CoOp's published split; download that with: {prepare_command(type(self).__name__, self.root)}"
        )
        train, val, test = self.make_split()
        write_split(train, val, test, self.split_path, self.image_dir)
        return train, val, test

    def make_split(self) -> tuple[Split, Split, Split]:
        """Create the split from the raw annotations (called only when the split file is missing)."""
        raise NotImplementedError

    def require_for_split(self, path: str, what: str) -> str:
        """Like :meth:`require`, for raw annotations that only matter when the split file is missing."""
        return self.require(path, what, hint=f"(or place the split file {self.split_path}, which makes it unneeded)")


class EvalOnlyDataset(_DatasetMixin, DatasetBase):
    """An evaluation-only dataset (ImageNet-V2/-Sketch/-A/-R): train and test are the whole set.

    Few-shot and base/new settings are ignored, as in CoOp. Subclasses set :attr:`dataset_dir` and
    :attr:`image_subdir` and may override :meth:`read_data`.
    """

    dataset_dir = ""
    image_subdir = ""
    classnames_file = "classnames.txt"
    ignored: tuple[str, ...] = ()

    def __init__(self, cfg: CfgNode) -> None:
        self.root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.dataset_dir = os.path.join(self.root, type(self).dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, self.image_subdir)
        self.require(self.dataset_dir, "dataset folder")
        self.require(self.image_dir, "image folder")
        path = self.require(
            os.path.join(self.dataset_dir, self.classnames_file),
            "class-name file",
            hint="(it is ImageNet's classnames.txt: copy it from <root>/imagenet/classnames.txt)",
        )
        data = self.read_data(read_classnames(path))
        super().__init__(train_x=data, test=data)

    def read_data(self, classnames: Mapping[str, str]) -> Split:
        """All images; labels follow the sorted class folders."""
        return read_class_folders(self.image_dir, list_class_folders(self.image_dir, self.ignored), classnames)
