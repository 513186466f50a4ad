"""The training progress lines of :class:`~lamm_plugin.dassl.trainer.PromptTrainer` (Dassl's ``run_epoch``, retold).

Dassl prints every ``TRAIN.PRINT_FREQ`` batches one line of about 280 characters (every loss term, batch and data
times) whose ETA is this epoch's mean batch time times the batches left, so it jumps at each epoch start and with
every slow batch. Here:

* the console gets one short line: epoch, batch, loss and accuracy (this epoch's means so far), lr and the ETA;
* ``log.txt`` keeps Dassl's full line, word for word as Dassl writes it (CoOp-family users read it with their own
  scripts), but with the ETA below;
* the ETA is the mean wall time per batch over the whole run so far in this process (checkpoint writes and data
  loading included) times the batches left, so it settles instead of following the last batches.

TensorBoard gets what Dassl writes: every term's epoch mean and the lr, per batch.
"""

from __future__ import annotations

import datetime
import time
from typing import Callable, Optional

from dassl.utils import AverageMeter, MetricMeter

from lamm_plugin.dassl.console import emit

__all__ = ["EtaClock", "ProgressMixin", "format_eta", "short_progress"]


class EtaClock:
    """Time left from the mean wall time per batch since the first batch this process trained.

    Args:
        clock: The time source (seconds), replaceable in tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start: Optional[float] = None
        self.batches = 0

    def begin(self) -> None:
        """Mark the start of the first batch (later calls do nothing)."""
        if self.start is None:
            self.start = self.clock()

    def batch_done(self) -> None:
        self.batches += 1

    def seconds_per_batch(self) -> float:
        if self.start is None or self.batches == 0:
            return 0.0
        return (self.clock() - self.start) / self.batches

    def eta(self, batches_left: int) -> float:
        """Seconds left for ``batches_left`` more batches at the mean pace so far."""
        return self.seconds_per_batch() * max(batches_left, 0)


def format_eta(seconds: float) -> str:
    """``H:MM:SS``, as Dassl writes it (``timedelta`` of whole seconds)."""
    return str(datetime.timedelta(seconds=int(max(seconds, 0.0))))


def short_progress(
    epoch: int, max_epoch: int, batch: int, num_batches: int, loss: float, acc: float, lr: float, eta: str
) -> str:
    """The console's progress line (about 75 characters): 1-based epoch and batch, epoch means of loss and
    accuracy so far, the lr and the time left."""
    width = len(str(max_epoch)), len(str(num_batches))
    return (
        f"epoch {epoch:>{width[0]}}/{max_epoch} batch {batch:>{width[1]}}/{num_batches}  loss {loss:.4f}  "
        f"acc {acc:5.1f}%  lr {lr:.2e}  eta {eta}"
    )


class ProgressMixin:
    """Dassl's ``TrainerX.run_epoch`` with the short console line and the settling ETA (see the module).

    Mixed into the trainer before ``TrainerX``; the loop itself (batches, ``forward_backward``, the scalars
    written) is Dassl's.
    """

    _eta_clock: Optional[EtaClock] = None

    def run_epoch(self) -> None:
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)
        if self._eta_clock is None:
            self._eta_clock = EtaClock()
        clock = self._eta_clock
        clock.begin()

        end = time.time()
        for batch_idx, batch in enumerate(self.train_loader_x):
            self.batch_idx = batch_idx  # read by forward_backward (the lr step after the last batch)
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)
            clock.batch_done()

            meet_freq = (self.batch_idx + 1) % self.cfg.TRAIN.PRINT_FREQ == 0
            only_few_batches = self.num_batches < self.cfg.TRAIN.PRINT_FREQ
            if meet_freq or only_few_batches:
                left = self.num_batches - self.batch_idx - 1 + (self.max_epoch - self.epoch - 1) * self.num_batches
                eta = format_eta(clock.eta(left))
                lr = self.get_current_lr()
                full = " ".join([
                    f"epoch [{self.epoch + 1}/{self.max_epoch}]",
                    f"batch [{self.batch_idx + 1}/{self.num_batches}]",
                    f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
                    f"data {data_time.val:.3f} ({data_time.avg:.3f})",
                    f"{losses}",
                    f"lr {lr:.4e}",
                    f"eta {eta}",
                ])  # fmt: skip
                meters = losses.meters
                short = short_progress(
                    self.epoch + 1,
                    self.max_epoch,
                    self.batch_idx + 1,
                    self.num_batches,
                    meters["loss"].avg if "loss" in meters else float("nan"),
                    meters["acc"].avg if "acc" in meters else float("nan"),
                    lr,
                    eta,
                )
                emit(short, full)

            n_iter = self.epoch * self.num_batches + self.batch_idx
            for name, meter in losses.meters.items():
                self.write_scalar("train/" + name, meter.avg, n_iter)
            self.write_scalar("train/lr", self.get_current_lr(), n_iter)
            end = time.time()
