"""Dassl trainers over the LAMM core: ``LAMM_CoOp``, ``LAMM_MaPLe``, ``LAMM_VPT``.

The trainers are thin: CLIP comes from :func:`lamm_plugin.load_clip`, the model from
:func:`lamm_plugin.lamm.build_model`, and the optimiser gets exactly ``model.trainable_parameters()``. What they
add to Dassl's ``TrainerX``:

* precision from ``TRAINER.<NODE>.PREC`` (``fp32``, ``fp16``, ``bf16`` or ``amp``; a GradScaler under ``fp16``
  and ``amp``);
* on a GPU, each training step's forward and backward replayed from a CUDA graph (``TRAINER.<NODE>.CUDA_GRAPH``,
  :mod:`lamm_plugin.cuda_graph`), the optimiser step eager;
* every loss term of the hierarchical loss in the ``PRINT_FREQ`` lines and in TensorBoard;
* checkpoints holding only learned tensors, class names and configs (``model.checkpoint_state()``) plus plain
  optimiser and scheduler states, in Dassl's layout (``<output>/prompt_learner/model.pth.tar-<epoch>``,
  ``model-best.pth.tar``, ``checkpoint``), read with ``torch.load(..., weights_only=True)``; labels are matched by
  class name, so a checkpoint evaluates on another class set (base -> new, ImageNet -> its variants);
* ``results.json`` beside ``log.txt`` after the final evaluation (full-precision accuracy, macro F1, per-class
  accuracy, config, timings);
* the compatibility fixes of :mod:`lamm_plugin.dassl.compat` for current PyTorch.

Subclasses set :attr:`PromptTrainer.METHOD` and :attr:`PromptTrainer.NODE`; the repository's baselines set
:attr:`PromptTrainer.USE_LAMM` to ``False``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import os.path as osp
import time
from collections import Counter
from typing import Any, Optional

import torch
from dassl.engine import TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_optimizer
from dassl.utils import set_random_seed

from lamm_plugin import build_model, load_clip
from lamm_plugin.config import LAMMConfig
from lamm_plugin.cuda_graph import GraphedStep
from lamm_plugin.dassl import checkpoints, compat
from lamm_plugin.dassl.config import (
    CUDA_GRAPH_KEY,
    LAMM_NODE,
    PRECISION_KEY,
    lamm_config_from_cfg,
    method_config_from_cfg,
)
from lamm_plugin.dassl.results import RecordingEvaluator, cfg_to_dict, per_class_accuracy, write_json
from lamm_plugin.layout import (
    BEST_FILE,
    PRECISIONS,
    RESULTS_FILENAME,
    RESULTS_FORMAT,
    checkpoint_epochs,
    epoch_file,
    find_checkpoint,
    last_checkpoint,
)
from lamm_plugin.methods.promptsrc import GaussianPromptAggregation

__all__ = [
    "LAMM_CoCoOp",
    "LAMM_CoOp",
    "LAMM_KgCoOp",
    "LAMM_MaPLe",
    "LAMM_PromptSRC",
    "LAMM_VPT",
    "TRAINERS",
    "PromptTrainer",
]

#: Keys a saved checkpoint adds to ``model.checkpoint_state()`` (Dassl's names, then what an exact resume needs).
TRAINING_KEYS = (
    "epoch",
    "optimizer",
    "scheduler",
    "val_result",
    "scaler",
    "rng",
    "best_result",
    "train_seconds",
    "gpa",
)


class PromptTrainer(TrainerX):
    """Base Dassl trainer for every method of the core (LAMM trainers and the baselines).

    Attributes:
        METHOD: Method name of the core (``"coop"``, ``"maple"``, ``"vpt"``, ``"zeroshot"``).
        NODE: Config node under ``TRAINER`` holding the method's settings and ``PREC``.
        USE_LAMM: ``False`` for the plain host method (``TRAINER.LAMM`` is then ignored).
        MODEL_NAME: Name the model is registered under: the checkpoint sub-folder.
    """

    METHOD: str = ""
    NODE: str = ""
    USE_LAMM: bool = True
    MODEL_NAME: str = "prompt_learner"

    def __init__(self, cfg) -> None:
        self._time_init = time.time()
        self._time_train: Optional[tuple[float, float]] = None
        self._train_seconds_before = 0.0  # training time of earlier processes of this run (resume)
        self._epochs_done = 0  # epochs the learned tensors in memory were trained for
        self._loaded_checkpoint: Optional[dict[str, Any]] = None
        self._untrained_eval = False  # --eval-only without --model-dir
        super().__init__(cfg)
        self.evaluator = RecordingEvaluator(self.evaluator)

    # ---- building ------------------------------------------------------------------------------------------------
    def check_cfg(self, cfg) -> None:
        prec = cfg.TRAINER[self.NODE][PRECISION_KEY]
        if prec not in PRECISIONS:
            raise ValueError(f"TRAINER.{self.NODE}.{PRECISION_KEY} must be one of {PRECISIONS}, got {prec!r}.")

    @property
    def precision(self) -> str:
        """The precision in use: ``TRAINER.<NODE>.PREC``, on every device (a CPU runs fp16 too, slowly)."""
        return self.cfg.TRAINER[self.NODE][PRECISION_KEY]

    def method_config(self) -> Any:
        """The method's dataclass config from ``TRAINER.<NODE>``."""
        method_cfg = method_config_from_cfg(self.cfg, self.NODE)
        if getattr(method_cfg, "dataset", None) == "":  # hand-crafted template of this dataset (zero-shot, KgCoOp)
            method_cfg = dataclasses.replace(method_cfg, dataset=self.cfg.DATASET.NAME)
        return method_cfg

    def lamm_config(self) -> Any:
        """:class:`~lamm_plugin.config.LAMMConfig` from ``TRAINER.LAMM`` (disabled for the baselines)."""
        if LAMM_NODE in self.cfg.TRAINER:
            lamm_cfg = lamm_config_from_cfg(self.cfg)
        else:
            # Dassl's clean_cfg(cfg, trainer), which some hosts call, drops every TRAINER node but the trainer's own.
            print(f"Note: the config has no TRAINER.{LAMM_NODE} node (removed by clean_cfg?); using LAMM's defaults")
            lamm_cfg = LAMMConfig()
        if not self.USE_LAMM or self.METHOD == "zeroshot":
            lamm_cfg = dataclasses.replace(lamm_cfg, enabled=False)
        return lamm_cfg

    def build_model(self) -> None:
        cfg = self.cfg
        classnames = self.dm.dataset.classnames
        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME}, precision: {self.precision})")
        clip = load_clip(
            cfg.MODEL.BACKBONE.NAME, pretrained=self._pretrained(), precision=self.precision, device=self.device
        )
        self._check_input(clip)

        self.lamm_cfg = self.lamm_config()
        print(f"Building {self.METHOD} ({'with' if self.lamm_cfg.enabled else 'without'} LAMM)")
        self.shots = self._shots()
        self.model = build_model(self.METHOD, clip, classnames, self.method_config(), self.lamm_cfg, self.shots)
        self.model.to(self.device)
        if cfg.MODEL.INIT_WEIGHTS:
            # Before the optimiser is built: loading may resize the label-embedding parameter.
            self._load_state(compat.load_checkpoint(cfg.MODEL.INIT_WEIGHTS), cfg.MODEL.INIT_WEIGHTS)
            print(f"Initialised learned tensors from {cfg.MODEL.INIT_WEIGHTS}")
        self.configure_trainable()

        params = self.model.trainable_parameters()
        print(f"# trainable params: {sum(p.numel() for p in params):,}")
        self.optim = build_optimizer(params, cfg.OPTIM) if params else None
        self.sched = compat.build_lr_scheduler(self.optim, cfg.OPTIM) if params else None
        self.register_model(self.MODEL_NAME, self.model, self.optim, self.sched)
        self.scaler = None
        if params and self.precision in ("fp16", "amp"):
            self.scaler = torch.amp.GradScaler(self.device.type)
        # PromptSRC's Gaussian prompt aggregation over epochs (every trainable tensor, label rows included).
        self.gpa = None
        method_cfg = self.model.method.cfg
        if params and getattr(method_cfg, "gpa", False):
            self.gpa = GaussianPromptAggregation(int(cfg.OPTIM.MAX_EPOCH), method_cfg.gpa_mean, method_cfg.gpa_std)
        self.graphed = None
        if params and self.device.type == "cuda" and cfg.TRAINER[self.NODE].get(CUDA_GRAPH_KEY, True):
            self.graphed = GraphedStep(self.model, self._autocast_dtype(), self.scaler)

    def configure_trainable(self) -> None:
        """Hook between loading ``MODEL.INIT_WEIGHTS`` and building the optimiser: freeze what this run must not
        train (later continual stages freeze the shared tensors here). Nothing by default."""

    def _shots(self) -> int:
        """``K``, the shots per class the training set really holds (0 for the full training set).

        ``DATASET.NUM_SHOTS`` larger than what a class has gives that class all its images (CoOp's sampling): the
        largest per-class count is then ``K`` (the parameter-alignment weight is ``1/K``), and the classes short of
        the request are named.
        """
        requested = int(self.cfg.DATASET.NUM_SHOTS)
        if requested <= 0:
            print(f"DATASET.NUM_SHOTS {requested}: training on the full training set")
            return 0
        counts = Counter(item.label for item in self.dm.dataset.train_x)
        k = max(counts.values())
        short = {self.lab2cname.get(label, label): n for label, n in sorted(counts.items()) if n < requested}
        if short:
            shown = ", ".join(f"{name}: {n}" for name, n in list(short.items())[:20])
            more = f" and {len(short) - 20} more" if len(short) > 20 else ""
            print(
                f"Note: DATASET.NUM_SHOTS {requested}, but {len(short)} of {len(counts)} classes have fewer training "
                f"images ({shown}{more}); those use all they have, and K = {k} shots is used and recorded"
            )
        return k

    def _pretrained(self) -> Optional[str]:
        """``MODEL.BACKBONE.PRETRAINED`` for :func:`load_clip`: None/True = default weights, False = random."""
        value = self.cfg.MODEL.BACKBONE.get("PRETRAINED")
        if value is None or value is True:
            return None
        if value is False:
            return ""
        return str(value)

    def _check_input(self, clip) -> None:
        size = tuple(self.cfg.INPUT.SIZE)
        if size != (clip.image_size, clip.image_size):
            raise ValueError(
                f"INPUT.SIZE {size} does not fit backbone {clip.name!r}, which takes "
                f"{clip.image_size}x{clip.image_size} images: set INPUT.SIZE ({clip.image_size}, {clip.image_size})."
            )
        if "normalize" in self.cfg.INPUT.TRANSFORMS:
            mean, std = tuple(self.cfg.INPUT.PIXEL_MEAN), tuple(self.cfg.INPUT.PIXEL_STD)
            if any(abs(a - b) > 1e-4 for a, b in zip(mean + std, clip.mean + clip.std)):
                print(
                    f"Note: INPUT.PIXEL_MEAN/STD {mean}/{std} differ from the backbone's normalisation "
                    f"{clip.mean}/{clip.std}"
                )

    # ---- training ------------------------------------------------------------------------------------------------
    def _autocast_dtype(self) -> Optional[torch.dtype]:
        if self.precision != "amp":
            return None
        return torch.float16 if self.device.type == "cuda" else torch.bfloat16

    def _autocast(self):
        dtype = self._autocast_dtype()
        return torch.autocast(device_type=self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def parse_batch_train(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def forward_backward(self, batch: dict) -> dict[str, float]:
        if self.optim is None:
            raise RuntimeError(f"{type(self).__name__} has nothing to train; run it with --eval-only.")
        image, label = self.parse_batch_train(batch)
        out = self.graphed(image, label) if self.graphed is not None else None
        if out is not None:  # forward and backward replayed from a CUDA graph; the optimiser step stays eager
            loss = out.losses["total"]
            if self.scaler is not None:
                self.scaler.step(self.optim)
                self.scaler.update()
            else:
                self.optim.step()
        else:
            out = self._eager_step(image, label)
            loss = out.losses["total"]

        summary = {"loss": loss.item(), "acc": compute_accuracy(out.logits.detach(), label)[0].item()}
        summary.update({name: value.item() for name, value in out.losses.items() if name != "total"})
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def _eager_step(self, image: torch.Tensor, label: torch.Tensor):
        with self._autocast():
            out = self.model(image, label)
        loss = out.losses["total"]
        if self.scaler is not None:
            self.optim.zero_grad()
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            self.model_backward_and_update(loss)
        return out

    def model_inference(self, input: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.model(input).logits.float()

    def train(self) -> None:
        """Dassl's training loop, unless this output folder holds a finished run (then its result is reported)."""
        finished = self._finished_results()
        if finished is not None:
            path, results = finished
            print(
                f"This run is finished: {path} holds its result (epoch {results['epoch']}, accuracy "
                f"{results['accuracy']:.2f}%). Nothing is retrained or overwritten; delete that file to evaluate "
                "again, or use another --output-dir to train again."
            )
            return
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
        return (path, results) if finished and results.get("accuracy") is not None else None

    def before_train(self) -> None:
        super().before_train()  # resumes (resume_model_if_exist) when the output folder has a checkpoint
        self._time_train = (self.time_start, self.time_start)

    def after_train(self) -> None:
        self._time_train = (self._time_train[0] if self._time_train else time.time(), time.time())
        super().after_train()

    def _train_seconds(self) -> float:
        """Training time of this run so far, over every process that worked on it."""
        if self._time_train is None:
            return self._train_seconds_before
        start, end = self._time_train
        return self._train_seconds_before + ((end if end > start else time.time()) - start)

    def after_epoch(self) -> None:
        """Dassl's ``after_epoch``, except that every epoch is saved, so that a killed run resumes where it was.

        ``TRAIN.CHECKPOINT_FREQ`` says which epochs' files stay (Dassl's meaning: every ``k``-th and the last; 0 =
        the last only); the newest is always there until a newer one is written. With PromptSRC's GPA, the
        epoch's tensors join the aggregate first, and after the last epoch the aggregate becomes the model.
        """
        if self.gpa is not None:
            self.gpa.update(self.model, self.epoch)
            if self.epoch + 1 == self.max_epoch:
                print("Using the Gaussian prompt aggregate (GPA) of all epochs as the final model")
                self.gpa.apply(self.model)
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            result = self.test(split="val")
            if result > self.best_result:
                self.best_result = result
                self.save_model(self.epoch, self.output_dir, val_result=result, model_name=BEST_FILE)
        self._epochs_done = self.epoch + 1
        self.save_model(self.epoch, self.output_dir)
        freq = int(self.cfg.TRAIN.CHECKPOINT_FREQ)
        for name in self.get_model_names():
            folder = osp.join(self.output_dir, name)
            for epoch in checkpoint_epochs(folder):
                if epoch < self._epochs_done and (freq <= 0 or epoch % freq):
                    os.remove(osp.join(folder, epoch_file(epoch)))

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def save_model(
        self, epoch: int, directory: str, is_best: bool = False, val_result: Optional[float] = None, model_name=""
    ) -> None:
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            state = self._models[name].checkpoint_state()
            state.update(
                epoch=epoch + 1,
                optimizer=optim.state_dict() if optim is not None else None,
                scheduler=compat.scheduler_state_dict(sched) if sched is not None else None,
                val_result=None if val_result is None else float(val_result),
                # What an exact resume needs: every random generator at this epoch boundary, the GradScaler,
                # the best validation result so far and the training time spent.
                scaler=self.scaler.state_dict() if self.scaler is not None else None,
                rng=checkpoints.rng_state(),
                best_result=float(self.best_result),
                train_seconds=self._train_seconds(),
                gpa=self.gpa.state_dict() if getattr(self, "gpa", None) is not None else None,
            )
            folder = osp.join(directory, name)
            path = checkpoints.save_checkpoint(state, folder, model_name or None)
            print(f"Checkpoint saved to {path}")
            if is_best:
                checkpoints.save_checkpoint(state, folder, BEST_FILE)

    def _load_state(self, checkpoint: dict[str, Any], path: str, name: Optional[str] = None) -> None:
        model = self._models[name] if name is not None else self.model
        core_state = {k: v for k, v in checkpoint.items() if k not in TRAINING_KEYS}
        try:
            model.load_checkpoint_state(core_state, allow_other_weights=self._allow_other_weights())
        except ValueError as err:
            raise ValueError(f"Cannot load {path} into {self.cfg.TRAINER.NAME}: {err}") from err

    def _allow_other_weights(self) -> bool:
        return bool(self.cfg.MODEL.BACKBONE.get("ALLOW_OTHER_WEIGHTS", False))

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Load learned tensors for evaluation, like Dassl's ``load_model`` (``--model-dir``, ``--load-epoch``).

        Without ``epoch`` the best model is loaded, or, when none was saved (``TEST.FINAL_MODEL last_step``), the
        last checkpoint.
        """
        if not directory:
            what = "zero-shot CLIP" if self.optim is None else "the untrained model (learned tensors as initialised)"
            print(f"Note: no --model-dir given: this evaluates {what}")
            self._untrained_eval = True
            return
        for name in self.get_model_names():
            path = self._model_path(directory, name, epoch)
            checkpoint = compat.load_checkpoint(path)
            val_result = compat.format_val_result(checkpoint.get("val_result"))
            print(f"Load {path} to {name} (epoch={checkpoint.get('epoch')}, val_result={val_result})")
            self._load_state(checkpoint, path, name)
            self._loaded_checkpoint = {"path": osp.abspath(path), "epoch": checkpoint.get("epoch")}

    @staticmethod
    def _model_path(directory: str, name: str, epoch: Optional[int]) -> str:
        folder = osp.join(directory, name)
        model_file = BEST_FILE if epoch is None else epoch_file(epoch)
        found = find_checkpoint(folder, epoch)
        if found is not None:
            if osp.basename(found) != model_file:  # no best model: the last checkpoint
                last = osp.basename(found)
                print(f"No {model_file} in {folder} (saved only with TEST.FINAL_MODEL best_val); loading {last}")
            return found
        path = osp.join(folder, model_file)
        found = sorted(f for f in os.listdir(folder) if f.startswith("model")) if osp.isdir(folder) else []
        raise FileNotFoundError(f"No model at {path} (found: {', '.join(found) or 'nothing'})")

    def resume_model_if_exist(self, directory: str) -> int:
        """Resume from the newest checkpoint in ``directory`` exactly where the run stopped (Dassl's hook).

        Restores the learned tensors, optimiser, schedule, GradScaler, best validation result, training time and
        every random generator as they were at the end of that epoch, so the rest of the run is the one it would
        have been without the interruption. Without a checkpoint, training starts from scratch with every
        generator seeded from ``SEED`` (whether or not earlier attempts wrote dataset caches).
        """
        names = self.get_model_names()
        for name in names:
            for partial in checkpoints.remove_partial_writes(osp.join(directory, name)):
                print(f"Removed {partial}: a checkpoint write that was interrupted")
        found = {name: last_checkpoint(osp.join(directory, name)) for name in names}
        if any(file is None for file in found.values()):
            print("No checkpoint found, train from scratch")
            if self.cfg.SEED >= 0:
                set_random_seed(self.cfg.SEED)
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        start_epoch = 0
        for name in names:
            path = osp.join(directory, name, found[name])
            print(f'Loading checkpoint from "{path}"')
            checkpoint = compat.load_checkpoint(path)
            self._load_state(checkpoint, path, name)
            print("Loaded model weights")
            if self._optims[name] is not None and checkpoint.get("optimizer") is not None:
                self._optims[name].load_state_dict(checkpoint["optimizer"])
                print("Loaded optimizer")
            if self._scheds[name] is not None and checkpoint.get("scheduler") is not None:
                compat.load_scheduler_state_dict(self._scheds[name], checkpoint["scheduler"])
                print("Loaded scheduler")
            if self.scaler is not None and checkpoint.get("scaler"):
                self.scaler.load_state_dict(checkpoint["scaler"])
            if checkpoint.get("rng") is not None:
                checkpoints.set_rng_state(checkpoint["rng"])
            self.best_result = checkpoint.get("best_result", self.best_result)
            self._train_seconds_before = float(checkpoint.get("train_seconds") or 0.0)
            if self.gpa is not None:
                if checkpoint.get("gpa") is None and checkpoint["epoch"] > 0:
                    raise ValueError(f"{path} holds no GPA aggregate; it cannot resume a run with GPA on.")
                self.gpa.load_state_dict(checkpoint.get("gpa"))
            start_epoch = checkpoint["epoch"]
            print(f"Previous epoch: {start_epoch}")
        self._epochs_done = start_epoch
        return start_epoch

    # ---- evaluation ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def test(self, split: Optional[str] = None) -> float:
        """Dassl's evaluation (prints ``* accuracy: X%``); the final one (``split=None``) writes ``results.json``."""
        start = time.time()
        result = super().test(split)
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
            "method": self.METHOD,
            "lamm": self.lamm_cfg.enabled,
            "dataset": cfg.DATASET.NAME,
            "subsample_classes": cfg.DATASET.get("SUBSAMPLE_CLASSES", "all"),
            "shots": self.shots if self.shots > 0 else "all",
            "shots_requested": int(cfg.DATASET.NUM_SHOTS),
            "seed": int(cfg.SEED),
            "backbone": cfg.MODEL.BACKBONE.NAME,
            "precision": self.precision,
            "split": split,
            "epoch": self._epochs_done if trained else None,
            "checkpoint": self._loaded_checkpoint,
            "untrained": self._untrained_eval,
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
            },
            "config": cfg_to_dict(cfg),
        }
        path = osp.join(self.output_dir, RESULTS_FILENAME)
        write_json(results, path)
        print(f"Results written to {path}")
        return path


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).isoformat(timespec="seconds")


class LAMM_CoOp(PromptTrainer):
    """CoOp with LAMM. With ``TRAIN_CTX False`` and ``CTX_INIT "a photo of a"`` it is LAMM alone."""

    METHOD = "coop"
    NODE = "LAMM_COOP"


class LAMM_MaPLe(PromptTrainer):
    """MaPLe with LAMM."""

    METHOD = "maple"
    NODE = "LAMM_MAPLE"


class LAMM_VPT(PromptTrainer):
    """VPT (visual prompts, hand-crafted text prompt) with LAMM."""

    METHOD = "vpt"
    NODE = "LAMM_VPT"


class LAMM_CoCoOp(PromptTrainer):
    """CoCoOp (per-image context from a meta-network) with LAMM: label rows in every per-image prompt."""

    METHOD = "cocoop"
    NODE = "LAMM_COCOOP"


class LAMM_KgCoOp(PromptTrainer):
    """KgCoOp (CoOp + knowledge-guided term ``kg_alignment``, weight ``KG_WEIGHT``) with LAMM."""

    METHOD = "kgcoop"
    NODE = "LAMM_KGCOOP"


class LAMM_PromptSRC(PromptTrainer):
    """PromptSRC (deep text and visual prompts, self-regularisation, GPA) with LAMM."""

    METHOD = "promptsrc"
    NODE = "LAMM_PROMPTSRC"


TRAINERS = (LAMM_CoOp, LAMM_MaPLe, LAMM_VPT, LAMM_CoCoOp, LAMM_KgCoOp, LAMM_PromptSRC)
