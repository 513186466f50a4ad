"""Bad inputs and faults that must never end in a wrong result with exit 0, or in a message without the file.

Each test plays what a user or a shared machine does: a data folder copied with its few-shot cache, a corrupt
image, an unseeded run, two ``train.py`` on one folder, a SIGTERM, a full disk, a mistyped trainer name, a class
order given by name. The run either does the right thing or stops with a message naming the file and what to do.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

from dassl.config import get_cfg_default  # noqa: E402
from dassl.data.datasets import build_dataset  # noqa: E402
from dassl.utils import set_random_seed  # noqa: E402
from PIL import Image  # noqa: E402
from runs import REPO, SYNTHETIC_CONFIG, demo_config, tiny_opts  # noqa: E402

import continual  # noqa: E402
import train  # noqa: E402
from datasets.base import BadImageError, StaleCacheError, rebase_impaths  # noqa: E402
from lamm_plugin.dassl import compat  # noqa: E402
from lamm_plugin.run_lock import LOCK_FILENAME, RunLock, RunLockedError  # noqa: E402

pytestmark = pytest.mark.dassl

FLAGS = ["--trainer", "LAMM_CoOp", "--dataset-config-file", SYNTHETIC_CONFIG, "--config-file", demo_config("LAMM_CoOp")]
OPTS = tiny_opts(lr=None, test_batch=8, print_freq=None)

# Runs train.py as the command line does (``python train.py ...``), after the patch that PATCH names.
DRIVER = textwrap.dedent(
    """
    import os, runpy, signal, sys, time
    sys.path.insert(0, {repo!r})
    from lamm_plugin.dassl import PromptTrainer

    patch = os.environ.get("PATCH", "")
    forward_backward = PromptTrainer.forward_backward
    if patch == "hold":  # hold the first step until the file HOLD names exists
        def hold(self, batch):
            if self.epoch == 0 and self.batch_idx == 0:
                open(os.environ["HOLD"] + ".started", "w").close()
                while not os.path.exists(os.environ["HOLD"]):
                    time.sleep(0.1)
            return forward_backward(self, batch)
        PromptTrainer.forward_backward = hold
    elif patch == "sigterm":  # SIGTERM from outside in the middle of epoch 2
        def term(self, batch):
            if self.epoch == 1 and self.batch_idx == 1:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            return forward_backward(self, batch)
        PromptTrainer.forward_backward = term
    elif patch == "disk-full":  # the file system fills up while epoch 2's checkpoint is written
        import errno, torch
        save = torch.save
        def full(obj, f, *args, **kwargs):
            if obj.get("epoch") == 2:
                class Full:
                    name = getattr(f, "name", "")
                    def write(self, data):
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    def flush(self):
                        pass
                return save(obj, Full(), *args, **kwargs)
            return save(obj, f, *args, **kwargs)
        torch.save = full
    sys.argv = ["train.py", *sys.argv[1:]]
    runpy.run_path(os.path.join({repo!r}, "train.py"), run_name="__main__")
    """
)


def args_for(root, out, *extra: str, seed: bool = True, opts: tuple[str, ...] = ()) -> list[str]:
    flags = ["--root", str(root), "--output-dir", str(out), *FLAGS, *(["--seed", "1"] if seed else []), *extra]
    return flags + OPTS + list(opts)


def start(root, out, patch: str = "", **env: str) -> subprocess.Popen:
    code = DRIVER.format(repo=REPO)
    return subprocess.Popen(
        [sys.executable, "-c", code, *args_for(root, out)],
        cwd=REPO,
        env={**os.environ, "PATCH": patch, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("data"))
    train.main(train.parse_args(args_for(root, os.path.join(root, "first"))))  # writes the synthetic images
    return root


def read(path) -> str:
    with open(path) as f:
        return f.read()


# ------------------------------------------------------------------------------------------------ trainer names


@pytest.mark.e2e
def test_trainer_name_that_differs_in_case_is_suggested_first(tmp_path):
    with pytest.raises(ValueError) as info:
        train.main(train.parse_args(args_for(tmp_path, tmp_path / "out", "--trainer", "LAMM_Coop")))
    message = str(info.value)
    assert "Unknown trainer 'LAMM_Coop'" in message and "Did you mean: LAMM_CoOp?" in message
    assert "LAMM_MaPLe" in message and "ZeroshotCLIP" in message  # the registered trainers are listed
    assert not (tmp_path / "out").exists()  # refused before anything is written
    close = str(pytest.raises(ValueError, compat.check_trainer_name, "LAMM_Mapl").value)
    assert "Did you mean: LAMM_MaPLe" in close
    compat.check_trainer_name("LAMM_CoOp")  # a registered name passes


# ------------------------------------------------------------------------------------------------ few-shot caches


def split_tree(root: Path, n_classes: int = 3, per_split: int = 4) -> Path:
    """An OxfordPets folder (images/ + split_zhou_OxfordPets.json) of PNGs."""
    folder = root / "oxford_pets"
    split = {}
    for name in ("train", "val", "test"):
        entries = []
        for label in range(n_classes):
            for i in range(per_split):
                rel = f"c{label}_{name}_{i}.png"
                (folder / "images").mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (label * 60, i * 30, 0)).save(folder / "images" / rel)
                entries.append([rel, label, f"class {label}"])
        split[name] = entries
    (folder / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    return folder


def build(root, shots: int = 2, seed: int = 1, name: str = "OxfordPets"):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = shots
    cfg.SEED = seed
    set_random_seed(seed)
    return build_dataset(cfg)


def test_fewshot_cache_of_a_copied_folder_reads_the_copys_images(tmp_path):
    old = tmp_path / "old"
    split_tree(old)
    first = build(old)
    cache = old / "oxford_pets" / "split_fewshot" / "shot_2-seed_1.pkl"
    assert cache.is_file()
    new = tmp_path / "new"
    shutil.copytree(old, new)
    shutil.rmtree(old)

    copy = build(new)
    assert [Path(d.impath).name for d in copy.train_x] == [Path(d.impath).name for d in first.train_x]
    for item in copy.train_x + copy.val:
        assert item.impath.startswith(str(new / "oxford_pets" / "images")) and os.path.isfile(item.impath)
    # The cache keeps CoOp's format and is not rewritten (CoOp-family code reads it as before).
    assert cache.name in os.listdir(new / "oxford_pets" / "split_fewshot")

    # An image the cache names that this copy of the data no longer has: the cache is named as stale.
    gone = Path(copy.train_x[0].impath)
    split_file = new / "oxford_pets" / "split_zhou_OxfordPets.json"
    split = json.loads(split_file.read_text())
    split["train"] = [e for e in split["train"] if e[0] != gone.name]
    split_file.write_text(json.dumps(split))
    gone.unlink()
    with pytest.raises(StaleCacheError) as info:
        build(new)
    message = str(info.value)
    assert "shot_2-seed_1.pkl" in message and gone.name in message and "rm " in message and "stale" in message


def test_fewshot_cache_written_elsewhere_by_coop_resolves_under_this_root(tmp_path):
    """A cache from another machine (absolute paths of its own) is read against this folder."""
    import pickle

    from dassl.data.datasets import Datum

    root = tmp_path / "data"
    folder = split_tree(root)
    build(root, seed=3)
    cache = folder / "split_fewshot" / "shot_2-seed_3.pkl"
    data = pickle.loads(cache.read_bytes())
    foreign = {}
    for key, items in data.items():
        foreign[key] = []
        for d in items:
            d = Datum(impath=d.impath, label=d.label, classname=d.classname)
            d._impath = "/home/someone/DATA/oxford_pets/images/" + os.path.basename(d.impath)
            foreign[key].append(d)
    cache.write_bytes(pickle.dumps(foreign, protocol=pickle.HIGHEST_PROTOCOL))
    dataset = build(root, seed=3)
    assert all(d.impath.startswith(str(folder / "images")) for d in dataset.train_x + dataset.val)


def test_imagenet_listing_and_cache_of_a_moved_folder_read_the_new_place(tmp_path):
    """ImageNet's ``preprocessed.pkl`` (every image path) moves with its folder, as the few-shot cache does."""
    wnids = {"n01443537": "goldfish", "n01440764": "tench"}
    old = tmp_path / "old"
    folder = old / "imagenet"
    folder.mkdir(parents=True)
    (folder / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in wnids.items()))
    for split, n in (("train", 4), ("val", 2)):
        for wnid in wnids:
            (folder / "images" / split / wnid).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / "images" / split / wnid / f"{i}.JPEG")
    build(old, shots=2, name="ImageNet")
    assert (folder / "preprocessed.pkl").is_file() and (folder / "split_fewshot" / "shot_2-seed_1.pkl").is_file()
    new = tmp_path / "new"
    shutil.move(str(old), str(new))
    moved = build(new, shots=2, name="ImageNet")
    for item in moved.train_x + moved.test:
        assert item.impath.startswith(str(new / "imagenet" / "images")) and os.path.isfile(item.impath)


def test_cached_paths_of_other_machines_are_rebased_by_the_dataset_folder_name(tmp_path):
    from dassl.data.datasets import Datum

    def datum(path: str) -> Datum:
        item = Datum.__new__(Datum)
        item._impath, item._label, item._classname, item._domain = path, 1, "cat", 0
        return item

    here = str(tmp_path / "oxford_pets")
    cached = [
        datum(r"C:\Users\me\data\oxford_pets\images\cat_1.jpg"),  # written on Windows
        datum("/mnt/old/oxford_pets/images/cat_2.jpg"),
        datum("/mnt/elsewhere/pets/cat_3.jpg"),  # no folder name to go by: kept, and found stale by the split check
    ]
    moved = rebase_impaths(cached, here)
    assert [d.impath for d in moved] == [
        os.path.join(here, "images", "cat_1.jpg"),
        os.path.join(here, "images", "cat_2.jpg"),
        "/mnt/elsewhere/pets/cat_3.jpg",
    ]
    assert [(d.label, d.classname) for d in moved] == [(1, "cat")] * 3


# ------------------------------------------------------------------------------------------------ corrupt images


def truncate(path) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def test_corrupt_image_in_the_fewshot_subset_is_named_before_training(tmp_path):
    root = tmp_path / "data"
    folder = split_tree(root, per_split=2)
    bad = folder / "images" / "c1_train_0.png"
    truncate(bad)
    with pytest.raises(BadImageError) as info:
        build(root, shots=2)  # 2 shots of 2 images: every training image is sampled
    message = str(info.value)
    assert str(bad) in message and "python -m datasets.prepare OxfordPets --root" in message
    assert "--check --decode" in message


@pytest.mark.e2e
def test_corrupt_test_image_is_named_with_the_command_that_lists_all(data_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_root, root, ignore=shutil.ignore_patterns("first"))
    bad = sorted((root / "synthetic_shapes" / "images").rglob("test_0001.png"))[0]
    truncate(bad)
    with pytest.raises(BadImageError) as info:
        train.main(train.parse_args(args_for(root, tmp_path / "out")))
    message = str(info.value)
    assert str(bad) in message and "--check --decode" in message
    assert "Traceback" in read(tmp_path / "out" / "log.txt")  # the error is in the run's log too


# ------------------------------------------------------------------------------------------------ seeds


@pytest.mark.e2e
def test_run_without_seed_draws_records_and_reuses_one(data_root, tmp_path):
    out = tmp_path / "unseeded"
    trainer = train.main(train.parse_args(args_for(data_root, out, seed=False)))
    results = json.loads(read(out / "results.json"))
    seed = results["seed"]
    recorded = trainer.cfg.SEED
    assert seed >= 0 and results["config"]["SEED"] == seed == recorded
    assert read(out / train.SEED_FILENAME).strip() == str(seed)
    caches = os.listdir(os.path.join(data_root, "synthetic_shapes", "split_fewshot"))
    assert f"shot_2-seed_{seed}.pkl" in caches and "shot_2-seed_-1.pkl" not in caches
    assert f"drew seed {seed}" in read(out / "log.txt")
    # The same folder again (a resume): the stored seed, not a new one.
    again = train.main(train.parse_args(args_for(data_root, out, seed=False)))
    reused = again.cfg.SEED
    assert reused == seed
    # Another unseeded folder draws its own, and records it without training.
    other_out = tmp_path / "other"
    train.main(train.parse_args(args_for(data_root, other_out, "--eval-only", seed=False)))
    other = json.loads(read(other_out / "results.json"))
    assert other["seed"] >= 0 and read(other_out / train.SEED_FILENAME).strip() == str(other["seed"])


@pytest.mark.e2e
def test_damaged_seed_file_or_an_output_dir_that_is_a_file_is_named(data_root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / train.SEED_FILENAME).write_text("banana\n")
    with pytest.raises(train.RunFolderError, match=r"seed\.txt should hold the seed"):
        train.main(train.parse_args(args_for(data_root, out, seed=False)))
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    with pytest.raises(train.RunFolderError, match="is a file, not a folder"):
        train.main(train.parse_args(args_for(data_root, a_file)))
    assert a_file.read_text() == "not a folder"


# ------------------------------------------------------------------------------------------------ run folder lock


@pytest.mark.e2e
def test_second_train_py_on_one_folder_names_the_first_and_leaves_it_alone(data_root, tmp_path):
    out = tmp_path / "out"
    hold = str(tmp_path / "release")
    first = start(data_root, out, "hold", HOLD=hold)
    try:
        deadline = time.time() + 240
        while not os.path.exists(hold + ".started"):
            assert first.poll() is None and time.time() < deadline, first.stderr.read() if first.poll() else "timeout"
            time.sleep(0.2)
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        second = subprocess.run(
            [sys.executable, "train.py", *args_for(data_root, out)], cwd=REPO, capture_output=True, text=True
        )
        assert second.returncode != 0
        said = second.stdout + second.stderr
        assert f"pid {first.pid}" in said and socket.gethostname() in said and str(out) in said
        assert "Traceback" not in said
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing touched
    finally:
        Path(hold).touch()
    rc, stdout, stderr = finish(first)
    assert rc == 0, stdout[-2000:] + stderr[-2000:]
    assert not (out / LOCK_FILENAME).exists() and (out / "results.json").is_file()


@pytest.mark.e2e
def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_FILENAME).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    lock = RunLock(str(tmp_path))
    assert lock.acquire() and json.loads((tmp_path / LOCK_FILENAME).read_text())["pid"] == os.getpid()
    assert not RunLock(str(tmp_path)).acquire()  # held by a live process (this one)
    lock.release()
    assert not (tmp_path / LOCK_FILENAME).exists()


def test_lock_of_another_host_is_never_broken_and_says_how_to_clear_it(tmp_path):
    (tmp_path / LOCK_FILENAME).write_text(json.dumps({"host": "node-17", "pid": os.getpid() + 1, "time": 0}))
    with pytest.raises(RunLockedError) as info:
        RunLock(str(tmp_path)).acquire_or_raise()
    message = str(info.value)
    assert "host node-17" in message and "delete the lock file" in message and LOCK_FILENAME in message
    assert (tmp_path / LOCK_FILENAME).is_file()


# ------------------------------------------------------------------------------------------------ signals, disk


@pytest.mark.e2e
def test_sigterm_says_what_was_kept_and_how_to_resume(data_root, tmp_path):
    out = tmp_path / "out"
    rc, stdout, stderr = finish(start(data_root, out, "sigterm"))
    assert rc == -signal.SIGTERM, stdout[-2000:] + stderr[-2000:]  # dies by the signal, as the shell expects
    said = stdout + stderr
    kept = out / "prompt_learner" / "model.pth.tar-1"
    assert "stopped by signal SIGTERM" in said and str(kept) in said and "same command" in said
    assert "Traceback" not in said
    log = read(out / "log.txt")
    assert "stopped by signal SIGTERM" in log and str(kept) in log
    assert not (out / LOCK_FILENAME).exists()


@pytest.mark.e2e
def test_full_disk_names_the_file_once_and_the_log_keeps_the_traceback(data_root, tmp_path):
    out = tmp_path / "out"
    rc, stdout, stderr = finish(start(data_root, out, "disk-full"))
    assert rc == 1, stdout[-2000:] + stderr[-2000:]
    said = stdout + stderr
    path = out / "prompt_learner" / "model.pth.tar-2"
    assert "No space left on device" in said and str(path) in said and "free space" in said.lower()
    assert "Traceback" not in said and "PytorchStreamWriter" not in said
    log = read(out / "log.txt")
    assert "Traceback" in log and str(path) in log
    assert (out / "prompt_learner" / "model.pth.tar-1").is_file()  # the last good checkpoint stays


# ------------------------------------------------------------------------------------------------ continual order


def continual_args(tmp_path, order: str) -> list[str]:
    return [
        "--root", str(tmp_path), *FLAGS, "--output-dir", str(tmp_path / "out"), "--stages", "2",
        "--class-order", order,
    ]  # fmt: skip


NAMES = {0: "red circle", 1: "green square", 2: "blue triangle", 3: "yellow star"}


def test_class_order_takes_labels_names_or_a_file(tmp_path):
    def order(value: str) -> list[int]:
        protocol = continual.protocol_from_args(continual.parse_args(continual_args(tmp_path, value)))
        return continual.class_order_labels(protocol["class_order"], NAMES)

    assert order("3, 1, 0, 2") == [3, 1, 0, 2]
    assert order("3 1 0 2") == [3, 1, 0, 2]
    assert order("yellow star, green square, red circle, blue triangle") == [3, 1, 0, 2]
    listed = tmp_path / "order.txt"
    listed.write_text("yellow star\ngreen square\n\nRed Circle\nblue triangle\n")
    assert order(str(listed)) == [3, 1, 0, 2]


def test_class_order_errors_name_the_file_and_the_classes(tmp_path):
    def fails(value: str) -> str:
        with pytest.raises((ValueError, FileNotFoundError)) as info:
            protocol = continual.protocol_from_args(continual.parse_args(continual_args(tmp_path, value)))
            continual.class_order_labels(protocol["class_order"], NAMES)
        return str(info.value)

    missing = fails(str(tmp_path / "no_such_order.txt"))
    assert "no_such_order.txt" in missing and "not found" in missing
    unknown = fails("yellow star, green squares, red circle, blue triangle")
    assert "'green squares'" in unknown and "green square" in unknown  # with the close match
    repeated = fails("yellow star, yellow star, red circle, blue triangle")
    assert "repeated" in repeated and "yellow star" in repeated and "green square" in repeated  # the missing one


# ------------------------------------------------------------------------------------------------ one error handler
# Every entry point runs under lamm_plugin.errors.run_main: a user's mistake is one line naming the file or key and
# the remedy, exit 1; a traceback only for a bug of ours (or with --verbose).

TRAIN_PY = os.path.join(REPO, "train.py")
CONTINUAL_PY = os.path.join(REPO, "continual.py")


def command(*argv, cwd: str = REPO, **env: str) -> subprocess.CompletedProcess:
    """``python ARGV...`` as a user runs it (a fresh process: what the shell shows)."""
    env = {**os.environ, "PYTHONPATH": REPO, **env}
    return subprocess.run([sys.executable, *map(str, argv)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def one_clean_error(out: subprocess.CompletedProcess) -> str:
    """The one ``Error:`` line of a command that stopped on a user's mistake (exit 1, no traceback)."""
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout[-3000:] + out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, out.stderr
    return errors[0]


def typo_yaml(tmp_path, text: str) -> Path:
    path = tmp_path / "typo.yaml"
    path.write_text(text)
    return path


MISTAKES = {
    "trainer name": (
        lambda r, t: [TRAIN_PY, *args_for(r, t / "o", "--trainer", "LAMM_COOP")],
        "Did you mean: LAMM_CoOp?",
    ),
    "cache size": (
        lambda r, t: [TRAIN_PY, *args_for(r, t / "o", opts=("LAMM_CACHE.DECODED_MAX_MB", "-5"))],
        "LAMM_CACHE.DECODED_MAX_MB must be a number of MB >= 0, got -5",
    ),
    "not a number": (
        lambda r, t: [TRAIN_PY, *args_for(r, t / "o", opts=("DATASET.NUM_SHOTS", "abc"))],
        "DATASET.NUM_SHOTS abc (on the command line): DATASET.NUM_SHOTS takes an integer",
    ),
    "a value Dassl refuses": (
        lambda r, t: [TRAIN_PY, *args_for(r, t / "o", opts=("OPTIM.NAME", "adamm"))],
        "optim must be one of ['adam', 'amsgrad', 'sgd', 'rmsprop', 'radam', 'adamw'], but got adamm (Dassl refused",
    ),
    "a value our dataclass refuses": (
        lambda r, t: [TRAIN_PY, *args_for(r, t / "o", opts=("TRAINER.LAMM.TEXT_GROUPS", "0"))],
        "TRAINER.LAMM: text_groups must be at least 1, got 0.",
    ),
    "odd overrides": (lambda r, t: [TRAIN_PY, *args_for(r, t / "o", opts=("OPTIM.LR",))], "come in pairs"),
    "missing epoch": (
        lambda r, t: [
            TRAIN_PY,
            *args_for(r, t / "o", "--eval-only", "--model-dir", os.path.join(r, "first"), "--load-epoch", "7"),
        ],  # fmt: skip
        "model.pth.tar-7 (found: model.pth.tar-2): give a --load-epoch found there",
    ),
    "option misspelled after the overrides": (
        lambda r, t: [TRAIN_PY, *args_for(r, t / "o", opts=("--sed", "7"))],
        "Unknown option --sed (did you mean --seed?) among the KEY VALUE overrides",
    ),
    "typo in a yaml file": (
        lambda r, t: [
            TRAIN_PY,
            *args_for(r, t / "o", "--config-file", typo_yaml(t, "TRAINER:\n  LAMM:\n    LOGIT_WIEGHT: 1\n")),
        ],  # fmt: skip
        "Unknown config key TRAINER.LAMM.LOGIT_WIEGHT ({t}/typo.yaml). Did you mean: TRAINER.LAMM.LOGIT_WEIGHT",
    ),
    "value of the wrong type in a yaml file": (
        lambda r, t: [TRAIN_PY, *args_for(r, t / "o", "--config-file", typo_yaml(t, "OPTIM:\n  MAX_EPOCH: two\n"))],
        "OPTIM.MAX_EPOCH two ({t}/typo.yaml): OPTIM.MAX_EPOCH takes an integer",
    ),
    "config file of random bytes": (
        lambda r, t: [TRAIN_PY, *args_for(r, t / "o", "--config-file", t / "typo.yaml")],
        "{t}/typo.yaml (config) is not UTF-8 text",
    ),
    "continual: both stage options": (
        lambda r, t: [CONTINUAL_PY, *args_for(r, t / "o", "--classes-per-stage", "2"), "--stages", "2"],
        "Give --stages or --classes-per-stage, not both",
    ),
    "continual: too many stages": (
        lambda r, t: [CONTINUAL_PY, *args_for(r, t / "o", "--stages", "9")],
        "must lie between 2 and the number of classes (4), got 9",
    ),
    "continual: eval-only": (
        lambda r, t: [CONTINUAL_PY, *args_for(r, t / "o", "--stages", "2", "--eval-only")],
        "continual.py trains every stage itself",
    ),
    "predict: output is a folder": (
        lambda r, t: ["-m", "lamm_plugin.predict", "tiny-vit", t / "x.png", "--classes", "a,b", "--output", t],
        "--output {t} is a folder: give a file name in it",
    ),
    "interpret: no checkpoint": (
        lambda r, t: ["-m", "lamm_experiments.interpret", t / "missing"],
        "No checkpoint file or run folder",
    ),
    "prepare: typo in the dataset config": (
        lambda r, t: [
            "-m",
            "datasets.prepare",
            "Folder",
            "--root",
            r,
            "--check",
            "--dataset-config-file",
            typo_yaml(t, "DATASET:\n  FOLDER:\n    DIRR: shapes\n"),
        ],  # fmt: skip
        "Unknown config key DATASET.FOLDER.DIRR ({t}/typo.yaml). Did you mean: DATASET.FOLDER.DIR",
    ),
    "make_tables: --out is a file": (
        lambda r, t: [os.path.join(REPO, "scripts", "make_tables.py"), r, "--out", t / "x.png"],
        "--out {t}/x.png is a file: give a folder",
    ),
    "continual_table: no such folder": (
        lambda r, t: [os.path.join(REPO, "scripts", "continual_table.py"), t / "nowhere"],
        "{t}/nowhere does not exist",
    ),
}


def in_process(argv: list, capsys) -> subprocess.CompletedProcess:
    """The entry point of ``python ARGV...`` called in this process (what :func:`command` runs, without the
    seconds of a fresh interpreter); its exit status and output."""
    import importlib
    import runpy

    argv = [str(a) for a in argv]
    if argv[0] == "-m":
        main, args = importlib.import_module(argv[1].replace(".__main__", "")).main, argv[2:]
        if argv[1] == "datasets.prepare":
            from datasets.prepare.cli import main
    elif argv[0] in (TRAIN_PY, CONTINUAL_PY):
        main, args = (train if argv[0] == TRAIN_PY else continual).cli, argv[1:]
    else:
        main, args = runpy.run_path(argv[0])["main"], argv[1:]
    capsys.readouterr()
    status = main(args)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(argv, status, out.out, out.err)


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_a_users_mistake_is_one_line_naming_it_in_every_entry_point(case, data_root, tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    (tmp_path / "typo.yaml").write_bytes(bytes(range(128, 256)))
    argv, expected = MISTAKES[case]
    out = in_process(argv(data_root, tmp_path), capsys)
    assert expected.format(t=tmp_path) in one_clean_error(out)
    if case.startswith("predict"):
        assert "Predicting" not in out.stderr  # refused before any image was predicted


@pytest.mark.e2e
def test_a_relative_config_path_says_where_it_was_looked_for_and_where_it_is(data_root, tmp_path):
    relative = os.path.relpath(demo_config("LAMM_CoOp"), REPO)
    out = command(TRAIN_PY, *args_for(data_root, tmp_path / "o", "--config-file", relative), cwd=str(tmp_path))
    line = one_clean_error(out)
    assert f"relative to the current folder {tmp_path}" in line and f"it exists as {REPO}/{relative}" in line


@pytest.mark.e2e
def test_the_sweep_dry_run_checks_what_the_sweep_checks_first(tmp_path):
    sweep = os.path.join(REPO, "scripts", "sweep.py")
    line = one_clean_error(command(sweep, "fewshot", "--dry-run", SEEDS="1 x", OUTPUT=str(tmp_path)))
    assert line == "Error: SEEDS='1 x': x is not a whole number."
    line = one_clean_error(command(sweep, "fewshot", "--dry-run", DATASETS="dtd nope", OUTPUT=str(tmp_path)))
    assert "No dataset config nope.yaml in" in line and "DATASET_CONFIGS" in line
    assert command(sweep, "fewshot", "--dry-run", DATASETS="dtd", OUTPUT=str(tmp_path)).returncode == 0


def test_a_bug_keeps_its_traceback_and_verbose_shows_a_mistakes_too(capsys):
    from lamm_plugin.errors import UserError, run_main

    with pytest.raises(ZeroDivisionError):
        run_main(lambda: 1 // 0, [])

    def mistake():
        raise UserError("x.yaml: OPTIM.LR must be positive")

    assert run_main(mistake, []) == 1
    assert capsys.readouterr().err == "Error: x.yaml: OPTIM.LR must be positive\n"
    assert run_main(mistake, ["--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("Error: x.yaml: OPTIM.LR must be positive\n")


# ------------------------------------------------------------------------------------------------ options anywhere


def test_options_are_taken_wherever_they_are_written(tmp_path):
    argv = ["--root", str(tmp_path), *FLAGS, "OPTIM.MAX_EPOCH", "1", "--seed", "7", "--output-dir", str(tmp_path),
            "OPTIM.LR", "0.1", "--verbose", "--transforms", "normalize", "OPTIM.NAME", "sgd"]  # fmt: skip
    args = train.parse_args(argv)
    assert (args.seed, args.output_dir, args.verbose, args.transforms) == (7, str(tmp_path), True, ["normalize"])
    assert args.opts == ["OPTIM.MAX_EPOCH", "1", "OPTIM.LR", "0.1", "OPTIM.NAME", "sgd"]
    assert train.parse_args([*argv[:-2], "--seed=9"]).seed == 9
    args = continual.parse_args(["--root", str(tmp_path), *FLAGS, "OPTIM.MAX_EPOCH", "1", "--stages", "3"])
    assert args.stages == 3 and args.opts == ["OPTIM.MAX_EPOCH", "1"]
    assert continual.protocol_from_args(args)["stages"] == 3
    with pytest.raises(ValueError, match="Unknown option --stages .* see --help for the options of"):
        train.parse_args(["--root", str(tmp_path), *FLAGS, "OPTIM.MAX_EPOCH", "1", "--stages", "3"])
    with pytest.raises(ValueError, match="not both"):
        continual.protocol_from_args(continual.parse_args(["--stages", "2", "--classes-per-stage", "2"]))


# ------------------------------------------------------------------------------------------------ log after kill -9


@pytest.mark.e2e
def test_after_kill_9_the_log_holds_every_line_printed_before(data_root, tmp_path):
    out = tmp_path / "out"
    hold = str(tmp_path / "release")
    proc = start(data_root, out, "hold", HOLD=hold)
    try:
        deadline = time.time() + 240
        while not os.path.exists(hold + ".started") and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert os.path.exists(hold + ".started")
        time.sleep(0.5)
        proc.kill()  # SIGKILL: no handler, no flush
        printed, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    log = read(out / "log.txt")
    lines = [line for line in printed.splitlines() if line.strip()]
    assert any("LAMM_CoOp on SyntheticShapes" in line for line in lines)
    assert [line for line in lines if line not in log] == []
    assert "No checkpoint found, train from scratch" in log  # a line only the log gets (not the console)


# ------------------------------------------------------------------------------------------------ locks


def test_a_lock_whose_pid_now_runs_another_program_is_taken_over(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"host": socket.gethostname(), "pid": other.pid, "start": "another-boot/1", "time": 0}
        (tmp_path / LOCK_FILENAME).write_text(json.dumps(record))
        lock = RunLock(str(tmp_path))
        assert lock.acquire()  # the pid runs, but it is not the process that took the lock
        from lamm_plugin.run_lock import process_start

        assert json.loads((tmp_path / LOCK_FILENAME).read_text())["start"] == process_start(os.getpid())
        lock.release()
        # The owner itself (its start time matches) still holds it; the message names the lock file and the remedy.
        (tmp_path / LOCK_FILENAME).write_text(json.dumps({**record, "start": process_start(other.pid)}))
        with pytest.raises(RunLockedError) as info:
            RunLock(str(tmp_path)).acquire_or_raise()
        message = str(info.value)
        assert f"pid {other.pid}" in message and str(tmp_path / LOCK_FILENAME) in message
        assert "Wait for it to end" in message and "delete the lock file" in message
    finally:
        other.kill()
        other.wait()


def test_a_sweep_lock_whose_pid_now_runs_another_program_is_taken_over(tmp_path):
    from lamm_experiments.sweep import JobLock

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"host": socket.gethostname(), "pid": other.pid, "start": "another-boot/1", "time": 0}
        path = tmp_path / "sweep.lock"
        path.write_text(json.dumps(record))
        assert JobLock(str(tmp_path)).stale()
        from lamm_plugin.run_lock import process_start

        path.write_text(json.dumps({**record, "start": process_start(other.pid)}))
        lock = JobLock(str(tmp_path))
        assert not lock.stale() and not lock.acquire()
        assert str(path) in lock.describe() and "delete the file" in lock.describe()
    finally:
        other.kill()
        other.wait()


# ------------------------------------------------------------------------------------------------ invisible characters


def _classnames(path):
    from datasets.base import read_classnames

    return dict(read_classnames(str(path)))


def _split(path):
    from datasets.base import read_split

    return [[(d.impath, d.label, d.classname) for d in s] for s in read_split(str(path), str(path.parent / "images"))]


def _config(path):
    cfg = get_cfg_default()
    cfg.merge_from_file(str(path))
    return (cfg.OPTIM.MAX_EPOCH, cfg.DATASET.NAME)


def _predict_classes(path):
    from lamm_plugin.predict import parse_classes

    return parse_classes(str(path))


# Each reader with a file's text; the text is written plain, with a UTF-8 byte-order mark, and with CRLF line ends.
READERS = {
    "class names (ImageNet's classnames.txt)": (_classnames, "n01 Blue_square\nn02 green triangle\n"),
    "split file": (_split, None),  # the generated dataset's own split file
    "config yaml": (_config, "OPTIM:\n  MAX_EPOCH: 3\nDATASET:\n  NAME: OxfordPets\n"),
    "predict --classes file": (_predict_classes, "# classes\nblue square\ngreen triangle\n"),
    "continual --class-order file": (lambda p: continual.parse_class_order(str(p)), "yellow star\n3\n1 0\n"),
    "continual --protocol file": (lambda p: continual.read_protocol(str(p)), "stages: 2\nshared: freeze\n"),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_byte_order_mark_or_crlf_line_ends_read_the_same(reader, data_root, tmp_path):
    read_file, text = READERS[reader]
    if text is None:
        shutil.copytree(Path(data_root) / "synthetic_shapes" / "images", tmp_path / "images")
        text = (Path(data_root) / "synthetic_shapes" / "split_zhou_SyntheticShapes.json").read_text()
    results = []
    for name, data in (
        ("plain", text.encode()),
        ("bom", b"\xef\xbb\xbf" + text.encode()),
        ("crlf", b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()),
    ):
        path = tmp_path / f"{name}.txt"
        path.write_bytes(data)
        results.append(read_file(path))
    assert results[0] and results[1] == results[0] and results[2] == results[0]


def test_a_split_file_of_random_bytes_is_named(tmp_path):
    from datasets.base import read_split

    path = tmp_path / "split.json"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=rf"{path} \(split file\) is not UTF-8 text"):
        read_split(str(path), str(tmp_path))
