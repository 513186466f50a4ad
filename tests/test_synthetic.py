"""The synthetic image generator (no Dassl needed)."""

import ast
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lamm_experiments import synthetic
from lamm_experiments.synthetic import (
    SHAPE_CLASSES,
    classnames,
    generate_split,
    make_tensors,
    read_metadata,
    render_image,
    write_image_folder,
)


def test_module_imports_neither_dassl_nor_yacs():
    tree = ast.parse(Path(synthetic.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    stdlib = set(getattr(sys, "stdlib_module_names", ())) or {"contextlib", "fcntl", "json", "logging", "math", "os"}
    third_party = imported - stdlib - {"__future__"}
    assert third_party <= {"numpy", "torch", "PIL"}, third_party
    assert not {"dassl", "yacs"} & imported


def test_class_names_are_clip_words_of_varied_token_lengths():
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    names = classnames()
    assert 10 <= len(names) <= 20 and len(set(names)) == len(names)
    lengths = {}
    for name in names:
        ids = tokenizer.encode(name)
        assert tokenizer.decode(ids).strip() == name  # the BPE vocabulary spells every name back exactly
        # Every word is a single vocabulary entry, except "checkered" which splits into sub-words.
        words = name.split()
        assert len(ids) == len(words) + sum(w == "checkered" for w in words)
        lengths[name] = len(ids)
    assert min(lengths.values()) == 1 and max(lengths.values()) >= 3
    assert lengths["red circle"] == 2 and lengths["checkered green square"] == 4


def test_generation_is_deterministic_and_seeded():
    a, la = generate_split("train", 3, seed=0)
    b, lb = generate_split("train", 3, seed=0)
    assert a.shape == (len(SHAPE_CLASSES) * 3, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert la.tolist() == [c for c in range(len(SHAPE_CLASSES)) for _ in range(3)]
    assert not np.array_equal(a, generate_split("train", 3, seed=1)[0])
    assert not np.array_equal(a, generate_split("test", 3, seed=0)[0])  # splits hold different images


def test_generation_leaves_global_rngs_alone():
    np.random.seed(0)
    torch.manual_seed(0)
    before = (np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    generate_split("val", 2, image_size=16)
    assert np.array_equal(np.random.get_state()[1], before[0])
    assert torch.equal(torch.get_rng_state(), before[1])


def test_a_class_subset_has_the_same_images():
    full, _ = generate_split("train", 2, seed=3)
    first5, labels = generate_split("train", 2, num_classes=5, seed=3)
    assert np.array_equal(first5, full[:10]) and labels.max() == 4


def test_image_content_identifies_the_class():
    """A nearest-centroid classifier on the colours of the non-background pixels separates held-out images."""

    def features(images):
        x = images.astype(np.float64)  # [N, H, W, 3]
        border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)  # [N, 4W, 3]
        foreground = np.abs(x - np.median(border, axis=1)[:, None, None]).sum(-1) > 60  # [N, H, W]
        q = images.astype(np.int64) // 64  # 4 levels per channel
        codes = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]  # [N, H, W] in [0, 64)
        return np.stack([np.bincount(c[m], minlength=64) / max(m.sum(), 1) for c, m in zip(codes, foreground)])

    train, ytrain = generate_split("train", 12)
    test, ytest = generate_split("test", 8)
    centroids = np.stack([features(train[ytrain == c]).mean(0) for c in range(len(SHAPE_CLASSES))])
    dist = ((features(test)[:, None, :] - centroids[None]) ** 2).sum(-1)
    accuracy = (dist.argmin(1) == ytest).mean()
    assert accuracy >= 0.9, accuracy  # chance is 1/12

    # Different shapes of one colour differ in their pixels, not only in their names.
    red_circle, red_square = (render_image(SHAPE_CLASSES[i], np.random.default_rng(0), 48) for i in (0, 9))
    assert np.abs(red_circle.astype(int) - red_square.astype(int)).mean() > 10


def test_make_tensors():
    data = make_tensors("val", num_per_class=2, num_classes=4, image_size=24, seed=5)
    images, labels, names = data
    assert images.shape == (8, 3, 24, 24) and images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.std() > 0.05
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert names == ["red circle", "blue square", "green triangle", "yellow star"]
    raw, _ = generate_split("val", 2, num_classes=4, image_size=24, seed=5)
    assert torch.equal((images * 255).round().to(torch.uint8), torch.from_numpy(raw).permute(0, 3, 1, 2))


def test_write_image_folder(tmp_path):
    split_path = write_image_folder(tmp_path / "shapes", num_train=3, num_val=1, num_test=2, num_classes=3, seed=7)
    assert split_path == tmp_path / "shapes" / "split_zhou_SyntheticShapes.json"
    split = json.loads(split_path.read_text())
    assert set(split) == {"train", "val", "test"}
    assert [len(split[s]) for s in ("train", "val", "test")] == [9, 3, 6]
    relpath, label, name = split["train"][3]
    assert (relpath, label, name) == ("blue_square/train_0000.png", 1, "blue square")
    assert all(len(set(e[0] for e in split[s])) == len(split[s]) for s in split)

    # The PNG files hold exactly the in-memory images.
    tensors = make_tensors("test", num_per_class=2, num_classes=3, seed=7)
    for i, (rel, lab, _) in enumerate(split["test"]):
        pixels = np.asarray(Image.open(tmp_path / "shapes" / "images" / rel))
        assert np.array_equal(pixels, (tensors.images[i] * 255).round().byte().permute(1, 2, 0).numpy())
        assert lab == tensors.labels[i]
    assert read_metadata(tmp_path / "shapes")["seed"] == 7


@pytest.mark.parametrize("layout", sorted(synthetic.HOST_LAYOUTS))
def test_host_layout_command_writes_what_coop_datasets_read(layout, tmp_path, capsys):
    """``--layout dtd``: the tree under ``--root DIR`` where CoOp's dataset class reads it (``<folder>/images`` and
    its ``split_zhou_*.json`` of ``[path under images/, label, class name]``); the hosts' own classes read it in
    tests/test_dassl_dropin.py."""
    host = synthetic.HOST_LAYOUTS[layout]
    argv = [str(tmp_path), "--layout", layout, "--classes", "3", "--train", "2", "--val", "1", "--test", "1"]
    assert synthetic.main(argv) == 0
    split = json.loads((tmp_path / host.folder / host.split_filename).read_text())
    assert [len(split[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    assert split["val"][1] == ["blue_square/val_0000.png", 1, "blue square"]
    assert all((tmp_path / host.folder / "images" / path).is_file() for s in split.values() for path, _, _ in s)
    out = capsys.readouterr().out
    assert f"--root {tmp_path} --dataset-config-file configs/datasets/{host.config}" in out and "12 images" in out
    with pytest.raises(ValueError, match="layout must be one of"):
        synthetic.write_host_layout(tmp_path, "imagenet")


def test_write_image_folder_reuses_or_regenerates(tmp_path):
    root = tmp_path / "shapes"
    split_path = write_image_folder(root, num_train=2, num_val=1, num_test=1, num_classes=2)
    mtime = split_path.stat().st_mtime_ns
    (root / "split_fewshot").mkdir()
    (root / "split_fewshot" / "shot_1-seed_1.pkl").write_bytes(b"cache")
    write_image_folder(root, num_train=2, num_val=1, num_test=1, num_classes=2)
    assert split_path.stat().st_mtime_ns == mtime  # same parameters: nothing rewritten
    assert (root / "split_fewshot" / "shot_1-seed_1.pkl").exists()

    write_image_folder(root, num_train=2, num_val=1, num_test=1, num_classes=2, seed=1)
    assert not (root / "split_fewshot").exists()  # caches refer to the old images
    assert read_metadata(root)["seed"] == 1

    split_path.unlink()  # an interrupted write leaves no split file: the folder is written again
    write_image_folder(root, num_train=2, num_val=1, num_test=1, num_classes=2, seed=1)
    assert split_path.is_file()
    assert sorted(p.name for p in (root / "images" / "red_circle").iterdir()) == [
        "test_0000.png",
        "train_0000.png",
        "train_0001.png",
        "val_0000.png",
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "dev", "num_per_class": 1}, "split must be"),
        ({"split": "train", "num_per_class": 1, "num_classes": 0}, "num_classes"),
        ({"split": "train", "num_per_class": 1, "num_classes": 13}, "num_classes"),
        ({"split": "train", "num_per_class": 1, "seed": -1}, "seed"),
        ({"split": "train", "num_per_class": 1, "image_size": 8}, "image_size"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_split(**kwargs)


@pytest.mark.skipif(sys.platform == "win32", reason="the folder lock uses POSIX advisory locks")
def test_a_writer_waits_for_the_folder_lock_and_reuses_what_it_finds(tmp_path):
    """Parallel runs building the dataset for the first time must not write the same folder at once."""
    root = tmp_path / "shapes"
    root.mkdir()
    kwargs = {"num_train": 2, "num_val": 1, "num_test": 1, "num_classes": 3}
    writer = threading.Thread(target=write_image_folder, args=(root,), kwargs=kwargs)
    with synthetic._folder_lock(root):  # another process is writing the folder
        writer.start()
        writer.join(timeout=0.3)
        assert writer.is_alive() and not (root / "images").exists()  # it waits
        counts = {"train": 2, "val": 1, "test": 1}
        split_name = "split_zhou_SyntheticShapes.json"
        meta = synthetic._metadata(counts, 3, 32, 0, split_name)
        synthetic._write_folder(root, root / split_name, meta, counts, 3, 32, 0)  # the other process finishes
        mtime = (root / "split_zhou_SyntheticShapes.json").stat().st_mtime_ns
    writer.join(timeout=10)
    assert not writer.is_alive()
    assert (root / "split_zhou_SyntheticShapes.json").stat().st_mtime_ns == mtime  # found complete: not rewritten
