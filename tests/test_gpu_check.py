"""``benchmarks/gpu_check.sh``: its cases are the registry's, and its CPU mode runs, reports and isolates failures."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

from cases import HOSTS  # noqa: E402

from lamm_plugin.layout import PRECISIONS, RESULTS_FILENAME  # noqa: E402

pytestmark = pytest.mark.dassl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "gpu_check.sh")


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(REPO, "benchmarks", "gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def table_rows(output, stdout: str) -> list[dict[str, str]]:
    """The rows of the case table in ``output/table.md`` (the first table), checked to be what was printed last."""
    text = (output / "table.md").read_text()
    block = text[text.index("\n|") + 1 :].split("\n\n")[0]
    lines = [line for line in block.splitlines() if line.startswith("|")]
    headers = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert text.strip() in stdout  # the table printed last is the table written
    return [dict(zip(headers, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


def gpu_check(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict[str, str]]]:
    """Run the script; returns the process and the rows of its table (read from ``table.md``)."""
    output = tmp_path / "out"
    cmd = ["bash", SCRIPT, "--output", str(output), *args]
    env = {**os.environ, "PYTHON": sys.executable}  # the interpreter running the tests, which has Dassl
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    return proc, table_rows(output, proc.stdout)


def gpu_check_here(capsys, *args: str) -> tuple[int, str]:
    """``gpu_check.py``'s ``main`` in this process (no case is started here); its exit code and stdout."""
    code = _module().main(list(args))
    return code, capsys.readouterr().out


@pytest.mark.e2e
def test_the_cases_are_every_registered_trainer_in_every_precision_and_the_gpu_benchmarks(capsys):
    """The list comes from the registry; it is checked here against the hosts written out by hand."""
    code, out = gpu_check_here(capsys, "--list")
    assert code == 0
    names = out.split()
    trainers = [h.lamm_trainer for h in HOSTS.values() if h.lamm_trainer] + [h.trainer for h in HOSTS.values()]
    assert "IVLP" in trainers and "ZeroshotCLIP" in trainers and "LAMM_PromptSRC" in trainers
    expected = {f"{t}:{p}" for t in trainers for p in PRECISIONS}
    expected |= {"tests", "bench:official-100", "bench:official-1000"}
    assert sorted(names) == sorted(expected)
    # Every training case has its CPU seconds, the base of its timeout.
    cpu = _module().load_seconds(os.path.join(REPO, "benchmarks", "gpu_check_seconds.json"))
    assert set(cpu) == {n for n in names if ":" in n and not n.startswith("bench:")}

    code, out = gpu_check_here(capsys, "--list", "--only", "LAMM_MaPLe:*", "bench:*", "--skip", "*:amp")
    assert out.split() == ["LAMM_MaPLe:fp32", "LAMM_MaPLe:fp16", "LAMM_MaPLe:bf16", "bench:official-100",
                                  "bench:official-1000"]  # fmt: skip


def test_timeouts_are_the_ratio_times_the_cpu_seconds():
    gpu_check_module = _module()
    args = gpu_check_module.parse_args(["--timeout-ratio", "8", "--min-timeout", "60"])
    cpu = {"LAMM_CoOp:fp32": 12.0, "CoOp:fp32": 5.0}
    assert gpu_check_module.case_timeout(args, "LAMM_CoOp:fp32", cpu) == 96.0
    assert gpu_check_module.case_timeout(args, "CoOp:fp32", cpu) == 60.0  # at least --min-timeout
    assert gpu_check_module.case_timeout(args, "VPT:fp32", cpu) == 96.0  # not measured: the largest
    args = gpu_check_module.parse_args(["--timeout", "30"])
    assert gpu_check_module.case_timeout(args, "LAMM_CoOp:fp32", cpu) == 30.0


@pytest.mark.e2e
def test_cpu_smoke_trains_reloads_and_writes_everything_under_one_folder(tmp_path):
    proc, rows = gpu_check(tmp_path, "--device", "cpu", "--smoke", "--archive", str(tmp_path / "check.tar.gz"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [(r["case"], r["precision"], r["status"]) for r in rows] == [
        ("LAMM_CoOp:fp32", "fp32", "ok"),
        ("reload:LAMM_CoOp:fp32", "fp32", "ok"),
    ]
    train, reload = rows
    assert 0 <= float(train["accuracy (%)"]) <= 100 and reload["accuracy (%)"] == train["accuracy (%)"]
    # No CUDA graph on a CPU; our attention checked itself on its first use.
    assert train["fast paths"] == "graph step not used, graph eval not used, attention passed"
    assert float(train["seconds"]) > 0 and train["detail"].endswith("ms/step")
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"] and summary["counts"]["ok"] == 2 and summary["cases"][0]["timeout"] >= 60
    assert summary["fell_back"] == [] and "no fast path fell back" in proc.stdout
    # The per-path table: our attention passed in the one training run, nothing fell back.
    assert re.search(r"\| text_attention \(attention\) +\| 1 +\| 0 ", (out / "table.md").read_text())
    assert summary["cases"][0]["fast_paths"]["text_attention"]["state"] == "passed"
    assert set(json.loads((out / "seconds.json").read_text())["seconds"]) == {"LAMM_CoOp:fp32"}
    assert (out / "data").is_dir()  # the synthetic set, under the output folder too
    results = json.loads((out / "runs/LAMM_CoOp_fp32_reload" / RESULTS_FILENAME).read_text())
    assert results["checkpoint"]["epoch"] == 1
    with tarfile.open(tmp_path / "check.tar.gz") as tar:
        names = tar.getnames()
    assert "gpu_check/table.md" in names and "gpu_check/runs/LAMM_CoOp_fp32/console.txt" in names
    assert not any(".pth.tar" in name for name in names)  # checkpoints left out


@pytest.mark.e2e
def test_a_failing_case_is_reported_and_fails_the_command(tmp_path):
    # The tiny CLIP has 3 text blocks: a prompt depth of 9 raises while the model is built.
    proc, rows = gpu_check(
        tmp_path, "--device", "cpu", "--smoke", "--only", "LAMM_MaPLe:fp32", "LAMM_VPT:fp32", "reload:*",
        "--", "TRAINER.LAMM_MAPLE.PROMPT_DEPTH", "9",
    )  # fmt: skip
    assert proc.returncode == 1
    by_case = {row["case"]: row for row in rows}
    maple = by_case["LAMM_MaPLe:fp32"]
    assert maple["status"] == "fail" and maple["detail"].startswith("ValueError: prompt_depth=9 exceeds")
    assert maple["accuracy (%)"] == "-"
    assert by_case["LAMM_VPT:fp32"]["status"] == "ok" and by_case["reload:LAMM_VPT:fp32"]["status"] == "ok"
    assert "Traceback" in (tmp_path / "out/runs/LAMM_MaPLe_fp32/console.txt").read_text()


@pytest.mark.e2e
def test_past_the_deadline_cases_are_skipped_and_the_table_is_still_written(tmp_path, capsys):
    code, out = gpu_check_here(
        capsys, "--output", str(tmp_path / "out"), "--device", "cpu", "--smoke", "--deadline", "0"
    )
    rows = table_rows(tmp_path / "out", out)
    assert code == 1
    assert rows[0]["case"] == "LAMM_CoOp:fp32" and rows[0]["status"] == "skipped"
    assert rows[-1] == {**rows[-1], "case": "reload:-", "status": "fail"}


def test_the_fast_path_table_says_which_paths_passed_and_which_fell_back():
    module = _module()
    record = {
        "cuda_graph_step": {"state": "passed", "difference": 0.0},
        "cuda_graph_eval": {"state": "not used"},
        "text_attention": {"state": "passed", "difference": 2e-7},
    }
    broken = {**record, "cuda_graph_step": {"state": "fell back", "difference": 0.03}}
    cases = [module.Case("A:fp16", "train", "fp16", results={"fast_paths": record}),
             module.Case("B:fp16", "train", "fp16", results={"fast_paths": broken})]  # fmt: skip
    cell = module.fast_path_cell({"fast_paths": broken})
    assert cell == "graph step fell back (0.03), graph eval not used, attention passed"
    lines = module.fast_path_table(cases).splitlines()
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]] for line in lines[2:]}
    assert rows["cuda_graph_step (graph step)"] == ["1", "1", "0", "0", "0.03", "B:fp16"]
    assert rows["cuda_graph_eval (graph eval)"] == ["0", "0", "0", "2", "-", "-"]
    assert rows["text_attention (attention)"] == ["2", "0", "0", "0", "2e-07", "-"]
    assert module.fell_back(cases) == ["B:fp16: cuda_graph_step"]
