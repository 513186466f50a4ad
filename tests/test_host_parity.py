"""Host methods against their original code (logits and gradients to 1e-5 on the same random CLIP).

Needs checkouts, given by environment variables: MAPLE_ORIGINAL_REPO (github.com/muzairkhattak/
multimodal-prompt-learning: MaPLe, VPT and IVLP), COOP_ORIGINAL_REPO (github.com/KaiyangZhou/CoOp: CoOp and CoCoOp),
KGCOOP_ORIGINAL_REPO (the ``KgCoOp/`` folder of github.com/htyao89/KgCoOp) and PROMPTSRC_ORIGINAL_REPO
(github.com/muzairkhattak/PromptSRC: model and loss, self-regularisation included), PROGRAD_ORIGINAL_REPO (a
checkout of github.com/BeierZhu/Prompt-align: ProGrad's model, loss and, from its Dassl fork's trainer, the
projected gradient of one step), plus Dassl.
Without them these tests skip; the placement of every prompt is also checked without them in test_placement.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

REPOS = {
    "maple": "MAPLE_ORIGINAL_REPO",
    "coop": "COOP_ORIGINAL_REPO",
    "kgcoop": "KGCOOP_ORIGINAL_REPO",
    "promptsrc": "PROMPTSRC_ORIGINAL_REPO",
    "prograd": "PROGRAD_ORIGINAL_REPO",
}
CASES = {
    "maple-shallow": "maple",
    "maple-deep": "maple",
    "vpt-shallow": "maple",
    "vpt-deep": "maple",
    "coop-end": "coop",
    "coop-middle": "coop",
    "coop-front": "coop",
    "coop-csc": "coop",
    "coop-init": "coop",
    "cocoop-init": "coop",
    "cocoop-random": "coop",
    "kgcoop-init": "kgcoop",
    "kgcoop-random": "kgcoop",
    "promptsrc-shallow": "promptsrc",
    "promptsrc-deep": "promptsrc",
    "ivlp-shallow": "maple",
    "ivlp-deep": "maple",
    "prograd-init": "prograd",
    "prograd-init-food": "prograd",
    "prograd-random": "prograd",
}


@pytest.mark.e2e
@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=[pytest.mark.e2e, pytest.mark.dassl]) if CASES[c] == "prograd" else c for c in CASES]
)
def test_host_method_matches_original_code(case):
    variable = REPOS[CASES[case]]
    path = os.environ.get(variable, "")
    code = Path(path, "ProGrad.public") if CASES[case] == "prograd" else Path(path)
    if not (path and Path(code, "trainers").is_dir() and Path(code, "clip").is_dir()):
        pytest.skip(f"set {variable} to a checkout of the original code to compare with it")
    pytest.importorskip("dassl", reason="the original code imports Dassl")
    from host_parity import compare

    result = compare(case, path)
    for key in ("logits rel", "grad rel", "loss rel", "kl rel"):
        # ProGrad's projected gradient subtracts close vectors: 5e-5 (measured 5e-6 on a laptop-class CPU).
        tolerance = 5e-5 if key == "grad rel" and CASES[case] == "prograd" else 1e-5
        assert result.get(key, 0.0) < tolerance, (key, result)
    if CASES[case] == "prograd":
        # The batch's gradients conflict, so the projection acts; the context starts from the same values.
        assert result["conflict"] == 1.0, result
        assert result.get("init abs", 0.0) == 0.0, result


@pytest.mark.e2e
def test_importing_original_code_leaves_dassl_registries_and_modules_as_they_were():
    """The originals register ``CoOp``, ``MaPLe``, ... like our trainers do; importing them twice, in any order,
    must leave every Dassl registry and our own ``trainers`` package as they were."""
    pytest.importorskip("dassl", reason="the original code imports Dassl")
    given = {name: os.environ.get(variable, "") for name, variable in {**REPOS, "lamm": "LAMM_OFFICIAL_REPO"}.items()}
    if given["prograd"]:  # its code is one folder down in the checkout
        given["prograd"] = str(Path(given["prograd"], "ProGrad.public"))
    missing = [name for name, path in given.items() if not (path and Path(path, "trainers").is_dir())]
    if missing:
        pytest.skip(f"set the variables of {missing} to checkouts of the original code to import it")
    import originals

    import trainers  # noqa: F401  (this repository's trainers: CoOp, MaPLe, ... registered first)

    before = [dict(registry._obj_map) for registry in originals.dassl_registries()]
    ours = sys.modules["trainers"]
    for _ in range(2):
        for name, path in given.items():
            module = "trainers.coop" if name in ("coop", "kgcoop", "lamm") else f"trainers.{name}"
            (imported,) = originals.import_original(path, module)
            assert Path(imported.__file__).is_relative_to(Path(path).resolve()) or path in imported.__file__
    assert [dict(registry._obj_map) for registry in originals.dassl_registries()] == before
    assert sys.modules["trainers"] is ours
