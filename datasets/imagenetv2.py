"""ImageNetV2 matched-frequency (Recht et al., ICML 2019): an ImageNet test set, evaluation only."""

from collections.abc import Mapping

from .base import EvalOnlyDataset, Split, read_class_folders, register_dataset


@register_dataset
class ImageNetV2(EvalOnlyDataset):
    """``imagenetv2/{imagenetv2-matched-frequency-format-val/<label index>/*.jpeg, classnames.txt}``.

    Folders are named by label index (0..999); label ``i`` is the ``i``-th line of ImageNet's ``classnames.txt``.
    """

    dataset_dir = "imagenetv2"
    image_subdir = "imagenetv2-matched-frequency-format-val"

    def read_data(self, classnames: Mapping[str, str]) -> Split:
        folders = [str(i) for i in range(len(classnames))]
        return read_class_folders(self.image_dir, folders, dict(zip(folders, classnames.values())))
