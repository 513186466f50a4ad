"""Self-checks of the fast paths: the first use of each in a process on a device is compared with the eager
computation it replaces, on the same inputs and parameters, before anything it computed is used.

The paths and what each promises (its bound: the largest difference allowed, relative to the largest value of the
eager result):

- :data:`GRAPH_STEP` (:class:`~lamm_plugin.cuda_graph.GraphedStep`): the replayed forward, loss and backward give
  the eager pass's logits, loss terms and gradients bit for bit (bound 0: the same kernels, replayed);
- :data:`GRAPH_EVAL` (:class:`~lamm_plugin.cuda_graph.GraphedForward`): the replayed evaluation forward gives the
  eager logits bit for bit (bound 0);
- :data:`TEXT_ATTENTION` (our attention in the text blocks, :mod:`lamm_plugin.encoders`): open_clip's attention
  output to within :data:`ATTENTION_BOUND` of the dtype it computes in (another SDPA kernel may run where
  ``is_causal`` replaces a mask tensor, e.g. flash attention on a GPU).

A difference beyond the bound, or a capture that fails, switches the path off for the rest of the process on that
device, with one warning that names the path, the device, the difference and the setting that turns the path off;
:func:`record` gives what ``results.json`` keeps (``fast_paths``). A check reads values on the host, so it waits
while host reads are forbidden (:func:`~lamm_plugin.cuda_graph.forbid_host_sync`, a CUDA graph capture).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Optional, Union

import torch

logger = logging.getLogger(__name__)

GRAPH_STEP = "cuda_graph_step"
GRAPH_EVAL = "cuda_graph_eval"
TEXT_ATTENTION = "text_attention"
#: The paths, in the order of the records.
PATHS = (GRAPH_STEP, GRAPH_EVAL, TEXT_ATTENTION)
#: What each path is, in the warning.
DESCRIPTIONS = {
    GRAPH_STEP: "the CUDA graph of the training step",
    GRAPH_EVAL: "the CUDA graph of the evaluation forward",
    TEXT_ATTENTION: "our attention in the text blocks",
}
#: Bound of :data:`TEXT_ATTENTION` by the dtype attention computes in: a few units in the last place of that dtype,
#: relative to the largest output (kernels that sum in another order differ by about one).
ATTENTION_BOUND = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
#: States of a path in a run's record.
PASSED, FELL_BACK, OFF, NOT_USED = "passed", "fell back", "off", "not used"


@dataclass(frozen=True)
class Verdict:
    """The outcome of a path's check in this process on one device.

    Attributes:
        path: One of :data:`PATHS`.
        device: The device, as ``str(torch.device)``.
        state: :data:`PASSED` or :data:`FELL_BACK`.
        difference: Largest difference found, relative (``None`` when nothing was compared: a failed capture).
        bound: The bound the path promises.
        switch: The setting that turns the path off.
        detail: What happened, in words.
    """

    path: str
    device: str
    state: str
    difference: Optional[float]
    bound: float
    switch: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.state == PASSED


_VERDICTS: dict[tuple[str, str], Verdict] = {}
_FORBIDDEN = [0]  # depth of forbid_host_sync


def _device(device: Union[torch.device, str]) -> str:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def verdict(path: str, device: Union[torch.device, str]) -> Optional[Verdict]:
    """The verdict of ``path`` on ``device`` in this process, ``None`` before its check."""
    return _VERDICTS.get((path, _device(device)))


def pending(path: str, device: Union[torch.device, str]) -> bool:
    """Whether ``path`` still has to check itself on ``device`` in this process."""
    return verdict(path, device) is None


def usable(path: str, device: Union[torch.device, str]) -> bool:
    """Whether ``path`` may run on ``device``: its check passed or is still to come."""
    found = verdict(path, device)
    return found is None or found.passed


def checks_allowed() -> bool:
    """Whether a check may read values on the host now (not inside a capture or :func:`forbid_host_sync`)."""
    return not _FORBIDDEN[0] and not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


@contextlib.contextmanager
def host_reads_forbidden() -> Iterator[None]:
    """Defer every check while the body runs (:func:`~lamm_plugin.cuda_graph.forbid_host_sync` enters it)."""
    _FORBIDDEN[0] += 1
    try:
        yield
    finally:
        _FORBIDDEN[0] -= 1


def relative_difference(got: Sequence[torch.Tensor], expected: Sequence[torch.Tensor]) -> float:
    """The largest ``max |got - expected| / max |expected|`` over pairs of tensors (0 for equal tensors, infinite
    where shapes or the positions of non-finite values differ; equal non-finite values count as equal)."""
    worst = 0.0
    for a, b in zip(got, expected, strict=True):
        if a.shape != b.shape:
            return math.inf
        a, b = a.detach().double(), b.detach().to(a.device).double()
        finite = a.isfinite() & b.isfinite()
        same = (a == b) | (a.isnan() & b.isnan())
        diff = (a - b).abs().where(finite, 0.0).amax() if a.numel() else a.new_zeros(())
        scale = b.abs().where(finite, 0.0).amax() if b.numel() else b.new_zeros(())
        mismatch, diff, scale = bool((~(finite | same)).any()), float(diff), float(scale)
        if mismatch:
            return math.inf
        worst = max(worst, diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf))
    return worst


def judge(
    path: str,
    device: Union[torch.device, str],
    got: Sequence[torch.Tensor],
    expected: Sequence[torch.Tensor],
    bound: float,
    switch: str,
) -> Verdict:
    """Compare a path's result with the eager one and record the verdict (one warning when it falls back).

    Args:
        path: One of :data:`PATHS`.
        device: Where the path ran.
        got: The path's tensors.
        expected: The eager computation's tensors, on the same inputs and parameters.
        bound: The path's promise: the largest relative difference allowed (0: bit for bit).
        switch: The setting that turns the path off (named in the warning).
    """
    difference = relative_difference(got, expected)
    passed = difference <= bound
    detail = f"difference {difference:.3g} (bound {bound:g})"
    return _record(Verdict(path, _device(device), PASSED if passed else FELL_BACK, difference, bound, switch, detail))


def fall_back(path: str, device: Union[torch.device, str], switch: str, detail: str, bound: float = 0.0) -> Verdict:
    """Record that ``path`` cannot run on ``device`` (e.g. its capture failed), with one warning."""
    return _record(Verdict(path, _device(device), FELL_BACK, None, bound, switch, detail))


def _record(found: Verdict) -> Verdict:
    _VERDICTS[(found.path, found.device)] = found
    if not found.passed:
        logger.warning(
            "Warning: %s on %s fell back to the eager computation: %s. The run goes on without it, correct and "
            "slower; %s turns it off.",
            DESCRIPTIONS[found.path], found.device, found.detail, found.switch,
        )  # fmt: skip
    return found


def record(device: Union[torch.device, str], switches: dict[str, tuple[str, bool]]) -> dict[str, dict]:
    """What ``results.json`` keeps about each path of a run on ``device``.

    Args:
        device: The run's device.
        switches: ``{path: (setting that turns it off, whether it is on)}``.

    Returns:
        ``{path: {"state", "device", "difference", "bound", "switch", "detail"}}``: :data:`PASSED` or
        :data:`FELL_BACK` after a check, :data:`OFF` when switched off, :data:`NOT_USED` when it never ran here
        (CUDA graphs off a GPU, an evaluation that never repeated a batch shape).
    """
    out = {}
    for path, (switch, on) in switches.items():
        found = verdict(path, device)
        if not on:
            entry = {"state": OFF, "detail": f"{switch} False"}
        elif found is None:
            entry = {"state": NOT_USED, "detail": f"not used on {_device(device)}"}
        else:
            entry = {k: v for k, v in asdict(found).items() if k not in ("path", "switch")}
        out[path] = {"switch": switch, **entry}
    return out


def reset() -> None:
    """Forget every verdict of this process (tests)."""
    _VERDICTS.clear()
