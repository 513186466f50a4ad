"""Class-incremental continual learning (:mod:`lamm_plugin.continual`, :mod:`lamm_experiments.continual`) without Dassl.

The generated shapes (12 classes) in 4 stages of 3 with the tiny random CLIP: with the shared tensors frozen after
stage 1, earlier classes' logits stay bit-identical through later stages; trained, they change. The metrics are
checked against a hand computation on a fixed accuracy matrix.
"""

from __future__ import annotations

import pytest
import torch

from lamm_experiments import synthetic
from lamm_experiments.continual import (
    TABLE_COLUMNS,
    accuracy_matrix,
    continual_metrics,
    continual_section,
    continual_table,
    format_table,
    stage_curves,
)
from lamm_plugin import CoOpConfig, LAMMConfig, MaPLeConfig, build_model
from lamm_plugin.continual import class_order, prepare_stage, split_stages

# ---- metrics against a hand computation -----------------------------------------------------------------------------
MATRIX = [
    [90.0, None, None, None],
    [70.0, 80.0, None, None],
    [60.0, 75.0, 85.0, None],
    [50.0, 60.0, 80.0, 90.0],
]


def test_metrics_match_a_hand_computation():
    m = continual_metrics(MATRIX)
    # A_t (equal test images per stage): 90, (70+80)/2 = 75, (60+75+85)/3 = 73.33.., (50+60+80+90)/4 = 70
    assert m["average_incremental_accuracy"] == pytest.approx((90 + 75 + 220 / 3 + 70) / 4)  # 77.083..
    assert m["last_accuracy"] == pytest.approx(70.0)
    # Forgetting: stage 1: max(90, 70, 60) - 50 = 40; stage 2: max(80, 75) - 60 = 20; stage 3: 85 - 80 = 5.
    assert m["forgetting_per_stage"] == pytest.approx([40.0, 20.0, 5.0, None])
    assert m["average_forgetting"] == pytest.approx(65 / 3)
    # A rise after a drop counts from the best earlier value, not the first one.
    rising = continual_metrics([[50.0, None], [60.0, 70.0]])
    assert rising["forgetting_per_stage"][0] == pytest.approx(-10.0) and rising["average_forgetting"] == -10.0


def test_accuracy_matrix_from_counts_weights_stages_by_test_images():
    stages = [["red circle", "blue square"], ["green triangle"]]
    after1 = {"red circle": (8, 10), "blue square": (5, 10)}
    after2 = {"red circle": (6, 10), "blue square": (5, 10), "green triangle": (3, 4)}
    acc = accuracy_matrix(stages, [after1, after2])
    assert acc["matrix"] == [[65.0, None], [55.0, 75.0]]
    assert acc["seen"] == pytest.approx([65.0, 100 * 14 / 24])  # weighted by test images, not by stage
    assert acc["current"] == [65.0, 75.0] and acc["test_counts"] == [20, 4]
    assert acc["per_class"]["red circle"] == [80.0, 60.0] and acc["per_class"]["green triangle"] == [None, 75.0]
    metrics = continual_metrics(acc["matrix"], acc["seen"], acc["per_class"])
    assert metrics["average_incremental_accuracy"] == pytest.approx((65 + 100 * 14 / 24) / 2)
    assert metrics["average_forgetting"] == pytest.approx(10.0)
    # Per class: red circle 80 -> 60 (20), blue square 50 -> 50 (0); the last stage's class has none.
    assert metrics["forgetting_per_class"] == {"red circle": 20.0, "blue square": 0.0, "green triangle": None}
    assert metrics["average_forgetting_per_class"] == pytest.approx(10.0)
    with pytest.raises(KeyError, match="green triangle"):
        accuracy_matrix(stages, [after1, after1])


def test_table_and_curves_over_runs():
    stages = [["a"], ["b"]]
    runs = []
    for seed, (x, y) in enumerate([(8, 6), (10, 4)]):
        evals = [{"a": (x, 10)}, {"a": (y, 10), "b": (5, 10)}]
        section = continual_section(stages, evals, ["a", "b"], "freeze", within_stage=evals)
        runs.append({"trainer": "LAMM_CoOp", "config_name": "cfg", "dataset": "D", "seed": seed, "continual": section})
    unfinished = continual_section(stages, [{"a": (1, 10)}], ["a", "b"], "freeze")
    runs.append({"trainer": "LAMM_CoOp", "dataset": "D", "continual": unfinished})
    assert unfinished["metrics"] is None
    (row,) = continual_table(runs)
    assert row["method"] == "LAMM_CoOp/cfg" and row["seeds"] == 2 and row["stages"] == 2
    # Seed 0: A = 80, (6+5)/20 = 55; seed 1: A = 100, (4+5)/20 = 45. Population std over seeds.
    assert row["last_acc"] == pytest.approx((50.0, 5.0))
    assert row["forgetting"] == pytest.approx((40.0, 20.0))  # 80 - 60 = 20 and 100 - 40 = 60
    assert row["avg_inc_acc"] == pytest.approx((70.0, 2.5))  # (80 + 55) / 2 = 67.5 and (100 + 45) / 2 = 72.5
    assert row["forgetting_within_stage"] == pytest.approx((40.0, 20.0))
    table = format_table([row])
    assert table.splitlines()[0].startswith("| method |") and "LAMM_CoOp/cfg" in table
    assert format_table([row], "csv").splitlines()[0].startswith("method,dataset,stages")
    assert stage_curves(runs) == {"LAMM_CoOp/cfg (D, shared=freeze)": [90.0, 50.0]}


# ---- protocol ---------------------------------------------------------------------------------------------------
def test_class_order_and_stage_split():
    assert class_order(5) == [0, 1, 2, 3, 4]
    drawn = class_order(100, seed=1993)
    assert sorted(drawn) == list(range(100)) and drawn != list(range(100)) and drawn == class_order(100, seed=1993)
    assert class_order(3, order=[2, 0, 1]) == [2, 0, 1]
    with pytest.raises(ValueError, match="missing: \\[1\\]"):
        class_order(3, order=[2, 0, 0])
    assert split_stages(list(range(12)), num_stages=4) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert [len(s) for s in split_stages(list(range(200)), num_stages=10)] == [20] * 10
    assert [len(s) for s in split_stages(list(range(10)), num_stages=4)] == [3, 3, 2, 2]
    assert [len(s) for s in split_stages(list(range(10)), classes_per_stage=4)] == [4, 4, 2]
    with pytest.raises(ValueError, match="exactly one"):
        split_stages([0, 1], num_stages=2, classes_per_stage=1)
    with pytest.raises(ValueError, match="between 2"):
        split_stages([0, 1], num_stages=3)


# ---- old classes' logits through four stages ----------------------------------------------------------------------
STAGES = 4


def _data(split: str, per_class: int, clip):
    data = synthetic.make_tensors(split, num_per_class=per_class, image_size=clip.image_size, seed=0)
    mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.std).view(1, 3, 1, 1)
    return (data.images - mean) / std, data.labels, data.classnames


def _run_stages(tiny_clip, method: str, method_cfg, shared: str):
    """Train 4 stages of 3 classes; after every stage, logits of every earlier stage's classes on fixed images."""
    torch.manual_seed(0)
    images, labels, names = _data("train", 4, tiny_clip)
    test_images, _, _ = _data("test", 2, tiny_clip)
    order = class_order(len(names), seed=1993)
    stages = split_stages(order, num_stages=STAGES)
    model = build_model(method, tiny_clip, [names[y] for y in stages[0]], method_cfg, LAMMConfig(), shots=4)
    logits: list[list[torch.Tensor]] = []  # [after stage t][stage s <= t]
    for k, stage in enumerate(stages):
        prepare_stage(model, [names[y] for y in stage], k, shared)
        optim = torch.optim.SGD(model.trainable_parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
        mask = torch.isin(labels, torch.tensor(stage))
        x, y = images[mask], torch.tensor([stage.index(int(v)) for v in labels[mask]])
        model.train()
        for _ in range(3):
            optim.zero_grad()
            model(x, y).losses["total"].backward()
            optim.step()
        model.eval()
        row = []
        with torch.no_grad():
            for earlier in stages[: k + 1]:
                model.set_classnames([names[c] for c in earlier])
                row.append(model(test_images).logits.clone())
        logits.append(row)
    return logits


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("method", "method_cfg"),
    [
        ("coop", CoOpConfig(ctx_init="a photo of a")),  # CoOp + LAMM: the context trains in stage 1
        ("coop", CoOpConfig(ctx_init="a photo of a", train_ctx=False)),  # LAMM alone
        ("maple", MaPLeConfig(n_ctx=2, prompt_depth=2)),  # MaPLe + LAMM: deep prompts and projections
    ],
    ids=["coop_lamm", "lamm_alone", "maple_lamm"],
)
def test_frozen_shared_tensors_keep_old_logits_bit_identical(tiny_clip, method, method_cfg):
    logits = _run_stages(tiny_clip, method, method_cfg, "freeze")
    for t in range(1, STAGES):
        for s in range(t):
            assert torch.equal(logits[t][s], logits[s][s]), (t, s)
    # The stages did learn: every stage's logits moved away from the untrained ones of the next stage's classes.
    assert not torch.equal(logits[0][0], logits[1][1])


@pytest.mark.e2e
def test_trained_context_changes_old_logits(tiny_clip):
    logits = _run_stages(tiny_clip, "coop", CoOpConfig(ctx_init="a photo of a"), "train")
    for t in range(1, STAGES):
        assert not torch.equal(logits[t][0], logits[0][0])
        assert (logits[t][0] - logits[0][0]).abs().max() > 1e-3


def test_prepare_stage_freezes_earlier_label_rows(tiny_clip):
    names = synthetic.classnames()
    model = build_model("coop", tiny_clip, names[:3], CoOpConfig(ctx_init="a photo of a"), LAMMConfig())
    assert prepare_stage(model, names[:3], 0, "freeze") == ["ctx"]
    emb = model.label_embedding
    assert not emb.frozen_names
    assert prepare_stage(model, names[3:6], 1, "freeze") == []
    assert emb.frozen_names == set(names[:3]) and model.classnames == names[3:6]
    trainable = emb.weight.shape[0]
    assert trainable == sum(c for n, c in zip(emb.classnames, emb.counts) if n in names[3:6])
    assert model.trainable_parameters() == [emb.weight]
    with pytest.raises(ValueError, match="shared must be one of"):
        prepare_stage(model, names[6:9], 2, "thaw")


@pytest.mark.e2e
def test_table_script_and_plot(tmp_path, capsys):
    import importlib.util
    import json
    import os

    stages = [["a"], ["b"]]
    evals = [{"a": (8, 10)}, {"a": (6, 10), "b": (5, 10)}]
    section = continual_section(stages, evals, ["a", "b"], "train", within_stage=evals)
    run = tmp_path / "run" / "seed1"
    (run / "stage1").mkdir(parents=True)
    (run / "stage1" / "results.json").write_text(json.dumps({"accuracy": 80.0}))  # a stage's own result: ignored
    (run / "results.json").write_text(json.dumps({"trainer": "CoOp", "dataset": "D", "continual": section}))
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "continual_table.py")
    spec = importlib.util.spec_from_file_location("continual_table", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(tmp_path), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [",".join(TABLE_COLUMNS), "CoOp,D,2,train,1,67.50,55.00,20.00,20.00,20.00"]
    assert script.main([str(tmp_path / "run" / "seed1" / "stage1")]) == 1  # nothing finished there
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("the plot needs matplotlib (pip install matplotlib); the table was checked")
    assert script.main([str(tmp_path), "--plot", str(tmp_path / "plot.png")]) == 0
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_tables_command_reads_the_continual_tree(tmp_path):
    """``scripts/make_tables.py`` covers continual runs: the layout of ``scripts/lamm/continual.sh``, one table per
    setting, stage runs inside a run not counted, numbers equal to the results' metrics over seeds."""
    import json

    from lamm_experiments import tables

    stages = [["a"], ["b"]]
    for seed, (x, y) in enumerate([(8, 6), (10, 4)], start=1):
        evals = [{"a": (x, 10)}, {"a": (y, 10), "b": (5, 10)}]
        section = continual_section(stages, evals, ["a", "b"], "freeze", within_stage=evals)
        run = tmp_path / "continual" / "D" / "shots_16" / "LAMM_CoOp" / "cfg" / "shared_freeze" / f"seed{seed}"
        (run / "stage1").mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({"accuracy": section["metrics"]["last_accuracy"],
                                                      "continual": section}))  # fmt: skip
        (run / "stage1" / "results.json").write_text(json.dumps({"accuracy": 99.0}))
    runs = tables.load_runs(str(tmp_path))
    assert [r.kind for r in runs] == ["continual", "continual"]
    (table,) = tables.build_tables(runs, kinds=["continual"])
    assert "2 stages" in table.title and "frozen after stage 1" in table.title
    ((label, cells),) = table.rows
    assert label == "CoOp+LAMM (LAMM_CoOp/cfg)"
    values = {header: (cell.mean, cell.std, cell.n) for (header, _), cell in zip(tables.CONTINUAL_COLUMNS, cells)}
    assert values["avg incremental acc"] == pytest.approx((70.0, 2.5, 2))
    assert values["last acc"] == pytest.approx((50.0, 5.0, 2))
    assert values["avg forgetting"] == pytest.approx((40.0, 20.0, 2))
    assert "| CoOp+LAMM (LAMM_CoOp/cfg) | 70.00 ± 2.50 (2)" in tables.to_markdown(table)
