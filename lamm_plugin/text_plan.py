"""How the class prompts of :class:`~lamm_plugin.lamm.LAMM` go through the text encoder: fast, and exact.

:mod:`lamm_plugin.lamm` says what is computed (the text features of the prompts with learned labels and with
CLIP's original labels); :class:`TextPlan` decides how, with four devices that change no number (DESIGN.md
section 3):

1. EOT truncation: CLIP's text transformer is causal and reads its feature at the end-of-text token, so the
   prompts are kept and encoded up to the last end-of-text token of the class set only;
2. length groups: prompts of very different lengths run in separate passes, each on its own longest prompt
   (:func:`length_groups`);
3. shared prefix: the prompts with learned labels and with the original labels are identical before the class
   name, so both go through the encoder in one pass that computes those positions once
   (:meth:`~lamm_plugin.encoders.TextEncoder.forward_pair`);
4. caches: features that depend on nothing trainable (the reference branch with the context frozen: LAMM alone,
   VPT; every text feature in evaluation) are computed once and reused until a tensor they are computed from
   changes in place or is replaced.

Every size a pass needs is fixed as Python ints and index buffers when the class set is set, so that a training
step never reads a size from the GPU (which would stop a CUDA graph).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch
from torch import nn

if TYPE_CHECKING:
    from lamm_plugin.encoders import TextEncoder
    from lamm_plugin.methods.base import TextPrompt
    from lamm_plugin.tokens import PromptLayout


def length_groups(lengths: Sequence[int], max_groups: int = 4, min_saving: float = 0.2) -> list[list[int]]:
    """Prompts grouped by the number of positions they need, each group to run on its own longest prompt.

    A causal text transformer gives a prompt the same feature whatever it runs on beyond its end-of-text token,
    so prompts of different lengths can run in separate groups, each truncated to its own longest prompt. The
    split minimises the positions computed (dynamic programming over the distinct lengths); a split is kept only
    if it saves at least ``min_saving`` of the positions of one group, since each group costs a pass of kernel
    launches.

    Args:
        lengths: Positions each prompt needs (``eot + 1``).
        max_groups: Most groups.
        min_saving: Least fraction of positions a split must save.

    Returns:
        Prompt indices per group, shortest group first, each in ascending order.
    """
    if not lengths:
        return [[]]
    distinct = sorted(set(lengths))
    counts = Counter(lengths)
    cumulative = [0]
    for d in distinct:
        cumulative.append(cumulative[-1] + counts[d])
    n = len(distinct)
    inf = float("inf")
    # best[k][j]: least positions for lengths distinct[:j+1] in k+1 groups; cut[k][j]: start of the last group.
    best = [[inf] * n for _ in range(max_groups)]
    cut = [[0] * n for _ in range(max_groups)]
    for j in range(n):
        best[0][j] = distinct[j] * cumulative[j + 1]
    for k in range(1, max_groups):
        for j in range(n):
            for i in range(1, j + 1):  # the last group holds distinct[i..j]
                cost = best[k - 1][i - 1] + distinct[j] * (cumulative[j + 1] - cumulative[i])
                if cost < best[k][j]:
                    best[k][j], cut[k][j] = cost, i
    k = 0
    for candidate in range(1, max_groups):
        if best[k][n - 1] - best[candidate][n - 1] >= min_saving * best[0][n - 1]:
            k = candidate
    bounds, j = [], n - 1
    while k > 0:
        i = cut[k][j]
        bounds.append((distinct[i], distinct[j]))
        j, k = i - 1, k - 1
    bounds.append((distinct[0], distinct[j]))
    return [[c for c, length in enumerate(lengths) if lo <= length <= hi] for lo, hi in reversed(bounds)]


class TextPlan(nn.Module):
    """The passes that encode a class set's prompts, and the caches of text features that need no pass.

    The text encoder is shared with the model that owns the plan, not registered here (the frozen CLIP is never a
    submodule); the plan's own index buffers move with the owner's ``.to()``, and every move clears the caches.

    Args:
        text: The text encoder.
        max_groups: Most length groups (``LAMMConfig.text_groups``).
    """

    def __init__(self, text: TextEncoder, max_groups: int) -> None:
        super().__init__()
        object.__setattr__(self, "text", text)
        self.max_groups = max_groups
        #: ``(size, positions, shared prefix)`` per length group; the shared prefix lies before every label row.
        self.groups: list[tuple[int, int, int]] = []
        #: Cached features by name: ``(versions of the tensors they were computed from, features)``.
        self.cache: dict[str, tuple[Any, torch.Tensor]] = {}
        self.register_buffer("group_order", torch.empty(0, dtype=torch.long), persistent=False)
        self.register_buffer("group_inverse", torch.empty(0, dtype=torch.long), persistent=False)

    def _apply(self, fn, recurse=True):
        self.cache.clear()
        return super()._apply(fn, recurse)

    # ---- the plan ------------------------------------------------------------------------------------------------
    def prompt_length(self, layout: PromptLayout) -> int:
        """Positions of the prompts worth keeping: up to the last end-of-text token when truncating."""
        return layout.max_length if self.text.truncate else layout.tokens.shape[1]

    def set_layout(
        self, layout: PromptLayout, length: int, device: torch.device, label_start: Optional[torch.Tensor] = None
    ) -> None:
        """Split the class prompts into length groups (:func:`length_groups`).

        Args:
            layout: The class set's token layout.
            length: Positions of the prompt tensors the passes receive (:meth:`prompt_length`).
            device: Where the index buffers go.
            label_start: ``[C]`` first position of each class's label rows (the class name's by default): the
                prompts with learned and with original labels are equal before it.
        """
        lengths = (layout.eot + 1).tolist() if self.text.truncate else [length] * len(layout.eot)
        groups = length_groups(lengths, self.max_groups)
        starts = (layout.name_start if label_start is None else label_start).tolist()
        self.groups = [
            (len(g), max((lengths[c] for c in g), default=1), min((starts[c] for c in g), default=0)) for g in groups
        ]
        order = torch.tensor([c for g in groups for c in g], dtype=torch.long)
        self.register_buffer("group_order", order.to(device), persistent=False)
        self.register_buffer("group_inverse", torch.argsort(order).to(device), persistent=False)

    # ---- caches --------------------------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget every cached feature (the class set, the label rows or the loaded state changed)."""
        self.cache.clear()

    @staticmethod
    def _versions(tensors) -> tuple:
        """Changes whenever one of ``tensors`` is modified in place (optimiser step, load) or replaced."""
        return tuple((id(t), t._version) for t in tensors)

    def cached(self, key: str, compute: Callable[[], torch.Tensor], depends_on) -> torch.Tensor:
        """``compute()`` (without gradients), recomputed only when a tensor in ``depends_on`` has changed."""
        version = self._versions(depends_on)
        hit = self.cache.get(key)
        if hit is None or hit[0] != version:
            with torch.no_grad():
                hit = (version, compute())
            self.cache[key] = hit
        return hit[1]

    # ---- passes --------------------------------------------------------------------------------------------------
    def class_features(
        self,
        original: torch.Tensor,
        learned: Optional[torch.Tensor],
        eot: torch.Tensor,
        prompt: TextPrompt,
        reference: bool,
        constant: Optional[Sequence[torch.Tensor]],
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Class text features with learned labels, and (if asked) with the original labels.

        Args:
            original: ``[C, L, width]`` prompts with CLIP's class-name embeddings.
            learned: The same prompts with the label rows spliced in; ``None`` without label embeddings (the
                features are then those of ``original``).
            eot: ``[C]`` feature positions.
            prompt: The method's text prompt (deep prompts).
            reference: Also return the features of ``original``.
            constant: When the features of ``original`` depend on nothing trainable, the tensors they are
                computed from: they are then computed once and reused until one of these changes. ``None``
                computes them in every call.

        Returns:
            ``(text, reference_text)``, each ``[C, E]`` and unnormalised; ``reference_text`` is ``None`` unless
            ``reference`` is true.
        """

        def run(x: torch.Tensor) -> torch.Tensor:
            return self.encode(x, eot, prompt)[0]

        prompts = original if learned is None else learned
        if not reference:
            if constant is not None and learned is None:
                return self.cached("reference", lambda: run(original), constant), None
            return run(prompts), None
        if constant is not None:
            return run(prompts), self.cached("reference", lambda: run(original), constant)
        # One pass for both; the positions before the first class name are the same in both and computed once.
        return self.encode(prompts, eot, prompt, original)

    def encode(
        self, prompts: torch.Tensor, eot: torch.Tensor, prompt: TextPrompt, reference: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Text features of ``prompts`` (and of ``reference``, equal to them before the class names), one pass
        per length group."""
        deep, start = prompt.deep, prompt.deep_start
        groups = self.groups
        if len(groups) > 1 and any(d.dim() > 2 for d in deep):  # per-class deep prompts: one group
            groups = [(len(eot), max(g[1] for g in groups), min(g[2] for g in groups))]
        if len(groups) == 1:
            _, length, shared = groups[0]
            if reference is None:
                return self.text(prompts, eot, deep, start, length), None
            return self.text.forward_pair(prompts, reference, eot, shared, deep, start, length)
        sizes = [g[0] for g in groups]
        order = self.group_order
        parts = zip(groups, prompts[order].split(sizes), eot[order].split(sizes))
        if reference is None:
            text = [self.text(x[:, :length], e, deep, start, length) for (_, length, _), x, e in parts]
            return torch.cat(text)[self.group_inverse], None
        refs = reference[order].split(sizes)
        pairs = [
            self.text.forward_pair(x[:, :length], ref[:, :length], e, shared, deep, start, length)
            for ((_, length, shared), x, e), ref in zip(parts, refs)
        ]
        text = torch.cat([p[0] for p in pairs])[self.group_inverse]
        return text, torch.cat([p[1] for p in pairs])[self.group_inverse]

    def encode_per_image(
        self, prompts: torch.Tensor, eot: torch.Tensor, reference: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """:meth:`encode` for per-image prompts ``[B, C, L, width]`` (CoCoOp): every image's ``C`` prompts go
        through the length groups together, one batched pass per group; returns ``[B, C, E]`` features."""
        b = prompts.shape[0]
        groups, order = self.groups, self.group_order
        if len(groups) == 1:
            parts = [(groups[0], prompts, reference, eot)]
        else:
            sizes = [g[0] for g in groups]
            refs = reference[:, order].split(sizes, dim=1) if reference is not None else [None] * len(groups)
            parts = zip(groups, prompts[:, order].split(sizes, dim=1), refs, eot[order].split(sizes))
        texts, references = [], []
        for (n, length, shared), x, ref, e in parts:
            x, e = x[:, :, :length].flatten(0, 1), e.repeat(b)  # image-major: [B * n, length, width]
            if ref is None:
                texts.append(self.text(x, e, None, 1, length).unflatten(0, (b, n)))
                continue
            pair = self.text.forward_pair(x, ref[:, :, :length].flatten(0, 1), e, shared, None, 1, length)
            texts.append(pair[0].unflatten(0, (b, n)))
            references.append(pair[1].unflatten(0, (b, n)))
        text = torch.cat(texts, dim=1)
        ref_text = torch.cat(references, dim=1) if references else None
        if len(groups) > 1:
            text = text[:, self.group_inverse]
            ref_text = ref_text[:, self.group_inverse] if ref_text is not None else None
        return text, ref_text
