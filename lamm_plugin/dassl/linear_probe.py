"""Linear-probe CLIP: logistic regression on frozen CLIP image features, the baseline curve of CoOp's few-shot
figure (CoOp's ``lpclip/``: ``feat_extractor.py``, then ``linear_probe.py``; Radford et al. 2021, appendix A.3).

The trainer ``LinearProbeCLIP`` (node ``TRAINER.LINEARPROBECLIP``: ``PREC``, ``SEARCH_STEPS``) runs from
``train.py`` like any other: the image tower's output (unnormalised, as ``feat_extractor.py`` saves it) of the
few-shot training images and of the validation images, both through the test transform; scikit-learn's
``LogisticRegression`` (lbfgs, L2, 1000 iterations) with its inverse regularisation strength ``C`` searched on the
validation split as ``linear_probe.py`` searches it (:func:`search_regularization`); then Dassl's evaluation of
the test split with the classifier's log-probabilities as logits (:func:`~lamm_plugin.predict.probe_logits`). Each
checkpoint keeps the classifier as tensors (:func:`classifier_tensors`, key :data:`~lamm_plugin.predict.LINEAR_PROBE`):
``--eval-only --model-dir`` evaluates it without fitting again, and :class:`~lamm_plugin.predict.Predictor` predicts
with it. ``results.json`` names the method ``linear_probe``. Its few-shot sets are Dassl's (``DATASET.
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
from lamm_plugin.errors import UserError
from lamm_plugin.methods.zeroshot import ZeroshotConfig
from lamm_plugin.predict import LINEAR_PROBE, probe_logits

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


def classifier_tensors(classifier: Any) -> dict[str, torch.Tensor]:
    """A fitted ``LogisticRegression`` as tensors (:data:`~lamm_plugin.predict.LINEAR_PROBE`) whose log-softmax is its
    ``predict_log_proba``: weight ``[K, E]`` and bias ``[K]`` (float64) and the labels of its ``K`` classes. A
    two-class fit (one row: a sigmoid) becomes the rows ``[0, w]``, whose softmax is that sigmoid."""
    weight, bias = np.asarray(classifier.coef_, np.float64), np.asarray(classifier.intercept_, np.float64)
    if len(classifier.classes_) == 2:
        weight, bias = np.concatenate([np.zeros_like(weight), weight]), np.concatenate([np.zeros_like(bias), bias])
    return {
        "weight": torch.from_numpy(weight),
        "bias": torch.from_numpy(bias),
        "classes": torch.from_numpy(np.asarray(classifier.classes_, np.int64)),
    }


class LinearProbeCLIP(PromptTrainer):
    """Linear-probe CLIP: logistic regression on frozen CLIP image features, ``C`` searched on the validation split
    (CoOp's ``lpclip``)."""

    METHOD = "zeroshot"  # the frozen CLIP whose image tower gives the features; its text side is not used
    RESULTS_METHOD = LINEAR_PROBE
    NODE = NODE
    USE_LAMM = False

    def __init__(self, cfg) -> None:
        self.probe: Optional[dict[str, torch.Tensor]] = None  # the classifier (classifier_tensors)
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
        """Extract the training and validation features and search the classifier."""
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
        classifier, c, accuracy = search_regularization(train, val, steps)
        self.probe = classifier_tensors(classifier)
        print(f"Linear probe: C = {c:.6g} (validation accuracy {100 * accuracy:.2f}%, {len(train[1])} training images)")

    def run_epoch(self) -> None:
        """The one epoch of a linear probe: fitting the classifier (later epochs have nothing to do)."""
        if self.probe is None:
            self.fit()
        self._epochs_done = self.epoch + 1

    def forward_backward(self, batch: dict) -> dict[str, float]:
        raise RuntimeError("LinearProbeCLIP fits a classifier in its one epoch; it takes no gradient steps.")

    def model_inference(self, input: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``[B, C]`` of the classifier (minus infinity for a class absent from training)."""
        if self.probe is None:
            raise UserError(
                "LinearProbeCLIP has no classifier to evaluate: train it (OPTIM.MAX_EPOCH 1 fits it), or load a "
                "linear-probe run's with --eval-only --model-dir."
            )
        with self._autocast():
            features = self.model.encode_image(input).float()
        return probe_logits(self.probe, features, len(self.model.classnames))

    def extra_checkpoint_state(self) -> dict[str, Any]:
        """The classifier, in every checkpoint."""
        return {LINEAR_PROBE: self.probe} if self.probe is not None else {}

    def _load_state(self, checkpoint: dict[str, Any], path: str, name: Optional[str] = None) -> None:
        super()._load_state(checkpoint, path, name)
        if checkpoint.get(LINEAR_PROBE) is None:
            raise UserError(
                f"{path} holds no linear-probe classifier (a checkpoint of another trainer, or of a linear-probe run "
                "written before checkpoints kept it): train the linear probe into a new --output-dir."
            )
        self.probe = checkpoint[LINEAR_PROBE]

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        if not directory:
            raise UserError(
                "LinearProbeCLIP --eval-only needs --model-dir: the classifier it evaluates is fitted by a training "
                "run (then --model-dir OUTPUT_DIR of that run)."
            )
        super().load_model(directory, epoch)


def add_linear_probe_config(cfg) -> None:
    """Add ``TRAINER.LINEARPROBECLIP`` (``PREC``, ``SEARCH_STEPS``) to a Dassl config in place; idempotent."""
    from yacs.config import CfgNode

    if NODE not in cfg.TRAINER:
        cfg.TRAINER[NODE] = CfgNode({"PREC": "fp16", "SEARCH_STEPS": 8})
