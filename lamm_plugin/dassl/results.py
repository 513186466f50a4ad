"""The ``results.json`` file written beside Dassl's ``log.txt``.

Dassl prints accuracy with one decimal; this file keeps full precision plus what a results table needs: macro
F1, per-class accuracy, the full config, shots, seed, trainer and timings. ``scripts/parse_results.py`` reads it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from yacs.config import CfgNode

from lamm_plugin.dassl.checkpoints import write_atomic

__all__ = [
    "RecordingEvaluator",
    "cfg_to_dict",
    "per_class_accuracy",
    "write_json",
]


def cfg_to_dict(node: Any) -> Any:
    """A yacs config as plain JSON-ready values (nodes -> dicts, tuples -> lists)."""
    if isinstance(node, CfgNode):
        return {key: cfg_to_dict(value) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return [cfg_to_dict(value) for value in node]
    return node


def per_class_accuracy(
    y_true: Sequence[int], y_pred: Sequence[int], lab2cname: Mapping[int, str]
) -> dict[str, dict[str, Any]]:
    """Accuracy per class, keyed by label (class names may repeat), in label order.

    Classes without test samples are left out.

    Returns:
        ``{str(label): {"classname", "label", "total", "correct", "accuracy"}}`` with accuracy in percent.
    """
    totals: dict[int, int] = {}
    correct: dict[int, int] = {}
    for t, p in zip(y_true, y_pred):
        totals[t] = totals.get(t, 0) + 1
        correct[t] = correct.get(t, 0) + int(t == p)
    return {
        str(label): {
            "classname": lab2cname.get(label, str(label)),
            "label": label,
            "total": totals[label],
            "correct": correct[label],
            "accuracy": 100.0 * correct[label] / totals[label],
        }
        for label in sorted(totals)
    }


class RecordingEvaluator:
    """Wraps a Dassl evaluator: forwards every call and keeps the labels, predictions and last results.

    Dassl's ``Classification`` evaluator prints the ``* accuracy: X%`` lines and returns its metrics; the wrapper
    keeps those unchanged and records what the results file needs.
    """

    def __init__(self, evaluator: Any) -> None:
        self.evaluator = evaluator
        self.y_true: list[int] = []
        self.y_pred: list[int] = []
        self.results: dict[str, float] = {}

    def reset(self) -> None:
        self.y_true, self.y_pred, self.results = [], [], {}
        self.evaluator.reset()

    def process(self, output: Any, label: Any) -> None:
        # output: [B, C] logits; label: [B]
        self.y_true.extend(label.detach().cpu().tolist())
        self.y_pred.extend(output.detach().argmax(dim=1).cpu().tolist())
        self.evaluator.process(output, label)

    def evaluate(self) -> dict[str, float]:
        results = self.evaluator.evaluate()
        self.results = {key: float(value) for key, value in results.items()}
        return results

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found on the wrapper: delegate to Dassl's evaluator.
        if name == "evaluator":
            raise AttributeError(name)
        return getattr(self.evaluator, name)


def write_json(obj: Any, path: str) -> None:
    """Write ``obj`` as indented JSON, atomically (a crash never leaves half a file)."""
    text = json.dumps(obj, indent=2) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))
