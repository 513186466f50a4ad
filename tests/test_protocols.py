"""Protocols as data (lamm_experiments.protocols): each table's configs per method, dataset and shot count, as the
original repositories ran them; the sweep builds its jobs from them and the tables keep protocols apart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from lamm_experiments import protocols as P
from lamm_experiments import sweep as S
from lamm_experiments import tables as T

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(REPO, "scripts", "lamm", "sweep.sh")
FAKE = os.path.join(REPO, "tests", "fixtures", "fake_train.py")


def epochs(trainer: str, config: str) -> int:
    """``OPTIM.MAX_EPOCH`` of a shipped config (read as text: this test needs neither yacs nor Dassl)."""
    with open(os.path.join(REPO, "configs", "trainers", trainer, f"{config}.yaml")) as f:
        return int(re.search(r"^\s+MAX_EPOCH: (\d+)$", f.read(), re.M).group(1))


def all_choices():
    for proto in P.PROTOCOLS.values():
        for plan in proto.methods:
            for ds in proto.datasets:
                for k in proto.shots:
                    yield proto, P.resolve(proto.name, plan.name, ds, k), ds, k


def test_every_choice_names_a_shipped_config_and_its_source():
    seen = 0
    for proto, choice, _, _ in all_choices():
        assert os.path.isfile(os.path.join(REPO, "configs", "trainers", choice.trainer, f"{choice.config}.yaml"))
        assert choice.sources and all(s.repo and s.path for s in choice.sources)
        # a source in an original repository names its line
        assert all(s.line for s in choice.sources if s.repo != P.OURS), (proto.name, choice)
        seen += 1
    assert seen > 500


def test_methods_of_a_protocol_never_share_a_run_folder():
    for proto in P.PROTOCOLS.values():
        owners: dict[tuple, str] = {}
        for plan in proto.methods:
            for ds in proto.datasets:
                for k in proto.shots:
                    c = P.resolve(proto.name, plan.name, ds, k)
                    key = (c.trainer, c.config, ds, k)
                    assert owners.setdefault(key, plan.name) == plan.name, (proto.name, key)


@pytest.mark.parametrize("prefix", ["vit_b16", "rn50"])
def test_coop_fewshot_epochs_follow_the_shot_count_and_imagenet(prefix):
    name = "coop-fewshot" if prefix == "vit_b16" else f"coop-fewshot-{prefix}"
    got = {k: epochs("CoOp", P.resolve(name, "CoOp", "caltech101", k).config) for k in (1, 2, 4, 8, 16)}
    assert got == {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}
    assert {epochs("CoOp", P.resolve(name, "CoOp", "imagenet", k).config) for k in (1, 2, 4, 8, 16)} == {50}
    assert P.resolve(name, "CoOp", "caltech101", 16).config == prefix  # CoOp's name of its 200-epoch config


@pytest.mark.parametrize("prefix, backbone", [("rn101", "RN101"), ("vit_b32", "ViT-B/32")])
def test_other_backbones_run_at_16_shots_with_their_configs(prefix, backbone):
    name = f"coop-fewshot-{prefix}"
    assert P.get_protocol(name).shots == (16,)
    assert (P.resolve(name, "CoOp", "dtd", 16).config, P.resolve(name, "CoOp", "imagenet", 16).config) == (
        prefix,
        f"{prefix}_ep50",
    )
    with pytest.raises(ValueError, match="no config for dtd at 2 shots"):
        P.resolve(name, "CoOp", "dtd", 2)
    for method in ("CoOp", "LAMM", "CoOp+LAMM"):
        c = P.resolve(name, method, "dtd", 16)
        with open(os.path.join(REPO, "configs", "trainers", c.trainer, f"{c.config}.yaml")) as f:
            assert f'NAME: "{backbone}"' in f.read()


def test_base_to_new_coop_is_cocoops_200_epoch_run():
    c = P.resolve("cocoop-base2new", "CoOp", "dtd", 16)
    assert (c.config, epochs("CoOp", c.config)) == ("vit_b16_ctxv1", 200)
    assert c.sources[0] == P.Source(P.COOP, "scripts/cocoop/base2new_train.sh", 14)
    c = P.resolve("cocoop-base2new", "CoOp", "imagenet", 16)
    assert (c.config, epochs("CoOp", c.config)) == ("vit_b16_ep50_ctxv1", 50)


def test_promptsrc_fewshot_gpa_per_dataset():
    for trainer, method in (("PROMPTSRC", "PromptSRC"), ("LAMM_PROMPTSRC", "PromptSRC+LAMM")):
        for ds in ("imagenet", "caltech101", "oxford_pets", "food101", "ucf101", "sun397"):
            c = P.resolve("promptsrc-fewshot", method, ds, 4)
            assert (c.config, c.overrides) == ("vit_b16_c2_ep50_batch4_4+4ctx_few_shot", ())
        for ds in ("stanford_cars", "oxford_flowers", "fgvc_aircraft", "dtd", "eurosat"):
            c = P.resolve("promptsrc-fewshot", method, ds, 4)
            assert c.overrides == ((f"TRAINER.{trainer}.GPA_MEAN", "45.0"), (f"TRAINER.{trainer}.GPA_STD", "5.0"))
    assert P.resolve("cocoop-xd", "PromptSRC", "imagenet", 16).config == "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets"


def test_official_preset_follows_the_protocol_it_is_used_in():
    for method in ("LAMM", "CoOp+LAMM", "MaPLe+LAMM"):
        c = P.resolve("lamm-official-fewshot", method, "dtd", 4)
        assert c.config.endswith("_official") and c.overrides == (("TRAINER.LAMM.SHOTS", "1"),)
    for proto, method in (("cocoop-base2new", "LAMM (official)"), ("cocoop-base2new", "CoOp+LAMM (official)"),
                          ("lamm-official-incremental", "LAMM (official)")):  # fmt: skip
        c = P.resolve(proto, method, "dtd", 16)
        assert c.config.endswith("_official") and c.overrides == (("TRAINER.LAMM.SHOTS", "16"),)
    assert P.get_protocol("lamm-official-incremental").sets == ("base", "new")


def test_unknown_names_are_listed():
    with pytest.raises(KeyError, match="unknown protocol 'coop'.*coop-fewshot"):
        P.get_protocol("coop")
    with pytest.raises(KeyError, match="has no method 'VPT'.*CoOp"):
        P.resolve("coop-fewshot", "VPT", "dtd", 1)
    with pytest.raises(ValueError, match="belongs to the xd table"):
        S.build_protocol_jobs("fewshot", "cocoop-xd", environ={})
    with pytest.raises(ValueError, match="SHOTS_LIST=3 is outside protocol"):
        S.build_protocol_jobs("fewshot", "coop-fewshot", environ={"SHOTS_LIST": "3"})


def test_run_md_holds_the_table_of_protocols():
    with open(os.path.join(REPO, "docs", "RUN.md")) as f:
        assert P.protocols_markdown() in f.read(), "regenerate: python -m lamm_experiments.protocols"


@pytest.fixture
def fake_env(tmp_path) -> dict[str, str]:
    wrapper = tmp_path / "python_fake"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("TRAINER", "CFG", "SWEEP_PROTOCOL", "LAMM_PROTOCOL")}
    return {**env, "PYTHON": str(wrapper), "SWEEP_PYTHON": sys.executable, "PYTHONPATH": REPO,
            "FAKE_TRAIN_LOG": str(tmp_path / "calls.txt"), "DATA": str(tmp_path / "data"),
            "OUTPUT": str(tmp_path / "output"), "SEEDS": "1"}  # fmt: skip


def sweep(env, *args, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", SWEEP, *args], env={**env, **extra}, capture_output=True, text=True, timeout=300)


@pytest.mark.e2e
def test_dry_run_shows_the_config_of_each_shot_count(fake_env):
    out = sweep(fake_env, "fewshot", "--protocol", "coop-fewshot", "--dry-run", DATASETS="dtd imagenet")
    assert out.returncode == 0, out.stderr
    jobs = re.findall(r"\] (coop-fewshot CoOp: fewshot (\w+) shots=(\d+) CoOp/(\w+) seed=1)", out.stdout)
    assert {(ds, int(k)): cfg for _, ds, k, cfg in jobs} == {
        **{("dtd", k): c for k, c in ((1, "vit_b16_ep50"), (2, "vit_b16_ep100"), (4, "vit_b16_ep100"),
                                      (8, "vit_b16"), (16, "vit_b16"))},
        **{("imagenet", k): "vit_b16_ep50" for k in (1, 2, 4, 8, 16)},
    }  # fmt: skip
    assert "protocol coop-fewshot, method CoOp: CoOp/vit_b16_ep100" in out.stdout
    assert "source: KaiyangZhou/CoOp: COOP.md:19" in out.stdout
    out = sweep(fake_env, "fewshot", "--protocol", "promptsrc-fewshot", "--methods", "PromptSRC", "--dry-run",
                DATASETS="eurosat", SHOTS_LIST="1")  # fmt: skip
    assert "overrides: TRAINER.PROMPTSRC.GPA_MEAN 45.0 TRAINER.PROMPTSRC.GPA_STD 5.0" in out.stdout
    assert "fewshot.sh eurosat 1 1 TRAINER.PROMPTSRC.GPA_MEAN 45.0 TRAINER.PROMPTSRC.GPA_STD 5.0" in out.stdout


@pytest.mark.e2e
def test_protocol_runs_record_it_and_tables_keep_protocols_apart(fake_env, tmp_path):
    out = sweep(fake_env, "fewshot", "--protocol", "coop-fewshot", "--methods", "CoOp", DATASETS="dtd",
                SHOTS_LIST="1 2")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    # the same trainer and config at 1 shot outside the protocol: its own row, never averaged with the protocol's
    out = sweep(fake_env, "fewshot", TRAINER="CoOp", CFG="vit_b16_ep50", DATASETS="dtd", SHOTS_LIST="1")
    assert out.returncode == 0, out.stdout + out.stderr
    root = tmp_path / "output"
    proto_run = root / "coop-fewshot/fewshot/dtd/shots_2/CoOp/vit_b16_ep100/seed1/results.json"
    assert json.loads(proto_run.read_text())["protocol"] == {"name": "coop-fewshot", "method": "CoOp"}
    plain = root / "fewshot/dtd/shots_1/CoOp/vit_b16_ep50/seed1/results.json"
    assert json.loads(plain.read_text())["protocol"] is None
    runs = T.load_runs(str(root))
    assert sorted((r.method, r.shots, r.protocol) for r in runs) == [
        ("CoOp/vit_b16_ep50", 1, None),
        ("CoOp@coop-fewshot", 1, "coop-fewshot"),
        ("CoOp@coop-fewshot", 2, "coop-fewshot"),
    ]
    tables = {t.title: t for t in T.build_tables(runs, kinds=["fewshot"])}
    ours = tables["Few-shot top-1 accuracy (%), CoOp (protocol coop-fewshot)"]
    assert ours.columns == ["1 shot", "2 shots"]
    cells = dict(ours.rows)["dtd"]
    expected = {r.shots: r.accuracy for r in runs if r.protocol}
    assert [(c.mean, c.n) for c in cells] == [(expected[1], 1), (expected[2], 1)]
    other = tables["Few-shot top-1 accuracy (%), CoOp (CoOp/vit_b16_ep50)"]
    assert dict(other.rows)["dtd"][0].mean == next(r.accuracy for r in runs if not r.protocol)


@pytest.mark.e2e
def test_two_set_protocol_trains_each_half_separately(fake_env, tmp_path):
    out = sweep(fake_env, "continual", "--protocol", "lamm-official-incremental", DATASETS="dtd eurosat")
    assert out.returncode == 0, out.stdout + out.stderr
    root = tmp_path / "output" / "lamm-official-incremental" / "twoset"
    for part in ("base", "new"):
        for ds in ("dtd", "eurosat"):
            run = root / part / ds / "shots_16/LAMM_CoOp/vit_b16_ep50_ctxv1_frozen_official/seed1/results.json"
            result = json.loads(run.read_text())
            assert result["opts"][-4:] == ["DATASET.SUBSAMPLE_CLASSES", part, "TRAINER.LAMM.SHOTS", "16"]
            assert result["protocol"] == {"name": "lamm-official-incremental", "method": "LAMM (official)"}
    (table,) = T.build_tables(T.load_runs(str(tmp_path / "output")), kinds=["twoset"])
    assert table.columns == ["set 1 (base)", "set 2 (new)"]
    assert [label for label, _ in table.rows] == ["dtd", "eurosat", "Average (2 datasets)"]
    assert all(c.mean is not None for _, cells in table.rows for c in cells)


@pytest.mark.e2e
def test_trainer_records_the_protocol_from_the_sweep(monkeypatch):
    pytest.importorskip("yacs", reason="the Dassl adapter needs yacs")
    from lamm_plugin.dassl.report import protocol_record

    monkeypatch.delenv("LAMM_PROTOCOL", raising=False)
    assert protocol_record() is None
    monkeypatch.setenv(S.PROTOCOL_ENV, "coop-fewshot")
    monkeypatch.setenv(S.PROTOCOL_METHOD_ENV, "CoOp")
    assert protocol_record() == {"name": "coop-fewshot", "method": "CoOp"}


def test_readme_names_the_protocol_of_each_number():
    runs = [
        T.Run("fewshot", "", ds, 16, method, 1, accuracy, "", protocol)
        for ds in T.ELEVEN
        for method, accuracy, protocol in (
            ("CoOp/vit_b16_ep50", 60.0, None),
            ("CoOp@coop-fewshot", 50.0, "coop-fewshot"),
        )
    ]
    row = next(line for line in T.readme_section(runs).splitlines() if line.startswith("| CoOp |"))
    assert row.endswith("| 60.00 ± 0.00 (1); 50.00 ± 0.00 (1) (protocol coop-fewshot) |")


def test_zero_shot_is_one_evaluation_per_dataset_and_subset():
    jobs = S.build_protocol_jobs("base2new", "cocoop-base2new", ["ZeroshotCLIP"], environ={"OUTPUT": "/o"})
    assert len(jobs) == len(P.ELEVEN)  # no seeds, no shot counts: zero-shot CLIP trains nothing
    (dtd,) = [j for j in jobs if " dtd " in j.name]
    assert [s.out_dir for s in dtd.steps] == [
        f"/o/cocoop-base2new/zeroshot/{sub}/dtd/ZeroshotCLIP/vit_b16" for sub in ("base", "new")
    ]
    assert [s.argv[:2] for s in dtd.steps] == [["env", "SUB=base"], ["env", "SUB=new"]]
    assert dtd.env[S.PROTOCOL_ENV] == "cocoop-base2new" and dtd.env["CFG"] == "vit_b16"
    (few,) = S.build_protocol_jobs("fewshot", "coop-fewshot-rn50", ["ZeroshotCLIP"], environ={"DATASETS": "dtd"})
    assert [s.out_dir.split("/zeroshot/")[1] for s in few.steps] == ["all/dtd/ZeroshotCLIP/rn50"]
    with pytest.raises(ValueError, match="evaluation-only"):
        S._eval_only_jobs(P.get_protocol("cocoop-xd"), P._zeroshot("vit_b16"), ["imagenet"], ["16"], "/o", {}, [])


@pytest.mark.e2e
def test_every_published_zero_shot_row_has_a_protocol_twin(fake_env, tmp_path):
    out = sweep(fake_env, "base2new", "--protocol", "cocoop-base2new", "--methods", "ZeroshotCLIP",
                DATASETS="dtd eurosat")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    out = sweep(fake_env, "fewshot", "--protocol", "lamm-fewshot", "--methods", "ZeroshotCLIP", DATASETS="dtd")
    assert out.returncode == 0, out.stdout + out.stderr
    calls = (tmp_path / "calls.txt").read_text().split()
    assert len(calls) == 5 and all("/zeroshot/" in c for c in calls)
    run = tmp_path / "output/cocoop-base2new/zeroshot/new/dtd/ZeroshotCLIP/vit_b16/results.json"
    result = json.loads(run.read_text())
    assert result["opts"][-2:] == ["DATASET.SUBSAMPLE_CLASSES", "new"]
    assert result["protocol"] == {"name": "cocoop-base2new", "method": "ZeroshotCLIP"}
    runs = T.load_runs(str(tmp_path / "output"))
    assert sorted((r.kind, r.dataset, r.shots, r.protocol) for r in runs if r.kind == "fewshot") == [
        ("fewshot", "dtd", 0, "lamm-fewshot")
    ]
    titles = [t.title for t in T.build_tables(runs, kinds=["base2new"])]
    assert any("ZeroshotCLIP" in t and "cocoop-base2new" in t for t in titles), titles
