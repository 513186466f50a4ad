"""Table (and plot) of class-incremental continual-learning runs (``continual.py``).

Finds every ``results.json`` with a ``continual`` section under the given folders, groups the runs by method,
dataset, number of stages and shared-tensor setting, and prints average incremental accuracy, last accuracy and
average forgetting (per stage and per class), ``mean ± std`` over seeds. ``--plot FILE`` draws the accuracy on all
classes seen after each stage, one line per method (needs matplotlib).

Usage: python scripts/continual_table.py output/continual [--format markdown|csv] [--plot continual.png]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lamm_experiments.continual import continual_table, format_table, plot_accuracy  # noqa: E402
from lamm_experiments.results import ResultsFileError, continual_section, read_results  # noqa: E402
from lamm_plugin.errors import MissingFileError, run_main  # noqa: E402
from lamm_plugin.files import check_output  # noqa: E402
from lamm_plugin.layout import RESULTS_FILENAME  # noqa: E402


def find_results(roots: Sequence[str], skipped: Optional[list[ResultsFileError]] = None) -> list[dict[str, Any]]:
    """Parsed ``results.json`` files with a ``continual`` section under ``roots`` (stage folders are left out).

    A file that cannot be used (not JSON, a malformed ``continual`` section: :func:`continual_section`) is left out,
    and its error appended to ``skipped`` when given.
    """
    found = []
    for root in roots:
        if not os.path.exists(root):
            raise MissingFileError(f"{root} does not exist: give the output folder of continual runs.")
        for folder, _, files in sorted(os.walk(root)):
            if RESULTS_FILENAME not in files:
                continue
            path = os.path.join(folder, RESULTS_FILENAME)
            try:
                result = read_results(path, key=None)
                section = continual_section(result, path)
            except ResultsFileError as err:
                if skipped is not None:
                    skipped.append(err)
                continue
            if section is not None:
                result["path"] = path
                found.append(result)
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command under the one error handler (:func:`~lamm_plugin.errors.run_main`); returns the exit status."""
    return run_main(lambda: _main(argv), argv)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", help="folders searched for results.json")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    parser.add_argument("--plot", default="", help="write a plot of accuracy per stage to this file")
    args = parser.parse_args(argv)
    skipped: list[ResultsFileError] = []
    if args.plot:
        check_output(args.plot, "--plot")
    results = find_results(args.roots, skipped)
    if skipped:
        print(f"{len(skipped)} runs skipped: their {RESULTS_FILENAME} cannot be used", file=sys.stderr)
        for err in skipped:
            print(f"  {err}", file=sys.stderr)
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
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
