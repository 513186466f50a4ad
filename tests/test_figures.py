"""What the figures decide, read without drawing: axis limits, panels, curves, styles, notes and labels
(``lamm_experiments.figures``, the few-shot figure's panels, the continual plot)."""

from __future__ import annotations

import pytest

from lamm_experiments import figures
from lamm_experiments.continual import accuracy_plot
from lamm_experiments.tables import Run, fewshot_panels

TWIN = ("CoOp", "ViT-B/16", "lamm-official-fewshot")  # the run that reproduces the LAMM figure's CoOp points
REFERENCE = {"fewshot": {(*TWIN, 1, "OxfordPets"): 85.0, (*TWIN, 16, "OxfordPets"): 91.0}, "base2new": {}}


def test_accuracy_limits_start_at_chance_or_zero_and_leave_room_above():
    assert figures.accuracy_limits([9.4, 10.4]) == (0.0, pytest.approx(15.4))  # not zoomed to 9.4-10.4
    assert figures.accuracy_limits([60.0, 90.0]) == (0.0, pytest.approx(99.0))
    assert figures.accuracy_limits([95.0, 99.0]) == (0.0, 100.0)
    assert figures.accuracy_limits([20.0, 40.0], floor=8.3) == (8.3, pytest.approx(45.0))
    assert figures.accuracy_limits([5.0, 40.0], floor=8.3)[0] == 0.0  # a value below chance: from 0
    assert figures.accuracy_limits([]) == (0.0, 100.0)


def test_coinciding_curves_are_grouped_and_styles_differ():
    curves = {"a": [50.0, 30.0], "b": [50.4, 29.7], "c": [10.0, 5.0], "d": [50.0, None], "e": [10.0]}
    assert figures.coinciding(curves, 0.5) == [["a", "b", "d"]]
    assert figures.coinciding({"a": [1.0], "b": [3.0]}, 0.5) == []
    styles = [figures.style(i) for i in range(len(figures.MARKERS))]
    assert len(set(styles)) == len(styles) and len({m for m, _ in styles}) == len(styles)


def _runs(datasets, methods=("CoOp/demo_cpu", "LAMM_CoOp/demo_cpu"), shots=(1, 2, 4), classes=(12, 37)):
    return [
        Run("fewshot", "", d, k, m, seed, 9.4 + 0.1 * seed + 0.2 * i, "x", backbone="tiny-vit", classes=n)
        for d, n in zip(datasets, classes)
        for i, m in enumerate(methods)
        for k in shots
        for seed in (1, 2)
    ]


def test_fewshot_one_dataset_has_no_average_panel_and_an_axis_from_zero():
    (panel,) = fewshot_panels(_runs(["synthetic_shapes"]), REFERENCE)
    assert panel.title == "synthetic_shapes" and panel.ticks == [1, 2, 4]
    # The legend names the config and backbone of our curves (here a tiny random CLIP, not the paper's ViT-B/16).
    assert [c.label for c in panel.curves] == [
        "CoOp (ours, CoOp/demo_cpu, tiny-vit)",
        "CoOp+LAMM (ours, LAMM_CoOp/demo_cpu, tiny-vit)",
    ]
    assert panel.chance == pytest.approx(100 / 12)
    top = max(y + e for c in panel.curves for y, e in zip(c.y, c.err))  # the highest mean + std drawn
    assert 9.7 < top < 10.0 and panel.ylim == (0.0, pytest.approx(top + 5.0))


def test_fewshot_several_datasets_add_the_average_and_the_paper_curves():
    methods = ("CoOp@lamm-official-fewshot", "LAMM_CoOp/demo_cpu")
    panels = fewshot_panels(_runs(["oxford_pets", "synthetic_shapes"], methods, classes=(37, 12)), REFERENCE)
    assert [p.title for p in panels] == ["oxford_pets", "synthetic_shapes", "Average (2 datasets)"]
    pets = panels[0]
    assert [c.label.split(" (")[1] for c in pets.curves] == [
        "paper)",
        "ours, CoOp@lamm-official-fewshot, tiny-vit)",
    ] + ["ours, LAMM_CoOp/demo_cpu, tiny-vit)"]
    assert [p.chance for p in panels] == pytest.approx([100 / 37, 100 / 12, (100 / 37 + 100 / 12) / 2])
    runs = _runs(["synthetic_shapes"], classes=(0,))  # results without class names: no chance line
    assert fewshot_panels(runs, REFERENCE)[0].chance is None
    assert pets.ticks == [1, 2, 4, 16] and pets.ylim == (0.0, pytest.approx(100.0))
    assert all(c.kind != "paper" for c in panels[2].curves)  # the paper's average is over its 11 datasets only
    # CoOp of another protocol (its own, or a hand run) reproduces no point of the figure: no paper curve
    for other in ("CoOp@coop-fewshot", "CoOp/demo_cpu"):
        pets = fewshot_panels(_runs(["oxford_pets", "synthetic_shapes"], (other,)), REFERENCE)[0]
        assert [c.kind for c in pets.curves] == ["ours"]


def test_runs_carry_the_backbone_and_class_count_their_results_recorded(tmp_path):
    import json

    from lamm_experiments.tables import load_runs

    folder = tmp_path / "fewshot" / "synthetic_shapes" / "shots_2" / "LAMM_CoOp" / "demo_cpu" / "seed1"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(
        json.dumps({"accuracy": 25.0, "backbone": "tiny-vit", "classnames": ["a"] * 4})
    )
    (run,) = load_runs(str(tmp_path))
    assert (run.method, run.backbone, run.classes) == ("LAMM_CoOp/demo_cpu", "tiny-vit", 4)
    (panel,) = fewshot_panels([run], REFERENCE)
    assert panel.chance == 25.0 and panel.curves[0].label == "CoOp+LAMM (ours, LAMM_CoOp/demo_cpu, tiny-vit)"


def _continual(trainer, shared, seen, dataset="SyntheticShapes", stages=((0, 1, 2),) * 4):
    names = [[f"c{s}_{i}" for i in stage] for s, stage in enumerate(stages)]
    return {
        "trainer": trainer,
        "config_name": "demo_cpu",
        "dataset": dataset,
        "continual": {"metrics": {"last_accuracy": seen[-1]}, "seen_accuracy": seen, "shared": shared,
                      "stage_classes": names},
    }  # fmt: skip


def test_continual_plot_marks_coinciding_curves_and_draws_chance_and_a_title():
    results = [
        _continual("LAMM_CoOp", "freeze", [53.1, 33.3, 12.0, 9.6]),
        _continual("LAMM_CoOp", "train", [53.1, 33.5, 11.9, 9.9]),
        _continual("CoOp", "train", [31.2, 20.8, 11.1, 7.3]),
    ]
    plot = accuracy_plot(results)
    assert plot.title == "Continual learning on SyntheticShapes: accuracy on all classes seen"
    labels = [s.label for s in plot.series]
    assert labels == ["CoOp/demo_cpu (shared=train)", "LAMM_CoOp/demo_cpu (shared=freeze)",
                      "LAMM_CoOp/demo_cpu (shared=train)"]  # fmt: skip
    assert len({(s.marker, s.linestyle) for s in plot.series}) == 3
    assert plot.series[0].x == [1, 2, 3, 4]
    freeze, train = plot.series[1], plot.series[2]
    assert all(a < b for a, b in zip(freeze.x, train.x))  # side by side, not on top of each other
    assert len(plot.notes) == 1 and labels[1] in plot.notes[0] and labels[2] in plot.notes[0]
    assert plot.chance == pytest.approx([100 / 3, 100 / 6, 100 / 9, 100 / 12])
    assert plot.ylim == (0.0, pytest.approx(53.1 * 1.1)) and plot.stages == 4


def test_continual_plot_of_two_datasets_keeps_them_in_the_labels_and_has_no_common_chance():
    results = [
        _continual("CoOp", "train", [30.0, 20.0], "A", stages=((0, 1), (2, 3))),
        _continual("CoOp", "train", [40.0, 10.0], "B", stages=((0,), (1,))),
    ]
    plot = accuracy_plot(results, title="mine")
    assert plot.title == "mine" and plot.chance is None and not plot.notes
    assert [s.label for s in plot.series] == ["CoOp/demo_cpu (A, shared=train)", "CoOp/demo_cpu (B, shared=train)"]
    with pytest.raises(ValueError, match="No finished continual run"):
        accuracy_plot([{"continual": {}}])
