"""Dassl dataset classes: CoOp's layouts, class names and order, few-shot sampling and caches, base/new, errors.

Every test builds a miniature copy of a dataset's folder in ``tmp_path``, in the exact layout (and file formats)
of the real one, and builds the dataset through Dassl's ``build_dataset`` after seeding the global RNGs with
``set_random_seed`` as CoOp's ``train.py`` does.
"""

import json
import os
import pickle
import random
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dassl", reason="Dassl is not installed (pip install from its GitHub repository)")

from dassl.config import get_cfg_default  # noqa: E402
from dassl.data.datasets import DATASET_REGISTRY, Datum, build_dataset  # noqa: E402
from dassl.utils import set_random_seed  # noqa: E402
from PIL import Image  # noqa: E402

import datasets  # noqa: E402, F401  (registers the datasets)
from datasets import prepare  # noqa: E402
from datasets.base import (  # noqa: E402
    DatasetFormatError,
    DatasetNotPreparedError,
    SplitFileDataset,
    register_dataset,
    subsample_classes,
)
from datasets.safe_pickle import PickleLoadError, UnsafePickleError  # noqa: E402
from datasets.synthetic import add_synthetic_config  # noqa: E402

pytestmark = pytest.mark.dassl

REPO = Path(__file__).resolve().parents[1]
ALL_NAMES = [
    "ImageNet",
    "Caltech101",
    "OxfordPets",
    "StanfordCars",
    "OxfordFlowers",
    "Food101",
    "FGVCAircraft",
    "SUN397",
    "DescribableTextures",
    "EuroSAT",
    "UCF101",
    "ImageNetV2",
    "ImageNetSketch",
    "ImageNetA",
    "ImageNetR",
    "MYCIFAR100",
    "SyntheticShapes",
    "Folder",
]


# ------------------------------------------------------------------------------------------------ helpers


def touch_image(path: Path) -> Path:
    """A real (tiny) image file; the dataset classes only need it to exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (len(path.name) * 7 % 256, 0, 0)).save(path, format="PNG")
    return path


def make_cfg(root, name, shots=-1, seed=1, subsample=None):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = shots
    cfg.SEED = seed
    if subsample is not None:  # CoOp's train.py adds this key; Dassl's defaults do not have it
        cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    return cfg


def build(root, name, shots=-1, seed=1, subsample=None, cfg=None):
    """Seed the global RNGs (as the trainer does), then build the dataset."""
    cfg = cfg or make_cfg(root, name, shots, seed, subsample)
    set_random_seed(cfg.SEED)
    return build_dataset(cfg)


def per_class(items):
    return Counter(d.label for d in items)


def paths(items):
    return [d.impath for d in items]


def coop_fewshot(items, num_shots):
    """CoOp's sampling, written out: per class in order of first appearance, ``random.sample`` if enough items."""
    tracker = defaultdict(list)
    for d in items:
        tracker[d.label].append(d)
    out = []
    for group in tracker.values():
        out.extend(random.sample(group, num_shots) if len(group) >= num_shots else group)
    return out


# (name, dataset folder, image subfolder the split paths start from, split-file name)
SPLIT_DATASETS = [
    ("Caltech101", "caltech-101", "101_ObjectCategories"),
    ("OxfordPets", "oxford_pets", "images"),
    ("StanfordCars", "stanford_cars", ""),
    ("OxfordFlowers", "oxford_flowers", "jpg"),
    ("Food101", "food-101", "images"),
    ("SUN397", "sun397", "SUN397"),
    ("DescribableTextures", "dtd", "images"),
    ("EuroSAT", "eurosat", "2750"),
    ("UCF101", "ucf101", "UCF-101-midframes"),
]


def write_split_dataset(root, name, folder, image_subdir, classnames, n_train=10, n_val=6, n_test=3, shuffle=True):
    """A dataset folder with a CoOp split file listing ``n_*`` images per class (interleaved across classes)."""
    image_dir = Path(root, folder, image_subdir)
    split = {}
    for split_name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        entries = []
        for label, cname in enumerate(classnames):
            for i in range(n):
                rel = f"c{label}/{split_name}_{i}.jpg"
                touch_image(image_dir / rel)
                entries.append([rel, label, cname])
        if shuffle:
            random.Random(len(entries)).shuffle(entries)  # real split files are not class-major
        split[split_name] = entries
    (image_dir.parent if image_subdir else image_dir).mkdir(parents=True, exist_ok=True)
    Path(root, folder, f"split_zhou_{name}.json").write_text(json.dumps(split))
    return split


FIVE = ["alpha", "beta", "gamma", "delta", "epsilon"]


# ------------------------------------------------------------------------------------------------ registry and files


def test_every_dataset_is_registered():
    registered = set(DATASET_REGISTRY.registered_names())
    assert set(ALL_NAMES) <= registered
    # Dassl's own semi-supervised CIFAR100 keeps its name; ours is registered under the official LAMM name.
    assert DATASET_REGISTRY.get("CIFAR100").__module__.startswith("dassl.")


def test_register_dataset_keeps_a_name_that_is_taken():
    class LammTestDataset:  # stands in for a host repository's class with the same name
        pass

    first = LammTestDataset
    DATASET_REGISTRY.register(first)
    try:
        second = type("LammTestDataset", (), {})
        assert register_dataset(second) is second  # no KeyError from Dassl's registry
        assert DATASET_REGISTRY.get("LammTestDataset") is first
    finally:
        DATASET_REGISTRY._obj_map.pop("LammTestDataset")
    third = type("LammTestDataset", (), {})
    try:
        register_dataset(third)
        assert DATASET_REGISTRY.get("LammTestDataset") is third
    finally:
        DATASET_REGISTRY._obj_map.pop("LammTestDataset")


def test_config_files_name_registered_datasets_and_match_prepare_recipes():
    import yaml

    files = sorted((REPO / "configs" / "datasets").glob("*.yaml"))
    names = {}
    for f in files:
        cfg = yaml.safe_load(f.read_text())
        assert set(cfg) == {"DATASET"}, f  # dataset configs only name the dataset
        names[f.stem] = cfg["DATASET"]["NAME"]
    assert sorted(names.values()) == sorted(ALL_NAMES)
    for recipe in prepare.RECIPES_LIST:
        assert names[recipe.config] == recipe.name
        # The prepare command lays out exactly the folder the dataset class reads.
        assert DATASET_REGISTRY.get(recipe.name).dataset_dir == recipe.folder


# ------------------------------------------------------------------------------------------------ split-file datasets


@pytest.mark.parametrize(("name", "folder", "image_subdir"), SPLIT_DATASETS)
def test_split_file_datasets_read_classes_fewshot_and_halves(tmp_path, name, folder, image_subdir):
    write_split_dataset(tmp_path, name, folder, image_subdir, FIVE)

    full = build(tmp_path, name)
    assert full.num_classes == 5
    assert full.classnames == FIVE
    assert (len(full.train_x), len(full.val), len(full.test)) == (50, 30, 15)
    assert all(Path(d.impath).is_file() for d in full.train_x)

    few = build(tmp_path, name, shots=4, seed=1)
    assert per_class(few.train_x) == {y: 4 for y in range(5)}
    assert per_class(few.val) == {y: 4 for y in range(5)}  # min(K, 4)
    assert len(few.test) == 15  # the test set is never subsampled
    assert (tmp_path / folder / "split_fewshot" / "shot_4-seed_1.pkl").is_file()

    base = build(tmp_path, name, shots=4, seed=1, subsample="base")
    new = build(tmp_path, name, shots=4, seed=1, subsample="new")
    assert base.classnames == FIVE[:3] and new.classnames == FIVE[3:]  # ceil(5 / 2) = 3 base classes
    assert sorted(per_class(new.test)) == [0, 1]  # relabelled from 0
    assert [d.impath for d in base.train_x] == [d.impath for d in few.train_x if d.label < 3]


def test_fewshot_subsets_follow_coop_sampling_and_seed(tmp_path):
    split = write_split_dataset(tmp_path, "OxfordPets", "oxford_pets", "images", FIVE, n_train=12, n_val=7)
    image_dir = tmp_path / "oxford_pets" / "images"

    def datums(entries):
        return [Datum(impath=str(image_dir / r), label=y, classname=c) for r, y, c in entries]

    for seed in (1, 2):
        set_random_seed(seed)
        expected_train = coop_fewshot(datums(split["train"]), 8)
        expected_val = coop_fewshot(datums(split["val"]), 4)
        data = build(tmp_path, "OxfordPets", shots=8, seed=seed)
        assert paths(data.train_x) == paths(expected_train)
        assert paths(data.val) == paths(expected_val)

    one, two = (build(tmp_path, "OxfordPets", shots=8, seed=s) for s in (1, 2))
    assert paths(one.train_x) != paths(two.train_x)
    # 2 shots with 7 validation images: min(2, 4) = 2 per class.
    assert per_class(build(tmp_path, "OxfordPets", shots=2, seed=3).val) == {y: 2 for y in range(5)}


def test_fewshot_cache_is_reused_and_written_in_coop_format(tmp_path):
    write_split_dataset(tmp_path, "DescribableTextures", "dtd", "images", FIVE)
    first = build(tmp_path, "DescribableTextures", shots=2, seed=5)
    cache = tmp_path / "dtd" / "split_fewshot" / "shot_2-seed_5.pkl"
    with open(cache, "rb") as f:
        data = pickle.load(f)
    assert set(data) == {"train", "val"}
    assert all(type(d) is Datum for d in data["train"] + data["val"])
    assert paths(data["train"]) == paths(first.train_x)

    # A cache written elsewhere (e.g. by CoOp) is read as it is: same seed, whatever the RNG state.
    chosen = [d for d in data["train"] if d.label != 0]
    with open(cache, "wb") as f:
        pickle.dump({"train": chosen, "val": data["val"]}, f)
    again = build(tmp_path, "DescribableTextures", shots=2, seed=5)
    assert paths(again.train_x) == paths(chosen)


class RunsCode:
    """Unpickling this object calls ``call(*args)`` (what a malicious pickle does)."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def malicious_payloads(marker):
    """Objects whose unpickling would create ``marker``: through a shell, and through ``open``."""
    return {
        "os.system": RunsCode(os.system, f"touch {marker}"),
        "builtins.open": RunsCode(open, str(marker), "w"),
    }


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_fewshot_cache_written_like_coop_round_trips(tmp_path, protocol):
    write_split_dataset(tmp_path, "OxfordPets", "oxford_pets", "images", FIVE)
    full = build(tmp_path, "OxfordPets")
    # What CoOp's code writes: Dassl's Datum objects in a dict of lists, pickled with the highest protocol.
    data = {"train": full.train_x[::7], "val": full.val[::5]}
    cache = tmp_path / "oxford_pets" / "split_fewshot" / "shot_3-seed_2.pkl"
    cache.parent.mkdir()
    with open(cache, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    few = build(tmp_path, "OxfordPets", shots=3, seed=2)
    for got, want in ((few.train_x, data["train"]), (few.val, data["val"])):
        assert [(d.impath, d.label, d.classname, d.domain) for d in got] == [
            (d.impath, d.label, d.classname, d.domain) for d in want
        ]


@pytest.mark.parametrize("payload", ["os.system", "builtins.open"])
def test_fewshot_cache_that_runs_code_is_refused_before_running(tmp_path, payload):
    write_split_dataset(tmp_path, "DescribableTextures", "dtd", "images", FIVE)
    first = build(tmp_path, "DescribableTextures", shots=2, seed=1)
    cache = tmp_path / "dtd" / "split_fewshot" / "shot_2-seed_1.pkl"
    marker = tmp_path / "code-ran"
    with open(cache, "wb") as f:
        evil = malicious_payloads(marker)[payload]
        pickle.dump({"train": [*first.train_x, evil], "val": first.val}, f, protocol=pickle.HIGHEST_PROTOCOL)

    with pytest.raises(UnsafePickleError) as e:
        build(tmp_path, "DescribableTextures", shots=2, seed=1)
    assert not marker.exists()
    msg = str(e.value)
    assert str(cache) in msg and payload.split(".")[1] in msg
    assert "delete it to regenerate it" in msg

    cache.unlink()  # what the message says to do
    assert paths(build(tmp_path, "DescribableTextures", shots=2, seed=1).train_x) == paths(first.train_x)


def test_imagenet_listing_that_runs_code_is_refused_before_running(tmp_path):
    folder = tmp_path / "imagenet"
    write_classnames(folder / "classnames.txt")
    write_class_tree(folder / "images" / "train", WNIDS, 2)
    write_class_tree(folder / "images" / "val", WNIDS, 1)
    build(tmp_path, "ImageNet")
    marker = tmp_path / "code-ran"
    with open(folder / "preprocessed.pkl", "wb") as f:
        pickle.dump({"train": [malicious_payloads(marker)["os.system"]], "test": []}, f)
    with pytest.raises(UnsafePickleError, match="preprocessed.pkl"):
        build(tmp_path, "ImageNet")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "error", "pattern"),
    [
        (b"\x80\x05\x95", PickleLoadError, "not a readable pickle"),  # truncated
        (pickle.dumps(["train"]), DatasetFormatError, "must hold a dict with keys"),
        (pickle.dumps({"train": [("a.jpg", 0, "x")], "val": []}), DatasetFormatError, "list of Dassl Datum"),
        (pickle.dumps({"train": []}), DatasetFormatError, r"keys \['train', 'val'\], found \['train'\]"),
    ],
    ids=["truncated", "not-a-dict", "tuples", "no-val"],
)
def test_malformed_fewshot_cache_names_the_file(tmp_path, content, error, pattern):
    write_split_dataset(tmp_path, "DescribableTextures", "dtd", "images", FIVE)
    cache = tmp_path / "dtd" / "split_fewshot" / "shot_2-seed_1.pkl"
    cache.parent.mkdir()
    cache.write_bytes(content)
    with pytest.raises(error, match=pattern) as e:
        build(tmp_path, "DescribableTextures", shots=2, seed=1)
    assert str(cache) in str(e.value) and "delete it to regenerate it" in str(e.value)


def test_fewshot_uses_every_image_of_a_class_with_fewer_than_k(tmp_path):
    write_split_dataset(tmp_path, "OxfordPets", "oxford_pets", "images", FIVE, n_train=3, n_val=2)
    few = build(tmp_path, "OxfordPets", shots=16, seed=1)
    assert per_class(few.train_x) == {y: 3 for y in range(5)}  # CoOp: all it has, no repeats
    assert per_class(few.val) == {y: 2 for y in range(5)}
    assert len(set(paths(few.train_x))) == 15


def test_subsample_classes_odd_and_even_counts():
    root = Path(__file__)  # any existing file: Datum only checks that the path exists

    def items(labels):
        return [Datum(impath=str(root), label=y, classname=f"c{y}") for y in labels]

    base, test = subsample_classes(items([0, 1, 2, 3, 4, 5, 6]), items([6, 5, 0]), subsample="base")
    assert sorted({d.label for d in base}) == [0, 1, 2, 3]
    assert [(d.label, d.classname) for d in test] == [(0, "c0")]
    (new,) = subsample_classes(items([0, 1, 2, 3]), subsample="new")
    assert [(d.label, d.classname) for d in new] == [(0, "c2"), (1, "c3")]
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES"):
        subsample_classes(items([0]), subsample="novel")


# ------------------------------------------------------------------------------------------------ raw annotations


def test_caltech101_without_split_file_ignores_and_renames_like_coop(tmp_path):
    image_dir = tmp_path / "caltech-101" / "101_ObjectCategories"
    folders = ["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "Motorbikes", "accordion", "airplanes"]
    for folder in folders:
        for i in range(6):
            touch_image(image_dir / folder / f"image_{i:04d}.jpg")

    data = build(tmp_path, "Caltech101")
    # Python's sort puts capitals first; two folders are dropped, four renamed.
    assert data.classnames == ["face", "leopard", "motorbike", "accordion", "airplane"]
    # 6 images per class: round(3) train, round(1.2) val, the rest test.
    assert per_class(data.train_x) == {y: 3 for y in range(5)}
    assert per_class(data.val) == {y: 1 for y in range(5)}
    assert per_class(data.test) == {y: 2 for y in range(5)}
    split_path = tmp_path / "caltech-101" / "split_zhou_Caltech101.json"
    saved = json.loads(split_path.read_text())
    assert saved["train"][0][0].count("/") == 1  # paths relative to 101_ObjectCategories
    assert paths(build(tmp_path, "Caltech101").test) == paths(data.test)  # read back from the new split file


def test_eurosat_without_split_file_uses_coop_names(tmp_path):
    for folder in ("AnnualCrop", "SeaLake", "Highway"):
        for i in range(5):
            touch_image(tmp_path / "eurosat" / "2750" / folder / f"{folder}_{i}.jpg")
    data = build(tmp_path, "EuroSAT")
    assert data.classnames == ["Annual Crop Land", "Highway or Road", "Sea or Lake"]


def test_split_creation_consumes_the_rng_like_coop(tmp_path):
    """Without a split file, the random calls (hence the few-shot subsets after them) match CoOp's."""
    image_dir = tmp_path / "dtd" / "images"
    counts = {"banded": 9, "dotted": 7, "zigzagged": 8}
    for folder, n in counts.items():
        for i in range(n):
            touch_image(image_dir / folder / f"{folder}_{i}.jpg")
    set_random_seed(3)
    for folder in sorted(counts):
        random.shuffle(list(os.listdir(image_dir / folder)))  # CoOp shuffles each class's list once
    expected_state = random.getstate()
    data = build(tmp_path, "DescribableTextures", seed=3)
    assert random.getstate() == expected_state
    assert data.classnames == sorted(counts)


def test_oxford_pets_from_annotations(tmp_path):
    folder = tmp_path / "oxford_pets"
    lines = {"trainval.txt": [], "test.txt": []}
    for breed, label in (("Abyssinian", 1), ("american_bulldog", 2), ("great_pyrenees", 3)):
        for i in range(1, 8):
            touch_image(folder / "images" / f"{breed}_{i}.jpg")
            lines["trainval.txt" if i <= 5 else "test.txt"].append(f"{breed}_{i} {label} 1 {label}")
    for name, rows in lines.items():
        (folder / "annotations").mkdir(exist_ok=True)
        (folder / "annotations" / name).write_text("\n".join(rows) + "\n")

    data = build(tmp_path, "OxfordPets")
    assert data.classnames == ["abyssinian", "american_bulldog", "great_pyrenees"]
    assert per_class(data.val) == {0: 1, 1: 1, 2: 1}  # round(5 * 0.2)
    assert per_class(data.train_x) == {0: 4, 1: 4, 2: 4}
    assert per_class(data.test) == {0: 2, 1: 2, 2: 2}
    assert (folder / "split_zhou_OxfordPets.json").is_file()


def test_stanford_cars_from_devkit_puts_the_year_first(tmp_path):
    from scipy.io import savemat

    folder = tmp_path / "stanford_cars"
    names = np.zeros((1, 2), dtype=object)
    names[0, 0], names[0, 1] = "AM General Hummer SUV 2000", "Tesla Model S Sedan 2012"

    def annotations(prefix, n):
        annos = np.zeros((1, 2 * n), dtype=[("fname", "O"), ("class", "O")])
        for i in range(2 * n):
            fname = f"{prefix}{i:05d}.jpg"
            touch_image(folder / ("cars_train" if prefix == "tr" else "cars_test") / fname)
            annos[0, i] = (fname, np.array([[i % 2 + 1]], dtype=np.uint8))
        return annos

    (folder / "devkit").mkdir(parents=True)
    savemat(folder / "devkit" / "cars_meta.mat", {"class_names": names})
    savemat(folder / "devkit" / "cars_train_annos.mat", {"annotations": annotations("tr", 5)})
    savemat(folder / "cars_test_annos_withlabels.mat", {"annotations": annotations("te", 2)})

    data = build(tmp_path, "StanfordCars")
    assert data.classnames == ["2000 AM General Hummer SUV", "2012 Tesla Model S Sedan"]
    assert len(data.test) == 4 and per_class(data.val) == {0: 1, 1: 1}
    saved = json.loads((folder / "split_zhou_StanfordCars.json").read_text())
    assert saved["test"][0][0].startswith("cars_test/")  # relative to the dataset folder


def test_oxford_flowers_from_label_file(tmp_path):
    from scipy.io import savemat

    folder = tmp_path / "oxford_flowers"
    labels = [2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1]  # 1-based, interleaved
    for i in range(len(labels)):
        touch_image(folder / "jpg" / f"image_{i + 1:05d}.jpg")
    savemat(folder / "imagelabels.mat", {"labels": np.array([labels])})
    (folder / "cat_to_name.json").write_text(json.dumps({"1": "pink primrose", "2": "hard-leaved pocket orchid"}))

    data = build(tmp_path, "OxfordFlowers")
    assert data.classnames == ["pink primrose", "hard-leaved pocket orchid"]
    assert per_class(data.train_x) == {0: 3, 1: 3} and per_class(data.test) == {0: 2, 1: 2}


def test_fgvc_aircraft_uses_its_own_lists(tmp_path):
    folder = tmp_path / "fgvc_aircraft"
    variants = ["707-320", "F/A-18", "Cessna 172"]
    (folder / "images").mkdir(parents=True)
    (folder / "variants.txt").write_text("\n".join(variants) + "\n")
    for split, n in (("train", 6), ("val", 5), ("test", 2)):
        rows = []
        for label, variant in enumerate(variants):
            for i in range(n):
                image_id = f"{split}{label}{i:03d}"
                touch_image(folder / "images" / f"{image_id}.jpg")
                rows.append(f"{image_id} {variant}")
        (folder / f"images_variant_{split}.txt").write_text("\n".join(rows) + "\n")

    data = build(tmp_path, "FGVCAircraft", shots=4, seed=2)
    assert data.classnames == variants  # the order of variants.txt, names with spaces and slashes intact
    assert per_class(data.train_x) == {0: 4, 1: 4, 2: 4} and per_class(data.val) == {0: 4, 1: 4, 2: 4}
    assert len(data.test) == 6


def test_sun397_from_partitions(tmp_path):
    folder = tmp_path / "sun397"
    classes = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop"]
    (folder).mkdir()
    (folder / "ClassName.txt").write_text("\n".join(classes) + "\n")
    for split, n in (("Training_01.txt", 5), ("Testing_01.txt", 2)):
        rows = []
        for c in classes:
            for i in range(n):
                rel = f"{c}/sun_{split[:4]}{i}.jpg"
                touch_image(folder / "SUN397" / rel[1:])
                rows.append(rel)
        (folder / split).write_text("\n".join(rows) + "\n")

    data = build(tmp_path, "SUN397")
    assert data.classnames == ["abbey", "outdoor apartment_building", "shop bakery"]
    assert len(data.test) == 6 and per_class(data.val) == {0: 1, 1: 1, 2: 1}


def test_ucf101_from_lists(tmp_path):
    folder = tmp_path / "ucf101"
    (folder / "ucfTrainTestlist").mkdir(parents=True)
    (folder / "ucfTrainTestlist" / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 YoYo\n")
    for split, n in (("trainlist01.txt", 5), ("testlist01.txt", 2)):
        rows = []
        for label, (action, renamed) in enumerate((("ApplyEyeMakeup", "Apply_Eye_Makeup"), ("YoYo", "Yo_Yo"))):
            for i in range(n):
                video = f"v_{action}_g{i:02d}_c01"
                touch_image(folder / "UCF-101-midframes" / renamed / f"{video}.jpg")
                rows.append(f"{action}/{video}.avi" + (f" {label + 1}" if split.startswith("train") else ""))
        (folder / "ucfTrainTestlist" / split).write_text("\n".join(rows) + "\n")
    data = build(tmp_path, "UCF101")
    assert data.classnames == ["Apply_Eye_Makeup", "Yo_Yo"]
    assert len(data.test) == 4


# ------------------------------------------------------------------------------------------------ ImageNet family

WNIDS = {
    "n01443537": "goldfish",
    "n01440764": "tench",
    "n02102040": "English Springer Spaniel",
    "n01484850": "great white shark",
}


def write_classnames(path: Path, wnids=WNIDS):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{w} {n}\n" for w, n in wnids.items()))  # file order is not sorted order


def write_class_tree(image_dir: Path, folders, n):
    for folder in folders:
        for i in range(n):
            touch_image(image_dir / folder / f"{folder}_{i}.JPEG")


def test_imagenet_labels_follow_sorted_folders_and_val_is_test(tmp_path):
    folder = tmp_path / "imagenet"
    write_classnames(folder / "classnames.txt")
    write_class_tree(folder / "images" / "train", WNIDS, 6)
    write_class_tree(folder / "images" / "val", WNIDS, 2)

    data = build(tmp_path, "ImageNet", shots=3, seed=1)
    assert data.classnames == ["tench", "goldfish", "great white shark", "English Springer Spaniel"]
    assert per_class(data.train_x) == {y: 3 for y in range(4)}
    assert data.val is data.test and len(data.test) == 8
    assert (folder / "preprocessed.pkl").is_file()
    with open(folder / "split_fewshot" / "shot_3-seed_1.pkl", "rb") as f:
        assert set(pickle.load(f)) == {"train"}  # no val in ImageNet's caches (CoOp)

    new = build(tmp_path, "ImageNet", shots=3, seed=1, subsample="new")
    assert new.classnames == ["great white shark", "English Springer Spaniel"]
    assert new.val is new.test and sorted(per_class(new.test)) == [0, 1]


def test_imagenet_preprocessed_listing_is_reused(tmp_path):
    folder = tmp_path / "imagenet"
    write_classnames(folder / "classnames.txt")
    write_class_tree(folder / "images" / "train", WNIDS, 2)
    write_class_tree(folder / "images" / "val", WNIDS, 1)
    build(tmp_path, "ImageNet")
    (folder / "classnames.txt").unlink()  # not needed once the listing is cached
    assert len(build(tmp_path, "ImageNet").train_x) == 8


def test_imagenet_variants(tmp_path):
    write_classnames(tmp_path / "imagenetv2" / "classnames.txt")
    for label in range(4):
        touch_image(tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / str(label) / "a.jpeg")
    v2 = build(tmp_path, "ImageNetV2", shots=1, subsample="base")  # few-shot and base/new are ignored
    assert v2.classnames == list(WNIDS.values())  # label i is line i of classnames.txt
    assert v2.train_x is v2.test and len(v2.test) == 4

    write_classnames(tmp_path / "imagenet-sketch" / "classnames.txt")
    write_class_tree(tmp_path / "imagenet-sketch" / "images", WNIDS, 2)
    assert build(tmp_path, "ImageNetSketch").classnames == [
        "tench",
        "goldfish",
        "great white shark",
        "English Springer Spaniel",
    ]

    for name, folder, sub in (
        ("ImageNetA", "imagenet-adversarial", "imagenet-a"),
        ("ImageNetR", "imagenet-rendition", "imagenet-r"),
    ):
        write_classnames(tmp_path / folder / "classnames.txt")
        write_class_tree(tmp_path / folder / sub, ["n02102040", "n01443537"], 3)  # a subset of the classes
        (tmp_path / folder / sub / "README.txt").write_text("readme")
        data = build(tmp_path, name)
        assert data.classnames == ["goldfish", "English Springer Spaniel"]  # labels 0..n-1 over present folders
        assert data.num_classes == 2 and len(data.test) == 6


def test_cifar100_image_folders(tmp_path):
    folder = tmp_path / "cifar100"
    for split, n in (("train", 5), ("test", 2)):
        write_class_tree(folder / "images" / split, ["apple", "aquarium_fish", "baby"], n)
    data = build(tmp_path, "MYCIFAR100", shots=2, seed=1)
    assert data.classnames == ["apple", "aquarium_fish", "baby"]  # folder names without a class-name file
    assert per_class(data.train_x) == {0: 2, 1: 2, 2: 2} and data.val is data.test

    (folder / "preprocessed.pkl").unlink()
    (folder / "classnames_for_cifar100.txt").write_text("apple apple\naquarium_fish aquarium fish\nbaby baby\n")
    assert build(tmp_path, "MYCIFAR100").classnames == ["apple", "aquarium fish", "baby"]


# ------------------------------------------------------------------------------------------------ synthetic


def test_synthetic_dataset_is_created_on_first_use(tmp_path):
    data = build(tmp_path, "SyntheticShapes", shots=4, seed=1)
    assert data.num_classes == 12
    assert data.classnames[0] == "red circle"
    assert per_class(data.train_x) == {y: 4 for y in range(12)}
    assert per_class(data.val) == {y: 4 for y in range(12)}
    assert len(data.test) == 12 * 8
    assert (tmp_path / "synthetic_shapes" / "split_fewshot" / "shot_4-seed_1.pkl").is_file()
    assert paths(build(tmp_path, "SyntheticShapes", shots=4, seed=1).train_x) == paths(data.train_x)

    base = build(tmp_path, "SyntheticShapes", shots=4, seed=1, subsample="base")
    assert base.classnames == data.classnames[:6]


def test_synthetic_dataset_config_node(tmp_path):
    cfg = make_cfg(tmp_path, "SyntheticShapes", shots=2, seed=1)
    add_synthetic_config(cfg)
    cfg.merge_from_list(["DATASET.SYNTHETIC.DIR", "shapes6", "DATASET.SYNTHETIC.NUM_CLASSES", 6])
    cfg.merge_from_list(["DATASET.SYNTHETIC.TEST_PER_CLASS", 3])
    data = build(tmp_path, "SyntheticShapes", cfg=cfg)
    assert data.num_classes == 6 and len(data.test) == 18
    assert (tmp_path / "shapes6" / "split_zhou_SyntheticShapes.json").is_file()

    # Other generation parameters regenerate the folder.
    cfg.merge_from_list(["DATASET.SYNTHETIC.TEST_PER_CLASS", 2])
    assert len(build(tmp_path, "SyntheticShapes", cfg=cfg).test) == 12


# ------------------------------------------------------------------------------------------------ errors


def test_missing_dataset_folder_names_path_and_command(tmp_path):
    with pytest.raises(DatasetNotPreparedError) as e:
        build(tmp_path, "OxfordPets")
    msg = str(e.value)
    assert str(tmp_path / "oxford_pets") in msg
    assert f"python -m datasets.prepare OxfordPets --root {tmp_path}" in msg


def test_missing_image_folder(tmp_path):
    (tmp_path / "eurosat").mkdir()
    with pytest.raises(DatasetNotPreparedError, match="image folder not found: .*2750"):
        build(tmp_path, "EuroSAT")


def test_missing_split_and_annotations(tmp_path):
    (tmp_path / "oxford_pets" / "images").mkdir(parents=True)
    with pytest.raises(DatasetNotPreparedError) as e:
        build(tmp_path, "OxfordPets")
    assert "annotations/trainval.txt" in str(e.value)
    assert "split_zhou_OxfordPets.json" in str(e.value)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"train": [], "val": []}), "keys 'train', 'val' and 'test'"),
        (json.dumps({"train": [["a.jpg", "0", "x"]], "val": [], "test": []}), "entry 0 of 'train'"),
    ],
)
def test_malformed_split_file(tmp_path, content, pattern):
    (tmp_path / "dtd" / "images").mkdir(parents=True)
    (tmp_path / "dtd" / "split_zhou_DescribableTextures.json").write_text(content)
    with pytest.raises(DatasetFormatError, match=pattern) as e:
        build(tmp_path, "DescribableTextures")
    assert "split_zhou_DescribableTextures.json" in str(e.value)


def test_split_file_listing_missing_images(tmp_path):
    write_split_dataset(tmp_path, "Food101", "food-101", "images", FIVE)
    for p in list((tmp_path / "food-101" / "images" / "c1").iterdir())[:3]:
        p.unlink()
    with pytest.raises(DatasetNotPreparedError, match=r"3 image\(s\) listed in .*split_zhou_Food101.json"):
        build(tmp_path, "Food101")


def test_imagenet_variant_without_classnames(tmp_path):
    write_class_tree(tmp_path / "imagenet-rendition" / "imagenet-r", ["n01443537"], 1)
    with pytest.raises(DatasetNotPreparedError, match="classnames.txt") as e:
        build(tmp_path, "ImageNetR")
    assert "imagenet/classnames.txt" in str(e.value)


def test_unknown_class_folder_and_missing_list(tmp_path):
    write_classnames(tmp_path / "imagenet" / "classnames.txt", {"n01440764": "tench"})
    write_class_tree(tmp_path / "imagenet" / "images" / "train", ["n01440764", "n99999999"], 1)
    write_class_tree(tmp_path / "imagenet" / "images" / "val", ["n01440764"], 1)
    with pytest.raises(DatasetFormatError, match="n99999999 has no class name"):
        build(tmp_path, "ImageNet")

    (tmp_path / "fgvc_aircraft" / "images").mkdir(parents=True)
    (tmp_path / "fgvc_aircraft" / "variants.txt").write_text("707-320\n")
    with pytest.raises(DatasetNotPreparedError, match="images_variant_train.txt"):
        build(tmp_path, "FGVCAircraft")


def test_split_file_dataset_subclasses_cover_the_split_datasets():
    names = {n for n, *_ in SPLIT_DATASETS}
    assert all(issubclass(DATASET_REGISTRY.get(n), SplitFileDataset) for n in names)


def test_dassl_data_manager_builds_loaders(tmp_path):
    """The dataset works end to end with Dassl's DataManager (transforms, samplers, batches)."""
    from dassl.data import DataManager

    cfg = make_cfg(tmp_path, "SyntheticShapes", shots=2, seed=1, subsample="new")
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.INPUT.SIZE = (32, 32)
    cfg.VERBOSE = False
    set_random_seed(cfg.SEED)
    dm = DataManager(cfg)
    batch = next(iter(dm.train_loader_x))
    assert tuple(batch["img"].shape) == (4, 3, 32, 32)
    assert dm.num_classes == 6 and dm.lab2cname[0] == "white diamond"
    assert int(batch["label"].max()) < 6
