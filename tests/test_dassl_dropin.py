"""The drop-in recipe: one import line in a CoOp-style host repository's ``train.py``.

A minimal host (its own ``CoOp`` trainer, ``OxfordPets`` dataset, ``extend_cfg`` and yaml files) is written to a
temporary folder; the plugin is importable as if pip-installed, without this repository's ``trainers`` and
``datasets`` packages. ``--trainer LAMM_CoOp`` then trains, evaluates and reloads with the host's data and yaml,
and the host's own ``CoOp`` keeps working.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

from lamm_experiments import synthetic  # noqa: E402

pytestmark = [pytest.mark.dassl, pytest.mark.e2e]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DROP_IN_LINE = "import lamm_plugin.dassl  # noqa: F401"

HOST_TRAIN = f"""
import argparse

import torch
from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import set_random_seed, setup_logger

{DROP_IN_LINE}

import datasets.oxford_pets
import trainers.coop


def extend_cfg(cfg):
    from yacs.config import CfgNode as CN

    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16
    cfg.TRAINER.COOP.CSC = False
    cfg.TRAINER.COOP.CTX_INIT = ""
    cfg.TRAINER.COOP.PREC = "fp16"
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"


def setup_cfg(args):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_file(args.dataset_config_file)
    cfg.merge_from_file(args.config_file)
    cfg.DATASET.ROOT = args.root
    cfg.OUTPUT_DIR = args.output_dir
    cfg.SEED = args.seed
    cfg.TRAINER.NAME = args.trainer
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def main(args):
    cfg = setup_cfg(args)
    set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return
    trainer.train()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=str, default="")
    parser.add_argument("--output-dir", type=str, default="")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config-file", type=str, default="")
    parser.add_argument("--dataset-config-file", type=str, default="")
    parser.add_argument("--trainer", type=str, default="")
    parser.add_argument("--eval-only", action="store_true")
    parser.add_argument("--model-dir", type=str, default="")
    parser.add_argument("--load-epoch", type=int)
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER)
    main(parser.parse_args())
"""

HOST_COOP = """
import torch
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.optim import build_optimizer


@TRAINER_REGISTRY.register()
class CoOp(TrainerX):
    def build_model(self):
        print(f"host CoOp with N_CTX={self.cfg.TRAINER.COOP.N_CTX}")
        self.model = torch.nn.Linear(3 * 32 * 32, self.num_classes)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.register_model("linear", self.model, self.optim, None)

    def model_inference(self, input):
        return self.model(input.flatten(1))
"""

HOST_OXFORD_PETS = """
import json
import os

from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum


@DATASET_REGISTRY.register()
class OxfordPets(DatasetBase):
    dataset_dir = "oxford_pets"

    def __init__(self, cfg):
        root = os.path.join(cfg.DATASET.ROOT, self.dataset_dir)
        with open(os.path.join(root, "split_zhou_OxfordPets.json")) as f:
            split = json.load(f)

        def read(items):
            return [Datum(impath=os.path.join(root, "images", p), label=y, classname=c) for p, y, c in items]

        train, val, test = read(split["train"]), read(split["val"]), read(split["test"])
        train = self.generate_fewshot_dataset(train, num_shots=cfg.DATASET.NUM_SHOTS)
        labels = sorted({d.label for d in test})
        half = (len(labels) + 1) // 2
        keep = {"all": labels, "base": labels[:half], "new": labels[half:]}[cfg.DATASET.SUBSAMPLE_CLASSES]
        relabel = {y: i for i, y in enumerate(keep)}

        def subsample(items):
            return [Datum(d.impath, relabel[d.label], d.domain, d.classname) for d in items if d.label in relabel]

        super().__init__(train_x=subsample(train), val=subsample(val), test=subsample(test))
"""

HOST_LAMM_YAML = """
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: 4
  TEST:
    BATCH_SIZE: 16
  NUM_WORKERS: 0
INPUT:
  SIZE: (32, 32)
  PIXEL_MEAN: [0.48145466, 0.4578275, 0.40821073]
  PIXEL_STD: [0.26862954, 0.26130258, 0.27577711]
  TRANSFORMS: ["normalize"]
OPTIM:
  NAME: "sgd"
  LR: 0.01
  MAX_EPOCH: 2
  LR_SCHEDULER: "cosine"
  WARMUP_EPOCH: 1
  WARMUP_TYPE: "constant"
  WARMUP_CONS_LR: 1e-5
TRAIN:
  PRINT_FREQ: 1
MODEL:
  BACKBONE:
    NAME: "tiny-vit"
TRAINER:
  COOP:
    N_CTX: 4
  LAMM_COOP:
    CTX_INIT: "a photo of a"
    PREC: "fp32"
  LAMM:
    LOGIT_WEIGHT: 0.1
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    base = tmp_path_factory.mktemp("host")
    repo = base / "CoOp"
    files = {
        "train.py": HOST_TRAIN,
        "trainers/__init__.py": "",
        "trainers/coop.py": HOST_COOP,
        "datasets/__init__.py": "",
        "datasets/oxford_pets.py": HOST_OXFORD_PETS,
        "configs/datasets/oxford_pets.yaml": 'DATASET:\n  NAME: "OxfordPets"\n',
        "configs/trainers/LAMM_CoOp/tiny.yaml": HOST_LAMM_YAML,
    }
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(textwrap.dedent(text).lstrip())
    data = base / "data"
    synthetic.write_image_folder(
        data / "oxford_pets",
        num_train=4,
        num_val=2,
        num_test=4,
        num_classes=4,
        split_filename="split_zhou_OxfordPets.json",
    )
    # The plugin as a pip install provides it: importable, without this repository's trainers/ and datasets/.
    site = base / "site-packages"
    site.mkdir()
    (site / "lamm_plugin").symlink_to(os.path.join(REPO, "lamm_plugin"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    return repo, data, env


def host_command(host, trainer, output_dir, *extra):
    repo, data, _ = host
    return [
        sys.executable, "train.py",
        "--root", str(data),
        "--trainer", trainer,
        "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
        "--config-file", "configs/trainers/LAMM_CoOp/tiny.yaml",
        "--output-dir", str(output_dir),
        *extra,
        "DATASET.NUM_SHOTS", "2",
    ]  # fmt: skip


def finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out[-4000:]
    return out


def test_drop_in_recipe(host, tmp_path):
    repo, _, env = host
    assert DROP_IN_LINE in (repo / "train.py").read_text()
    start = {"cwd": repo, "env": env, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    # The host's own CoOp (with its own TRAINER.COOP node) and LAMM_CoOp run side by side.
    host_coop = subprocess.Popen(host_command(host, "CoOp", tmp_path / "coop", "--eval-only"), **start)
    lamm = subprocess.Popen(host_command(host, "LAMM_CoOp", tmp_path / "lamm"), **start)
    coop_out, lamm_out = finish(host_coop), finish(lamm)

    assert "host CoOp with N_CTX=4" in coop_out and "* accuracy:" in coop_out
    assert "Building coop (with LAMM)" in lamm_out and "logit_alignment" in lamm_out
    trained = json.loads((tmp_path / "lamm" / "results.json").read_text())
    assert trained["dataset"] == "OxfordPets" and trained["config"]["TRAINER"]["LAMM"]["LOGIT_WEIGHT"] == 0.1
    assert f"* accuracy: {trained['accuracy']:.1f}%" in lamm_out

    # Reload on the new half of the classes: labels are matched by class name.
    load = (
        "--eval-only",
        "--model-dir",
        str(tmp_path / "lamm"),
        "--load-epoch",
        "2",
        "DATASET.SUBSAMPLE_CLASSES",
        "new",
    )
    out = finish(subprocess.Popen(host_command(host, "LAMM_CoOp", tmp_path / "new", *load), **start))
    new = json.loads((tmp_path / "new" / "results.json").read_text())
    assert "val_result=None" in out and new["checkpoint"]["epoch"] == 2
    assert new["classnames"] == trained["classnames"][2:]


def test_drop_in_line_gives_every_lamm_trainer(host, tmp_path):
    """The same one line gives LAMM_CoCoOp and LAMM_KgCoOp (their nodes too) in the host repository."""
    _, _, env = host
    start = {"cwd": host[0], "env": env, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    runs = {}
    for trainer in ("LAMM_CoCoOp", "LAMM_KgCoOp"):
        opts = ("OPTIM.MAX_EPOCH", "1", f"TRAINER.{trainer.upper()}.PREC", "fp32")
        runs[trainer] = subprocess.Popen(host_command(host, trainer, tmp_path / trainer) + list(opts), **start)
    for trainer, process in runs.items():
        out = finish(process)
        method = trainer.split("_")[1].lower()
        assert f"Building {method} (with LAMM)" in out and "logit_alignment" in out
        assert ("kg_alignment" in out) is (trainer == "LAMM_KgCoOp")
        result = json.loads((tmp_path / trainer / "results.json").read_text())
        assert result["method"] == method and result["dataset"] == "OxfordPets"
