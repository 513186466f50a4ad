"""Tokenised prompt templates: where each class name and each context slot sits in the token sequence.

A template is a string with one ``{}`` for the class name, e.g. ``"a photo of a {}."``, ``"{} X X X X."`` or
``"X X {} X X."``. CoOp-family methods replace some template tokens by learnable context vectors (the
"context slots") and LAMM replaces the class-name tokens by learnable label embeddings. Both need the
token positions, per class, which this module computes once with open_clip's tokenizer (the BPE vocabulary
ships inside open_clip, so this works offline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import torch

SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"


def clean_classname(name: str) -> str:
    """CoOp's convention: underscores in folder-style class names are spaces."""
    return name.replace("_", " ").strip()


@dataclass
class PromptLayout:
    """Token layout of one template filled with every class name.

    Attributes:
        template: The template, with ``{}`` for the class name.
        classnames: Cleaned class names, in label order.
        tokens: ``[C, context_length]`` token ids of the filled templates.
        eot: ``[C]`` position of the end-of-text token of each prompt.
        name_start: ``[C]`` position of each class name's first token.
        name_len: ``[C]`` number of tokens of each class name.
        ctx_pos: ``[C, n_ctx]`` positions of the context slots of each prompt (empty when ``n_ctx`` is 0).
    """

    template: str
    classnames: list[str]
    tokens: torch.Tensor
    eot: torch.Tensor
    name_start: torch.Tensor
    name_len: torch.Tensor
    ctx_pos: torch.Tensor

    @property
    def max_length(self) -> int:
        """Number of positions that influence any prompt's feature (causal text transformer): ``max(eot) + 1``."""
        return int(self.eot.max()) + 1


def _encode(tokenizer, text: str) -> list[int]:
    """BPE ids of ``text`` without start/end tokens."""
    return tokenizer.encode(text) if text.strip() else []


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _name_span(whole: list[int], pre_ids: list[int], post_ids: list[int]) -> tuple[int, int]:
    """``(start, end)`` of the class name in the tokenised prompt ``whole`` (no start/end tokens).

    The name runs from the end of the template's prefix to the start of the longest template suffix that the
    prompt still ends with: a token in which the name merged with neighbouring template text (``")."`` in
    ``"kite (bird of prey)."``) belongs to the name.
    """
    start = _common_prefix(whole, pre_ids)
    suffix = 0
    for k in range(min(len(post_ids), len(whole) - start - 1), 0, -1):
        if whole[len(whole) - k :] == post_ids[len(post_ids) - k :]:
            suffix = k
            break
    return start, len(whole) - suffix


def build_layout(
    tokenizer: Callable,
    template: str,
    classnames: Sequence[str],
    ctx_slots: Sequence[int] | str = (),
) -> PromptLayout:
    """Tokenise ``template`` for every class and locate class-name tokens, context slots and EOT.

    Each prompt is tokenised whole, as CLIP and CoOp feed it to the text tower. BPE may merge the end of a class
    name with the template text after it (``")."`` in ``"a photo of a kite (bird of prey)."``); such a token is
    part of the class name's span. A merge that would swallow a context slot is refused.

    Args:
        tokenizer: An open_clip ``SimpleTokenizer`` (anything with ``encode``, ``__call__`` and
            ``context_length``).
        template: Prompt text with exactly one ``{}`` where the class name goes.
        classnames: Class names in label order (underscores are read as spaces).
        ctx_slots: Which template tokens are context slots. Either token indices counted over the template's
            own tokens with the class name removed (``range(4)`` = the first four template tokens), or a
            placeholder word: every template token that encodes that word is a slot (``"X"``).

    Returns:
        The :class:`PromptLayout`.

    Raises:
        ValueError: The template has no/several ``{}``, a class name is empty, a prompt does not fit the
            tokenizer's context length, or a class name merges with a context slot (the message names the class).
    """
    if template.count("{}") != 1:
        raise ValueError(f"Template {template!r} must contain exactly one '{{}}' for the class name.")
    names = [clean_classname(n) for n in classnames]
    before, after = template.split("{}")
    pre_ids, post_ids = _encode(tokenizer, before), _encode(tokenizer, after)
    context_length = tokenizer.context_length

    # Context slots as positions in the template's tokens (class name removed).
    template_ids = pre_ids + post_ids
    if isinstance(ctx_slots, str):
        slot_ids = _encode(tokenizer, ctx_slots)
        if len(slot_ids) != 1:
            raise ValueError(f"Context placeholder {ctx_slots!r} must be a single token.")
        slots = [i for i, t in enumerate(template_ids) if t == slot_ids[0]]
    else:
        slots = list(ctx_slots)
        if any(s < 0 or s >= len(template_ids) for s in slots):
            raise ValueError(f"Context slots {slots} fall outside the {len(template_ids)} tokens of {template!r}.")

    sot, eot_id = tokenizer.encoder[SOT_TOKEN], tokenizer.encoder[EOT_TOKEN]
    rows, eot, starts, lens, ctx_pos = [], [], [], [], []
    for name in names:
        if not name:
            raise ValueError(f"Empty class name in {list(classnames)!r}.")
        whole = _encode(tokenizer, template.format(name))
        ids = [sot, *whole, eot_id]
        if len(ids) > context_length:
            raise ValueError(
                f"Class name {name!r} does not fit: the prompt {template.format(name)!r} has {len(ids)} tokens, "
                f"more than the context length {context_length}. Shorten the class name or the template."
            )
        start, end = _name_span(whole, pre_ids, post_ids)
        # Template tokens that merged into the name: the end of the prefix and the start of the suffix.
        kept_post = len(whole) - end
        merged = [*range(start, len(pre_ids)), *range(len(pre_ids), len(pre_ids) + len(post_ids) - kept_post)]
        if start == end or set(merged) & set(slots):
            what = "has no token of its own" if start == end else "merges with a context slot of the template"
            raise ValueError(
                f"Class name {name!r} {what} {template!r} when the prompt is tokenised "
                f"({tokenizer.decode(whole)!r}). Put a space or punctuation between the '{{}}' and the context "
                "words of the template."
            )
        rows.append(ids + [0] * (context_length - len(ids)))
        eot.append(len(ids) - 1)
        starts.append(1 + start)
        lens.append(end - start)
        # Template token i sits at 1 + i before the name; the suffix keeps its tokens at the end of the prompt.
        offset = 1 + len(whole) - len(template_ids)
        ctx_pos.append([1 + i if i < len(pre_ids) else offset + i for i in slots])

    return PromptLayout(
        template=template,
        classnames=names,
        tokens=torch.tensor(rows, dtype=torch.long),
        eot=torch.tensor(eot, dtype=torch.long),
        name_start=torch.tensor(starts, dtype=torch.long),
        name_len=torch.tensor(lens, dtype=torch.long),
        ctx_pos=torch.tensor(ctx_pos, dtype=torch.long).reshape(len(names), len(slots)),
    )
