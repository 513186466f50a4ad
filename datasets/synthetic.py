"""``SyntheticShapes``: the offline dataset of :mod:`lamm_experiments.synthetic` as a Dassl dataset.

On first use it writes a small PNG tree and a CoOp split file under ``DATASET.ROOT``; from then on it is read
like any CoOp dataset and goes through the same few-shot sampling, caches and base-to-new subsampling. Its
optional config node ``DATASET.SYNTHETIC`` (see :data:`SYNTHETIC_DEFAULTS`, added by
:func:`add_synthetic_config`) sets the folder and the generation parameters; without the node, the defaults
apply. Changing a generation parameter regenerates the folder (and drops its few-shot caches).
"""

from typing import Any

from yacs.config import CfgNode

from lamm_experiments import synthetic

from .base import SplitFileDataset, register_dataset

SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "DIR": "synthetic_shapes",  # folder under DATASET.ROOT
    "NUM_CLASSES": len(synthetic.SHAPE_CLASSES),  # the first N classes of lamm_experiments.synthetic.SHAPE_CLASSES
    "TRAIN_PER_CLASS": 16,
    "VAL_PER_CLASS": 4,
    "TEST_PER_CLASS": 8,
    "IMAGE_SIZE": 32,  # pixels; Dassl's transforms resize to INPUT.SIZE
    "SEED": 0,  # data seed; few-shot sampling still follows cfg.SEED
}


def add_synthetic_config(cfg: CfgNode) -> None:
    """Add the ``DATASET.SYNTHETIC`` node with its defaults, unless it is there already.

    Call it before merging config files that set these keys (yacs refuses unknown keys).
    """
    if "SYNTHETIC" not in cfg.DATASET:
        cfg.DATASET.SYNTHETIC = CfgNode(dict(SYNTHETIC_DEFAULTS))


def synthetic_options(cfg: CfgNode) -> dict[str, Any]:
    """``SYNTHETIC_DEFAULTS`` overridden by whatever ``cfg.DATASET.SYNTHETIC`` sets."""
    node = cfg.DATASET.get("SYNTHETIC", None) or {}
    unknown = set(node) - set(SYNTHETIC_DEFAULTS)
    if unknown:
        raise KeyError(f"unknown DATASET.SYNTHETIC keys {sorted(unknown)}; known: {sorted(SYNTHETIC_DEFAULTS)}")
    return {**SYNTHETIC_DEFAULTS, **node}


@register_dataset
class SyntheticShapes(SplitFileDataset):
    """``<DIR>/{images/<class>/*.png, split_zhou_SyntheticShapes.json, synthetic.json}``, created on first use."""

    dataset_dir = SYNTHETIC_DEFAULTS["DIR"]
    image_subdir = synthetic.IMAGE_SUBDIR

    def folder_name(self, cfg: CfgNode) -> str:
        return synthetic_options(cfg)["DIR"]

    def prepare(self, cfg: CfgNode) -> None:
        opts = synthetic_options(cfg)
        synthetic.write_image_folder(
            self.dataset_dir,
            num_train=opts["TRAIN_PER_CLASS"],
            num_val=opts["VAL_PER_CLASS"],
            num_test=opts["TEST_PER_CLASS"],
            num_classes=opts["NUM_CLASSES"],
            image_size=opts["IMAGE_SIZE"],
            seed=opts["SEED"],
            split_filename=f"split_zhou_{type(self).__name__}.json",
        )
