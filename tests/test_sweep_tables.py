"""From sweep to tables: the sweep runner (failures, progress, locks, several workers, submitit) and make_tables.

The fast tests run the real sweep scripts with ``PYTHON`` set to ``tests/fixtures/fake_train.py`` (a stand-in for
``train.py`` that writes a ``results.json``); ``test_miniature_sweep_to_tables`` (slow) trains for real on the
synthetic set with the tiny random CLIP.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import statistics
import subprocess
import sys
from collections import Counter

import pytest

from lamm_experiments import sweep as S
from lamm_experiments import tables as T

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(REPO, "scripts", "lamm", "sweep.sh")
MAKE_TABLES = os.path.join(REPO, "scripts", "make_tables.py")
FAKE = os.path.join(REPO, "tests", "fixtures", "fake_train.py")
METHODS = (("CoOp", "vit_b16_ep50"), ("LAMM_CoOp", "vit_b16_ep50_ctxv1"))


@pytest.fixture
def fake_env(tmp_path) -> dict[str, str]:
    """Environment for the sweep scripts with the stand-in trainer; ``FAKE_TRAIN_LOG`` lists every call."""
    wrapper = tmp_path / "python_fake"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(0o755)
    return {
        **os.environ,
        "PYTHON": str(wrapper),
        "SWEEP_PYTHON": sys.executable,
        "PYTHONPATH": REPO,
        "FAKE_TRAIN_LOG": str(tmp_path / "calls.txt"),
        "DATA": str(tmp_path / "data"),
        "OUTPUT": str(tmp_path / "output"),
        "SEEDS": "1 2",
    }


def read(path) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def load(path) -> dict:
    return json.loads(read(path))


def sweep(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", SWEEP, *args], env={**env, **extra}, capture_output=True, text=True, timeout=300)


def calls(env: dict[str, str]) -> list[str]:
    path = env["FAKE_TRAIN_LOG"]
    return open(path).read().split() if os.path.exists(path) else []


def make_tables(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, MAKE_TABLES, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def run_all_benchmarks(env: dict[str, str], datasets: str, opts: tuple[str, ...] = (), workers: str = "1") -> None:
    for trainer, cfg in METHODS:
        common = {"TRAINER": trainer, "CFG": cfg, "DATASETS": datasets}
        for bench, extra in (
            ("fewshot", {"SHOTS_LIST": "1 2"}),
            ("base2new", {}),
            ("xd", {"SOURCE": datasets.split()[0], "XD_TARGETS": datasets}),
        ):
            out = sweep(env, bench, *opts, "--workers", workers, **common, **extra)
            assert out.returncode == 0, out.stdout + out.stderr
            assert "0 failed" in out.stdout


def check_tables_against_results(output: str, out_dir: str) -> None:
    """Every cell of tables.csv equals the mean / population std over seeds of the matching results.json."""
    for ext in ("md", "tex"):
        assert os.path.getsize(os.path.join(out_dir, f"tables.{ext}")) > 0
    runs = T.load_runs(output)
    with open(os.path.join(out_dir, "tables.csv")) as f:
        rows = list(csv.DictReader(f))
    by_key = {(r["table"], r["row"], r["column"]): r for r in rows}
    checked = 0
    for run in runs:
        same = [r for r in runs if (r.kind, r.split, r.dataset, r.shots, r.method) == (run.kind, run.split,
                run.dataset, run.shots, run.method)]  # fmt: skip
        values = [load(r.path)["accuracy"] for r in same]
        method = run.method.replace("/", "_")
        name = T.paper_name(run.method)
        if run.kind == "fewshot":
            key = (f"fewshot_{name}_{method}", run.dataset, f"{run.shots} shot" + "s" * (run.shots != 1))
        elif run.kind == "base2new":
            key = (f"base2new_{name}_{method}", run.dataset, "base" if run.split == "train_base" else "new")
        elif run.split == "train":
            key = ("xd", f"{name} ({run.method})", f"source: {run.dataset}")
        else:
            key = ("xd", f"{name} ({run.method})", run.dataset)
        cell = by_key[key]
        assert float(cell["mean"]) == pytest.approx(statistics.fmean(values), abs=1e-5)
        assert float(cell["std"]) == pytest.approx(statistics.pstdev(values), abs=1e-5)
        assert int(cell["seeds"]) == len(values) == 2
        checked += 1
    assert checked == len(runs) > 0
    # H of each base-to-new row: harmonic mean of the mean base and new accuracies
    for r in rows:
        if r["table"].startswith("base2new") and r["column"] == "H":
            base = float(by_key[(r["table"], r["row"], "base")]["mean"])
            new = float(by_key[(r["table"], r["row"], "new")]["mean"])
            assert float(r["mean"]) == pytest.approx(2 * base * new / (base + new), abs=1e-5)


@pytest.mark.e2e
def test_sweep_to_tables_with_stand_in_trainer(fake_env, tmp_path):
    """2 methods x 2 seeds x (2 shots | base-to-new | cross-dataset) through the real scripts, then every table."""
    run_all_benchmarks(fake_env, "synthetic_shapes dtd", opts=("OPTIM.MAX_EPOCH", "1"))
    out = make_tables(fake_env["OUTPUT"], "--out", str(tmp_path / "tables"))
    assert out.returncode == 0, out.stderr
    check_tables_against_results(fake_env["OUTPUT"], str(tmp_path / "tables"))
    assert os.path.getsize(tmp_path / "tables" / "fewshot_curves.png") > 10_000
    assert read(tmp_path / "tables" / "fewshot_curves.pdf").startswith("%PDF")
    # the overrides reached every job (the stand-in records its KEY VALUE arguments)
    results = [load(r.path) for r in T.load_runs(fake_env["OUTPUT"])]
    assert len(results) == 2 * 2 * (2 * 2 + 2 * 2 + 1 + 2) and all("OPTIM.MAX_EPOCH" in r["opts"] for r in results)
    # runs outside a protocol reproduce no published number: none beside them, and the table says where they stand
    md = read(tmp_path / "tables" / "fewshot_CoOp+LAMM_LAMM_CoOp_vit_b16_ep50_ctxv1.md")
    assert "paper" not in md.split("\n\n")[1] and "52.8" not in md
    assert (
        "a run outside a protocol: no published number beside it (the published CoOp+LAMM numbers stand beside "
        "protocol lamm-official-fewshot)" in md
    )
    assert "\\toprule" in read(tmp_path / "tables" / "xd.tex")
    # rerunning the sweep runs nothing
    again = sweep(fake_env, "fewshot", TRAINER="CoOp", CFG="vit_b16_ep50", DATASETS="dtd", SHOTS_LIST="1 2")
    assert again.returncode == 0 and "0 done, 4 skipped, 0 failed" in again.stdout


@pytest.mark.e2e
def test_failed_job_is_recorded_and_the_sweep_goes_on(fake_env):
    env = {**fake_env, "SEEDS": "1", "SHOTS_LIST": "1 2", "DATASETS": "synthetic_shapes not_prepared dtd"}
    out = sweep(env, "fewshot")
    assert out.returncode == 1
    assert "[1/6]" in out.stdout and "[6/6]" in out.stdout and "ETA" in out.stdout
    assert "Sweep summary: 4 done, 0 skipped, 2 failed" in out.stdout
    logs = [line.split("log: ")[1] for line in out.stdout.splitlines() if line.strip().startswith("log: ")]
    assert len(logs) == 2 and all("not_prepared" in p and "not_prepared.yaml" in read(p) for p in logs)
    folder = os.path.dirname(logs[0])
    assert load(os.path.join(folder, S.FAILED_FILENAME))["returncode"] != 0
    again = sweep(env, "fewshot")  # the finished ones are skipped, the failed ones tried again
    assert again.returncode == 1 and "0 done, 4 skipped, 2 failed" in again.stdout
    # the dry run checks first what the real run checks first (the dataset configs), running nothing
    dry = sweep(env, "fewshot", "--dry-run")
    assert dry.returncode == 1 and "No dataset config not_prepared.yaml" in dry.stderr and len(calls(env)) == 4
    assert "Traceback" not in dry.stderr
    # and lists every job and its state
    dry = sweep(env, "fewshot", "--dry-run", DATASETS="synthetic_shapes dtd")
    assert dry.returncode == 0 and "4 jobs, 0 to run" in dry.stdout and len(calls(env)) == 4
    bad_seed = sweep(env, "fewshot", "--dry-run", SEEDS="1 x")
    assert bad_seed.returncode == 1 and bad_seed.stderr.strip() == "Error: SEEDS='1 x': x is not a whole number."


@pytest.mark.e2e
def test_workers_never_run_the_same_job(fake_env):
    env = {**fake_env, "FAKE_TRAIN_SECONDS": "0.2", "SEEDS": "1 2", "SHOTS_LIST": "1 2 4"}
    out = sweep(env, "fewshot", "--workers", "3", DATASETS="synthetic_shapes dtd")
    assert out.returncode == 0, out.stdout + out.stderr
    done = calls(env)
    assert len(done) == 12 and not [d for d, n in Counter(done).items() if n > 1]
    assert "Sweep summary: 12 done, 0 skipped, 0 failed" in out.stdout
    workers = {line.split("]")[0] for line in out.stdout.splitlines() if "done in" in line}
    assert len(workers) > 1  # the work was shared
    assert not any(f == S.LOCK_FILENAME for _, _, files in os.walk(env["OUTPUT"]) for f in files)


@pytest.mark.e2e
def test_gpus_pin_one_worker_each(fake_env):
    out = sweep(fake_env, "fewshot", "--gpus", "3,5", SEEDS="1", DATASETS="dtd", SHOTS_LIST="1")
    assert out.returncode == 0 and "[w0 gpu3]" in out.stdout and "[w1 gpu5]" in out.stdout and "1 done" in out.stdout
    (run,) = T.load_runs(fake_env["OUTPUT"])
    assert load(run.path)["cuda_visible_devices"] in ("3", "5")


@pytest.mark.e2e
def test_lock_is_exclusive_and_stale_locks_are_taken(tmp_path):
    first, second = S.JobLock(str(tmp_path)), S.JobLock(str(tmp_path))
    assert first.acquire() and not second.acquire()
    assert second.owner()["pid"] == os.getpid()
    first.release()
    assert second.acquire()
    second.release()
    dead = subprocess.Popen(["true"])
    dead.wait()
    path = os.path.join(tmp_path, S.LOCK_FILENAME)
    with open(path, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": dead.pid, "time": 0}, f)
    assert S.JobLock(str(tmp_path)).acquire()  # its owner died: taken over
    with open(path, "w") as f:
        json.dump({"host": "another-host", "pid": dead.pid, "time": 0}, f)
    assert not S.JobLock(str(tmp_path)).acquire()  # another host's lock is never broken


@pytest.mark.e2e
def test_submitit_local_executor(fake_env, monkeypatch, capsys):
    pytest.importorskip("submitit", reason="submitit is in the test extra: pip install -e '.[test]'")
    for key, value in {**fake_env, "SEEDS": "1", "DATASETS": "dtd", "SHOTS_LIST": "1 2"}.items():
        monkeypatch.setenv(key, value)
    assert S.main(["fewshot", "--engine", "submitit", "--cluster", "local", "--timeout-min", "5"]) == 0
    assert "2 done, 0 skipped, 0 failed" in capsys.readouterr().out
    assert sorted(calls(fake_env)) == sorted(
        os.path.join(fake_env["OUTPUT"], f"fewshot/dtd/shots_{k}/LAMM_CoOp/vit_b16_ep50_ctxv1/seed1") for k in (1, 2)
    )
    assert S.main(["fewshot", "--engine", "submitit", "--cluster", "local"]) == 0  # rerun: nothing to submit
    assert "0 done, 2 skipped" in capsys.readouterr().out and len(calls(fake_env)) == 2


def write(root, rel: str, accuracy: float, protocol: str = "", method: str = "") -> None:
    os.makedirs(os.path.join(root, rel), exist_ok=True)
    record = {"name": protocol, "method": method} if protocol else None
    with open(os.path.join(root, rel, "results.json"), "w") as f:
        json.dump({"accuracy": accuracy, "protocol": record}, f)


def test_missing_runs_are_shown_and_paper_numbers_compared(tmp_path):
    few_run = ("lamm-official-fewshot", "CoOp+LAMM")  # the run that reproduces the LAMM figure
    b2n_run = ("cocoop-base2new", "MaPLe")
    for i, ds in enumerate(T.ELEVEN):
        for seed in (1, 2, 3):
            write(tmp_path, f"fewshot/{ds}/shots_16/LAMM_CoOp/vit_b16_ep50_ctxv1/seed{seed}", 80.0 + i + seed, *few_run)
            if ds != "dtd":  # one dataset missing at 1 shot
                write(tmp_path, f"fewshot/{ds}/shots_1/LAMM_CoOp/vit_b16_ep50_ctxv1/seed{seed}", 60.0, *few_run)
            write(tmp_path, f"base2new/train_base/{ds}/shots_16/MaPLe/c/seed{seed}", 90.0 if i % 2 else 70.0, *b2n_run)
            write(tmp_path, f"base2new/test_new/{ds}/shots_16/MaPLe/c/seed{seed}", 50.0 if i % 2 else 80.0, *b2n_run)
    write(tmp_path, "fewshot/dtd/shots_1/LAMM_CoOp/vit_b16_ep50_ctxv1/seed1", 55.0, *few_run)  # only one seed there
    tables = {t.key: t for t in T.build_tables(T.load_runs(str(tmp_path)))}
    few = tables["fewshot_CoOp+LAMM_CoOp+LAMM@lamm-official-fewshot"]
    rows = dict(few.rows)
    assert rows["dtd"][0].n == 1 and rows["dtd"][0].mean == 55.0 and rows["caltech101"][0].n == 3
    avg = rows["Average (11 datasets)"]
    expected = statistics.fmean(80.0 + i + 2 for i in range(11))
    assert avg[1].mean == pytest.approx(expected) and avg[1].paper == 81.7  # the figure's average at 16 shots
    assert avg[1].diff == pytest.approx(expected - 81.7)
    assert avg[1].std == pytest.approx(statistics.pstdev([80.0 + 5 + s for s in (1, 2, 3)]))
    md = T.to_markdown(few)
    assert "55.00 ± 0.00 (1)" in md and "| 81.7 |" in md
    # delete a dataset's 16-shot seeds: its cell says missing and the average is not computed over the rest
    for seed in (1, 2, 3):
        os.remove(tmp_path / f"fewshot/eurosat/shots_16/LAMM_CoOp/vit_b16_ep50_ctxv1/seed{seed}/results.json")
    few = {t.key: t for t in T.build_tables(T.load_runs(str(tmp_path)))}[few.key]
    rows = dict(few.rows)
    assert rows["eurosat"][1].mean is None and rows["eurosat"][1].note == "missing"
    assert rows["Average (11 datasets)"][1].mean is None and "incomplete (10/11)" in T.to_markdown(few)
    # base-to-new: H from the averaged base and new (not the average of the per-dataset H), paper beside
    b2n = dict(tables["base2new_MaPLe_MaPLe@cocoop-base2new"].rows)["Average (11 datasets)"]
    base, new = (
        statistics.fmean(90.0 if i % 2 else 70.0 for i in range(11)),
        statistics.fmean(50.0 if i % 2 else 80.0 for i in range(11)),
    )
    assert b2n[2].mean == pytest.approx(2 * base * new / (base + new))
    assert [c.paper for c in b2n] == [82.28, 75.14, 78.55]
    latex = T.to_latex(tables["base2new_MaPLe_MaPLe@cocoop-base2new"])
    assert latex.count("\\midrule") == 2 and "H paper" in latex and "\\bottomrule" in latex


@pytest.mark.e2e
def test_readme_results_section_is_generated(tmp_path):
    """README.md's Results section is exactly what make_tables.py writes for a tree without runs."""
    (tmp_path / "output").mkdir()
    out = make_tables("output", "--readme", os.path.join(REPO, "README.md"), "--check", cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    readme = tmp_path / "README.md"
    readme.write_text(read(os.path.join(REPO, "README.md")))
    for i, ds in enumerate(T.ELEVEN):
        write(tmp_path / "output", f"fewshot/{ds}/shots_16/CoOp/vit_b16_ep50/seed1", 70.0 + i, "lamm-official-fewshot",
              "CoOp")  # fmt: skip
    assert make_tables("output", "--readme", str(readme), "--check", cwd=str(tmp_path)).returncode == 1
    assert make_tables("output", "--readme", str(readme), cwd=str(tmp_path)).returncode == 0
    assert "| CoOp | 78.5 | 75.00 ± 0.00 (1) |" in readme.read_text()


@pytest.mark.e2e
def test_output_to_a_closed_pipe_and_without_matplotlib(tmp_path, monkeypatch):
    for ds in ("dtd", "eurosat"):
        write(tmp_path, f"fewshot/{ds}/shots_1/CoOp/c/seed1", 50.0)
    head = subprocess.run(f'"{sys.executable}" "{MAKE_TABLES}" "{tmp_path}" | head -1', shell=True, capture_output=True,
                          text=True)  # fmt: skip
    assert head.returncode == 0 and "BrokenPipe" not in head.stderr and head.stdout.startswith("**Few-shot")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        T.fewshot_figure(T.load_runs(str(tmp_path)), str(tmp_path / "fig"))
    assert make_tables(str(tmp_path), "--kinds", "nope").returncode == 2


@pytest.mark.e2e
def test_continual_branch_of_sweep_sh_runs_the_protocol(tmp_path):
    """``sweep.sh continual`` hands each (dataset, seed) to scripts/lamm/continual.sh: one continual.py run."""
    env = {**os.environ, "DRY_RUN": "1", "SEEDS": "1 2", "DATASETS": "dtd", "OUTPUT": str(tmp_path)}
    out = subprocess.run(["bash", SWEEP, "continual"], capture_output=True, text=True, timeout=60, env=env)
    runs = [line for line in out.stdout.splitlines() if "continual.py" in line]
    assert out.returncode == 0 and len(runs) == 2, out.stdout + out.stderr
    assert all("/continual/dtd/" in line for line in runs) and "seed1" in runs[0] and "seed2" in runs[1]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.dassl
def test_miniature_sweep_to_tables(tmp_path):
    """Real training: few-shot, base-to-new and cross-dataset on the synthetic set, 2 methods x 2 seeds x 2 shots."""
    pytest.importorskip("dassl", reason="Dassl is not installed")
    env = {**os.environ, "PYTHON": sys.executable, "SWEEP_PYTHON": sys.executable, "PYTHONPATH": REPO,
           "DATA": str(tmp_path / "data"), "OUTPUT": str(tmp_path / "output"), "SEEDS": "1 2"}  # fmt: skip
    global METHODS
    small = [
        "OPTIM.MAX_EPOCH", "1",
        "DATASET.SYNTHETIC.NUM_CLASSES", "4",
        "DATASET.SYNTHETIC.TRAIN_PER_CLASS", "4",
        "DATASET.SYNTHETIC.VAL_PER_CLASS", "2",
        "DATASET.SYNTHETIC.TEST_PER_CLASS", "4",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
    ]  # fmt: skip
    saved, METHODS = METHODS, (("CoOp", "demo_cpu"), ("LAMM_CoOp", "demo_cpu"))
    try:
        run_all_benchmarks(env, "synthetic_shapes", opts=tuple(small), workers="2")
    finally:
        METHODS = saved
    out = make_tables(env["OUTPUT"], "--out", str(tmp_path / "tables"))
    assert out.returncode == 0, out.stderr
    check_tables_against_results(env["OUTPUT"], str(tmp_path / "tables"))
    assert os.path.getsize(tmp_path / "tables" / "fewshot_curves.png") > 10_000
