"""Learnable label embeddings (LAMM, Gao et al., AAAI 2024, arXiv 2312.08212, section 3.2).

Each class owns learnable rows that replace the token embeddings of (some of) its class-name tokens in the text
prompt. Rows are initialised from CLIP's own token embeddings of the name, so an untrained LAMM changes nothing.
Rows are keyed by class name (see :func:`label_keys` for repeated names): a state dict trained on one class set
loads onto another (shared classes take the learned rows, the others keep CLIP's embeddings), which is what
base-to-new evaluation, ImageNet -> its variants and continual learning need.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn

from lamm_plugin.tokens import clean_classname

logger = logging.getLogger(__name__)

_EXTRA = "_extra_state"


def label_keys(classnames: Sequence[str]) -> list[str]:
    """One unique key per class: its cleaned name, with ``" #k"`` added to the k-th repeat of a name.

    Class lists can repeat a name (CLIP's ImageNet list has "missile" and "sunglasses" twice); each class still
    owns its label rows. A checkpoint maps onto another class set by these keys, so a repeated name's first
    occurrence is the one a class set with that name once receives.
    """
    keys, taken, seen = [], set(), {}
    for name in map(clean_classname, classnames):
        seen[name] = seen.get(name, 0) + 1
        key, k = name, seen[name]
        while key in taken:
            key = f"{name} #{k}"
            k += 1
        taken.add(key)
        keys.append(key)
    return keys


def label_token_counts(name_lens: Sequence[int], rule: str, first_k: int = 1, min_len_cap: int = 0) -> list[int]:
    """How many leading class-name tokens of each class are learnable.

    Args:
        name_lens: Token count of each class name.
        rule: ``"all"`` (every token), ``"first_k"`` (the first ``first_k``) or ``"min_len"`` (the official rule:
            the first ``m`` tokens for every class, ``m`` = length of the shortest name, capped by ``min_len_cap``).
        first_k: For ``"first_k"``.
        min_len_cap: Upper bound on ``m`` for ``"min_len"`` (0 = none).
    """
    if rule == "all":
        return list(name_lens)
    if rule == "first_k":
        return [min(first_k, n) for n in name_lens]
    if rule == "min_len":
        m = min(name_lens)
        return [min(m, min_len_cap) if min_len_cap > 0 else m for _ in name_lens]
    raise ValueError(f"Unknown label-token rule {rule!r}.")


class LabelEmbedding(nn.Module):
    """Learnable label rows per class, spliced into prompt embeddings at the class-name positions.

    Storage: ``weight`` holds the rows of trainable classes and the buffer ``frozen`` those of frozen classes
    (a frozen row then sees neither gradients nor weight decay). ``init`` keeps every row's initial value for the
    parameter-alignment loss. ``add_classes`` and ``freeze`` rebuild ``weight``: build the optimiser afterwards.

    Args:
        width: Token-embedding width of the text tower.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.weight = nn.Parameter(torch.empty(0, width))
        self.register_buffer("frozen", torch.empty(0, width), persistent=False)
        self.register_buffer("init", torch.empty(0, width), persistent=False)
        self.register_buffer("order", torch.empty(0, dtype=torch.long), persistent=False)
        # Bookkeeping in insertion order; rows of class i are init[offsets[i] : offsets[i] + counts[i]].
        self.classnames: list[str] = []
        self.counts: list[int] = []
        self.frozen_names: set[str] = set()

    # ---- bookkeeping -------------------------------------------------------------------------------------------
    @property
    def _position(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.classnames)}

    def _offsets(self) -> list[int]:
        offsets, total = [], 0
        for count in self.counts:
            offsets.append(total)
            total += count
        return offsets

    def _storage_order(self) -> torch.Tensor:
        """Index into ``cat([weight, frozen])`` of each row in insertion order, ``[T]``."""
        offsets = self._offsets()
        trainable = [i for i, n in enumerate(self.classnames) if n not in self.frozen_names]
        frozen = [i for i, n in enumerate(self.classnames) if n in self.frozen_names]
        order = torch.empty(sum(self.counts), dtype=torch.long)
        cursor = 0
        for i in trainable + frozen:
            order[offsets[i] : offsets[i] + self.counts[i]] = torch.arange(cursor, cursor + self.counts[i])
            cursor += self.counts[i]
        return order

    def _rebuild(self, rows: torch.Tensor) -> None:
        """Split rows given in insertion order into ``weight`` (trainable) and ``frozen``."""
        offsets = self._offsets()
        pieces_t, pieces_f = [], []
        for i, name in enumerate(self.classnames):
            piece = rows[offsets[i] : offsets[i] + self.counts[i]]
            (pieces_f if name in self.frozen_names else pieces_t).append(piece)
        empty = rows.new_empty(0, self.width)
        trainable = (torch.cat(pieces_t) if pieces_t else empty).detach()
        if trainable.shape == self.weight.shape:
            # Same partition: update in place so that an optimiser built on ``weight`` keeps working (resume).
            with torch.no_grad():
                self.weight.copy_(trainable)
        else:
            self.weight = nn.Parameter(trainable.clone().to(self.weight.device))
        self.frozen = (torch.cat(pieces_f) if pieces_f else empty).detach().clone()
        self.order = self._storage_order().to(self.weight.device)

    def rows(self) -> torch.Tensor:
        """All rows in insertion order, ``[T, width]`` (differentiable w.r.t. ``weight``)."""
        return torch.cat([self.weight, self.frozen.to(self.weight.dtype)])[self.order]

    # ---- class-set changes -----------------------------------------------------------------------------------
    def add_classes(self, classnames: Sequence[str], name_embeddings: Sequence[torch.Tensor]) -> None:
        """Add rows for new classes (existing classes are left untouched).

        Args:
            classnames: Class names to add.
            name_embeddings: For each class, the ``[count, width]`` CLIP token embeddings of the tokens that become
                learnable.
        """
        new_names, new_rows = [], []
        known = set(self.classnames)
        for name, emb in zip(classnames, name_embeddings):
            name = clean_classname(name)
            if name in known:
                continue
            known.add(name)
            new_names.append(name)
            new_rows.append(emb.detach().float().reshape(-1, self.width))
        if not new_names:
            return
        device = self.weight.device
        rows = torch.cat([self.rows().detach()] + [r.to(device) for r in new_rows])
        self.init = torch.cat([self.init] + [r.to(device) for r in new_rows])
        self.classnames += new_names
        self.counts += [len(r) for r in new_rows]
        self._rebuild(rows)

    def freeze(self, classnames: Sequence[str] | None = None) -> None:
        """Freeze the rows of ``classnames`` (all classes when ``None``)."""
        names = self.classnames if classnames is None else [clean_classname(n) for n in classnames]
        unknown = [n for n in names if n not in self._position]
        if unknown:
            raise KeyError(f"Cannot freeze {unknown}: no label embedding for them.")
        rows = self.rows().detach()
        self.frozen_names |= set(names)
        self._rebuild(rows)

    def draw(self, std: float = 0.02, dtype: torch.dtype = torch.float32) -> list[Optional[torch.Tensor]]:
        """Rows from N(0, std^2) for each trainable (not frozen) class, ``None`` for the frozen ones, drawn with
        torch's global generator as the official ``--random-init`` draws them: ``nn.init.normal_(std=0.02)`` on the
        ``[classes, tokens, width]`` slice of the prompts' embeddings, in the learned rows' dtype (torch fills a
        slice that is not contiguous element by element; a class with fewer tokens takes its first rows)."""
        trainable = [i for i, name in enumerate(self.classnames) if name not in self.frozen_names]
        longest = max((self.counts[i] for i in trainable), default=0)
        block = torch.empty(len(trainable), longest + 1, self.width, dtype=dtype)[:, 1:].normal_(std=std)
        drawn: list[Optional[torch.Tensor]] = [None] * len(self.classnames)
        for values, i in zip(block, trainable):
            drawn[i] = values[: self.counts[i]].clone()
        return drawn

    def randomize(self, drawn: Optional[list[Optional[torch.Tensor]]] = None) -> None:
        """Start the rows of the trainable classes, and their initial values (the alignment's anchor), from
        ``drawn`` (:meth:`draw`'s rows; drawn now when not given)."""
        drawn = self.draw() if drawn is None else drawn
        rows, offsets = self.rows().detach().clone(), self._offsets()
        for i, values in enumerate(drawn):
            if values is not None:
                part = slice(offsets[i], offsets[i] + self.counts[i])
                rows[part] = values.to(rows.device, rows.dtype)
                self.init[part] = values.to(self.init.device, self.init.dtype)
        self._rebuild(rows)

    # ---- splicing ----------------------------------------------------------------------------------------------
    def splice_index(
        self, classnames: Sequence[str], slot_start: torch.Tensor, slot_len: torch.Tensor, length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each class's rows go in a ``[C, length, width]`` prompt tensor: from position ``slot_start[c]`` on,
        at most ``slot_len[c]`` rows (the class name's tokens, or the template tokens of ``LAMMConfig.label_slot``).

        Returns:
            ``(row_index, flat_position)``: rows ``rows()[row_index]`` go to positions ``flat_position`` of the
            prompts viewed as ``[C * length, width]``. Classes without rows are skipped (they keep CLIP's own
            embeddings).
        """
        offsets, position = self._offsets(), self._position
        row_index, flat = [], []
        for c, name in enumerate(classnames):
            i = position.get(clean_classname(name))
            if i is None:
                continue
            count = self.counts[i]
            if count > int(slot_len[c]):
                raise ValueError(
                    f"Class {name!r} has {count} label rows but its label slot only {int(slot_len[c])} positions: "
                    "learn fewer label tokens (label_tokens, first_k, min_len_cap) or use label_slot 'name'."
                )
            start = int(slot_start[c])
            row_index.extend(range(offsets[i], offsets[i] + count))
            flat.extend(range(c * length + start, c * length + start + count))
        return torch.tensor(row_index, dtype=torch.long), torch.tensor(flat, dtype=torch.long)

    @staticmethod
    def splice(prompts: torch.Tensor, rows: torch.Tensor, flat_position: torch.Tensor) -> torch.Tensor:
        """Write ``rows`` ``[R, width]`` into ``prompts`` ``[C, L, width]`` at ``flat_position`` (out of place)."""
        c, length, width = prompts.shape
        flat = prompts.reshape(c * length, width).index_copy(0, flat_position, rows.to(prompts.dtype))
        return flat.reshape(c, length, width)

    # ---- state dict keyed by class name --------------------------------------------------------------------------
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        rows = self.rows()
        destination[prefix + "rows"] = rows if keep_vars else rows.detach()
        destination[prefix + "init"] = self.init if keep_vars else self.init.detach()
        destination[prefix + _EXTRA] = {
            "classnames": list(self.classnames),
            "counts": list(self.counts),
            "frozen": sorted(self.frozen_names),
        }

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        keys = [prefix + "rows", prefix + "init", prefix + _EXTRA]
        absent = [k for k in keys if k not in state_dict]
        if absent:
            missing_keys.extend(absent)
            return
        rows, init, meta = (state_dict[k] for k in keys)
        theirs = {n: i for i, n in enumerate(meta["classnames"])}
        their_offsets = [sum(meta["counts"][:i]) for i in range(len(meta["counts"]))]
        mine_offsets = self._offsets()
        new_rows, loaded = self.rows().detach().clone(), 0
        for i, name in enumerate(self.classnames):
            j = theirs.get(name)
            if j is None:
                continue
            if meta["counts"][j] != self.counts[i]:
                errors.append(
                    f"Label embedding of class {name!r} has {meta['counts'][j]} rows in the checkpoint but "
                    f"{self.counts[i]} here: build the model with the label_tokens setting it was trained with."
                )
                continue
            src = slice(their_offsets[j], their_offsets[j] + self.counts[i])
            dst = slice(mine_offsets[i], mine_offsets[i] + self.counts[i])
            new_rows[dst] = rows[src].to(new_rows)
            self.init[dst] = init[src].to(self.init)
            loaded += 1
        # Classes of the checkpoint this model does not know are kept, frozen: a later checkpoint still carries
        # them (continual learning), and they serve again once the class set includes them.
        mine = set(self.classnames)
        extra = [j for j, name in enumerate(meta["classnames"]) if name not in mine]
        if extra:
            pick = torch.cat([torch.arange(their_offsets[j], their_offsets[j] + meta["counts"][j]) for j in extra])
            new_rows = torch.cat([new_rows, rows[pick].to(new_rows)])
            self.init = torch.cat([self.init, init[pick].to(self.init)])
            self.classnames += [meta["classnames"][j] for j in extra]
            self.counts += [meta["counts"][j] for j in extra]
        self.frozen_names = (self.frozen_names | set(meta["frozen"]) | {meta["classnames"][j] for j in extra}) & set(
            self.classnames
        )
        self._rebuild(new_rows)
        logger.info(
            "Label embeddings: %d of %d classes loaded, %d keep CLIP's embeddings; %d more kept (frozen) for later.",
            loaded,
            len(mine),
            len(mine) - loaded,
            len(extra),
        )
