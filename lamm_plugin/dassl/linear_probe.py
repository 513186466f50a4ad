"""Linear-probe CLIP: logistic regression on frozen CLIP image features, the baseline curve of CoOp's few-shot
figure (CoOp's ``lpclip/``: ``feat_extractor.py``, then ``linear_probe.py``; Radford et al. 2021, appendix A.3).

The trainer ``LinearProbeCLIP`` (node ``TRAINER.LINEARPROBECLIP``: ``PREC``, ``SEARCH_STEPS``) runs from
``train.py`` like any other: the image tower's output (unnormalised, as ``feat_extractor.py`` saves it) of the
few-shot training images and of the validation images, both through the test transform; scikit-learn's
``LogisticRegression`` (lbfgs, L2, 1000 iterations) with its inverse regularisation strength ``C`` searched on the
validation split as ``linear_probe.py`` searches it (:func:`search_regularization`); then Dassl's evaluation of
the test split with the classifier's log-probabilities as logits. Its few-shot sets are Dassl's (``DATASET.
NUM_SHOTS`` and the seed, as every other row of the tables; the validation split holds ``min(K, 4)`` images per
class, which is ``linear_probe.py``'s ``val_shot_list``). Fitting takes no epochs: the one "epoch" of a run fits.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch
from dassl.data.data_manager import build_data_loader
from dassl.data.transforms import build_transform
from tqdm import tqdm

from lamm_plugin.dassl.trainer import PromptTrainer
from lamm_plugin.methods.zeroshot import ZeroshotConfig

#: The first values of ``C`` tried (``linear_probe.py``'s ``search_list``).
SEARCH_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)
#: The trainer's config node and its keys (``SEARCH_STEPS``: the refining steps, ``--num_step`` of the original
#: scripts: 8).
NODE = "LINEARPROBECLIP"


def _fit(c: float, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray]) -> tuple[Any, float]:
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(solver="lbfgs", max_iter=1000, C=c).fit(*train)
    return classifier, float(np.mean(classifier.predict(val[0]) == val[1]))


def search_regularization(
    train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], steps: int = 8
) -> tuple[Any, float, float]:
    """The classifier of CoOp's linear-probe search, its ``C`` and its validation accuracy (0 to 1).

    Every ``C`` of :data:`SEARCH_GRID` is fitted; around the best (the first of equals), ``C/10`` and ``10 C`` are
    fitted, the better of the two kept (the lower on a tie), and the interval halved in log space towards it, ``steps``
    times; the classifier kept at the last step is the result.

    Args:
        train: ``(features [N, E], labels [N])`` to fit on.
        val: ``(features, labels)`` of the validation split, where ``C`` is chosen.
        steps: Refining steps (at least 1).
    """
    if steps < 1:
        raise ValueError(f"TRAINER.{NODE}.SEARCH_STEPS must be at least 1, got {steps}.")
    scores = [_fit(c, train, val)[1] for c in SEARCH_GRID]
    peak = SEARCH_GRID[int(np.argmax(scores))]
    left, right = 0.1 * peak, 10.0 * peak
    for _ in range(steps):
        (clf_left, acc_left), (clf_right, acc_right) = _fit(left, train, val), _fit(right, train, val)
        low, high = math.log10(left), math.log10(right)  # the next interval, in log space as the original keeps it
        if acc_left < acc_right:
            result, low = (clf_right, right, acc_right), 0.5 * (low + high)
        else:
            result, high = (clf_left, left, acc_left), 0.5 * (low + high)
        left, right = 10.0**low, 10.0**high
    return result


class LinearProbeCLIP(PromptTrainer):
    """Linear-probe CLIP: logistic regression on frozen CLIP image features, ``C`` searched on the validation split
    (CoOp's ``lpclip``)."""

    METHOD = "zeroshot"  # the frozen CLIP whose image tower gives the features; its text side is not used
    NODE = NODE
    USE_LAMM = False

    def __init__(self, cfg) -> None:
        self.classifier: Optional[Any] = None
        super().__init__(cfg)
        self.graphed_eval = None  # the classifier runs on the host

    def method_config(self) -> ZeroshotConfig:
        return ZeroshotConfig(dataset=self.cfg.DATASET.NAME)

    @torch.no_grad()
    def _features(self, loader) -> tuple[np.ndarray, np.ndarray]:
        """Image-tower outputs ``[N, E]`` (float32) and labels of a loader's images, in its order."""
        self.set_model_mode("eval")
        features, labels = [], []
        for batch in tqdm(loader):
            images, label = self.parse_batch_test(batch)
            with self._autocast():
                features.append(self.model.encode_image(images).float().cpu())
            labels.append(label.cpu())
        return torch.cat(features).numpy(), torch.cat(labels).numpy()

    def fit(self) -> None:
        """Extract the training and validation features and search the classifier (once per process)."""
        if self.classifier is not None:
            return
        if self.val_loader is None:
            raise ValueError(
                f"LinearProbeCLIP chooses its regularisation on the validation split, and dataset "
                f"{self.cfg.DATASET.NAME} has none: use a dataset with a val split."
            )
        train_loader = build_data_loader(
            self.cfg,
            sampler_type="SequentialSampler",
            data_source=self.dm.dataset.train_x,
            batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE,
            tfm=build_transform(self.cfg, is_train=False),
            is_train=False,
        )
        train, val = self._features(train_loader), self._features(self.val_loader)
        steps = int(self.cfg.TRAINER[NODE].SEARCH_STEPS)
        self.classifier, c, accuracy = search_regularization(train, val, steps)
        print(f"Linear probe: C = {c:.6g} (validation accuracy {100 * accuracy:.2f}%, {len(train[1])} training images)")

    def run_epoch(self) -> None:
        """The one epoch of a linear probe: fitting the classifier."""
        self.fit()
        self._epochs_done = self.epoch + 1

    def forward_backward(self, batch: dict) -> dict[str, float]:
        raise RuntimeError("LinearProbeCLIP fits a classifier in its one epoch; it takes no gradient steps.")

    def model_inference(self, input: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``[B, C]`` of the classifier (minus infinity for a class absent from training)."""
        self.fit()
        with self._autocast():
            features = self.model.encode_image(input).float().cpu().numpy()
        with np.errstate(divide="ignore"):  # a probability of 0 is a log-probability of minus infinity
            log_proba = torch.from_numpy(self.classifier.predict_log_proba(features)).float()
        logits = torch.full((len(features), len(self.model.classnames)), -math.inf)
        logits[:, torch.from_numpy(self.classifier.classes_).long()] = log_proba
        return logits.to(input.device)


def add_linear_probe_config(cfg) -> None:
    """Add ``TRAINER.LINEARPROBECLIP`` (``PREC``, ``SEARCH_STEPS``) to a Dassl config in place; idempotent."""
    from yacs.config import CfgNode

    if NODE not in cfg.TRAINER:
        cfg.TRAINER[NODE] = CfgNode({"PREC": "fp16", "SEARCH_STEPS": 8})
