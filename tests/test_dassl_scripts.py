"""The sweep scripts build the documented commands and folders; parse_results aggregates over seeds."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

pytestmark = [pytest.mark.dassl, pytest.mark.e2e]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, "scripts", "*", "*.sh")))
PARSE = os.path.join(REPO, "scripts", "parse_results.py")


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_scripts_are_valid_bash(script):
    assert subprocess.run(["bash", "-n", script]).returncode == 0


def dry_run(script: str, *args: str, **env: str) -> list[str]:
    full_env = {**os.environ, "DRY_RUN": "1", "DATA": "/data", "OUTPUT": "out", **env}
    out = subprocess.run(
        ["bash", os.path.join(REPO, "scripts", script), *args], env=full_env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if "train.py" in line]


def test_fewshot_command():
    (cmd,) = dry_run("lamm/fewshot.sh", "oxford_pets", "16", "1", "OPTIM.MAX_EPOCH", "3")
    assert "--trainer LAMM_CoOp" in cmd and "--seed 1" in cmd and "--root /data" in cmd
    assert "--output-dir out/fewshot/oxford_pets/shots_16/LAMM_CoOp/vit_b16_ep50_ctxv1/seed1" in cmd
    assert cmd.endswith("DATASET.NUM_SHOTS 16 OPTIM.MAX_EPOCH 3")
    for path in (
        f"{REPO}/configs/datasets/oxford_pets.yaml",
        f"{REPO}/configs/trainers/LAMM_CoOp/vit_b16_ep50_ctxv1.yaml",
    ):
        assert path in cmd and os.path.isfile(path)
    (maple,) = dry_run("lamm/fewshot.sh", "dtd", "4", "2", TRAINER="LAMM_MaPLe", CFG="vit_b16_c2_ep5_batch4_2ctx")
    assert os.path.isfile(f"{REPO}/configs/trainers/LAMM_MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml")
    assert "out/fewshot/dtd/shots_4/LAMM_MaPLe/vit_b16_c2_ep5_batch4_2ctx/seed2" in maple
    (src,) = dry_run("lamm/fewshot.sh", "dtd", "4", "2", TRAINER="LAMM_PromptSRC", CFG="vit_b16_c2_ep20_batch4_4+4ctx")
    assert os.path.isfile(f"{REPO}/configs/trainers/LAMM_PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml")
    assert "out/fewshot/dtd/shots_4/LAMM_PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx/seed2" in src


def test_base_to_new_and_cross_dataset_commands():
    (train_cmd,) = dry_run("lamm/base2new_train.sh", "dtd", "1")
    (test_cmd,) = dry_run("lamm/base2new_test.sh", "dtd", "1", LOADEP="50")
    model_dir = "out/base2new/train_base/dtd/shots_16/LAMM_CoOp/vit_b16_ep50_ctxv1/seed1"
    assert f"--output-dir {model_dir}" in train_cmd and train_cmd.endswith("DATASET.SUBSAMPLE_CLASSES base")
    assert f"--model-dir {model_dir}" in test_cmd and "--load-epoch 50 --eval-only" in test_cmd
    assert test_cmd.endswith("DATASET.SUBSAMPLE_CLASSES new")
    (xd,) = dry_run("lamm/xd_test.sh", "imagenet_sketch", "3")
    assert "--model-dir out/xd/train/imagenet/shots_16/LAMM_CoOp/vit_b16_ep50_ctxv1/seed3" in xd
    assert "--load-epoch" not in xd and "configs/datasets/imagenet_sketch.yaml" in xd


def test_continual_commands(tmp_path):
    def continual_cmds(*args, **env):
        out = subprocess.run(
            ["bash", os.path.join(REPO, "scripts", "lamm", "continual.sh"), *args],
            env={**os.environ, "DRY_RUN": "1", "DATA": "/data", "OUTPUT": "out", **env},
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if "continual.py" in line]

    (cmd,) = continual_cmds("cifar100", "1")
    assert "vit_b16_ep50_ctxv1_frozen.yaml" in cmd and "configs/continual/cifar100_10x10.yaml" in cmd
    assert "--output-dir out/continual/cifar100/shots_16/LAMM_CoOp/vit_b16_ep50_ctxv1_frozen/shared_freeze/seed1" in cmd
    assert "--shared freeze" in cmd and cmd.endswith("DATASET.NUM_SHOTS 16")
    (cmd,) = continual_cmds("dtd", "2", "OPTIM.MAX_EPOCH", "3", TRAINER="CoOp", CFG="vit_b16_ep50", SHARED="train")
    assert "--stages 10 --order-seed 1993 --shared train" in cmd and cmd.endswith("OPTIM.MAX_EPOCH 3")
    assert "configs/continual/imagenet_r_10x20.yaml" in continual_cmds("imagenet_r", "1")[0]
    folder = tmp_path / "continual/dtd/shots_16/LAMM_CoOp/vit_b16_ep50_ctxv1_frozen/shared_freeze/seed1"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text("{}")
    assert continual_cmds("dtd", "1", OUTPUT=str(tmp_path)) == []


def test_finished_job_is_skipped(tmp_path):
    folder = tmp_path / "fewshot/dtd/shots_1/LAMM_CoOp/vit_b16_ep50_ctxv1/seed1"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text("{}")
    assert dry_run("lamm/fewshot.sh", "dtd", "1", "1", OUTPUT=str(tmp_path)) == []


def write_result(root, rel, **values):
    folder = root / rel
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(values))


def parse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, PARSE, *args], capture_output=True, text=True)


def test_parse_results_mean_std_over_seeds(tmp_path):
    for seed, acc in zip((1, 2, 3), (70.0, 72.0, 74.0)):
        write_result(tmp_path, f"fewshot/dtd/shots_16/LAMM_CoOp/cfg/seed{seed}", accuracy=acc, macro_f1=acc - 10)
    write_result(tmp_path, "fewshot/eurosat/shots_16/LAMM_CoOp/cfg/seed1", accuracy=80.123, macro_f1=1.0)
    out = parse(str(tmp_path / "fewshot"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # population std of 70, 72, 74 = 1.63
    assert any("dtd/shots_16/LAMM_CoOp/cfg" in line and "3" in line and "72.00 ± 1.63" in line for line in lines)
    assert any("eurosat/shots_16/LAMM_CoOp/cfg" in line and "80.12 ± 0.00" in line for line in lines)
    assert "average over 2 datasets of shots_16/LAMM_CoOp/cfg: 76.06" in out.stdout
    rows = json.loads(parse(str(tmp_path / "fewshot"), "--metric", "macro_f1", "--format", "json").stdout)
    assert rows[0]["mean"] == pytest.approx(62.0) and rows[0]["seeds"] == 3


def test_parse_results_base_to_new(tmp_path):
    for seed in (1, 2):
        write_result(tmp_path, f"train_base/dtd/shots_16/T/cfg/seed{seed}", accuracy=80.0)
        write_result(tmp_path, f"test_new/dtd/shots_16/T/cfg/seed{seed}", accuracy=60.0)
    out = parse(str(tmp_path), "--base2new")
    assert out.returncode == 0, out.stderr
    assert "80.00 ± 0.00" in out.stdout and "60.00 ± 0.00" in out.stdout and "68.57" in out.stdout  # 2*80*60/140
    assert parse(str(tmp_path / "nothing")).returncode == 1


@pytest.mark.parametrize(
    ("trainer", "cfg", "epochs"),
    [
        ("LAMM_CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1", "10"),
        ("CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1", "10"),
        ("LAMM_KgCoOp", "vit_b16_ep100_ctxv1", "100"),
        ("KgCoOp", "vit_b16_ep100_ctxv1", "100"),
    ],
)
def test_base_to_new_commands_of_more_hosts(trainer, cfg, epochs):
    env = {"TRAINER": trainer, "CFG": cfg}
    (train_cmd,) = dry_run("lamm/base2new_train.sh", "dtd", "1", **env)
    (test_cmd,) = dry_run("lamm/base2new_test.sh", "dtd", "1", LOADEP=epochs, **env)
    model_dir = f"out/base2new/train_base/dtd/shots_16/{trainer}/{cfg}/seed1"
    assert f"--trainer {trainer}" in train_cmd and f"--output-dir {model_dir}" in train_cmd
    assert os.path.isfile(f"{REPO}/configs/trainers/{trainer}/{cfg}.yaml") and f"{trainer}/{cfg}.yaml" in train_cmd
    assert f"--model-dir {model_dir}" in test_cmd and f"--load-epoch {epochs} --eval-only" in test_cmd
