"""Every table of the paper from an output tree, in markdown, LaTeX (booktabs) and CSV, plus the few-shot figure.

Examples::

    python scripts/make_tables.py output                       # all tables as markdown on stdout
    python scripts/make_tables.py output --out tables          # + tables/<table>.{md,tex}, tables.csv, figure
    python scripts/make_tables.py output --readme README.md    # rewrite the README's Results section
    python scripts/make_tables.py output --readme README.md --check   # exit 1 if it would change

Kinds: see ``lamm_experiments.tables.TABLE_KINDS`` (fewshot, base2new, xd, twoset, continual; xd also gives domain
generalisation). The runs of a protocol (``results.json``: ``"protocol"``) are their own rows, never averaged with
runs of another protocol or with runs started without one. A ``results.json`` that cannot be used (empty,
truncated, an accuracy such as ``"52.5%"`` or NaN) is left out and listed with the reason on stderr; everything
else is written, and the exit status is 1.
Needs only the standard library; the figure needs matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lamm_experiments import tables as T  # noqa: E402
from lamm_plugin.errors import UserError, run_main  # noqa: E402
from lamm_plugin.files import read_text, write_text  # noqa: E402


def report_skipped(skipped: Sequence[Exception]) -> int:
    """List the results files left out (stderr); returns the exit status they give (1 when any, else 0)."""
    if not skipped:
        return 0
    print(f"{len(skipped)} runs skipped: their results.json cannot be used (the tables are made without them)",
          file=sys.stderr)  # fmt: skip
    for err in skipped:
        print(f"  {err}", file=sys.stderr)
    return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command under the one error handler (:func:`~lamm_plugin.errors.run_main`); returns the exit status."""
    return run_main(lambda: _main(argv), argv)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="output folder of the sweeps (holds fewshot/, base2new/, xd/)")
    parser.add_argument("--out", help="write <table>.md, <table>.tex, tables.md, tables.csv and the figure here")
    parser.add_argument("--kinds", default=",".join(T.TABLE_KINDS), help="comma-separated table kinds")
    parser.add_argument("--format", default="markdown", choices=("markdown", "latex", "csv"), help="stdout format")
    parser.add_argument("--digits", type=int, default=2)
    parser.add_argument("--no-figure", action="store_true", help="skip the few-shot figure")
    parser.add_argument("--readme", help="README file whose generated Results section is rewritten")
    parser.add_argument("--check", action="store_true", help="with --readme: change nothing, exit 1 if it differs")
    args = parser.parse_args(argv)

    if args.digits < 0:
        parser.error(f"--digits {args.digits}: give a number of decimals, 0 or more")
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in T.TABLE_KINDS]
    if unknown:
        parser.error(f"unknown table kind(s) {', '.join(unknown)}: choose from {', '.join(T.TABLE_KINDS)}")
    if not os.path.isdir(args.root) and not args.readme:
        parser.error(f"{args.root} is not a folder: pass the OUTPUT folder of the sweeps")
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out} is a file: give a folder for the tables.")
    skipped: list = []
    runs = T.load_runs(args.root, kinds, skipped=skipped) if os.path.isdir(args.root) else []
    status = report_skipped(skipped)
    reference = T.load_reference()
    tables = T.build_tables(runs, reference, kinds)

    if args.readme:
        try:
            text = read_text(args.readme, "README")
            section = T.readme_section(runs, reference, root_label=os.path.normpath(args.root))
            new = T.replace_readme_section(text, section)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            print(f"Error: --readme {args.readme}: {e}", file=sys.stderr)
            return 1
        if args.check:
            if new != text:
                print(f"{args.readme}: its Results section differs from what {args.root} gives; rerun without --check")
                return 1
            print(f"{args.readme}: Results section up to date")
        elif new != text:
            write_text(args.readme, new, "--readme")
            print(f"{args.readme}: Results section rewritten")
        if not args.out:
            return status

    if not tables:
        print(f"No results of the kinds {', '.join(kinds)} under {args.root}", file=sys.stderr)
        return 1
    print(f"{len(runs)} runs, {len(tables)} tables", file=sys.stderr)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for t in tables:
            for ext, render in (("md", T.to_markdown), ("tex", T.to_latex)):
                write_text(os.path.join(args.out, f"{t.key}.{ext}"), render(t, args.digits) + "\n")
        write_text(
            os.path.join(args.out, "tables.md"), "\n\n".join(T.to_markdown(t, args.digits) for t in tables) + "\n"
        )
        write_text(os.path.join(args.out, "tables.tex"), "\n\n".join(T.to_latex(t, args.digits) for t in tables) + "\n")
        write_text(os.path.join(args.out, "tables.csv"), T.to_csv(tables))
        print(f"wrote {len(tables)} tables to {args.out}/ (.md, .tex; all cells in tables.csv)", file=sys.stderr)
        if not args.no_figure and any(r.kind == "fewshot" for r in runs):
            try:
                paths = T.fewshot_figure(runs, os.path.join(args.out, "fewshot_curves"), reference)
                print(f"wrote {', '.join(paths)}", file=sys.stderr)
            except ImportError as e:
                print(f"error: {e}; the tables are written", file=sys.stderr)
                status = 1
    if args.format == "markdown":
        text = "\n\n".join(T.to_markdown(t, args.digits) for t in tables)
    elif args.format == "latex":
        text = "\n\n".join(T.to_latex(t, args.digits) for t in tables)
    else:
        text = T.to_csv(tables).rstrip("\n")
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if skipped:
        print(f"{len(skipped)} runs skipped, not in the tables (listed above)", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
