"""The decoded-image training loader (``LAMM_CACHE.DECODED_IMAGES``) gives Dassl's own tensors, bit for bit.

Dassl's loader (``DatasetWrapper`` + ``build_transform(cfg, is_train=True)``) and ours are iterated from the same
torch seed for several epochs with random resized crops and flips, with and without workers; the size bound keeps
what fits and decodes the rest; the switch off leaves Dassl's loader as it is; and the few-shot check's decoding
feeds the cache, so an image is decoded once.
"""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

import torch  # noqa: E402
from dassl.config import get_cfg_default  # noqa: E402
from dassl.data.data_manager import DatasetWrapper, build_data_loader  # noqa: E402
from dassl.data.datasets import Datum  # noqa: E402
from dassl.data.transforms import build_transform  # noqa: E402
from PIL import Image  # noqa: E402

import lamm_plugin.dassl  # noqa: E402, F401  (adds LAMM_CACHE)
from lamm_plugin.dassl import decoded  # noqa: E402

pytestmark = pytest.mark.dassl

SIZES = [(50, 40), (64, 48), (37, 61), (80, 30), (48, 48), (45, 70)]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Datum]:
    """12 JPEGs of assorted sizes (one greyscale, one PNG with alpha: read_image converts both to RGB)."""
    folder = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    items = []
    for i in range(12):
        w, h = SIZES[i % len(SIZES)]
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if i == 3:
            image, name = Image.fromarray(pixels[:, :, 0], "L"), f"{i}.jpg"
        elif i == 7:
            image, name = Image.fromarray(np.dstack([pixels, pixels[:, :, :1]]), "RGBA"), f"{i}.png"
        else:
            image, name = Image.fromarray(pixels), f"{i}.jpg"
        path = str(folder / name)
        image.save(path)
        items.append(Datum(impath=path, label=i % 3, classname=f"class {i % 3}"))
    return items


def make_cfg(workers: int = 0, transforms=("random_resized_crop", "random_flip", "normalize"), **cache) -> object:
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (32, 32)
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.TRANSFORMS = list(transforms)
    cfg.INPUT.PIXEL_MEAN = [0.48145466, 0.4578275, 0.40821073]
    cfg.INPUT.PIXEL_STD = [0.26862954, 0.26130258, 0.27577711]
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
    for key, value in cache.items():
        cfg.LAMM_CACHE[key] = value
    return cfg


def dassl_loader(cfg, items: list[Datum]):
    tfm = build_transform(cfg, is_train=True)
    return build_data_loader(cfg, "RandomSampler", items, batch_size=4, tfm=tfm, is_train=True)


def epochs(loader, n: int, seed: int) -> list[dict]:
    torch.manual_seed(seed)
    random.seed(seed)  # Dassl's Random2DTranslation draws from Python's random module
    np.random.seed(seed)
    return [batch for _ in range(n) for batch in loader]


def assert_same_batches(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        assert a["impath"] == b["impath"]
        assert torch.equal(a["label"], b["label"])
        assert a["img"].dtype == b["img"].dtype == torch.float32
        assert torch.equal(a["img"], b["img"])


@pytest.mark.parametrize("workers", [0, 2])
def test_cached_loader_equals_dassl_over_epochs(images, workers):
    cfg = make_cfg(workers)
    theirs = dassl_loader(cfg, images)
    ours = decoded.cached_train_loader(cfg, theirs)
    assert isinstance(ours.dataset, decoded.DecodedDatasetWrapper)
    assert len(ours.dataset.store) == len(images)  # every image kept
    assert_same_batches(epochs(ours, 3, seed=5), epochs(theirs, 3, seed=5))
    # A different seed gives different augmentations: the comparison above can fail.
    assert not torch.equal(epochs(ours, 1, seed=6)[0]["img"], epochs(theirs, 1, seed=5)[0]["img"])


@pytest.mark.parametrize(
    "transforms",
    [
        ("random_crop", "random_flip"),
        ("random_flip", "normalize"),
        ("random_translation", "colorjitter", "randomgrayscale", "normalize"),
    ],
)
def test_other_transforms_equal_dassl(images, transforms):
    cfg = make_cfg(transforms=transforms)
    theirs = dassl_loader(cfg, images)
    ours = decoded.cached_train_loader(cfg, theirs)
    assert_same_batches(epochs(ours, 2, seed=1), epochs(theirs, 2, seed=1))


def test_table_lookup_equals_to_tensor_and_normalize():
    import torchvision.transforms as T

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (31, 17, 3), dtype=np.uint8))
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    fused = decoded.fast_tail(T.Compose([T.RandomHorizontalFlip(0.0), T.ToTensor(), T.Normalize(mean, std)]))
    assert isinstance(fused.transforms[-1], decoded.ToNormalizedTensor)
    assert torch.equal(fused(image), T.Normalize(mean, std)(T.ToTensor()(image)))
    only = decoded.fast_tail(T.Compose([T.ToTensor()]))
    assert torch.equal(only(image), T.ToTensor()(image))
    grey = image.convert("L")  # another mode: the original transforms
    assert torch.equal(only(grey), T.ToTensor()(grey))


def test_size_bound_keeps_what_fits_and_decodes_the_rest(images, capsys):
    first = Image.open(images[0].impath).convert("RGB")
    bound = 3 * first.width * first.height * 3 + 10  # room for three images the size of the first, not more
    store = decoded.DecodedImages(bound)
    store.fill(item.impath for item in images)
    assert 0 < len(store) < len(images) and store.nbytes <= bound and store.left_out == len(images) - len(store)
    kept = [item.impath for item in images if item.impath in store]
    assert kept == [item.impath for item in images[: len(kept)]]  # in order
    assert all(np.array_equal(np.asarray(store.get(p)), np.asarray(decoded.decode_rgb(p))) for p in kept)
    assert store.get(images[-1].impath) is None
    line = store.summary(len(images))
    assert f"{len(kept):,} of {len(images):,}" in line and "LAMM_CACHE.DECODED_MAX_MB" in line

    # Through the config: a bound of 0 MB keeps nothing, and the loader is still Dassl's, bit for bit.
    cfg = make_cfg(DECODED_MAX_MB=0)
    theirs = dassl_loader(cfg, images)
    ours = decoded.cached_train_loader(cfg, theirs)
    assert len(ours.dataset.store) == 0
    assert "0 of 12 training images" in capsys.readouterr().out
    assert_same_batches(epochs(ours, 1, seed=2), epochs(theirs, 1, seed=2))


def test_store_is_shared_by_fork_and_dropped_by_pickle(images):
    store = decoded.DecodedImages(2**20)
    store.fill(item.impath for item in images)
    copy = pickle.loads(pickle.dumps(store))  # a spawn/forkserver worker: decodes as Dassl does
    assert len(copy) == 0 and copy.get(images[0].impath) is None
    with pytest.raises(ValueError, match="RGB"):
        store.put("x.png", Image.new("L", (2, 2)))


def test_switch_off_and_bad_bound(images):
    cfg = make_cfg(DECODED_IMAGES=False)
    assert decoded.cached_train_loader(cfg, dassl_loader(cfg, images)) is None
    assert decoded.store_for(make_cfg()).max_bytes == 4096 * 2**20  # on by default, 4096 MB
    with pytest.raises(ValueError, match="LAMM_CACHE.DECODED_MAX_MB"):
        decoded.store_for(make_cfg(DECODED_MAX_MB=-1))


def test_few_shot_check_feeds_the_cache(tmp_path, monkeypatch):
    """The dataset's few-shot check decodes each training image once and the training loader decodes none."""
    import train  # registers the repository's datasets
    from datasets import base

    calls = []
    real = base._decoded
    monkeypatch.setattr(base, "_decoded", lambda path: calls.append(path) or real(path))
    fills = []
    monkeypatch.setattr(decoded, "decode_rgb", lambda path: fills.append(path) or Image.open(path).convert("RGB"))
    from datasets.synthetic import add_synthetic_config

    cfg = make_cfg()
    add_synthetic_config(cfg)
    cfg.merge_from_file(os.path.join(os.path.dirname(train.__file__), "configs/datasets/synthetic_shapes.yaml"))
    cfg.DATASET.ROOT = str(tmp_path)
    cfg.DATASET.NUM_SHOTS = 2
    cfg.DATASET.SYNTHETIC.NUM_CLASSES = 3
    cfg.DATASET.SYNTHETIC.TRAIN_PER_CLASS = 4
    from dassl.data.datasets import build_dataset

    dataset = build_dataset(cfg)
    train_paths = {d.impath for d in dataset.train_x}
    assert dataset.decoded is not None and set(dataset.decoded._slots) == train_paths
    assert len(calls) == len(set(calls)) == len(train_paths | {d.impath for d in dataset.val})
    loader = decoded.cached_train_loader(cfg, dassl_loader(cfg, dataset.train_x), dataset.decoded)
    assert fills == []  # nothing decoded again to fill the cache
    for _ in loader:
        pass
    assert fills == []  # nor by the loader


def train_run(root: str, output_dir: str, *opts: str):
    import train

    repo = os.path.dirname(os.path.abspath(train.__file__))
    args = [
        "--root", root, "--seed", "1", "--trainer", "LAMM_CoOp",
        "--dataset-config-file", os.path.join(repo, "configs/datasets/synthetic_shapes.yaml"),
        "--config-file", os.path.join(repo, "configs/trainers/LAMM_CoOp/demo_cpu.yaml"),
        "--output-dir", output_dir,
        "OPTIM.MAX_EPOCH", "2", "DATASET.NUM_SHOTS", "2", "DATASET.SYNTHETIC.NUM_CLASSES", "4",
        "DATASET.SYNTHETIC.TRAIN_PER_CLASS", "4", "DATASET.SYNTHETIC.VAL_PER_CLASS", "2",
        "DATASET.SYNTHETIC.TEST_PER_CLASS", "4", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
        "DATALOADER.TEST.BATCH_SIZE", "16", *opts,
    ]  # fmt: skip
    return train.main(train.parse_args(args))


@pytest.mark.e2e
def test_trainer_with_and_without_the_cache_trains_the_same(tmp_path):
    """The switch on (the default) trains bit for bit as Dassl's own loader (off); the phases are recorded."""
    import json

    root = str(tmp_path / "data")
    on = train_run(root, str(tmp_path / "on"))
    off = train_run(root, str(tmp_path / "off"), "LAMM_CACHE.DECODED_IMAGES", "False")
    assert isinstance(on.train_loader_x.dataset, decoded.DecodedDatasetWrapper)
    assert type(off.train_loader_x.dataset) is DatasetWrapper and off.dm.dataset.decoded is None
    assert on.train_loader_x is on.dm.train_loader_x
    learned_on, learned_off = on.model.trainable_parameters(), off.model.trainable_parameters()
    assert len(learned_on) == len(learned_off) > 0
    assert all(torch.equal(a, b) for a, b in zip(learned_on, learned_off))
    with open(tmp_path / "on" / "results.json") as f:
        phases = json.load(f)["timings"]["phases"]
    assert phases["steps_seconds"] > 0 and phases["loader_wait_seconds"] > 0 and phases["evaluation_seconds"] > 0
    assert 0 < phases["startup_seconds"] < phases["process_seconds"]


def test_cache_keys_do_not_make_another_experiment():
    """A run folder made before the cache existed (no LAMM_CACHE in its config), or with the switch flipped, is the
    same experiment: it resumes and its result is recognised."""
    from lamm_plugin.dassl import run_config
    from lamm_plugin.dassl.results import cfg_to_dict

    given = make_cfg()
    older = cfg_to_dict(given)
    del older["LAMM_CACHE"]
    assert run_config.config_differences(older, given) == []
    assert run_config.config_differences(cfg_to_dict(make_cfg(DECODED_IMAGES=False, DECODED_MAX_MB=1)), given) == []
    assert run_config.config_differences(cfg_to_dict(make_cfg(workers=3)), make_cfg(transforms=("random_flip",)))


@pytest.mark.e2e
def test_bench_loader_row_and_known_opts(capsys):
    """``bench.py loader`` measures Dassl's loader and ours; ``run``/``sweep`` pass only keys the config has."""
    import argparse
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import bench

    known, missing = bench.known_opts(["LAMM_CACHE.DECODED_IMAGES", "False", "LAMM_CACHE.NO_SUCH_KEY", "1"])
    assert known == ["LAMM_CACHE.DECODED_IMAGES", "False"] and missing == ["LAMM_CACHE.NO_SUCH_KEY"]
    config = os.path.join(os.path.dirname(bench.__file__), "..", "configs/trainers/LAMM_CoOp/vit_b16_ep50_ctxv1.yaml")
    bench.loader_table(argparse.Namespace(config=config, images=8, workers=[0], repeats=1))
    out = capsys.readouterr().out
    assert "| Dassl (uncached)" in out and "| ours (decoded once)" in out and "8 of 8 training images" in out
