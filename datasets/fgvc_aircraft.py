"""FGVC-Aircraft 2013b (Maji et al., 2013) in CoOp's format: 100 aircraft variants.

There is no split file: the dataset's own ``images_variant_{train,val,test}.txt`` lists are the split.
"""

import os

from lamm_plugin.files import open_text

from .base import DatasetFormatError, FewShotDataset, Split, make_datum, register_dataset


@register_dataset
class FGVCAircraft(FewShotDataset):
    """``fgvc_aircraft/{images/*.jpg, variants.txt, images_variant_{train,val,test}.txt}``.

    This is the ``data/`` folder of ``fgvc-aircraft-2013b.tar.gz``; labels follow ``variants.txt``.
    """

    dataset_dir = "fgvc_aircraft"

    def read_data(self) -> tuple[Split, Split, Split]:
        self.image_dir = self.require(os.path.join(self.dataset_dir, "images"), "image folder")
        with open_text(self.require(os.path.join(self.dataset_dir, "variants.txt"), "class list")) as f:
            classnames = [line.strip() for line in f if line.strip()]
        cname2lab = {c: i for i, c in enumerate(classnames)}
        return tuple(self.read_list(cname2lab, f"images_variant_{s}.txt") for s in ("train", "val", "test"))

    def read_list(self, cname2lab: dict[str, int], filename: str) -> Split:
        """Parse lines ``<image id> <variant name with spaces>``."""
        path = self.require(os.path.join(self.dataset_dir, filename), "split list")
        items = []
        with open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                imname, _, classname = line.strip().partition(" ")
                if classname not in cname2lab:
                    raise DatasetFormatError(f"{path}:{lineno}: variant {classname!r} is not in variants.txt")
                impath = os.path.join(self.image_dir, imname + ".jpg")
                items.append(make_datum(impath, cname2lab[classname], classname, path))
        return items
