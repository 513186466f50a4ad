"""Stanford Cars (Krause et al., 3dRR 2013) in CoOp's format: 196 car models."""

import os

from .base import Split, SplitFileDataset, make_datum, register_dataset, split_trainval


@register_dataset
class StanfordCars(SplitFileDataset):
    """``stanford_cars/{cars_train/, cars_test/, devkit/, cars_test_annos_withlabels.mat,
    split_zhou_StanfordCars.json}``; the split's paths are relative to the dataset folder.

    Class names put the year first ("2012 Tesla Model S Sedan"), as CoOp does.
    """

    dataset_dir = "stanford_cars"
    image_subdir = ""

    def make_split(self) -> tuple[Split, Split, Split]:
        meta = self.require_for_split(os.path.join(self.dataset_dir, "devkit", "cars_meta.mat"), "devkit file")
        train_annos = os.path.join(self.dataset_dir, "devkit", "cars_train_annos.mat")
        test_annos = os.path.join(self.dataset_dir, "cars_test_annos_withlabels.mat")
        trainval = self.read_annotations("cars_train", self.require_for_split(train_annos, "devkit file"), meta)
        test = self.read_annotations("cars_test", self.require_for_split(test_annos, "annotation file"), meta)
        train, val = split_trainval(trainval)
        return train, val, test

    def read_annotations(self, image_folder: str, anno_file: str, meta_file: str) -> Split:
        """Read a devkit ``.mat`` annotation file (needs scipy)."""
        from scipy.io import loadmat

        annotations = loadmat(anno_file)["annotations"][0]
        names = loadmat(meta_file)["class_names"][0]
        items = []
        for anno in annotations:
            label = int(anno["class"][0, 0]) - 1
            words = str(names[label][0]).split(" ")
            classname = " ".join(words[-1:] + words[:-1])  # "... Sedan 2012" -> "2012 ... Sedan"
            impath = os.path.join(self.dataset_dir, image_folder, str(anno["fname"][0]))
            items.append(make_datum(impath, label, classname, anno_file))
        return items
