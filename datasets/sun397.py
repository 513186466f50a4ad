"""SUN397 (Xiao et al., CVPR 2010) in CoOp's format: 397 scene categories."""

import os

from lamm_plugin.files import open_text

from .base import DatasetFormatError, Split, SplitFileDataset, make_datum, register_dataset, split_trainval


@register_dataset
class SUN397(SplitFileDataset):
    """``sun397/{SUN397/<letter>/<scene>[/<sub>]/*.jpg, split_zhou_SUN397.json}``.

    Without the split file, partition 01 (``ClassName.txt``, ``Training_01.txt``, ``Testing_01.txt`` from
    ``Partitions.zip``) is used and its training list split 80/20 into train/val. Class names drop the letter
    folder and put qualifiers first: ``/a/apartment_building/outdoor`` -> ``outdoor apartment_building``.
    """

    dataset_dir = "sun397"
    image_subdir = "SUN397"

    def make_split(self) -> tuple[Split, Split, Split]:
        path = self.require_for_split(os.path.join(self.dataset_dir, "ClassName.txt"), "class list")
        with open_text(path) as f:
            classes = [line.strip()[1:] for line in f if line.strip()]  # drop the leading "/"
        cname2lab = {c: i for i, c in enumerate(classes)}
        train, val = split_trainval(self.read_list(cname2lab, "Training_01.txt"))
        return train, val, self.read_list(cname2lab, "Testing_01.txt")

    def read_list(self, cname2lab: dict[str, int], filename: str) -> Split:
        """Parse lines ``/<letter>/<scene>/.../<image>.jpg``."""
        path = self.require_for_split(os.path.join(self.dataset_dir, filename), "partition file")
        items = []
        with open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                relpath = line.strip()[1:]
                folder = os.path.dirname(relpath)
                if folder not in cname2lab:
                    raise DatasetFormatError(f"{path}:{lineno}: class {folder!r} is not in ClassName.txt")
                classname = " ".join(folder.split("/")[1:][::-1])
                impath = os.path.join(self.image_dir, relpath)
                items.append(make_datum(impath, cname2lab[folder], classname, path))
        return items
