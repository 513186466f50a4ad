"""Train and evaluate prompt learners on Dassl, with the command line of CoOp's ``train.py``.

Examples::

    # CoOp + LAMM, 16 shots, seed 1
    python train.py --root DATA --seed 1 --trainer LAMM_CoOp \\
        --dataset-config-file configs/datasets/oxford_pets.yaml \\
        --config-file configs/trainers/LAMM_CoOp/vit_b16_ep50_ctxv1.yaml \\
        --output-dir output/fewshot/oxford_pets/shots_16/LAMM_CoOp/vit_b16_ep50_ctxv1/seed1 \\
        DATASET.NUM_SHOTS 16

    # evaluate that model on another class set
    python train.py ... --eval-only --model-dir <that output dir> --load-epoch 50 DATASET.SUBSAMPLE_CLASSES new

Trainers: ``LAMM_CoOp``, ``LAMM_MaPLe``, ``LAMM_VPT`` and the baselines ``CoOp``, ``MaPLe``, ``VPT``,
``ZeroshotCLIP`` (see ``trainers/``). Every run writes ``log.txt`` and, after its final evaluation,
``results.json`` into the output folder; a run restarted with the same output folder resumes from its last
checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib
import os
import pkgutil
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import torch
from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import collect_env_info, set_random_seed

import lamm_plugin.dassl  # noqa: F401  (adds the LAMM config nodes and registers the LAMM_* trainers)
import trainers  # noqa: F401  (registers this repository's baselines)

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))


def import_datasets() -> list[str]:
    """Import the repository's dataset modules (``datasets/``), which register themselves in Dassl.

    Tolerates a missing ``datasets`` package (then only datasets registered elsewhere are available); a module
    that exists but fails to import raises.

    Returns:
        The names of the imported modules.
    """
    if not os.path.isfile(os.path.join(REPO_ROOT, "datasets", "__init__.py")):
        return []
    package = importlib.import_module("datasets")
    names = [package.__name__]
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            names.append(importlib.import_module(f"{package.__name__}.{module.name}").__name__)
    return names


def print_args(args: argparse.Namespace, cfg) -> None:
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(vars(args)):
        print(f"{key}: {getattr(args, key)}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def reset_cfg(cfg, args: argparse.Namespace) -> None:
    """Command-line arguments that override config values (CoOp's ``reset_cfg``)."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head


def extend_cfg(cfg) -> None:
    """Config nodes of the repository's datasets (the LAMM and baseline nodes are in Dassl's defaults already)."""
    synthetic = sys.modules.get("datasets.synthetic")
    if synthetic is not None and hasattr(synthetic, "add_synthetic_config"):
        synthetic.add_synthetic_config(cfg)


def setup_cfg(args: argparse.Namespace):
    """Defaults (with the LAMM and baseline nodes) <- dataset yaml <- method yaml <- arguments <- opts."""
    cfg = get_cfg_default()
    extend_cfg(cfg)
    if args.dataset_config_file:
        cfg.merge_from_file(args.dataset_config_file)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    reset_cfg(cfg, args)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


@functools.lru_cache(maxsize=1)
def env_info() -> str:
    """Dassl's environment report (slow: it runs ``pip`` and friends), computed once per process."""
    return collect_env_info()


class Tee:
    """A stdout that also appends everything to a log file.

    Dassl's ``setup_logger`` starts a new ``log.txt-<time>`` whenever ``log.txt`` exists; a resumed run appends to
    the one ``log.txt`` instead, after a line that marks the restart.
    """

    def __init__(self, console, path: str) -> None:
        self.console = console
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        restarted = os.path.isfile(path) and os.path.getsize(path) > 0
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115  (closed by log_to)
        if restarted:
            now = datetime.datetime.now().isoformat(timespec="seconds")
            self.file.write(f"\n===== {now}: run started again =====\n")

    def write(self, text: str) -> None:
        self.console.write(text)
        self.file.write(text)

    def flush(self) -> None:
        self.console.flush()
        self.file.flush()
        os.fsync(self.file.fileno())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


@contextlib.contextmanager
def log_to(output_dir: str) -> Iterator[None]:
    """Tee stdout into ``output_dir/log.txt`` (appending), and undo it afterwards."""
    stdout = sys.stdout
    path = output_dir if output_dir.endswith((".txt", ".log")) else os.path.join(output_dir, "log.txt")
    sys.stdout = tee = Tee(stdout, path)
    try:
        yield
    finally:
        sys.stdout = stdout
        tee.file.close()


def main(args: argparse.Namespace) -> Any:
    """Run one job; returns the trainer."""
    cfg = setup_cfg(args)
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    with log_to(cfg.OUTPUT_DIR):
        if torch.cuda.is_available() and cfg.USE_CUDA:
            torch.backends.cudnn.benchmark = True

        print_args(args, cfg)
        print("Collecting env info ...")
        print(f"** System info **\n{env_info()}\n")

        trainer = build_trainer(cfg)
        if args.eval_only:
            trainer.load_model(args.model_dir, epoch=args.load_epoch)
            trainer.test()
        elif not args.no_train:
            trainer.train()
    return trainer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=str, default="", help="path to dataset")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory (from which the training resumes)")
    parser.add_argument("--seed", type=int, default=None, help="only positive value enables a fixed seed")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to config file for dataset setup")
    parser.add_argument("--trainer", type=str, default="", help="name of trainer")
    parser.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    parser.add_argument("--head", type=str, default="", help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument(
        "opts", default=None, nargs=argparse.REMAINDER, help="modify config options using the command-line"
    )
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


import_datasets()

if __name__ == "__main__":
    main(parse_args())
