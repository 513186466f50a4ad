"""Fixes for Dassl 0.6.3 on current PyTorch, applied from our side (Dassl itself is never edited or patched).

Each function replaces one Dassl call that fails on torch >= 2.6/2.7, for use by our trainers only:

* :func:`build_lr_scheduler`: Dassl's warm-up wrappers pass ``verbose`` to ``LRScheduler.__init__``, which
  torch 2.7 removed (``TypeError: LRScheduler.__init__() takes from 2 to 3 positional arguments but 4 were
  given``). We build Dassl's successor schedule unchanged and wrap it in subclasses of Dassl's warm-up classes
  that call the base constructor without ``verbose``.
* :func:`load_checkpoint`: Dassl calls ``torch.load`` without ``weights_only``; torch 2.6 made ``True`` the
  default and Dassl checkpoints hold pickled objects (the warm-up scheduler's state carries its successor
  object), hence ``UnpicklingError``. Our checkpoints hold tensors and plain containers only and are read with
  ``weights_only=True``; a file that needs pickle gets an error that says what it is (the reader is
  :func:`lamm_plugin.layout.read_checkpoint`, which every reader of a checkpoint uses).
* :func:`scheduler_state_dict` / :func:`load_scheduler_state_dict`: the plain-container form of a (warm-up)
  scheduler's state that makes the above possible, and its inverse.
* :func:`format_val_result`: Dassl's ``load_model`` formats ``val_result`` with ``:.1f``, which fails on the
  ``None`` that last-epoch checkpoints carry.
* :func:`check_trainer_name`: Dassl's ``build_trainer`` suggests the most similar name by edit distance, which
  case differences count fully (``LAMM_Coop`` gets ``LAMM_CoCoOp``, not ``LAMM_CoOp``).
* :func:`route_core_logging`: importing Dassl runs ``logging.disable(logging.WARNING)`` (in its ``wilds``
  datasets), which silences every INFO and WARNING record of the process, ours included ("Label embeddings: N of
  M classes loaded ..." never reached ``log.txt``).
"""

from __future__ import annotations

import difflib
import logging
import sys
from typing import Any, Optional

from dassl.optim import lr_scheduler as dassl_lr_scheduler
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from yacs.config import CfgNode

from lamm_plugin.errors import UserError
from lamm_plugin.layout import CheckpointFormatError
from lamm_plugin.layout import read_checkpoint as load_checkpoint

__all__ = [
    "CheckpointFormatError",
    "ConstantWarmupScheduler",
    "LinearWarmupScheduler",
    "build_lr_scheduler",
    "check_trainer_name",
    "format_val_result",
    "load_checkpoint",
    "load_scheduler_state_dict",
    "route_core_logging",
    "scheduler_state_dict",
]


class ConstantWarmupScheduler(dassl_lr_scheduler.ConstantWarmupScheduler):
    """Dassl's constant warm-up (``WARMUP_TYPE: constant``) without the ``verbose`` argument.

    ``get_lr`` and ``step`` are Dassl's, so the schedule is exactly Dassl's.
    """

    def __init__(
        self, optimizer: Optimizer, successor: LRScheduler, warmup_epoch: int, cons_lr: float, last_epoch: int = -1
    ) -> None:
        self.cons_lr = cons_lr
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        LRScheduler.__init__(self, optimizer, last_epoch)


class LinearWarmupScheduler(dassl_lr_scheduler.LinearWarmupScheduler):
    """Dassl's linear warm-up (``WARMUP_TYPE: linear``) without the ``verbose`` argument."""

    def __init__(
        self, optimizer: Optimizer, successor: LRScheduler, warmup_epoch: int, min_lr: float, last_epoch: int = -1
    ) -> None:
        self.min_lr = min_lr
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        LRScheduler.__init__(self, optimizer, last_epoch)


def build_lr_scheduler(optimizer: Optimizer, optim_cfg: CfgNode) -> LRScheduler:
    """Dassl's ``build_lr_scheduler`` with working warm-up wrappers.

    The successor (single_step / multi_step / cosine) is built by Dassl itself from a copy of ``optim_cfg``
    without warm-up, so its validation and arguments stay Dassl's.

    Args:
        optimizer: The optimiser to schedule.
        optim_cfg: Dassl's ``cfg.OPTIM`` node.

    Returns:
        The scheduler; a warm-up wrapper around the successor when ``WARMUP_EPOCH > 0``.
    """
    plain_cfg = optim_cfg.clone()
    plain_cfg.defrost()
    plain_cfg.WARMUP_EPOCH = -1
    scheduler = dassl_lr_scheduler.build_lr_scheduler(optimizer, plain_cfg)

    warmup_epoch = optim_cfg.WARMUP_EPOCH
    if warmup_epoch <= 0:
        return scheduler
    if not optim_cfg.WARMUP_RECOUNT:
        scheduler.last_epoch = warmup_epoch
    if optim_cfg.WARMUP_TYPE == "constant":
        return ConstantWarmupScheduler(optimizer, scheduler, warmup_epoch, optim_cfg.WARMUP_CONS_LR)
    if optim_cfg.WARMUP_TYPE == "linear":
        return LinearWarmupScheduler(optimizer, scheduler, warmup_epoch, optim_cfg.WARMUP_MIN_LR)
    raise UserError(f"OPTIM.WARMUP_TYPE must be 'constant' or 'linear', got {optim_cfg.WARMUP_TYPE!r}.")


def scheduler_state_dict(scheduler: LRScheduler) -> dict[str, Any]:
    """The scheduler's state with nested schedulers (a warm-up's successor) as state dicts, not objects.

    The result holds plain containers, numbers and tensors only, so it loads with ``weights_only=True``.
    """
    state = scheduler.state_dict()
    successor = state.get("successor")
    if isinstance(successor, LRScheduler):
        state["successor"] = scheduler_state_dict(successor)
    return state


def load_scheduler_state_dict(scheduler: LRScheduler, state: dict[str, Any]) -> None:
    """Inverse of :func:`scheduler_state_dict`: restore ``scheduler`` and its successor in place."""
    state = dict(state)
    successor_state = state.pop("successor", None)
    scheduler.load_state_dict(state)
    successor = getattr(scheduler, "successor", None)
    if isinstance(successor_state, dict) and isinstance(successor, LRScheduler):
        load_scheduler_state_dict(successor, successor_state)


def check_trainer_name(name: str, available: Optional[list[str]] = None) -> None:
    """Raise a ``ValueError`` naming the registered trainers, most similar first, unless ``name`` is one of them.

    A name that differs only in case is the one suggestion; otherwise close matches, ignoring case, are.

    Args:
        name: The requested trainer (``TRAINER.NAME``, ``--trainer``).
        available: The registered names (default: Dassl's ``TRAINER_REGISTRY``).
    """
    if available is None:
        from dassl.engine import TRAINER_REGISTRY

        available = TRAINER_REGISTRY.registered_names()
    if name in available:
        return
    by_lower: dict[str, list[str]] = {}
    for candidate in available:
        by_lower.setdefault(candidate.lower(), []).append(candidate)
    suggestions = list(by_lower.get(name.lower(), []))
    if not suggestions:
        for close in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6):
            suggestions += by_lower[close]
    hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
    raise UserError(
        f"Unknown trainer {name!r}.{hint} Registered trainers: {', '.join(sorted(available, key=str.lower))}."
    )


def format_val_result(val_result: Optional[float]) -> str:
    """``val_result`` as Dassl prints it (one decimal), or ``None`` for checkpoints saved without validation."""
    return "None" if val_result is None else f"{val_result:.1f}"


class _StdoutHandler(logging.StreamHandler):
    """Writes to ``sys.stdout`` as it is when a record comes (so a tee into ``log.txt`` catches it); a warning
    reaches the console also while ``train.py`` writes the log only (:mod:`lamm_plugin.dassl.console`)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        split = getattr(self.stream, "write_split", None)
        if record.levelno >= logging.WARNING and split is not None:
            text = self.format(record) + self.terminator
            split(text, text)
            self.flush()
            return
        super().emit(record)


def route_core_logging(level: int = logging.INFO) -> None:
    """Print ``lamm_plugin``'s log records to stdout at ``level`` and up, despite ``logging.disable``.

    Only the package's own loggers change: they check their own level instead of the process-wide ``disable``
    and print to the current stdout, which the trainers' ``log.txt`` tees; the host's loggers, the root logger and
    the ``disable`` setting stay as they are. Idempotent.
    """
    package = logging.getLogger("lamm_plugin")
    if not any(isinstance(h, _StdoutHandler) for h in package.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)
        package.propagate = False
    package.setLevel(level)
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and (name == "lamm_plugin" or name.startswith("lamm_plugin.")):
            logger.isEnabledFor = _own_level_check(logger)


def _own_level_check(logger: logging.Logger):
    def is_enabled_for(level: int) -> bool:
        return level >= logger.getEffectiveLevel()

    return is_enabled_for
