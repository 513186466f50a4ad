"""LAMM's hierarchical loss (Gao et al., AAAI 2024, arXiv 2312.08212, section 3.3).

Cross-entropy plus three alignment terms between the prompts with learned labels and the same prompts with
CLIP's original class-name embeddings ("reference"):

- parameter space: squared L2 distance of the label rows to their initial values, sum-reduced;
- feature space: ``1 - cos`` between a sample's class text feature and its reference, averaged over the batch's
  samples, and zero when the batch holds a single class;
- logit space: distillation at temperature ``T`` with the learned-label logits as the soft target, gradients
  through both sides, scaled by ``T**2``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lamm_plugin.config import LAMMConfig


def parameter_alignment(rows: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    """``sum((rows - init)**2)`` over all label rows."""
    return (rows - init.to(rows)).square().sum()


def feature_alignment(text: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``1 - cos(text[y], reference[y])`` (reference detached).

    Args:
        text: ``[C, E]`` class text features with learned labels, or ``[B, C, E]`` per image (CoCoOp).
        reference: ``[C, E]`` (or ``[B, C, E]``) class text features with the original labels.
        labels: ``[B]`` class of each sample.

    Returns:
        A scalar; zero when every sample of the batch has the same class (nothing to tell apart).
    """
    if text.dim() == 3:  # per image: sample i's own prompt of its class
        rows = torch.arange(len(labels), device=labels.device)
        cos = F.cosine_similarity(text[rows, labels], reference[rows, labels].detach(), dim=-1)
    else:
        cos = F.cosine_similarity(text[labels], reference[labels].detach(), dim=-1)
    several_classes = (labels != labels[0]).any()
    return torch.where(several_classes, (1 - cos).mean(), cos.new_zeros(()))


def logit_alignment(logits: torch.Tensor, reference_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Distillation ``T**2 * CE(reference / T, softmax(logits / T))``, batch mean, gradients through both."""
    target = F.softmax(logits / temperature, dim=-1)
    return F.cross_entropy(reference_logits / temperature, target) * temperature**2


class HierarchicalLoss(nn.Module):
    """Cross-entropy plus LAMM's alignment terms; returns a dict of named terms.

    Args:
        cfg: Weights and temperature.
        shots: ``K`` of the parameter-alignment weight ``cfg.param_scale / K`` (``cfg.shots`` wins when set).
    """

    def __init__(self, cfg: LAMMConfig, shots: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        k = cfg.shots if cfg.shots > 0 else shots
        self.param_weight = cfg.param_scale / k if k > 0 else cfg.param_scale

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        reference_logits: Optional[torch.Tensor] = None,
        text: Optional[torch.Tensor] = None,
        reference_text: Optional[torch.Tensor] = None,
        rows: Optional[torch.Tensor] = None,
        init: Optional[torch.Tensor] = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms.

        Args:
            logits: ``[B, C]`` logits with learned labels.
            labels: ``[B]`` targets.
            reference_logits: ``[B, C]`` logits with the original labels; ``None`` gives cross-entropy only.
            text: ``[C, E]`` (per image: ``[B, C, E]``) text features with learned labels.
            reference_text: Text features with the original labels, shaped like ``text``.
            rows: ``[R, width]`` label rows used in this step.
            init: ``[R, width]`` their initial values.

        Returns:
            ``{"ce", "total"}``, plus ``"param_alignment"``, ``"feature_alignment"``, ``"logit_alignment"`` (each
            unweighted) when the reference is given.
        """
        ce = F.cross_entropy(logits, labels)
        if reference_logits is None:
            return {"ce": ce, "total": ce}
        cfg = self.cfg
        param = parameter_alignment(rows, init) if rows is not None and rows.numel() else ce.new_zeros(())
        feature = feature_alignment(text, reference_text, labels)
        logit = logit_alignment(logits, reference_logits, cfg.temperature)
        total = ce + self.param_weight * param + cfg.feature_weight * feature + cfg.logit_weight * logit
        return {
            "ce": ce,
            "param_alignment": param,
            "feature_alignment": feature,
            "logit_alignment": logit,
            "total": total,
        }
