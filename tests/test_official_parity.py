"""The ``official`` preset against the official LAMM code, CoOp+LAMM, LAMM alone and MaPLe+LAMM (needs its checkout:
set LAMM_OFFICIAL_REPO)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

OFFICIAL = os.environ.get("LAMM_OFFICIAL_REPO", "")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (OFFICIAL and Path(OFFICIAL, "trainers", "coop.py").is_file()),
        reason="set LAMM_OFFICIAL_REPO to a checkout of github.com/gaojingsheng/LAMM to compare with its original code",
    ),
]


@pytest.mark.parametrize("origin_clip", [False, True], ids=["coop+lamm", "lamm-alone"])
def test_official_preset_matches_official_code(origin_clip):
    pytest.importorskip("dassl", reason="the official code imports Dassl")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from official_parity import compare

    result = compare(OFFICIAL, origin_clip)
    assert result["loss rel. diff"] < 1e-5
    assert result["label grad rel. diff"] < 1e-5
    if not origin_clip:
        assert result["ctx grad rel. diff"] < 1e-5


@pytest.mark.e2e
@pytest.mark.dassl
def test_official_maple_preset_matches_official_code():
    """The official MaPLe+LAMM prompt: one label row in the slot of the word "of", the whole class name kept. The
    prompt embeddings of both branches equal the official code's exactly (lookups and copies), and so does one step."""
    pytest.importorskip("dassl", reason="the official code imports Dassl")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from official_parity import compare_maple

    result = compare_maple(OFFICIAL)
    assert result["learned prompt max diff"] == 0.0 and result["reference prompt max diff"] == 0.0, result
    assert result["same end-of-text positions"], result
    assert result["loss rel. diff"] < 1e-5, result
    for grad in ("label", "ctx", "deep text"):
        assert result[f"{grad} grad rel. diff"] < 1e-5, result
