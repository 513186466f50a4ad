"""The real class lists of the 16 benchmark datasets through the methods, and through our dataset classes.

``tests/fixtures/classnames/<dataset>.txt`` holds each dataset's class names in label order, exactly as our
dataset classes produce them from the real data (sources in that folder's README). Every list must build a
model, train one step and evaluate with one label row per class: every list with one method (CoOp with the class
name in the middle, whose prompts depend most on the names' token counts), and every method case of
``tests/cases.py`` with the hardest list, ImageNet's (the most classes, two duplicated names, "missile" and
"sunglasses", and names whose tokenisation is awkward, "kite (bird of prey)").

The second part rebuilds the raw inputs of the datasets whose names are transformed (CoOp's renames, SUN397's
qualifier reordering, UCF101's CamelCase split, sorted folders) in a miniature tree and checks that our
dataset classes produce the fixture lists from them.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import pytest
import torch
from cases import BY_ID, CASES
from PIL import Image

from lamm_plugin import LAMMConfig

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "classnames"

COUNTS = {
    "imagenet": 1000,
    "caltech101": 100,
    "oxford_pets": 37,
    "stanford_cars": 196,
    "oxford_flowers": 102,
    "food101": 101,
    "fgvc_aircraft": 100,
    "sun397": 397,
    "dtd": 47,
    "eurosat": 10,
    "ucf101": 101,
    "imagenetv2": 1000,
    "imagenet_sketch": 1000,
    "imagenet_a": 200,
    "imagenet_r": 200,
    "cifar100": 100,
}
# ImageNetV2 and ImageNet-Sketch serve ImageNet's classes in ImageNet's order: their lists equal ImageNet's
# and are exercised through it.
SAME_AS_IMAGENET = ("imagenetv2", "imagenet_sketch")
MODEL_LISTS = [name for name in COUNTS if name not in SAME_AS_IMAGENET]

EVERY_LIST_CASE = "coop-middle"
HARDEST_LIST = "imagenet"
# ImageNet's 1000 classes take seconds per method: those builds belong to the end-to-end tier.
LIST_CASES = [
    pytest.param(name, case, marks=[pytest.mark.e2e] if name == HARDEST_LIST else [])
    for name, case in [(name, EVERY_LIST_CASE) for name in MODEL_LISTS]
    + [(HARDEST_LIST, case.id) for case in CASES if case.id != EVERY_LIST_CASE]
]


def read_list(name: str) -> list[str]:
    return (FIXTURES / f"{name}.txt").read_text(encoding="utf-8").splitlines()


# ------------------------------------------------------------------------------------------------ the lists


@pytest.mark.parametrize("name", list(COUNTS))
def test_fixture_list_has_the_dataset_class_count(name):
    names = read_list(name)
    assert len(names) == COUNTS[name]
    assert all(n and n == n.strip() for n in names)


def test_imagenet_lists_share_one_class_list_with_two_duplicate_names():
    imagenet = read_list("imagenet")
    for name in SAME_AS_IMAGENET:
        assert read_list(name) == imagenet
    assert sorted(n for n in set(imagenet) if imagenet.count(n) > 1) == ["missile", "sunglasses"]
    # The 200-class subsets keep ImageNet's order (their wnid folders sort like ImageNet's).
    for subset in ("imagenet_a", "imagenet_r"):
        names = read_list(subset)
        positions = [imagenet.index(n) for n in names]
        assert positions == sorted(positions) and len(set(names)) == 200


# ------------------------------------------------------------------------------------------------ every method


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 32, 32, generator=g)


@pytest.mark.parametrize(("name", "case"), LIST_CASES)
def test_real_class_list_trains_and_evaluates(_tiny_vit, batch, name, case):
    classnames = read_list(name)
    n = len(classnames)
    torch.manual_seed(0)
    # The session's CLIP is shared rather than copied: building and training a model leaves it untouched.
    model = BY_ID[case].build(_tiny_vit, classnames, LAMMConfig())
    # One label row per class, duplicated names included.
    assert len(model.label_embedding.classnames) == n

    labels = torch.tensor([0, n // 3, 2 * n // 3, n - 1])
    model.train()
    params = model.trainable_parameters()
    optim = torch.optim.SGD(params, lr=0.1)
    out = model(batch, labels)
    assert out.logits.shape == (4, n)
    assert torch.isfinite(out.losses["total"])
    out.losses["total"].backward()
    optim.step()
    assert all(torch.isfinite(p).all() for p in params)

    logits = model.eval()(batch).logits
    assert logits.shape == (4, n)
    assert torch.isfinite(logits).all()


# ------------------------------------------------------------------------------------------------ dataset classes


@functools.cache
def _tiny_image() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    return buffer.getvalue()


def touch(path: Path) -> None:
    """A 1x1 image: the dataset classes read the folders and open every image's header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_tiny_image())


def build(root: Path, name: str):
    """Build dataset ``name`` from ``root`` with Dassl, as the trainer does."""
    pytest.importorskip("dassl", reason="Dassl is not installed (pip install from its GitHub repository)")
    from dassl.config import get_cfg_default
    from dassl.data.datasets import build_dataset
    from dassl.utils import set_random_seed

    import datasets  # noqa: F401  (registers the datasets)

    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = -1
    cfg.SEED = 1
    set_random_seed(cfg.SEED)
    return build_dataset(cfg)


def class_folders(image_dir: Path, folders, n: int = 5) -> None:
    for folder in folders:
        for i in range(n):
            touch(image_dir / folder / f"{i}.jpg")


def test_caltech101_folders_give_the_list(tmp_path):
    pytest.importorskip("dassl", reason="Dassl is not installed (pip install from its GitHub repository)")
    from datasets.caltech101 import IGNORED, NEW_CNAMES

    expected = read_list("caltech101")
    original = {new: old for old, new in NEW_CNAMES.items()}
    folders = [original.get(n, n) for n in expected] + list(IGNORED)
    class_folders(tmp_path / "caltech-101" / "101_ObjectCategories", folders)
    assert build(tmp_path, "Caltech101").classnames == expected


def test_eurosat_folders_give_the_list(tmp_path):
    pytest.importorskip("dassl", reason="Dassl is not installed (pip install from its GitHub repository)")
    from datasets.eurosat import NEW_CNAMES

    expected = read_list("eurosat")
    folders = {new: old for old, new in NEW_CNAMES.items()}
    class_folders(tmp_path / "eurosat" / "2750", [folders[n] for n in expected])
    assert build(tmp_path, "EuroSAT").classnames == expected


@pytest.mark.parametrize(
    ("name", "dataset", "folder"), [("food101", "Food101", "food-101"), ("dtd", "DescribableTextures", "dtd")]
)
def test_sorted_class_folders_give_the_list(tmp_path, name, dataset, folder):
    expected = read_list(name)
    class_folders(tmp_path / folder / "images", reversed(expected))
    assert build(tmp_path, dataset).classnames == expected


def test_sun397_class_list_gives_the_list(tmp_path):
    expected = read_list("sun397")
    # "outdoor apartment_building" comes from "/a/apartment_building/outdoor".
    classes = ["/" + "/".join([n.split(" ")[-1][0], *n.split(" ")[::-1]]) for n in expected]
    assert classes == sorted(classes)  # ClassName.txt is sorted
    folder = tmp_path / "sun397"
    folder.mkdir()
    (folder / "ClassName.txt").write_text("".join(c + "\n" for c in classes))
    for split, n in (("Training_01.txt", 3), ("Testing_01.txt", 1)):
        rows = [f"{c}/sun_{split[:4]}{i}.jpg" for c in classes for i in range(n)]
        for row in rows:
            touch(folder / "SUN397" / row[1:])
        (folder / split).write_text("".join(r + "\n" for r in rows))
    assert build(tmp_path, "SUN397").classnames == expected


def test_ucf101_class_index_gives_the_list(tmp_path):
    expected = read_list("ucf101")
    actions = [n.replace("_", "") for n in expected]  # classInd.txt's CamelCase names
    folder = tmp_path / "ucf101"
    lists = folder / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {a}\n" for i, a in enumerate(actions)))
    for split, n in (("trainlist01.txt", 3), ("testlist01.txt", 1)):
        rows = []
        for label, (action, cname) in enumerate(zip(actions, expected)):
            for i in range(n):
                video = f"v_{action}_g{i + 1:02d}_c01"
                touch(folder / "UCF-101-midframes" / cname / f"{video}.jpg")
                rows.append(f"{action}/{video}.avi" + (f" {label + 1}" if split.startswith("train") else ""))
        (lists / split).write_text("".join(r + "\n" for r in rows))
    assert build(tmp_path, "UCF101").classnames == expected


def test_cifar100_prepared_folders_give_the_list(tmp_path):
    expected = read_list("cifar100")
    folders = [n.replace(" ", "_") for n in expected]  # CIFAR's fine label names
    root = tmp_path / "cifar100"
    for split in ("train", "test"):
        class_folders(root / "images" / split, folders, n=1)
    # The class-name file as ``python -m datasets.prepare CIFAR100`` writes it.
    (root / "classnames_for_cifar100.txt").write_text("".join(f"{f} {f.replace('_', ' ')}\n" for f in sorted(folders)))
    assert build(tmp_path, "MYCIFAR100").classnames == expected
