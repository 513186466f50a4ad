"""Every fenced code block of the README, docs/RUN.md and docs/DATASETS.md either runs as written or is listed.

``BLOCKS`` classifies each block, found by a marker (a piece of text that occurs in exactly one block of its
file): ``RUN`` blocks run here, on the generated synthetic set and the tiny random-weight CLIP on a CPU;
``OUTPUT`` blocks show output or a folder layout and hold no command; ``SKIP`` blocks cannot run here, for the
reason given (real datasets, CLIP weights, a GPU, internet, another repository). A block that no marker finds, or
a marker that finds no block, fails ``test_every_block_is_classified``, so the docs cannot drift unnoticed.

The runnable blocks run in document order in one copy of the repository, as a user following the docs would:
shell blocks with ``bash -euo pipefail`` in a new process, Python blocks in this process (in a fresh namespace),
both from the copy's root. The harness sets two things and nothing else: ``PATH`` starts with this interpreter's
folder (so ``python`` is the interpreter under test), and ``DATA``, the dataset root the docs write as
``$DATA``, is the copy's ``data/`` folder, where the synthetic set is generated. Commands are not rewritten.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/RUN.md", "docs/DATASETS.md")

RUN = "run"  # runs here; needs only what the test extras install
RUN_DASSL = "run with Dassl"  # runs here when Dassl is installed
OUTPUT = "output"  # shows output or a layout, holds no command
SKIP = "skip"  # cannot run here, for the reason given

REAL_DATA = "needs a real dataset under $DATA and CLIP ViT-B/16 weights (a GPU run)"
HOST_REPO = "runs inside another repository (CoOp, MaPLe, ...) that has this plugin installed"

# (file, marker) -> (kind, reason). The marker must occur in exactly one fenced block of the file.
BLOCKS: dict[tuple[str, str], tuple[str, str]] = {
    # README.md
    ("README.md", "bash scripts/install.sh"): (
        SKIP,
        "clones this repository and installs packages (needs internet); .ci/run runs scripts/install.sh",
    ),
    ("README.md", "--output-dir output/demo DATASET.NUM_SHOTS 16"): (RUN_DASSL, "the main job"),
    ("README.md", "--output-dir output/oxford_pets/LAMM_CoOp/16shots/seed1"): (SKIP, REAL_DATA),
    ("README.md", 'clip = load_clip("tiny-vit")'): (RUN, "the Dassl-free core on the tiny CLIP"),
    ("README.md", "import lamm_plugin.dassl"): (RUN_DASSL, "the drop-in import line"),
    ("README.md", "output/oxford_pets/LAMM_CoOp/seed1"): (SKIP, HOST_REPO),
    ("README.md", "python -m lamm_experiments.synthetic $DATA --layout dtd"): (
        RUN,
        "the generated shapes in the hosts' DTD layout",
    ),
    ("README.md", "output/dtd/LAMM_CoOp/seed1"): (
        SKIP,
        HOST_REPO + "; tests/test_dassl_dropin.py trains on this layout with the demo configs inside copies of the "
        "hosts' own train.py",
    ),
    ("README.md", "python -m lamm_experiments.interpret output/demo"): (
        RUN_DASSL,
        "inspects the main job's checkpoint",
    ),
    ("README.md", "train/Red_circle/0000.png"): (OUTPUT, "the folder layout of a dataset of one's own"),
    ("README.md", "python -m lamm_experiments.synthetic data/my_shapes"): (
        RUN_DASSL,
        "a dataset of one's own: a generated ImageFolder tree, trained on and checked",
    ),
    ("README.md", "python -m lamm_plugin.predict output/my_shapes"): (
        RUN_DASSL,
        "predicts the test images of a dataset of one's own with the run trained on it just before",
    ),
    ("README.md", 'Predictor.from_run("output/my_shapes")'): (RUN_DASSL, "that run's model from Python"),
    ("README.md", "DATASET_CONFIGS=my_configs DATASETS=my_shapes"): (
        RUN_DASSL,
        "a sweep of a dataset of one's own (2 short CPU jobs of the demo config) and its table",
    ),
    ("README.md", "python -m pytest -q"): (SKIP, "the test suite itself (.ci/run runs it)"),
    ("README.md", "tests/         pytest suite"): (OUTPUT, "the repository layout"),
    # docs/RUN.md
    ("docs/RUN.md", "--output-dir output/fewshot/oxford_pets/shots_16/"): (SKIP, REAL_DATA),
    ("docs/RUN.md", "Error: Unknown config key"): (OUTPUT, "an error message"),
    ("docs/RUN.md", "<output-dir>/"): (OUTPUT, "the files a run writes"),
    ("docs/RUN.md", "epoch  2/20 batch 20/24"): (OUTPUT, "a console progress line"),
    ("docs/RUN.md", "epoch [2/20] batch [20/24]"): (OUTPUT, "a log line"),
    ("docs/RUN.md", 'rm -rf "$DATA/.lamm_cache"'): (RUN, "clears the feature cache"),
    ("docs/RUN.md", "vit_b16_ep50_ctxv1_frozen bash scripts/lamm/sweep.sh fewshot"): (SKIP, "sweeps over " + REAL_DATA),
    ("docs/RUN.md", "sweep.sh fewshot --gpus 0,1,2,3"): (SKIP, "sweeps over " + REAL_DATA + ", on GPUs and SLURM"),
    ("docs/RUN.md", "sweep.sh fewshot --protocol coop-fewshot --dry-run\n"): (RUN, "protocol sweeps, listed only"),
    ("docs/RUN.md", "make_tables.py output --out tables"): (
        SKIP,
        "needs sweep results under output/; tests/test_sweep_tables.py runs it on a sweep of the synthetic set",
    ),
    ("docs/RUN.md", "--readme README.md --check"): (RUN, "the README's Results section is what make_tables.py gives"),
    ("docs/RUN.md", "bash scripts/lamm/base2new_train.sh"): (SKIP, "sweeps over " + REAL_DATA),
    ("docs/RUN.md", "bash scripts/lamm/xd_train.sh"): (SKIP, "sweeps over " + REAL_DATA),
    ("docs/RUN.md", "bash scripts/lamm/continual.sh cifar100 1"): (SKIP, "sweeps over " + REAL_DATA),
    ("docs/RUN.md", "continual:\n  num_stages"): (OUTPUT, "the results.json of a continual run"),
    ("docs/RUN.md", "bash scripts/lamm/continual_demo.sh"): (
        SKIP,
        "about three minutes on 2 cores; tests/test_dassl_continual.py runs continual.py on a smaller synthetic set",
    ),
    ("docs/RUN.md", "--load-epoch 20"): (RUN_DASSL, "the CPU demo: the main job, then its model on new classes"),
    ("docs/RUN.md", "python -m lamm_plugin.predict output/demo"): (
        RUN_DASSL,
        "predicts images with the main job's model",
    ),
    ("docs/RUN.md", 'predictor = Predictor.from_run("output/demo")'): (RUN_DASSL, "the main job's model from Python"),
    ("docs/RUN.md", "--compare output/fewshot/oxford_pets/shots_16/"): (SKIP, "two few-shot runs of " + REAL_DATA),
    ("docs/RUN.md", "report = interpret(state, vocabulary_for(state), k=5)"): (
        RUN_DASSL,
        "reads the main job's checkpoint from Python",
    ),
    ("docs/RUN.md", "bash benchmarks/gpu_check.sh --output /tmp/gpu_check"): (SKIP, "the GPU check needs a GPU"),
    ("docs/RUN.md", "gpu_check.sh --device cpu --smoke"): (
        SKIP,
        "about a minute on 2 cores; tests/test_gpu_check.py runs the same command",
    ),
    ("docs/RUN.md", "import lamm_plugin.dassl"): (RUN_DASSL, "the drop-in import line"),
    ("docs/RUN.md", "--config-file /path/to/lamm-plugin/"): (SKIP, HOST_REPO),
    # docs/DATASETS.md
    ("docs/DATASETS.md", "downloads/         archives"): (OUTPUT, "the folder layout"),
    ("docs/DATASETS.md", "python -m datasets.prepare NAME"): (
        SKIP,
        "NAME is a placeholder, and preparing a real dataset downloads gigabytes",
    ),
    ("docs/DATASETS.md", "imagenet/             images/train"): (OUTPUT, "the folder layouts"),
    ("docs/DATASETS.md", "synthetic_shapes.yaml"): (RUN_DASSL, "training on the synthetic set"),
}


@dataclass(frozen=True)
class Claim:
    """A number the docs state about the output of a block they run: checked against what the run prints.

    ``stated`` matches the number in the file's prose (exactly once, group 1), ``printed`` the number in the block's
    output (group 1, the last match). Without ``within`` the two must be the same text, i.e. equal to the printed
    precision; a number that depends on the CPU's kernels is stated with the spread measured across CPUs and kernel
    settings, and ``within`` matches that spread in the prose (group 1): the printed number may differ by that much.
    To update a number, change the prose; the regexes find it.
    """

    file: str
    marker: str  # the block whose output the number is about (a marker of BLOCKS)
    stated: str
    printed: str
    what: str
    within: str = ""


CLAIMS = (
    Claim(
        "README.md",
        "--output-dir output/demo DATASET.NUM_SHOTS 16",
        r"test accuracy goes from chance \(\d+%\) to ([\d.]+)%",
        r"^\* accuracy: ([\d.]+)%$",
        "the main job's test accuracy",
        within=r"test accuracy goes from chance \(\d+%\) to [\d.]+% ± ([\d.]+)",
    ),
)


def stated_number(claim: Claim, pattern: str = "") -> str:
    """The number ``claim`` states (or the one ``pattern``, its ``within``, finds) in the prose, found exactly once."""
    pattern = pattern or claim.stated
    text = (ROOT / claim.file).read_text(encoding="utf-8")
    found = re.findall(pattern, text)
    assert len(found) == 1, f"{claim.file}: {claim.what} ({pattern!r}) must be stated once, found {found}"
    return found[0]


def check_claims(block: Block, output: str) -> None:
    """Each number the docs state about ``block``'s output equals what the run printed."""
    for claim in CLAIMS:
        if claim.file != block.file or claim.marker not in block.text:
            continue
        printed = re.findall(claim.printed, output, re.M)
        assert printed, f"{block.name} printed no {claim.what} ({claim.printed!r}):\n{output[-3000:]}"
        stated = stated_number(claim)
        if not claim.within:
            assert stated == printed[-1], (
                f"{claim.file} states {claim.what} {stated}, the run printed {printed[-1]}: fix the number in the docs"
            )
            continue
        spread = float(stated_number(claim, claim.within))
        assert abs(float(printed[-1]) - float(stated)) <= spread + 1e-9, (
            f"{claim.file} states {claim.what} {stated} ± {spread:g}, the run printed {printed[-1]}: fix the number "
            "in the docs, or its spread if this CPU's kernels differ by more"
        )


RUNNABLE_LANGS = {"bash": "shell", "sh": "shell", "shell": "shell", "python": "python"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    file: str
    line: int
    lang: str
    text: str

    @property
    def name(self) -> str:
        return f"{self.file}:{self.line}"


def extract_blocks(file: str) -> list[Block]:
    """The fenced code blocks of ``file`` (relative to the repository root), indentation removed."""
    text = (ROOT / file).read_text(encoding="utf-8")
    blocks = [
        Block(file, text.count("\n", 0, m.start()) + 1, m.group("lang").lower(), textwrap.dedent(m.group("body")))
        for m in FENCE.finditer(text)
    ]
    fences = sum(1 for line in text.splitlines() if line.lstrip().startswith("```"))
    assert fences == 2 * len(blocks), f"{file}: an unclosed or nested code fence"
    return blocks


def classify() -> tuple[dict[Block, tuple[str, str]], list[str]]:
    """Each block's (kind, reason), and the problems: blocks without an entry, entries without a block."""
    found: dict[Block, tuple[str, str]] = {}
    problems = []
    blocks = {file: extract_blocks(file) for file in DOCS}
    for (file, marker), entry in BLOCKS.items():
        hits = [b for b in blocks[file] if marker in b.text]
        if len(hits) != 1:
            where = ", ".join(b.name for b in hits) or "no block"
            problems.append(f"marker {marker!r} of {file} must occur in exactly one block, found: {where}")
            continue
        if hits[0] in found:
            problems.append(f"{hits[0].name} is matched by more than one marker")
        found[hits[0]] = entry
        kind = entry[0]
        if kind in (RUN, RUN_DASSL) and hits[0].lang not in RUNNABLE_LANGS:
            problems.append(f"{hits[0].name} is marked {kind!r} but its language is {hits[0].lang!r}")
    for file in DOCS:
        for b in blocks[file]:
            if b not in found:
                problems.append(f"{b.name} is not classified in tests/test_docs.py BLOCKS:\n{b.text}")
    return found, problems


CLASSIFIED, PROBLEMS = classify()
CLAIMED_KIND = {claim: BLOCKS.get((claim.file, claim.marker), (None, ""))[0] for claim in CLAIMS}
RUNNABLE = [
    pytest.param(b, id=b.name, marks=[pytest.mark.dassl] if kind == RUN_DASSL else [])
    for b, (kind, _) in sorted(CLASSIFIED.items(), key=lambda kv: (DOCS.index(kv[0].file), kv[0].line))
    if kind in (RUN, RUN_DASSL)
]


def test_every_block_is_classified():
    assert not PROBLEMS, "\n".join(PROBLEMS)


def test_every_claim_names_a_runnable_block_and_a_stated_number():
    for claim in CLAIMS:
        assert CLAIMED_KIND[claim] in (RUN, RUN_DASSL), f"{claim.what}: {claim.marker!r} is not a runnable block"
        assert re.fullmatch(r"\d+(\.\d+)?", stated_number(claim))


def test_a_wrong_stated_number_fails_the_claim(monkeypatch):
    claim = CLAIMS[0]
    block = next(b for b in CLASSIFIED if b.file == claim.file and claim.marker in b.text)
    check_claims(block, f"=> result\n* accuracy: {stated_number(claim)}%\n")  # the stated number passes
    spread = float(stated_number(claim, claim.within))
    inside = float(stated_number(claim)) + spread
    check_claims(block, f"* accuracy: {inside:.1f}%\n")  # within the stated spread
    with pytest.raises(AssertionError, match="fix the number"):
        check_claims(block, f"* accuracy: {inside + 0.2:.1f}%\n")
    with pytest.raises(AssertionError, match="fix the number"):
        check_claims(block, "=> result\n* accuracy: 99.9%\n")
    with pytest.raises(AssertionError, match="printed no"):
        check_claims(block, "no result line")


DEFAULT_TIER = "ruff check . && ruff format --check . && python -m pytest -q"
BOTH_TIERS = DEFAULT_TIER + ' -m "not slow"'


def test_the_docs_run_the_main_job_and_the_tests():
    """The README shows the main job and the test commands; scripts/install.sh runs the same (its ``demo`` and
    ``test``), and .ci/run installs with it and runs both tiers."""
    kinds = {(b.file, b.text.strip()): kind for b, (kind, _) in CLASSIFIED.items()}
    main_job = [
        text
        for (file, text), kind in kinds.items()
        if file == "README.md" and kind == RUN_DASSL and "--output-dir output/demo " in text
    ]
    assert len(main_job) == 1
    readme_tests = [text for (file, text) in kinds if file == "README.md" and DEFAULT_TIER in text]
    assert len(readme_tests) == 1 and BOTH_TIERS in readme_tests[0] and "python -m pytest -q -m e2e" in readme_tests[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/install.sh" in ci and BOTH_TIERS in ci
    install = (ROOT / "scripts" / "install.sh").read_text()
    assert f'TEST="{DEFAULT_TIER}"' in install
    demo = re.search(r"^DEMO=\((.*?)\)$", install, re.M | re.S).group(1)
    assert shlex.split(demo) == shlex.split(main_job[0].replace("\\\n", " "))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A copy of the repository (without outputs, data or caches) in which the blocks run, one after another."""
    dest = tmp_path_factory.mktemp("docs") / "lamm-plugin"
    ignore = shutil.ignore_patterns(".git", "output", "data", "__pycache__", "*.egg-info", ".*_cache", ".venv")
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


_DONE: set[tuple[str, str]] = set()


@pytest.mark.e2e
@pytest.mark.parametrize("block", RUNNABLE)
def test_block_runs(block: Block, workspace: Path, monkeypatch: pytest.MonkeyPatch):
    kind = CLASSIFIED[block][0]
    if kind == RUN_DASSL and importlib.util.find_spec("dassl") is None:
        pytest.skip("needs Dassl, which is not installed")
    key = (block.lang, block.text)
    if key in _DONE:  # a block repeated word for word in another file runs once
        return
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("DATA", str(workspace / "data"))
    if RUNNABLE_LANGS[block.lang] == "python":
        # In this process (torch and open_clip are imported already), in a fresh namespace, so that a name the
        # block does not import or define fails as it would for a reader; the RNG state is restored afterwards.
        with torch.random.fork_rng():
            exec(compile(block.text, block.name, "exec"), {"__name__": "__main__"})
    else:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.pop("PYTHONPATH", None)  # the copy's own lamm_plugin, trainers and datasets come first, from its root
        cmd = ["bash", "-euo", "pipefail", "-c", block.text]
        out = subprocess.run(cmd, cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, (
            f"{block.name} failed ({out.returncode}):\n{block.text}\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
        )
        check_claims(block, out.stdout)
    _DONE.add(key)


def test_documented_outputs_are_git_ignored():
    """What the documented commands write into the repository (run folders, data, make_tables.py's tables/, the
    dataset configs of the "Your own data" sweep)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["tables/fewshot.md", "tables/fewshot_curves.png", "output/demo/log.txt", "data/synthetic_shapes/x.png",
             "my_configs/my_shapes.yaml"]  # fmt: skip
    out = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == paths, out.stderr
