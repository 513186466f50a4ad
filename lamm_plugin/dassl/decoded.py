"""The training loader without repeated JPEG decoding: each training image decoded once and kept, exact.

A few-shot training set is small (16 shots x 1000 classes is 16,000 images), yet Dassl's ``DatasetWrapper`` decodes
every image again in every epoch (``read_image``: ``Image.open(path).convert("RGB")``), and with a fast step the
epoch is bound by decoding and converting, not by the model. Here:

* :class:`DecodedImages` keeps the decoded RGB pixels of the training images in one anonymous shared memory block
  (``mmap``), filled in the main process before the loader's workers fork, so every worker reads the same pages
  (nothing is copied per worker), bounded by ``LAMM_CACHE.DECODED_MAX_MB``: the images that fit are kept, in
  order, the rest decoded at every use, and one line says how many were kept. The few-shot check of the
  repository's datasets (which decodes every sampled image at start) fills it, so an image is decoded once, not
  twice;
* :class:`DecodedDatasetWrapper` is Dassl's ``DatasetWrapper`` reading from the store: the PIL image rebuilt from
  the kept pixels equals ``read_image``'s, so Dassl's own transforms give the same tensors for the same random
  state;
* :func:`fast_tail` replaces the ``ToTensor`` (+ ``Normalize``) at the end of those transforms by one table look-up
  per channel, built with the same float32 operations on the 256 byte values (:class:`ToNormalizedTensor`): the
  same values, a third of the time.

Switch: ``LAMM_CACHE.DECODED_IMAGES`` (default ``True``); ``False`` is Dassl's own loader, untouched.
"""

from __future__ import annotations

import functools
import mmap
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from lamm_plugin.dassl.config import CACHE_NODE, DECODED_IMAGES_KEY, DECODED_MAX_MB_KEY
from lamm_plugin.errors import UserError

__all__ = [
    "DecodedDatasetWrapper",
    "DecodedImages",
    "ToNormalizedTensor",
    "cached_train_loader",
    "decode_rgb",
    "fast_tail",
    "store_for",
]


def decode_rgb(path: str) -> Image.Image:
    """An image decoded as Dassl's ``read_image`` does (every pixel read: a truncated file fails here)."""
    with Image.open(path) as image:
        return image.convert("RGB")


class DecodedImages:
    """Decoded RGB training images in one anonymous shared memory block, by path.

    The block is reserved at the size bound (pages are committed only as they are written) and written only in
    the process that builds it, before the DataLoader's workers fork; the workers inherit the mapping and read the
    same physical pages. A worker started by ``spawn`` or ``forkserver`` receives the store without its pixels
    (pickling drops them) and decodes as Dassl does.

    Args:
        max_bytes: Bound of the kept pixels; an image that does not fit is left out (decoded at every use).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._block: Optional[mmap.mmap] = None
        while self.max_bytes and self._block is None:
            try:  # reserved, not committed: pages count once written
                self._block = mmap.mmap(-1, self.max_bytes)
            except OSError as err:  # a system that refuses to reserve that much address space (strict overcommit)
                print(f"Note: cannot reserve {self.max_bytes / 2**20:,.0f} MB for decoded images ({err}); trying half")
                self.max_bytes //= 2
        self._slots: dict[str, tuple[int, int, int]] = {}  # path -> (offset, width, height)
        self._used = 0
        self.left_out = 0  # images offered that did not fit

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, path: str) -> bool:
        return path in self._slots

    @property
    def nbytes(self) -> int:
        """Bytes of pixels kept."""
        return self._used

    def put(self, path: str, image: Image.Image) -> bool:
        """Keep ``image`` (an RGB PIL image) for ``path`` if it fits; returns whether it is kept."""
        if path in self._slots:
            return True
        if image.mode != "RGB":
            raise ValueError(f"{path}: only RGB images are kept, got mode {image.mode!r}")
        width, height = image.size
        size = width * height * 3
        if self._block is None or self._used + size > self.max_bytes:
            self.left_out += 1
            return False
        self._block[self._used : self._used + size] = image.tobytes()
        self._slots[path] = (self._used, width, height)
        self._used += size
        return True

    def get(self, path: str) -> Optional[Image.Image]:
        """The kept image of ``path`` (equal to ``read_image(path)``), or None when it is not kept."""
        slot = self._slots.get(path) if self._block is not None else None
        if slot is None:
            return None
        offset, width, height = slot
        return Image.frombytes("RGB", (width, height), memoryview(self._block)[offset : offset + width * height * 3])

    def fill(self, paths: Iterable[str], threads: int = 0) -> None:
        """Decode and keep the images of ``paths`` not kept yet, in order, until the bound is reached.

        Args:
            paths: Image files.
            threads: Decoding threads (PIL releases the GIL while it decodes); 0 = one per CPU, at most 8.
        """
        if self.left_out:  # the bound is reached already
            return
        todo = [p for p in dict.fromkeys(paths) if p not in self._slots]
        threads = threads or min(8, os.cpu_count() or 1)
        chunk = 64
        with ThreadPoolExecutor(threads) as pool:
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                kept = [self.put(path, image) for path, image in zip(part, pool.map(decode_rgb, part))]
                if not all(kept):  # the bound is reached: the rest is not decoded now
                    self.left_out += len(todo) - start - len(part)
                    return

    def summary(self, total: int) -> str:
        """The one log line: how many of ``total`` training images are kept, in how many MB of the bound."""
        kept = len(self)
        line = (
            f"Decoded-image cache: {kept:,} of {total:,} training images kept decoded "
            f"({self.nbytes / 2**20:,.0f} MB of {CACHE_NODE}.{DECODED_MAX_MB_KEY} {self.max_bytes / 2**20:,.0f})"
        )
        if kept < total:
            line += f"; the other {total - kept:,} are decoded at every use (raise {CACHE_NODE}.{DECODED_MAX_MB_KEY})"
        return line

    def __getstate__(self) -> dict[str, Any]:
        # A worker started by spawn/forkserver cannot share an anonymous mapping: it gets no pixels and decodes.
        state = self.__dict__.copy()
        state["_block"], state["_slots"] = None, {}
        return state


def store_for(cfg: Any) -> Optional[DecodedImages]:
    """An empty :class:`DecodedImages` bounded by ``LAMM_CACHE.DECODED_MAX_MB`` when ``LAMM_CACHE.DECODED_IMAGES``
    is on in ``cfg`` (a config without the node, as a host's own, has it off), else None."""
    node = cfg.get(CACHE_NODE) if hasattr(cfg, "get") else None
    if node is None or not node.get(DECODED_IMAGES_KEY, False):
        return None
    max_mb = node.get(DECODED_MAX_MB_KEY, 0)
    if not isinstance(max_mb, (int, float)) or isinstance(max_mb, bool) or max_mb < 0:
        raise UserError(f"{CACHE_NODE}.{DECODED_MAX_MB_KEY} must be a number of MB >= 0, got {max_mb!r}.")
    return DecodedImages(int(max_mb * 2**20))


class ToNormalizedTensor:
    """``ToTensor()`` then (optionally) ``Normalize(mean, std)`` of an RGB PIL image, by table look-up.

    ``ToTensor`` computes ``byte / 255`` in float32 and ``Normalize`` ``(x - mean_c) / std_c`` in float32, each value
    on its own: the table holds exactly those results for the 256 byte values of each channel (computed by the
    same torch operations), so looking them up gives the same tensor. Images of another mode go through the
    original transforms.
    """

    def __init__(self, to_tensor: Callable, normalize: Optional[Any] = None) -> None:
        self.to_tensor, self.normalize = to_tensor, normalize
        ramp = np.repeat(
            np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2
        )  # a 1 x 256 image, pixel v = (v, v, v)
        values = to_tensor(Image.fromarray(ramp, "RGB"))  # [3, 1, 256]: v / 255 as ToTensor computes it
        if normalize is not None:
            values = normalize(values)
        self.table = values[:, 0, :].numpy().copy()  # [3, 256]

    def __call__(self, image: Any) -> torch.Tensor:
        if not isinstance(image, Image.Image) or image.mode != "RGB":
            out = self.to_tensor(image)
            return self.normalize(out) if self.normalize is not None else out
        pixels = np.asarray(image)  # [H, W, 3] uint8
        out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
        for c in range(3):  # bytes index a 256-entry table: "clip" never clips, and spares take's buffered "raise" path
            np.take(self.table[c], pixels[:, :, c], out=out[c], mode="clip")
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_tensor!r}, {self.normalize!r})"


def fast_tail(transform: Any) -> Any:
    """``transform`` with its ``ToTensor`` (and the ``Normalize`` right after it) replaced by
    :class:`ToNormalizedTensor`, when it is a torchvision ``Compose`` holding them; otherwise ``transform``."""
    import torchvision.transforms as T

    steps = getattr(transform, "transforms", None)
    if not isinstance(transform, T.Compose) or not isinstance(steps, list):
        return transform
    for i, step in enumerate(steps):
        if type(step) is T.ToTensor and torch.get_default_dtype() == torch.float32:
            normalize = steps[i + 1] if i + 1 < len(steps) and type(steps[i + 1]) is T.Normalize else None
            if normalize is not None and (len(normalize.mean) != 3 or len(normalize.std) != 3 or normalize.inplace):
                return transform
            fused = ToNormalizedTensor(step, normalize)
            return T.Compose(steps[:i] + [fused] + steps[i + (2 if normalize is not None else 1) :])
    return transform


def _dassl_wrapper() -> type:
    from dassl.data.data_manager import DatasetWrapper

    return DatasetWrapper


class DecodedDatasetWrapper(_dassl_wrapper()):
    """Dassl's ``DatasetWrapper`` whose images come from a :class:`DecodedImages` (those it lacks are decoded as
    Dassl does). The output dict is Dassl's: ``label``, ``domain``, ``impath``, ``index``, ``img`` (``img2``, ...
    for a list of transforms, a list for ``K_TRANSFORMS`` > 1) and ``img0`` with ``RETURN_IMG0``."""

    def __init__(self, cfg: Any, data_source: Sequence, transform: Any = None, is_train: bool = False, *,
                 store: DecodedImages) -> None:  # fmt: skip
        super().__init__(cfg, data_source, transform=transform, is_train=is_train)
        self.store = store

    def read(self, path: str) -> Image.Image:
        image = self.store.get(path)
        return image if image is not None else decode_rgb(path)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        # Dassl's DatasetWrapper.__getitem__ with read_image(impath) replaced by the store.
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        img0 = self.read(item.impath)
        if self.transform is not None:
            if isinstance(self.transform, (list, tuple)):
                for i, tfm in enumerate(self.transform):
                    output["img" + (str(i + 1) if i > 0 else "")] = self._transform_image(tfm, img0)
            else:
                output["img"] = self._transform_image(self.transform, img0)
        else:
            output["img"] = img0
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output


def cached_train_loader(cfg: Any, loader: torch.utils.data.DataLoader, store: Optional[DecodedImages] = None):
    """Dassl's training loader ``loader`` rebuilt to read decoded images kept once (``LAMM_CACHE.DECODED_IMAGES``).

    Args:
        cfg: The run's config.
        loader: The loader Dassl's ``DataManager`` built (its dataset, transform and batch size are reused).
        store: Images decoded already (by the dataset's few-shot check); the missing ones are decoded here.

    Returns:
        A new loader from Dassl's ``build_data_loader`` with the same sampler settings, or None when the switch is
        off in ``cfg`` (Dassl's loader is then used as it is).
    """
    from dassl.data.data_manager import build_data_loader

    if store is None:
        store = store_for(cfg)
    if store is None:
        return None
    wrapped = loader.dataset
    data_source = wrapped.data_source
    store.fill(item.impath for item in data_source)
    print(store.summary(len({item.impath for item in data_source})))
    transform = wrapped.transform
    transform = [fast_tail(t) for t in transform] if isinstance(transform, (list, tuple)) else fast_tail(transform)
    train_x = cfg.DATALOADER.TRAIN_X
    return build_data_loader(
        cfg,
        sampler_type=train_x.SAMPLER,
        data_source=data_source,
        batch_size=loader.batch_size,
        n_domain=train_x.N_DOMAIN,
        n_ins=train_x.N_INS,
        tfm=transform,
        is_train=True,
        dataset_wrapper=functools.partial(DecodedDatasetWrapper, store=store),
    )
