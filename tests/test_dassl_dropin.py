"""The drop-in recipe: one import line in a CoOp-style host repository's ``train.py``.

* The real hosts (CoOp, MaPLe, PromptSRC, KgCoOp and the official LAMM code, from ``../shared/originals``): a
  copy of each host's own ``train.py`` with its ``datasets/``, ``trainers/``, ``clip/`` and ``configs/``, the
  README's line added where the README says, trains ``LAMM_<Method>`` of each method the repository introduced (so
  every LAMM trainer runs in the host of its method), with a LAMM key set on the command line, on the generated
  shapes in the host's DTD layout read by the host's own dataset class; then ``--eval-only`` gives the same
  accuracy. One process per host runs all of its trainers (``tests/runs.py``).
* The config flows of hosts that call Dassl's ``clean_cfg`` (DePT before merging its yaml files, Dassl's
  ``tools/train.py`` after) or add other nodes (PromptKD), reproduced step by step, train with the user's settings.
* A minimal host (its own ``CoOp`` trainer, ``OxfordPets`` dataset, ``extend_cfg`` and yaml files): the host's own
  ``CoOp`` keeps working beside ``LAMM_CoOp``, and a run reloads on the new half of the classes.

The plugin is importable in the hosts as if pip-installed, without this repository's ``trainers`` and ``datasets``
packages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

from dassl.config import clean_cfg, get_cfg_default  # noqa: E402
from dassl.engine import build_trainer  # noqa: E402
from runs import demo_config, results, tiny_opts, train_args  # noqa: E402
from yacs.config import CfgNode  # noqa: E402

import train  # noqa: E402
from lamm_experiments import synthetic  # noqa: E402
from lamm_plugin.dassl import LAMM_TRAINERS, ConfigKeyError  # noqa: E402

pytestmark = [pytest.mark.dassl, pytest.mark.e2e]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DROP_IN_LINE = "import lamm_plugin.dassl  # noqa: F401"


def readme_drop_in_line() -> str:
    """The one line that README's drop-in section tells a user to add to a host's ``train.py``."""
    section = Path(REPO, "README.md").read_text().split("## Drop-in use", 1)[1].split("\n## ", 1)[0]
    (line,) = [line for line in section.splitlines() if line.startswith("import lamm_plugin")]
    return line


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> dict[str, str]:
    """The environment of a host process: the plugin importable as a pip install provides it, without this
    repository's ``trainers/`` and ``datasets/`` (the hosts have their own)."""
    site = tmp_path_factory.mktemp("site-packages")
    (site / "lamm_plugin").symlink_to(os.path.join(REPO, "lamm_plugin"))
    return {**os.environ, "PYTHONPATH": str(site)}


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
def host(tmp_path_factory, plugin_site):
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
    synthetic.write_host_layout(data, "oxford_pets", {"train": 4, "val": 2, "test": 4}, num_classes=4)
    return repo, data, plugin_site


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


@pytest.mark.e2e
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


# ---- the real hosts --------------------------------------------------------------------------------------------------
#: Host -> the variable naming its checkout (.ci/run: ../shared/originals/<repo>) and the LAMM trainers of the methods
#: that the repository introduced (the ones it copied from another host run in that host): each LAMM trainer runs in
#: the repository of its method, and every host runs at least one.
REAL_HOSTS = {
    "CoOp": ("COOP_ORIGINAL_REPO", ("LAMM_CoOp", "LAMM_CoCoOp")),
    "MaPLe": ("MAPLE_ORIGINAL_REPO", ("LAMM_MaPLe", "LAMM_IVLP", "LAMM_VPT")),
    "PromptSRC": ("PROMPTSRC_ORIGINAL_REPO", ("LAMM_PromptSRC",)),
    "KgCoOp": ("KGCOOP_ORIGINAL_REPO", ("LAMM_KgCoOp", "LAMM_ProGrad")),  # its train.py registers ProGrad too
    "LAMM": ("LAMM_OFFICIAL_REPO", ("LAMM_CoOp", "LAMM_MaPLe")),
}


def test_every_lamm_trainer_runs_in_a_real_host():
    covered = {trainer for _, trainers in REAL_HOSTS.values() for trainer in trainers}
    assert set(LAMM_TRAINERS) <= covered, f"add {set(LAMM_TRAINERS) - covered} to its method's host in REAL_HOSTS"


#: What a host's train.py brings along: its packages, and its top-level modules (LAMM's trainers import helpers.py).
HOST_FOLDERS = ("datasets", "trainers", "clip", "configs")
#: A user's LAMM setting that must reach every run (the default is 0.05).
USER_SETTING = ("TRAINER.LAMM.LOGIT_WEIGHT", "0.5")


def host_trainers(repo: Path) -> set[str]:
    """The LAMM trainers of the trainers that ``repo``'s train.py imports and registers (those it can run)."""
    names = set()
    for module in re.findall(r"^import trainers\.(\w+)", (repo / "train.py").read_text(), re.M):
        source = (repo / "trainers" / f"{module}.py").read_text()
        names |= set(re.findall(r"@TRAINER_REGISTRY\.register\(\)\s*\nclass (\w+)", source))
    return {f"LAMM_{name}" for name in names} & set(LAMM_TRAINERS)


def copy_host(original: Path, target: Path, line: str) -> Path:
    """A copy of a host's train.py (with ``line`` after its last trainer import), its folders and top modules."""
    target.mkdir()
    for name in HOST_FOLDERS:
        shutil.copytree(original / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    for module in original.glob("*.py"):
        shutil.copy(module, target / module.name)
    lines = (target / "train.py").read_text().splitlines(keepends=True)
    last = max(i for i, text in enumerate(lines) if text.startswith("import trainers."))
    lines.insert(last + 1, line + "\n")
    (target / "train.py").write_text("".join(lines))
    return target


@pytest.fixture(scope="module")
def dtd_root(tmp_path_factory) -> Path:
    """The generated shapes in the hosts' DTD layout (4 classes; 4 train, 2 val, 4 test images each)."""
    root = tmp_path_factory.mktemp("data")
    synthetic.write_host_layout(root, "dtd", {"train": 4, "val": 2, "test": 4}, num_classes=4)
    return root


@pytest.mark.e2e
@pytest.mark.parametrize("name", REAL_HOSTS)
def test_drop_in_inside_the_real_hosts_train_py(name, dtd_root, plugin_site, tmp_path):
    variable, trainers = REAL_HOSTS[name]
    original = Path(os.environ.get(variable, ""))
    if not (os.environ.get(variable) and (original / "train.py").is_file()):
        pytest.skip(f"set {variable} to a checkout of the original code to run its train.py")
    repo = copy_host(original, tmp_path / name, readme_drop_in_line())
    assert set(trainers) <= host_trainers(repo)

    def args(trainer: str, out: Path, *extra: str) -> list[str]:
        return [
            "--root", str(dtd_root), "--seed", "1", "--trainer", trainer,
            "--dataset-config-file", "configs/datasets/dtd.yaml", "--config-file", demo_config(trainer),
            "--output-dir", str(out), *extra,
            "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "2", *USER_SETTING,
        ]  # fmt: skip

    runs = []
    for trainer in trainers:
        out = tmp_path / "output" / trainer
        runs += [args(trainer, out), args(trainer, out.with_name(trainer + "-eval"), "--eval-only", "--model-dir",
                                          str(out), "--load-epoch", "2")]  # fmt: skip
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    command = [
        sys.executable,
        os.path.join(REPO, "tests", "runs.py"),
        str(repo / "train.py"),
        str(tmp_path / "runs.json"),
    ]
    done = subprocess.run(command, cwd=repo, env=plugin_site, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]

    for trainer in trainers:
        trained = json.loads((tmp_path / "output" / trainer / "results.json").read_text())
        evaluated = json.loads((tmp_path / "output" / (trainer + "-eval") / "results.json").read_text())
        assert (trained["trainer"], trained["dataset"], trained["epoch"]) == (trainer, "DescribableTextures", 2)
        assert trained["config"]["TRAINER"]["LAMM"]["LOGIT_WEIGHT"] == 0.5, trainer
        assert trained["classnames"] == synthetic.classnames(4) and trained["num_samples"] == 16
        assert evaluated["checkpoint"]["epoch"] == 2, trainer
        assert evaluated["accuracy"] == trained["accuracy"] and evaluated["per_class"] == trained["per_class"], trainer


# ---- the config flows of DePT, Dassl's tools/train.py and PromptKD ------------------------------------------------
def dept_nodes(cfg) -> None:
    """What DePT's extend_cfg adds (Koorye/DePT, train.py): staged learning rates for its own layers, its linear
    probe and FiLM nodes, the modules to update, and the CoOp, CoCoOp and MaPLe nodes (CoOp's with KgCoOp's W)."""
    cfg.OPTIM.LR_EXP = 6.5
    cfg.OPTIM.STAGED_LR = True
    cfg.OPTIM.NEW_LAYERS = ["linear_probe", "film"]
    cfg.OPTIM.BASE_LR_MULT = 1.0
    cfg.TRAIN.CHECKPOINT_FREQ = -1
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    cfg.TRAINER.NAMES_TO_UPDATE = ["prompt_learner", "linear_probe", "film"]
    cfg.TRAINER.LINEAR_PROBE = CfgNode({"TYPE": "linear", "WEIGHT": 0.7, "TEST_TIME_FUSION": True})
    cfg.TRAINER.FILM = CfgNode({"LINEAR_PROBE": True})
    coop = {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp16", "CLASS_TOKEN_POSITION": "end"}
    cfg.TRAINER.COOP = CfgNode({**coop, "ALPHA": 1.0, "W": 2.0})
    cfg.TRAINER.COCOOP = CfgNode({"N_CTX": 4, "CTX_INIT": "a photo of a", "PREC": "fp16"})
    cfg.TRAINER.MAPLE = CfgNode({"N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH": 9})


def promptkd_nodes(cfg) -> None:
    """What PromptKD's extend_cfg adds (zhengli97/PromptKD, train.py) beyond CoOp's: a plain string key in TRAINER
    beside the nodes, its own node, TEST.NO_TEST."""
    cfg.TRAINER.COOP = CfgNode(
        {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp16", "CLASS_TOKEN_POSITION": "end"}
    )
    cfg.TRAINER.MODAL = "base2novel"
    cfg.TRAINER.PROMPTKD = CfgNode({"N_CTX_VISION": 4, "N_CTX_TEXT": 4, "KD_WEIGHT": 1.0, "TEACHER_NAME": "ViT/L-14"})
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    cfg.TEST.NO_TEST = False


def host_setup_cfg(host: str, args):
    """The host's setup_cfg, step by step: DePT calls ``clean_cfg(cfg, "COOP")`` before its extend_cfg and the merges,
    Dassl's tools/train.py ``clean_cfg(cfg, args.trainer)`` after them (its extend_cfg adds nothing), PromptKD none.
    This repository's dataset nodes (the generated shapes) are added as a host adds its own."""
    cfg = get_cfg_default()
    if host == "DePT":
        clean_cfg(cfg, "COOP")
    {"DePT": dept_nodes, "PromptKD": promptkd_nodes, "Dassl": lambda cfg: None}[host](cfg)
    train.extend_cfg(cfg)
    cfg.merge_from_file(args.dataset_config_file)
    cfg.merge_from_file(args.config_file)
    train.reset_cfg(cfg, args)
    cfg.merge_from_list(args.opts)
    if host == "Dassl":
        clean_cfg(cfg, args.trainer)
    cfg.freeze()
    return cfg


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("shapes"))


@pytest.mark.parametrize("host", ["DePT", "Dassl", "PromptKD"])
def test_host_config_flows_train_with_the_users_settings(host, shapes_root, tmp_path):
    # A LAMM key in the yaml file and in the command line, a method key in the command line.
    config = tmp_path / "lamm_coop.yaml"
    config.write_text(Path(demo_config("LAMM_CoOp")).read_text() + "  LAMM:\n    TEMPERATURE: 3.0\n")
    opts = ("TRAINER.LAMM.LOGIT_WEIGHT", "0.5", "TRAINER.LAMM_COOP.N_CTX", "3")
    if host == "DePT":  # its staged learning rates, with the learned tensors of LAMM_CoOp in the base group
        opts += ("OPTIM.BASE_LR_MULT", "0.5")
    out = str(tmp_path / "out")
    args = train.parse_args(
        train_args("LAMM_CoOp", shapes_root, out, config=str(config), small=tiny_opts(epochs=1), opts=opts)
    )
    cfg = host_setup_cfg(host, args)
    assert "LOGIT_WEIGHT: 0.5" in str(cfg) and "TEMPERATURE: 3.0" in str(cfg)  # what the host prints
    trainer = build_trainer(cfg)
    if host == "DePT":
        assert trainer.sched.successor.base_lrs == [cfg.OPTIM.LR * 0.5]
        assert trainer.optim.param_groups[0]["params"] == trainer.model.trainable_parameters()
    trainer.train()
    assert (trainer.lamm_cfg.logit_weight, trainer.lamm_cfg.temperature, trainer.method_config().n_ctx) == (0.5, 3.0, 3)
    saved = results(out)["config"]["TRAINER"]
    assert (saved["LAMM"]["LOGIT_WEIGHT"], saved["LAMM"]["TEMPERATURE"], saved["LAMM_COOP"]["N_CTX"]) == (0.5, 3.0, 3)
    assert results(out)["accuracy"] is not None


def test_a_config_that_kept_no_lamm_nodes_is_refused():
    # A plain copy of the defaults (the nodes, but no kept references), cleaned as Dassl's tools/train.py does.
    cfg = CfgNode(get_cfg_default())
    cfg.TRAINER.NAME = "LAMM_CoOp"
    clean_cfg(cfg, "LAMM_CoOp")
    with pytest.raises(ConfigKeyError, match=r"TRAINER\.LAMM not in the config of LAMM_CoOp: .* import lamm_plugin"):
        build_trainer(cfg)
