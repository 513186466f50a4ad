"""Class-incremental continual learning: the accuracy matrix, the standard metrics, tables and plots of runs.

The protocol (class order, stages) and the stage preparation of a LAMM model are in :mod:`lamm_plugin.continual`;
this module computes what a run reports, from per-class counts and from ``results.json`` files, with the standard
library only:

* :func:`accuracy_matrix`, :func:`continual_metrics`: after every stage ``t`` the accuracy on the test images of
  each stage ``s <= t`` (predicting among all classes seen so far), and at the end the average incremental
  accuracy, the last accuracy and the average forgetting, per stage and per class;
* :func:`continual_section`: the ``continual`` section of a run's ``results.json``;
* :func:`continual_table`, :func:`stage_curves`, :func:`accuracy_plot`, :func:`plot_accuracy`: tables and a plot
  over the ``results.json`` files of several runs.

Definitions (``a[t][s]``: accuracy on stage ``s``'s test images after stage ``t``; ``A_t``: accuracy on the test
images of every class seen after stage ``t``, i.e. the mean of ``a[t][0..t]`` weighted by test images):

* average incremental accuracy: ``mean_t A_t`` over the ``T`` stages;
* last accuracy: ``A_{T-1}``;
* forgetting of stage ``s < T-1``: ``max_{s <= t < T-1} a[t][s] - a[T-1][s]`` (Chaudhry et al., 2018); average
  forgetting: its mean over ``s``. Per class the same with per-class accuracies, averaged over the classes of
  stages ``0..T-2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from lamm_experiments import figures
from lamm_experiments.tabular import markdown_table
from lamm_plugin.files import save_figure
from lamm_plugin.layout import CONTINUAL_FORMAT

__all__ = [
    "CONTINUAL_FORMAT",
    "TABLE_COLUMNS",
    "accuracy_matrix",
    "continual_metrics",
    "continual_section",
    "continual_table",
    "forgetting",
    "format_table",
    "AccuracyPlot",
    "accuracy_plot",
    "plot_accuracy",
    "run_label",
    "stage_curves",
]


# ---- accuracy matrix and metrics -----------------------------------------------------------------------------------
def accuracy_matrix(
    stage_classes: Sequence[Sequence[str]], evaluations: Sequence[Mapping[str, Sequence[int]]]
) -> dict[str, Any]:
    """Accuracies after every stage from per-class counts.

    Args:
        stage_classes: Class names of each stage, in stage order.
        evaluations: For each finished stage ``t``, ``{classname: (correct, total)}`` over the test images of every
            class seen up to ``t`` (predictions among those classes).

    Returns:
        ``matrix`` (``[t][s]`` in percent, ``None`` for ``s > t``), ``seen`` (``A_t``), ``current`` (``a[t][t]``),
        ``per_class`` (``{classname: [accuracy after stage t or None]}``) and ``test_counts`` (test images per
        stage).
    """
    num = len(stage_classes)
    matrix: list[list[Optional[float]]] = []
    seen, current = [], []
    per_class: dict[str, list[Optional[float]]] = {c: [None] * len(evaluations) for s in stage_classes for c in s}
    counts = [0] * num
    for t, ev in enumerate(evaluations):
        row: list[Optional[float]] = [None] * num
        right = total = 0
        for s in range(t + 1):
            missing = [c for c in stage_classes[s] if c not in ev]
            if missing:
                raise KeyError(f"The evaluation after stage {t + 1} has no result for classes {missing[:5]}.")
            r = sum(int(ev[c][0]) for c in stage_classes[s])
            n = sum(int(ev[c][1]) for c in stage_classes[s])
            if n == 0:
                raise ValueError(f"Stage {s + 1} has no test images.")
            row[s] = 100.0 * r / n
            counts[s] = n
            right, total = right + r, total + n
            for c in stage_classes[s]:
                per_class[c][t] = 100.0 * int(ev[c][0]) / int(ev[c][1]) if int(ev[c][1]) else None
        matrix.append(row)
        seen.append(100.0 * right / total)
        current.append(row[t])
    return {"matrix": matrix, "seen": seen, "current": current, "per_class": per_class, "test_counts": counts}


def forgetting(rows: Sequence[Sequence[Optional[float]]]) -> list[Optional[float]]:
    """Forgetting of every column of an accuracy matrix ``rows[t][s]``: ``max_{t < T-1} a[t][s] - a[T-1][s]`` over
    the stages where ``s`` was seen; ``None`` for the columns of the last stage (nothing to forget yet)."""
    last = len(rows) - 1
    out: list[Optional[float]] = []
    for s in range(len(rows[last])):
        before = [rows[t][s] for t in range(last) if rows[t][s] is not None]
        out.append(max(before) - rows[last][s] if before and rows[last][s] is not None else None)
    return out


def continual_metrics(
    matrix: Sequence[Sequence[Optional[float]]],
    seen: Optional[Sequence[float]] = None,
    per_class: Optional[Mapping[str, Sequence[Optional[float]]]] = None,
) -> dict[str, Any]:
    """The standard metrics of a finished run.

    Args:
        matrix: ``a[t][s]`` in percent (``None`` above the diagonal), ``T x T``.
        seen: ``A_t``; when ``None``, the unweighted mean of ``a[t][0..t]`` (equal test images per stage).
        per_class: ``{classname: [accuracy after each stage or None]}`` for per-class forgetting.

    Returns:
        ``average_incremental_accuracy``, ``last_accuracy``, ``average_forgetting`` (over stages ``0..T-2``),
        ``forgetting_per_stage`` (``None`` for the last stage), and with ``per_class``
        ``average_forgetting_per_class`` and ``forgetting_per_class``.
    """
    num = len(matrix)
    if num < 1 or any(len(row) != num for row in matrix):
        raise ValueError(f"The accuracy matrix must be square (T x T), got rows of {[len(r) for r in matrix]}.")
    if seen is None:
        seen = [sum(matrix[t][: t + 1]) / (t + 1) for t in range(num)]
    per_stage = forgetting(matrix)
    known = [f for f in per_stage if f is not None]
    out: dict[str, Any] = {
        "average_incremental_accuracy": sum(seen) / len(seen),
        "last_accuracy": seen[-1],
        "average_forgetting": sum(known) / len(known) if known else None,
        "forgetting_per_stage": per_stage,
    }
    if per_class is not None:
        names = list(per_class)
        cols = forgetting([[per_class[c][t] for c in names] for t in range(num)])
        by_class = dict(zip(names, cols))
        values = [f for f in cols if f is not None]
        out["average_forgetting_per_class"] = sum(values) / len(values) if values else None
        out["forgetting_per_class"] = by_class
    return out


def continual_section(
    stage_classes: Sequence[Sequence[str]],
    evaluations: Sequence[Mapping[str, Sequence[int]]],
    class_order_names: Sequence[str],
    shared: str,
    within_stage: Optional[Sequence[Mapping[str, Sequence[int]]]] = None,
) -> dict[str, Any]:
    """The ``continual`` section of ``results.json`` (see docs/RUN.md).

    Args:
        stage_classes: Class names of each stage.
        evaluations: Per finished stage, ``{classname: (correct, total)}`` predicting among all classes seen.
        class_order_names: Every class name in the order learned.
        shared: ``"train"`` or ``"freeze"``.
        within_stage: The same counts predicting among the classes of the image's own stage only.
    """
    acc = accuracy_matrix(stage_classes, evaluations)
    done = len(evaluations) == len(stage_classes)
    section = {
        "format": CONTINUAL_FORMAT,
        "num_stages": len(stage_classes),
        "stages_done": len(evaluations),
        "shared": shared,
        "class_order": list(class_order_names),
        "stage_classes": [list(s) for s in stage_classes],
        "accuracy_matrix": acc["matrix"],
        "seen_accuracy": acc["seen"],
        "current_accuracy": acc["current"],
        "per_class_accuracy": acc["per_class"],
        "test_counts": acc["test_counts"],
        "metrics": continual_metrics(acc["matrix"], acc["seen"], acc["per_class"]) if done else None,
    }
    if within_stage is not None:
        within = accuracy_matrix(stage_classes, within_stage)
        section["within_stage"] = {
            "accuracy_matrix": within["matrix"],
            "per_class_accuracy": within["per_class"],
            "metrics": continual_metrics(within["matrix"], within["seen"], within["per_class"]) if done else None,
        }
    return section


# ---- tables and plots over several runs ------------------------------------------------------------------------------
TABLE_COLUMNS = ("method", "dataset", "stages", "shared", "seeds", "avg_inc_acc", "last_acc", "forgetting",
                 "forgetting_per_class", "forgetting_within_stage")  # fmt: skip


def run_label(result: Mapping[str, Any]) -> str:
    """``trainer/config`` of a run (``config_name`` when the run recorded it)."""
    name = result.get("config_name") or ""
    return f"{result.get('trainer', '?')}/{name}" if name else str(result.get("trainer", "?"))


def _mean_std(values: Sequence[Optional[float]]) -> Optional[tuple[float, float]]:
    values = [v for v in values if v is not None]
    if not values:
        return None
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def continual_table(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, dataset, stages, shared) over finished runs, metrics as ``(mean, std)`` over seeds.

    Args:
        results: Parsed ``results.json`` files with a ``continual`` section; unfinished runs are left out.

    Returns:
        Rows with the keys of :data:`TABLE_COLUMNS`; metric values are ``(mean, std)`` or ``None``.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for res in results:
        cont = res.get("continual") or {}
        if not cont.get("metrics"):
            continue
        key = (run_label(res), str(res.get("dataset")), int(cont["num_stages"]), str(cont.get("shared")))
        groups.setdefault(key, []).append(res)
    rows = []
    for (method, dataset, stages, shared), runs in sorted(groups.items()):
        metric = [r["continual"]["metrics"] for r in runs]
        rows.append(
            {
                "method": method,
                "dataset": dataset,
                "stages": stages,
                "shared": shared,
                "seeds": len(runs),
                "avg_inc_acc": _mean_std([m["average_incremental_accuracy"] for m in metric]),
                "last_acc": _mean_std([m["last_accuracy"] for m in metric]),
                "forgetting": _mean_std([m["average_forgetting"] for m in metric]),
                "forgetting_per_class": _mean_std([m.get("average_forgetting_per_class") for m in metric]),
                "forgetting_within_stage": _mean_std(
                    [
                        ((r["continual"].get("within_stage") or {}).get("metrics") or {}).get("average_forgetting")
                        for r in runs
                    ]
                ),
            }
        )
    return rows


def stage_curves(results: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """``{method (dataset, shared): [A_t averaged over seeds, per stage]}`` for the finished runs."""
    curves: dict[str, list[list[float]]] = {}
    for res in results:
        cont = res.get("continual") or {}
        if not cont.get("metrics"):
            continue
        label = f"{run_label(res)} ({res.get('dataset')}, shared={cont.get('shared')})"
        curves.setdefault(label, []).append(list(cont["seen_accuracy"]))
    return {k: [sum(col) / len(col) for col in zip(*v)] for k, v in sorted(curves.items())}


def format_table(rows: Sequence[Mapping[str, Any]], fmt: str = "markdown") -> str:
    """Rows of :func:`continual_table` as a markdown or CSV table (``mean ± std`` when several seeds)."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, tuple):
            mean, std = value
            return f"{mean:.2f}" if fmt == "csv" or std == 0 else f"{mean:.2f} ± {std:.2f}"
        return str(value)

    lines = []
    if fmt == "csv":
        lines.append(",".join(TABLE_COLUMNS))
        lines += [",".join(cell(row[c]) for c in TABLE_COLUMNS) for row in rows]
    elif fmt == "markdown":
        lines.append(markdown_table(TABLE_COLUMNS, [[cell(row[c]) for c in TABLE_COLUMNS] for row in rows]))
    else:
        raise ValueError(f"Unknown table format {fmt!r}: use markdown or csv.")
    return "\n".join(lines)


#: Curves of the plot closer than this (accuracy points, at every stage) are drawn side by side and named in a note.
COINCIDE_POINTS = 1.0
#: Sideways offset (stages) between the curves of one such group.
COINCIDE_OFFSET = 0.06


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float]
    marker: str
    linestyle: str


@dataclass
class AccuracyPlot:
    """What :func:`plot_accuracy` draws, decided without matplotlib (tests read it)."""

    title: str
    series: list[Series]
    ylim: tuple[float, float]
    stages: int
    chance: Optional[list[float]] = None  # 100 / classes seen, per stage, when every run saw the same counts
    notes: list[str] = field(default_factory=list)


def _seen_counts(result: Mapping[str, Any]) -> Optional[tuple[int, ...]]:
    stages = (result.get("continual") or {}).get("stage_classes") or []
    counts, seen = [], 0
    for names in stages:
        seen += len(names)
        counts.append(seen)
    return tuple(counts) or None


def accuracy_plot(results: Sequence[Mapping[str, Any]], title: str = "") -> AccuracyPlot:
    """The plot of ``A_t`` per stage for every method: labels (the dataset moves to the title when there is one),
    marker and line style per curve, curves that coincide offset and named in a note, the chance line
    (``100 / classes seen``) and a y-axis from 0 to a bit above the highest value."""
    finished = [r for r in results if (r.get("continual") or {}).get("metrics")]
    curves = stage_curves(finished)
    if not curves:
        raise ValueError("No finished continual run to plot.")
    datasets = sorted({str(r.get("dataset")) for r in finished})
    if len(datasets) == 1:  # the dataset goes to the title, the labels keep method and shared setting
        curves = {k.replace(f"({datasets[0]}, ", "(", 1): v for k, v in curves.items()}
    counts = {_seen_counts(r) for r in finished}
    chance = [100.0 / n for n in next(iter(counts))] if len(counts) == 1 and None not in counts else None
    stages = max(len(v) for v in curves.values())
    offsets: dict[str, float] = {}
    notes = []
    for group in figures.coinciding(curves, COINCIDE_POINTS):
        for j, name in enumerate(group):
            offsets[name] = (j - (len(group) - 1) / 2) * COINCIDE_OFFSET
        notes.append(
            f"{' and '.join(group)} coincide (within {COINCIDE_POINTS:g} accuracy "
            f"point{'' if COINCIDE_POINTS == 1 else 's'} at every stage; drawn side by side)"
        )
    series = []
    for i, (label, values) in enumerate(curves.items()):
        marker, linestyle = figures.style(i)
        x = [t + 1 + offsets.get(label, 0.0) for t in range(len(values))]
        series.append(Series(label, x, list(values), marker, linestyle))
    values = [v for s in series for v in s.y] + (chance or [])
    if not title:
        where = datasets[0] if len(datasets) == 1 else f"{len(datasets)} datasets"
        title = f"Continual learning on {where}: accuracy on all classes seen"
    return AccuracyPlot(title, series, figures.accuracy_limits(values), stages, chance, notes)


def plot_accuracy(results: Sequence[Mapping[str, Any]], path: str, title: str = "") -> str:
    """Plot ``A_t`` (accuracy on all classes seen so far) per stage for every method (:func:`accuracy_plot`);
    needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # optional dependency
        raise ImportError("The plot needs matplotlib: pip install matplotlib") from err
    spec = accuracy_plot(results, title)
    fig, ax = plt.subplots(figsize=(7, 4.6 + 0.25 * len(spec.notes)))
    for s in spec.series:
        ax.plot(s.x, s.y, marker=s.marker, linestyle=s.linestyle, label=s.label)
    if spec.chance:
        stages = range(1, len(spec.chance) + 1)
        ax.plot(stages, spec.chance, color="grey", linestyle=":", marker="", label="chance (1 / classes seen)")
    ax.set_xticks(range(1, spec.stages + 1))
    ax.set_ylim(*spec.ylim)
    ax.set_xlabel("stage")
    ax.set_ylabel("accuracy on all classes seen (%)")
    ax.set_title(spec.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    bottom = 0.0
    if spec.notes:
        bottom = 0.05 * len(spec.notes)
        fig.text(0.01, 0.01, "\n".join(spec.notes), fontsize=7, va="bottom", wrap=True)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path
