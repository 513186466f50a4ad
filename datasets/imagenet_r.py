"""ImageNet-R (Hendrycks et al., ICCV 2021): renditions (art, cartoons, ...) of 200 ImageNet classes."""

from .base import EvalOnlyDataset, register_dataset


@register_dataset
class ImageNetR(EvalOnlyDataset):
    """``imagenet-rendition/{imagenet-r/<wnid>/*.jpg, classnames.txt}``.

    Labels 0..199 follow the sorted folders (not ImageNet's indices); names come from ImageNet's
    ``classnames.txt``.
    """

    dataset_dir = "imagenet-rendition"
    image_subdir = "imagenet-r"
    ignored = ("README.txt",)
