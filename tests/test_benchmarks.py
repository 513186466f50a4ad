"""The benchmark commands the docs give parse: every ``python benchmarks/bench.py ...`` of README.md, docs/ and the
script's own usage lines names a table and options that ``bench.py`` has (two tables once added the same option,
and every table stopped parsing)."""

from __future__ import annotations

import glob
import os
import re
import shlex
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "benchmarks", "bench.py")


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, arguments) of each ``bench.py`` command in inline code, code blocks and the usage lines."""
    found = []
    for path in [os.path.join(REPO, "README.md"), *sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))), BENCH]:
        with open(path) as f:
            text = f.read()
        spans = re.findall(r"`([^`]*benchmarks/bench\.py[^`]*)`", text) if path.endswith(".md") else []
        spans += re.findall(r"^\s*(?:PYTHONPATH=\. )?python benchmarks/bench\.py[^\n]*", text, re.M)
        for span in spans:
            command = " ".join(span.split()).split("  #")[0].split(" # ")[0]
            words = shlex.split(command)
            found.append((os.path.relpath(path, REPO), words[words.index("benchmarks/bench.py") + 1 :]))
    return found


def test_every_documented_benchmark_command_parses():
    sys.path.insert(0, os.path.dirname(BENCH))
    import bench

    commands = documented_commands()
    tables = {args[0] for _, args in commands if args}
    assert {"step", "official", "loader", "evalcache", "run", "sweep"} <= tables, tables
    parser = bench.build_parser()
    for where, args in commands:
        parsed = parser.parse_args(args)  # SystemExit (argparse's error) names the bad option
        assert parsed.table == args[0], (where, args)


def test_the_gpu_checks_benchmark_commands_parse():
    """``gpu_check.py``'s benchmark cases call ``bench.py`` with arguments it has (found only on a GPU otherwise)."""
    import importlib.util

    sys.path.insert(0, os.path.dirname(BENCH))
    import bench

    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(REPO, "benchmarks", "gpu_check.py"))
    gpu_check = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gpu_check  # dataclasses look their module up there
    spec.loader.exec_module(gpu_check)
    args = gpu_check.parse_args([])
    parser = bench.build_parser()
    for what in ("step", "run", "official-100", "official-1000"):
        argv = gpu_check.bench_arguments(args, what, "/path/to/LAMM")
        assert parser.parse_args(argv).table == what.split("-")[0]
