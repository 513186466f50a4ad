"""Damaged and wrong ``results.json`` files in an output tree: the table scripts skip and name them and write the
rest; the sweep does not take a damaged result for a finished job."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lamm_experiments import parse_results as P
from lamm_experiments import results as R
from lamm_experiments import sweep as S
from lamm_experiments import tables as T

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAKE_TABLES = os.path.join(REPO, "scripts", "make_tables.py")
PARSE_RESULTS = os.path.join(REPO, "scripts", "parse_results.py")
CONTINUAL_TABLE = os.path.join(REPO, "scripts", "continual_table.py")
RUN = "fewshot/{ds}/shots_1/CoOp/c/seed{seed}"

#: Bad contents of a results.json -> words the listing must give for it.
BAD = {
    "truncated": ('{"accuracy": 52.', "not valid JSON"),
    "empty": ("", "empty"),
    "percent string": ('{"accuracy": "52.5%"}', "'52.5%'"),
    "nan": ('{"accuracy": NaN}', "nan"),
    "infinite": ('{"accuracy": Infinity}', "inf"),
    "bool": ('{"accuracy": true}', "not a number"),
    "out of range": ('{"accuracy": 152.5}', "outside 0 to 100"),
    "no accuracy": ('{"seed": 1}', "has no 'accuracy'"),
    "list": ("[52.5]", "not an object"),
    "binary": (b"\xff\xfe\x00garbage", "cannot be read"),
}


def put(root, rel: str, text) -> str:
    folder = os.path.join(root, rel)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "results.json")
    with open(path, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode())
    return path


def good_tree(root) -> None:
    for ds in ("dtd", "eurosat"):
        for seed in (1, 2):
            put(root, RUN.format(ds=ds, seed=seed), json.dumps({"accuracy": 50.0 + seed, "seed": seed}))


@pytest.mark.parametrize("case", sorted(BAD))
def test_read_results_names_the_file_and_what_is_wrong(tmp_path, case):
    text, words = BAD[case]
    path = put(tmp_path, "run", text)
    with pytest.raises(R.ResultsFileError) as err:
        R.read_results(path)
    assert path in str(err.value) and words in str(err.value) and "rerun its job" in str(err.value)
    assert not R.usable(path)


@pytest.mark.e2e
def test_make_tables_skips_and_lists_unreadable_runs_and_writes_the_rest(tmp_path):
    root = tmp_path / "output"
    good_tree(root)
    bad = {case: put(root, RUN.format(ds="ucf101", seed=i + 1), text) for i, (case, (text, _)) in
           enumerate(sorted(BAD.items()))}  # fmt: skip
    out = subprocess.run([sys.executable, MAKE_TABLES, str(root), "--out", str(tmp_path / "tables"), "--no-figure"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 1  # the tables are written, and the exit status says that runs were left out
    assert f"{len(BAD)} runs skipped" in out.stderr
    for case, path in bad.items():
        assert path in out.stderr and BAD[case][1] in out.stderr, case
    md = (tmp_path / "tables" / "tables.md").read_text()
    assert "51.50 ± 0.50 (2)" in md  # dtd and eurosat, both seeds
    assert "ucf101" not in md
    # the library call: skipped runs collected when asked, an error naming the file otherwise
    skipped: list = []
    assert len(T.load_runs(str(root), skipped=skipped)) == 4 and len(skipped) == len(BAD)
    with pytest.raises(R.ResultsFileError, match="ucf101"):
        T.load_runs(str(root))


@pytest.mark.e2e
def test_parse_results_skips_and_lists_unreadable_runs(tmp_path):
    good_tree(tmp_path)
    nan = put(tmp_path, RUN.format(ds="ucf101", seed=1), '{"accuracy": NaN}')
    pct = put(tmp_path, RUN.format(ds="ucf101", seed=2), '{"accuracy": "52.5%"}')
    cut = put(tmp_path, RUN.format(ds="dtd", seed=3), '{"accur')
    out = subprocess.run([sys.executable, PARSE_RESULTS, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 1 and all(p in out.stderr for p in (nan, pct, cut)) and "3 runs skipped" in out.stderr
    assert "51.50 ± 0.50" in out.stdout and "nan" not in out.stdout.lower()
    skipped: list = []
    table = P.collect(str(tmp_path), "accuracy", skipped=skipped)
    assert sorted(table) == ["fewshot/dtd/shots_1/CoOp/c", "fewshot/eurosat/shots_1/CoOp/c"] and len(skipped) == 3


def continual_results(metrics) -> str:
    section = {"num_stages": 2, "shared": "train", "metrics": metrics, "seen_accuracy": [60.0, 50.0]}
    return json.dumps({"trainer": "LAMM_CoOp", "dataset": "dtd", "continual": section})


@pytest.mark.e2e
def test_continual_table_skips_and_lists_damaged_runs(tmp_path):
    good = {"average_incremental_accuracy": 55.0, "last_accuracy": 50.0, "average_forgetting": 3.0}
    put(tmp_path, "a/seed1", continual_results(good))
    bad = {
        put(tmp_path, "b/seed1", '{"continual": {"metrics": '): "not valid JSON",
        put(tmp_path, "c/seed1", continual_results({**good, "last_accuracy": "50%"})): "'last_accuracy'",
        put(tmp_path, "d/seed1", continual_results({**good, "average_incremental_accuracy": float("nan")})): "nan",
        put(tmp_path, "e/seed1", json.dumps({"continual": {"metrics": {}, "num_stages": "two"}})): "num_stages",
        put(tmp_path, "f/seed1", json.dumps({"continual": [1, 2]})): "'continual'",
    }
    out = subprocess.run([sys.executable, CONTINUAL_TABLE, str(tmp_path)], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 1 and f"{len(bad)} runs skipped" in out.stderr
    for path, words in bad.items():
        assert path in out.stderr and words in out.stderr, (path, out.stderr)
    assert "55.00" in out.stdout and "50.00" in out.stdout


@pytest.mark.e2e
def test_the_sweep_does_not_take_a_damaged_result_for_a_finished_job(tmp_path):
    env = {"OUTPUT": str(tmp_path), "SEEDS": "1", "DATASETS": "dtd eurosat ucf101", "SHOTS_LIST": "1"}
    jobs = S.build_jobs("fewshot", environ=env)
    put(jobs[0].folder, "", json.dumps({"accuracy": 51.0}))
    put(jobs[1].folder, "", '{"accuracy": 5')
    put(jobs[2].folder, "", '{"accuracy": NaN}')
    assert [job.finished() for job in jobs] == [True, False, False]


@pytest.mark.e2e
def test_table_scripts_answer_bad_arguments_with_a_message(tmp_path):
    good_tree(tmp_path / "output")

    def run(script, *args):
        return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=60,
                              cwd=str(tmp_path))  # fmt: skip

    for script in (MAKE_TABLES, PARSE_RESULTS):
        out = run(script, "output", "--digits", "-1")
        assert out.returncode == 2 and "--digits -1" in out.stderr and "Traceback" not in out.stderr
    out = run(MAKE_TABLES, "output", "--readme", "missing.md")
    assert out.returncode == 1 and "missing.md" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "plain.md").write_text("# no generated section\n")
    out = run(MAKE_TABLES, "output", "--readme", "plain.md")
    assert out.returncode == 1 and "no generated Results section" in out.stderr and "Traceback" not in out.stderr
    out = run(CONTINUAL_TABLE, "missing")
    assert out.returncode == 1 and "missing does not exist" in out.stderr and "Traceback" not in out.stderr
