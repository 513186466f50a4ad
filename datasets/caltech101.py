"""Caltech-101 (Fei-Fei et al., CVPR-W 2004) in CoOp's format: 100 object classes."""

from .base import Split, SplitFileDataset, register_dataset, split_folders

# CoOp drops the clutter class and the near-duplicate face class ...
IGNORED = ("BACKGROUND_Google", "Faces_easy")
# ... and gives four plural or capitalised folders singular class names.
NEW_CNAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@register_dataset
class Caltech101(SplitFileDataset):
    """``caltech-101/{101_ObjectCategories/<class>/*.jpg, split_zhou_Caltech101.json}``."""

    dataset_dir = "caltech-101"
    image_subdir = "101_ObjectCategories"

    def make_split(self) -> tuple[Split, Split, Split]:
        return split_folders(self.image_dir, ignored=IGNORED, new_cnames=NEW_CNAMES)
