"""CIFAR-100 (Krizhevsky, 2009) as an image-folder dataset, for few-shot and continual learning.

Dassl itself registers ``CIFAR100`` (a semi-supervised variant that reads another layout), so this class is
registered as ``MYCIFAR100``, the name and layout of the official LAMM code. ``python -m datasets.prepare
CIFAR100 --root DATA`` downloads the python version of CIFAR-100 and writes this layout::

    cifar100/
        images/train/<fine label name>/<index>.png      50,000 images, 500 per class
        images/test/<fine label name>/<index>.png       10,000 images, 100 per class
        classnames_for_cifar100.txt                     "<folder> <class name>" per line

The fine label names are alphabetical, so the sorted folders give CIFAR's own label indices. The test set
is also the validation set (``has_val = False``), and the image listing is cached in ``preprocessed.pkl``.
"""

import os

from .base import list_class_folders, register_dataset
from .imagenet import ImageFolderDataset


@register_dataset
class MYCIFAR100(ImageFolderDataset):
    """``cifar100/{images/train/<class>/, images/test/<class>/, classnames_for_cifar100.txt}``.

    The class-name file is optional: without it, folder names are the class names.
    """

    dataset_dir = "cifar100"
    test_subdir = "test"
    classnames_file = "classnames_for_cifar100.txt"

    def read_classnames(self) -> dict[str, str]:
        if os.path.exists(os.path.join(self.dataset_dir, self.classnames_file)):
            return super().read_classnames()
        train_dir = self.require(os.path.join(self.image_dir, self.train_subdir), "train image folder")
        return {f: f for f in list_class_folders(train_dir)}
