"""The command ``python -m datasets.prepare``: names to recipes, each recipe run and checked, a report per dataset."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

from lamm_plugin.errors import run_main

from . import recipes
from .check import check_dataset, damaged_problems, decode_problems
from .errors import PrepareError
from .steps import Recipe

DOWNLOAD_DIRNAME = "downloads"
#: The dataset of one's own images (:mod:`datasets.folder`): nothing to download; it is checked only.
FOLDER = "Folder"


def _key(name: str) -> str:
    return name.lower().replace("-", "_")


def resolve_names(names: Sequence[str]) -> list[Recipe]:
    """Recipes for command-line names (registered names, config names, aliases, ``all``; any case).

    Raises:
        KeyError: An unknown name; the message lists the known ones.
    """
    known = recipes.RECIPES_LIST
    lookup = {}
    for r in known:
        for n in (r.name, r.config, *r.aliases):
            lookup[_key(n)] = r
    out: list[Recipe] = []
    for name in names:
        if _key(name) == "all":
            chosen = list(known)
        elif _key(name) in lookup:
            chosen = [lookup[_key(name)]]
        else:
            raise KeyError(f"unknown dataset {name!r}; choose from: all, {', '.join(r.name for r in known)}")
        out.extend(r for r in chosen if r not in out)
    return out


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


#: What ``[ok]`` means without ``--decode``.
NOT_DECODED = "image files present and whole; pixels not decoded: add --decode to decode every image"


def _report(
    recipe: Recipe, root: Path, problems: list[str], show_manual: bool, show_command: bool = True, note: str = ""
) -> None:
    if not problems:
        print(f"[ok] {recipe.name}: {root / recipe.folder}" + (f" ({note})" if note else ""))
        return
    print(f"[incomplete] {recipe.name}:")
    for p in problems:
        print(f"  - {p}")
    if show_manual and recipe.manual:
        print("  " + recipe.manual.format(folder=root / recipe.folder).replace("\n", "\n  "))
    elif not show_manual and show_command:
        print(f"  prepare it with: python -m datasets.prepare {recipe.name} --root {root}")


def check_folder(root: Path, args: argparse.Namespace) -> bool:
    """Check (and with ``--decode`` decode) every image of the ``Folder`` dataset set up by the dataset config and
    ``--opts``; print the report; True when nothing is wrong."""
    try:
        from dassl.config import get_cfg_default

        import lamm_plugin.dassl  # noqa: F401  (key suggestions for a mistyped key)
        from datasets.folder import add_folder_config, folder_problems
    except ImportError as e:
        print(f"[incomplete] {FOLDER}: reading it needs Dassl ({e})")
        return False
    cfg = get_cfg_default()
    add_folder_config(cfg)
    if args.dataset_config_file:
        cfg.merge_from_file(args.dataset_config_file)
    cfg.merge_from_list(list(args.opts))
    cfg.DATASET.ROOT = str(root)
    folder, problems = folder_problems(cfg, decode=args.decode, workers=args.workers)
    if not problems:
        print(f"[ok] {FOLDER}: {folder}" + ("" if args.decode else f" ({NOT_DECODED})"))
        return True
    print(f"[incomplete] {FOLDER}: {folder}")
    for p in problems:
        print(f"  - {p}")
    return False


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point under the one error handler (:func:`~lamm_plugin.errors.run_main`); returns the
    exit code (0: every dataset complete)."""
    return run_main(lambda: _main(argv), argv)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.prepare",
        description="Download and lay out datasets in CoOp's folder format (see docs/DATASETS.md).",
    )
    parser.add_argument("names", nargs="+", metavar="NAME", help="dataset names, e.g. OxfordPets or oxford_pets; 'all'")
    parser.add_argument("--root", required=True, help="data root (DATASET.ROOT), e.g. $DATA")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only verify existing folders (paths, class folders, images present and whole); download nothing",
    )
    parser.add_argument("--keep-archives", action="store_true", help=f"keep archives in ROOT/{DOWNLOAD_DIRNAME}/")
    parser.add_argument(
        "--decode",
        action="store_true",
        help="also open and fully decode every image the splits reference; list those that fail",
    )
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="threads decoding images (--decode)"
    )
    parser.add_argument(
        "--dataset-config-file",
        default="",
        help=f"{FOLDER}: the dataset config (yaml with DATASET.FOLDER keys) of a dataset of your own images",
    )
    parser.add_argument(
        "--opts", nargs="+", default=[], metavar="KEY VALUE", help=f"{FOLDER}: config overrides, as train.py takes"
    )
    args = parser.parse_args(argv)
    folder = any(_key(n) == _key(FOLDER) for n in args.names)
    try:
        recipes = resolve_names([n for n in args.names if _key(n) != _key(FOLDER)])
    except KeyError as e:
        parser.error(f"{e.args[0]}, or {FOLDER} (your own images: with --dataset-config-file / --opts)")
    root = Path(args.root).expanduser().resolve()

    failed = []
    if folder and not check_folder(root, args):
        failed.append(FOLDER)
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
        if args.decode:
            undecodable = decode_problems(recipe, root, args.workers)
        else:
            undecodable = damaged_problems(recipe, root, args.workers)
            if undecodable:
                undecodable.append(f"to decode every image (finds damage inside whole files too): python -m "
                                   f"datasets.prepare {recipe.name} --root {root} --check --decode")  # fmt: skip
        _report(
            recipe,
            root,
            problems + undecodable,
            show_manual=not args.check and bool(problems),
            show_command=bool(problems),
            note="" if args.decode else NOT_DECODED,
        )
        if problems or undecodable:
            failed.append(recipe.name)
    if failed:
        print(f"Incomplete: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
