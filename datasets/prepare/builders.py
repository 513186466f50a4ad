"""Datasets that are written rather than unpacked: CIFAR-100 from its pickled batches, the synthetic shapes.

Each builder is called as ``builder(folder, downloads, keep_archives)`` by a :class:`~.steps.Build` step.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tqdm import tqdm

from lamm_plugin.files import write_text

from ..safe_pickle import NUMPY_GLOBALS, restricted_load
from .archives import merge_move, unpack
from .download import Source, fetch_source

CIFAR100_SOURCE = Source(
    "cifar-100-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
)


def write_cifar100(folder: Path, downloads: Path, keep_archives: bool) -> None:
    """Download CIFAR-100 (python version) and write ``images/{train,test}/<class>/<index>.png``."""
    import numpy as np
    from PIL import Image

    archive = fetch_source(CIFAR100_SOURCE, downloads / CIFAR100_SOURCE.filename)
    tmp = folder / ".extract-cifar100"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        unpack(archive, tmp)
        src = tmp / "cifar-100-python"
        remedy = f"Delete {archive} and run the command again to download it anew."
        names = restricted_load(src / "meta", {}, remedy, encoding="latin1")["fine_label_names"]
        images_tmp = tmp / "images"
        for split in ("train", "test"):
            batch = restricted_load(src / split, NUMPY_GLOBALS, remedy, encoding="latin1")
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # [N,H,W,3]
            for name in names:
                (images_tmp / split / name).mkdir(parents=True, exist_ok=True)
            for i, (image, label) in enumerate(tqdm(zip(data, batch["fine_labels"]), total=len(data), desc=split)):
                Image.fromarray(image).save(images_tmp / split / names[label] / f"{i:05d}.png")
        lines = "".join(f"{name} {name.replace('_', ' ')}\n" for name in sorted(names))
        write_text(str(folder / "classnames_for_cifar100.txt"), lines)
        merge_move(images_tmp, folder / "images")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not keep_archives:
        archive.unlink()


def write_synthetic(folder: Path, downloads: Path, keep_archives: bool) -> None:
    from lamm_experiments.synthetic import write_image_folder

    write_image_folder(folder)
