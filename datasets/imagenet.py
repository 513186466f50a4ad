"""ImageNet-1k (Deng et al., CVPR 2009) in CoOp's format: 1000 classes, the validation set as test set.

Class names come from ``classnames.txt`` (CLIP's cleaned ImageNet names, ``<wnid> <name>`` per line). The
image listing is cached in ``preprocessed.pkl`` (CoOp's file), since listing 1.3 M files takes minutes; it is
read without executing code (:func:`~datasets.base.load_datum_pickle`), and its absolute image paths are moved
under the current dataset folder (:func:`~datasets.base.rebase_impaths`), so a copied folder reads its own images.
"""

import os
import pickle

from lamm_plugin.files import write_atomic

from .base import (
    FewShotDataset,
    Split,
    list_class_folders,
    load_datum_pickle,
    read_class_folders,
    read_classnames,
    rebase_impaths,
    register_dataset,
)


class ImageFolderDataset(FewShotDataset):
    """``<dataset_dir>/{images/<train_subdir>/<wnid>/*, images/<test_subdir>/<wnid>/*, <classnames_file>}``.

    Labels follow the sorted class folders; validation is the test set (``has_val = False``), as in CoOp.
    """

    has_val = False
    train_subdir = "train"
    test_subdir = "val"
    classnames_file = "classnames.txt"
    cache_file = "preprocessed.pkl"

    def read_data(self) -> tuple[Split, None, Split]:
        self.image_dir = self.require(os.path.join(self.dataset_dir, "images"), "image folder")
        cache = os.path.join(self.dataset_dir, self.cache_file)
        if os.path.exists(cache):
            data = load_datum_pickle(cache, ("train", "test"))
            return rebase_impaths(data["train"], self.dataset_dir), None, rebase_impaths(data["test"], self.dataset_dir)
        classnames = self.read_classnames()
        train, test = (self.read_folder(classnames, d) for d in (self.train_subdir, self.test_subdir))
        data = {"train": train, "test": test}
        write_atomic(cache, lambda f: pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL))
        return train, None, test

    def read_classnames(self) -> dict[str, str]:
        """Folder -> class name."""
        return read_classnames(self.require(os.path.join(self.dataset_dir, self.classnames_file), "class-name file"))

    def read_folder(self, classnames: dict[str, str], subdir: str) -> Split:
        folder = self.require(os.path.join(self.image_dir, subdir), f"{subdir} image folder")
        return read_class_folders(folder, list_class_folders(folder), classnames)


@register_dataset
class ImageNet(ImageFolderDataset):
    """``imagenet/{images/train/<wnid>/*.JPEG, images/val/<wnid>/*.JPEG, classnames.txt}``."""

    dataset_dir = "imagenet"
