"""Oxford Flowers-102 (Nilsback & Zisserman, ICVGIP 2008) in CoOp's format: 102 flower species."""

import json
import os
from collections import defaultdict

from lamm_plugin.files import open_text

from .base import Split, SplitFileDataset, register_dataset, split_per_class


@register_dataset
class OxfordFlowers(SplitFileDataset):
    """``oxford_flowers/{jpg/image_*.jpg, imagelabels.mat, cat_to_name.json, split_zhou_OxfordFlowers.json}``.

    Without the split file, each class is split 50/20/30 % into train/val/test (``imagelabels.mat`` gives the
    labels, CoOp's ``cat_to_name.json`` the names).
    """

    dataset_dir = "oxford_flowers"
    image_subdir = "jpg"

    def make_split(self) -> tuple[Split, Split, Split]:
        from scipy.io import loadmat

        label_file = self.require_for_split(os.path.join(self.dataset_dir, "imagelabels.mat"), "label file")
        names_file = self.require_for_split(os.path.join(self.dataset_dir, "cat_to_name.json"), "class-name file")
        with open_text(names_file) as f:
            lab2cname = json.load(f)
        # Classes in order of first appearance (the order of CoOp's random calls); labels in the file are 1-based.
        tracker: dict[int, list[str]] = defaultdict(list)
        for i, label in enumerate(loadmat(label_file)["labels"][0]):
            tracker[int(label)].append(os.path.join(self.image_dir, f"image_{i + 1:05d}.jpg"))
        groups = [(label - 1, lab2cname[str(label)], impaths) for label, impaths in tracker.items()]
        return split_per_class(groups, p_trn=0.5, p_val=0.2)
