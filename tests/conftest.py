"""Shared fixtures: a tiny random-weight open_clip CLIP (real tokenizer, context 77) built once per session.

Also: under ``CI=true`` a test (or test module) skipped because Dassl is missing fails instead, so that CI
cannot pass with the Dassl tests silently skipped. Elsewhere they stay skipped, with the reason.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

from lamm_plugin.backbone import CLIPBundle, load_clip


@pytest.fixture(scope="session")
def _tiny_vit() -> CLIPBundle:
    torch.manual_seed(0)
    return load_clip("tiny-vit")


@pytest.fixture
def tiny_clip(_tiny_vit: CLIPBundle) -> CLIPBundle:
    """A fresh copy of the tiny ViT CLIP (tests may change it)."""
    return copy.deepcopy(_tiny_vit)


@pytest.fixture
def tiny_clip64(_tiny_vit: CLIPBundle) -> CLIPBundle:
    """The tiny ViT CLIP in float64, for exact parity checks."""
    bundle = copy.deepcopy(_tiny_vit)
    bundle.model.double()
    return bundle


CLASSNAMES = ["dog", "golden retriever", "bernese mountain dog", "cat", "red_fox"]


@pytest.fixture
def classnames() -> list[str]:
    """Class names of one to three tokens, one with an underscore (CoOp's folder-style names)."""
    return list(CLASSNAMES)


def _skipped_for_dassl(report: pytest.CollectReport | pytest.TestReport) -> str | None:
    """The skip reason when ``report`` is a skip caused by missing Dassl (every such reason names Dassl)."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return None
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return reason if "dassl" in reason.lower() else None


def _fail_in_ci(report: pytest.CollectReport | pytest.TestReport) -> None:
    reason = _skipped_for_dassl(report) if os.environ.get("CI") == "true" else None
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = f"CI=true: Dassl must be installed here, but this was skipped: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    _fail_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    _fail_in_ci(outcome.get_result())
