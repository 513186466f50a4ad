"""ImageNet-Sketch (Wang et al., NeurIPS 2019): sketches of the 1000 ImageNet classes, evaluation only."""

from .base import EvalOnlyDataset, register_dataset


@register_dataset
class ImageNetSketch(EvalOnlyDataset):
    """``imagenet-sketch/{images/<wnid>/*.JPEG, classnames.txt}``; labels follow the sorted folders."""

    dataset_dir = "imagenet-sketch"
    image_subdir = "images"
