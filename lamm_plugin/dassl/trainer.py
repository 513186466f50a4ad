"""Dassl trainers over the LAMM core: ``LAMM_<Host>`` for every registered method, and the baselines.

The trainers are thin: CLIP comes from :func:`lamm_plugin.load_clip`, the model from
:func:`lamm_plugin.lamm.build_model`, and the optimiser gets exactly ``model.trainable_parameters()``. What they
add to Dassl's ``TrainerX``, one concern per module:

* here, building and the training step: precision from ``TRAINER.<NODE>.PREC`` (``fp32``, ``fp16``, ``bf16`` or
  ``amp``; a GradScaler under ``fp16`` and ``amp``); on a GPU, each step's forward and backward replayed from a
  CUDA graph (``TRAINER.<NODE>.CUDA_GRAPH``, :mod:`lamm_plugin.cuda_graph`), the optimiser step eager, and so is
  each evaluation batch's forward; each fast path checked on first use (:mod:`lamm_plugin.fast_paths`); every loss
  term of the hierarchical loss in the ``PRINT_FREQ`` lines and in TensorBoard;
* :mod:`.resume`: checkpoints of learned tensors, class names and configs, every epoch, and exact resume;
* :mod:`.decoded`: the training loader reading each training image decoded once (``LAMM_CACHE.DECODED_IMAGES``);
* :mod:`.report`: ``results.json`` beside ``log.txt`` after the final evaluation, with the time spent waiting for
  the training loader, in training steps and in evaluations (``timings.phases``);
* :mod:`.evaluation`: Dassl's evaluation loop, with the image features of test sets from the feature cache;
* :mod:`.progress`: short progress lines on the console (the log keeps Dassl's full line) and an ETA that settles;
* :mod:`.compat`: the fixes for current PyTorch.

The trainer classes are derived from the method registry (:data:`lamm_plugin.methods.METHODS`): a method with
``display_name = "CoOp"`` gets ``LAMM_CoOp`` (node ``TRAINER.LAMM_COOP``, in :data:`TRAINERS`, registered on
``import lamm_plugin.dassl``) and the baseline ``CoOp`` (node ``TRAINER.COOP``, LAMM disabled, made by
:func:`baseline_trainers` for this repository's ``trainers`` package); a method without a LAMM variant (zero-shot
CLIP) has only its baseline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import os.path as osp
import time
from collections import Counter
from typing import Any, Optional

import torch
from dassl.engine import TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_optimizer

from lamm_plugin import build_model, cuda_graph, fast_paths, load_clip
from lamm_plugin.backbone import autocast_dtype, pretrained_from_config
from lamm_plugin.config import LAMMConfig
from lamm_plugin.dassl import compat, console, decoded
from lamm_plugin.dassl.config import (
    CUDA_GRAPH_KEY,
    FP16_LEARNED_KEY,
    LAMM_NODE,
    OVERLAP_KEY,
    OWN_ATTENTION_KEY,
    PRECISION_KEY,
    baseline_node,
    lamm_config_from_cfg,
    lamm_node,
    method_config_from_cfg,
    require_trainer_nodes,
)
from lamm_plugin.dassl.evaluation import CachedEvaluationMixin
from lamm_plugin.dassl.progress import ProgressMixin
from lamm_plugin.dassl.report import ResultsMixin
from lamm_plugin.dassl.results import RecordingEvaluator
from lamm_plugin.dassl.resume import CheckpointMixin
from lamm_plugin.errors import UserError
from lamm_plugin.layout import BEST_FILE, PRECISIONS, last_checkpoint
from lamm_plugin.methods import METHODS

#: How often a batch whose scaled gradients overflowed is run again at a halved scale before the gradients count as
#: non-finite (from the GradScaler's start at 2^16, 40 halvings reach 2^-24), and the lowest scale tried.
_MAX_SCALE_BACKOFFS = 40
_MIN_SCALE = 2.0**-24


class NonFiniteError(UserError, FloatingPointError):
    """The loss, the gradients or the learned tensors of a training step are not finite (the message says what to
    try); a GradScaler's overflow of scaled gradients is not this case (the step is redone at a lower scale)."""


def _all_finite(*groups: list[torch.Tensor]) -> tuple[bool, ...]:
    """For each group of tensors, whether all their values are finite, read with one host sync for all groups."""
    flags = [torch.stack([torch.isfinite(t).all() for t in group]).all() for group in groups if group]
    values = iter(torch.stack(flags).tolist() if flags else [])
    return tuple(bool(next(values)) if group else True for group in groups)


#: Keys a saved checkpoint adds to ``model.checkpoint_state()`` (Dassl's names, then what an exact resume needs);
#: the method's own keys (:meth:`~lamm_plugin.methods.PromptMethod.extra_state`) come on top.
TRAINING_KEYS = (
    "epoch",
    "optimizer",
    "scheduler",
    "val_result",
    "scaler",
    "rng",
    "best_result",
    "train_seconds",
)


class PromptTrainer(ProgressMixin, CheckpointMixin, ResultsMixin, CachedEvaluationMixin, TrainerX):
    """Base Dassl trainer for every method of the core (LAMM trainers and the baselines).

    Attributes:
        METHOD: Method name of the core (``"coop"``, ``"maple"``, ``"vpt"``, ``"zeroshot"``).
        RESULTS_METHOD: The method ``results.json`` names, when not ``METHOD`` (a trainer that is another method
            on that model: the linear probe on zero-shot CLIP's image tower).
        NODE: Config node under ``TRAINER`` holding the method's settings and ``PREC``.
        USE_LAMM: ``False`` for the plain host method (``TRAINER.LAMM`` is then ignored).
        MODEL_NAME: Name the model is registered under: the checkpoint sub-folder.
    """

    METHOD: str = ""
    RESULTS_METHOD: str = ""
    NODE: str = ""
    USE_LAMM: bool = True
    MODEL_NAME: str = "prompt_learner"
    BEST_MODEL_FILE = BEST_FILE
    TRAINING_KEYS = TRAINING_KEYS

    def __init__(self, cfg) -> None:
        console.line_buffered_log()  # a host's Dassl Logger: log.txt gets each line as it is printed
        self._time_init = time.time()
        self._time_train: Optional[tuple[float, float]] = None
        self._train_seconds_before = 0.0  # training time of earlier processes of this run (resume)
        self._epochs_done = 0  # epochs the learned tensors in memory were trained for
        self._loaded_checkpoint: Optional[dict[str, Any]] = None
        self._untrained_eval = False  # --eval-only without --model-dir
        # Wall seconds of this process building the dataset and loaders, waiting for the training loader, in training
        # steps and in evaluations, and the time of the first step (perf_counter marks: cheap enough for every step).
        self.phase_seconds = {"data": 0.0, "loader_wait": 0.0, "steps": 0.0, "evaluation": 0.0}
        self.first_step_at: Optional[float] = None
        self._phase_mark: Optional[float] = None
        # Before Dassl's constructor reads them: the nodes a host's clean_cfg removed come back with the user's values.
        require_trainer_nodes(cfg, (self.NODE, LAMM_NODE) if self.USE_LAMM else (self.NODE,))
        super().__init__(cfg)
        self.evaluator = RecordingEvaluator(self.evaluator)

    # ---- building ------------------------------------------------------------------------------------------------
    def build_data_loader(self) -> None:
        """Dassl's data loaders; with ``LAMM_CACHE.DECODED_IMAGES`` the training loader reads decoded images kept
        once (those the dataset's few-shot check decoded, the rest decoded here), with the same batches."""
        start = time.perf_counter()
        super().build_data_loader()
        loader = decoded.cached_train_loader(self.cfg, self.train_loader_x, getattr(self.dm.dataset, "decoded", None))
        if loader is not None:
            self.train_loader_x = self.dm.train_loader_x = loader
        self.phase_seconds["data"] += time.perf_counter() - start

    def check_cfg(self, cfg) -> None:
        prec = cfg.TRAINER[self.NODE][PRECISION_KEY]
        if prec not in PRECISIONS:
            raise UserError(f"TRAINER.{self.NODE}.{PRECISION_KEY} must be one of {PRECISIONS}, got {prec!r}.")
        if cfg.TRAINER[self.NODE].get(FP16_LEARNED_KEY, False) and prec != "fp16":
            raise UserError(
                f"TRAINER.{self.NODE}.{FP16_LEARNED_KEY} True keeps the learned tensors in fp16 as the original code "
                f"does under PREC fp16; it does not apply to {PRECISION_KEY} {prec}: set it to False or use fp16."
            )

    @property
    def fp16_learned(self) -> bool:
        """Whether the learned tensors are fp16 and stepped without a GradScaler (``TRAINER.<NODE>.FP16_LEARNED``)."""
        return self.precision == "fp16" and bool(self.cfg.TRAINER[self.NODE].get(FP16_LEARNED_KEY, False))

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
        # A LAMM trainer has the node (require_trainer_nodes); a baseline disables LAMM, whatever the node holds.
        lamm_cfg = lamm_config_from_cfg(self.cfg) if LAMM_NODE in self.cfg.TRAINER else LAMMConfig()
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
        # TRAINER.LAMM.RANDOM_INIT: drawn where the official code draws them, as its prompt learner's last step (so
        # the random state after building is the official run's), put in when training starts (an evaluation keeps
        # the class names' embeddings, as the official code).
        random_init = self.lamm_cfg.enabled and self.lamm_cfg.random_init
        dtype = torch.float16 if self.fp16_learned else torch.float32
        self._random_labels = self.model.label_embedding.draw(dtype=dtype) if random_init else None
        self.model.to(self.device)
        if cfg.MODEL.INIT_WEIGHTS:
            # Before the optimiser is built: loading may resize the label-embedding parameter.
            self._load_state(compat.load_checkpoint(cfg.MODEL.INIT_WEIGHTS), cfg.MODEL.INIT_WEIGHTS)
            print(f"Initialised learned tensors from {cfg.MODEL.INIT_WEIGHTS}")
        self.setup_feature_cache()
        self.configure_trainable()

        params = self.model.trainable_parameters()
        if params and self.fp16_learned:
            # The original code's fp16: the learned tensors themselves in fp16 (those it keeps), plain SGD, no scaler.
            self.model.learned_to_fp16()
            print(f"Learned tensors in fp16 without a GradScaler (TRAINER.{self.NODE}.{FP16_LEARNED_KEY})")
        print(f"# trainable params: {sum(p.numel() for p in params):,}")
        self.optim = self._build_optimizer(params) if params else None
        self.sched = compat.build_lr_scheduler(self.optim, cfg.OPTIM) if params else None
        self.register_model(self.MODEL_NAME, self.model, self.optim, self.sched)
        self.scaler = None
        if params and self.precision in ("fp16", "amp") and not self.fp16_learned:
            self.scaler = torch.amp.GradScaler(self.device.type)
        switches = self.fast_path_switches()
        self.model.text.own_attention = switches[fast_paths.TEXT_ATTENTION][1]
        self.model.text.attention_switch = f"{switches[fast_paths.TEXT_ATTENTION][0]} False"
        self.graphed, self.graphed_eval = None, None
        graphs, on = switches[fast_paths.GRAPH_STEP]
        if cuda_graph.BACKEND.supports(self.device) and on:
            dtype, switch = self._autocast_dtype(), f"{graphs} False"
            self.graphed = cuda_graph.GraphedStep(self.model, dtype, self.scaler, switch=switch) if params else None
            self.graphed_eval = cuda_graph.GraphedForward(self.model, dtype, switch=switch)

    def fast_path_switches(self) -> dict[str, tuple[str, bool]]:
        """``{fast path: (its config key, whether it is on)}`` (:mod:`lamm_plugin.fast_paths`)."""
        node = self.cfg.TRAINER[self.NODE]
        graphs = (f"TRAINER.{self.NODE}.{CUDA_GRAPH_KEY}", bool(node.get(CUDA_GRAPH_KEY, True)))
        attention = (f"TRAINER.{self.NODE}.{OWN_ATTENTION_KEY}", bool(node.get(OWN_ATTENTION_KEY, False)))
        return {fast_paths.GRAPH_STEP: graphs, fast_paths.GRAPH_EVAL: graphs, fast_paths.TEXT_ATTENTION: attention}

    def _build_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """Dassl's optimiser over exactly ``params``.

        ``OPTIM.STAGED_LR`` (which DePT sets for its own layers) keeps Dassl's meaning: the tensors of the model's
        children named in ``OPTIM.NEW_LAYERS`` at ``OPTIM.LR``, the others at ``LR * BASE_LR_MULT``. Dassl builds
        those groups from the whole model only (frozen CLIP included), so they are built here from ``params``.
        """
        optim_cfg = self.cfg.OPTIM
        if not optim_cfg.get("STAGED_LR", False):
            return build_optimizer(params, optim_cfg)
        names = optim_cfg.NEW_LAYERS
        names = [names] if isinstance(names, str) else list(names or ())
        new = {id(p) for name, child in self.model.named_children() if name in names for p in child.parameters()}
        base_lr = optim_cfg.LR * optim_cfg.BASE_LR_MULT
        groups = [
            {"params": [p for p in params if id(p) not in new], "lr": base_lr},
            {"params": [p for p in params if id(p) in new]},
        ]
        print(
            f"OPTIM.STAGED_LR: {len(groups[0]['params'])} learned tensors at lr {base_lr:g} (OPTIM.BASE_LR_MULT), "
            f"{len(groups[1]['params'])} of OPTIM.NEW_LAYERS {names} at lr {optim_cfg.LR:g}"
        )
        unstaged = optim_cfg.clone()
        unstaged.defrost()
        unstaged.STAGED_LR = False
        return build_optimizer(None, unstaged, param_groups=[group for group in groups if group["params"]])

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
        return pretrained_from_config(self.cfg.MODEL.BACKBONE.get("PRETRAINED"))

    def _check_input(self, clip) -> None:
        size = tuple(self.cfg.INPUT.SIZE)
        if size != (clip.image_size, clip.image_size):
            raise UserError(
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
        return autocast_dtype(self.precision, self.device.type)

    def _autocast(self):
        dtype = self._autocast_dtype()
        return torch.autocast(device_type=self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def parse_batch_train(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def forward_backward(self, batch: dict) -> dict[str, float]:
        """One training step: forward and backward (replayed from a CUDA graph when one is captured, else eager),
        then the optimiser step, through the GradScaler under ``fp16`` and ``amp``.

        No step is lost to the GradScaler: a batch whose scaled gradients overflow is run again at the reduced scale
        (from the GradScaler's start at 2^16 this finds the scale on the first batch), so every batch updates the
        learned tensors once. A non-finite loss, or learned tensors that became non-finite, stop the run with
        :class:`NonFiniteError` in every precision (the checkpoint of the last finished epoch stays).
        """
        if self.optim is None:
            raise UserError(f"{type(self).__name__} has nothing to train; run it with --eval-only.")
        start = time.perf_counter()
        if self._phase_mark is not None:  # since the last step ended (or the epoch began): the loader's next()
            self.phase_seconds["loader_wait"] += start - self._phase_mark
        if self.first_step_at is None:
            self.first_step_at = time.time()
        summary = self._step(batch)
        self._phase_mark = time.perf_counter()
        self.phase_seconds["steps"] += self._phase_mark - start
        return summary

    def _step(self, batch: dict) -> dict[str, float]:
        image, label = self.parse_batch_train(batch)
        params = [p for group in self.optim.param_groups for p in group["params"]]
        for attempt in range(_MAX_SCALE_BACKOFFS + 1):
            out = self._forward_backward(image, label)
            loss = out.losses["total"]
            # One host sync, outside any captured region: is the loss finite, and are the (scaled) gradients?
            loss_finite, grads_finite = _all_finite([loss], [p.grad for p in params if p.grad is not None])
            if not loss_finite:
                raise self._non_finite("loss", loss.item())
            if grads_finite or self.scaler is None:
                break
            # The scaled gradients overflowed: the step the GradScaler would skip is redone at a lower scale.
            scale = self.scaler.get_scale()
            if attempt == _MAX_SCALE_BACKOFFS or scale * self.scaler.get_backoff_factor() < _MIN_SCALE:
                raise self._non_finite("gradient", float("inf"), scale=scale)
            self.scaler.update(scale * self.scaler.get_backoff_factor())
        if not grads_finite:  # no GradScaler: a finite loss with non-finite gradients
            raise self._non_finite("gradient", float("nan"))
        if self.scaler is not None:
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            self.optim.step()
        if not _all_finite(params)[0]:
            raise self._non_finite("learned tensor", float("nan"))

        summary = {"loss": loss.item(), "acc": compute_accuracy(out.logits.detach(), label)[0].item()}
        summary.update({name: value.item() for name, value in out.losses.items() if name != "total"})
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def _forward_backward(self, image: torch.Tensor, label: torch.Tensor):
        """Forward and (scaled) backward of one batch: the CUDA graph's replay, or eager. Returns the model output."""
        out = self.graphed(image, label) if self.graphed is not None else None
        if out is None:  # eager forward and backward (no GPU, capture refused or switched off)
            self.optim.zero_grad()
            out = self.model.forward_backward(image, label, self.scaler, self._autocast_dtype())
        return out

    def _non_finite(self, what: str, value: float, scale: Optional[float] = None) -> NonFiniteError:
        """The error that stops a run whose loss, gradients or learned tensors are no longer finite."""
        kept = last_checkpoint(osp.join(self.output_dir, self.MODEL_NAME))
        kept_text = (
            f"The checkpoint of the last finished epoch is kept ({osp.join(self.output_dir, self.MODEL_NAME, kept)})."
            if kept
            else "No epoch had finished, so no checkpoint was written."
        )
        where = f"epoch {self.epoch + 1}, batch {self.batch_idx + 1}"
        scaled = f" even at a gradient scale of {scale:g}" if scale is not None else ""
        prec = f"TRAINER.{self.NODE}.{PRECISION_KEY}"
        other = "amp or fp32" if self.precision in ("fp16", "bf16") else "fp32" if self.precision == "amp" else ""
        try_prec = f", or {prec} {other}" if other else f" (precision {prec} is already fp32)"
        return NonFiniteError(
            f"The training {what} is non-finite ({value}){scaled} at {where} (lr {self.get_current_lr():g}): the run "
            f"stopped instead of training on. {kept_text} Try a lower OPTIM.LR (now {self.cfg.OPTIM.LR:g}){try_prec}; "
            "a changed config trains in another --output-dir (or delete this folder first)."
        )

    def model_inference(self, input: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` of a batch of preprocessed images ``[B, 3, H, W]`` (what the test loader gives):
        replayed from a CUDA graph on a GPU (:class:`~lamm_plugin.cuda_graph.GraphedForward`), else eager."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(
                f"model_inference takes a batch of preprocessed images (a [B, 3, H, W] tensor), not a "
                f"{type(input).__name__}. To classify image files or PIL images with a trained run, use "
                "lamm_plugin.Predictor.from_run(OUTPUT_DIR).predict(images), or python -m lamm_plugin.predict "
                "OUTPUT_DIR IMAGE... (docs/RUN.md, Predict)."
            )
        logits = self.graphed_eval(input) if self.graphed_eval is not None else None
        if logits is not None:
            return logits.float().clone()  # the graph's output buffer is overwritten by the next replay
        with self._autocast():
            return self.model(input).logits.float()

    def before_epoch(self) -> None:
        super().before_epoch()
        self._phase_mark = time.perf_counter()  # the first next() of the epoch starts the loader's workers

    def after_epoch(self) -> None:
        self._phase_mark = None  # the epoch's evaluation and checkpoint are not loader time
        super().after_epoch()

    def before_train(self) -> None:
        self.check_overlap()
        if self._random_labels is not None:
            # before resuming: a resumed run loads its trained rows over these
            self.model.randomize_labels(self._random_labels)
            print(f"Label embeddings of the trained classes drawn from N(0, 0.02^2) (TRAINER.{LAMM_NODE}.RANDOM_INIT)")
        super().before_train()  # resumes (resume_model_if_exist) when the output folder has a checkpoint
        self._time_train = (self.time_start, self.time_start)

    def check_overlap(self) -> None:
        """Refuse to train when images of the training set are also in the split the run is scored on
        (``TEST.SPLIT``): by path, and by content for files of equal size. ``DATASET.ALLOW_TRAIN_TEST_OVERLAP True``
        lets the run go on (with the same report)."""
        dataset, split = self.dm.dataset, self.cfg.TEST.SPLIT
        scored = (dataset.val if split == "val" else dataset.test) or []
        shared = shared_images([d.impath for d in dataset.train_x], [d.impath for d in scored])
        if not shared:
            return
        shown = "; ".join(a if a == b else f"{a} = {b}" for a, b in shared[:3])
        text = (
            f"{len(shared)} image(s) of the training set are also in the {split} split the run is scored on "
            f"(TEST.SPLIT {split}), so its accuracy would be measured on training images: {shown}"
            f"{' ...' if len(shared) > 3 else ''}."
        )
        if self.cfg.DATASET.get(OVERLAP_KEY, False):
            print(f"Warning: {text} Going on: DATASET.{OVERLAP_KEY} is True.")
            return
        raise UserError(
            f"{text} Give a {split} split without the training images, or set DATASET.{OVERLAP_KEY} True to train "
            "anyway."
        )

    def after_train(self) -> None:
        """Dassl's ``after_train`` (the final evaluation); when the evaluation fails, the log says that the trained
        run is kept and that rerunning the same command evaluates it again without training again."""
        self._time_train = (self._time_train[0] if self._time_train else time.time(), time.time())
        try:
            super().after_train()
        except Exception:
            kept = last_checkpoint(osp.join(self.output_dir, self.MODEL_NAME))
            if kept and self._epochs_done >= self.max_epoch:
                print(
                    f"Training is complete and kept ({osp.join(self.output_dir, self.MODEL_NAME, kept)}), but the "
                    "final evaluation failed (below). Rerunning the same command evaluates it again without training "
                    "again."
                )
            raise

    def _train_seconds(self) -> float:
        """Training time of this run so far, over every process that worked on it."""
        if self._time_train is None:
            return self._train_seconds_before
        start, end = self._time_train
        return self._train_seconds_before + ((end if end > start else time.time()) - start)


#: Above this many files in both splits together, shared images are found by path only (no file sizes are read).
CONTENT_CHECK_MAX_FILES = 200_000


def shared_images(train: list[str], scored: list[str]) -> list[tuple[str, str]]:
    """``(training image, scored image)`` pairs that are one image: the same file, or (for up to
    :data:`CONTENT_CHECK_MAX_FILES` files) the same bytes, hashed only for files whose sizes match."""
    train, scored = list(dict.fromkeys(train)), list(dict.fromkeys(scored))
    real = {osp.realpath(p): p for p in train}
    shared = [(real[osp.realpath(p)], p) for p in scored if osp.realpath(p) in real]
    if len(train) + len(scored) > CONTENT_CHECK_MAX_FILES:
        return shared
    found = {b for _, b in shared}

    def size(path: str) -> int:
        try:
            return os.stat(path).st_size
        except OSError:
            return -1

    by_size: dict[int, list[str]] = {}
    for path in train:
        by_size.setdefault(size(path), []).append(path)
    by_size.pop(-1, None)
    digests: dict[str, str] = {}

    def digest(path: str) -> str:
        if path not in digests:
            with open(path, "rb") as f:
                digests[path] = hashlib.file_digest(f, "sha256").hexdigest()
        return digests[path]

    for path in scored:
        if path in found:
            continue
        same = [t for t in by_size.get(size(path), []) if digest(t) == digest(path)]
        if same:
            shared.append((same[0], path))
    return shared


def _trainer(method: str, lamm: bool, module: str) -> type[PromptTrainer]:
    """The trainer class of registered ``method``: ``LAMM_<display_name>`` or the baseline ``<display_name>``."""
    cls = METHODS[method]
    name = ("LAMM_" if lamm else "") + cls.display_name
    summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else cls.display_name
    what = "with LAMM" if lamm else "the baseline, on the same core as the LAMM trainers with LAMM disabled"
    namespace = {
        "__module__": module,
        "__qualname__": name,
        "__doc__": f"{cls.display_name} ({what}): {summary}",
        "METHOD": method,
        "NODE": lamm_node(method) if lamm else baseline_node(method),
        "USE_LAMM": lamm,
    }
    return type(name, (PromptTrainer,), namespace)


def baseline_trainers(module: str = "trainers") -> dict[str, type[PromptTrainer]]:
    """This repository's baselines, one per registered method (``CoOp``, ..., ``ZeroshotCLIP``), by class name.

    Args:
        module: The module the classes say they belong to (the ``trainers`` package registers them).
    """
    return {t.__name__: t for t in (_trainer(m, False, module) for m in METHODS)}


#: The LAMM trainers by class name, one per registered method with a LAMM variant.
LAMM_TRAINERS: dict[str, type[PromptTrainer]] = {
    t.__name__: t for t in (_trainer(m, True, __name__) for m, cls in METHODS.items() if cls.lamm_variant)
}
TRAINERS = tuple(LAMM_TRAINERS.values())
globals().update(LAMM_TRAINERS)

__all__ = ["LAMM_TRAINERS", "TRAINERS", "NonFiniteError", "PromptTrainer", "baseline_trainers", *LAMM_TRAINERS]
