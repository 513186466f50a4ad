"""Class-incremental continual learning on Dassl: ``T`` stages, each trained from the previous stage's state.

Takes ``train.py``'s command line plus the protocol::

    python continual.py --root DATA --seed 1 --trainer LAMM_CoOp \\
        --dataset-config-file configs/datasets/cifar100.yaml \\
        --config-file configs/trainers/LAMM_CoOp/vit_b16_ep50_ctxv1_frozen.yaml \\
        --protocol configs/continual/cifar100_10x10.yaml --shared freeze \\
        --output-dir output/continual/cifar100/LAMM_CoOp/seed1 DATASET.NUM_SHOTS 16

The classes are split into stages (:mod:`lamm_plugin.continual`: order from ``--order-seed`` or ``--class-order``,
which takes labels or class names, comma-separated or one per line of a file);
stage ``k`` trains on its own classes' data in ``<output-dir>/stage<k>`` (an ordinary resumable Dassl run) with
``MODEL.INIT_WEIGHTS`` = stage ``k-1``'s last checkpoint: earlier classes' label rows are loaded and stay frozen,
the shared tensors (context, deep prompts) are carried over and, with ``--shared freeze``, frozen after stage 1.
After each stage the model is evaluated on the test images of every class seen so far
(``stage<k>/continual_eval.json``); at the end ``<output-dir>/results.json`` gets the accuracy matrix and the
metrics (section ``continual``) and ``table.md`` a readable table. Rerun the same command after a crash: finished
stages are skipped, an interrupted stage resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import os.path as osp
import random
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import torch
import yaml
from dassl.data import data_manager
from dassl.data.data_manager import build_data_loader
from dassl.data.datasets import DatasetBase, build_dataset
from dassl.data.transforms import build_transform
from dassl.engine import TRAINER_REGISTRY
from dassl.utils import set_random_seed

import train
from datasets.base import select_classes
from lamm_experiments import continual as report
from lamm_experiments.tabular import markdown_table
from lamm_plugin import continual
from lamm_plugin.dassl import compat
from lamm_plugin.dassl.report import protocol_record as report_protocol_record
from lamm_plugin.dassl.results import cfg_to_dict, write_json
from lamm_plugin.errors import MissingFileError, UserError, run_main
from lamm_plugin.files import read_text, write_text
from lamm_plugin.layout import CONTINUAL_FORMAT, RESULTS_FILENAME, find_checkpoint

EVAL_FILENAME = "continual_eval.json"
PROTOCOL_KEYS = {"stages", "classes_per_stage", "order_seed", "class_order", "shared", "test_fraction"}


def read_protocol(path: str) -> dict[str, Any]:
    """A protocol file: a YAML mapping with keys among :data:`PROTOCOL_KEYS`."""
    try:
        protocol = yaml.safe_load(read_text(path, "protocol")) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: invalid YAML ({err})".replace("\n", " ")) from None
    unknown = set(protocol) - PROTOCOL_KEYS if isinstance(protocol, dict) else set()
    if not isinstance(protocol, dict) or unknown:
        raise UserError(f"{path}: unknown protocol keys {sorted(unknown)}; known: {sorted(PROTOCOL_KEYS)}.")
    return protocol


def protocol_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Protocol file values, overridden by the command line."""
    if args.stages is not None and args.classes_per_stage is not None:
        raise UserError(
            f"Give --stages or --classes-per-stage, not both (got --stages {args.stages} and --classes-per-stage "
            f"{args.classes_per_stage}): the one decides the other."
        )
    protocol = read_protocol(args.protocol) if args.protocol else {}
    for key in PROTOCOL_KEYS - {"test_fraction"}:
        value = getattr(args, key)
        if value is not None:
            protocol[key] = value
    if "stages" in protocol and "classes_per_stage" in protocol:
        # The command line wins over the file.
        drop = "classes_per_stage" if args.stages is not None else "stages"
        protocol.pop(drop)
    if "stages" not in protocol and "classes_per_stage" not in protocol:
        raise UserError("Say how to split the classes: --stages T or --classes-per-stage N (or --protocol FILE).")
    protocol.setdefault("shared", "freeze")
    if protocol["shared"] not in continual.SHARED_CHOICES:
        raise UserError(f"--shared must be one of {continual.SHARED_CHOICES}, got {protocol['shared']!r}.")
    if protocol.get("class_order") is not None:
        protocol["class_order"] = parse_class_order(protocol["class_order"])
    return protocol


_LOOKS_LIKE_FILE = re.compile(r"[\\/]|\.(txt|csv|yaml|yml|json|list)$", re.IGNORECASE)


def parse_class_order(value: Any) -> list[Any]:
    """The entries of a class order: ``int`` labels and ``str`` class names, in order.

    Args:
        value: A list (from a protocol file), or a string: a file's path, or the entries comma-separated. A file
            holds them one per line or comma-separated; labels may also be separated by spaces (``3 1 0 2``).

    Raises:
        FileNotFoundError: ``value`` names a file that does not exist.
    """
    if isinstance(value, (list, tuple)):
        entries = [v if isinstance(v, int) else str(v).strip() for v in value]
    else:
        text = str(value)
        if osp.isfile(text):
            text = read_text(text, "class order")
        elif "," not in text and "\n" not in text and _LOOKS_LIKE_FILE.search(text.strip()):
            raise MissingFileError(
                f"--class-order: file not found: {text} (give the file's path, or the labels or class names "
                "comma-separated)"
            )
        entries = []
        for line in text.splitlines():
            for item in line.split(","):
                words = item.split()
                if words and all(re.fullmatch(r"-?\d+", w) for w in words):
                    entries += [int(w) for w in words]  # labels, possibly separated by spaces
                elif words:
                    entries.append(" ".join(words))
    return [e for e in entries if e != ""]


def class_order_labels(order: Sequence[Any], lab2cname: dict[int, str]) -> list[int]:
    """Labels of a class order given as labels or class names (:func:`parse_class_order`).

    A class name matches exactly, else ignoring case and the ``_``/space difference; integers are labels.

    Raises:
        ValueError: An unknown or ambiguous class name (with close matches), a label out of range, or an order that
            does not list every class once (the repeated and the missing classes are named).
    """
    by_name: dict[str, list[int]] = {}
    for label, name in lab2cname.items():
        by_name.setdefault(name, []).append(label)
    loose: dict[str, list[int]] = {}
    for name, labels in by_name.items():
        loose.setdefault(_loose(name), []).extend(labels)
    labels = []
    for entry in order:
        if isinstance(entry, int):
            if entry not in lab2cname:
                raise UserError(f"--class-order: label {entry} is out of range (labels 0 to {len(lab2cname) - 1}).")
            labels.append(entry)
            continue
        found = by_name.get(entry) or loose.get(_loose(entry))
        if not found:
            close = difflib.get_close_matches(entry, list(by_name), n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
            raise UserError(f"--class-order: unknown class {entry!r}.{hint} The dataset's classes are labels 0 to "
                             f"{len(lab2cname) - 1} named as in its split file.")  # fmt: skip
        if len(found) > 1:
            raise UserError(
                f"--class-order: the class name {entry!r} names several classes (labels {found}); give labels instead."
            )
        labels.append(found[0])
    repeated = sorted({y for y in labels if labels.count(y) > 1})
    missing = sorted(set(lab2cname) - set(labels))
    if repeated or missing:

        def names(ys: list[int]) -> str:
            shown = ", ".join(f"{lab2cname[y]!r} ({y})" for y in ys[:10])
            return shown + (f" and {len(ys) - 10} more" if len(ys) > 10 else "") if ys else "none"

        raise UserError(
            f"--class-order must list each of the {len(lab2cname)} classes once: repeated: {names(repeated)}; "
            f"missing: {names(missing)}."
        )
    return labels


def _loose(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


@contextlib.contextmanager
def serving(dataset: DatasetBase) -> Iterator[None]:
    """Make Dassl's ``DataManager`` use ``dataset`` instead of building one from the config."""
    original = data_manager.build_dataset
    data_manager.build_dataset = lambda cfg: dataset
    try:
        yield
    finally:
        data_manager.build_dataset = original


def held_out_split(full: DatasetBase, fraction: float, seed: int, shots: int) -> DatasetBase:
    """For evaluation-only datasets (ImageNet-R: training and test sets are the same images), hold out ``fraction``
    of each class's images (drawn from ``seed``) as the test set, as the continual-learning literature splits
    ImageNet-R (80/20); the rest is the training set, ``shots`` images per class of it when ``shots > 0``."""
    if not 0 < fraction < 1:
        raise UserError(f"The held-out test fraction must lie between 0 and 1, got {fraction}.")
    by_class: dict[int, list] = {}
    for item in full.train_x:
        by_class.setdefault(item.label, []).append(item)
    rng = random.Random(seed)
    train_x, test = [], []
    for label in sorted(by_class):
        items = sorted(by_class[label], key=lambda d: d.impath)
        rng.shuffle(items)
        n_test = max(1, round(fraction * len(items)))
        if len(items) - n_test < 1:
            raise UserError(f"Class {full.lab2cname[label]!r} has {len(items)} image(s): too few to hold some out.")
        test += items[:n_test]
        train_x += items[n_test:]
    if shots > 0:
        train_x = full.generate_fewshot_dataset(train_x, num_shots=shots)
    return DatasetBase(train_x=train_x, test=test)


def stage_dataset(full: DatasetBase, labels: Sequence[int]) -> DatasetBase:
    """``full`` restricted to ``labels``, relabelled ``labels[i] -> i``."""
    train_x, val, test = select_classes([full.train_x, full.val or [], full.test], list(labels))
    return DatasetBase(train_x=train_x, val=val or None, test=test)


def stage_trainer(name: str, freeze_shared: bool, dataset: DatasetBase):
    """The registered trainer ``name``, serving ``dataset`` and, with ``freeze_shared``, freezing the method's
    shared tensors before the optimiser is built."""
    base = TRAINER_REGISTRY.get(name)

    class StageTrainer(base):
        def build_data_loader(self) -> None:
            with serving(dataset):
                super().build_data_loader()

        def configure_trainable(self) -> None:
            super().configure_trainable()
            if freeze_shared:
                continual.freeze_shared(self.model)

    StageTrainer.__name__ = StageTrainer.__qualname__ = f"{name}_stage"
    return StageTrainer


@torch.no_grad()
def evaluate_seen(trainer, cfg, full: DatasetBase, stages: Sequence[Sequence[int]]) -> tuple[dict, dict]:
    """Per-class ``{classname: [correct, total]}`` on the test images of every class of ``stages``, twice: predicting
    among all those classes (class-incremental), and among the classes of the image's own stage only (within
    stage: unaffected by the classes added later, so it isolates the change of the stage's own logits)."""
    labels = [y for stage in stages for y in stage]
    names = [full.lab2cname[y] for y in labels]
    stage_of = torch.tensor([s for s, stage in enumerate(stages) for _ in stage])
    (test,) = select_classes([full.test], labels)
    loader = build_data_loader(
        cfg,
        sampler_type=cfg.DATALOADER.TEST.SAMPLER,
        data_source=test,
        batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
        tfm=build_transform(cfg, is_train=False),
        is_train=False,
    )
    model = trainer.model
    model.set_classnames(names)
    model.eval()
    correct, within, total = [0] * len(names), [0] * len(names), [0] * len(names)
    for logits, target in trainer.loader_logits(loader):  # the test images' features from the cache where it can
        logits, target = logits.cpu(), target.cpu()
        pred = logits.argmax(dim=1)
        own = stage_of[target].unsqueeze(1) == stage_of.unsqueeze(0)  # [B, C]: classes of the image's stage
        pred_within = logits.masked_fill(~own, float("-inf")).argmax(dim=1)
        for y, p, q in zip(target.tolist(), pred.tolist(), pred_within.tolist()):
            total[y] += 1
            correct[y] += int(p == y)
            within[y] += int(q == y)
    return (
        {name: [correct[i], total[i]] for i, name in enumerate(names)},
        {name: [within[i], total[i]] for i, name in enumerate(names)},
    )


def run_stage(
    args: argparse.Namespace,
    base_cfg,
    full: DatasetBase,
    stages: list[list[int]],
    k: int,
    shared: str,
    init: Optional[str],
) -> dict[str, Any]:
    """Train stage ``k`` (0-based) and evaluate it on every class seen; returns its evaluation record."""
    stage_dir = osp.join(base_cfg.OUTPUT_DIR, f"stage{k + 1}")
    cfg = base_cfg.clone()
    cfg.defrost()
    cfg.OUTPUT_DIR = stage_dir
    cfg.MODEL.INIT_WEIGHTS = init or ""
    cfg.freeze()
    seen = [y for stage in stages[: k + 1] for y in stage]
    names = [full.lab2cname[y] for y in stages[k]]
    print(f"===== Stage {k + 1}/{len(stages)}: {len(names)} new classes ({', '.join(names[:8])}"
          f"{', ...' if len(names) > 8 else ''}), {len(seen)} seen; output in {stage_dir}")  # fmt: skip
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    freeze = shared == "freeze" and k > 0
    with train.log_to(stage_dir):
        trainer = stage_trainer(cfg.TRAINER.NAME, freeze, stage_dataset(full, stages[k]))(cfg)
        trained_shared = continual.trainable_shared(trainer.model) if trainer.optim is not None else []
        if k > 0 and trained_shared:
            print(
                f"Warning: stage {k + 1} trains the shared tensors {trained_shared}: earlier classes can be forgotten "
                "(measured below; --shared freeze keeps them)"
            )
        checkpoint = None
        if trainer.optim is not None:
            trainer.train()
            checkpoint = find_checkpoint(osp.join(stage_dir, trainer.MODEL_NAME), best=False)
            if checkpoint is None:
                raise RuntimeError(f"Stage {k + 1} finished without a checkpoint in {stage_dir}.")
            # The stage's final state, also when the stage had been finished by an earlier process.
            trainer._load_state(compat.load_checkpoint(checkpoint), checkpoint)
        else:
            print("Nothing to train (zero-shot): evaluating only")
        per_class, per_class_within = evaluate_seen(trainer, cfg, full, stages[: k + 1])
        right, n = sum(c for c, _ in per_class.values()), sum(t for _, t in per_class.values())
        print(f"* stage {k + 1}: accuracy on the {len(seen)} classes seen: {100.0 * right / n:.2f}%")
    record = {
        "stage": k + 1,
        "classes": [full.lab2cname[y] for y in seen],
        "new_classes": names,
        "per_class": per_class,
        "per_class_within_stage": per_class_within,
        "trained_shared": trained_shared,
        "checkpoint": checkpoint,
    }
    write_json(record, osp.join(stage_dir, EVAL_FILENAME))
    return record


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or finish) every stage; returns the run's ``results.json`` content."""
    start = time.time()
    protocol = protocol_from_args(args)
    cfg = train.setup_cfg(args)
    compat.check_trainer_name(cfg.TRAINER.NAME)
    if not cfg.OUTPUT_DIR:
        raise UserError("Give --output-dir: every stage and the results are written under it.")
    final = osp.join(cfg.OUTPUT_DIR, RESULTS_FILENAME)
    if osp.isfile(final):
        with open(final) as f:
            results = json.load(f)
        print(f"This run is finished: {final} holds its result; delete that file to evaluate again.")
        return results
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    cfg = train.resolve_seed(cfg)  # without --seed: drawn once and kept in the folder for the reruns
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    with train.log_to(cfg.OUTPUT_DIR):
        full = build_dataset(cfg)  # few-shot sampling over every class, from SEED, as train.py does
        if {d.impath for d in full.train_x} & {d.impath for d in full.test}:
            fraction = float(protocol.get("test_fraction", 0.2))
            full = held_out_split(full, fraction, int(protocol.get("order_seed") or 0), int(cfg.DATASET.NUM_SHOTS))
            print(
                f"Note: {cfg.DATASET.NAME} trains and tests on the same images; {fraction:.0%} of each class's images "
                f"are held out as the test set ({len(full.test)} test, {len(full.train_x)} training images)"
            )
    if protocol.get("class_order") is not None:
        protocol["class_order"] = class_order_labels(protocol["class_order"], full.lab2cname)
    order = continual.class_order(full.num_classes, protocol.get("order_seed"), protocol.get("class_order"))
    stages = continual.split_stages(order, protocol.get("stages"), protocol.get("classes_per_stage"))
    shared = protocol["shared"]
    records, init = [], None
    for k in range(len(stages)):
        path = osp.join(cfg.OUTPUT_DIR, f"stage{k + 1}", EVAL_FILENAME)
        record = None
        if osp.isfile(path):
            with open(path) as f:
                record = json.load(f)
            if record.get("new_classes") != [full.lab2cname[y] for y in stages[k]]:
                raise UserError(
                    f"{path} was written for other classes than this protocol's stage {k + 1}: use another "
                    "--output-dir, or delete that folder's stages."
                )
            print(f"Stage {k + 1}/{len(stages)} is finished ({path}): skipped")
        else:
            record = run_stage(args, cfg, full, stages, k, shared, init)
        records.append(record)
        init = record.get("checkpoint")

    stage_names = [[full.lab2cname[y] for y in stage] for stage in stages]
    section = report.continual_section(
        stage_names,
        [r["per_class"] for r in records],
        [full.lab2cname[y] for y in order],
        shared,
        within_stage=[r["per_class_within_stage"] for r in records],
    )
    section["class_order_labels"] = order
    section["trained_shared"] = [r["trained_shared"] for r in records]
    metrics = section["metrics"]
    results = {
        "format": CONTINUAL_FORMAT,
        "trainer": cfg.TRAINER.NAME,
        "config_name": osp.splitext(osp.basename(args.config_file))[0] if args.config_file else "",
        "dataset": cfg.DATASET.NAME,
        "shots": int(cfg.DATASET.NUM_SHOTS),
        "seed": int(cfg.SEED),
        "backbone": cfg.MODEL.BACKBONE.NAME,
        "protocol": {**protocol, **named_protocol()},
        "accuracy": metrics["last_accuracy"],
        "continual": section,
        "timings": {"total_seconds_last_process": time.time() - start},
        "config": cfg_to_dict(cfg),
    }
    table = report.format_table(report.continual_table([results]))
    with train.log_to(cfg.OUTPUT_DIR):
        print(stage_report(section))
        print(table)
    write_text(osp.join(cfg.OUTPUT_DIR, "table.md"), stage_report(section) + "\n\n" + table + "\n")
    write_json(results, final)
    print(f"Results written to {final}")
    return results


def named_protocol() -> dict[str, Optional[str]]:
    """``name`` and ``method`` of the benchmark protocol of this run (lamm_experiments/protocols.py): the sweep's
    (``sweep.sh continual --protocol``), else ``lamm-continual`` (the stage protocol every continual.py run follows)
    with no method (a run started by hand is labelled by its trainer and config)."""
    record = report_protocol_record() or {"name": "lamm-continual", "method": None}
    return {"name": record["name"], "method": record["method"] or None}


def stage_report(section: dict[str, Any]) -> str:
    """The accuracy matrix as a markdown table: one row per stage, one column per stage's classes."""
    t = section["num_stages"]
    head = ["after stage", *[f"S{s + 1}" for s in range(t)], "seen", "current"]
    rows = [
        [k + 1, *["-" if v is None else f"{v:.2f}" for v in row]]
        + [f"{section['seen_accuracy'][k]:.2f}", f"{section['current_accuracy'][k]:.2f}"]
        for k, row in enumerate(section["accuracy_matrix"])
    ]
    lines = [markdown_table(head, rows)]
    m = section["metrics"]
    forget = "-" if m["average_forgetting"] is None else f"{m['average_forgetting']:.2f}"
    per_class = m.get("average_forgetting_per_class")
    lines.append(
        f"\naverage incremental accuracy {m['average_incremental_accuracy']:.2f}, last accuracy "
        f"{m['last_accuracy']:.2f}, average forgetting {forget} (per class: "
        f"{'-' if per_class is None else f'{per_class:.2f}'}), shared tensors: {section['shared']}"
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = train.build_parser()
    parser.description = __doc__.split("\n\n")[0]
    group = parser.add_argument_group("continual protocol")
    group.add_argument("--protocol", type=str, default="", help="YAML file with the protocol keys below")
    group.add_argument("--stages", type=int, default=None, help="number of stages T")
    group.add_argument("--classes-per-stage", type=int, default=None, help="instead of --stages")
    group.add_argument("--order-seed", type=int, default=None, help="class order drawn from this seed")
    group.add_argument(
        "--class-order",
        type=str,
        default=None,
        help="labels or class names in order: comma-separated, or a file with one per line",
    )
    group.add_argument(
        "--shared",
        choices=continual.SHARED_CHOICES,
        default=None,
        help="shared tensors after stage 1 (default: freeze)",
    )
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    args = train.parse_anywhere(build_parser(), argv)
    if args.eval_only or args.model_dir or args.resume:
        raise UserError("continual.py trains every stage itself: --eval-only, --model-dir and --resume do not apply.")
    return args


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``python continual.py``: :func:`main` under the one error handler; returns the exit status."""
    return run_main(lambda: main(parse_args(argv)) and 0, argv)


if __name__ == "__main__":
    train.exit_now(cli())
