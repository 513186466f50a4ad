"""Tiny ``train.py`` runs shared by the end-to-end tests: the generated shapes with the tiny random CLIP.

One home for the command line of a tiny run (:func:`train_args`), its config overrides (:func:`tiny_opts`), the
in-process run (:func:`run_train`) and what a run folder is read for (:func:`read_logs`, :func:`results`). A test
file states only what it changes (epochs, learning rate, batch sizes).

``python tests/runs.py SCRIPT RUNS.json`` runs another repository's ``train.py`` once per argument list of
``RUNS.json``, in one process (:func:`run_script`), so that several runs pay for the imports once.
"""

from __future__ import annotations

import glob
import json
import os
import runpy
import sys
from collections.abc import Callable, Sequence
from typing import Any, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC_CONFIG = os.path.join(REPO, "configs", "datasets", "synthetic_shapes.yaml")


def demo_config(trainer: str) -> str:
    """The CPU demo config of ``trainer`` (``configs/trainers/<trainer>/demo_cpu.yaml``)."""
    return os.path.join(REPO, "configs", "trainers", trainer, "demo_cpu.yaml")


def tiny_opts(
    *,
    epochs: int = 2,
    lr: Optional[str] = "0.01",
    classes: int = 4,
    shots: int = 2,
    per_class: tuple[int, int, int] = (4, 2, 4),
    train_batch: int = 4,
    test_batch: int = 16,
    print_freq: Optional[int] = 1,
) -> list[str]:
    """Config overrides of a tiny run; by default 4 classes, 2 shots, batch 4: 2 optimiser steps per epoch.

    ``per_class``: generated train, val and test images per class. ``lr`` or ``print_freq`` ``None``: the demo
    config's own value.
    """
    n_train, n_val, n_test = per_class
    opts = ["OPTIM.MAX_EPOCH", str(epochs)]
    if lr is not None:
        opts += ["OPTIM.LR", lr]
    opts += [
        "DATASET.NUM_SHOTS", str(shots),
        "DATASET.SYNTHETIC.NUM_CLASSES", str(classes),
        "DATASET.SYNTHETIC.TRAIN_PER_CLASS", str(n_train),
        "DATASET.SYNTHETIC.VAL_PER_CLASS", str(n_val),
        "DATASET.SYNTHETIC.TEST_PER_CLASS", str(n_test),
        "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.TRAIN_X.BATCH_SIZE", str(train_batch),
        "DATALOADER.TEST.BATCH_SIZE", str(test_batch),
    ]  # fmt: skip
    if print_freq is not None:
        opts += ["TRAIN.PRINT_FREQ", str(print_freq)]
    return opts


def train_args(
    trainer: str,
    root: str,
    out: str,
    *extra: str,
    opts: Sequence[str] = (),
    small: Sequence[str] = (),
    config: Optional[str] = None,
    seed: int = 1,
) -> list[str]:
    """The ``train.py`` arguments of a tiny run: flags, ``extra`` flags, then ``small`` and ``opts`` overrides."""
    return [
        "--root", root,
        "--seed", str(seed),
        "--trainer", trainer,
        "--dataset-config-file", SYNTHETIC_CONFIG,
        "--config-file", config or demo_config(trainer),
        "--output-dir", out,
        *extra,
        *small,
        *opts,
    ]  # fmt: skip


def run_train(trainer: str, root: str, out: str, *extra: str, small: Sequence[str], opts: Sequence[str] = ()) -> Any:
    """``python train.py`` in this process (:func:`train_args`); returns the trainer."""
    import train

    return train.main(train.parse_args(train_args(trainer, root, out, *extra, opts=opts, small=small)))


def read_logs(out: str) -> str:
    """All log files of a run folder (one ``log.txt``, which a restarted run appends to)."""
    return "".join(open(p).read() for p in sorted(glob.glob(os.path.join(out, "log.txt*"))))


def results(out: str) -> dict:
    """The run folder's ``results.json``."""
    from lamm_plugin.layout import RESULTS_FILENAME

    with open(os.path.join(out, RESULTS_FILENAME)) as f:
        return json.load(f)


def killed_after_first_epoch(monkeypatch, run: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """``run(*args, **kwargs)`` dying (``KeyboardInterrupt``, as Ctrl-C) right after its first epoch's checkpoint.

    ``monkeypatch.undo()`` follows, as after any simulated crash: it undoes every patch of the test so far.
    """
    import pytest

    from lamm_plugin.dassl import PromptTrainer

    after_epoch = PromptTrainer.after_epoch

    def crash_after_first_epoch(self) -> None:
        after_epoch(self)
        if self.epoch == 0:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(PromptTrainer, "after_epoch", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(*args, **kwargs)
    monkeypatch.undo()


def run_script(script: str, runs: Sequence[Sequence[str]]) -> None:
    """Run ``script`` once per argument list, in this process, as ``python script ARGS`` runs it: its folder first on
    ``sys.path``, ``sys.argv`` set, executed as ``__main__``. The stdout that Dassl's ``setup_logger`` replaces (with
    a copy to the run's ``log.txt``) is put back after each run, and the replacement kept alive: Dassl's ``Logger``
    closes the stdout it wraps when it is collected. A failing run stops the rest."""
    script = os.path.abspath(script)
    sys.path[0] = os.path.dirname(script)
    loggers = []
    for argv in runs:
        sys.argv = [script, *argv]
        stdout = sys.stdout
        try:
            runpy.run_path(script, run_name="__main__")
        finally:
            sys.stdout.flush()
            loggers.append(sys.stdout)
            sys.stdout = stdout


if __name__ == "__main__":
    with open(sys.argv[2]) as f:
        run_script(sys.argv[1], json.load(f))
