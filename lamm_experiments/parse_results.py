"""Aggregate ``results.json`` files over seeds into a table (mean ± std), like CoOp's ``parse_test_res.py``.

Every folder under ROOT that holds ``results.json`` is one job; jobs whose paths differ only in their ``seed<N>``
folder form one row. The std is the population std over seeds (numpy's default, as in CoOp's script).

Examples::

    python scripts/parse_results.py output/fewshot
    python scripts/parse_results.py output/fewshot --metric macro_f1 --format csv
    python scripts/parse_results.py output/base2new --base2new      # base, new and harmonic mean per row

Needs only the standard library. ``scripts/parse_results.py`` is this module's command line.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import statistics
import sys
from collections.abc import Sequence
from typing import Any, Optional

from lamm_experiments.results import ResultsFileError, accuracy_of, read_results
from lamm_plugin.layout import RESULTS_FILENAME

SEED_DIR = re.compile(r"^seed\d+$")
METRICS = ("accuracy", "macro_f1", "mean_per_class_accuracy", "error_rate")


def find_results(root: str) -> list[str]:
    """Paths of every ``results.json`` under ``root``, sorted."""
    found = []
    for folder, _, files in os.walk(root):
        if RESULTS_FILENAME in files:
            found.append(os.path.join(folder, RESULTS_FILENAME))
    return sorted(found)


def experiment_key(path: str, root: str) -> tuple[str, Optional[str]]:
    """``(experiment, seed folder)``: the job folder relative to ``root`` without its ``seed<N>`` component."""
    rel = os.path.relpath(os.path.dirname(path), root)
    parts = [] if rel == "." else rel.split(os.sep)
    seeds = [p for p in parts if SEED_DIR.match(p)]
    rest = [p for p in parts if not SEED_DIR.match(p)]
    return ("/".join(rest) or ".", seeds[-1] if seeds else None)


def collect(root: str, metric: str, skipped: Optional[list[ResultsFileError]] = None) -> dict[str, dict[str, float]]:
    """``{experiment: {seed: value}}`` of ``metric`` for every job under ``root``.

    Args:
        root: Folder searched for ``results.json``.
        metric: The value to collect (a percentage, :data:`METRICS`).
        skipped: When given, a file that cannot be used (empty, truncated, a value that is not a finite
            percentage) is left out and its error appended; otherwise the first such file raises.

    Raises:
        ResultsFileError: A results file cannot be used and ``skipped`` is None; the message names it.
    """
    table: dict[str, dict[str, float]] = {}
    for path in find_results(root):
        try:
            results = read_results(path, key=None)
            if results.get(metric) is None and metric != "accuracy":
                print(f"warning: {path} has no {metric!r}; skipped", file=sys.stderr)
                continue
            value = accuracy_of(results, path, metric)
        except ResultsFileError as err:
            if skipped is None:
                raise
            skipped.append(err)
            continue
        experiment, seed = experiment_key(path, root)
        table.setdefault(experiment, {})[seed or f"seed{results.get('seed', '?')}"] = value
    return table


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std (0 for a single value)."""
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def harmonic_mean(base: float, new: float) -> float:
    """The harmonic mean of base and new accuracy reported by base-to-new papers."""
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


def natural_key(text: str) -> list[Any]:
    """Sort key with numbers compared as numbers (``shots_2`` before ``shots_16``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def summarise(table: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    for experiment in sorted(table, key=natural_key):
        values = [table[experiment][seed] for seed in sorted(table[experiment])]
        mean, std = mean_std(values)
        rows.append({"experiment": experiment, "seeds": len(values), "mean": mean, "std": std, "values": values})
    return rows


def base2new_rows(table: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Pair ``train_base/<x>`` (base accuracy) with ``test_new/<x>`` (new accuracy); H from the mean accuracies."""
    rows = []
    for experiment in sorted(table, key=natural_key):
        head, _, rest = experiment.partition("/")
        if head != "train_base" or f"test_new/{rest}" not in table:
            continue
        base = mean_std(list(table[experiment].values()))
        new = mean_std(list(table[f"test_new/{rest}"].values()))
        rows.append(
            {
                "experiment": rest,
                "seeds": min(len(table[experiment]), len(table[f"test_new/{rest}"])),
                "base": base[0],
                "base_std": base[1],
                "new": new[0],
                "new_std": new[1],
                "hm": harmonic_mean(base[0], new[0]),
            }
        )
    return rows


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    line = "  ".join("-" * w for w in widths)
    out = [line, "  ".join(str(h).ljust(w) for h, w in zip(header, widths)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(out + [line])


def pm(mean: float, std: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def render(rows: list[dict[str, Any]], fmt: str, metric: str, digits: int, base2new: bool) -> str:
    if base2new:
        header = ["experiment", "seeds", "base", "new", "H"]
        cells = [
            [
                r["experiment"],
                r["seeds"],
                pm(r["base"], r["base_std"], digits),
                pm(r["new"], r["new_std"], digits),
                f"{r['hm']:.{digits}f}",
            ]
            for r in rows
        ]
    else:
        header = ["experiment", "seeds", metric]
        cells = [[r["experiment"], r["seeds"], pm(r["mean"], r["std"], digits)] for r in rows]
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        keys = list(rows[0]) if rows else header
        writer.writerow(keys)
        for r in rows:
            writer.writerow([";".join(map(str, v)) if isinstance(v, list) else v for v in r.values()])
        return out.getvalue().rstrip("\n")
    return format_table(header, cells)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="folder to search for results.json files")
    parser.add_argument("--metric", default="accuracy", choices=METRICS, help="value to aggregate")
    parser.add_argument("--format", default="table", choices=("table", "csv", "json"), help="output format")
    parser.add_argument("--digits", type=int, default=2, help="decimals in the table")
    parser.add_argument(
        "--base2new", action="store_true", help="pair train_base/... with test_new/... rows: base, new, harmonic mean"
    )
    args = parser.parse_args(argv)
    if args.digits < 0:
        parser.error(f"--digits {args.digits}: give a number of decimals, 0 or more")

    skipped: list[ResultsFileError] = []
    table = collect(args.root, args.metric, skipped)
    for err in skipped:
        print(f"skipped {err}", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} runs skipped: their {RESULTS_FILENAME} cannot be used (listed above)", file=sys.stderr)
    if not table:
        print(f"No {RESULTS_FILENAME} under {args.root}", file=sys.stderr)
        return 1
    rows = base2new_rows(table) if args.base2new else summarise(table)
    if args.base2new and not rows:
        print("No train_base/... folder with a matching test_new/... folder", file=sys.stderr)
        return 1
    lines = [render(rows, args.format, args.metric, args.digits, args.base2new)]
    if not args.base2new and args.format == "table":
        # Average over datasets within one setting (the path without its first part, the dataset), never across
        # methods or shots.
        groups: dict[str, list[float]] = {}
        for r in rows:
            groups.setdefault(r["experiment"].partition("/")[2] or ".", []).append(r["mean"])
        for setting in sorted(groups, key=natural_key):
            if len(groups[setting]) > 1:
                mean = statistics.fmean(groups[setting])
                lines.append(f"average over {len(groups[setting])} datasets of {setting}: {mean:.{args.digits}f}")
        lines.append("Paper tables (per method, missing runs shown): python scripts/make_tables.py OUTPUT")
    try:
        print("\n".join(lines))
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0 if not skipped and all(math.isfinite(r.get("mean", r.get("hm", 0.0))) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
