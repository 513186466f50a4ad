"""Dassl dataset classes in CoOp's on-disk formats, plus the offline ``SyntheticShapes`` dataset and
``Folder``, a dataset of one's own images configured by yaml keys (``DATASET.FOLDER``).

Importing this package registers every dataset whose name is still free in Dassl's ``DATASET_REGISTRY`` (host
repositories register CoOp's classes first; theirs are then kept). Without Dassl installed nothing is
registered, and ``python -m datasets.prepare`` still works.
"""

import importlib.util

if importlib.util.find_spec("dassl") is not None:
    from . import (  # noqa: F401
        caltech101,
        cifar100,
        dtd,
        eurosat,
        fgvc_aircraft,
        folder,
        food101,
        imagenet,
        imagenet_a,
        imagenet_r,
        imagenet_sketch,
        imagenetv2,
        oxford_flowers,
        oxford_pets,
        stanford_cars,
        sun397,
        synthetic,
        ucf101,
    )
