"""Oxford-IIIT Pets (Parkhi et al., CVPR 2012) in CoOp's format: 37 cat and dog breeds."""

import os

from lamm_plugin.files import open_text

from .base import Split, SplitFileDataset, make_datum, register_dataset, split_trainval


@register_dataset
class OxfordPets(SplitFileDataset):
    """``oxford_pets/{images/*.jpg, annotations/, split_zhou_OxfordPets.json}``.

    Without the split file, ``annotations/trainval.txt`` is split 80/20 into train/val and
    ``annotations/test.txt`` is the test set.
    """

    dataset_dir = "oxford_pets"
    image_subdir = "images"

    def make_split(self) -> tuple[Split, Split, Split]:
        train, val = split_trainval(self.read_list("trainval.txt"))
        return train, val, self.read_list("test.txt")

    def read_list(self, filename: str) -> Split:
        """Parse ``annotations/<filename>``: lines ``<image> <class id> <species> <breed id>``."""
        path = self.require_for_split(os.path.join(self.dataset_dir, "annotations", filename), "annotation file")
        items = []
        with open_text(path) as f:
            for line in f:
                if not line.strip():
                    continue
                imname, label = line.split()[:2]
                # "great_pyrenees_17" -> "great_pyrenees"; CoOp lower-cases the capitalised cat breeds.
                breed = imname.rsplit("_", 1)[0].lower()
                impath = os.path.join(self.image_dir, imname + ".jpg")
                items.append(make_datum(impath, int(label) - 1, breed, path))
        return items
