"""Features that depend only on frozen CLIP and the data, computed once and kept on disk.

For a method whose image tower takes no prompts (CoOp, LAMM alone, CoOp+LAMM, KgCoOp, CoCoOp, zero-shot CLIP) the
image features of a test set never change: every run of a few-shot sweep (shot counts x seeds) and every evaluation
of a run would compute the same tensor. The same holds for text features of fixed prompts (PromptSRC's 60 templates,
KgCoOp's hand-crafted prompt, zero-shot CLIP's classes). :class:`FeatureCache` keeps such tensors in files keyed by
everything that determines them, so a later computation of the same thing reads it instead.

Exact by construction: a key holds every input of the computation that can change a bit of its result, so a hit
returns the tensor the computation would return now.

* the weights: a hash of every tensor of the tower used (:func:`tower_fingerprint`; :func:`lamm_plugin.backbone.
  weights_fingerprint`, which reads only a few tensors to match checkpoints, rides along for people reading keys);
* the precision, the autocast dtype in force, the device kind (and GPU model, or the CPU's vector instruction set),
  the torch / torchvision / Pillow versions (:func:`compute_context`);
* the inputs: for image features the ordered image files (path, size, modification and change time, see
  :func:`files_identity`), the test transform and the batch size (a batched matmul may round differently at another
  batch size, and a test set is cached as the whole batched computation); for text features the texts or the
  templates and class names.

A file holds ``{"format", "key", "shape", "dtype", "sha256", "features"}``; it is read with
``torch.load(weights_only=True)`` and used only when its format, its whole key, the shape and dtype it declares and
the checksum of its bytes all agree; anything else (a damaged, truncated or foreign file) is recomputed with a
warning. Files are written to a temporary name and moved into place with ``os.replace``, so runs that fill the cache
at once (a sweep's jobs) never read a half-written file; the last writer wins with the same tensor. A cache folder
that cannot be written costs a warning, never the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import os.path as osp
import pickle
import platform
import warnings
import weakref
from collections.abc import Sequence
from typing import Any, Callable, Optional

import torch
from torch import nn

from lamm_plugin.files import write_atomic
from lamm_plugin.layout import FEATURE_CACHE_FORMAT

__all__ = [
    "IMAGE_FEATURES",
    "TEXT_FEATURES",
    "FeatureCache",
    "cached_text_features",
    "compute_context",
    "files_identity",
    "tower_fingerprint",
]

logger = logging.getLogger(__name__)

#: Sub-folders of a cache folder, one per kind of tensor.
IMAGE_FEATURES = "image_features"
TEXT_FEATURES = "text_features"

# Fingerprints of modules already hashed, with the state they were hashed in (see tower_fingerprint).
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of ``tensor`` (any dtype, bf16 included), in row-major order, on the CPU."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def tower_fingerprint(module: nn.Module) -> str:
    """A hash of every parameter and buffer of ``module``: names, dtypes, shapes and bytes.

    Unlike :func:`lamm_plugin.backbone.weights_fingerprint`, which reads a few float32 tensors to tell checkpoints
    apart, this covers every weight a feature depends on (an image tower fine-tuned but for its embeddings gets
    another fingerprint). Hashing is memoised per module and recomputed when any tensor was modified in place, moved
    or cast since (PyTorch's version counters, devices and dtypes are part of the memo's check).
    """
    tensors = sorted({**dict(module.named_parameters()), **dict(module.named_buffers())}.items())
    state = tuple((name, t.dtype, t.device, t._version, t.data_ptr()) for name, t in tensors)
    known = _FINGERPRINTS.get(module)
    if known is not None and known[0] == state:
        return known[1]
    digest = hashlib.sha256()
    for name, tensor in tensors:
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_tensor_bytes(tensor))
    fingerprint = digest.hexdigest()[:32]
    _FINGERPRINTS[module] = (state, fingerprint)
    return fingerprint


def compute_context(device: torch.device) -> dict[str, Any]:
    """What besides weights and inputs decides the bits of a computation on ``device``: the device kind and model
    (GPU name, or the CPU's vector instruction set, which picks the matmul kernels), the autocast dtype in force
    there (``None`` without autocast) and the library versions."""
    import PIL
    import torchvision

    device = torch.device(device)
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}"
    autocast = str(torch.get_autocast_dtype(device.type)) if torch.is_autocast_enabled(device.type) else None
    return {
        "device": device.type,
        "hardware": hardware,
        "autocast": autocast,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
    }


def files_identity(paths: Sequence[str]) -> Optional[dict[str, Any]]:
    """``{"count", "sha256"}`` of the ordered files ``paths``: each file's absolute path, size, modification time
    and status-change time (nanoseconds); ``None`` when a file cannot be stat'ed (the loader then reports it).

    Not a hash of the contents: reading 50,000 ImageNet images to hash them would cost much of what the cache saves.
    A file rewritten in place changes its change time (``st_ctime``), which no tool can set back, so new contents are
    never mistaken for old ones; a copied, moved, re-extracted or ``chmod``-ed tree only recomputes once.
    """
    digest = hashlib.sha256()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            return None
        digest.update(f"{osp.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode())
    return {"count": len(paths), "sha256": digest.hexdigest()}


def _canonical(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)


class FeatureCache:
    """Tensors on disk under ``root/<kind>/<sha256 of the key>.pt`` (see the module docstring).

    Args:
        root: The cache folder; created when the first tensor is stored.
    """

    def __init__(self, root: str) -> None:
        self.root = osp.abspath(osp.expanduser(root))
        self._unwritable_warned = False

    def __repr__(self) -> str:
        return f"FeatureCache({self.root!r})"

    def path(self, kind: str, key: dict[str, Any]) -> str:
        """The file of ``key`` in the folder of ``kind``."""
        name = hashlib.sha256(_canonical(key).encode()).hexdigest()[:40]
        return osp.join(self.root, kind, name + ".pt")

    def load(self, kind: str, key: dict[str, Any], shape: Optional[Sequence[int]] = None) -> Optional[torch.Tensor]:
        """The tensor stored for ``key`` (on the CPU), or ``None`` when there is none or it does not check out.

        Args:
            kind: :data:`IMAGE_FEATURES` or :data:`TEXT_FEATURES`.
            key: What determines the tensor.
            shape: The shape it must have (``-1`` for any size of a dimension); ``None`` checks none.
        """
        path = self.path(kind, key)
        if not osp.isfile(path):
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            problem = self._problem(entry, key, shape)
        except pickle.UnpicklingError:  # weights_only refused what it holds; torch's advice to lift that is no advice
            problem = "it holds objects other than tensors, which a feature cache file never holds (not loaded)"
        except Exception as err:  # a truncated or foreign file fails inside torch.load in many ways
            problem = f"it cannot be read ({type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]})"
        if problem is not None:
            warnings.warn(
                f"Feature cache file {path} is not used: {problem}; computing the features again.", stacklevel=2
            )
            return None
        return entry["features"]

    @staticmethod
    def _problem(entry: Any, key: dict[str, Any], shape: Optional[Sequence[int]]) -> Optional[str]:
        """Why ``entry`` is not the tensor of ``key``, or ``None`` when it is."""
        if not isinstance(entry, dict) or entry.get("format") != FEATURE_CACHE_FORMAT:
            found = entry.get("format") if isinstance(entry, dict) else type(entry).__name__
            return f"format {found!r}, expected {FEATURE_CACHE_FORMAT!r}"
        if entry.get("key") != json.loads(_canonical(key)):
            return "it was stored for another key"
        features = entry.get("features")
        if not isinstance(features, torch.Tensor):
            return "it holds no tensor"
        if list(features.shape) != entry.get("shape") or str(features.dtype) != entry.get("dtype"):
            declared = f"{entry.get('dtype')} {entry.get('shape')}"
            return f"its tensor is {features.dtype} {list(features.shape)}, its header says {declared}"
        if shape is not None and (
            len(shape) != features.dim() or any(s not in (-1, n) for s, n in zip(shape, features.shape))
        ):
            return f"its tensor has shape {list(features.shape)}, expected {list(shape)}"
        if hashlib.sha256(_tensor_bytes(features)).hexdigest() != entry.get("sha256"):
            return "its tensor's bytes do not match their checksum (damaged)"
        return None

    def store(self, kind: str, key: dict[str, Any], features: torch.Tensor) -> Optional[str]:
        """Write ``features`` for ``key`` atomically; returns the path, or ``None`` (with a warning) when the cache
        folder cannot be written."""
        path = self.path(kind, key)
        features = features.detach().to("cpu").contiguous()
        entry = {
            "format": FEATURE_CACHE_FORMAT,
            "key": json.loads(_canonical(key)),
            "shape": list(features.shape),
            "dtype": str(features.dtype),
            "sha256": hashlib.sha256(_tensor_bytes(features)).hexdigest(),
            "features": features,
        }
        try:
            write_atomic(path, lambda f: torch.save(entry, f))  # created as the umask says: a group can share it
        except OSError as err:
            if not self._unwritable_warned:
                warnings.warn(
                    f"The feature cache {self.root} cannot be written ({err}); features are computed as usual. Set "
                    "LAMM_CACHE.DIR (or LAMM_CACHE_DIR) to a writable folder to keep them.",
                    stacklevel=2,
                )
                self._unwritable_warned = True
            return None
        logger.info("Stored %s %s in %s", kind, list(features.shape), path)
        return path

    def get_or_compute(
        self,
        kind: str,
        key: dict[str, Any],
        compute: Callable[[], torch.Tensor],
        shape: Optional[Sequence[int]] = None,
    ) -> torch.Tensor:
        """The tensor of ``key``: read from the cache, or computed by ``compute()`` and stored. A read tensor is on
        the CPU; a computed one is returned as computed."""
        cached = self.load(kind, key, shape)
        if cached is not None:
            return cached
        features = compute()
        self.store(kind, key, features)
        return features


def cached_text_features(
    cache: Optional[FeatureCache],
    model: nn.Module,
    inputs: dict[str, Any],
    compute: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """Text features of a frozen open_clip CLIP ``model`` that depend only on its text tower and ``inputs`` (texts,
    templates, class names, prompt tokens): from ``cache`` when it holds them, else ``compute()`` (then stored).
    Without a cache, ``compute()``.

    Args:
        cache: The cache, or ``None`` (switched off).
        model: The CLIP model the features are computed with (its image tower is not part of the key).
        inputs: Everything ``compute`` reads besides the text tower (JSON-serialisable).
        compute: Computes the features, under the autocast state in force now.

    Returns:
        The features on the model's device.
    """
    if cache is None:
        return compute()
    from lamm_plugin.backbone import weights_fingerprint

    digest = hashlib.sha256()
    for name, module in model.named_children():
        if name != "visual":  # transformer, token_embedding, ln_final
            digest.update(f"{name}|{tower_fingerprint(module)}|".encode())
    # CLIP's own tensors: positional embedding, text projection, logit scale, the causal mask.
    for name, tensor in [*model.named_parameters(recurse=False), *model.named_buffers(recurse=False)]:
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode() + _tensor_bytes(tensor))
    device = model.token_embedding.weight.device
    key = {
        "kind": "clip-text-features",
        "text_tower": digest.hexdigest()[:32],
        "clip": weights_fingerprint(model),
        "cast_dtype": str(model.transformer.get_cast_dtype()),
        "context": compute_context(device),
        "inputs": inputs,
    }
    return cache.get_or_compute(TEXT_FEATURES, key, compute).to(device)
