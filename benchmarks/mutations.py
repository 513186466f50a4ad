"""Mutation check: small, plausible mistakes in the method, each of which the default test suite must catch.

Each mutation is applied to a temporary copy of the repository (never to the working tree), the default
``pytest`` command runs there (stopping at the first failure), and a table says which test caught it:

    python benchmarks/mutations.py                 # all mutations, 2 at a time
    python benchmarks/mutations.py --jobs 4 -k maple
    python benchmarks/mutations.py --list

Exit status 1 when a mutation survives (the suite stays green) or does not apply (its source line moved).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The default suite, with the files that check the method first so that a caught mutation stops early
#: (pytest runs each test once even when its file is also named through ``tests``).
DEFAULT_TESTS = [
    "tests/test_losses.py",
    "tests/test_placement.py",
    "tests/test_encoders.py",
    "tests/test_lamm.py",
    "tests/test_host_parity.py",
    "tests",
]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str


MUTATIONS = [
    # ---- losses
    Mutation("distillation without the T**2 factor", "lamm_plugin/losses.py", ") * temperature**2", ")"),
    Mutation(
        "distillation: reference logits detached",
        "lamm_plugin/losses.py",
        "F.cross_entropy(reference_logits / temperature, target)",
        "F.cross_entropy(reference_logits.detach() / temperature, target)",
    ),
    Mutation(
        "distillation: teacher and student swapped",
        "lamm_plugin/losses.py",
        "target = F.softmax(logits / temperature, dim=-1)\n    return F.cross_entropy(reference_logits / temperature",
        "target = F.softmax(reference_logits / temperature, dim=-1)\n    return F.cross_entropy(logits / temperature",
    ),
    Mutation(
        "feature term: reference side not detached",
        "lamm_plugin/losses.py",
        "reference[labels].detach()",
        "reference[labels]",
    ),
    Mutation(
        "feature term zero unless every sample differs",
        "lamm_plugin/losses.py",
        "(labels != labels[0]).any()",
        "(labels != labels[0]).all()",
    ),
    Mutation(
        "parameter term weighted 1 instead of 1/K",
        "lamm_plugin/losses.py",
        "cfg.param_scale / k if k > 0",
        "cfg.param_scale if k > 0",
    ),
    # ---- encoders
    Mutation(
        "visual prompt tokens pooled",
        "lamm_plugin/encoders.py",
        "pooled = _pool(visual, x[:, :-n])",
        "pooled = _pool(visual, x)",
    ),
    Mutation(
        "deep visual prompts added instead of replacing",
        "lamm_plugin/encoders.py",
        "x = torch.cat([x[:, :-n], ctx], dim=1)",
        "x = torch.cat([x[:, :-n], x[:, -n:] + ctx], dim=1)",
    ),
    Mutation(
        "deep text prompts one block early",
        "lamm_plugin/encoders.py",
        "if 0 < i <= len(deep_prompts):\n                ctx = deep_prompts[i - 1].to(dtype)",
        "if i < len(deep_prompts):\n                ctx = deep_prompts[i].to(dtype)",
    ),
    Mutation(
        "visual prompts appended after ln_pre",
        "lamm_plugin/encoders.py",
        "x = torch.cat([x, prompts.expand(x.shape[0], -1, -1) if prompts.dim() == 2 else prompts], dim=1)\n"
        "        x = visual.ln_pre(x)",
        "x = visual.ln_pre(x)\n"
        "        x = torch.cat([x, prompts.expand(x.shape[0], -1, -1) if prompts.dim() == 2 else prompts], dim=1)",
    ),
    # ---- label embeddings
    Mutation(
        "label rows spliced one position late",
        "lamm_plugin/label_embedding.py",
        "flat.extend(range(c * length + start, c * length + start + count))",
        "flat.extend(range(c * length + start + 1, c * length + start + 1 + count))",
    ),
    # ---- methods
    Mutation(
        "MaPLe: deep text prompts one position later",
        "lamm_plugin/methods/maple.py",
        "deep_start=1)",
        "deep_start=2)",
    ),
    Mutation(
        "MaPLe: shallow visual prompt from the first deep prompt",
        "lamm_plugin/methods/maple.py",
        "shallow=self.proj(self.ctx)",
        "shallow=self.proj(self.deep_text[0] if len(self.deep_text) else self.ctx)",
    ),
    Mutation(
        "VPT: deep visual prompts one layer late",
        "lamm_plugin/methods/vpt.py",
        "deep=list(self.deep))",
        "deep=[self.shallow, *self.deep][: len(self.deep)])",
    ),
    Mutation(
        "CoOp: middle position splits the context one word late",
        "lamm_plugin/methods/coop.py",
        "half = len(words) // 2",
        "half = len(words) // 2 + 1",
    ),
    Mutation(
        "CoCoOp: meta-network bias subtracted from the context",
        "lamm_plugin/methods/cocoop.py",
        "return self.ctx.unsqueeze(0) + bias.unsqueeze(1)",
        "return self.ctx.unsqueeze(0) - bias.unsqueeze(1)",
    ),
    Mutation(
        "KgCoOp: the zero-shot texture template instead of KgCoOp's",
        "lamm_plugin/methods/kgcoop.py",
        '"DescribableTextures": "a photo of a {}, a type of texture."',
        '"DescribableTextures": "{} texture."',
    ),
    Mutation(
        "KgCoOp: KG_WEIGHT ignored",
        "lamm_plugin/methods/kgcoop.py",
        '{"kg_alignment": (self.cfg.kg_weight, score)}',
        '{"kg_alignment": (8.0, score)}',
    ),
    # ---- checkpoints
    Mutation(
        "checkpoint: label rows loaded by position, not by class name",
        "lamm_plugin/label_embedding.py",
        "new_rows[dst] = rows[src].to(new_rows)",
        "new_rows[dst] = rows[dst].to(new_rows)",
    ),
    Mutation(
        "checkpoint: initial label values not restored",
        "lamm_plugin/label_embedding.py",
        "            self.init[dst] = init[src].to(self.init)\n",
        "",
    ),
]


def _copy(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True, text=True
    ).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def run(mutation: Mutation, pytest_args: list[str]) -> tuple[str, float]:
    """Apply ``mutation`` to a copy of the repository, run pytest there; return (verdict, seconds)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        root = Path(tmp)
        _copy(root)
        path = root / mutation.file
        text = path.read_text()
        if text.count(mutation.old) != 1:
            return f"NOT APPLIED ({text.count(mutation.old)} matches)", time.perf_counter() - start
        path.write_text(text.replace(mutation.old, mutation.new))
        env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
        tests = [t for t in pytest_args or DEFAULT_TESTS if not t.endswith(".py") or (root / t).is_file()]
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
    seconds = time.perf_counter() - start
    if proc.returncode == 0:
        return "SURVIVED", seconds
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, flags=re.M)
    return (failed[0] if failed else f"pytest exit {proc.returncode}"), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="mutations run at the same time")
    parser.add_argument("-k", default="", help="only mutations whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("pytest_args", nargs="*", help="pytest arguments instead of the default suite (e.g. a subset)")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.k.lower() in m.name.lower()]
    if args.list:
        for m in chosen:
            print(f"{m.name} ({m.file})")
        return 0

    def one(m: Mutation) -> tuple[str, float]:
        result = run(m, args.pytest_args)
        print(f"{m.name}: {result[0]} ({result[1]:.0f} s)", file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, chosen))
    print("| mutation | file | caught by (first failing test) | time |")
    print("| --- | --- | --- | --- |")
    for m, (verdict, seconds) in zip(chosen, results):
        print(f"| {m.name} | `{m.file}` | {verdict} | {seconds:.0f} s |")
    bad = [m.name for m, (v, _) in zip(chosen, results) if v == "SURVIVED" or v.startswith("NOT APPLIED")]
    if bad:
        print(f"\n{len(bad)} not caught: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
