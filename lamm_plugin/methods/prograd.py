"""ProGrad: prompt-aligned gradient (Zhu et al., "Prompt-aligned Gradient for Prompt Tuning", ICCV 2023).

CoOp's prompt, trained on cross-entropy whose gradient is kept from conflicting with the "general direction": the
gradient of a distillation term ``prograd_kl`` towards zero-shot CLIP's predictions (frozen CLIP's features of the
dataset's hand-crafted prompt). For each learned tensor, where the two gradients point apart (negative dot
product), the update is the cross-entropy gradient less ``lambda`` times its component along the general one;
otherwise it is the cross-entropy gradient unchanged. The distillation term itself is never added to the loss.
This is :meth:`ProGrad.backward`, the method's gradient hook (the original: ``prograd_backward_and_update`` of
its Dassl fork's trainer, ``trainers/prograd.py`` of BeierZhu/Prompt-align).

With LAMM, the projected gradient is that of LAMM's whole loss (``total``: cross-entropy and LAMM's alignment
terms), and the general direction stays the distillation towards zero-shot CLIP; the label rows are projected
like the context (README, "Fidelity"). Without LAMM, ``total`` is the cross-entropy: the original's step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lamm_plugin.backbone import CLIPBundle, clip_in_precision
from lamm_plugin.feature_cache import cached_text_features
from lamm_plugin.methods.base import StepFeatures, register_method
from lamm_plugin.methods.coop import CoOp, CoOpConfig
from lamm_plugin.tokens import clean_classname

#: ProGrad's hand-crafted prompts (``CUSTOM_TEMPLATES`` of its ``trainers/prograd.py``): the teacher's prompts and,
#: with ``template_init``, the initial context.
PROGRAD_TEMPLATES: dict[str, str] = {
    "OxfordPets": "a type of pet, a photo of a {}.",
    "OxfordFlowers": "a type of flower, a photo of a {}.",
    "FGVCAircraft": "a type of aircraft, a photo of a {}.",
    "DescribableTextures": "a texture of {}.",
    "EuroSAT": "a centered satellite photo of {}.",
    "Food101": "a type of food, a photo of {}.",
    "UCF101": "a photo of a person doing {}.",
}
#: The template of every other dataset (StanfordCars, SUN397, Caltech101, ImageNet and its variants).
PROGRAD_DEFAULT_TEMPLATE = "a photo of a {}."


@dataclass
class ProGradConfig(CoOpConfig):
    """ProGrad (Zhu et al., ICCV 2023): CoOp's prompt with the cross-entropy gradient projected where it conflicts
    with the gradient of a distillation towards zero-shot CLIP.

    Attributes:
        template_init: The context starts as the hand-crafted prompt (ProGrad's ``CTX_INIT True``): its words fill
            the last context slots, the slots before them start at zero (``n_ctx`` must be at least its number of
            words). Ignored when ``ctx_init`` gives the words (CoOp's initialisation).
        template: The hand-crafted template with ``{}`` of the teacher (and of ``template_init``); empty picks the
            dataset's (:data:`PROGRAD_TEMPLATES`).
        dataset: Dataset name that picks the template when ``template`` is empty.
        grad_lambda: ``lambda`` of the projection (``LOSS.LAMBDA``; 1 removes the conflicting component, the paper
            used 0.8 for 8 and 16 shots on Flowers102, DTD and EuroSAT).
        kl_temperature: Temperature ``T`` of the distillation (``LOSS.T``).
        teacher_precision: What computes zero-shot CLIP's logits: ``"fp32"``, as the original (a second CLIP that
            it floats whatever the run's precision: in an fp16 or bf16 run, a float32 copy of the run's CLIP, which
            encodes each batch's images once more); ``"run"``: the run's CLIP in its precision, with the image
            features of the step.
    """

    n_ctx: int = 16
    template_init: bool = True
    template: str = ""
    dataset: str = ""
    grad_lambda: float = 1.0
    kl_temperature: float = 1.0
    teacher_precision: str = "fp32"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_temperature <= 0:
            raise ValueError(f"kl_temperature must be > 0, got {self.kl_temperature}.")
        if self.teacher_precision not in ("fp32", "run"):
            raise ValueError(f"teacher_precision must be 'fp32' or 'run', not {self.teacher_precision!r}.")
        if self.template_init and not self.ctx_init and self.class_token_position != "end":
            raise ValueError("template_init places the prompt before the class name: use class_token_position end.")


def project_conflicting(grad: torch.Tensor, general: torch.Tensor, grad_lambda: float) -> torch.Tensor:
    """``grad`` less ``grad_lambda`` times its component along ``general`` where their dot product is negative,
    else ``grad`` (ProGrad's rule for one tensor). Reads nothing on the host; a zero ``general`` leaves ``grad``, a
    non-finite one makes the result non-finite (an overflow of scaled gradients then shows)."""
    unit = general / torch.linalg.vector_norm(general)
    along = torch.dot(grad.flatten(), unit.flatten())
    projected = grad - grad_lambda * along * unit
    return torch.where(along < 0, projected, grad) + 0 * general.sum()


@register_method
class ProGrad(CoOp):
    """CoOp with ProGrad's gradient projection (``backward``) against the distillation ``prograd_kl``."""

    name = "prograd"
    display_name = "ProGrad"
    config_class = ProGradConfig

    def __init__(self, cfg: ProGradConfig, clip: CLIPBundle, classnames: Sequence[str]) -> None:
        super().__init__(cfg, clip, classnames)
        object.__setattr__(self, "_clip", clip)  # frozen, not a submodule: never in parameters() or checkpoints
        self._teacher: dict[tuple, torch.Tensor] = {}
        self._fp32: Optional[CLIPBundle] = None  # the float32 teacher of a low-precision run, made on first use
        if cfg.template_init and not cfg.ctx_init.replace("_", " ").strip():
            # The original: "X" placeholders, then the prompt's words; the context is the first n_ctx tokens of
            # that text (zeros, then the first embeddings of the prompt's tokens), the rest follows the context.
            init = self.hand_crafted_template().replace(" {}.", "").replace("_", " ")
            words = init.split(" ")
            if len(words) > cfg.n_ctx:
                raise ValueError(f"n_ctx {cfg.n_ctx} is fewer than the {len(words)} words of {init!r}.")
            vectors = clip.token_embeddings(init)[: len(words)]
            vectors = torch.cat([vectors.new_zeros(cfg.n_ctx - len(words), vectors.shape[1]), vectors])
            if cfg.csc:
                vectors = vectors.expand(len(classnames), -1, -1).clone()
            self.words = ["X"] * (cfg.n_ctx - len(words)) + words
            self.n_ctx = cfg.n_ctx
            self.ctx = nn.Parameter(vectors, requires_grad=cfg.train_ctx)

    def hand_crafted_template(self) -> str:
        return self.cfg.template or PROGRAD_TEMPLATES.get(self.cfg.dataset, PROGRAD_DEFAULT_TEMPLATE)

    def teacher(self) -> CLIPBundle:
        """The CLIP of the zero-shot teacher: the run's, or (``teacher_precision "fp32"`` in a low-precision run) a
        float32 copy of it, made once."""
        clip = self._clip
        if self.cfg.teacher_precision == "run" or clip.dtype == torch.float32:
            return clip
        if self._fp32 is None or self._fp32.device != clip.device:
            self._fp32 = clip_in_precision(clip, "fp32")
        return self._fp32

    def teacher_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """Zero-shot CLIP's L2-normalised text features ``[C, E]`` of the hand-crafted prompts (once per class set,
        device and precision)."""
        clip = self.teacher()
        key = (tuple(classnames), clip.device, clip.dtype)
        if key not in self._teacher:
            texts = [self.hand_crafted_template().format(clean_classname(n)) for n in classnames]
            inputs = {"what": "encode_texts", "texts": texts}
            features = cached_text_features(self.feature_cache, clip.model, inputs, lambda: clip.encode_texts(texts))
            self._teacher = {key: F.normalize(features, dim=-1)}
        return self._teacher[key]

    def regularization(self, step: StepFeatures) -> dict[str, tuple[Optional[float], torch.Tensor]]:
        # Zero-shot CLIP's logits: the frozen, unprompted image features against the hand-crafted prompts.
        clip = self.teacher()
        text = self.teacher_features(step.classnames)
        if clip is self._clip:
            teacher = step.logit_scale * step.image.detach() @ text.to(step.image).t()
        else:  # the original's float32 zero-shot CLIP on the batch
            with torch.no_grad():
                image = F.normalize(clip.model.encode_image(step.images.to(clip.dtype)), dim=-1)
                teacher = clip.model.logit_scale.exp() * image @ text.t()
        t = self.cfg.kl_temperature
        target = F.softmax(teacher / t, dim=-1)
        kl = -(target * F.log_softmax(step.logits / t, dim=-1)).sum(1).mean() * t * t
        return {"prograd_kl": (None, kl)}  # not in total: the general direction of backward()

    def backward(
        self,
        losses: dict[str, torch.Tensor],
        params: Sequence[nn.Parameter],
        scale: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        params = list(params)
        general = torch.autograd.grad(scale(losses["prograd_kl"]), params, retain_graph=True, allow_unused=True)
        grads = torch.autograd.grad(scale(losses["total"]), params, allow_unused=True)
        for param, grad, direction in zip(params, grads, general):
            if grad is None:
                continue
            if direction is not None:
                grad = project_conflicting(grad, direction, self.cfg.grad_lambda)
            param.grad = grad if param.grad is None else param.grad + grad
