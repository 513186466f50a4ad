"""Table (and plot) of class-incremental continual-learning runs (``continual.py``).

Finds every ``results.json`` with a ``continual`` section under the given folders, groups the runs by method,
dataset, number of stages and shared-tensor setting, and prints average incremental accuracy, last accuracy and
average forgetting (per stage and per class), ``mean ± std`` over seeds. ``--plot FILE`` draws the accuracy on all
classes seen after each stage, one line per method (needs matplotlib).

Usage: python scripts/continual_table.py output/continual [--format markdown|csv] [--plot continual.png]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lamm_experiments.continual import continual_table, format_table, plot_accuracy  # noqa: E402
from lamm_plugin.layout import RESULTS_FILENAME  # noqa: E402


def find_results(roots: Sequence[str]) -> list[dict[str, Any]]:
    """Parsed ``results.json`` files with a ``continual`` section under ``roots`` (stage folders are left out)."""
    found = []
    for root in roots:
        if not os.path.exists(root):
            raise FileNotFoundError(f"{root} does not exist: give the output folder of continual runs.")
        for folder, _, files in sorted(os.walk(root)):
            if RESULTS_FILENAME not in files:
                continue
            path = os.path.join(folder, RESULTS_FILENAME)
            try:
                with open(path) as f:
                    result = json.load(f)
            except (OSError, ValueError) as err:
                print(f"Skipping {path}: {err}", file=sys.stderr)
                continue
            if isinstance(result, dict) and "continual" in result:
                result["path"] = path
                found.append(result)
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", help="folders searched for results.json")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    parser.add_argument("--plot", default="", help="write a plot of accuracy per stage to this file")
    args = parser.parse_args(argv)
    results = find_results(args.roots)
    rows = continual_table(results)
    if not rows:
        print(f"No finished continual run under {', '.join(args.roots)}.", file=sys.stderr)
        return 1
    print(format_table(rows, args.format))
    if args.plot:
        try:
            print(f"Plot written to {plot_accuracy(results, args.plot)}", file=sys.stderr)
        except ImportError as err:
            print(err, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
