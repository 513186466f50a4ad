"""Food-101 (Bossard et al., ECCV 2014) in CoOp's format: 101 dishes."""

from .base import Split, SplitFileDataset, register_dataset, split_folders


@register_dataset
class Food101(SplitFileDataset):
    """``food-101/{images/<class>/*.jpg, split_zhou_Food101.json}``.

    Like CoOp, a missing split is made from the image folders (50/20/30 %), not from ``meta/``.
    """

    dataset_dir = "food-101"
    image_subdir = "images"

    def make_split(self) -> tuple[Split, Split, Split]:
        return split_folders(self.image_dir)
