"""Describable Textures Dataset (Cimpoi et al., CVPR 2014) in CoOp's format: 47 texture classes."""

from .base import Split, SplitFileDataset, register_dataset, split_folders


@register_dataset
class DescribableTextures(SplitFileDataset):
    """``dtd/{images/<class>/*.jpg, split_zhou_DescribableTextures.json}``."""

    dataset_dir = "dtd"
    image_subdir = "images"

    def make_split(self) -> tuple[Split, Split, Split]:
        return split_folders(self.image_dir)
