"""Evaluation of :class:`~lamm_plugin.dassl.trainer.PromptTrainer`: Dassl's ``test()`` loop, with the image
features of an evaluation set read from the feature cache (:mod:`lamm_plugin.feature_cache`) where they cannot change.

For a method whose image tower takes no prompts (``prompts_image_tower`` false: CoOp, LAMM alone, CoOp+LAMM, KgCoOp,
CoCoOp, zero-shot CLIP), the first evaluation of a test set stores the image tower's output for every image; every
later evaluation of the same set (the other runs of a sweep, base-to-new and cross-dataset evaluations, continual
stages) reads it instead of decoding and encoding the images again, and computes the logits from it as the model's
forward does (:meth:`~lamm_plugin.lamm.LAMM.logits_from_image_features`, batch by batch as the loader would cut
them). The logits are the same bits as without the cache. Switches: ``LAMM_CACHE.TEST_FEATURES`` and
``LAMM_CACHE.TEXT_FEATURES``; folder: ``LAMM_CACHE.DIR`` (:func:`cache_dir`).
"""

from __future__ import annotations

import os
import os.path as osp
from collections.abc import Iterator
from typing import Any, Optional

import torch
from dassl.data.data_manager import DatasetWrapper
from torch.utils.data import SequentialSampler
from tqdm import tqdm

from lamm_plugin.backbone import weights_fingerprint
from lamm_plugin.dassl.config import CACHE_NODE
from lamm_plugin.feature_cache import IMAGE_FEATURES, FeatureCache, compute_context, files_identity, tower_fingerprint
from lamm_plugin.layout import CACHE_DIR_ENV, CACHE_DIRNAME

__all__ = ["DETERMINISTIC_TRANSFORMS", "CachedEvaluationMixin", "cache_dir"]

#: Transforms whose output depends only on the image (Dassl's test transform is made of these); a test loader with
#: any other transform (a random augmentation, a custom callable) is evaluated without the cache.
DETERMINISTIC_TRANSFORMS = frozenset(
    {"Compose", "Resize", "CenterCrop", "ToTensor", "PILToTensor", "ConvertImageDtype", "Normalize"}
    | {"InstanceNormalization"}  # Dassl's
)
#: The ``INPUT`` keys that shape Dassl's test transform (recorded in the key beside the transform itself).
_INPUT_KEYS = ("SIZE", "INTERPOLATION", "TRANSFORMS", "PIXEL_MEAN", "PIXEL_STD")


def cache_dir(cfg: Any) -> str:
    """The feature cache folder: ``LAMM_CACHE.DIR``, else ``$LAMM_CACHE_DIR``, else ``<DATASET.ROOT>/.lamm_cache``."""
    node = cfg.get(CACHE_NODE) or {}
    folder = node.get("DIR") or os.environ.get(CACHE_DIR_ENV) or osp.join(cfg.DATASET.ROOT, CACHE_DIRNAME)
    return osp.abspath(osp.expanduser(folder))


def _transform_steps(transform: Any) -> Optional[list[Any]]:
    """The steps of a test transform when each is deterministic (see :data:`DETERMINISTIC_TRANSFORMS`), else None."""
    steps = list(getattr(transform, "transforms", [transform]))
    if type(transform).__name__ not in DETERMINISTIC_TRANSFORMS:
        return None
    if any(type(step).__name__ not in DETERMINISTIC_TRANSFORMS for step in steps):
        return None
    return steps


class CachedEvaluationMixin:
    """Dassl's ``test()`` with cached image features; mixed into the trainer before ``TrainerX``.

    The trainer provides ``model`` (a :class:`~lamm_plugin.lamm.LAMM`), ``device``, ``precision``, ``cfg``,
    ``evaluator``, ``_autocast()``, ``parse_batch_test`` and ``model_inference``.
    """

    _feature_cache: Optional[FeatureCache] = None

    def setup_feature_cache(self) -> None:
        """Give the model its text-feature cache and prepare the image-feature cache (``LAMM_CACHE``)."""
        node = self.cfg.get(CACHE_NODE) or {}
        use_test, use_text = bool(node.get("TEST_FEATURES", False)), bool(node.get("TEXT_FEATURES", False))
        cache = FeatureCache(cache_dir(self.cfg)) if use_test or use_text else None
        self._feature_cache = cache if use_test else None
        self.model.set_feature_cache(cache if use_text else None)
        if cache is not None:
            print(f"Feature cache: {cache.root} (test features {'on' if use_test else 'off'}, text features "
                  f"{'on' if use_text else 'off'}; LAMM_CACHE)")  # fmt: skip

    # ---- Dassl's loop --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def test(self, split: Optional[str] = None) -> float:
        """Dassl's ``SimpleTrainer.test``, with the logits from :meth:`loader_logits`."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"  # in case val_loader is None
            data_loader = self.test_loader
        print(f"Evaluate on the *{split}* set")
        for logits, label in self.loader_logits(data_loader):
            self.evaluator.process(logits, label)
        results = self.evaluator.evaluate()
        for k, v in results.items():
            self.write_scalar(f"{split}/{k}", v, self.epoch)
        return list(results.values())[0]

    @torch.no_grad()
    def loader_logits(self, loader: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(logits, labels)`` per batch of an evaluation loader, the model in eval mode: the image features from
        the cache when it holds them for this loader's images, else computed (and stored when they can be)."""
        plan = self._cache_plan(loader)
        if plan is None:
            for batch in tqdm(loader):
                images, label = self.parse_batch_test(batch)
                yield self.model_inference(images), label
            return
        key, labels = plan
        n, batch_size = len(labels), loader.batch_size
        embed_dim = self.model.frozen[0].visual.output_dim
        cached = self._feature_cache.load(IMAGE_FEATURES, key, shape=(n, embed_dim))
        if cached is not None:
            _draw_like_a_loader(loader)
            print(f"Image features of the {n} images read from the feature cache ({self._feature_cache.root})")
            for features, label in zip(cached.split(batch_size), labels.split(batch_size)):
                # A fresh tensor per batch, as the loader's: the matmuls see the same memory layout.
                yield self._logits(features.to(self.device, copy=True)), label.to(self.device)
            return
        parts = []
        for batch in tqdm(loader):
            images, label = self.parse_batch_test(batch)
            with self._autocast():
                features = self.model.encode_image(images)
            parts.append(features)
            yield self._logits(features), label
        self._feature_cache.store(IMAGE_FEATURES, key, torch.cat(parts))

    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        """What :meth:`model_inference` returns, from the image tower's output."""
        with self._autocast():
            return self.model.logits_from_image_features(features).float()

    # ---- the key -------------------------------------------------------------------------------------------------
    def _cache_plan(self, loader: Any) -> Optional[tuple[dict[str, Any], torch.Tensor]]:
        """``(key, labels)`` of ``loader``'s image features, or None when they are not to be cached: cache off, an
        image tower with prompts, an inference overridden by a subclass, or a loader other than Dassl's plain one
        (sequential order, deterministic transform, one view per image)."""
        if self._feature_cache is None or not self.model.image_features_cacheable:
            return None
        from lamm_plugin.dassl.trainer import PromptTrainer

        if type(self).model_inference is not PromptTrainer.model_inference:
            return None
        dataset = getattr(loader, "dataset", None)
        if type(dataset) is not DatasetWrapper or not isinstance(loader.sampler, SequentialSampler):
            return None
        if loader.drop_last or not loader.batch_size or dataset.k_tfm != 1:
            return None
        steps = _transform_steps(dataset.transform)
        if steps is None:
            return None
        items = list(dataset.data_source)
        files = files_identity([item.impath for item in items])
        if files is None:
            return None
        key = {
            "kind": "test-image-features",
            **self._image_tower(),
            "precision": self.precision,
            "context": compute_context(self.device) | {"autocast": _autocast_name(self)},
            "transform": repr(dataset.transform),
            "input": {k: self.cfg.INPUT[k] for k in _INPUT_KEYS if k in self.cfg.INPUT},
            "batch_size": int(loader.batch_size),
            "files": files,
        }
        return key, torch.tensor([item.label for item in items], dtype=torch.long)

    def _image_tower(self) -> dict[str, str]:
        """The weights part of the key: a hash of every tensor of the image tower (memoised), the CLIP fingerprint of
        checkpoints and the backbone's name."""
        clip = self.model.frozen[0]
        return {
            "image_tower": tower_fingerprint(clip.visual),
            "clip": weights_fingerprint(clip),
            "backbone": str(self.model.backbone),
        }


def _draw_like_a_loader(loader: Any) -> None:
    """Draw from the random generator what iterating ``loader`` would have drawn in this process: a DataLoader
    iterator takes its workers' base seed from ``loader.generator`` (the global generator when None). Without this
    draw, an evaluation between training epochs (``TEST.FINAL_MODEL best_val``) read from the cache would shift the
    random numbers of all later training, and the run would not be the run without the cache."""
    torch.empty((), dtype=torch.int64).random_(generator=loader.generator)


def _autocast_name(trainer: Any) -> Optional[str]:
    """The autocast dtype the trainer's inference runs under (``PREC amp``), or None."""
    dtype = trainer._autocast_dtype()
    return str(dtype) if dtype is not None else None
