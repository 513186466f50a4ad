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
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def max_length(self) -> int:
        """Number of positions that influence any prompt's feature (causal text transformer): ``max(eot) + 1``."""
        return int(self.eot.max()) + 1


def _encode(tokenizer, text: str) -> list[int]:
    """BPE ids of ``text`` without start/end tokens."""
    return tokenizer.encode(text) if text.strip() else []


def build_layout(
    tokenizer: Callable,
    template: str,
    classnames: Sequence[str],
    ctx_slots: Sequence[int] | str = (),
) -> PromptLayout:
    """Tokenise ``template`` for every class and locate class-name tokens, context slots and EOT.

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
        ValueError: The template has no/several ``{}``, a class name is empty, or a prompt does not fit the
            tokenizer's context length (the message names the class).
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

    rows, eot, starts, lens, ctx_pos = [], [], [], [], []
    for name in names:
        name_ids = _encode(tokenizer, name)
        if not name_ids:
            raise ValueError(f"Empty class name in {list(classnames)!r}.")
        ids = [tokenizer.encoder[SOT_TOKEN], *pre_ids, *name_ids, *post_ids, tokenizer.encoder[EOT_TOKEN]]
        if len(ids) > context_length:
            raise ValueError(
                f"Class name {name!r} does not fit: the prompt {template.format(name)!r} has {len(ids)} tokens, "
                f"more than the context length {context_length}. Shorten the class name or the template."
            )
        # Tokenising the whole prompt must give the same ids as tokenising its parts (BPE works per word).
        whole = _encode(tokenizer, template.format(name))
        if whole != ids[1:-1]:
            raise ValueError(
                f"Class name {name!r} merges with the template {template!r} when tokenised; separate the '{{}}' "
                "from neighbouring letters with a space or punctuation."
            )
        start = 1 + len(pre_ids)
        rows.append(ids + [0] * (context_length - len(ids)))
        eot.append(len(ids) - 1)
        starts.append(start)
        lens.append(len(name_ids))
        # Template token i sits at 1 + i before the name and 1 + i + len(name) after it.
        ctx_pos.append([1 + s if s < len(pre_ids) else 1 + s + len(name_ids) for s in slots])

    return PromptLayout(
        template=template,
        classnames=names,
        tokens=torch.tensor(rows, dtype=torch.long),
        eot=torch.tensor(eot, dtype=torch.long),
        name_start=torch.tensor(starts, dtype=torch.long),
        name_len=torch.tensor(lens, dtype=torch.long),
        ctx_pos=torch.tensor(ctx_pos, dtype=torch.long).reshape(len(names), len(slots)),
    )


def name_token_ids(tokenizer: Callable, classnames: Sequence[str]) -> list[list[int]]:
    """BPE ids of each (cleaned) class name, without start/end tokens."""
    return [_encode(tokenizer, clean_classname(n)) for n in classnames]
