"""ImageNet-A (Hendrycks et al., CVPR 2021): natural adversarial examples of 200 ImageNet classes."""

from .base import EvalOnlyDataset, register_dataset


@register_dataset
class ImageNetA(EvalOnlyDataset):
    """``imagenet-adversarial/{imagenet-a/<wnid>/*.jpg, classnames.txt}``.

    Labels 0..199 follow the sorted folders (not ImageNet's indices); names come from ImageNet's
    ``classnames.txt``.
    """

    dataset_dir = "imagenet-adversarial"
    image_subdir = "imagenet-a"
    ignored = ("README.txt",)
