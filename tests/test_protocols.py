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
            fp16 = ((f"TRAINER.{trainer}.FP16_LEARNED", "True"),) if method == "PromptSRC" else ()  # the original's
            assert (c.config, c.overrides) == ("vit_b16_c2_ep50_batch4_4+4ctx_few_shot", fp16)
        for ds in ("stanford_cars", "oxford_flowers", "fgvc_aircraft", "dtd", "eurosat"):
            c = P.resolve("promptsrc-fewshot", method, ds, 4)
            gpa = ((f"TRAINER.{trainer}.GPA_MEAN", "45.0"), (f"TRAINER.{trainer}.GPA_STD", "5.0"))
            assert c.overrides == gpa + fp16
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
    out = sweep(fake_env, "continual", "--protocol", "lamm-official-incremental", "--methods", "LAMM (official)",
                DATASETS="dtd eurosat")  # fmt: skip
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


def test_readme_shows_only_the_runs_that_reproduce_the_published_numbers():
    """The README's figure rows hold the runs of lamm-official-fewshot only: a hand run of CoOp at 16 shots, or
    CoOp's own protocol on ViT-B/16 or RN50, is no reproduction of the LAMM figure's CoOp point."""
    runs = [
        T.Run("fewshot", "", ds, 16, method, 1, accuracy, "", protocol)
        for ds in T.ELEVEN
        for method, accuracy, protocol in (
            ("CoOp/vit_b16_ep50", 60.0, None),
            ("CoOp@coop-fewshot", 50.0, "coop-fewshot"),
            ("CoOp@coop-fewshot-rn50", 40.0, "coop-fewshot-rn50"),
        )
    ]
    row = next(line for line in T.readme_section(runs).splitlines() if line.startswith("| CoOp |"))
    assert row == "| CoOp | 78.5 | not run yet |"
    runs.append(T.Run("fewshot", "", "dtd", 16, "CoOp@lamm-official-fewshot", 1, 70.0, "", "lamm-official-fewshot"))
    row = next(line for line in T.readme_section(runs).splitlines() if line.startswith("| CoOp |"))
    assert row == "| CoOp | 78.5 | incomplete (1/11) |"


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
        S._eval_only_jobs(P.get_protocol("lamm-continual"), P._zeroshot("vit_b16"), ["cifar100"], ["16"], "/o", {}, [])
    # cross-dataset: the source and each target once, all classes
    xd = S.build_protocol_jobs("xd", "cocoop-xd", ["ZeroshotCLIP"], environ={"OUTPUT": "/o"})
    assert [j.steps[0].out_dir.split("/zeroshot/")[1] for j in xd] == [
        f"{part}/{ds}/ZeroshotCLIP/vit_b16" for part, ds in [("xd_source", "imagenet")] + [("xd_target", t)
                                                                                          for t in P.XD_TARGETS]
    ]  # fmt: skip
    assert all(j.steps[0].argv[:3] == ["env", "SUB=all", j.steps[0].argv[2]] for j in xd)


@pytest.mark.e2e
def test_every_published_zero_shot_row_has_a_protocol_twin(fake_env, tmp_path):
    out = sweep(fake_env, "base2new", "--protocol", "cocoop-base2new", "--methods", "ZeroshotCLIP",
                DATASETS="dtd eurosat")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    out = sweep(fake_env, "fewshot", "--protocol", "lamm-official-fewshot", "--methods", "ZeroshotCLIP", DATASETS="dtd")
    assert out.returncode == 0, out.stdout + out.stderr
    calls = (tmp_path / "calls.txt").read_text().split()
    assert len(calls) == 5 and all("/zeroshot/" in c for c in calls)
    run = tmp_path / "output/cocoop-base2new/zeroshot/new/dtd/ZeroshotCLIP/vit_b16/results.json"
    result = json.loads(run.read_text())
    assert result["opts"][-2:] == ["DATASET.SUBSAMPLE_CLASSES", "new"]
    assert result["protocol"] == {"name": "cocoop-base2new", "method": "ZeroshotCLIP"}
    runs = T.load_runs(str(tmp_path / "output"))
    assert sorted((r.kind, r.dataset, r.shots, r.protocol) for r in runs if r.kind == "fewshot") == [
        ("fewshot", "dtd", 0, "lamm-official-fewshot")
    ]
    titles = [t.title for t in T.build_tables(runs, kinds=["base2new"])]
    assert any("ZeroshotCLIP" in t and "cocoop-base2new" in t for t in titles), titles


def fake_sweep(root: str) -> int:
    """Every job of every protocol (seed 1), its results written where the sweep's scripts write them, as
    tests/fixtures/fake_train.py writes them (the protocol from the job's environment; a continual run's
    ``continual`` section); no script runs. Returns the number of runs written."""
    written = 0
    for proto in P.PROTOCOLS.values():
        for job in S.build_protocol_jobs(proto.kind, proto.name, environ={"OUTPUT": root, "SEEDS": "1"}):
            for step in job.steps:
                env = dict(job.env)
                if step.argv[0] == "env":  # a step run with its own environment (the tested model's training)
                    env.update(w.split("=", 1) for w in step.argv[1:] if "=" in w and not w.startswith("/"))
                record = {"name": env[S.PROTOCOL_ENV], "method": env[S.PROTOCOL_METHOD_ENV]}
                results = {"accuracy": 40.0 + len(step.out_dir) % 50, "protocol": record}
                if any(word.endswith("continual.sh") for word in step.argv):
                    metrics = {"average_incremental_accuracy": 60.0, "last_accuracy": 50.0, "average_forgetting": 3.0}
                    results.update(accuracy=50.0, continual={"num_stages": 10, "metrics": metrics})
                    results["protocol"] = {"stages": 10, "shared": env.get("SHARED", "freeze"), **record}
                os.makedirs(step.out_dir, exist_ok=True)
                with open(os.path.join(step.out_dir, "results.json"), "w") as f:
                    json.dump(results, f)
                written += 1
    return written


def test_every_table_from_a_fake_sweep_has_each_published_number_beside_its_twin_only(tmp_path):
    """All protocols swept (results written where their jobs write them), every table built: a published number
    stands only in the table of the protocol that reproduces it (same method, backbone, protocol and shots), at
    its dataset, and every published number stands there once; every protocol's method has its table rows."""
    assert fake_sweep(str(tmp_path)) > 1000
    runs = T.load_runs(str(tmp_path))
    tables = T.build_tables(runs)
    reference = T.load_reference()
    twins = {p.published: p for p in P.PROTOCOLS.values() if p.published}
    assert set(twins) == {"lamm_fewshot_figure.csv", "published_base2new.csv"}
    placed = []
    for table in tables:
        for label, cells in table.rows:
            for column, cell in zip(table.columns, cells):
                if cell.paper is not None:
                    placed.append((table, label, column, cell.paper))
    figure, b2n = twins["lamm_fewshot_figure.csv"], twins["published_base2new.csv"]
    seen = set()
    for table, label, column, value in placed:
        kind = table.key.split("_")[0]
        assert kind in ("fewshot", "base2new"), table.title
        twin = figure if kind == "fewshot" else b2n
        method = table.title.rpartition(", ")[2]
        assert method.endswith(f" (protocol {twin.name})"), (table.title, label, column)
        name = method[: -len(f" (protocol {twin.name})")]
        dataset = "Average" if label.startswith("Average") else T.PAPER_DATASET[label]
        if kind == "fewshot":
            shots = 0 if column == "0 shots" else int(column.split()[0])
            assert value == reference["fewshot"][(name, twin.backbone, twin.name, shots, dataset)]
            seen.add((name, shots, dataset))
        else:
            shots = 0 if name == "ZeroshotCLIP" else 16
            triple = reference["base2new"][(name, twin.backbone, twin.name, shots, "Average")]
            assert value == triple[["base", "new", "H"].index(column)]
            seen.add((name, column))
    assert len(seen) == len(placed) == len(reference["fewshot"]) + 3 * len(reference["base2new"])
    # every protocol and method has its rows: named in a table's title (per-method tables) or row labels
    text = "\n".join(T.to_markdown(t) for t in tables)
    for proto in P.PROTOCOLS.values():
        for plan in proto.methods:
            assert f"{plan.name} (protocol {proto.name})" in text, (proto.name, plan.name)
    keys = {t.key for t in tables}
    assert {
        "xd",
        "dg",
        "twoset",
        "continual_cifar100_shots16_10stages",
        "continual_imagenet_r_shots16_10stages",
    } <= keys
    # LAMM's domain generalisation: the two ImageNet variants of the official run, beside the others' four
    dg = next(t for t in tables if t.key == "dg")
    row = dict(dg.rows)["LAMM (protocol lamm-official-dg)"]
    filled = [col for col, cell in zip(dg.columns, row) if cell.mean is not None]
    assert sorted(filled) == ["imagenet_sketch", "imagenetv2"]
    assert (
        "protocol lamm-official-dg trains nothing: its source run is lamm-official-fewshot's few-shot run" in dg.notes
    )
    # the continual comparison: LAMM alone beside CoOp, MaPLe, CoOp+LAMM and MaPLe+LAMM, each with its setting
    table = next(t for t in tables if t.key == "continual_cifar100_shots16_10stages")
    assert sorted(label for label, _ in table.rows) == sorted(
        f"{m} (protocol lamm-continual), shared tensors {s}"
        for m, s in (("CoOp", "trained in every stage"), ("MaPLe", "trained in every stage"),
                     ("LAMM", "frozen after stage 1"), ("CoOp+LAMM", "frozen after stage 1"),
                     ("MaPLe+LAMM", "frozen after stage 1"))
    )  # fmt: skip
    twoset = next(t for t in tables if t.key == "twoset")
    assert len(twoset.rows) == len(P.get_protocol("lamm-official-incremental").methods) == 5


def test_continual_and_tested_model_protocols_run_through_the_scripts(fake_env, tmp_path):
    """``sweep.sh continual --protocol lamm-continual`` (and the two-set protocol) dry-run and run; a hand-run
    continual sweep records the stage protocol's name; LAMM's domain generalisation tests the official few-shot
    run's ImageNet model at epoch 50 (training it first when it is missing)."""
    dry = sweep(fake_env, "continual", "--protocol", "lamm-continual", "--dry-run", DATASETS="cifar100")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "5 jobs, 5 to run" in dry.stdout and dry.stdout.count("continual.sh cifar100 1") == 5
    assert dry.stdout.count("environment: SHARED=train") == 2  # CoOp and MaPLe: nothing but shared prompts
    dry = sweep(fake_env, "continual", "--protocol", "lamm-official-incremental", "--dry-run", DATASETS="dtd")
    assert dry.returncode == 0 and "5 jobs, 5 to run" in dry.stdout, dry.stdout + dry.stderr
    out = sweep(fake_env, "continual", "--protocol", "lamm-continual", "--methods", "LAMM,CoOp", DATASETS="cifar100")
    assert out.returncode == 0, out.stdout + out.stderr
    out = sweep(fake_env, "continual", TRAINER="MaPLe", CFG="vit_b16_c2_ep5_batch4_2ctx", DATASETS="cifar100")
    assert out.returncode == 0, out.stdout + out.stderr
    root = tmp_path / "output"
    coop = root / "lamm-continual/continual/cifar100/shots_16/CoOp/vit_b16_ep50_ctxv1/shared_train/seed1"
    assert json.loads((coop / "results.json").read_text())["protocol"]["method"] == "CoOp"
    hand = root / "continual/cifar100/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx/shared_freeze/seed1/results.json"
    assert json.loads(hand.read_text())["protocol"] == {"shared": "freeze", "name": "lamm-continual", "method": None}
    (table,) = T.build_tables(T.load_runs(str(root)), kinds=["continual"])
    assert [label for label, _ in table.rows] == [
        "LAMM (protocol lamm-continual), shared tensors frozen after stage 1",
        "MaPLe (MaPLe/vit_b16_c2_ep5_batch4_2ctx), shared tensors frozen after stage 1",
        "CoOp (protocol lamm-continual), shared tensors trained in every stage",
    ]
    out = sweep(fake_env, "xd", "--protocol", "lamm-official-dg")
    assert out.returncode == 0, out.stdout + out.stderr
    model = root / "lamm-official-fewshot/fewshot/imagenet/shots_16/LAMM_CoOp/vit_b16_ep50_ctxv1_frozen_official/seed1"
    assert json.loads((model / "results.json").read_text())["protocol"] == {
        "name": "lamm-official-fewshot",
        "method": "LAMM",
    }
    for target in ("imagenetv2", "imagenet_sketch"):
        run = root / "lamm-official-dg/xd/test" / target / "shots_16/LAMM_CoOp/vit_b16_ep50_ctxv1_frozen_official/seed1"
        result = json.loads((run / "results.json").read_text())
        assert (result["model_dir"], result["load_epoch"]) == (str(model), "50")
        assert result["opts"][-2:] == ["TRAINER.LAMM.SHOTS", "1"]
    again = sweep(fake_env, "fewshot", "--protocol", "lamm-official-fewshot", "--methods", "LAMM", DATASETS="imagenet",
                  SHOTS_LIST="16")  # fmt: skip
    assert "0 done, 1 skipped" in again.stdout  # the few-shot protocol's own run, not a second copy


@pytest.mark.dassl
def test_every_override_is_a_key_of_its_config():
    """Each protocol's overrides merge into its trainer's config (a mistyped key, a value of the wrong type, or a
    key of another trainer's node fails here, not on a GPU hours later)."""
    pytest.importorskip("dassl", reason="Dassl is not installed")
    from dassl.config import get_cfg_default

    from lamm_plugin.dassl.config import add_baseline_config, add_lamm_config

    merged = set()
    for _, choice, _, _ in all_choices():
        if not choice.overrides or (choice.trainer, choice.config, choice.overrides) in merged:
            continue
        cfg = add_baseline_config(add_lamm_config(get_cfg_default()))
        cfg.merge_from_file(os.path.join(REPO, "configs", "trainers", choice.trainer, f"{choice.config}.yaml"))
        cfg.merge_from_list(choice.opts())
        for key, value in choice.overrides:
            node = cfg
            for part in key.split("."):
                node = node[part]
            assert str(node) == value, (choice, key)
        merged.add((choice.trainer, choice.config, choice.overrides))
    assert len(merged) >= 10


def test_coop_curves_kgcoop_4_shots_and_the_official_domain_generalisation():
    for name, position, csc in (("mid", "middle", None), ("csc", None, "True"), ("csc-mid", "middle", "True")):
        c = P.resolve(f"coop-fewshot-rn50-{name}", "CoOp", "dtd", 2)
        assert c.config == "rn50_ep100"  # CoOp's schedule, as its end-token curve
        opts = dict(c.overrides)
        assert (opts.get("TRAINER.COOP.CLASS_TOKEN_POSITION"), opts.get("TRAINER.COOP.CSC")) == (position, csc)
    kg = P.resolve("kgcoop-fewshot", "KgCoOp", "imagenet", 4)
    assert (kg.config, kg.overrides, epochs("KgCoOp", kg.config)) == (
        "vit_b16_ep100_ctxv1",
        (("TRAINER.KGCOOP.KG_WEIGHT", "8.0"), ("TRAINER.KGCOOP.FP16_LEARNED", "True")),
        100,
    )
    with pytest.raises(ValueError, match="at 4 shots"):
        P.resolve("kgcoop-fewshot", "KgCoOp", "imagenet", 16)
    dg = P.get_protocol("lamm-official-dg")
    assert (dg.model_from, dg.load_epoch, dg.targets) == (
        "lamm-official-fewshot",
        50,
        ("imagenet_sketch", "imagenetv2"),
    )
    assert P.get_protocol("kgcoop-xd").model_from == "kgcoop-fewshot"
    dg_choice, model = (P.resolve(p, "LAMM", "imagenet", 16) for p in ("lamm-official-dg", "lamm-official-fewshot"))
    assert (dg_choice.trainer, dg_choice.config, dg_choice.overrides) == (model.trainer, model.config, model.overrides)


def test_baselines_run_as_their_originals_in_every_protocol_but_ours():
    """Each baseline of a protocol that an original ran keeps its learned tensors in fp16 and steps them with plain
    SGD under its configs' PREC fp16, as its original (MaPLe: cloned deep projections too); the LAMM rows and the
    protocols of ours keep our numerics; every such override is a key its config accepts with its PREC."""
    import yaml

    seen = set()
    for protocol in P.PROTOCOLS.values():
        for plan in protocol.methods:
            keys = {o.key: o.value for o in plan.overrides}
            fp16 = keys.get(f"TRAINER.{plan.trainer.upper()}.FP16_LEARNED")
            if protocol.name in ("lamm-fewshot", "lamm-continual") or plan.trainer.startswith("LAMM_"):
                assert fp16 is None or "official" in plan.rules[0].config, (protocol.name, plan.name)
                continue
            if plan.trainer in ("VPT", "ZeroshotCLIP", "LinearProbeCLIP"):
                assert fp16 is None, (protocol.name, plan.name)
                continue
            assert fp16 == "True", (protocol.name, plan.name)
            if plan.trainer == "MaPLe":
                assert keys["TRAINER.MAPLE.CLONE_DEEP_PROJ"] == "True", protocol.name
            for rule in plan.rules:
                with open(os.path.join(REPO, "configs", "trainers", plan.trainer, f"{rule.config}.yaml")) as f:
                    node = yaml.safe_load(f)["TRAINER"][plan.trainer.upper()]
                assert node.get("PREC", "fp16") == "fp16", (plan.trainer, rule.config)
            seen.add(plan.trainer)
    assert seen == {"CoOp", "CoCoOp", "KgCoOp", "ProGrad", "MaPLe", "IVLP", "PromptSRC"}
    ours = P.resolve("lamm-continual", "CoOp", "cifar100", 16)
    assert not any(key.endswith("FP16_LEARNED") for key, _ in ours.overrides)
