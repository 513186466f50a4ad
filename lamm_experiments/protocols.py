"""Benchmark protocols as data: which config each method runs with, per table, dataset and shot count.

A published row was produced by one protocol: CoOp's few-shot results train 50 epochs at 1 shot, 100 at 2 and 4
shots and 200 at 8 and 16, and 50 at every shot count on ImageNet (``COOP.md``); CoCoOp's base-to-new CoOp row
trains 200 epochs; PromptSRC's few-shot runs take other GPA settings on five of the eleven datasets. A
:class:`Protocol` writes such a choice down once, with the source of every rule (repository, file, line), and
:func:`resolve` answers it for one job::

    >>> choice = resolve("coop-fewshot", "CoOp", "caltech101", 2)
    >>> choice.trainer, choice.config
    ('CoOp', 'vit_b16_ep100')

``scripts/lamm/sweep.sh BENCH --protocol NAME`` builds its jobs from a protocol (``--dry-run`` shows the config,
overrides and sources of every job), each run's ``results.json`` records the protocol (``"protocol": {"name",
"method"}``; ``null`` for a run started by hand) and ``scripts/make_tables.py`` keeps runs of different protocols
in different rows. A protocol's ``published`` names the file of ``lamm_experiments/reference/`` whose numbers its
runs reproduce: the tables put a published number only beside the run of that protocol (same method, backbone and
shots). ``python -m lamm_experiments.protocols`` prints the table of protocols (docs/RUN.md holds it).

Only the standard library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Optional, Union

from lamm_experiments.tabular import markdown_table

__all__ = [
    "Source",
    "Rule",
    "Override",
    "MethodPlan",
    "Protocol",
    "Choice",
    "PROTOCOLS",
    "KINDS",
    "get_protocol",
    "resolve",
    "protocols_markdown",
]

#: Table kinds; ``dg`` (domain generalisation) is read from the same runs as ``xd`` (the ImageNet variants).
KINDS = ("fewshot", "base2new", "xd", "dg", "continual")
ELEVEN = (
    "caltech101", "dtd", "eurosat", "fgvc_aircraft", "food101", "oxford_flowers", "oxford_pets", "stanford_cars",
    "sun397", "ucf101", "imagenet",
)  # fmt: skip
FEW_SHOTS = (1, 2, 4, 8, 16)

COOP = "KaiyangZhou/CoOp"
MAPLE = "muzairkhattak/multimodal-prompt-learning"
PROMPTSRC = "muzairkhattak/PromptSRC"
KGCOOP = "htyao89/KgCoOp"
PROGRAD = "BeierZhu/Prompt-align"
LAMM = "gaojingsheng/LAMM"
OURS = "this repository"


@dataclass(frozen=True)
class Source:
    """Where a rule comes from: a file of an original repository (with its line) or this repository."""

    repo: str
    path: str
    line: Union[int, str, None] = None  # a line, or lines such as "11,13"

    def __str__(self) -> str:
        return f"{self.repo}: {self.path}" + (f":{self.line}" if self.line else "")


def _in_scope(
    datasets: Optional[tuple[str, ...]], shot_counts: Optional[tuple[int, ...]], dataset: str, shots: int
) -> bool:
    """Whether ``dataset`` at ``shots`` is among those a rule or override names (``None``: every one)."""
    return (shot_counts is None or shots in shot_counts) and (datasets is None or dataset in datasets)


@dataclass(frozen=True)
class Rule:
    """The config file (``configs/trainers/<trainer>/<config>.yaml``) for the shot counts and datasets it names
    (``None``: every one)."""

    config: str
    source: Source
    shots: Optional[tuple[int, ...]] = None
    datasets: Optional[tuple[str, ...]] = None

    def matches(self, dataset: str, shots: int) -> bool:
        return _in_scope(self.datasets, self.shots, dataset, shots)


@dataclass(frozen=True)
class Override:
    """A ``KEY VALUE`` config override for the datasets and shot counts it names (``None``: every one)."""

    key: str
    value: str
    source: Source
    datasets: Optional[tuple[str, ...]] = None
    shots: Optional[tuple[int, ...]] = None

    def matches(self, dataset: str, shots: int) -> bool:
        return _in_scope(self.datasets, self.shots, dataset, shots)


@dataclass(frozen=True)
class MethodPlan:
    """One method of a protocol: its trainer, its config rules (the first that matches wins) and overrides (every
    one that matches applies).

    ``eval_only``: the method trains nothing (zero-shot CLIP): one evaluation per dataset (and per class subset of
    a base-to-new table, per source and target of a cross-dataset one), with no seeds and no shot counts
    (``scripts/zsclip/zeroshot.sh``). ``env``: ``NAME VALUE`` pairs for the job script's environment that are no
    config key (``SHARED`` of ``scripts/lamm/continual.sh``).
    """

    name: str
    trainer: str
    rules: tuple[Rule, ...]
    overrides: tuple[Override, ...] = ()
    note: str = ""
    eval_only: bool = False
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Protocol:
    """A named protocol: a table kind, its datasets, shot counts and seeds, and a plan per method.

    ``sets`` (two-set continual protocol only): the class subsets trained separately, each its own run.
    ``targets`` (cross-dataset only): the datasets the source model is tested on. ``model_from`` (cross-dataset
    only): the few-shot protocol whose run on the source is the model tested (none is trained for this protocol),
    ``load_epoch`` the epoch of it that is loaded.
    ``published``: the file of ``lamm_experiments/reference/`` whose numbers this protocol's runs reproduce (on
    ``backbone``); a published number stands only beside the run of its method in its protocol, at its shots.
    """

    name: str
    kind: str
    description: str
    source: Source
    methods: tuple[MethodPlan, ...]
    datasets: tuple[str, ...] = ELEVEN
    shots: tuple[int, ...] = (16,)
    seeds: tuple[int, ...] = (1, 2, 3)
    sets: tuple[str, ...] = ()
    backbone: str = "ViT-B/16"
    published: str = ""
    targets: tuple[str, ...] = ()
    model_from: str = ""
    load_epoch: Optional[int] = None

    def method(self, name: str) -> MethodPlan:
        for plan in self.methods:
            if plan.name == name:
                return plan
        raise KeyError(f"protocol {self.name!r} has no method {name!r}: it has {', '.join(self.method_names())}")

    def method_names(self) -> list[str]:
        return [plan.name for plan in self.methods]


@dataclass(frozen=True)
class Choice:
    """What one job of a protocol runs: trainer, config name, overrides (``KEY VALUE`` pairs), their sources and the
    job script's environment (``MethodPlan.env``)."""

    protocol: str
    method: str
    trainer: str
    config: str
    overrides: tuple[tuple[str, str], ...]
    sources: tuple[Source, ...]
    env: tuple[tuple[str, str], ...] = ()

    def opts(self) -> list[str]:
        """The overrides as ``KEY VALUE`` words for ``train.py``."""
        return [word for pair in self.overrides for word in pair]


# ---------------------------------------------------------------------------------------------------------------
# The protocols

_COOP_MD = "COOP.md"
_IMAGENET = ("imagenet",)


def _coop_schedule(prefix: str, shots: tuple[int, ...] = FEW_SHOTS) -> tuple[Rule, ...]:
    """CoOp's few-shot schedule for a backbone's configs (``rn50``, ``vit_b16``, ...): ImageNet 50 epochs at every
    shot count; the other datasets 50 epochs at 1 shot, 100 at 2 and 4, 200 at 8 and 16."""
    rules = [
        Rule(f"{prefix}_ep50", Source(COOP, _COOP_MD, 13), datasets=_IMAGENET),
        Rule(f"{prefix}_ep50", Source(COOP, _COOP_MD, 18), shots=(1,)),
        Rule(f"{prefix}_ep100", Source(COOP, _COOP_MD, 19), shots=(2, 4)),
        Rule(prefix, Source(COOP, _COOP_MD, 21), shots=(8, 16)),
    ]
    return tuple(r for r in rules if r.shots is None or set(r.shots) & set(shots))


def _every(config: str, source: Source) -> tuple[Rule, ...]:
    return (Rule(config, source),)


_ZEROSHOT = Source(COOP, "scripts/coop/zeroshot.sh", 13)  # --config-file configs/trainers/CoOp/${CFG}.yaml


def _zeroshot(prefix: str, note: str = "") -> MethodPlan:
    """Zero-shot CLIP on a backbone (``rn50``, ``vit_b16``, ...): CoOp's ``zeroshot.sh`` with that backbone's
    config and CoOp's per-dataset template; evaluated once per dataset, nothing trained."""
    return MethodPlan("ZeroshotCLIP", "ZeroshotCLIP", _every(prefix, _ZEROSHOT), note=note, eval_only=True)


_LAMM_FEW = Source(LAMM, "scripts/lamm/base_train_lamm_all.sh", 5)
_COOP_LAMM_FEW = Source(LAMM, "scripts/coop/base_train_coop_lamm_all.sh", 5)
_MAPLE_LAMM_FEW = Source(LAMM, "scripts/maple/base_train_maple_lamm_all.sh", 5)
_LAMM_SHOTS_DEFAULT = Source(LAMM, "train.py", 219)  # --shots defaults to 1; the few-shot scripts do not pass it
_LAMM_SET1 = Source(LAMM, "scripts/lamm/base2new_train_set1_lamm_all.sh", 6)
_LAMM_SET2 = Source(LAMM, "scripts/lamm/base2new_train_set2_lamm_all.sh", 6)
_LAMM_SET_SHOTS = Source(LAMM, "scripts/lamm/base2new_train_set1_lamm_all.sh", 24)  # --shots ${SHOTS}, SHOTS=16
_LAMM_DG = "scripts/lamm/base_test_cross_imagenet_lamm.sh"
_B2N_COCOOP = Source(COOP, "scripts/cocoop/base2new_train.sh", 13)
# The comment "Use the below configuration for: StanfordCars, ..." and the commented-out GPA_MEAN 45 / GPA_STD 5
_GPA_FEW = Source(PROMPTSRC, "configs/trainers/PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml", "45-47")
_GPA_OTHER_FIVE = ("stanford_cars", "oxford_flowers", "fgvc_aircraft", "dtd", "eurosat")
#: CoCoOp's cross-dataset and domain-generalisation targets of an ImageNet source (the last four: the variants).
XD_TARGETS = (
    "caltech101", "dtd", "eurosat", "fgvc_aircraft", "food101", "oxford_flowers", "oxford_pets", "stanford_cars",
    "sun397", "ucf101", "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r",
)  # fmt: skip
_KGCOOP_XD = "KgCoOp/scripts/xd_train.sh"
_PROMPTSRC_XD = (
    Source(PROMPTSRC, "scripts/promptsrc/reproduce_xd.sh", "11,13"),  # CFG ..._ep20_..., LOADEP=20
    Source(PROMPTSRC, "scripts/promptsrc/xd_test.sh", 29),  # --load-epoch 20
)


def _ours(trainer: str, config: str) -> Source:
    return Source(OURS, f"configs/trainers/{trainer}/{config}.yaml")


_PROGRAD_README = "ProGrad.public/README.md"
_LINEAR_PROBE = Source(COOP, "lpclip/feat_extractor.sh", 16)  # --config-file ../configs/trainers/CoOp/rn50_val.yaml


def _prograd(name: str, trainer: str) -> MethodPlan:
    """ProGrad's few-shot runs (RN50): its README's config per shot count, lambda 0.8 at 8 and 16 shots on
    Flowers102, DTD and EuroSAT (its README), 1.0 elsewhere (``scripts/prograd.sh``)."""
    rules = (
        Rule("rn50_ep50", Source(PROGRAD, _PROGRAD_README, 54), shots=(1,)),
        Rule("rn50_ep100", Source(PROGRAD, _PROGRAD_README, 55), shots=(2, 4)),
        Rule("rn50", Source(PROGRAD, _PROGRAD_README, 57), shots=(8, 16)),
    )
    lam = Override(
        f"TRAINER.{trainer.upper()}.GRAD_LAMBDA",
        "0.8",
        Source(PROGRAD, _PROGRAD_README, 52),
        datasets=("oxford_flowers", "dtd", "eurosat"),
        shots=(8, 16),
    )
    return MethodPlan(name, trainer, rules, (lam,))


def _backbone_fewshot(prefix: str, label: str, shots: tuple[int, ...]) -> Protocol:
    def ours(config: str) -> Source:
        return Source(OURS, f"configs/trainers/LAMM_CoOp/{config}.yaml")


def _backbone_fewshot(prefix: str, label: str, shots: tuple[int, ...], backbone: str) -> Protocol:
    return Protocol(
        name=f"coop-fewshot-{prefix}",
        kind="fewshot",
        description=f"CoOp's few-shot protocol on {label}; LAMM alone and CoOp+LAMM at LAMM's schedule (50 epochs at "
        "every shot count) on the same backbone (ours: the LAMM paper ran ViT-B/16 only)",
        source=Source(COOP, _COOP_MD, 13),
        shots=shots,
        backbone=backbone,
        methods=(
            MethodPlan("CoOp", "CoOp", _coop_schedule(prefix, shots)),
            MethodPlan(
                "LAMM",
                "LAMM_CoOp",
                _every(f"{prefix}_ep50_ctxv1_frozen", _ours("LAMM_CoOp", f"{prefix}_ep50_ctxv1_frozen")),
            ),
            MethodPlan(
                "CoOp+LAMM", "LAMM_CoOp", _every(f"{prefix}_ep50_ctxv1", _ours("LAMM_CoOp", f"{prefix}_ep50_ctxv1"))
            ),
            _zeroshot(prefix),
            # CoOp's few-shot figure has a linear-probe curve (RN50, the backbone of lpclip/feat_extractor.py).
            *(
                [MethodPlan("Linear probe CLIP", "LinearProbeCLIP", _every("rn50", _LINEAR_PROBE))]
                if prefix == "rn50"
                else []
            ),
        ),
    )


def _coop_variant(suffix: str, label: str, line: int, overrides: tuple[tuple[str, str], ...]) -> Protocol:
    """One more curve of CoOp's few-shot figure (RN50): the class token in the middle and/or class-specific context
    (``scripts/coop/main.sh`` passes them as ``TRAINER.COOP.CLASS_TOKEN_POSITION`` and ``TRAINER.COOP.CSC``)."""
    main = Source(COOP, "scripts/coop/main.sh", "28,29")
    return Protocol(
        name=f"coop-fewshot-rn50-{suffix}",
        kind="fewshot",
        description=f"CoOp's few-shot protocol on RN50 with {label} (one curve of CoOp's few-shot figure)",
        source=Source(COOP, _COOP_MD, line),
        shots=FEW_SHOTS,
        backbone="RN50",
        methods=(
            MethodPlan(
                "CoOp",
                "CoOp",
                _coop_schedule("rn50"),
                tuple(Override(key, value, Source(COOP, _COOP_MD, line)) for key, value in overrides),
                note=f"{label}; {main}",
            ),
        ),
    )


def _lamm_official(
    name: str, trainer: str, config: str, source: Source, shots: str, shots_source: Source
) -> MethodPlan:
    """A LAMM method with the official preset and the official scripts' ``--shots`` (parameter-alignment weight)."""
    return MethodPlan(name, trainer, _every(config, source), (Override("TRAINER.LAMM.SHOTS", shots, shots_source),))


_LAMM_OFFICIAL_ALONE = _lamm_official(
    "LAMM", "LAMM_CoOp", "vit_b16_ep50_ctxv1_frozen_official", _LAMM_FEW, "1", _LAMM_SHOTS_DEFAULT
)
_KGCOOP_4SHOT = tuple(
    MethodPlan(
        name,
        trainer,
        _every("vit_b16_ep100_ctxv1", Source(KGCOOP, _KGCOOP_XD, 9)),
        (Override(f"TRAINER.{trainer.upper()}.KG_WEIGHT", "8.0", Source(KGCOOP, _KGCOOP_XD, 8)),),
    )
    for name, trainer in (("KgCoOp", "KgCoOp"), ("KgCoOp+LAMM", "LAMM_KgCoOp"))
)
#: LAMM alone and CoOp+LAMM with our defaults (LAMM's 50-epoch configs), beside other methods in several tables.
_OURS_LAMM_COOP = (
    MethodPlan(
        "LAMM", "LAMM_CoOp", _every("vit_b16_ep50_ctxv1_frozen", _ours("LAMM_CoOp", "vit_b16_ep50_ctxv1_frozen"))
    ),
    MethodPlan("CoOp+LAMM", "LAMM_CoOp", _every("vit_b16_ep50_ctxv1", _ours("LAMM_CoOp", "vit_b16_ep50_ctxv1"))),
)
_RANDOM_INIT = Override("TRAINER.LAMM.RANDOM_INIT", "True", Source(LAMM, "train.py", 222))

_COOP_FEW = (
    Protocol(
        name="coop-fewshot",
        kind="fewshot",
        description="CoOp's few-shot protocol (ViT-B/16, 16 random-init context vectors): 50 epochs at 1 shot, "
        "100 at 2 and 4, 200 at 8 and 16; ImageNet 50 at every shot count",
        source=Source(COOP, _COOP_MD, 13),
        shots=FEW_SHOTS,
        methods=(MethodPlan("CoOp", "CoOp", _coop_schedule("vit_b16")), _zeroshot("vit_b16")),
    ),
    _backbone_fewshot("rn50", "RN50 (CoOp's main results)", FEW_SHOTS, "RN50"),
    # CoOp's repository has no 100-epoch RN101 or ViT-B/32 config: those backbones ran at 16 shots only.
    _backbone_fewshot("rn101", "RN101 (16 shots)", (16,), "RN101"),
    _backbone_fewshot("vit_b32", "ViT-B/32 (16 shots)", (16,), "ViT-B/32"),
)
_DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")


def _coop_dg(fewshot: Protocol) -> Protocol:
    """CoOp's robustness to distribution shift on one backbone: the 16-shot ImageNet model of its few-shot
    protocol, epoch 50 (``scripts/coop/eval.sh``), and zero-shot CLIP, tested on the four ImageNet variants."""
    return Protocol(
        name=fewshot.name.replace("fewshot", "dg"),
        kind="xd",
        description=f"CoOp's domain generalisation on {fewshot.backbone}: the 16-shot ImageNet model of "
        f"{fewshot.name} (M=16, end), its epoch 50, and zero-shot CLIP, tested on the four ImageNet variants",
        source=Source(COOP, "scripts/coop/eval.sh", "23,24"),
        datasets=_IMAGENET,
        backbone=fewshot.backbone,
        targets=_DG_TARGETS,
        model_from=fewshot.name,
        load_epoch=50,
        methods=(fewshot.method("CoOp"), fewshot.method("ZeroshotCLIP")),
    )


#: The numeric choices of each baseline's original that are not our trainers' defaults, as overrides. Under the
#: configs' ``PREC fp16`` every original keeps its learned tensors in fp16 (created in CLIP's dtype, or ``.half()``)
#: and steps them with plain SGD (a GradScaler only under ``amp``): ``FP16_LEARNED True``. MaPLe copies one initial
#: projection into every deep layer: ``CLONE_DEEP_PROJ True``. (VPT's configs are fp32, as its original builds CLIP
#: in fp32; KgCoOp's fp16 hand-crafted features are our default.)
_ORIGINAL_NUMERICS: dict[str, tuple[tuple[str, str, Source], ...]] = {
    "CoOp": (("TRAINER.COOP.FP16_LEARNED", "True", Source(COOP, "trainers/coop.py", "89,250")),),
    "CoCoOp": (("TRAINER.COCOOP.FP16_LEARNED", "True", Source(COOP, "trainers/cocoop.py", "86,102,239")),),
    "KgCoOp": (("TRAINER.KGCOOP.FP16_LEARNED", "True", Source(KGCOOP, "KgCoOp/trainers/kgcoop.py", "113,288")),),
    "ProGrad": (
        ("TRAINER.PROGRAD.FP16_LEARNED", "True", Source(PROGRAD, "ProGrad.public/trainers/prograd.py", "103,342")),
    ),
    "MaPLe": (
        ("TRAINER.MAPLE.FP16_LEARNED", "True", Source(MAPLE, "trainers/maple.py", "95,104,257")),
        ("TRAINER.MAPLE.CLONE_DEEP_PROJ", "True", Source(MAPLE, "trainers/maple.py", 117)),
    ),
    "IVLP": (("TRAINER.IVLP.FP16_LEARNED", "True", Source(MAPLE, "trainers/independentVL.py", "93,228")),),
    "PromptSRC": (("TRAINER.PROMPTSRC.FP16_LEARNED", "True", Source(PROMPTSRC, "trainers/promptsrc.py", "99,271")),),
}
#: Protocols of ours (no original ran them): their baselines keep our numerics.
_OURS = ("lamm-fewshot", "lamm-continual")


def _baselines_as_originals(protocol: Protocol) -> Protocol:
    """``protocol`` with each baseline run as its original ran it (:data:`_ORIGINAL_NUMERICS`), unless it is ours."""
    if protocol.name in _OURS:
        return protocol
    methods = tuple(
        replace(plan, overrides=(*plan.overrides, *(Override(*o) for o in _ORIGINAL_NUMERICS.get(plan.trainer, ()))))
        for plan in protocol.methods
    )
    return replace(protocol, methods=methods)


PROTOCOLS: dict[str, Protocol] = {
    p.name: _baselines_as_originals(p)
    for p in (
        *_COOP_FEW[:2],
        _coop_variant("mid", "the class token in the middle", 24, (("TRAINER.COOP.CLASS_TOKEN_POSITION", "middle"),)),
        _coop_variant("csc", "class-specific context", 31, (("TRAINER.COOP.CSC", "True"),)),
        _coop_variant(
            "csc-mid",
            "class-specific context and the class token in the middle",
            38,
            (("TRAINER.COOP.CLASS_TOKEN_POSITION", "middle"), ("TRAINER.COOP.CSC", "True")),
        ),
        *_COOP_FEW[2:],
        *(_coop_dg(p) for p in _COOP_FEW),
        Protocol(
            name="prograd-fewshot",
            kind="fewshot",
            description="ProGrad's few-shot protocol (RN50, 16 context vectors from the dataset's prompt): 50 epochs "
            "at 1 shot, 100 at 2 and 4, 200 at 8 and 16, lambda 0.8 at 8 and 16 shots on Flowers102, DTD and EuroSAT; "
            "ProGrad+LAMM on the same schedule (ours)",
            source=Source(PROGRAD, _PROGRAD_README, 50),
            shots=FEW_SHOTS,
            methods=(_prograd("ProGrad", "ProGrad"), _prograd("ProGrad+LAMM", "LAMM_ProGrad")),
        ),
        Protocol(
            name="lamm-fewshot",
            kind="fewshot",
            description="Ours, not the figure's protocol: LAMM alone, CoOp+LAMM (50 epochs) and MaPLe+LAMM (5 epochs) "
            "with our LAMM defaults (parameter-alignment weight 1/K, every class-name token learnable, fp32 learned "
            "tensors); the baselines and the published figure are those of lamm-official-fewshot",
            source=_LAMM_FEW,
            shots=FEW_SHOTS,
            methods=(
                MethodPlan("LAMM", "LAMM_CoOp", _every("vit_b16_ep50_ctxv1_frozen", _LAMM_FEW)),
                MethodPlan("CoOp+LAMM", "LAMM_CoOp", _every("vit_b16_ep50_ctxv1", _COOP_LAMM_FEW)),
                MethodPlan("MaPLe+LAMM", "LAMM_MaPLe", _every("vit_b16_c2_ep5_batch4_2ctx", _MAPLE_LAMM_FEW)),
            ),
        ),
        Protocol(
            name="lamm-official-fewshot",
            kind="fewshot",
            description="LAMM's few-shot figure, the run that reproduces it: LAMM's few-shot scripts as the official "
            "code ran them (the official preset with the parameter-alignment weight 1/1: the scripts leave --shots "
            "at its default 1), beside the figure's baselines (CoOp on CoOp's schedule, MaPLe 5 epochs, zero-shot "
            "CLIP)",
            source=_LAMM_FEW,
            shots=FEW_SHOTS,
            published="lamm_fewshot_figure.csv",
            methods=(
                _LAMM_OFFICIAL_ALONE,
                _lamm_official(
                    "CoOp+LAMM", "LAMM_CoOp", "vit_b16_ep50_ctxv1_official", _COOP_LAMM_FEW, "1", _LAMM_SHOTS_DEFAULT
                ),
                _lamm_official(
                    "MaPLe+LAMM",
                    "LAMM_MaPLe",
                    "vit_b16_c2_ep5_batch4_2ctx_official",
                    _MAPLE_LAMM_FEW,
                    "1",
                    _LAMM_SHOTS_DEFAULT,
                ),
                MethodPlan(
                    "CoOp",
                    "CoOp",
                    _coop_schedule("vit_b16"),
                    note="the LAMM authors ran CoOp in MaPLe's repository, whose CoOp configs are CoOp's",
                ),
                MethodPlan("MaPLe", "MaPLe", _every("vit_b16_c2_ep5_batch4_2ctx", _MAPLE_LAMM_FEW)),
                _zeroshot("vit_b16", note="the figure's 0-shot point"),
            ),
        ),
        Protocol(
            name="lamm-official-random-init",
            kind="fewshot",
            description="LAMM's label-initialisation ablation: lamm-official-fewshot with the label embeddings drawn "
            "from N(0, 0.02^2) instead of the class names' token embeddings (the official --random-init)",
            source=Source(LAMM, "train.py", 222),
            shots=FEW_SHOTS,
            methods=tuple(
                MethodPlan(name, trainer, _every(config, source), (*plan_shots, _RANDOM_INIT))
                for name, trainer, config, source, plan_shots in (
                    (
                        "LAMM",
                        "LAMM_CoOp",
                        "vit_b16_ep50_ctxv1_frozen_official",
                        _LAMM_FEW,
                        (Override("TRAINER.LAMM.SHOTS", "1", _LAMM_SHOTS_DEFAULT),),
                    ),
                    (
                        "CoOp+LAMM",
                        "LAMM_CoOp",
                        "vit_b16_ep50_ctxv1_official",
                        _COOP_LAMM_FEW,
                        (Override("TRAINER.LAMM.SHOTS", "1", _LAMM_SHOTS_DEFAULT),),
                    ),
                )
            ),  # fmt: skip
        ),
        Protocol(
            name="promptsrc-fewshot",
            kind="fewshot",
            description="PromptSRC's few-shot protocol: 50 epochs, GPA mean 30 std 30 on ImageNet, Caltech101, "
            "OxfordPets, Food101, UCF101, SUN397 and mean 45 std 5 on the other five datasets",
            source=Source(PROMPTSRC, "scripts/promptsrc/few_shot.sh", 8),
            shots=FEW_SHOTS,
            methods=tuple(
                MethodPlan(
                    name,
                    trainer,
                    _every(
                        "vit_b16_c2_ep50_batch4_4+4ctx_few_shot", Source(PROMPTSRC, "scripts/promptsrc/few_shot.sh", 8)
                    ),
                    (
                        Override(f"TRAINER.{trainer.upper()}.GPA_MEAN", "45.0", _GPA_FEW, datasets=_GPA_OTHER_FIVE),
                        Override(f"TRAINER.{trainer.upper()}.GPA_STD", "5.0", _GPA_FEW, datasets=_GPA_OTHER_FIVE),
                    ),
                )
                for name, trainer in (("PromptSRC", "PromptSRC"), ("PromptSRC+LAMM", "LAMM_PromptSRC"))
            ),
        ),
        Protocol(
            name="kgcoop-fewshot",
            kind="fewshot",
            description="KgCoOp's 4-shot table: 4 shots of all classes of each of the eleven datasets, 100 epochs, "
            "weight 8.0 (KgCoOp's xd_train.sh); KgCoOp+LAMM with the same config",
            source=Source(KGCOOP, _KGCOOP_XD, 15),
            shots=(4,),
            methods=(*_KGCOOP_4SHOT, _zeroshot("vit_b16", note="the table's zero-shot CLIP row")),
        ),
        Protocol(
            name="cocoop-base2new",
            kind="base2new",
            description="CoCoOp's base-to-new protocol (16 shots of the base half, tested on base and new), each "
            "method with its own repository's base-to-new config; the LAMM rows are ours (the LAMM repository has "
            "no base-to-new test: its set-1 script trains the base half and never tests the new one), LAMM alone "
            "and CoOp+LAMM with the LAMM repository's 50-epoch config",
            source=_B2N_COCOOP,
            published="published_base2new.csv",
            methods=(
                MethodPlan(
                    "CoOp",
                    "CoOp",
                    (
                        Rule(
                            "vit_b16_ep50_ctxv1",
                            Source(COOP, "scripts/cocoop/base2new_train.sh", 15),
                            datasets=_IMAGENET,
                        ),
                        Rule("vit_b16_ctxv1", Source(COOP, "scripts/cocoop/base2new_train.sh", 14)),
                    ),
                ),
                MethodPlan("CoCoOp", "CoCoOp", _every("vit_b16_c4_ep10_batch1_ctxv1", _B2N_COCOOP)),
                MethodPlan(
                    "KgCoOp",
                    "KgCoOp",
                    _every("vit_b16_ep100_ctxv1", Source(KGCOOP, "KgCoOp/scripts/base2new_train.sh", 11)),
                ),
                *(
                    MethodPlan(
                        name,
                        trainer,
                        (
                            Rule("vit_b16_ep50", Source(PROGRAD, _PROGRAD_README, 132), datasets=_IMAGENET),
                            Rule(
                                "vit_b16_ep100", Source(PROGRAD, "ProGrad.public/scripts/base2new_train_prograd.sh", 10)
                            ),
                        ),
                        note="ProGrad's base-to-new script runs RN50 at 4 shots; here its config on ViT-B/16 at the "
                        "table's 16 shots, the setting of KgCoOp's table (whose ProGrad row names no config)",
                    )
                    for name, trainer in (("ProGrad", "ProGrad"), ("ProGrad+LAMM", "LAMM_ProGrad"))
                ),
                MethodPlan(
                    "MaPLe",
                    "MaPLe",
                    _every("vit_b16_c2_ep5_batch4_2ctx", Source(MAPLE, "scripts/maple/base2new_train_maple.sh", 12)),
                ),
                MethodPlan(
                    "VPT",
                    "VPT",
                    _every("vit_b16_c2_ep5_batch4_4", Source(MAPLE, "scripts/vpt/base2new_train_vpt.sh", 12)),
                ),
                MethodPlan(
                    "IVLP",
                    "IVLP",
                    _every(
                        "vit_b16_c2_ep5_batch4_2+2ctx",
                        Source(MAPLE, "scripts/independent-vlp/base2new_train_ivlp.sh", 12),
                    ),
                ),
                MethodPlan(
                    "PromptSRC",
                    "PromptSRC",
                    _every(
                        "vit_b16_c2_ep20_batch4_4+4ctx", Source(PROMPTSRC, "scripts/promptsrc/base2new_train.sh", 10)
                    ),
                ),
                *_OURS_LAMM_COOP,
                MethodPlan(
                    "LAMM (official)",
                    "LAMM_CoOp",
                    _every("vit_b16_ep50_ctxv1_frozen_official", _LAMM_SET1),
                    (Override("TRAINER.LAMM.SHOTS", "16", _LAMM_SET_SHOTS),),
                    note="the official set-1 script's training (--shots 16: parameter-alignment weight 1/16), tested "
                    "on the new half as well (ours)",
                ),
                MethodPlan(
                    "CoOp+LAMM (official)",
                    "LAMM_CoOp",
                    _every("vit_b16_ep50_ctxv1_official", _LAMM_SET1),
                    (Override("TRAINER.LAMM.SHOTS", "16", _LAMM_SET_SHOTS),),
                    note="as LAMM (official)",
                ),
                MethodPlan(
                    "MaPLe+LAMM",
                    "LAMM_MaPLe",
                    _every("vit_b16_c2_ep5_batch4_2ctx", Source(MAPLE, "scripts/maple/base2new_train_maple.sh", 12)),
                ),
                MethodPlan("CoCoOp+LAMM", "LAMM_CoCoOp", _every("vit_b16_c4_ep10_batch1_ctxv1", _B2N_COCOOP)),
                MethodPlan(
                    "KgCoOp+LAMM",
                    "LAMM_KgCoOp",
                    _every("vit_b16_ep100_ctxv1", Source(KGCOOP, "KgCoOp/scripts/base2new_train.sh", 11)),
                ),
                MethodPlan(
                    "PromptSRC+LAMM",
                    "LAMM_PromptSRC",
                    _every(
                        "vit_b16_c2_ep20_batch4_4+4ctx", Source(PROMPTSRC, "scripts/promptsrc/base2new_train.sh", 10)
                    ),
                ),
                _zeroshot("vit_b16", note="base and new halves evaluated with DATASET.SUBSAMPLE_CLASSES base / new"),
            ),
        ),
        Protocol(
            name="cocoop-xd",
            kind="xd",
            description="CoCoOp's cross-dataset and domain-generalisation protocol: all classes of ImageNet, 16 shots, "
            "tested on the ten other datasets and the four ImageNet variants; each method with its repository's "
            "cross-dataset config, the LAMM rows with ours",
            source=Source(COOP, "scripts/cocoop/xd_train.sh", 13),
            datasets=("imagenet",),
            targets=XD_TARGETS,
            methods=(
                MethodPlan(
                    "CoOp", "CoOp", _every("vit_b16_ep50_ctxv1", Source(COOP, "scripts/cocoop/xd_train.sh", 14))
                ),
                MethodPlan(
                    "CoCoOp",
                    "CoCoOp",
                    _every("vit_b16_c4_ep10_batch1_ctxv1", Source(COOP, "scripts/cocoop/xd_train.sh", 13)),
                ),
                MethodPlan(
                    "MaPLe",
                    "MaPLe",
                    _every(
                        "vit_b16_c2_ep5_batch4_2ctx_cross_datasets",
                        Source(MAPLE, "scripts/maple/xd_train_maple.sh", 12),
                    ),
                ),
                MethodPlan(
                    "PromptSRC",
                    "PromptSRC",
                    _every("vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets", _PROMPTSRC_XD[0]),
                    note="xd_train.sh names vit_b16_c2_ep5_batch4_4+4ctx_cross_datasets, a file the repository does "
                    f"not have; the 20-epoch config is the one its test loads ({_PROMPTSRC_XD[1]}: --load-epoch 20)",
                ),
                *_OURS_LAMM_COOP,
                MethodPlan(
                    "MaPLe+LAMM",
                    "LAMM_MaPLe",
                    _every(
                        "vit_b16_c2_ep5_batch4_2ctx_cross_datasets",
                        Source(MAPLE, "scripts/maple/xd_train_maple.sh", 12),
                    ),
                ),
                MethodPlan(
                    "PromptSRC+LAMM",
                    "LAMM_PromptSRC",
                    _every("vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets", _PROMPTSRC_XD[0]),
                ),
                _zeroshot("vit_b16", note="the source and every target evaluated once"),
            ),
        ),
        Protocol(
            name="lamm-official-dg",
            kind="xd",
            description="LAMM's domain generalisation as the official code ran it: the 16-shot ImageNet model of "
            "lamm-official-fewshot (LAMM alone), its epoch 50, tested on ImageNet-V2 and ImageNet-Sketch (the "
            "script's imagenet-sketch names no config; imagenet_sketch is meant); nothing is trained",
            source=Source(LAMM, _LAMM_DG, 23),
            datasets=("imagenet",),
            targets=("imagenet_sketch", "imagenetv2"),
            model_from="lamm-official-fewshot",
            load_epoch=50,
            methods=(_LAMM_OFFICIAL_ALONE,),
        ),
        Protocol(
            name="kgcoop-xd",
            kind="xd",
            description="KgCoOp's cross-dataset and domain-generalisation runs: its 4-shot ImageNet model "
            "(kgcoop-fewshot, the model KgCoOp's xd_train.sh trains) tested on CoCoOp's 14 targets (the repository "
            "has no test script); nothing is trained",
            source=Source(KGCOOP, _KGCOOP_XD, 17),
            datasets=("imagenet",),
            shots=(4,),
            targets=XD_TARGETS,
            model_from="kgcoop-fewshot",
            methods=_KGCOOP_4SHOT,
        ),
        Protocol(
            name="lamm-official-incremental",
            kind="continual",
            description='The official repository\'s "incremental training": each method (the official repository '
            "runs LAMM alone; the others for the comparison, with the configs LAMM's scripts give them) trained on "
            "the base half and, separately, on the new half of each dataset; each half is tested on itself, with no "
            "combined evaluation",
            source=_LAMM_SET1,
            sets=("base", "new"),
            methods=(
                _lamm_official(
                    "LAMM (official)",
                    "LAMM_CoOp",
                    "vit_b16_ep50_ctxv1_frozen_official",
                    _LAMM_SET1,
                    "16",
                    _LAMM_SET_SHOTS,
                ),
                _lamm_official(
                    "CoOp+LAMM (official)",
                    "LAMM_CoOp",
                    "vit_b16_ep50_ctxv1_official",
                    _COOP_LAMM_FEW,
                    "16",
                    _LAMM_SET_SHOTS,
                ),
                _lamm_official(
                    "MaPLe+LAMM (official)",
                    "LAMM_MaPLe",
                    "vit_b16_c2_ep5_batch4_2ctx_official",
                    _MAPLE_LAMM_FEW,
                    "16",
                    _LAMM_SET_SHOTS,
                ),
                MethodPlan("CoOp", "CoOp", _every("vit_b16_ep50_ctxv1", _COOP_LAMM_FEW)),
                MethodPlan("MaPLe", "MaPLe", _every("vit_b16_c2_ep5_batch4_2ctx", _MAPLE_LAMM_FEW)),
            ),
        ),
        Protocol(
            name="lamm-continual",
            kind="continual",
            description="Ours (the paper's continual protocol is not published): class-incremental stages, each "
            "stage trained from the last with earlier labels frozen and one evaluation over every class seen "
            "(scripts/lamm/continual.sh, configs/continual/); CoOp and MaPLe train their shared prompts in every "
            "stage (they have nothing else to learn), the LAMM methods freeze theirs after stage 1",
            source=Source(OURS, "scripts/lamm/continual.sh"),
            datasets=("cifar100", "imagenet_r"),
            methods=(
                *_OURS_LAMM_COOP,
                MethodPlan(
                    "MaPLe+LAMM",
                    "LAMM_MaPLe",
                    _every("vit_b16_c2_ep5_batch4_2ctx", _ours("LAMM_MaPLe", "vit_b16_c2_ep5_batch4_2ctx")),
                ),
                MethodPlan(
                    "CoOp",
                    "CoOp",
                    _every("vit_b16_ep50_ctxv1", _ours("CoOp", "vit_b16_ep50_ctxv1")),
                    env=(("SHARED", "train"),),
                ),
                MethodPlan(
                    "MaPLe",
                    "MaPLe",
                    _every("vit_b16_c2_ep5_batch4_2ctx", _ours("MaPLe", "vit_b16_c2_ep5_batch4_2ctx")),
                    env=(("SHARED", "train"),),
                ),
            ),
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; a ``KeyError`` lists the known ones."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r}: choose from {', '.join(PROTOCOLS)}") from None


def resolve(protocol: str, method: str, dataset: str, shots: int) -> Choice:
    """The config and overrides ``method`` of ``protocol`` runs with on ``dataset`` at ``shots`` shots.

    Raises:
        KeyError: Unknown protocol or method.
        ValueError: The protocol has no config for this dataset or shot count.
    """
    proto = get_protocol(protocol)
    plan = proto.method(method)
    rule = next((r for r in plan.rules if r.matches(dataset, shots)), None)
    if rule is None or shots not in proto.shots:
        raise ValueError(
            f"protocol {protocol!r} runs {method} at {', '.join(map(str, proto.shots))} shots; it has no config for "
            f"{dataset} at {shots} shots"
        )
    overrides = [o for o in plan.overrides if o.matches(dataset, shots)]
    return Choice(
        protocol=proto.name,
        method=plan.name,
        trainer=plan.trainer,
        config=rule.config,
        overrides=tuple((o.key, o.value) for o in overrides),
        sources=(rule.source, *(o.source for o in overrides)),
        env=plan.env,
    )


def _tested(proto: Protocol) -> str:
    """What a cross-dataset protocol tests, for the table: its targets and, without training, whose model."""
    if not proto.targets:
        return ""
    model = f"the model of `{proto.model_from}`" if proto.model_from else "trained on " + ", ".join(proto.datasets)
    epoch = f" at epoch {proto.load_epoch}" if proto.load_epoch else ""
    return f" ({model}{epoch}, tested on {len(proto.targets)} targets)"


def protocols_markdown() -> str:
    """The table of protocols: one line per protocol and method, its configs (with shots and datasets) and
    overrides, and the sources (docs/RUN.md holds this table)."""
    rows = []
    for proto in PROTOCOLS.values():
        for plan in proto.methods:
            configs = []
            for rule in plan.rules:
                where = []
                if rule.datasets is not None:
                    where.append(", ".join(rule.datasets))
                if rule.shots is not None:
                    where.append(f"{'/'.join(map(str, rule.shots))} shots")
                configs.append(f"`{rule.config}`" + (f" ({'; '.join(where)})" if where else ""))
            overrides = [
                f"`{o.key} {o.value}`" + (f" ({', '.join(o.datasets)})" if o.datasets else "") for o in plan.overrides
            ]
            sources = dict.fromkeys(
                str(s) for s in (*(r.source for r in plan.rules), *(o.source for o in plan.overrides))
            )
            rows.append(
                [
                    f"`{proto.name}`",
                    proto.kind + _tested(proto),
                    plan.name,
                    plan.trainer,
                    "; ".join(configs) + ("; " + "; ".join(overrides) if overrides else ""),
                    "0 (evaluation only)" if plan.eval_only else "/".join(map(str, proto.shots)),
                    "; ".join(sources),
                ]
            )
    header = ["protocol", "table", "method", "trainer", "configs and overrides", "shots", "source"]
    return markdown_table(header, rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Print the benchmark protocols (docs/RUN.md, 'Protocols').")
    parser.add_argument("protocol", nargs="?", help="show one protocol: its description and each method's plan")
    args = parser.parse_args(argv)
    if args.protocol is None:
        print(protocols_markdown())
        return 0
    try:
        proto = get_protocol(args.protocol)
    except KeyError as e:
        parser.error(str(e.args[0]))
    print(f"{proto.name} ({proto.kind}): {proto.description}.\nsource: {proto.source}")
    if proto.targets:
        print(f"targets: {' '.join(proto.targets)}" + _tested(proto))
    for plan in proto.methods:
        print(f"\n{plan.name} ({plan.trainer})" + (f": {plan.note}" if plan.note else ""))
        for ds in proto.datasets:
            line = []
            for k in proto.shots[:1] if plan.eval_only else proto.shots:
                c = resolve(proto.name, plan.name, ds, k)
                shots = "evaluation only" if plan.eval_only else k
                line.append(f"{shots}: {c.config}" + (f" {' '.join(c.opts())}" if c.overrides else ""))
            print(f"  {ds}: " + ", ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
