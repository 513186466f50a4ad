"""A trainer's own evaluation, kept for comparison: ``train.py`` run in this process with its logits recorded.

Shared by tests/test_predict.py (the synthetic set) and tests/test_folder_dataset.py (a ``Folder`` dataset): the
predictions of :mod:`lamm_plugin.predict` are checked against these, image by image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
import torch


@dataclass
class Evaluation:
    """A trainer's evaluation: its logits per test image (in test order), predictions, labels and image paths."""

    trainer: object
    logits: torch.Tensor
    paths: list[str]
    labels: list[int]

    @property
    def predictions(self) -> list[int]:
        return list(self.trainer.evaluator.y_pred)

    @property
    def accuracy(self) -> float:
        return self.trainer.evaluator.results["accuracy"]

    @property
    def out(self) -> str:
        """The run's output folder."""
        return self.trainer.cfg.OUTPUT_DIR

    @property
    def batch_size(self) -> int:
        return self.trainer.cfg.DATALOADER.TEST.BATCH_SIZE

    def batches(self) -> list[list[str]]:
        """The test images in the batches the trainer evaluated them in."""
        n = self.batch_size
        return [self.paths[i : i + n] for i in range(0, len(self.paths), n)]

    def logits_of(self, predictor) -> torch.Tensor:
        """``predictor``'s logits of the test images, batched as the trainer batched them (CPU matmuls round by the
        batch they are in: only the same batches give the same bits)."""
        return torch.cat([predictor.logits(torch.stack([predictor.preprocess(p) for p in b])) for b in self.batches()])


def train_recorded(args: Sequence[str]) -> Evaluation:
    """``train.py`` with these arguments, in process; returns the :class:`Evaluation` of its final test."""
    import train
    from lamm_plugin.dassl.results import RecordingEvaluator

    seen: list[torch.Tensor] = []
    process, reset = RecordingEvaluator.process, RecordingEvaluator.reset

    def record(self, output, label):
        seen.append(output.detach().cpu().clone())
        process(self, output, label)

    def clear(self):
        seen.clear()
        reset(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RecordingEvaluator, "process", record)
        patch.setattr(RecordingEvaluator, "reset", clear)
        trained = train.main(train.parse_args(list(args)))
    items = trained.dm.dataset.test
    return Evaluation(trained, torch.cat(seen), [d.impath for d in items], [d.label for d in items])


def accuracy(predictions, labels: Sequence[int]) -> float:
    """Top-1 accuracy (%) of :class:`~lamm_plugin.predict.Prediction` s, computed as Dassl's evaluator does."""
    return 100.0 * sum(p.label == y for p, y in zip(predictions, labels)) / len(labels)
