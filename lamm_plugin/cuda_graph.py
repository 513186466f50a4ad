"""Training steps replayed from a CUDA graph.

At the class counts of most benchmarks a training step launches about a thousand small kernels (the text tower's
12 blocks forward and backward, the image tower's forward) and the GPU finishes them faster than Python can
launch them: the step is bound by the CPU. :class:`GraphedStep` captures the forward pass, the loss and the
backward pass once and replays them for every batch; the optimiser step (a few small tensors) stays eager, so
learning-rate schedules, gradient scaling and clipping work as before.

What the captured region must obey, and how this module keeps it so:

- no host synchronisation (``.item()``, ``int(tensor)``, a size read from the GPU): the model precomputes every
  size when its class set is set; :func:`forbid_host_sync` makes any such read raise, which the tests use on CPU
  to hold the eager step to the same rule as the GPU;
- fixed shapes and fixed memory: a batch of another shape, another class set, parameters or buffers replaced
  (not updated in place), or a recomputed cached reference give a new capture (:meth:`GraphedStep._key`);
- autocast without its weight cache (the cache would live outside the graph);
- gradients written, not accumulated: they are ``None`` at capture, so the backward pass writes them into the
  graph's memory; after each replay ``param.grad`` points there again, whatever the eager code did in between.

Each path checks itself (:mod:`lamm_plugin.fast_paths`): the first replay in a process on a device is compared with
the eager pass on the same inputs and parameters (the last warm-up iteration before the capture; for a batch whose
scaled gradients overflowed, the redone batch with one eager pass more), before the optimiser uses it; a difference
(the promise is bit for bit), or a capture that fails, switches the path off for the rest of the process, with one
warning. The device calls go through :data:`BACKEND`, which tests replace with a CPU stand-in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Callable, Optional, TypeVar

import torch
from torch import nn

from lamm_plugin import fast_paths

T = TypeVar("T")

_SYNC_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero")


@contextlib.contextmanager
def forbid_host_sync() -> Iterator[None]:
    """Make every read of a tensor's value by the host raise ``RuntimeError`` (CUDA graphs forbid them).

    Covers ``.item()``, ``.tolist()``, ``bool()``, ``int()``, ``float()``, use as an index, and ``nonzero`` (a
    data-dependent shape). Works on any device, so a CPU test can hold code to the GPU's rule.
    """
    saved = {name: getattr(torch.Tensor, name) for name in _SYNC_METHODS}

    def refuse(name: str) -> Callable[..., Any]:
        def method(self, *args, **kwargs):
            raise RuntimeError(f"Tensor.{name} reads a value on the host inside a captured region")

        return method

    for name in _SYNC_METHODS:
        setattr(torch.Tensor, name, refuse(name))
    try:
        with fast_paths.host_reads_forbidden():
            yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


_SIDE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    """One warm-up stream per device for every capture (cuBLAS keeps a workspace per stream for good)."""
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = torch.cuda.Stream(device)
    return _SIDE_STREAMS[device]


class CudaGraphs:
    """The device calls of a capture: where captures run, the warm-up stream, recording a region and replaying it."""

    def supports(self, device: torch.device) -> bool:
        return device.type == "cuda"

    @contextlib.contextmanager
    def warmup_stream(self, device: torch.device) -> Iterator[None]:
        """Run the body on the side stream of ``device``, ordered after and before the current stream's work."""
        side = _side_stream(device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream().wait_stream(side)

    def record(self, region: Callable[[], T]) -> tuple[Callable[[], None], T]:
        """Capture ``region()``; returns the replay and the region's outputs (the graph's memory)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = region()
        return graph.replay, outputs


#: The device calls every capture makes (a test puts a stand-in here that replays by running the region eagerly).
BACKEND = CudaGraphs()


def _eager_result(out, params: list[nn.Parameter]) -> list[torch.Tensor]:
    """Copies of what a step's self-check compares: logits, loss terms and gradients."""
    return [t.detach().clone() for t in (out.logits, *out.losses.values(), *(p.grad for p in params))]


class GraphedStep:
    """Forward, loss and backward of a :class:`~lamm_plugin.lamm.LAMM` model, captured once and replayed.

    Args:
        model: The model (training mode).
        autocast_dtype: ``torch.float16`` / ``torch.bfloat16`` to run under autocast (``amp``), ``None`` for none.
        scaler: A GradScaler whose ``scale`` multiplies the loss before the backward pass (its scale tensor is
            updated in place by ``update``, so the graph reads the current one).
        warmup: Eager iterations on a side stream before capture (they fill lazy state: cuDNN plans, cached
            reference features, the scaler's scale tensor); the last one is the self-check's eager result.
        switch: The setting that turns the graph off, named in the self-check's warning.
    """

    def __init__(
        self,
        model: nn.Module,
        autocast_dtype: Optional[torch.dtype] = None,
        scaler: Optional[torch.amp.GradScaler] = None,
        warmup: int = 3,
        switch: str = "not wrapping the step in GraphedStep",
    ) -> None:
        if warmup < 1:
            raise ValueError(f"GraphedStep needs at least one warm-up iteration, got warmup={warmup}.")
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.scaler = scaler
        self.warmup = warmup
        self.switch = switch
        self.disabled = False
        self.captures = 0
        self._key_value: Optional[tuple] = None
        self._replay: Optional[Callable[[], None]] = None
        self._reference: Optional[list[torch.Tensor]] = None  # the eager result the next replay is checked against
        self._deferred = False  # the check waits for a batch whose scaled gradients are finite (one try)

    # ---- the captured function -----------------------------------------------------------------------------------
    def forward_backward(self, images: torch.Tensor, labels: torch.Tensor):
        """The region a capture records: the model's forward, loss and (scaled) backward
        (:meth:`~lamm_plugin.lamm.LAMM.forward_backward`). Returns the model output."""
        return self.model.forward_backward(images, labels, self.scaler, self.autocast_dtype, autocast_cache=False)

    # ---- replay ----------------------------------------------------------------------------------------------------
    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        """Run one step's forward and backward; ``param.grad`` then holds this batch's gradients.

        Returns:
            The model output (logits and loss terms), valid until the next call, or ``None`` when the step cannot
            be graphed (CPU, a failed capture or self-check): the caller then runs its eager step.
        """
        device = images.device
        if self.disabled or not BACKEND.supports(device) or not self.model.training:
            return None
        if not fast_paths.usable(fast_paths.GRAPH_STEP, device):  # an earlier check in this process failed
            self.disabled = True
            return None
        key = self._key(images, labels)
        if key != self._key_value:
            try:
                self._capture(images, labels)
            except Exception as error:  # noqa: BLE001 - any capture failure falls back to the eager step
                self._release()
                self.disabled = True
                detail = f"the capture failed ({type(error).__name__}: {error})"
                fast_paths.fall_back(fast_paths.GRAPH_STEP, device, self.switch, detail)
                return None
            self._key_value = self._key(images, labels)
        self._images.copy_(images)
        self._labels.copy_(labels)
        checking = fast_paths.pending(fast_paths.GRAPH_STEP, device) and fast_paths.checks_allowed()
        if checking and self._reference is None:  # a check deferred from an overflowing batch: one eager pass more
            for param in self._params:
                param.grad = None
            self._reference = _eager_result(self.forward_backward(self._images, self._labels), self._params)
        self._replay()
        for param, grad in zip(self._params, self._grads):
            param.grad = grad
        if checking and not self._check():
            return None
        return self._out

    def _check(self) -> bool:
        """Compare this replay with the eager result of the same batch; ``False``: the path is off from now on."""
        expected, self._reference = self._reference, None
        if not self._deferred and not all(bool(t.isfinite().all()) for t in expected):
            self._deferred = True  # scaled gradients overflowed (fp16): check the batch redone at a lower scale
            return True
        got = [self._out.logits, *self._out.losses.values(), *self._grads]
        verdict = fast_paths.judge(fast_paths.GRAPH_STEP, self._images.device, got, expected, 0.0, self.switch)
        if not verdict.passed:
            self._release()
            self.disabled = True
        return verdict.passed

    def _key(self, images: torch.Tensor, labels: torch.Tensor) -> tuple:
        """What a capture is valid for: shapes, dtypes and the memory of every tensor the graph reads."""
        model = self.model
        tensors = [*model.parameters(), *model.buffers()]
        plan = getattr(model, "text_plan", None)
        cached = plan.cache if plan is not None else {}
        return (
            tuple(images.shape), images.dtype, tuple(labels.shape), images.device,
            tuple((t.data_ptr(), t.requires_grad) for t in tensors),
            tuple((k, v[1].data_ptr()) for k, v in cached.items() if k != "eval_text"),
            self.scaler is not None and self.scaler.is_enabled(),
        )  # fmt: skip

    def _capture(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self._release()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self._images, self._labels = images.clone(), labels.clone()
        with BACKEND.warmup_stream(images.device):
            for _ in range(self.warmup):
                for param in params:
                    param.grad = None
                out = self.forward_backward(self._images, self._labels)
            if fast_paths.pending(fast_paths.GRAPH_STEP, images.device):
                self._reference = _eager_result(out, params)

        def region():
            for param in params:  # gradients written into the graph's memory, not accumulated
                param.grad = None
            out = self.forward_backward(self._images, self._labels)
            return out.logits, out.losses, [p.grad for p in params]

        self._replay, (logits, losses, self._grads) = BACKEND.record(region)
        # Detached views of the graph's outputs: nothing keeps the captured autograd graph alive.
        self._out = type(out)(logits.detach(), {name: value.detach() for name, value in losses.items()})
        self._params = params
        self.captures += 1

    def _release(self) -> None:
        self._replay = None
        self._key_value = None
        self._out = None


class GraphedForward:
    """The evaluation forward of a :class:`~lamm_plugin.lamm.LAMM` model (image tower and logits of a batch),
    captured per batch shape and replayed.

    The class text features do not depend on the batch: they are taken eagerly from the model's cache
    (:meth:`~lamm_plugin.lamm.LAMM.eval_text`, recomputed only after the learned tensors changed) and copied into
    the graph's input buffer before each replay, so a graph stays valid across evaluations between epochs. The
    captured region, :meth:`~lamm_plugin.lamm.LAMM.logits_with_text`, is the model's own evaluation code, and
    reads no value on the host (tested on CPU under :func:`forbid_host_sync`).

    A batch shape is captured the second time it is seen (the first batch runs eagerly and fills lazy state;
    the last, smaller batch of an evaluation then runs eagerly too); at most ``max_graphs`` shapes are kept.
    Image-conditioned methods (CoCoOp: text features per image) and models in training mode run eagerly (the
    call returns ``None``).

    Args:
        model: The model.
        autocast_dtype: ``torch.float16`` / ``torch.bfloat16`` to run under autocast (``amp``), ``None`` for none.
        max_graphs: Most batch shapes kept captured at once.
        switch: The setting that turns the graph off, named in the self-check's warning.
    """

    def __init__(
        self,
        model: nn.Module,
        autocast_dtype: Optional[torch.dtype] = None,
        max_graphs: int = 2,
        switch: str = "not using GraphedForward",
    ) -> None:
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.max_graphs = max_graphs
        self.switch = switch
        self.disabled = False
        self.captures = 0
        self._seen: set[tuple] = set()
        self._graphs: dict[tuple, tuple[Callable[[], None], torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def region(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """What a capture records: the logits of ``images`` against ``text`` (under autocast for ``amp``)."""
        autocast = contextlib.nullcontext()
        if self.autocast_dtype is not None:
            autocast = torch.autocast(images.device.type, dtype=self.autocast_dtype, cache_enabled=False)
        with autocast:
            return self.model.logits_with_text(images, text)

    def __call__(self, images: torch.Tensor) -> Optional[torch.Tensor]:
        """``[B, C]`` logits of ``images`` (valid until the next call with this shape), or ``None``: run eagerly."""
        model, device = self.model, images.device
        if self.disabled or not BACKEND.supports(device) or model.training or model.method.image_conditioned:
            return None
        if not fast_paths.usable(fast_paths.GRAPH_EVAL, device):  # an earlier check in this process failed
            self.disabled = True
            return None
        with torch.no_grad():
            text = model.eval_text()
            key = self._key(images, text)
            expected = None
            if key not in self._graphs:
                if key not in self._seen:
                    self._seen.add(key)
                    return None
                try:
                    expected = self._capture(key, images, text)
                except Exception as error:  # noqa: BLE001 - any capture failure falls back to eager evaluation
                    self._graphs.clear()
                    self.disabled = True
                    detail = f"the capture failed ({type(error).__name__}: {error})"
                    fast_paths.fall_back(fast_paths.GRAPH_EVAL, device, self.switch, detail)
                    return None
            replay, static_images, static_text, logits = self._graphs[key]
            static_images.copy_(images)
            static_text.copy_(text)
            replay()
            if expected is not None and fast_paths.pending(fast_paths.GRAPH_EVAL, device):
                verdict = fast_paths.judge(fast_paths.GRAPH_EVAL, device, [logits], [expected], 0.0, self.switch)
                if not verdict.passed:
                    self._graphs.clear()
                    self.disabled = True
                    return None
            return logits

    def _key(self, images: torch.Tensor, text: torch.Tensor) -> tuple:
        """What a capture is valid for: shapes, dtypes and the memory of every tensor the graph reads."""
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return (
            tuple(images.shape), images.dtype, images.device, tuple(text.shape), text.dtype,
            tuple(t.data_ptr() for t in tensors),
        )  # fmt: skip

    def _capture(self, key: tuple, images: torch.Tensor, text: torch.Tensor) -> Optional[torch.Tensor]:
        """Capture the region for ``key``; returns the warm-up's eager logits while the self-check is pending."""
        while len(self._graphs) >= self.max_graphs:
            self._graphs.pop(next(iter(self._graphs)))
        static_images, static_text = images.clone(), text.clone()
        with BACKEND.warmup_stream(images.device):  # warm-up off the capture stream (cuDNN/cuBLAS plans)
            expected = self.region(static_images, static_text)
            checking = fast_paths.pending(fast_paths.GRAPH_EVAL, images.device) and fast_paths.checks_allowed()
            expected = expected.clone() if checking else None
        replay, logits = BACKEND.record(lambda: self.region(static_images, static_text))
        self._graphs[key] = (replay, static_images, static_text, logits)
        self.captures += 1
        return expected
