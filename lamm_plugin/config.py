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


@dataclass
class CoOpConfig:
    """CoOp (Zhou et al., IJCV 2022): learnable context vectors in front of (or around) the class name.

    Attributes:
        n_ctx: Number of context vectors (ignored when ``ctx_init`` is given: one per word).
        ctx_init: Words that initialise the context (e.g. ``"a photo of a"``); empty for random init.
        csc: Class-specific context (one set of vectors per class).
        class_token_position: ``"end"``, ``"middle"`` or ``"front"``.
        train_ctx: Train the context. ``False`` with ``ctx_init="a photo of a"`` is "LAMM alone".
    """

    n_ctx: int = 16
    ctx_init: str = ""
    csc: bool = False
    class_token_position: str = "end"
    train_ctx: bool = True


@dataclass
class MaPLeConfig:
    """MaPLe (Khattak et al., CVPR 2023): coupled text and vision prompts in the first ``prompt_depth`` layers.

    Attributes:
        n_ctx: Number of prompt tokens per layer and branch.
        ctx_init: Template words; the first ``n_ctx`` of its tokens are learnable (MaPLe's "a photo of a").
        prompt_depth: Number of layers with prompts (J); 1 is shallow MaPLe.
        clone_deep_proj: Start every deep projection from copies of one randomly initialised layer, as the
            original MaPLe code does; ``False`` initialises each independently.
    """

    n_ctx: int = 2
    ctx_init: str = "a photo of a"
    prompt_depth: int = 9
    clone_deep_proj: bool = False


@dataclass
class VPTConfig:
    """VPT (Jia et al., ECCV 2022) on CLIP's image tower, with a hand-crafted text prompt.

    Attributes:
        n_ctx_vision: Number of visual prompt tokens.
        prompt_depth_vision: Number of layers with visual prompts; 1 is shallow VPT.
        ctx_init: Words in front of the class name in the (frozen) text prompt.
    """

    n_ctx_vision: int = 8
    prompt_depth_vision: int = 1
    ctx_init: str = "a photo of a"


@dataclass
class CoCoOpConfig:
    """CoCoOp (Zhou et al., CVPR 2022): CoOp's context plus a per-image bias from a small meta-network.

    Attributes:
        n_ctx: Number of context vectors (ignored when ``ctx_init`` is given: one per word).
        ctx_init: Words that initialise the context; empty for random init.
        meta_reduction: The meta-network's hidden width is the image-feature width divided by this (16 in the
            original code).
    """

    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    meta_reduction: int = 16


@dataclass
class KgCoOpConfig(CoOpConfig):
    """KgCoOp (Yao et al., CVPR 2023): CoOp plus a loss keeping the class text features near CLIP's features of a
    hand-crafted prompt.

    Attributes:
        kg_weight: Weight ``W`` of the knowledge-guided term ``1 - mean_c cos(t_c, t_c^clip)`` (8.0 in the paper's
            base-to-new runs).
        template: Hand-crafted template with ``{}``; empty picks the dataset's (KgCoOp's table).
        dataset: Dataset name used to pick the template when ``template`` is empty.
    """

    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    kg_weight: float = 8.0
    template: str = ""
    dataset: str = ""


@dataclass
class PromptSRCConfig:
    """PromptSRC (Khattak et al., ICCV 2023): independent deep text and visual prompts, self-regularised.

    The prompts are IVLP's (MaPLe's repository): text context in the first ``prompt_depth_text`` blocks, visual
    tokens in the first ``prompt_depth_vision`` blocks, fresh at each block. The regularisation ties the prompted
    model to frozen CLIP (mutual agreement) and averages the prompts over epochs (GPA).

    Attributes:
        n_ctx_text: Text prompt tokens per block; the first ``n_ctx_text`` tokens of ``ctx_init`` start them.
        n_ctx_vision: Visual prompt tokens per block.
        ctx_init: Template words whose first ``n_ctx_text`` tokens are learnable.
        prompt_depth_text: Blocks with text prompts (1 = shallow).
        prompt_depth_vision: Blocks with visual prompts (1 = shallow).
        text_loss_weight: Weight of ``src_text``: L1 between prompted and frozen CLIP text features.
        image_loss_weight: Weight of ``src_image``: L1 between prompted and frozen CLIP image features.
        logit_loss_weight: Weight of ``src_logit``: KL from frozen CLIP's logits to the prompted logits.
        gpa: Gaussian-weighted prompt aggregation over epochs (applied by the trainer at the last epoch's end).
        gpa_mean: Mean (in epochs, 1-based) of the Gaussian epoch weights.
        gpa_std: Standard deviation of the Gaussian epoch weights.
        num_templates: Hand-crafted templates averaged for the frozen text features (0 = all 60 of PromptSRC).
    """

    n_ctx_text: int = 4
    n_ctx_vision: int = 4
    ctx_init: str = "a photo of a"
    prompt_depth_text: int = 9
    prompt_depth_vision: int = 9
    text_loss_weight: float = 25.0
    image_loss_weight: float = 10.0
    logit_loss_weight: float = 1.0
    gpa: bool = True
    gpa_mean: float = 15.0
    gpa_std: float = 1.0
    num_templates: int = 0


@dataclass
class ZeroshotConfig:
    """Zero-shot CLIP with a hand-crafted template (no training).

    Attributes:
        template: Prompt template with ``{}``; empty picks the dataset's CoOp template (see ``templates.py``).
        dataset: Dataset name used to pick the template when ``template`` is empty.
    """

    template: str = ""
    dataset: str = ""


@dataclass
class LAMMConfig:
    """LAMM: learnable label embeddings and the hierarchical loss.

    Attributes:
        enabled: ``False`` gives the plain host method (the baselines).
        label_tokens: Which class-name tokens become learnable: ``"all"``, ``"first_k"`` or ``"min_len"``
            (the official rule: the first ``m`` tokens, ``m`` = token count of the shortest class name).
        first_k: Number of tokens per class for ``label_tokens="first_k"``.
        min_len_cap: Upper bound on ``m`` for ``"min_len"`` (the official MaPLe code used 1; 0 = no bound).
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
    """

    enabled: bool = True
    label_tokens: str = "all"
    first_k: int = 1
    min_len_cap: int = 0
    shots: int = 0
    param_scale: float = 1.0
    feature_weight: float = 1.0
    logit_weight: float = 0.05
    temperature: float = 2.0
    truncate_text: bool = True
    cache_reference: bool = True
    text_groups: int = 4

    def __post_init__(self) -> None:
        if self.label_tokens not in LABEL_TOKENS:
            raise ValueError(f"label_tokens must be one of {LABEL_TOKENS}, got {self.label_tokens!r}.")
        if self.text_groups < 1:
            raise ValueError(f"text_groups must be at least 1, got {self.text_groups}.")


METHOD_CONFIGS: dict[str, type] = {
    "coop": CoOpConfig,
    "maple": MaPLeConfig,
    "vpt": VPTConfig,
    "cocoop": CoCoOpConfig,
    "kgcoop": KgCoOpConfig,
    "zeroshot": ZeroshotConfig,
    "promptsrc": PromptSRCConfig,
}


def official_preset(method: str) -> LAMMConfig:
    """The settings of the official LAMM code (``gaojingsheng/LAMM``), for comparing numbers.

    Differences from our defaults: only the first ``min_len`` class-name tokens are learnable (``min_len`` =
    shortest name in the dataset for CoOp, 1 for MaPLe), and the parameter-alignment weight is ``1 / shots``
    with ``shots`` left at 1 by the official few-shot scripts. The official MaPLe code also wrote the label into
    the slot of the template word "of"; that bug is not reproduced.
    """
    return LAMMConfig(label_tokens="min_len", min_len_cap=1 if method == "maple" else 0, shots=1)


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
