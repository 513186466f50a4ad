"""CLIP text and image encoders that accept prompt embeddings.

This is the only module that reads open_clip internals. Both encoders run their own loop over the
transformer blocks so that prompt tokens can be injected (CoOp's context vectors and LAMM's label embeddings
enter as token embeddings; MaPLe and deep VPT replace prompt tokens at the input of deeper layers). With no
prompts they compute exactly what ``CLIP.encode_text`` / ``CLIP.encode_image`` compute (tested).

EOT truncation: CLIP's text transformer is causal and its feature is read at the end-of-text token, so the
positions after the last EOT of a batch never influence any output. The text encoder therefore runs on
``max(eot) + 1`` positions instead of the full context (typically 10-20 instead of 77): same numbers, a
fraction of the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from open_clip.model import CLIP
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

from lamm_plugin import fast_paths


def _blocks_batch_first(transformer: nn.Module) -> bool:
    # open_clip >= 2.30 says so with an attribute (True for CLIP); older releases run blocks sequence-first.
    return getattr(transformer, "batch_first", False)


def _own_attention(block: nn.Module) -> bool:
    """Whether :func:`_text_block` may run ``block``: open_clip's plain residual block with packed q/k/v weights and
    no attention dropout in training, without hooks of its own (anything else runs the block's own ``forward``, so
    that hooks on a block see it run)."""
    attn = getattr(block, "attn", None)
    return (
        type(block) is ResidualAttentionBlock
        and not block._forward_hooks
        and not block._forward_pre_hooks
        and isinstance(attn, nn.MultiheadAttention)
        and attn.batch_first
        and attn._qkv_same_embed_dim
        and attn.in_proj_bias is not None
        and not attn.bias_k
        and not (attn.dropout > 0 and attn.training)
        and not hasattr(block, "ln_1_kv")
    )


def _attention(attn: nn.MultiheadAttention, y: torch.Tensor, mask: Optional[torch.Tensor], causal: bool):
    """Our attention on ``[N, L, width]``: one q/k/v projection viewed per head (no packed-projection split and
    copy) and, for a causal mask, SDPA's ``is_causal`` instead of a mask tensor; the output projected."""
    n, length, width = y.shape
    heads = attn.num_heads
    qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)  # [N, L, 3 * width]
    q, k, v = qkv.view(n, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)  # 3 x [N, heads, L, head]
    if causal:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask.to(y.dtype))
    return attn.out_proj(out.transpose(1, 2).reshape(n, length, width))


def _text_block(block: nn.Module, x: torch.Tensor, mask: Optional[torch.Tensor], causal: bool) -> torch.Tensor:
    """open_clip's ``ResidualAttentionBlock.forward`` on ``[N, L, width]`` with :func:`_attention`: the same
    operations as ``nn.MultiheadAttention``, though SDPA may pick another kernel for ``is_causal``, so
    :func:`_attention_checked` compares the two on first use."""
    x = x + block.ls_1(_attention(block.attn, block.ln_1(x), mask, causal))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _attention_checked(block: nn.Module, x: torch.Tensor, mask: Optional[torch.Tensor], causal: bool, switch: str):
    """The self-check of our attention on its first use in this process on ``x``'s device: our output against
    ``nn.MultiheadAttention``'s on this block's input, within :data:`~lamm_plugin.fast_paths.ATTENTION_BOUND` of
    the dtype it computes in. Returns whether our attention may run."""
    device = x.device
    with torch.no_grad():
        y = block.ln_1(x)
        ours = _attention(block.attn, y, mask, causal)
        theirs = block.attn(y, y, y, need_weights=False, attn_mask=None if mask is None else mask.to(y.dtype))[0]
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else ours.dtype
    bound = fast_paths.ATTENTION_BOUND.get(dtype, fast_paths.ATTENTION_BOUND[torch.bfloat16])
    return fast_paths.judge(fast_paths.TEXT_ATTENTION, device, [ours], [theirs], bound, switch).passed


def _pool(visual: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """The tower's pooling of ``[B, L, width]`` tokens, as its own ``forward`` does it."""
    if hasattr(visual, "_pool"):
        return visual._pool(x)[0]
    # open_clip < 2.30 inlines the pooling in forward().
    if getattr(visual, "attn_pool", None) is not None:
        raise NotImplementedError("Visual prompts with attention pooling need open_clip >= 2.30.")
    if getattr(visual, "final_ln_after_pool", False):
        return visual.ln_post(visual._global_pool(x)[0])
    return visual._global_pool(visual.ln_post(x))[0]


class TextEncoder(nn.Module):
    """Text tower of an open_clip CLIP, fed with token embeddings instead of token ids.

    Args:
        clip: The open_clip CLIP model (its text tower is shared, not copied).
        truncate: Run the transformer on ``max(eot) + 1`` positions only (exact; see module docstring).

    Attributes:
        own_attention: Run open_clip's plain text blocks with our own attention (:func:`_text_block`), checked
            against ``nn.MultiheadAttention`` on first use in a process on a device (:mod:`lamm_plugin.fast_paths`).
            Off by default (each block's own ``forward``): no measurement has shown it pays (docs/DESIGN.md).
        attention_switch: The setting that turns our attention off, named in the self-check's warning.
    """

    own_attention: bool = False
    attention_switch: str = "TextEncoder.own_attention = False"

    def __init__(self, clip: CLIP, truncate: bool = True) -> None:
        super().__init__()
        if not hasattr(clip, "token_embedding"):
            raise TypeError(
                f"{type(clip).__name__} has a custom text tower (e.g. Hugging Face); prompt learning needs the "
                "built-in CLIP text transformer."
            )
        pool_type = getattr(clip, "text_pool_type", "argmax")
        if pool_type not in ("argmax", "eos"):
            raise ValueError(f"Text pooling {pool_type!r} is not supported; expected 'argmax' or 'eos'.")
        self.transformer = clip.transformer
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        # Truncation is exact only under a causal mask.
        self.truncate = truncate and clip.attn_mask is not None
        self.pool_type = pool_type
        self.eos_id = getattr(clip, "text_eos_id", None)

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.get_cast_dtype()

    def eot_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """Position whose output is the text feature, as open_clip's ``text_global_pool`` picks it."""
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        return tokens.argmax(dim=-1)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[N, L, width]`` of token ids ``[N, L]``."""
        return self.token_embedding(tokens)

    def forward(
        self,
        prompts: torch.Tensor,
        eot: torch.Tensor,
        deep_prompts: Optional[Sequence[torch.Tensor]] = None,
        deep_start: int = 1,
        length: Optional[int] = None,
    ) -> torch.Tensor:
        """Text features of prompt embeddings.

        Args:
            prompts: ``[N, L, width]`` token embeddings (``L`` up to the context length; positions from
                ``max(eot) + 1`` on are ignored when truncating).
            eot: ``[N]`` position of the token whose output is the feature (see :meth:`eot_index`).
            deep_prompts: MaPLe-style deep prompts: ``deep_prompts[i]`` (``[n, width]`` or ``[N, n, width]``)
                replaces positions ``deep_start : deep_start + n`` at the input of block ``i + 1``.
            deep_start: First position the deep prompts replace.
            length: ``max(eot) + 1`` when the caller knows it (reading it from ``eot`` waits for the GPU, which a
                CUDA graph cannot do).

        Returns:
            ``[N, embed_dim]`` unnormalised text features.
        """
        length = self._length(prompts, eot, length)
        mask = self.attn_mask[:length, :length] if self.attn_mask is not None else None
        positions = torch.arange(length, device=prompts.device)
        x = self._run(prompts[:, :length], positions, mask, deep_prompts, deep_start, causal=mask is not None)
        return self._project(x[torch.arange(x.shape[0], device=x.device), eot])

    def forward_pair(
        self,
        prompts: torch.Tensor,
        reference: torch.Tensor,
        eot: torch.Tensor,
        shared: int,
        deep_prompts: Optional[Sequence[torch.Tensor]] = None,
        deep_start: int = 1,
        length: Optional[int] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of two prompt sets that agree on their first ``shared`` positions, in one pass.

        The text transformer is causal, so the hidden states of the common prefix are the same in both sets: they
        are computed once, and the differing tails of both sets attend to them. The sequence is
        ``[prefix, tail of prompts, tail of reference]`` with a mask that keeps the two tails apart and the
        positional embeddings of the tails' true positions: ``L + (L - shared)`` positions instead of ``2L``.

        Args:
            prompts: ``[N, L, width]`` first prompt set (LAMM: learned labels).
            reference: ``[N, L, width]`` second set (LAMM: original labels), equal to ``prompts`` on positions
                ``< shared``.
            eot: ``[N]`` feature positions (the same in both sets, all ``>= shared``).
            shared: Length of the common prefix; deep prompts must lie inside it.
            deep_prompts: As in :meth:`forward`.
            deep_start: As in :meth:`forward`.
            length: As in :meth:`forward`.

        Returns:
            ``(features of prompts, features of reference)``, each ``[N, embed_dim]``.
        """
        n_deep = deep_prompts[0].shape[-2] if deep_prompts else 0
        length = self._length(prompts, eot, length)
        if self.attn_mask is None or shared < 1 or deep_start + n_deep > shared:
            both = self(torch.cat([prompts, reference]), torch.cat([eot, eot]), deep_prompts, deep_start, length)
            return both.chunk(2)
        tail = length - shared
        device = prompts.device
        causal = self.attn_mask[:length, :length]
        mask = causal.new_full((length + tail, length + tail), float("-inf"))
        mask[:length, :length] = causal
        mask[length:, :shared] = 0  # the reference tail reads the shared prefix ...
        mask[length:, length:] = causal[:tail, :tail]  # ... and itself, causally; never the other tail
        x = torch.cat([prompts[:, :length], reference[:, shared:length]], dim=1)
        positions = torch.cat([torch.arange(length, device=device), torch.arange(shared, length, device=device)])
        x = self._run(x, positions, mask, deep_prompts, deep_start)
        rows = torch.arange(x.shape[0], device=device)
        return self._project(x[rows, eot]), self._project(x[rows, eot + tail])

    def _length(self, prompts: torch.Tensor, eot: torch.Tensor, length: Optional[int]) -> int:
        """Positions the transformer runs on."""
        if not self.truncate:
            return prompts.shape[1]
        return length if length is not None else int(eot.max()) + 1

    def _run(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        mask: Optional[torch.Tensor],
        deep_prompts: Optional[Sequence[torch.Tensor]],
        deep_start: int,
        causal: bool = False,
    ) -> torch.Tensor:
        """Embeddings ``[N, L, width]`` -> final-LayerNorm outputs, with deep prompts replacing their slots.

        ``causal``: ``mask`` is CLIP's causal mask (attention then runs without a mask tensor).
        """
        dtype = self.dtype
        x = x.to(dtype) + self.positional_embedding[positions].to(dtype)
        deep_prompts = list(deep_prompts or [])
        if len(deep_prompts) >= len(self.transformer.resblocks):
            raise ValueError(f"{len(deep_prompts)} deep prompts for {len(self.transformer.resblocks)} blocks.")
        batch_first = _blocks_batch_first(self.transformer)
        own = batch_first and self.own_attention and fast_paths.usable(fast_paths.TEXT_ATTENTION, x.device)
        for i, block in enumerate(self.transformer.resblocks):
            if 0 < i <= len(deep_prompts):
                ctx = deep_prompts[i - 1].to(dtype)
                ctx = ctx.expand(x.shape[0], -1, -1) if ctx.dim() == 2 else ctx
                x = torch.cat([x[:, :deep_start], ctx, x[:, deep_start + ctx.shape[1] :]], dim=1)
            mine = own and _own_attention(block)
            if mine and fast_paths.pending(fast_paths.TEXT_ATTENTION, x.device) and fast_paths.checks_allowed():
                own = mine = _attention_checked(block, x, mask, causal, self.attention_switch)
            if mine:
                x = _text_block(block, x, mask, causal)
            elif batch_first:
                x = block(x, attn_mask=mask)
            else:
                x = block(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)
        return self.ln_final(x)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection


def _has_random_ops(module: nn.Module) -> bool:
    """Whether ``module`` draws random numbers in training mode (dropout with ``p > 0``, attention dropout)."""
    for m in module.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return True
        if isinstance(m, nn.MultiheadAttention) and m.dropout > 0:
            return True
        if type(m).__name__ in ("DropPath", "PatchDropout") and getattr(m, "prob", getattr(m, "drop_prob", 0)) > 0:
            return True
    return False


def _run_block(block: nn.Module, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """One residual block on batch-first tokens ``[B, L, width]``."""
    return block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)


class ImageEncoder(nn.Module):
    """Image tower of an open_clip CLIP with optional shallow and deep visual prompt tokens.

    Visual prompts are appended after the class and patch tokens, after the positional embedding and patch
    dropout and before ``ln_pre`` (where VPT and MaPLe put them); deep prompts replace those tokens at the
    input of deeper blocks. Prompt outputs are dropped before pooling.

    Activation checkpointing (``checkpoint=True``): when gradients flow through the blocks (trainable visual
    prompts), each block keeps only its input for the backward pass and recomputes its activations there
    (``torch.utils.checkpoint``, non-reentrant). The recomputation runs the same operations on the same inputs,
    so the gradients are those of the plain pass (tested bit for bit); it trades about one more forward pass
    of the image tower for its activations (ViT-B/16, batch 32: most of a MaPLe step's memory). CLIP's blocks
    draw no random numbers, so no RNG state is saved (reading it would not be allowed inside a CUDA graph
    capture); a tower with dropout saves and restores it.

    Args:
        clip: The open_clip CLIP model (its image tower is shared, not copied).
        checkpoint: Recompute the blocks' activations in the backward pass instead of keeping them.
    """

    def __init__(self, clip: CLIP, checkpoint: bool = False) -> None:
        super().__init__()
        self.visual = clip.visual
        self.supports_prompts = isinstance(clip.visual, VisionTransformer)
        self.checkpoint = checkpoint

    @property
    def width(self) -> int:
        """Token width of the vision transformer (visual prompt dimension)."""
        if not self.supports_prompts:
            raise ValueError(
                f"Visual prompts need a ViT image tower; this backbone has {type(self.visual).__name__}. "
                "Use a ViT backbone (e.g. ViT-B/16) or a text-only method (CoOp, LAMM alone)."
            )
        return self.visual.conv1.out_channels

    @property
    def num_blocks(self) -> int:
        return len(self.visual.transformer.resblocks) if self.supports_prompts else 0

    def forward(
        self,
        images: torch.Tensor,
        shallow_prompts: Optional[torch.Tensor] = None,
        deep_prompts: Optional[Sequence[torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Image features.

        Args:
            images: ``[B, 3, H, W]`` normalised images.
            shallow_prompts: ``[n, width]`` or ``[B, n, width]`` prompt tokens appended before the first block.
            deep_prompts: ``deep_prompts[i]`` (``[n, width]``) replaces the prompt tokens at the input of block
                ``i + 1``. Needs ``shallow_prompts``.

        Returns:
            ``[B, embed_dim]`` unnormalised image features.
        """
        deep_prompts = list(deep_prompts or [])
        if shallow_prompts is None:
            if deep_prompts:
                raise ValueError("Deep visual prompts need shallow prompts (the tokens they replace).")
            return self.visual(images)
        _ = self.width  # raises a clear error for ResNet towers
        visual = self.visual
        if len(deep_prompts) >= len(visual.transformer.resblocks):
            raise ValueError(f"{len(deep_prompts)} deep prompts for {len(visual.transformer.resblocks)} blocks.")

        x = visual.conv1(images)  # [B, width, grid, grid]
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, grid**2, width]
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.patch_dropout(x)
        n = shallow_prompts.shape[-2]
        prompts = shallow_prompts.to(x.dtype)
        x = torch.cat([x, prompts.expand(x.shape[0], -1, -1) if prompts.dim() == 2 else prompts], dim=1)
        x = visual.ln_pre(x)

        batch_first = _blocks_batch_first(visual.transformer)
        checkpoint = self.checkpoint and torch.is_grad_enabled()
        random_ops = checkpoint and visual.training and _has_random_ops(visual.transformer)
        for i, block in enumerate(visual.transformer.resblocks):
            if 0 < i <= len(deep_prompts):
                ctx = deep_prompts[i - 1].to(x.dtype).expand(x.shape[0], -1, -1)
                x = torch.cat([x[:, :-n], ctx], dim=1)
            if checkpoint and x.requires_grad:
                x = torch.utils.checkpoint.checkpoint(
                    _run_block, block, x, batch_first, use_reentrant=False, preserve_rng_state=random_ops
                )
            else:
                x = _run_block(block, x, batch_first)

        pooled = _pool(visual, x[:, :-n])
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return pooled


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise features along the last dimension."""
    return F.normalize(x, dim=-1)
