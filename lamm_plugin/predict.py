"""Classify images with a trained run, a checkpoint or zero-shot CLIP: no Dassl, no dataset.

A checkpoint records what its model is (method, backbone, CLIP weights fingerprint, class names, method and LAMM
configs, learned tensors); the run folder's ``config.json`` adds what the trainer's evaluation also used: the test
transform (``INPUT.*``), the precision (``TRAINER.<NODE>.PREC``), the CLIP weights (``MODEL.BACKBONE.PRETRAINED``),
the test batch size and the seed. :class:`Predictor` rebuilds the model through the same registry and
:func:`~lamm_plugin.lamm.build_model` as the trainers, loads the checkpoint with the same checks (other CLIP weights
are refused), and evaluates as the trainer's ``model_inference`` does, so its logits equal the run's evaluation.
A linear-probe run's checkpoint (``LinearProbeCLIP``) also holds its classifier (:data:`LINEAR_PROBE`), which then
gives the logits from the image features (:func:`probe_logits`).

Command line (see ``docs/RUN.md``, "Predict")::

    python -m lamm_plugin.predict output/demo photo.jpg folder/ --topk 3 --format csv --output predictions.csv
    python -m lamm_plugin.predict ViT-B/16 photo.jpg --classes "cat,dog,fox"      # zero-shot CLIP

From Python::

    predictor = Predictor.from_run("output/demo")
    for p in predictor.predict(["a.png", pil_image]):
        print(p.source, p.top, p.probability)

Classes never trained (``classes=`` / ``--classes``) take CLIP's own class-name embeddings, as in base-to-new
evaluation: learned labels follow their class by name.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import os.path as osp
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from lamm_plugin.backbone import OPENAI_MODELS, TINY_MODELS, autocast_dtype, load_clip, pretrained_from_config
from lamm_plugin.config import LAMMConfig, from_dict
from lamm_plugin.errors import MissingFileError, UserError, run_main
from lamm_plugin.files import check_output, read_text, write_text
from lamm_plugin.lamm import LAMM, build_model
from lamm_plugin.layout import (
    BEST_FILE,
    CHECKPOINT_FORMAT,
    CONFIG_FILENAME,
    MODEL_FOLDER,
    PREDICTIONS_FORMAT,
    RESULTS_FILENAME,
    checkpoint_epochs,
    epoch_file,
    find_checkpoint,
    read_checkpoint,
)
from lamm_plugin.methods import METHODS
from lamm_plugin.tokens import clean_classname

__all__ = [
    "IMAGE_EXTENSIONS",
    "LINEAR_PROBE",
    "EvalTransform",
    "Prediction",
    "Predictor",
    "UnreadableImageError",
    "check_classes",
    "collect_images",
    "find_run_checkpoint",
    "format_predictions",
    "main",
    "parse_classes",
    "probe_logits",
    "read_image",
    "read_run_config",
    "resolve_device",
]

#: File endings taken as images when a folder is walked (case-insensitive); other files are skipped and counted.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
#: Output formats of the command.
FORMATS = ("table", "csv", "json")
#: Columns of the CSV (and table) output: one row per image and rank.
CSV_COLUMNS = ("path", "rank", "class", "probability")
#: Linear-probe CLIP (the ``LinearProbeCLIP`` trainer): the method its ``results.json`` and predictions name, and the
#: key of its classifier in its checkpoints: ``{"weight": [K, E], "bias": [K]}`` float64 and ``"classes": [K]`` (the
#: labels it was fitted on), long; the model beside it is the frozen zero-shot CLIP whose image tower feeds it.
LINEAR_PROBE = "linear_probe"
#: Batch size when neither the caller nor the run's config (``DATALOADER.TEST.BATCH_SIZE``) gives one.
DEFAULT_BATCH_SIZE = 32

#: Dassl's defaults of the ``INPUT`` keys the test transform reads (``dassl/config/defaults.py``).
DASSL_INPUT_DEFAULTS: dict[str, Any] = {
    "SIZE": (224, 224),
    "INTERPOLATION": "bilinear",
    "TRANSFORMS": (),
    "NO_TRANSFORM": False,
    "PIXEL_MEAN": (0.485, 0.456, 0.406),
    "PIXEL_STD": (0.229, 0.224, 0.225),
}

ImageInput = Union[str, "os.PathLike[str]", Image.Image, torch.Tensor]


class UnreadableImageError(UserError):
    """An image file that cannot be decoded (the message names it)."""


# ---- the test transform -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalTransform:
    """Dassl's test transform (``build_transform(cfg, is_train=False)``), without Dassl: resize the shorter side to
    ``max(size)``, centre crop ``size``, to a ``[0, 1]`` tensor, then (per ``INPUT.TRANSFORMS``) normalise and / or
    instance-normalise. Built from the same torchvision transforms, so the tensors are equal.

    Attributes:
        size: ``(height, width)`` (``INPUT.SIZE``).
        interpolation: ``"bicubic"``, ``"bilinear"`` or ``"nearest"`` (``INPUT.INTERPOLATION``).
        mean: Normalisation mean (``INPUT.PIXEL_MEAN``).
        std: Normalisation std (``INPUT.PIXEL_STD``).
        normalize: Whether ``"normalize"`` is among ``INPUT.TRANSFORMS``.
        instance_norm: Whether ``"instance_norm"`` is among ``INPUT.TRANSFORMS``.
    """

    size: tuple[int, int]
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = tuple(OPENAI_DATASET_MEAN)
    std: tuple[float, ...] = tuple(OPENAI_DATASET_STD)
    normalize: bool = True
    instance_norm: bool = False
    _compose: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from torchvision import transforms as T

        modes = {
            "bicubic": T.InterpolationMode.BICUBIC,
            "bilinear": T.InterpolationMode.BILINEAR,
            "nearest": T.InterpolationMode.NEAREST,
        }
        if self.interpolation not in modes:
            raise UserError(f"Unknown INPUT.INTERPOLATION {self.interpolation!r}; use one of {sorted(modes)}.")
        size = tuple(int(s) for s in self.size)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        steps = [T.Resize(max(size), interpolation=modes[self.interpolation]), T.CenterCrop(size), T.ToTensor()]
        if self.normalize:
            steps.append(T.Normalize(mean=list(self.mean), std=list(self.std)))
        if self.instance_norm:
            steps.append(_instance_norm)
        object.__setattr__(self, "_compose", T.Compose(steps))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EvalTransform:
        """The test transform of a run's config (``config.json``: its ``INPUT`` node); a key it lacks takes Dassl's
        default (:data:`DASSL_INPUT_DEFAULTS`), as it did in the run.

        Raises:
            ValueError: ``INPUT.NO_TRANSFORM`` is set (Dassl then feeds PIL images, which no CLIP takes).
        """
        node = {**DASSL_INPUT_DEFAULTS, **config.get("INPUT", {})}
        if node["NO_TRANSFORM"]:
            raise UserError("The run's config sets INPUT.NO_TRANSFORM: its images were not transformed for CLIP.")
        return cls(
            size=tuple(node["SIZE"]),
            interpolation=node["INTERPOLATION"],
            mean=tuple(node["PIXEL_MEAN"]),
            std=tuple(node["PIXEL_STD"]),
            normalize="normalize" in node["TRANSFORMS"],
            instance_norm="instance_norm" in node["TRANSFORMS"],
        )

    @classmethod
    def for_clip(cls, image_size: int, mean: Sequence[float], std: Sequence[float]) -> EvalTransform:
        """CLIP's own test transform (what the CoOp-family configs give): bicubic resize, centre crop, CLIP's
        normalisation."""
        return cls(size=(image_size, image_size), interpolation="bicubic", mean=tuple(mean), std=tuple(std))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """``[3, H, W]`` float tensor of an RGB PIL image."""
        return self._compose(image)


def _instance_norm(img: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Dassl's ``InstanceNormalization``: per-channel mean and (unbiased) std of the image."""
    c, h, w = img.shape
    flat = img.reshape(c, h * w)
    return (img - flat.mean(1).view(c, 1, 1)) / (flat.std(1).view(c, 1, 1) + eps)


def read_image(path: str) -> Image.Image:
    """An image file as RGB, decoded completely as Dassl's ``read_image`` reads it.

    Raises:
        FileNotFoundError: No such file.
        UnreadableImageError: The file does not decode as an image.
    """
    if not osp.isfile(path):
        raise MissingFileError(f"No image file at {path}.")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # reads every pixel: a truncated file fails here
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... for broken or foreign files
        raise UnreadableImageError(
            f"Cannot read {path} as an image ({type(err).__name__}: {err}). Replace or remove the file (the command "
            "skips such files with --skip-unreadable)."
        ) from err


# ---- what comes out ------------------------------------------------------------------------------------------------
@dataclass
class Prediction:
    """The top-k classes of one image.

    Attributes:
        source: The image's path, or ``"<image N>"`` for an in-memory input (N: its position in the call).
        classes: Class names, most probable first.
        probabilities: Their softmax probabilities over the whole class set.
        labels: Their indices in the predictor's class list (class names may repeat).
    """

    source: str
    classes: list[str]
    probabilities: list[float]
    labels: list[int]

    @property
    def top(self) -> str:
        """The predicted class (rank 1)."""
        return self.classes[0]

    @property
    def probability(self) -> float:
        """The predicted class's probability."""
        return self.probabilities[0]

    @property
    def label(self) -> int:
        """The predicted class's index."""
        return self.labels[0]

    def to_dict(self) -> dict[str, Any]:
        ranks = zip(self.classes, self.labels, self.probabilities)
        top = [{"rank": r, "class": c, "label": i, "probability": p} for r, (c, i, p) in enumerate(ranks, 1)]
        return {"path": self.source, "top": top}


def _predictions(
    logits: torch.Tensor, classnames: Sequence[str], sources: Sequence[str], topk: int
) -> list[Prediction]:
    """Top-``topk`` of ``[B, C]`` logits. Ranked by logit with a stable sort, so rank 1 is ``logits.argmax(1)`` (the
    trainer's prediction) even where probabilities round to equal values."""
    k = max(1, min(topk, logits.shape[1]))
    probs = logits.float().softmax(dim=1)
    order = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]
    top_probs = probs.gather(1, order)
    return [
        Prediction(src, [classnames[i] for i in idx], p, idx)
        for src, idx, p in zip(sources, order.tolist(), top_probs.tolist())
    ]


def probe_logits(probe: Mapping[str, torch.Tensor], features: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[B, num_classes]`` float32 log-probabilities of a linear probe (:data:`LINEAR_PROBE`) on image-tower outputs
    ``[B, E]``, unnormalised as it was fitted on them: ``log_softmax(features W^T + b)`` in float64 on the CPU (as
    scikit-learn's ``predict_log_proba``) over the classes it was fitted on, minus infinity for the others."""
    scores = features.detach().cpu().double() @ probe["weight"].cpu().double().t() + probe["bias"].cpu().double()
    logits = torch.full((len(features), num_classes), -math.inf)
    logits[:, probe["classes"].cpu().long()] = torch.log_softmax(scores, dim=1).float()
    return logits.to(features.device)


# ---- devices and inputs -------------------------------------------------------------------------------------------
def resolve_device(device: Optional[Union[str, torch.device]] = None) -> torch.device:
    """``device`` checked against this machine; ``None`` is the GPU when there is one, else the CPU.

    Raises:
        ValueError: An unknown device name, or a device this machine does not have.
    """
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UserError(f"Unknown device {device!r}: use cpu, cuda, cuda:N or mps.") from err
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"Device {device!r}: this machine has no CUDA GPU that torch can use; use --device cpu.")
        if resolved.index is not None and resolved.index >= count:
            raise UserError(f"Device {device!r}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1}).")
    elif resolved.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError(f"Device {device!r}: MPS is not available here; use --device cpu.")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"Device {device!r}: not supported for prediction; use cpu, cuda, cuda:N or mps.")
    return resolved


def collect_images(paths: Iterable[Union[str, os.PathLike]]) -> tuple[list[str], list[str]]:
    """Image files of files and folders (walked recursively, in sorted order).

    A file named on its own is always taken (its decoding decides); in a folder, files whose names do not end in
    one of :data:`IMAGE_EXTENSIONS` are skipped.

    Returns:
        ``(images, skipped)``: the image paths in order, and the folder files skipped as not images.

    Raises:
        FileNotFoundError: A path that does not exist.
    """
    images: list[str] = []
    skipped: list[str] = []
    for path in map(os.fspath, paths):
        if osp.isfile(path):
            images.append(path)
        elif osp.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    file = osp.join(root, name)
                    (images if name.lower().endswith(IMAGE_EXTENSIONS) else skipped).append(file)
        else:
            raise MissingFileError(f"No image file or folder at {path}.")
    return images, skipped


def parse_classes(value: Union[str, Sequence[str]]) -> list[str]:
    """Class names from a comma-separated list, a text file (one name per line; blank lines and lines starting with
    ``#`` are ignored) or a sequence of names.

    Raises:
        ValueError: No class names.
    """
    if isinstance(value, str):
        if osp.isfile(value):
            lines = read_text(value, "class names").splitlines()
            names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
            where = f"file {value}"
        else:
            names = [name.strip() for name in value.split(",") if name.strip()]
            where = f"list {value!r}"
    else:
        names, where = [str(name).strip() for name in value], "classes given"
    if not names:
        raise UserError(f"No class names in the {where}: give names separated by commas, or a file of one per line.")
    return names


# ---- run folders and checkpoints ----------------------------------------------------------------------------------
def _run_folder_of(checkpoint_file: str) -> str:
    """The run folder of a checkpoint file in the run layout (``<run>/prompt_learner/<file>``)."""
    return osp.dirname(osp.dirname(osp.abspath(checkpoint_file)))


def read_run_config(folder: str) -> Optional[dict[str, Any]]:
    """The config a run was trained with: ``config.json``, else the ``config`` of ``results.json``; ``None`` when
    the folder keeps neither (a checkpoint file outside its run folder)."""
    for name, pick in ((CONFIG_FILENAME, lambda d: d), (RESULTS_FILENAME, lambda d: d.get("config"))):
        path = osp.join(folder, name)
        if not osp.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                config = pick(json.load(f))
        except (OSError, ValueError, AttributeError) as err:
            raise UserError(f"{path} should hold the run's config but cannot be read ({err}).") from err
        if isinstance(config, dict):
            return config
    return None


def find_run_checkpoint(run: str, epoch: Optional[int] = None) -> str:
    """The checkpoint the trainer's ``--eval-only --model-dir run`` loads: ``model-best.pth.tar`` when there is one,
    else the last epoch's; ``model.pth.tar-<epoch>`` with ``epoch``.

    Raises:
        FileNotFoundError: The run holds no (such) checkpoint.
    """
    folder = osp.join(run, MODEL_FOLDER)
    found = find_checkpoint(folder, epoch)
    if found is not None:
        return found
    if epoch is not None:
        raise MissingFileError(
            f"No {epoch_file(epoch)} in {folder} (epochs kept there: {checkpoint_epochs(folder) or 'none'})."
        )
    raise MissingFileError(
        f"The run folder {run} holds no checkpoint: expected {MODEL_FOLDER}/{BEST_FILE} or "
        f"{MODEL_FOLDER}/model.pth.tar-<epoch>. A run writes one at the end of each epoch: train it (at least one "
        "epoch), or give a checkpoint file."
    )


def _trainer_node(config: Mapping[str, Any], method: str, lamm: bool) -> Mapping[str, Any]:
    """The run's ``TRAINER.<NODE>`` (its name upper-cased, as Dassl's trainers name their nodes)."""
    trainers = config.get("TRAINER", {})
    name = str(trainers.get("NAME", ""))
    display = METHODS[method].display_name if method in METHODS else ""
    for node in (name.upper(), ("LAMM_" if lamm else "") + display.upper()):
        if isinstance(trainers.get(node), Mapping):
            return trainers[node]
    return {}


def _build_clip(backbone: str, pretrained: Optional[str], precision: str, device: torch.device, seed: Optional[int]):
    """:func:`load_clip`; a tiny test CLIP with random weights is rebuilt from the torch seed of its run (the trainer
    builds it right after seeding), leaving the caller's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        if backbone in TINY_MODELS and not pretrained and seed is not None:
            torch.manual_seed(seed)
        return load_clip(backbone, pretrained=pretrained, precision=precision, device=device)


def _plain_name(name: str) -> str:
    """A class name as a dataset's cleaning would give it: ``_`` a space, spaces collapsed, lower case."""
    return " ".join(clean_classname(name).split()).lower()


def check_classes(classes: Sequence[str], trained: Sequence[str]) -> None:
    """Class names to predict among, against the names a checkpoint was trained on (both as the model reads them:
    ``_`` is a space).

    A name may repeat only as often as the checkpoint has classes of that name (datasets such as ImageNet repeat
    a few): one more copy would be one more class with the same prompt and CLIP's embedding of the name, which
    nothing tells apart. A name the checkpoint lacks takes CLIP's embedding of it, as in base-to-new evaluation; when
    it is one of the trained names but for case or spacing (a folder name, say), a warning names that one.

    Raises:
        ValueError: A name repeated more often than that.
    """
    given, have = Counter(map(clean_classname, classes)), Counter(map(clean_classname, trained))
    repeated = [f"{name!r} {count} times" for name, count in given.items() if count > max(have[name], 1)]
    if repeated:
        raise UserError(
            f"Class names given more than once: {', '.join(repeated)} (a name repeats only as often as the run has "
            "classes of that name; another copy would be a class that nothing tells apart). Give each class once."
        )
    by_plain = {_plain_name(name): name for name in have}
    for name in classes:
        near = by_plain.get(_plain_name(name))
        if clean_classname(name) not in have and near is not None:
            warnings.warn(
                f"Class {name!r} is not a class of this run, so it takes CLIP's embedding of its name instead of the "
                f"learned one; the run has {near!r} (did you mean it? a run's class names are compared as given, "
                "'_' read as a space).",
                stacklevel=3,
            )


def _weights_hint(backbone: str, pretrained: Optional[str]) -> str:
    if backbone in TINY_MODELS and not pretrained:
        return "a tiny random-weight CLIP is rebuilt from its run's seed: pass the run's seed (--seed)"
    return "pass the weights it was trained with (--pretrained TAG_OR_FILE)"


# ---- the predictor ------------------------------------------------------------------------------------------------
class Predictor:
    """Top-k classes of images for a trained model or zero-shot CLIP, evaluated as the trainers evaluate.

    Build it with :meth:`from_run`, :meth:`from_checkpoint` or :meth:`zero_shot`; call :meth:`predict` with paths,
    PIL images or preprocessed tensors.

    Args:
        model: The model (in eval mode, on its device).
        transform: The test transform of the run.
        precision: One of :data:`~lamm_plugin.layout.PRECISIONS` (``amp`` evaluates under autocast, as the
            trainer's ``model_inference``).
        batch_size: Images per forward pass.
        info: What the model is (method, backbone, checkpoint, ...), for reports.
        probe: A linear probe's classifier (:data:`LINEAR_PROBE`) on the model's image features, which then gives the
            logits (:func:`probe_logits`).
    """

    def __init__(
        self,
        model: LAMM,
        transform: EvalTransform,
        precision: str = "fp32",
        batch_size: int = DEFAULT_BATCH_SIZE,
        info: Optional[dict[str, Any]] = None,
        probe: Optional[Mapping[str, torch.Tensor]] = None,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}.")
        self.model = model.eval()
        self.transform = transform
        self.precision = precision
        self.batch_size = int(batch_size)
        self.info = dict(info or {})
        self.probe = probe

    # ---- building ------------------------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run: Union[str, os.PathLike], epoch: Optional[int] = None, **options: Any) -> Predictor:
        """The model of a run folder: its best checkpoint, else its last (or epoch ``epoch``), as ``--eval-only
        --model-dir`` loads it; the transform, precision, weights and batch size from its ``config.json``.

        Args:
            run: A run folder (``OUTPUT_DIR`` of a training).
            epoch: Load ``model.pth.tar-<epoch>``.
            **options: As for :meth:`from_checkpoint`.

        Raises:
            FileNotFoundError: ``run`` is no folder, or holds no checkpoint.
        """
        run = os.fspath(run)
        if not osp.isdir(run):
            raise MissingFileError(f"No run folder at {run}.")
        return cls.from_checkpoint(find_run_checkpoint(run, epoch), **options)

    @classmethod
    def from_checkpoint(
        cls,
        path: Union[str, os.PathLike],
        classes: Optional[Union[str, Sequence[str]]] = None,
        device: Optional[Union[str, torch.device]] = None,
        pretrained: Optional[str] = None,
        allow_other_weights: bool = False,
        precision: Optional[str] = None,
        batch_size: Optional[int] = None,
        seed: Optional[int] = None,
        config: Optional[Mapping[str, Any]] = None,
    ) -> Predictor:
        """The model of a checkpoint file.

        The run's config is read from the run folder the file sits in (``<run>/prompt_learner/<file>``:
        ``<run>/config.json``, else ``results.json``), or given as ``config``. Without one, CLIP's own test
        transform, fp32 and the backbone's default weights are used.

        Args:
            path: A checkpoint file (``model.pth.tar-N``, ``model-best.pth.tar``, or ``model.checkpoint_state()``
                saved with ``torch.save``).
            classes: Predict among these class names instead of the checkpoint's (a subset, or new names: classes
                never trained take CLIP's own name embeddings, as in base-to-new evaluation).
            device: ``cpu``, ``cuda``, ``cuda:N``, ...; default: the GPU when there is one.
            pretrained: CLIP weights (tag or file) instead of the run's ``MODEL.BACKBONE.PRETRAINED``.
            allow_other_weights: Load the checkpoint onto other CLIP weights than it was trained on.
            precision: Instead of the run's ``TRAINER.<NODE>.PREC``.
            batch_size: Instead of the run's ``DATALOADER.TEST.BATCH_SIZE``.
            seed: Tiny random-weight test CLIPs only: the torch seed they were built after (default: the run's).
            config: The run's config (the plain form of ``config.json``).

        Raises:
            FileNotFoundError: No such file.
            CheckpointFormatError: A damaged file, or one that needs pickle (not written by this library).
            ValueError: Not a checkpoint of this library, or one that does not fit: other CLIP weights (unless
                ``allow_other_weights``), a class set the method cannot serve, an unknown device.
        """
        path = os.fspath(path)
        state = read_checkpoint(path)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            keys = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
            raise UserError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint of lamm_plugin (found: {keys}).")
        if config is None and osp.basename(osp.dirname(osp.abspath(path))) == MODEL_FOLDER:
            config = read_run_config(_run_folder_of(path))
        config = config or {}
        method, backbone = state["method"], state["backbone"]
        if method not in METHODS:
            raise UserError(f"{path} holds a model of method {method!r}, which is not registered: {sorted(METHODS)}.")
        lamm_cfg = from_dict(LAMMConfig, state["lamm_config"])
        node = _trainer_node(config, method, lamm_cfg.enabled)
        backbone_node = config.get("MODEL", {}).get("BACKBONE", {})
        if pretrained is None:
            pretrained = pretrained_from_config(backbone_node.get("PRETRAINED"))
        precision = precision or node.get("PREC") or "fp32"
        if seed is None and isinstance(config.get("SEED"), int) and config["SEED"] >= 0:
            seed = config["SEED"]
        device = resolve_device(device)
        clip = _build_clip(backbone, pretrained, precision, device, seed)
        if config.get("INPUT"):
            transform = EvalTransform.from_config(config)
        else:
            transform = EvalTransform.for_clip(clip.image_size, clip.mean, clip.std)
        classnames = parse_classes(classes) if classes is not None else list(state["classnames"])
        check_classes(classnames, state["classnames"])
        trainer = config.get("TRAINER", {}).get("NAME")
        probe = state.get(LINEAR_PROBE)
        if probe is None and trainer == "LinearProbeCLIP":
            raise UserError(
                f"{path} (a LinearProbeCLIP run) holds no linear-probe classifier, so its predictions would be "
                "zero-shot CLIP's: it was written before linear-probe checkpoints kept their classifier. Train the "
                "linear probe again into a new --output-dir."
            )
        if probe is not None and classnames != list(state["classnames"]):
            raise UserError(
                f"{path} is a linear probe, which predicts only the classes it was fitted on (its "
                f"{len(state['classnames'])} classes): leave out classes= (--classes)."
            )
        try:
            model = build_model(method, clip, classnames, state["method_config"], lamm_cfg).to(device)
        except (ValueError, KeyError, RuntimeError) as err:
            raise UserError(f"Cannot build the model of {path} for these classes: {err}") from err
        try:
            model.load_checkpoint_state(state, allow_other_weights=allow_other_weights)
        except ValueError as err:
            text = str(err)
            if "other weights" in text:
                text += (
                    f" For prediction: {_weights_hint(backbone, pretrained)}, or pass allow_other_weights=True "
                    "(--allow-other-weights) to load it anyway."
                )
            raise UserError(f"Cannot load {path}: {text}") from err
        if precision == "fp16" and node.get("FP16_LEARNED"):  # the trainer evaluated fp16 learned tensors
            model.learned_to_fp16()
        test_batch = config.get("DATALOADER", {}).get("TEST", {}).get("BATCH_SIZE")
        info = {
            "kind": "checkpoint",
            "checkpoint": osp.abspath(path),
            "epoch": state.get("epoch"),
            "method": LINEAR_PROBE if probe is not None else method,
            "lamm": lamm_cfg.enabled,
            "trainer": trainer,
            "backbone": backbone,
            "precision": precision,
        }
        return cls(model, transform, precision, int(batch_size or test_batch or DEFAULT_BATCH_SIZE), info, probe)

    @classmethod
    def zero_shot(
        cls,
        backbone: str,
        classes: Union[str, Sequence[str]],
        template: str = "",
        dataset: str = "",
        pretrained: Optional[str] = None,
        precision: str = "fp32",
        device: Optional[Union[str, torch.device]] = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        seed: Optional[int] = None,
    ) -> Predictor:
        """Zero-shot CLIP (the ``ZeroshotCLIP`` trainer's model) with CLIP's own test transform.

        Args:
            backbone: A CLIP name (``"ViT-B/16"``, an open_clip name with ``pretrained``, ``"tiny-vit"``).
            classes: Class names (a sequence, a comma list or a file, as :func:`parse_classes` reads).
            template: Prompt template with ``{}``; empty: the template of ``dataset`` (CoOp's), or
                ``"a photo of a {}."``.
            dataset: Dataset name whose hand-crafted template is used when ``template`` is empty.
            pretrained: CLIP weights, as for :func:`~lamm_plugin.load_clip`.
            precision: One of :data:`~lamm_plugin.layout.PRECISIONS`.
            device: As for :meth:`from_checkpoint`.
            batch_size: Images per forward pass.
            seed: Tiny random-weight test CLIPs only: the torch seed to build them after.
        """
        device = resolve_device(device)
        classnames = parse_classes(classes)
        clip = _build_clip(backbone, pretrained, precision, device, seed)
        method_cfg = {"template": template, "dataset": dataset}
        model = build_model("zeroshot", clip, classnames, method_cfg, LAMMConfig(enabled=False)).to(device)
        transform = EvalTransform.for_clip(clip.image_size, clip.mean, clip.std)
        info = {"kind": "zero-shot", "method": "zeroshot", "lamm": False, "backbone": backbone, "precision": precision}
        return cls(model, transform, precision, batch_size, info)

    # ---- predicting ----------------------------------------------------------------------------------------------
    @property
    def classnames(self) -> list[str]:
        """The classes predicted among, in label order."""
        return list(self.model.classnames)

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    def preprocess(self, image: ImageInput) -> torch.Tensor:
        """``[3, H, W]`` model input of a path or PIL image (the test transform), or a preprocessed tensor checked."""
        if isinstance(image, torch.Tensor):
            return self._check_tensor(image)
        if isinstance(image, Image.Image):
            return self.transform(image.convert("RGB"))
        if isinstance(image, (str, os.PathLike)):
            return self.transform(read_image(os.fspath(image)))
        raise TypeError(f"Cannot predict a {type(image).__name__}: give a path, a PIL image or a tensor.")

    def _check_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        expected = (3, *self.transform.size)
        if tuple(tensor.shape) != expected or not tensor.is_floating_point():
            raise UserError(
                f"A tensor input is taken as a preprocessed image ([3, H, W] float, as predictor.preprocess returns) "
                f"of shape {list(expected)}; got {list(tensor.shape)} {tensor.dtype}. Give a PIL image or a path to "
                "have it transformed."
            )
        return tensor

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` float32 logits of preprocessed images ``[B, 3, H, W]``, as the trainer's ``model_inference``."""
        images = images.to(self.device)
        dtype = autocast_dtype(self.precision, self.device.type)
        autocast = contextlib.nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)
        with autocast:
            if self.probe is None:
                return self.model(images).logits.float()
            features = self.model.encode_image(images).float()
        return probe_logits(self.probe, features, len(self.classnames))

    def predict(self, inputs: Union[ImageInput, Sequence[ImageInput]], topk: int = 5) -> list[Prediction]:
        """Top-``topk`` classes of each image, in order.

        Args:
            inputs: One image or a sequence: file paths, PIL images, preprocessed ``[3, H, W]`` tensors, or a
                ``[B, 3, H, W]`` batch of them.
            topk: Classes per image (at most the number of classes).

        Raises:
            FileNotFoundError, UnreadableImageError: A path that is no readable image.
        """
        if isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
            items: list[Any] = list(inputs.unbind(0))
        elif isinstance(inputs, (str, os.PathLike, Image.Image, torch.Tensor)):
            items = [inputs]
        else:
            items = list(inputs)
        out: list[Prediction] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            sources = [
                os.fspath(x) if isinstance(x, (str, os.PathLike)) else f"<image {start + i}>"
                for i, x in enumerate(chunk)
            ]
            batch = torch.stack([self.preprocess(x) for x in chunk])
            out += _predictions(self.logits(batch), self.classnames, sources, topk)
        return out

    __call__ = predict

    def predict_files(
        self,
        paths: Sequence[str],
        topk: int = 5,
        progress: Optional[bool] = None,
        skip_unreadable: bool = False,
        workers: int = 0,
    ) -> Iterator[Union[Prediction, tuple[str, str]]]:
        """Predict image files batch by batch (only a few batches of images in memory), with a progress bar.

        Args:
            paths: Image files.
            topk: Classes per image.
            progress: Show a progress bar on stderr (``None``: only when stderr is a terminal).
            skip_unreadable: Yield ``(path, reason)`` for a file that does not decode instead of raising.
            workers: Processes decoding and transforming images while the model runs (``0``: this process); the
                batches and their order, hence the predictions, are the same.

        Yields:
            A :class:`Prediction` per readable image, in order (and the ``(path, reason)`` of skipped files).

        Raises:
            FileNotFoundError, UnreadableImageError: A path that is no readable image (unless ``skip_unreadable``).
        """
        from torch.utils.data import DataLoader
        from tqdm import tqdm

        files = _ImageFiles(list(paths), self.transform)
        loader = DataLoader(files, batch_size=self.batch_size, num_workers=workers, collate_fn=list)
        disable = None if progress is None else not progress  # None: tqdm shows it only on a terminal
        with tqdm(total=len(files), unit="img", disable=disable, file=sys.stderr) as bar:
            for batch in loader:
                chunk, tensors = [], []
                for path, tensor, error in batch:
                    if tensor is not None:
                        chunk.append(path)
                        tensors.append(tensor)
                    elif not skip_unreadable:
                        raise UnreadableImageError(error[1])
                    else:
                        yield path, error[0]
                if tensors:
                    yield from _predictions(self.logits(torch.stack(tensors)), self.classnames, chunk, topk)
                bar.update(len(batch))


class _ImageFiles:
    """Image files as ``(path, tensor, None)``, or ``(path, None, (reason, message))`` for a file that does not
    decode: a map-style dataset for a ``DataLoader`` (the transform, not the model, goes to its workers)."""

    def __init__(self, paths: list[str], transform: EvalTransform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, Optional[torch.Tensor], Optional[tuple[str, str]]]:
        path = self.paths[index]
        try:
            return path, self.transform(read_image(path)), None
        except UnreadableImageError as err:
            cause = err.__cause__ or err
            return path, None, (f"{type(cause).__name__}: {cause}", str(err))


# ---- output --------------------------------------------------------------------------------------------------------
def _rows(predictions: Sequence[Prediction]) -> Iterator[tuple[str, int, str, float]]:
    for p in predictions:
        for rank, (name, prob) in enumerate(zip(p.classes, p.probabilities), 1):
            yield p.source, rank, name, prob


def format_predictions(
    predictions: Sequence[Prediction],
    fmt: str = "table",
    info: Optional[Mapping[str, Any]] = None,
    skipped: Optional[Mapping[str, Sequence[str]]] = None,
) -> str:
    """Predictions as text.

    * ``csv``: one row per image and rank, columns :data:`CSV_COLUMNS` (``path, rank, class, probability``;
      probabilities as full-precision floats in ``[0, 1]``): a spreadsheet pivots it, ``csv.DictReader`` reads it.
    * ``json``: ``{"format": "lamm-predictions/1", "model": {...}, "classes": [...], "predictions": [{"path",
      "top": [{"rank", "class", "label", "probability"}]}], "skipped": {"not_images": [...], "unreadable": [...]}}``.
    * ``table``: the CSV's rows aligned for reading, probabilities in percent.
    """
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows((path, rank, name, repr(prob)) for path, rank, name, prob in _rows(predictions))
        return buffer.getvalue()
    if fmt == "json":
        info = dict(info or {})
        document = {
            "format": PREDICTIONS_FORMAT,
            "model": {k: v for k, v in info.items() if k != "classes"},
            "classes": list(info.get("classes", [])),
            "predictions": [p.to_dict() for p in predictions],
            "skipped": {key: list(value) for key, value in (skipped or {}).items()},
        }
        return json.dumps(document, indent=2) + "\n"
    if fmt != "table":
        raise UserError(f"Unknown format {fmt!r}; use one of {FORMATS}.")
    rows = [(path, str(rank), name, f"{100 * prob:.2f}%") for path, rank, name, prob in _rows(predictions)]
    header = ("path", "rank", "class", "probability")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines) + "\n"


# ---- the command ---------------------------------------------------------------------------------------------------
def _is_backbone_name(name: str) -> bool:
    if name in OPENAI_MODELS or name in TINY_MODELS:
        return True
    import open_clip

    return name in open_clip.list_models()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lamm_plugin.predict",
        description="Top-k classes of images for a trained run (or a checkpoint, or zero-shot CLIP). No Dassl or "
        "dataset is needed: the checkpoint and the run's config.json say what the model and its test transform are.",
    )
    parser.add_argument(
        "model",
        help="a run folder (its best checkpoint, else its last), a checkpoint file, or a CLIP backbone name "
        "(ViT-B/16, tiny-vit, ...) for zero-shot CLIP with --classes",
    )
    parser.add_argument("images", nargs="+", help="image files and folders (walked recursively)")
    parser.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument(
        "--format", choices=FORMATS, default=None, help="output format (default: from --output's ending, else table)"
    )
    parser.add_argument("--output", help="write here instead of stdout")
    parser.add_argument("--batch-size", type=int, help="images per pass (default: the run's test batch size, or 32)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: the GPU when there is one)")
    parser.add_argument(
        "--classes",
        help="predict among these class names: comma-separated, or a file of one per line (a subset, or new names; "
        "names never trained use CLIP's own name embeddings); needed for zero-shot CLIP",
    )
    parser.add_argument("--epoch", type=int, help="a run folder's model.pth.tar-<epoch> instead of its best/last")
    parser.add_argument(
        "--pretrained", help="CLIP weights (tag or file) instead of the run's MODEL.BACKBONE.PRETRAINED"
    )
    parser.add_argument(
        "--allow-other-weights", action="store_true", help="load a checkpoint trained on other CLIP weights anyway"
    )
    parser.add_argument("--precision", help="fp32, fp16, bf16 or amp (default: the run's; zero-shot: fp32)")
    parser.add_argument("--template", default="", help="zero-shot prompt template with {} (default: a photo of a {}.)")
    parser.add_argument("--seed", type=int, help="tiny random-weight CLIPs only: the torch seed they are built after")
    parser.add_argument(
        "--workers", type=int, default=0, help="processes decoding images while the model runs (default 0: none)"
    )
    parser.add_argument("--skip-unreadable", action="store_true", help="skip (and count) files that do not decode")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def _load(args: argparse.Namespace) -> Predictor:
    options = dict(
        device=args.device,
        pretrained=args.pretrained,
        precision=args.precision,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    classes = parse_classes(args.classes) if args.classes is not None else None
    zero_shot = not osp.exists(args.model) and _is_backbone_name(args.model)
    if args.template and not zero_shot:
        raise UserError("--template applies to zero-shot CLIP only: a trained model keeps the prompts it learned.")
    if args.epoch is not None and not osp.isdir(args.model):
        raise UserError(
            "--epoch picks a checkpoint of a run folder; give the run folder, or the checkpoint file alone."
        )
    if osp.isdir(args.model):
        if not osp.isdir(osp.join(args.model, MODEL_FOLDER)) and read_run_config(args.model) is None:
            raise MissingFileError(
                f"{args.model} is a folder but not a run folder (no {MODEL_FOLDER}/ and no {CONFIG_FILENAME}): give "
                "the run's --output-dir, a checkpoint file, or a CLIP backbone name with --classes."
            )
        return Predictor.from_run(args.model, args.epoch, classes=classes, allow_other_weights=args.allow_other_weights,
                                  **options)  # fmt: skip
    if osp.isfile(args.model):
        return Predictor.from_checkpoint(args.model, classes, allow_other_weights=args.allow_other_weights, **options)
    if zero_shot:
        if classes is None:
            raise UserError(f"Zero-shot CLIP {args.model!r} needs the class names: --classes 'cat,dog,...' or a file.")
        options["precision"] = options["precision"] or "fp32"
        options["batch_size"] = options["batch_size"] or DEFAULT_BATCH_SIZE
        return Predictor.zero_shot(args.model, classes, template=args.template, **options)
    raise MissingFileError(
        f"{args.model!r} is neither a run folder, a checkpoint file nor a CLIP backbone name (e.g. ViT-B/16, "
        "tiny-vit; open_clip.list_models())."
    )


def _run(args: argparse.Namespace, fmt: str) -> str:
    """Predict what the command was given; returns the formatted output."""
    if args.topk < 1:
        raise UserError(f"--topk must be at least 1, got {args.topk}.")
    images, not_images = collect_images(args.images)
    predictor = _load(args)
    if not_images:
        shown = ", ".join(not_images[:5]) + (f" and {len(not_images) - 5} more" if len(not_images) > 5 else "")
        print(f"Skipped {len(not_images)} file(s) that are not images (by their ending): {shown}", file=sys.stderr)
    if not images:
        raise MissingFileError(f"No image files in {', '.join(args.images)} (endings: {' '.join(IMAGE_EXTENSIONS)}).")
    print(
        f"Predicting {len(images)} image(s) among {len(predictor.classnames)} classes on {predictor.device}",
        file=sys.stderr,
    )
    predictions, unreadable = [], []
    progress = False if args.no_progress else None
    if args.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {args.workers}.")
    for item in predictor.predict_files(images, args.topk, progress, args.skip_unreadable, args.workers):
        if isinstance(item, Prediction):
            predictions.append(item)
        else:
            unreadable.append(item[0])
    if unreadable:
        print(f"Skipped {len(unreadable)} file(s) that do not decode: {', '.join(unreadable[:5])}", file=sys.stderr)
    info = {**predictor.info, "classes": predictor.classnames}
    return format_predictions(predictions, fmt, info, {"not_images": not_images, "unreadable": unreadable})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command; returns the exit status (0, or 1 with the error on stderr: :func:`~lamm_plugin.errors.run_main`).

    ``--output`` is checked before any image is predicted and written whole or not at all: a full disk leaves an
    existing file as it was."""
    args = build_parser().parse_args(argv)
    fmt = args.format or {".csv": "csv", ".json": "json"}.get(osp.splitext(args.output or "")[1].lower(), "table")

    def run() -> int:
        if args.output:
            check_output(args.output)
        # stdout carries the predictions only: whatever the model code prints or logs goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            text = _run(args, fmt)
        if args.output:
            write_text(args.output, text, option="--output")
            print(f"Predictions written to {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0

    return run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
