"""``benchmarks/gpu_check.sh`` in its CPU mode: every trainer x precision row, the reload row, isolated failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

pytestmark = pytest.mark.dassl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "gpu_check.sh")
TRAINERS = ("LAMM_CoOp", "LAMM_MaPLe", "LAMM_VPT")
PRECISIONS = ("fp32", "bf16")  # CPU precisions that run as themselves
# 4 classes, 2 shots, 4 test images per class.
TINY = [
    "--device", "cpu", "--backbone", "tiny-vit", "--workers", "0", "--shots", "2", "--test-per-class", "4",
    "DATASET.SYNTHETIC.NUM_CLASSES", "4",
    "DATASET.SYNTHETIC.TRAIN_PER_CLASS", "2",
    "DATASET.SYNTHETIC.VAL_PER_CLASS", "1",
]  # fmt: skip


def gpu_check(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict[str, str]]]:
    """Run the script; returns the process and the rows of its main table (read from ``table.md``)."""
    output = tmp_path / "out"
    cmd = ["bash", SCRIPT, "--root", str(tmp_path / "data"), "--output", str(output), *args]
    env = {**os.environ, "PYTHON": sys.executable}  # the interpreter running the tests, which has Dassl
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    text = (output / "table.md").read_text()
    lines = [line for line in text.split("## ")[0].splitlines() if line.startswith("|")]
    headers = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [dict(zip(headers, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]
    assert text.strip() in proc.stdout  # the table printed is the table written
    return proc, rows


def test_cpu_mode_trains_every_trainer_and_precision_and_reloads(tmp_path):
    proc, rows = gpu_check(tmp_path, "--precisions", *PRECISIONS, *TINY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trained = [row for row in rows if not row["precision"].endswith("(reload)")]
    assert [(row["trainer"], row["precision"]) for row in trained] == [(t, p) for t in TRAINERS for p in PRECISIONS]
    assert all(row["result"] == "ok" for row in rows), rows
    for row in trained:
        assert 0 <= float(row["accuracy (%)"]) <= 100 and float(row["ms/step"]) > 0 and row["peak MB"] == "-"
    (reload,) = [row for row in rows if row["precision"].endswith("(reload)")]
    assert reload == {**reload, "trainer": "LAMM_CoOp", "precision": "fp32 (reload)"}
    assert reload["accuracy (%)"] == trained[0]["accuracy (%)"]
    assert "(skipped: --device cpu)" in proc.stdout and "7 of 7 runs ok" in proc.stdout

    results = json.loads((tmp_path / "out/runs/LAMM_CoOp_fp32_reload/results.json").read_text())
    assert results["checkpoint"]["epoch"] == 1 and results["timings"]["ms_per_step"] is None
    assert results["timings"]["peak_memory_mb"] is None


def test_a_failing_case_is_reported_and_fails_the_command(tmp_path):
    # The tiny CLIP has 3 text blocks: a prompt depth of 9 raises while the model is built.
    proc, rows = gpu_check(
        tmp_path, "--trainers", "LAMM_MaPLe", "LAMM_VPT", "--precisions", "fp32", *TINY,
        "TRAINER.LAMM_MAPLE.PROMPT_DEPTH", "9",
    )  # fmt: skip
    assert proc.returncode == 1
    maple, vpt, reload = rows
    assert maple["result"].startswith("error: ValueError: prompt_depth=9 exceeds") and maple["accuracy (%)"] == "-"
    assert vpt["result"] == "ok" and reload["result"] == "ok" and reload["trainer"] == "LAMM_VPT"
    assert "Traceback" in (tmp_path / "out/runs/LAMM_MaPLe_fp32/console.txt").read_text()
