"""The one list of method cases every matrix test runs, and the facts of each host written out by hand.

Every registered method (:data:`lamm_plugin.methods.METHODS`) has at least one case in :data:`CASES` and an entry
in :data:`HOSTS`; ``test_cases.py`` fails when one is missing (timm runs one test over its whole registry). A new
host adds its cases and its entry here, and every matrix test (``test_lamm.py``, ``test_precision.py``,
``test_cuda_graph.py``, ``test_dassl_config.py``) runs it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional

from lamm_plugin import (
    LAMM,
    CoCoOpConfig,
    CoOpConfig,
    IVLPConfig,
    KgCoOpConfig,
    LAMMConfig,
    MaPLeConfig,
    ProGradConfig,
    PromptSRCConfig,
    VPTConfig,
    ZeroshotConfig,
    build_model,
)
from lamm_plugin.backbone import CLIPBundle


@dataclass(frozen=True)
class Case:
    """A method with one config, for the tiny test CLIP (3 blocks per tower).

    Attributes:
        id: The test id (``"coop-front"``).
        method: Registered method name.
        config: The method's config (copied for every build).
        trainable: Names of the method's trainable tensors in the LAMM model (LAMM's label rows aside).
    """

    id: str
    method: str
    config: Any
    trainable: frozenset[str] = field(default_factory=frozenset)

    def build(self, clip: CLIPBundle, classnames: list[str], lamm: Optional[LAMMConfig] = None, shots: int = 0) -> LAMM:
        return build_model(self.method, clip, classnames, copy.deepcopy(self.config), copy.deepcopy(lamm), shots)


def _names(*names: str) -> frozenset[str]:
    return frozenset(f"method.{n}" for n in names)


CASES: tuple[Case, ...] = (
    Case("coop", "coop", CoOpConfig(n_ctx=4), _names("ctx")),
    Case("coop-init", "coop", CoOpConfig(ctx_init="a photo of a"), _names("ctx")),
    Case("coop-front", "coop", CoOpConfig(n_ctx=4, class_token_position="front"), _names("ctx")),
    Case("coop-middle", "coop", CoOpConfig(n_ctx=4, class_token_position="middle"), _names("ctx")),
    Case("coop-csc", "coop", CoOpConfig(n_ctx=2, csc=True), _names("ctx")),
    Case(
        "maple",
        "maple",
        MaPLeConfig(prompt_depth=3),
        _names(
            "ctx",
            "proj.weight",
            "proj.bias",
            *(f"deep_text.{i}" for i in range(2)),
            *(f"deep_proj.{i}.{w}" for i in range(2) for w in ("weight", "bias")),
        ),
    ),
    Case("vpt", "vpt", VPTConfig(n_ctx_vision=4), _names("shallow")),
    Case("vpt-deep", "vpt", VPTConfig(n_ctx_vision=4, prompt_depth_vision=3), _names("shallow", "deep.0", "deep.1")),
    Case("zeroshot", "zeroshot", ZeroshotConfig(dataset="OxfordPets")),
    Case(
        "cocoop",
        "cocoop",
        CoCoOpConfig(),
        _names("ctx", *(f"meta_net.linear{i}.{w}" for i in (1, 2) for w in ("weight", "bias"))),
    ),
    Case("kgcoop", "kgcoop", KgCoOpConfig(dataset="OxfordPets"), _names("ctx")),
    Case("prograd", "prograd", ProGradConfig(n_ctx=12, dataset="OxfordPets"), _names("ctx")),
    Case(
        "promptsrc",
        "promptsrc",
        PromptSRCConfig(prompt_depth_text=3, prompt_depth_vision=2, num_templates=4),
        _names("ctx", "deep_text.0", "deep_text.1", "visual", "deep_visual.0"),
    ),
    Case(
        "ivlp",
        "ivlp",
        IVLPConfig(prompt_depth_text=3, prompt_depth_vision=2),
        _names("ctx", "deep_text.0", "deep_text.1", "visual", "deep_visual.0"),
    ),
)
#: The cases by id.
BY_ID: dict[str, Case] = {case.id: case for case in CASES}


@dataclass(frozen=True)
class Host:
    """What a registered method is in the Dassl adapter, written out rather than read from the registry.

    Attributes:
        trainer: The baseline trainer's class name; its node is this in upper case.
        lamm_trainer: The LAMM trainer's class name, ``None`` without a LAMM variant.
        published: Published defaults of the method's node (the papers' and official configs' values).
        fp32_in_fp16_runs: The method's learned tensors (attributes) that the original code keeps in fp32 in its
            ``PREC fp16`` runs; it keeps the others in fp16 (the original's file and lines beside each entry).
    """

    trainer: str
    lamm_trainer: Optional[str]
    published: dict[str, Any]
    fp32_in_fp16_runs: tuple[str, ...] = ()


HOSTS: dict[str, Host] = {
    "coop": Host(
        "CoOp",
        "LAMM_CoOp",
        {"N_CTX": 16, "CTX_INIT": "", "CSC": False, "CLASS_TOKEN_POSITION": "end", "TRAIN_CTX": True},
    ),
    # MaPLe's trainers/maple.py:90-105 ctx in CLIP's dtype, proj .half(); 111-117 deep prompts and projections in
    # fp32 (so are the official LAMM code's, its trainers/maple.py:135-142; its label rows in fp16, 191-201)
    "maple": Host(
        "MaPLe",
        "LAMM_MaPLe",
        {"N_CTX": 2, "CTX_INIT": "a photo of a", "PROMPT_DEPTH": 9},
        fp32_in_fp16_runs=("deep_text", "deep_proj"),
    ),
    # MaPLe's repository, trainers/vpt.py:41: CLIP and its prompts in fp32 whatever PREC says
    "vpt": Host(
        "VPT",
        "LAMM_VPT",
        {"N_CTX_VISION": 8, "PROMPT_DEPTH_VISION": 1, "CTX_INIT": "a photo of a"},
        fp32_in_fp16_runs=("shallow", "deep"),
    ),
    "zeroshot": Host("ZeroshotCLIP", None, {}),
    "cocoop": Host("CoCoOp", "LAMM_CoCoOp", {"N_CTX": 4, "CTX_INIT": "a photo of a", "META_REDUCTION": 16}),
    "kgcoop": Host(
        "KgCoOp",
        "LAMM_KgCoOp",
        {
            "N_CTX": 4,
            "CTX_INIT": "a photo of a",
            "KG_WEIGHT": 8.0,
            "TEMPLATE": "",
            "DATASET": "",
            "HAND_CRAFTED_PRECISION": "fp16",  # the original's second CLIP stays in fp16
        },
    ),
    # ProGrad's train.py (TRAINER.COOP, LOSS.LAMBDA, LOSS.T) and configs/trainers/ProGrad/rn50.yaml (CTX_INIT True)
    "prograd": Host(
        "ProGrad",
        "LAMM_ProGrad",
        {
            "N_CTX": 16,
            "CTX_INIT": "",
            "CSC": False,
            "CLASS_TOKEN_POSITION": "end",
            "TRAIN_CTX": True,
            "TEMPLATE_INIT": True,
            "TEMPLATE": "",
            "DATASET": "",
            "GRAD_LAMBDA": 1.0,
            "KL_TEMPERATURE": 1.0,
            "TEACHER_PRECISION": "fp32",  # the original floats its zero-shot CLIP
        },
    ),
    # PromptSRC's configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml
    "promptsrc": Host(
        "PromptSRC",
        "LAMM_PromptSRC",
        {
            "N_CTX_TEXT": 4,
            "N_CTX_VISION": 4,
            "CTX_INIT": "a photo of a",
            "PROMPT_DEPTH_TEXT": 9,
            "PROMPT_DEPTH_VISION": 9,
            "TEXT_LOSS_WEIGHT": 25.0,
            "IMAGE_LOSS_WEIGHT": 10.0,
            "GPA_MEAN": 15.0,
            "GPA_STD": 1.0,
        },
        # trainers/promptsrc.py:94-106 ctx in CLIP's dtype; clip/model.py:213-221 and 377-379, the deep and visual
        # prompts, in fp32
        fp32_in_fp16_runs=("deep_text", "visual", "deep_visual"),
    ),
    # MaPLe's repository, train.py: the defaults of TRAINER.IVLP
    "ivlp": Host(
        "IVLP",
        "LAMM_IVLP",
        {
            "N_CTX_TEXT": 2,
            "N_CTX_VISION": 2,
            "CTX_INIT": "a photo of a",
            "PROMPT_DEPTH_TEXT": 9,
            "PROMPT_DEPTH_VISION": 9,
        },
        # trainers/independentVL.py:88-100 ctx in CLIP's dtype; clip/model.py:213-221 and 376-378, the deep and
        # visual prompts, in fp32
        fp32_in_fp16_runs=("deep_text", "visual", "deep_visual"),
    ),
}
