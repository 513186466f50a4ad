"""The ``Folder`` dataset (datasets/folder.py): one's own images from a folder tree or list files, yaml keys only.

Trees are the generated shapes written as PNG files (:func:`lamm_experiments.synthetic.write_class_folders`); the
training runs use the CPU demo config (tiny random CLIP) for one epoch. A run on a tree and one on CSV lists are then
predicted with :mod:`lamm_plugin.predict` (Python and the command), image by image equal to their own evaluation;
a sweep over a dataset config of one's own runs its jobs and is tabled under the dataset's name.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from PIL import Image
from trainer_eval import Evaluation, accuracy, train_recorded

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

from dassl.config import get_cfg_default  # noqa: E402

import continual  # noqa: E402
import train  # noqa: E402
from datasets.base import BadImageError, DatasetFormatError, DatasetNotPreparedError  # noqa: E402
from datasets.folder import Folder, clean_folder_name, folder_options  # noqa: E402
from datasets.prepare import cli as prepare_cli  # noqa: E402
from lamm_experiments import synthetic  # noqa: E402
from lamm_plugin.dassl.config import ConfigKeyError  # noqa: E402
from lamm_plugin.predict import Predictor, main  # noqa: E402

pytestmark = pytest.mark.dassl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER_YAML = os.path.join(REPO, "configs/datasets/folder.yaml")
DEMO = os.path.join(REPO, "configs/trainers/LAMM_CoOp/demo_cpu.yaml")
FAKE_TRAIN = os.path.join(REPO, "tests/fixtures/fake_train.py")  # the sweep tests' stand-in for train.py
NAMES = ["blue square", "green triangle", "red circle", "yellow star"]  # the 4 first shapes, sorted by folder
FOLDERS = ["Blue_square", "Green_triangle", "Red_circle", "Yellow_star"]
TEST_BATCH = 5
TINY = [
    "OPTIM.MAX_EPOCH", "1",
    "DATALOADER.NUM_WORKERS", "0",
    "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
    "DATALOADER.TEST.BATCH_SIZE", "16",
]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    """``<root>/shapes/{train,val,test}/<Class>/*.png``: 4 classes, 4 / 1 / 2 images per class."""
    root = str(tmp_path_factory.mktemp("data"))
    synthetic.write_class_folders(os.path.join(root, "shapes"), {"train": 4, "val": 1, "test": 2}, num_classes=4)
    return root


def copy_tree(root: str, tmp_path, name: str = "shapes") -> str:
    """A private copy of the shared tree (for tests that change it); returns its folder."""
    dest = str(tmp_path / name)
    shutil.copytree(os.path.join(root, "shapes"), dest, ignore=shutil.ignore_patterns("split_fewshot"))
    return dest


def make_cfg(root: str, *opts, dataset_config: str = FOLDER_YAML):
    cfg = get_cfg_default()
    train.extend_cfg(cfg)
    cfg.merge_from_file(dataset_config)
    cfg.merge_from_list(["DATASET.ROOT", root, *[str(o) for o in opts]])
    return cfg


def build(root: str, *opts, seed: int = 1) -> Folder:
    """The dataset as the trainer builds it: the global random state seeded with ``SEED`` first."""
    random.seed(seed)
    return Folder(make_cfg(root, "SEED", seed, *opts))


def items(split) -> list[tuple[str, int, str]]:
    return [(d.impath, d.label, d.classname) for d in split]


def train_args(root: str, out: str, *opts: str) -> list[str]:
    return ["--root", root, "--seed", "1", "--trainer", "LAMM_CoOp", "--dataset-config-file", FOLDER_YAML,
            "--config-file", DEMO, "--output-dir", out, *TINY, *opts]  # fmt: skip


def run_train(root: str, out: str, *opts: str):
    return train.main(train.parse_args(train_args(root, out, *opts)))


def read_results(out: str) -> dict:
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


# ---- training ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree_eval(root, tmp_path_factory) -> Evaluation:
    """A one-epoch run on the tree, in the folder layout of a sweep (so the tables read it as ``my_shapes``), with
    its evaluation recorded; test batches of 5 (8 test images: 5 + 3), so that predictions must batch alike."""
    output = str(tmp_path_factory.mktemp("output"))
    out = os.path.join(output, "fewshot", "my_shapes", "shots_2", "LAMM_CoOp", "demo_cpu", "seed1")
    opts = ("DATASET.FOLDER.DIR", "shapes", "DATASET.NUM_SHOTS", "2", "DATALOADER.TEST.BATCH_SIZE", str(TEST_BATCH))
    return train_recorded(train_args(root, out, *opts))


@pytest.fixture(scope="module")
def tree_run(tree_eval) -> str:
    return tree_eval.out


@pytest.fixture(scope="module")
def csv_eval(root, tmp_path_factory) -> Evaluation:
    """A one-epoch run on CSV lists of a copy of the tree: paths relative to the list file, class names from its
    third column; class 3 has only 2 training images (fewer than NUM_SHOTS 3)."""
    base = tmp_path_factory.mktemp("csv")
    data = base / "lists"
    images = copy_tree(root, data, "images")
    (data / "lists").mkdir()
    for split in ("train", "test"):
        rows = ["path,label,classname"]
        for i, folder in enumerate(FOLDERS):
            files = sorted(os.listdir(os.path.join(images, split, folder)))
            files = files[:2] if (split, i) == ("train", 3) else files  # class 3: 2 training images
            rows += [f"../images/{split}/{folder}/{f},{i},shape {i}" for f in files]
        (data / "lists" / f"{split}.csv").write_text("\n".join(rows) + "\n")
    opts = ("DATASET.FOLDER.DIR", "lists", "DATASET.FOLDER.TRAIN", "lists/train.csv", "DATASET.FOLDER.TEST",
            "lists/test.csv", "DATASET.FOLDER.FRACTIONS", "(1.0, 0.0, 0.0)", "DATASET.NUM_SHOTS", "3",
            "DATALOADER.TEST.BATCH_SIZE", str(TEST_BATCH))  # fmt: skip
    return train_recorded(train_args(str(base), str(base / "out"), *opts))


@pytest.mark.e2e
def test_train_on_an_imagefolder_tree(tree_run):
    res = read_results(tree_run)
    assert res["dataset"] == "Folder" and res["config"]["DATASET"]["FOLDER"]["DIR"] == "shapes"
    assert res["classnames"] == NAMES and res["num_classes"] == 4
    assert res["num_samples"] == 8 and res["shots"] == 2  # the test folder: 4 classes x 2 images
    assert 0.0 <= res["accuracy"] <= 100.0


@pytest.mark.e2e
def test_the_tables_show_the_dataset_by_its_sweep_name(tree_run):
    output = tree_run.split(os.sep + "fewshot" + os.sep)[0]
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts/make_tables.py"), output, "--kinds",
         "fewshot", "--no-figure"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    accuracy = read_results(tree_run)["accuracy"]
    row = next(line for line in out.stdout.splitlines() if line.startswith("| my_shapes "))
    assert f"{accuracy:.2f}" in row


@pytest.mark.e2e
def test_train_on_a_csv_list_with_class_name_column(csv_eval):
    """Paths relative to the list file, names from its third column; a class short of NUM_SHOTS is named."""
    res = read_results(csv_eval.out)
    assert res["classnames"] == ["shape 0", "shape 1", "shape 2", "shape 3"] and res["num_samples"] == 8
    assert 0.0 <= res["accuracy"] <= 100.0 and res["shots"] == 3
    with open(os.path.join(csv_eval.out, "log.txt")) as f:
        assert "Note: DATASET.NUM_SHOTS 3, but 1 of 4 classes have fewer training images (shape 3: 2)" in f.read()


@pytest.mark.e2e
def test_continual_stages_on_a_tree(root, tmp_path):
    out = str(tmp_path / "continual")
    args = ["--root", root, "--seed", "1", "--trainer", "LAMM_CoOp", "--dataset-config-file", FOLDER_YAML,
            "--config-file", DEMO, "--output-dir", out, "--stages", "2", "--shared", "freeze", *TINY,
            "DATASET.FOLDER.DIR", "shapes", "DATASET.NUM_SHOTS", "2"]  # fmt: skip
    continual.main(continual.parse_args(args))
    res = read_results(out)["continual"]
    assert res["num_stages"] == 2 and res["stages_done"] == 2
    assert sorted(name for stage in res["stage_classes"] for name in stage) == NAMES
    assert len(res["accuracy_matrix"]) == 2


# ---- prediction ---------------------------------------------------------------------------------------------
# ``lamm_plugin.predict`` on a Folder run: the run's test split predicted from files, a folder and PIL images gives
# the trainer's own evaluation, image by image (the same model, transform and batches: logits equal to the bit).


@pytest.mark.e2e
@pytest.mark.parametrize("run", ["tree_eval", "csv_eval"])
def test_predictions_of_a_folder_run_equal_its_evaluation(run, request):
    ev: Evaluation = request.getfixturevalue(run)
    predictor = Predictor.from_run(ev.out, device="cpu")
    assert predictor.classnames == ev.trainer.dm.dataset.classnames and predictor.batch_size == TEST_BATCH
    assert len(ev.batches()) == 2  # 5 + 3
    assert torch.equal(ev.logits_of(predictor), ev.logits)
    predictions = predictor.predict(ev.paths, topk=4)
    assert [p.label for p in predictions] == ev.predictions
    assert accuracy(predictions, ev.labels) == ev.accuracy == read_results(ev.out)["accuracy"]
    pil = predictor.predict([Image.open(p) for p in ev.paths], topk=4)
    assert [(p.classes, p.probabilities) for p in pil] == [(p.classes, p.probabilities) for p in predictions]
    # One image alone (a batch of one: the same class, probabilities to float rounding), as a path and as PIL.
    for image in (ev.paths[6], Image.open(ev.paths[6])):
        (alone,) = predictor.predict(image, topk=4)
        assert alone.classes == predictions[6].classes
        torch.testing.assert_close(torch.tensor(alone.probabilities), torch.tensor(predictions[6].probabilities))


def _accuracy_of_document(document: dict, labels: dict[str, int]) -> float:
    hits = [entry["top"][0]["label"] == labels[entry["path"]] for entry in document["predictions"]]
    return 100.0 * sum(hits) / len(labels)


@pytest.mark.e2e
def test_the_command_on_the_test_folder_equals_the_evaluation(tree_eval, root):
    """``python -m lamm_plugin.predict RUN FOLDER`` in a new process: the tree's test folder, walked in sorted order,
    is the test split in the trainer's order, so each image's class and the accuracy are the evaluation's."""
    folder = os.path.join(root, "shapes", "test")
    argv = [sys.executable, "-m", "lamm_plugin.predict", tree_eval.out, folder, "--format", "json", "--device", "cpu"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["classes"] == NAMES and "Predicting 8 image(s) among 4 classes" in done.stderr
    assert [entry["path"] for entry in document["predictions"]] == tree_eval.paths
    assert [entry["top"][0]["label"] for entry in document["predictions"]] == tree_eval.predictions
    assert _accuracy_of_document(document, dict(zip(tree_eval.paths, tree_eval.labels))) == tree_eval.accuracy


@pytest.mark.e2e
def test_the_command_on_listed_images_and_on_one(csv_eval, capsys):
    """In process: the CSV run's test images in list order (CSV output), then one image alone."""
    capsys.readouterr()
    assert main([csv_eval.out, *csv_eval.paths, "--topk", "1", "--format", "csv", "--device", "cpu"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    names = csv_eval.trainer.dm.dataset.classnames
    assert [r["path"] for r in rows] == csv_eval.paths
    assert [names.index(r["class"]) for r in rows] == csv_eval.predictions
    assert main([csv_eval.out, csv_eval.paths[6], "--format", "json", "--device", "cpu"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["predictions"]
    assert entry["path"] == csv_eval.paths[6] and entry["top"][0]["label"] == csv_eval.predictions[6]


@pytest.mark.e2e
def test_other_class_lists_for_a_folder_run(tree_eval, tmp_path, capsys):
    """``--classes`` / ``classes=`` other than the run's: new names take CLIP's embeddings and leave the trained
    classes' logits as they were; an empty list, a repeated name and a folder name instead of its class name are
    named."""
    run, image = tree_eval.out, tree_eval.paths[0]

    def fails(*argv: str) -> str:
        assert main([run, image, "--device", "cpu", "--no-progress", *argv]) == 1
        return capsys.readouterr().err

    capsys.readouterr()
    assert "Error: No class names in the list ' , ': give names separated by commas" in fails("--classes", " , ")
    empty = tmp_path / "classes.txt"
    empty.write_text("# my classes\n\n")
    assert f"No class names in the file {empty}" in fails("--classes", str(empty))
    err = fails("--classes", "red circle,blue square,red circle")
    assert "Class names given more than once: 'red circle' 2 times" in err and "Give each class once." in err
    assert "given more than once: 'purple moon' 2 times" in fails("--classes", "purple moon,purple moon")
    with pytest.raises(ValueError, match="No class names in the classes given"):
        Predictor.from_run(run, classes=[], device="cpu")

    full = Predictor.from_run(run, device="cpu")
    capsys.readouterr()
    other = Predictor.from_run(run, classes=["purple moon", "red circle", "blue square"], device="cpu")
    assert "Label embeddings: 2 of 3 classes loaded, 1 keep CLIP's embeddings" in capsys.readouterr().out
    images = torch.stack([full.preprocess(p) for p in tree_eval.paths])
    torch.testing.assert_close(other.logits(images)[:, 1:], full.logits(images)[:, [2, 0]], rtol=1e-5, atol=1e-5)
    assert main([run, image, "--classes", "purple moon,red circle", "--format", "json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == ["purple moon", "red circle"]

    # The folder names (as in the tree) instead of the run's class names: new classes (upper case), each named.
    with pytest.warns(UserWarning) as seen:
        folders = Predictor.from_run(run, classes=FOLDERS, device="cpu")
    assert folders.classnames == ["Blue square", "Green triangle", "Red circle", "Yellow star"]  # '_' is a space
    assert [str(w.message).split(" is not")[0] for w in seen] == [f"Class {f!r}" for f in FOLDERS]
    assert "CLIP's embedding of its name instead of the learned one; the run has 'blue square'" in str(seen[0].message)
    # '_' for a space is the same class: learned, no warning; a repeat of it counts as a repeat.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = Predictor.from_run(run, classes=["red_circle", "blue square"], device="cpu")
    assert "Label embeddings: 2 of 2 classes loaded, 0 keep CLIP's embeddings" in capsys.readouterr().out
    torch.testing.assert_close(same.logits(images), full.logits(images)[:, [2, 0]], rtol=1e-5, atol=1e-5)
    assert "'red circle' 2 times" in fails("--classes", "red_circle,red circle")


# ---- reading ----------------------------------------------------------------------------------------------------


def test_class_names_are_cleaned_as_coop_cleans_them(root):
    assert clean_folder_name("Golden_Retriever") == "golden retriever"
    assert clean_folder_name(" New__York_city ") == "new york city"
    assert clean_folder_name("Golden_Retriever", lowercase=False) == "Golden Retriever"
    assert build(root, "DATASET.FOLDER.DIR", "shapes").classnames == NAMES
    kept = build(root, "DATASET.FOLDER.DIR", "shapes", "DATASET.FOLDER.LOWERCASE", "False").classnames
    assert kept == ["Blue square", "Green triangle", "Red circle", "Yellow star"]


def test_a_class_name_file_maps_folders_to_names(root, tmp_path):
    copy_tree(root, tmp_path)
    names = ["the blue square", "a green triangle", "the red circle", "a yellow star"]
    (tmp_path / "shapes" / "names.txt").write_text("".join(f"{f} {n}\n" for f, n in zip(FOLDERS, names)))
    dataset = build(str(tmp_path), "DATASET.FOLDER.DIR", "shapes", "DATASET.FOLDER.CLASSNAMES", "names.txt")
    assert dataset.classnames == names
    (tmp_path / "shapes" / "names.txt").write_text(f"{FOLDERS[0]} the blue square\n")
    with pytest.raises(DatasetFormatError, match=r"names\.txt has no class name for 3 class\(es\): Green_triangle"):
        build(str(tmp_path), "DATASET.FOLDER.DIR", "shapes", "DATASET.FOLDER.CLASSNAMES", "names.txt")


def pool(tmp_path, per_class: int = 10) -> str:
    """``<tmp>/pool/<Class>/*.png``: one folder of classes, no train/val/test."""
    synthetic.write_class_folders(tmp_path / "gen", {"train": per_class}, num_classes=3)
    shutil.move(str(tmp_path / "gen" / "train"), str(tmp_path / "pool"))
    return str(tmp_path / "pool")


def test_a_split_drawn_by_fractions_is_deterministic_and_recorded(tmp_path):
    pool(tmp_path)
    root = str(tmp_path)
    first = build(root, "DATASET.FOLDER.DIR", "pool", "DATASET.NUM_SHOTS", "0", seed=1)
    again = build(root, "DATASET.FOLDER.DIR", "pool", "DATASET.NUM_SHOTS", "0", seed=7)  # SEED plays no part
    for a, b in ((first.train_x, again.train_x), (first.val, again.val), (first.test, again.test)):
        assert items(a) == items(b)
    assert [len(s) for s in (first.train_x, first.val, first.test)] == [15, 6, 9]  # 5 / 2 / 3 of each 10
    every = items(first.train_x) + items(first.val) + items(first.test)
    assert len({p for p, _, _ in every}) == 30  # each image in one split
    tag = "drawn_val+test_fractions_0.5-0.2-0.3_seed_1"
    with open(os.path.join(root, "pool", "split_fewshot", tag, "split.json")) as f:
        record = json.load(f)
    assert record["fractions"] == [0.5, 0.2, 0.3] and record["split_seed"] == 1
    assert [[os.path.join(root, "pool", p), y, c] for p, y, c in record["test"]] == [list(i) for i in items(first.test)]
    other = build(root, "DATASET.FOLDER.DIR", "pool", "DATASET.NUM_SHOTS", "0", "DATASET.FOLDER.SPLIT_SEED", "2")
    assert items(other.test) != items(first.test)
    assert os.path.isfile(os.path.join(root, "pool", "split_fewshot", tag.replace("seed_1", "seed_2"), "split.json"))


def test_few_shot_subsets_are_sampled_and_cached(root, tmp_path):
    copy_tree(root, tmp_path)
    opts = ("DATASET.FOLDER.DIR", "shapes", "DATASET.NUM_SHOTS", "2")
    first = build(str(tmp_path), *opts, seed=3)
    cache = tmp_path / "shapes" / "split_fewshot" / "shot_2-seed_3.pkl"
    assert cache.is_file()
    assert sorted(d.label for d in first.train_x) == [0, 0, 1, 1, 2, 2, 3, 3] and len(first.val) == 4
    random.seed(99)  # the cache, not the random state, decides
    cached = Folder(make_cfg(str(tmp_path), "SEED", 3, *opts))
    assert items(cached.train_x) == items(first.train_x) and items(cached.val) == items(first.val)
    assert items(build(str(tmp_path), *opts, seed=4).train_x) != items(first.train_x)


def test_base_and_new_classes(root):
    base = build(root, "DATASET.FOLDER.DIR", "shapes", "DATASET.SUBSAMPLE_CLASSES", "base")
    new = build(root, "DATASET.FOLDER.DIR", "shapes", "DATASET.SUBSAMPLE_CLASSES", "new")
    assert base.classnames == NAMES[:2] and new.classnames == NAMES[2:]
    assert {d.label for d in new.test} == {0, 1} and {d.classname for d in new.test} == set(NAMES[2:])


def test_no_val_share_means_no_validation_set(root, tmp_path):
    folder = copy_tree(root, tmp_path)
    shutil.rmtree(os.path.join(folder, "val"))
    dataset = build(str(tmp_path), "DATASET.FOLDER.DIR", "shapes", "DATASET.FOLDER.FRACTIONS", "(1.0, 0.0, 0.0)")
    assert items(dataset.val) == items(dataset.test) and len(dataset.train_x) == 16


# ---- bad input --------------------------------------------------------------------------------------------------


def test_a_mistyped_key_names_the_right_one():
    with pytest.raises(
        ConfigKeyError, match=r"DATASET\.FOLDER\.TRIAN \(on the command line\)\. Did you mean: DATASET\.FOLDER\.TRAIN\b"
    ):
        make_cfg("/tmp", "DATASET.FOLDER.TRIAN", "x")


def test_an_unset_or_missing_folder(tmp_path):
    with pytest.raises(DatasetFormatError, match="DATASET.FOLDER.DIR is not set"):
        folder_options(make_cfg(str(tmp_path), "DATASET.FOLDER.DIR", ""))
    with pytest.raises(DatasetNotPreparedError, match=f"dataset folder not found: {tmp_path}/nowhere"):
        build(str(tmp_path), "DATASET.FOLDER.DIR", "nowhere")


def test_an_empty_class_folder(root, tmp_path):
    folder = copy_tree(root, tmp_path)
    os.makedirs(os.path.join(folder, "train", "Purple_moon"))
    with pytest.raises(DatasetFormatError, match=f"class folder {folder}/train/Purple_moon holds no images"):
        build(str(tmp_path), "DATASET.FOLDER.DIR", "shapes")


def test_non_image_files_are_skipped_and_counted(root, tmp_path, capsys):
    folder = copy_tree(root, tmp_path)
    for name in ("notes.txt", "Thumbs.db"):
        open(os.path.join(folder, "train", FOLDERS[0], name), "w").close()
    dataset = build(str(tmp_path), "DATASET.FOLDER.DIR", "shapes", "DATASET.NUM_SHOTS", "0")
    assert len(dataset.train_x) == 16
    out = capsys.readouterr().out
    assert "skipped 2 file(s) that are not images" in out and f"{FOLDERS[0]}/Thumbs.db" in out


def test_a_test_class_absent_from_training(root, tmp_path):
    folder = copy_tree(root, tmp_path)
    shutil.copytree(os.path.join(folder, "test", FOLDERS[0]), os.path.join(folder, "test", "Purple_moon"))
    with pytest.raises(DatasetFormatError, match=r"class\(es\) 'Purple_moon' of the test set .* have no training"):
        build(str(tmp_path), "DATASET.FOLDER.DIR", "shapes")


def write_list(path, rows: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")


def test_bad_list_rows(root, tmp_path):
    folder = copy_tree(root, tmp_path)
    image = f"train/{FOLDERS[0]}/0000.png"
    opts = ("DATASET.FOLDER.DIR", "shapes", "DATASET.FOLDER.TRAIN", "train.csv")
    write_list(os.path.join(folder, "train.csv"), [f"{image},a", "train/none.png,a"])
    with pytest.raises(DatasetNotPreparedError, match=r"train\.csv:2: train/none\.png \(looked for .*none\.png\)"):
        build(str(tmp_path), *opts)
    write_list(os.path.join(folder, "train.csv"), [f"{image},a", f"{image},"])
    with pytest.raises(DatasetFormatError, match=r"train\.csv:2: expected 'path,label'"):
        build(str(tmp_path), *opts)
    write_list(os.path.join(folder, "train.csv"), [f"{image},a", ",b"])  # a label with no image
    with pytest.raises(DatasetFormatError, match=r"train\.csv:2: expected 'path,label'.*got ',b'"):
        build(str(tmp_path), *opts)
    write_list(os.path.join(folder, "train.csv"), [f"{image},a,one", f"{image},a,two"])
    with pytest.raises(DatasetFormatError, match=r"train\.csv:2: label 'a' is named 'two', but .*:1 names it 'one'"):
        build(str(tmp_path), *opts)
    write_list(os.path.join(folder, "train.csv"), ["path,label", f"{image},a"])
    with pytest.raises(DatasetNotPreparedError, match=r"DATASET\.FOLDER\.TEST list file not found: .*test\.csv"):
        build(str(tmp_path), *opts, "DATASET.FOLDER.TEST", "test.csv")


@pytest.mark.e2e
def test_an_unreadable_image_is_named_with_the_command_that_checks_all(root, tmp_path, capsys):
    folder = copy_tree(root, tmp_path)
    broken = os.path.join(folder, "train", FOLDERS[1], "0001.png")
    with open(broken, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nnot an image")
    with pytest.raises(BadImageError) as err:
        build(str(tmp_path), "DATASET.FOLDER.DIR", "shapes", "DATASET.NUM_SHOTS", "4")  # samples every image
    message = str(err.value)
    assert broken in message and "python -m datasets.prepare Folder" in message
    command = shlex.split(message.rsplit("with: ", 1)[1])
    assert command[:3] == ["python", "-m", "datasets.prepare"]
    capsys.readouterr()
    assert prepare_cli.main(command[3:]) == 1
    assert f"{broken}: " in capsys.readouterr().out
    os.remove(broken)
    assert prepare_cli.main(command[3:]) == 0
    assert "[ok] Folder" in capsys.readouterr().out


@pytest.mark.e2e
def test_the_check_reads_the_dataset_config(root, capsys):
    args = ["Folder", "--root", root, "--dataset-config-file", FOLDER_YAML, "--check", "--opts", "DATASET.FOLDER.DIR"]
    assert prepare_cli.main([*args, "shapes"]) == 0
    assert prepare_cli.main([*args, "nowhere"]) == 1
    assert "dataset folder not found" in capsys.readouterr().out


@pytest.mark.e2e
def test_sweep_scripts_find_a_dataset_config_by_name(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(FOLDER_YAML, configs / "my_shapes.yaml")
    env = {**os.environ, "DRY_RUN": "1", "DATASET_CONFIGS": f"{tmp_path}/none:{configs}", "OUTPUT": str(tmp_path)}
    script = os.path.join(REPO, "scripts/lamm/fewshot.sh")
    out = subprocess.run(["bash", script, "my_shapes", "2", "1"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"--dataset-config-file {configs}/my_shapes.yaml" in out.stdout
    assert f"{tmp_path}/fewshot/my_shapes/shots_2/" in out.stdout
    out = subprocess.run(["bash", script, "dtd", "2", "1"], capture_output=True, text=True, env=env, timeout=60)
    assert f"--dataset-config-file {REPO}/configs/datasets/dtd.yaml" in out.stdout
    env["DRY_RUN"] = "0"
    out = subprocess.run(["bash", script, "my_data", "2", "1"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and "Error: no dataset config my_data.yaml in DATASET_CONFIGS=" in out.stderr


@pytest.mark.e2e
def test_a_sweep_of_ones_own_dataset_runs_and_is_tabled(tmp_path):
    """The jobs of a sweep over a dataset config found by name in DATASET_CONFIGS really run: the sweep, its job
    guard and the job script are the real ones, started outside the repository with the package on no PYTHONPATH
    (not installed); only train.py is the stand-in of the sweep tests (tests/fixtures/fake_train.py). The tables then
    show the dataset by its name, averaged over the seeds."""
    configs = tmp_path / "my_configs"
    configs.mkdir()
    with open(FOLDER_YAML) as f:
        (configs / "my_shapes.yaml").write_text(f.read().replace("my_dataset", "my_shapes"))
    wrapper = tmp_path / "python_fake"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_TRAIN}" "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("TRAINER", "CFG", "SWEEP_PROTOCOL", "LAMM_PROTOCOL")}
    env.pop("PYTHONPATH", None)
    env.update(PYTHON=str(wrapper), SWEEP_PYTHON=sys.executable, FAKE_TRAIN_LOG=str(tmp_path / "calls.txt"),
               DATA=str(tmp_path / "data"), OUTPUT=str(tmp_path / "output"), DATASET_CONFIGS=str(configs),
               DATASETS="my_shapes", SEEDS="1 2", SHOTS_LIST="2 4", CFG="demo_cpu")  # fmt: skip
    out = subprocess.run(["bash", os.path.join(REPO, "scripts/lamm/sweep.sh"), "fewshot"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Sweep summary: 4 done, 0 skipped, 0 failed" in out.stdout
    runs = tmp_path / "output" / "fewshot" / "my_shapes"
    calls = sorted((tmp_path / "calls.txt").read_text().split())
    assert calls == [str(runs / f"shots_{k}/LAMM_CoOp/demo_cpu/seed{s}") for k in (2, 4) for s in (1, 2)]
    accuracy = {k: [read_results(str(runs / f"shots_{k}/LAMM_CoOp/demo_cpu/seed{s}"))["accuracy"] for s in (1, 2)]
                for k in (2, 4)}  # fmt: skip
    tables = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts/make_tables.py"), str(tmp_path / "output"), "--kinds",
         "fewshot", "--no-figure"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert tables.returncode == 0, tables.stderr
    row = next(line for line in tables.stdout.splitlines() if line.startswith("| my_shapes |"))
    assert [cell.split(" ± ")[0].strip() for cell in row.split("|")[2:4]] == [
        f"{sum(accuracy[k]) / 2:.2f}" for k in (2, 4)
    ]
    assert row.split("|")[2].strip().endswith("(2)")  # two seeds


@pytest.mark.e2e
def test_a_test_image_that_does_not_decode_stops_the_run_with_its_path(root, tmp_path):
    """A test image that does not open stops the run before training, named with the command that checks this
    dataset (not a benchmark's prepare command)."""
    folder = copy_tree(root, tmp_path)
    broken = os.path.join(folder, "test", FOLDERS[2], "0000.png")
    with open(broken, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nnot an image")
    with pytest.raises(BadImageError) as err:
        run_train(str(tmp_path), str(tmp_path / "out"), "DATASET.FOLDER.DIR", "shapes", "DATASET.NUM_SHOTS", "1")
    message = str(err.value)
    assert "in the test set" in message and broken in message
    assert f"python -m datasets.prepare Folder --root {tmp_path} --check --decode --opts DATASET.FOLDER.DIR shapes" in (
        message
    )


def test_a_class_too_small_to_split_is_named(tmp_path):
    folder = pool(tmp_path, per_class=2)
    with pytest.raises(
        DatasetFormatError, match=f"class 'Blue_square' of {folder} has 2 image.*its val would be empty"
    ) as err:
        build(str(tmp_path), "DATASET.FOLDER.DIR", "pool")
    remedy = 'DATASET.FOLDER.FRACTIONS "(1, 0, 1)"'
    assert remedy in str(err.value)  # the exact override, which then splits every class
    dataset = build(str(tmp_path), "DATASET.FOLDER.DIR", "pool", "DATASET.FOLDER.FRACTIONS", "(1, 0, 1)")
    assert len(dataset.train_x) == len(dataset.test) == 3  # one image of each of the 3 classes


# ---- a test set that is the training set; images that do not open ------------------------------------------------
def image_rows(folder: str, split: str) -> list[str]:
    return [f"{split}/{c}/{name},{c}" for c in FOLDERS for name in sorted(os.listdir(os.path.join(folder, split, c)))]


def test_a_test_set_that_is_the_training_set_is_refused_before_training(root, tmp_path, capsys):
    folder = copy_tree(root, tmp_path)
    write_list(os.path.join(folder, "train.csv"), image_rows(folder, "train"))
    write_list(os.path.join(folder, "test.csv"), image_rows(folder, "train"))  # the same images
    lists = ("DATASET.FOLDER.DIR", "shapes", "DATASET.FOLDER.TRAIN", "train.csv", "DATASET.FOLDER.TEST", "test.csv",
             "DATASET.NUM_SHOTS", "0")  # fmt: skip
    with pytest.raises(ValueError) as info:  # a UserError: one line on the command line
        run_train(str(tmp_path), str(tmp_path / "out"), *lists)
    message = str(info.value)
    assert "16 image(s) of the training set are also in the test split" in message
    assert "DATASET.ALLOW_TRAIN_TEST_OVERLAP True" in message
    assert not os.path.exists(tmp_path / "out" / "prompt_learner")  # nothing was trained
    run_train(str(tmp_path), str(tmp_path / "out"), *lists, "DATASET.ALLOW_TRAIN_TEST_OVERLAP", "True")
    assert "Going on: DATASET.ALLOW_TRAIN_TEST_OVERLAP is True" in capsys.readouterr().out
    assert read_results(str(tmp_path / "out"))["accuracy"] is not None


def test_a_test_image_that_is_a_copy_of_a_training_image_is_found(root, tmp_path):
    folder = copy_tree(root, tmp_path)
    source = os.path.join(folder, "train", FOLDERS[2], "0003.png")
    copy = os.path.join(folder, "test", FOLDERS[2], "copy.png")
    shutil.copyfile(source, copy)
    with pytest.raises(ValueError, match=rf"1 image\(s\) .*: {source} = {copy}\. Give a test"):
        run_train(str(tmp_path), str(tmp_path / "out"), "DATASET.FOLDER.DIR", "shapes", "DATASET.NUM_SHOTS", "0")


def png_header(width: int, height: int) -> bytes:
    """A PNG file that declares ``width`` x ``height`` pixels (and holds none): a decompression bomb to Pillow."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("split", ["test", "val"])
@pytest.mark.parametrize("kind", ["bomb", "not an image"])
def test_an_image_pillow_refuses_in_any_split_is_named_before_training(kind, split, root, tmp_path, capsys):
    folder = copy_tree(root, tmp_path)
    bad = os.path.join(folder, split, FOLDERS[3], "0000.png")
    with open(bad, "wb") as f:
        f.write(png_header(20000, 20000) if kind == "bomb" else b"plain text, not an image\n")
    with pytest.raises(BadImageError) as err:
        build(str(tmp_path), "DATASET.FOLDER.DIR", "shapes", "DATASET.NUM_SHOTS", "2")
    message = str(err.value)
    assert bad in message and ("DecompressionBombError" if kind == "bomb" else "UnidentifiedImageError") in message
    command = shlex.split(message.rsplit("with: ", 1)[1])
    assert command[:3] == ["python", "-m", "datasets.prepare"] and "--decode" in command
    capsys.readouterr()
    assert prepare_cli.main(command[3:]) == 1
    assert f"{bad}: " in capsys.readouterr().out  # the command names it too
