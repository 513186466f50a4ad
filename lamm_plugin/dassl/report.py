"""Results of :class:`~lamm_plugin.dassl.trainer.PromptTrainer`: ``results.json`` after the final evaluation (the
file: :mod:`.results`), and a finished run recognised by it.

``results.json`` sits beside ``log.txt``: full-precision accuracy, macro F1, per-class accuracy, config and timings.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import os.path as osp
import time
from typing import Any, Optional

import torch

from lamm_plugin import fast_paths
from lamm_plugin.dassl import console, run_config
from lamm_plugin.dassl.results import cfg_to_dict, per_class_accuracy, write_json
from lamm_plugin.layout import RESULTS_FILENAME, RESULTS_FORMAT

__all__ = ["ResultsMixin", "protocol_record"]

#: Set by ``scripts/lamm/sweep.sh --protocol`` (lamm_experiments.sweep) for the runs of a named protocol.
PROTOCOL_ENV = "LAMM_PROTOCOL"
PROTOCOL_METHOD_ENV = "LAMM_PROTOCOL_METHOD"


def protocol_record() -> Optional[dict[str, str]]:
    """``{"name", "method"}`` of the protocol this run belongs to; ``None`` for a run started by hand."""
    name = os.environ.get(PROTOCOL_ENV)
    return {"name": name, "method": os.environ.get(PROTOCOL_METHOD_ENV, "")} if name else None


class ResultsMixin:
    """``results.json`` and the finished-run check; mixed into the trainer before ``TrainerX``.

    The trainer provides ``METHOD``, ``RESULTS_METHOD``, ``fast_path_switches()``, ``lamm_cfg``, ``shots``,
    ``precision``, ``_time_init``, ``_time_train``, ``_epochs_done``, ``_loaded_checkpoint``, ``_untrained_eval`` and
    ``_train_seconds()``.
    """

    def train(self) -> None:
        """Dassl's training loop, unless this output folder holds a finished run (then its result is reported).

        A finished run is reported only when its config (in its ``results.json``) equals the one given but for
        :data:`~lamm_plugin.dassl.run_config.ALLOWED_TO_DIFFER`; otherwise
        :class:`~lamm_plugin.dassl.run_config.RunConfigMismatchError` names the keys that differ.
        """
        finished = self._finished_results()
        if finished is not None:
            path, results = finished
            print(
                f"This run is finished: {path} holds its result (epoch {results['epoch']}, accuracy "
                f"{results['accuracy']:.2f}%). Nothing is retrained or overwritten; delete that file to evaluate "
                "again, or use another --output-dir to train again."
            )
            return
        if self.max_epoch <= 0:
            print(
                f"Warning: OPTIM.MAX_EPOCH {self.max_epoch}: nothing is trained; the result is the untrained model's "
                '(recorded with "untrained": true)'
            )
        super().train()

    def _finished_results(self) -> Optional[tuple[str, dict[str, Any]]]:
        path = osp.join(self.output_dir, RESULTS_FILENAME)
        if not osp.isfile(path):
            return None
        try:
            with open(path) as f:
                results = json.load(f)
        except (OSError, ValueError):
            return None
        finished = results.get("epoch") == self.max_epoch and results.get("checkpoint") is None
        accuracy = results.get("accuracy")
        if not finished or accuracy is None:
            return None
        if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy):
            # A hand-edited or damaged file: the trained run is still there, so it is evaluated again.
            print(f"Note: {path} holds no usable accuracy ({accuracy!r}); evaluating the run again to rewrite it")
            return None
        if isinstance(results.get("config"), dict):  # the result answers only for the experiment it was made by
            run_config.check_same_experiment(results["config"], self.cfg, path, "reported as finished", self.output_dir)
        return path, results

    # ---- evaluation ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def test(self, split: Optional[str] = None) -> float:
        """Dassl's evaluation (prints ``* accuracy: X%``); the final one (``split=None``) writes ``results.json``."""
        start, mark = time.time(), time.perf_counter()
        result = super().test(split)
        phases = getattr(self, "phase_seconds", None)
        if phases is not None:
            phases["evaluation"] += time.perf_counter() - mark
        if split is None:
            self.write_results(time.time() - start)
        return result

    def write_results(self, test_seconds: float) -> str:
        """Write ``results.json`` for the last evaluation into ``OUTPUT_DIR``; returns its path."""
        cfg = self.cfg
        split = cfg.TEST.SPLIT if cfg.TEST.SPLIT == "test" or self.val_loader is not None else "test"
        metrics = self.evaluator.results
        per_class = per_class_accuracy(self.evaluator.y_true, self.evaluator.y_pred, self.lab2cname)
        now = time.time()
        trained = self._time_train is not None
        # Over every process of the run: a resumed run adds its earlier processes' time and epochs.
        train_seconds = self._train_seconds() if trained else None
        steps = getattr(self, "num_batches", 0) * self._epochs_done if trained else 0
        results = {
            "format": RESULTS_FORMAT,
            "trainer": cfg.TRAINER.NAME,
            "method": self.RESULTS_METHOD or self.METHOD,
            "lamm": self.lamm_cfg.enabled,
            "dataset": cfg.DATASET.NAME,
            "subsample_classes": cfg.DATASET.get("SUBSAMPLE_CLASSES", "all"),
            "shots": self.shots if self.shots > 0 else "all",
            "shots_requested": int(cfg.DATASET.NUM_SHOTS),
            "seed": int(cfg.SEED),
            "backbone": cfg.MODEL.BACKBONE.NAME,
            "protocol": protocol_record(),
            "precision": self.precision,
            "split": split,
            "epoch": self._epochs_done if trained else None,
            "checkpoint": self._loaded_checkpoint,
            # --eval-only without weights, or a training of zero epochs (OPTIM.MAX_EPOCH 0)
            "untrained": self._untrained_eval or (trained and self._epochs_done == 0),
            "accuracy": metrics.get("accuracy"),
            "error_rate": metrics.get("error_rate"),
            "macro_f1": metrics.get("macro_f1"),
            "mean_per_class_accuracy": (
                sum(c["accuracy"] for c in per_class.values()) / len(per_class) if per_class else None
            ),
            "num_samples": len(self.evaluator.y_true),
            "num_classes": self.num_classes,
            "classnames": list(self.dm.dataset.classnames),
            "per_class": per_class,
            "timings": {
                "train_seconds": train_seconds,
                "test_seconds": test_seconds,
                "total_seconds": now - self._time_init,
                # Wall time per training step, data loading and checkpoint saving included.
                "ms_per_step": 1000 * train_seconds / steps if steps else None,
                "peak_memory_mb": (
                    torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None
                ),
                "started_at": _iso(self._time_init),
                "finished_at": _iso(now),
                "phases": self._phases(now),
            },
            "fast_paths": self._fast_paths(),
            "config": cfg_to_dict(cfg),
        }
        path = osp.join(self.output_dir, RESULTS_FILENAME)
        write_json(results, path)
        print(f"Results written to {path}")
        return path

    def _fast_paths(self) -> Optional[dict[str, dict[str, Any]]]:
        """Each fast path of this run (:mod:`lamm_plugin.fast_paths`): passed its self-check, fell back to the eager
        computation, switched off, or not used on this device; one line in the log says which (a fall-back warned
        when it happened)."""
        switches = getattr(self, "fast_path_switches", None)
        if switches is None:
            return None
        record = fast_paths.record(self.device, switches())
        console.emit(None, f"Fast paths on {self.device}: " + ", ".join(f"{p} {r['state']}" for p, r in record.items()))
        return record

    def _phases(self, now: float) -> Optional[dict[str, Optional[float]]]:
        """Where this process's wall time went: start-up (process start to the first training step), waiting for
        the training loader, training steps, evaluations (the final one up to now), and the whole process."""
        phases = getattr(self, "phase_seconds", None)
        if phases is None:
            return None
        started = process_started_at()
        first = getattr(self, "first_step_at", None)
        record = {f"{name}_seconds": value for name, value in phases.items()}
        record["startup_seconds"] = first - started if first is not None and started is not None else None
        record["process_seconds"] = now - started if started is not None else None
        record["first_step_at"] = first
        print(
            "Time in this process: "
            + ", ".join(
                f"{name.replace('_seconds', '')} {value:.2f} s"
                for name, value in record.items()
                if value is not None and name != "first_step_at"
            )
        )
        return record


def process_started_at() -> Optional[float]:
    """When this process started (Unix time, from ``/proc``), or None where ``/proc`` does not say."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start, in clock ticks after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])  # seconds since boot, to 10 ms
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).isoformat(timespec="seconds")
