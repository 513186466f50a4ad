"""Shared fixtures: a tiny random-weight open_clip CLIP (real tokenizer, context 77) built once per session, and
a CPU stand-in for CUDA graphs (:class:`EagerReplay`, fixture ``graph_stand_in``).

Every test starts with no fast-path verdict (:mod:`lamm_plugin.fast_paths`), so a test that makes a path fall back
changes no other test.

Also: under ``CI=true`` a test (or test module) skipped because Dassl or the original code it compares with is
missing fails instead, so that CI cannot pass with the Dassl tests or the comparisons with original code silently
skipped. Elsewhere they stay skipped, with the reason.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os

import pytest
import torch
import torch.utils._pytree as pytree
from open_clip.transformer import LayerNormFp32
from torch import nn

from lamm_plugin import cuda_graph, fast_paths
from lamm_plugin.backbone import CLIPBundle, load_clip


@pytest.fixture(autouse=True)
def _fresh_fast_path_verdicts(monkeypatch):
    monkeypatch.setattr(fast_paths, "_VERDICTS", {})


class EagerReplay(cuda_graph.CudaGraphs):
    """CPU stand-in for the CUDA calls of :mod:`lamm_plugin.cuda_graph`: captures run on any device; recording runs
    the region once, and a replay runs it again and copies its outputs into the first run's tensors (what a graph's
    replay leaves in its memory), both with host reads forbidden, as in a capture.

    Attributes:
        inject: Relative difference put into every output of each replay (a graph that computes something else).
        replays: Replays so far.
    """

    def __init__(self) -> None:
        self.inject = 0.0
        self.replays = 0

    def supports(self, device: torch.device) -> bool:
        return True

    def warmup_stream(self, device: torch.device):
        return contextlib.nullcontext()

    def record(self, region):
        with cuda_graph.forbid_host_sync():
            outputs = region()

        def replay() -> None:
            self.replays += 1
            with cuda_graph.forbid_host_sync():
                fresh = region()
            with torch.no_grad():
                for old, new in zip(pytree.tree_leaves(outputs), pytree.tree_leaves(fresh)):
                    old.copy_(new * (1 + self.inject) if self.inject else new)

        return replay, outputs


@pytest.fixture
def fast_path_warnings() -> list[str]:
    """The warnings :mod:`lamm_plugin.fast_paths` logs during the test (its records do not reach the root logger,
    and so ``caplog``, once :mod:`lamm_plugin.dassl` routes the package's logging to stdout)."""
    messages: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger(fast_paths.__name__)
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


@pytest.fixture
def graph_stand_in(monkeypatch) -> EagerReplay:
    """:class:`EagerReplay` in place of the CUDA calls, for this test."""
    stand_in = EagerReplay()
    monkeypatch.setattr(cuda_graph, "BACKEND", stand_in)
    return stand_in


@pytest.fixture(scope="session")
def _tiny_vit() -> CLIPBundle:
    torch.manual_seed(0)
    return load_clip("tiny-vit")


def _copy(bundle: CLIPBundle) -> CLIPBundle:
    """A deep copy sharing the tokenizer: copying its vocabulary took 0.18 s of the copy's 0.2 s, and a tokenizer only
    caches what it computes, so that tests cannot change what it gives."""
    return copy.deepcopy(bundle, memo={id(bundle.tokenizer): bundle.tokenizer})


@pytest.fixture
def tiny_clip(_tiny_vit: CLIPBundle) -> CLIPBundle:
    """A fresh copy of the tiny ViT CLIP (tests may change it; the tokenizer is shared)."""
    return _copy(_tiny_vit)


@pytest.fixture
def tiny_clip64(_tiny_vit: CLIPBundle) -> CLIPBundle:
    """The tiny ViT CLIP in float64, for exact parity checks."""
    bundle = _copy(_tiny_vit)
    bundle.model.double()
    return bundle


CLASSNAMES = ["dog", "golden retriever", "bernese mountain dog", "cat", "red_fox"]


@pytest.fixture
def classnames() -> list[str]:
    """Class names of one to three tokens, one with an underscore (CoOp's folder-style names)."""
    return list(CLASSNAMES)


# ---- dtype checks as strict as CUDA kernels -----------------------------------------------------------------------
_CHECKED = (nn.LayerNorm, nn.Linear, nn.Conv1d, nn.Conv2d, nn.MultiheadAttention)


def _input_dtype_check(module: nn.Module, args: tuple, kwargs: dict) -> None:
    if isinstance(module, LayerNormFp32):
        return  # casts its input to float32 itself
    x = args[0] if args else kwargs.get("query", kwargs.get("input"))
    if torch.is_autocast_enabled(x.device.type):
        return  # autocast casts inputs and weights to a common dtype inside the op
    weight = module.in_proj_weight if isinstance(module, nn.MultiheadAttention) else module.weight
    if weight is None:  # attention with separate q/k/v projections
        weight = module.q_proj_weight
    if x.dtype != weight.dtype:
        raise TypeError(f"{type(module).__name__} with {weight.dtype} weights received {x.dtype} input")
    mask = kwargs.get("attn_mask")
    if mask is not None and mask.dtype not in (torch.bool, x.dtype):
        raise TypeError(f"{type(module).__name__} received a {mask.dtype} mask with {x.dtype} input")


@contextlib.contextmanager
def _strict_dtypes(*models: nn.Module):
    handles = [
        m.register_forward_pre_hook(_input_dtype_check, with_kwargs=True)
        for model in models
        for m in model.modules()
        if isinstance(m, _CHECKED)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture
def strict_dtypes():
    """Context manager over modules: a layer whose input dtype differs from its weights' raises ``TypeError``.

    CUDA kernels refuse such a mix (``expected scalar type Half but found Float``); CPU kernels accept it silently.
    With these hooks a CPU run is as strict as a GPU run about dtypes.
    """
    return _strict_dtypes


# ---- under CI=true, Dassl tests and comparisons with original code may not skip ------------------------------------
#: A skip whose reason names one of these is a missing requirement that CI provides (every such reason names it).
CI_REQUIREMENTS = {"dassl": "Dassl must be installed", "original code": "the original code must be given"}


def _skipped_for_ci_requirement(report: pytest.CollectReport | pytest.TestReport) -> str | None:
    """``"<requirement>: <skip reason>"`` when ``report`` is a skip for want of something CI provides."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return None
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    for word, requirement in CI_REQUIREMENTS.items():
        if word in reason.lower():
            return f"{requirement} here, but this was skipped: {reason}"
    return None


def _fail_in_ci(report: pytest.CollectReport | pytest.TestReport) -> None:
    reason = _skipped_for_ci_requirement(report) if os.environ.get("CI") == "true" else None
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = f"CI=true: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    _fail_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    _fail_in_ci(outcome.get_result())
