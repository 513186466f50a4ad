"""``Folder``: a dataset of one's own images, read from a folder tree or from list files, set up by yaml keys only.

``DATASET.NAME: "Folder"`` with the node ``DATASET.FOLDER`` (:data:`FOLDER_DEFAULTS`, added by
:func:`add_folder_config`) reads, from the folder ``DATASET.FOLDER.DIR`` (relative to ``DATASET.ROOT``, or absolute):

* an ImageFolder tree ``<DIR>/train/<class>/*`` with optional ``<DIR>/val/<class>/*`` and ``<DIR>/test/<class>/*``;
* or one folder of classes, ``<DIR>/<class>/*``, split per class into train, val and test;
* or list files: ``TRAIN`` (``VAL``, ``TEST``) naming a ``.csv`` or ``.txt`` file of ``path,label[,classname]``
  rows (a header row ``path,label[,classname]`` is allowed; a ``.txt`` line may separate by spaces), each path
  relative to the list file's folder or to ``DIR``, or absolute.

A split that is not there (no folder, no file) is drawn from the training images, per class, by ``FRACTIONS``
(train : val : test shares) with ``SPLIT_SEED``: each class's sorted file names are shuffled by a generator seeded
with the seed and the class, so the split depends on nothing else (not the file system's order, not ``SEED``, not
the other classes) and is written, with its parameters, beside the few-shot caches (``split_fewshot/<split tag>/
split.json``). ``FRACTIONS`` with a zero val share gives no validation set (the test set serves, as for ImageNet).

Labels follow the sorted class folders (list files: the sorted labels of the training list, numerically when all
are integers). Class names come from ``CLASSNAMES`` (a file of ``<folder or label> <class name>`` lines, ImageNet's
``classnames.txt`` format), else from the list's third column, else from the folder or label itself, cleaned as
CoOp cleans class names (underscores are spaces; lower case with ``LOWERCASE``, as CoOp's Oxford Pets).

Everything else is the benchmark datasets' machinery (:class:`~datasets.base.FewShotDataset`): few-shot subsets
and their caches (``<DIR>/split_fewshot/``), ``DATASET.SUBSAMPLE_CLASSES`` base/new, the decoding of the sampled
images, continual stages; ``python -m datasets.prepare Folder --root ROOT --dataset-config-file FILE --check
--decode`` checks every image (:func:`folder_problems`).

Bad input stops with :class:`~datasets.base.DatasetFormatError` or :class:`~datasets.base.DatasetNotPreparedError`
naming the path and the remedy; files that are not images (by extension) in class folders are skipped, counted and
reported.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shlex
from collections.abc import Sequence
from typing import Any, Optional

from yacs.config import CfgNode

from lamm_plugin.files import open_text, write_atomic
from lamm_plugin.tokens import clean_classname

from .base import (
    FEWSHOT_DIRNAME,
    DatasetFormatError,
    DatasetNotPreparedError,
    FewShotDataset,
    Split,
    _datum,
    read_classnames,
    register_dataset,
)
from .prepare.check import IMAGE_EXTENSIONS

__all__ = [
    "FOLDER_DEFAULTS",
    "FOLDER_NAME",
    "Folder",
    "add_folder_config",
    "clean_folder_name",
    "folder_check_command",
    "folder_options",
    "folder_problems",
    "read_folder_splits",
]

FOLDER_NAME = "Folder"
FOLDER_DEFAULTS: dict[str, Any] = {
    "DIR": "",  # the dataset's folder: relative to DATASET.ROOT, or absolute
    "TRAIN": "train",  # training images: a folder of class folders, or a .csv/.txt list (relative to DIR)
    "VAL": "val",  # validation images (optional: drawn from TRAIN by FRACTIONS when missing)
    "TEST": "test",  # test images (optional: drawn from TRAIN by FRACTIONS when missing)
    "FRACTIONS": (0.5, 0.2, 0.3),  # train, val, test shares of a split drawn from the training images (CoOp's DTD)
    "SPLIT_SEED": 1,  # seeds a drawn split (independent of SEED, which draws the few-shot subsets)
    "CLASSNAMES": "",  # optional '<folder or label> <class name>' file (relative to DIR)
    "LOWERCASE": True,  # lower-case class names taken from folders or labels
}
SPLITS = ("train", "val", "test")
LIST_EXTENSIONS = (".csv", ".txt")
SPLIT_RECORD = "split.json"


def add_folder_config(cfg: CfgNode) -> None:
    """Add the ``DATASET.FOLDER`` node with its defaults, unless it is there already.

    Call it before merging config files that set these keys: yacs refuses unknown keys, so a mistyped key
    (``DATASET.FOLDER.TRIAN``) fails the merge with its closest matches (:mod:`lamm_plugin.dassl.config`).
    """
    if "FOLDER" not in cfg.DATASET:
        cfg.DATASET.FOLDER = CfgNode(dict(FOLDER_DEFAULTS))


def folder_options(cfg: CfgNode) -> dict[str, Any]:
    """``FOLDER_DEFAULTS`` overridden by ``cfg.DATASET.FOLDER``, checked.

    Raises:
        DatasetFormatError: ``DIR`` is unset, or ``FRACTIONS`` is not three non-negative shares with a training share.
    """
    node = cfg.DATASET.get("FOLDER", None) or {}
    opts = {**FOLDER_DEFAULTS, **node}
    if not str(opts["DIR"]).strip():
        raise DatasetFormatError(
            "DATASET.FOLDER.DIR is not set: give the folder of your images (relative to --root, or absolute), e.g. "
            "DATASET.FOLDER.DIR my_images on the command line or in your dataset config (see "
            "configs/datasets/folder.yaml)"
        )
    fractions = tuple(float(f) for f in opts["FRACTIONS"])
    if len(fractions) != 3 or min(fractions) < 0 or fractions[0] <= 0:
        raise DatasetFormatError(
            f"DATASET.FOLDER.FRACTIONS must be three shares (train, val, test), each >= 0 and train > 0, got "
            f"{opts['FRACTIONS']!r}"
        )
    opts["FRACTIONS"] = fractions
    return opts


def clean_folder_name(name: str, lowercase: bool = True) -> str:
    """A class name from a folder name or label: CoOp's cleaning (``_`` is a space), spaces collapsed, lower case
    when ``lowercase`` (``Golden_Retriever`` -> ``golden retriever``)."""
    name = " ".join(clean_classname(name).split())
    return name.lower() if lowercase else name


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class _Skipped:
    """Non-image files met while listing class folders: counted per folder, reported once."""

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[str] = []

    def add(self, path: str) -> None:
        self.count += 1
        if len(self.examples) < 3:
            self.examples.append(path)

    def report(self) -> None:
        if self.count:
            print(
                f"Folder: skipped {self.count} file(s) that are not images (by extension; read: "
                f"{' '.join(IMAGE_EXTENSIONS)}), e.g. {', '.join(self.examples)}"
            )


# A split: (class key, image path) pairs; the key is the class folder's name or the list's label.
Pairs = list[tuple[str, str]]


def _class_folders(folder: str) -> list[str]:
    return sorted(
        n
        for n in os.listdir(folder)
        if not n.startswith(".") and n != FEWSHOT_DIRNAME and os.path.isdir(os.path.join(folder, n))
    )


def _read_tree(folder: str, skipped: _Skipped) -> Pairs:
    """``(class folder, image)`` of every image file directly in each class folder of ``folder``, sorted."""
    classes = _class_folders(folder)
    if not classes:
        raise DatasetFormatError(
            f"{folder} holds no class folders: put each class's images in a folder of its own, "
            f"{os.path.join(folder, '<class>', '<image>.jpg')}"
        )
    pairs: Pairs = []
    for key in classes:
        class_dir = os.path.join(folder, key)
        images = []
        for name in sorted(os.listdir(class_dir)):
            if name.startswith("."):
                continue
            path = os.path.join(class_dir, name)
            if os.path.isfile(path) and _is_image(name):
                images.append(path)
            else:
                skipped.add(path)
        if not images:
            raise DatasetFormatError(
                f"class folder {class_dir} holds no images (extensions {' '.join(IMAGE_EXTENSIONS)}): add its images "
                f"or remove the folder"
            )
        pairs += [(key, path) for path in images]
    return pairs


_HEADER = ("path", "label")


def _read_list(path: str, dataset_dir: str, names: dict[str, tuple[str, str]]) -> Pairs:
    """``(label, image)`` of every row of a list file; ``names`` collects ``label -> (class name, where)``.

    Raises:
        DatasetFormatError: A row without a path or label, or two class names for one label.
        DatasetNotPreparedError: A row's image does not exist (both places it was looked for are named).
    """
    base = os.path.dirname(path)
    pairs: Pairs = []
    missing: list[str] = []
    with open_text(path, "image list") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            row = next(csv.reader([text])) if "," in text else text.split()
            row = [cell.strip() for cell in row]
            if lineno == 1 and tuple(c.lower() for c in row[:2]) == _HEADER:
                continue
            where = f"{path}:{lineno}"
            if len(row) < 2 or len(row) > 3 or not row[0] or not row[1]:
                raise DatasetFormatError(f"{where}: expected 'path,label' or 'path,label,classname', got {text!r}")
            relpath, label = row[0], row[1]
            if len(row) == 3 and row[2]:
                known = names.setdefault(label, (row[2], where))
                if known[0] != row[2]:
                    raise DatasetFormatError(
                        f"{where}: label {label!r} is named {row[2]!r}, but {known[1]} names it {known[0]!r}: give "
                        f"each label one class name"
                    )
            candidates = [relpath] if os.path.isabs(relpath) else [os.path.join(base, relpath)]
            if not os.path.isabs(relpath) and os.path.normpath(dataset_dir) != os.path.normpath(base):
                candidates.append(os.path.join(dataset_dir, relpath))
            found = next((c for c in candidates if os.path.isfile(c)), None)
            if found is None:
                missing.append(f"{where}: {relpath} (looked for {' and '.join(candidates)})")
                continue
            pairs.append((label, os.path.normpath(found)))
    if missing:
        shown = "\n  ".join(missing[:5]) + (f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetNotPreparedError(
            f"{len(missing)} image(s) listed in {path} do not exist:\n  {shown}\nPaths are relative to the list "
            f"file's folder or to DATASET.FOLDER.DIR ({dataset_dir}): fix the rows or add the images"
        )
    if not pairs:
        raise DatasetFormatError(f"{path} lists no images: add 'path,label' rows")
    return pairs


def _sort_keys(keys: Sequence[str]) -> list[str]:
    keys = sorted(set(keys))
    if all(re.fullmatch(r"-?\d+", k) for k in keys):
        return sorted(keys, key=int)
    return keys


def _split_tag(fractions: Sequence[float], seed: int, drawn: Sequence[str]) -> str:
    shares = "-".join(f"{f:g}" for f in fractions)
    return f"drawn_{'+'.join(drawn)}_fractions_{shares}_seed_{seed}"


def _counts(n: int, shares: dict[str, float]) -> list[int]:
    """How many of a class's ``n`` images each split gets (in ``shares`` order; the last split takes the rest)."""
    total = sum(shares.values())
    counts = [round(n * share / total) for share in list(shares.values())[:-1]]
    return [*counts, n - sum(counts)]


def _fractions_remedy(n: int, shares: dict[str, float]) -> str:
    """The ``FRACTIONS`` override that gives every drawn split of a class of ``n`` images at least one image: equal
    shares, else without validation images (the test images serve); "" when none can."""
    for drop in ((), ("val",)):
        trial = {name: 0.0 if name in drop else 1.0 for name in shares}
        if min(_counts(n, {k: v for k, v in trial.items() if v > 0})) >= 1:
            fractions = ", ".join(f"{trial.get(split, 0.0):g}" for split in SPLITS)
            why = "equal shares" if not drop else "no validation images: the test images serve"
            return f'DATASET.FOLDER.FRACTIONS "({fractions})": {why}'
    return ""


def _draw(pairs: Pairs, shares: dict[str, float], seed: int, source: str) -> dict[str, Pairs]:
    """Split ``pairs`` per class by ``shares`` (split -> share, normalised), each class shuffled by its own seed."""
    by_class: dict[str, list[str]] = {}
    for key, path in pairs:
        by_class.setdefault(key, []).append(path)
    out: dict[str, Pairs] = {name: [] for name in shares}
    names = list(shares)
    for key in sorted(by_class):
        paths = sorted(by_class[key])
        random.Random(f"{seed}/{key}").shuffle(paths)
        n = len(paths)
        counts = _counts(n, shares)
        short = [name for name, c in zip(names, counts) if c < 1 and shares[name] > 0]
        if short or min(counts) < 0:
            remedy = _fractions_remedy(min(len(p) for p in by_class.values()), shares)
            remedy = f"set the shares so that every class can be split ({remedy}), " if remedy else ""
            raise DatasetFormatError(
                f"class {key!r} of {source} has {n} image(s): too few to draw {', '.join(names)} by "
                f"DATASET.FOLDER.FRACTIONS (its {' and '.join(short) or 'splits'} would be empty). Add images to it, "
                f"{remedy}or give the missing split(s) as folders or lists (DATASET.FOLDER.VAL / TEST)"
            )
        start = 0
        for name, c in zip(names, counts):
            out[name] += [(key, p) for p in paths[start : start + c]]
            start += c
    return out


def read_folder_splits(opts: dict[str, Any], dataset_dir: str) -> dict[str, Any]:
    """The splits of a ``Folder`` dataset, without Dassl objects.

    Returns:
        ``{"splits": {split: [(class key, path)]}, "classes": [key, ...] in label order, "classnames": [name, ...],
        "drawn": [splits drawn by FRACTIONS], "tag": the few-shot cache sub-folder of a drawn split or ""}``; a split
        with a zero share is absent from ``splits``.

    Raises:
        DatasetNotPreparedError: The folder, a list, the class-name file or a listed image does not exist.
        DatasetFormatError: An empty class folder, a malformed list, a class of val/test absent from training, a
            class without a name, a class too small to split.
    """
    if not os.path.isdir(dataset_dir):
        raise DatasetNotPreparedError(
            f"Folder: dataset folder not found: {dataset_dir} (DATASET.FOLDER.DIR, relative to --root): give the "
            f"folder that holds train/<class>/ (or <class>/) image folders or the list files"
        )
    skipped = _Skipped()
    list_names: dict[str, tuple[str, str]] = {}
    given: dict[str, Pairs] = {}
    for split, key in zip(SPLITS, ("TRAIN", "VAL", "TEST")):
        path = os.path.join(dataset_dir, str(opts[key]))
        if str(opts[key]).lower().endswith(LIST_EXTENSIONS):
            if not os.path.isfile(path):
                raise DatasetNotPreparedError(f"Folder: DATASET.FOLDER.{key} list file not found: {path}")
            given[split] = _read_list(path, dataset_dir, list_names)
        elif os.path.isdir(path):
            given[split] = _read_tree(path, skipped)
        elif str(opts[key]) != FOLDER_DEFAULTS[key]:
            raise DatasetNotPreparedError(f"Folder: DATASET.FOLDER.{key} folder not found: {path}")
    if "train" not in given:
        if given:
            raise DatasetNotPreparedError(
                f"Folder: {', '.join(given)} found in {dataset_dir} but no training images "
                f"({os.path.join(dataset_dir, str(opts['TRAIN']))}): add them, or set DATASET.FOLDER.TRAIN"
            )
        # One folder of classes: every split is drawn from it.
        given["train"] = _read_tree(dataset_dir, skipped)
        source = dataset_dir
    else:
        source = os.path.join(dataset_dir, str(opts["TRAIN"]))
    skipped.report()

    fractions = dict(zip(SPLITS, opts["FRACTIONS"]))
    drawn = [s for s in SPLITS if s not in given and fractions[s] > 0]
    splits = dict(given)
    tag = ""
    if drawn:
        shares = {"train": fractions["train"], **{s: fractions[s] for s in drawn}}
        splits.update(_draw(given["train"], shares, int(opts["SPLIT_SEED"]), source))
        tag = _split_tag(opts["FRACTIONS"], int(opts["SPLIT_SEED"]), drawn)
    if "test" not in splits:
        raise DatasetFormatError(
            f"Folder: no test set in {dataset_dir}: add test/<class>/ images or a DATASET.FOLDER.TEST list, or give "
            f"DATASET.FOLDER.FRACTIONS a test share to draw one from the training images"
        )

    classes = _sort_keys([k for k, _ in splits["train"]])
    known = set(classes)
    for split in ("val", "test"):
        absent = sorted({k for k, _ in splits.get(split, [])} - known)
        if absent:
            where = os.path.join(dataset_dir, str(opts[split.upper()]))
            raise DatasetFormatError(
                f"Folder: class(es) {', '.join(repr(a) for a in absent[:10])} of the {split} set ({where}) have no "
                f"training images: add their training images, or remove them from the {split} set"
            )
    classnames = _classnames(classes, opts, dataset_dir, list_names)
    return {"splits": splits, "classes": classes, "classnames": classnames, "drawn": drawn, "tag": tag}


def _classnames(classes: list[str], opts: dict[str, Any], dataset_dir: str, listed: dict) -> list[str]:
    if opts["CLASSNAMES"]:
        path = os.path.join(dataset_dir, str(opts["CLASSNAMES"]))
        if not os.path.isfile(path):
            raise DatasetNotPreparedError(f"Folder: DATASET.FOLDER.CLASSNAMES file not found: {path}")
        mapping = read_classnames(path)
        unnamed = [c for c in classes if c not in mapping]
        if unnamed:
            raise DatasetFormatError(
                f"{path} has no class name for {len(unnamed)} class(es): {', '.join(unnamed[:10])}; add a line "
                f"'<folder or label> <class name>' for each"
            )
        return [mapping[c] for c in classes]
    return [listed[c][0] if c in listed else clean_folder_name(c, bool(opts["LOWERCASE"])) for c in classes]


def folder_check_command(cfg: CfgNode) -> str:
    """The ``python -m datasets.prepare`` command that checks and decodes every image of this ``Folder`` dataset."""
    node = cfg.DATASET.get("FOLDER", None) or {}
    opts = []
    for key, default in FOLDER_DEFAULTS.items():
        value = node.get(key, default)
        if (tuple(value) if isinstance(value, (list, tuple)) else value) != default:
            shown = f"({','.join(f'{float(v):g}' for v in value)})" if isinstance(value, (list, tuple)) else str(value)
            opts += [f"DATASET.FOLDER.{key}", shlex.quote(shown)]
    root = shlex.quote(os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT)))
    return f"python -m datasets.prepare {FOLDER_NAME} --root {root} --check --decode --opts {' '.join(opts)}"


def folder_problems(cfg: CfgNode, decode: bool, workers: int = 1) -> tuple[str, list[str]]:
    """``(dataset folder, problems)`` of a ``Folder`` dataset for ``python -m datasets.prepare``: what stops it from
    being read, else its images that are damaged (``decode``: that do not decode)."""
    from .prepare.check import decode_images, looks_complete

    try:
        opts = folder_options(cfg)
        dataset_dir = os.path.join(os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT)), str(opts["DIR"]))
        data = read_folder_splits(opts, dataset_dir)
    except (DatasetFormatError, DatasetNotPreparedError) as e:
        return str(cfg.DATASET.get("FOLDER", {}).get("DIR", "")), [str(e)]
    paths = list(dict.fromkeys(p for pairs in data["splits"].values() for _, p in pairs))
    candidates = paths if decode else [p for p in paths if not looks_complete(p)]
    bad = decode_images(candidates, workers, desc="Folder: decoding") if candidates else []
    if not bad:
        return dataset_dir, []
    what = "cannot be decoded" if decode else "are damaged"
    return dataset_dir, [f"{len(bad)} of {len(paths)} images {what} (repair, replace or remove them):"] + [
        f"{path}: {error}" for path, error in bad
    ]


@register_dataset
class Folder(FewShotDataset):
    """Images of one's own, in a folder tree or list files (module docstring); keys in ``DATASET.FOLDER``."""

    def __init__(self, cfg: CfgNode) -> None:
        self.opts = folder_options(cfg)
        self.cfg_node = cfg
        super().__init__(cfg)

    def folder_name(self, cfg: CfgNode) -> str:
        return str(self.opts["DIR"])

    def prepare(self, cfg: CfgNode) -> None:
        """Nothing to create: :func:`read_folder_splits` names a missing folder."""

    def read_data(self) -> tuple[Split, Optional[Split], Split]:
        data = read_folder_splits(self.opts, self.dataset_dir)
        label = {key: i for i, key in enumerate(data["classes"])}
        name = dict(zip(data["classes"], data["classnames"]))
        splits = {s: [_datum(p, label[k], name[k]) for k, p in pairs] for s, pairs in data["splits"].items()}
        self.has_val = "val" in splits
        if data["tag"]:
            self.split_fewshot_dir = os.path.join(self.dataset_dir, FEWSHOT_DIRNAME, data["tag"])
            self.record_split(splits, data)
        counts = ", ".join(f"{s} {len(items)}" for s, items in splits.items())
        drawn = f" ({', '.join(data['drawn'])} drawn by FRACTIONS {self.opts['FRACTIONS']}, SPLIT_SEED " \
            f"{self.opts['SPLIT_SEED']})" if data["drawn"] else ""  # fmt: skip
        print(f"Folder {self.dataset_dir}: {len(label)} classes; images: {counts}{drawn}")
        return splits["train"], splits.get("val"), splits["test"]

    def record_split(self, splits: dict[str, Split], data: dict[str, Any]) -> None:
        """Write a drawn split with its parameters (CoOp's split format, paths relative to the dataset folder) to
        ``split_fewshot/<tag>/split.json``, unless the same one is there."""
        record = {
            "fractions": list(self.opts["FRACTIONS"]),
            "split_seed": int(self.opts["SPLIT_SEED"]),
            "drawn": data["drawn"],
            **{s: [[os.path.relpath(d.impath, self.dataset_dir), d.label, d.classname] for d in splits.get(s, [])]
               for s in SPLITS},
        }  # fmt: skip
        path = os.path.join(self.split_fewshot_dir, SPLIT_RECORD)
        try:
            with open(path) as f:
                if json.load(f) == record:
                    return
        except (OSError, ValueError):
            pass
        os.makedirs(self.split_fewshot_dir, exist_ok=True)
        write_atomic(path, lambda f: f.write(json.dumps(record, indent=1).encode()))
        print(f"Saved the drawn split to {path}")

    def decode_command(self) -> str:
        """The command that decodes every image of this dataset (named when an image does not decode)."""
        return folder_check_command(self.cfg_node)
