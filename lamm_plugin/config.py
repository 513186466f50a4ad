"""Configuration dataclasses: the single source of every default.

The Dassl adapter generates its yacs nodes from these classes (field ``n_ctx`` becomes key ``N_CTX``), so a
default is changed here and nowhere else. Defaults follow the LAMM paper (Gao et al., AAAI 2024,
arXiv 2312.08212) and the official configs; :func:`official_preset` reproduces the official code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

LABEL_TOKENS = ("all", "first_k", "min_len")
LABEL_SLOTS = ("name", "after_context")


@dataclass
class LAMMConfig:
    """LAMM: learnable label embeddings and the hierarchical loss.

    Attributes:
        enabled: ``False`` gives the plain host method (the baselines).
        label_tokens: Which class-name tokens become learnable: ``"all"``, ``"first_k"`` or ``"min_len"``
            (the official rule: the first ``m`` tokens, ``m`` = token count of the shortest class name).
        first_k: Number of tokens per class for ``label_tokens="first_k"``.
        min_len_cap: Upper bound on ``m`` for ``"min_len"`` (the official MaPLe code used 1; 0 = no bound).
        label_slot: Where the label rows go. ``"name"``: over the first class-name tokens, the rest of the name
            kept. ``"after_context"``: over the template tokens right after the last context slot, the whole class
            name kept (the official MaPLe code: the word "of" of "a photo of a"); the rows still start from the
            class name's first token embeddings.
        shots: ``K`` in the parameter-alignment weight ``param_scale / K``; 0 takes the dataset's shots.
        param_scale: Numerator of the parameter-alignment weight.
        feature_weight: Weight of the feature-alignment term.
        logit_weight: Weight of the logit-alignment (distillation) term.
        temperature: Distillation temperature.
        truncate_text: Run the text encoder up to the last end-of-text token only (exact).
        cache_reference: Compute the reference (original-label) text features once when nothing they depend
            on is trainable (exact).
        text_groups: Most groups of class prompts the text encoder runs separately, each on its own longest
            prompt (exact; with ImageNet's names this halves the text work). 1 runs every prompt on the longest.
        random_init: Start the label rows a run trains from N(0, 0.02^2) instead of the class names' token
            embeddings, and align the parameters to that random start (the official ``--random-init``, the
            label-initialisation ablation). Applied when training starts: an evaluation, and the classes a
            checkpoint does not cover, keep the class names' embeddings.
    """

    enabled: bool = True
    label_tokens: str = "all"
    first_k: int = 1
    min_len_cap: int = 0
    label_slot: str = "name"
    shots: int = 0
    param_scale: float = 1.0
    feature_weight: float = 1.0
    logit_weight: float = 0.05
    temperature: float = 2.0
    truncate_text: bool = True
    cache_reference: bool = True
    text_groups: int = 4
    random_init: bool = False

    def __post_init__(self) -> None:
        if self.label_tokens not in LABEL_TOKENS:
            raise ValueError(f"label_tokens must be one of {LABEL_TOKENS}, got {self.label_tokens!r}.")
        if self.label_slot not in LABEL_SLOTS:
            raise ValueError(f"label_slot must be one of {LABEL_SLOTS}, got {self.label_slot!r}.")
        if self.text_groups < 1:
            raise ValueError(f"text_groups must be at least 1, got {self.text_groups}.")


def official_preset(method: str) -> LAMMConfig:
    """The settings of the official LAMM code (``gaojingsheng/LAMM``), for comparing numbers.

    Differences from our defaults: only the first ``min_len`` class-name tokens are learnable (``min_len`` =
    shortest name in the dataset for CoOp, 1 for MaPLe), and the parameter-alignment weight is ``1 / shots``
    with ``shots`` left at 1 by the official few-shot scripts. The official MaPLe code writes its one label row into
    the slot of the template word "of" and keeps the whole class name (``label_slot="after_context"``).
    """
    if method == "maple":
        return LAMMConfig(label_tokens="min_len", min_len_cap=1, label_slot="after_context", shots=1)
    return LAMMConfig(label_tokens="min_len", shots=1)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict (checkpoint metadata, logs)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Build ``cls`` from a dict, refusing unknown keys with the list of known ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise KeyError(f"Unknown {cls.__name__} keys {sorted(unknown)}; known keys: {sorted(names)}.")
    return cls(**values)
