"""LAMM's loss terms against formulas written out here, on small fixed inputs: values, gradients, and which side
of each term receives gradients (paper section 3.3; docs/DESIGN.md section 1)."""

from __future__ import annotations

import math

import pytest
import torch

from lamm_plugin import CoOpConfig, LAMMConfig, build_model
from lamm_plugin.losses import HierarchicalLoss, feature_alignment, logit_alignment, parameter_alignment

T = 2.0


def _fixed(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _softmax(x):
    e = (x - x.max(dim=-1, keepdim=True).values).exp()
    return e / e.sum(dim=-1, keepdim=True)


def _cos(a, b):
    return (a * b).sum(-1) / (a.square().sum(-1).sqrt() * b.square().sum(-1).sqrt())


def _kd(student, teacher, t):
    """``t**2 * mean_b sum_c -softmax(teacher/t) * log softmax(student/t)``, from the softmax definition."""
    p = _softmax(teacher / t)
    log_q = (student / t) - (student / t).exp().sum(-1, keepdim=True).log()
    return t * t * (-(p * log_q).sum(-1)).mean()


def test_parameter_alignment_value_and_gradient():
    rows, init = _fixed(5, 4, seed=0).requires_grad_(), _fixed(5, 4, seed=1)
    value = parameter_alignment(rows, init)
    expected = sum(float(r - i) ** 2 for r, i in zip(rows.detach().flatten(), init.flatten()))
    assert value.item() == pytest.approx(expected, rel=1e-12)
    (grad,) = torch.autograd.grad(value, rows)
    torch.testing.assert_close(grad, 2 * (rows.detach() - init))


def test_feature_alignment_value_and_only_the_learned_side_gets_gradients():
    text, reference = _fixed(4, 6, seed=2).requires_grad_(), _fixed(4, 6, seed=3).requires_grad_()
    labels = torch.tensor([0, 2, 2, 3, 1])
    value = feature_alignment(text, reference, labels)
    t, r = text.detach(), reference.detach()
    expected = sum(1 - float(t[y] @ r[y]) / float(t[y].norm() * r[y].norm()) for y in labels.tolist()) / 5
    assert value.item() == pytest.approx(expected, rel=1e-12)
    g_text, g_ref = torch.autograd.grad(value, [text, reference], allow_unused=True)
    assert g_ref is None, "the reference side of the feature term must be detached"
    # d(1 - cos(a, b))/da = -(b/|b| - cos * a/|a|) / |a|, summed over the samples of each class, over B.
    want = torch.zeros_like(t)
    for y in labels.tolist():
        a, b = t[y], r[y]
        cos = (a @ b) / (a.norm() * b.norm())
        want[y] += -(b / b.norm() - cos * a / a.norm()) / a.norm() / len(labels)
    torch.testing.assert_close(g_text, want)


def test_feature_alignment_is_zero_for_a_single_class_batch_only():
    text, reference = _fixed(3, 6, seed=4), _fixed(3, 6, seed=5)
    assert feature_alignment(text, reference, torch.tensor([1, 1, 1])).item() == 0
    two = feature_alignment(text, reference, torch.tensor([1, 1, 2]))
    want = (2 * (1 - _cos(text[1], reference[1])) + (1 - _cos(text[2], reference[2]))) / 3
    torch.testing.assert_close(two, want)


def test_logit_alignment_value_temperature_squared_and_gradients_through_both_sides():
    logits, reference = (3 * _fixed(4, 5, seed=6)).requires_grad_(), (3 * _fixed(4, 5, seed=7)).requires_grad_()
    value = logit_alignment(logits, reference, T)
    # The learned-label logits are the soft target; the reference logits are the student.
    lg, r = logits.detach(), reference.detach()
    expected = 0.0
    for b in range(4):
        p = [math.exp(v / T) for v in lg[b].tolist()]
        q = [math.exp(v / T) for v in r[b].tolist()]
        expected += -sum(pi / sum(p) * math.log(qi / sum(q)) for pi, qi in zip(p, q))
    expected *= T**2 / 4
    assert value.item() == pytest.approx(expected, rel=1e-10)
    g_logits, g_ref = torch.autograd.grad(value, [logits, reference], allow_unused=True)
    assert g_ref is not None and g_logits is not None, "the distillation term trains both sides"
    # d/dr: T**2 * (softmax(r/T) - softmax(l/T)) / T / B
    torch.testing.assert_close(g_ref, T * (_softmax(r / T) - _softmax(lg / T)) / 4)
    # d/dl: -T**2 / B * d softmax(l/T)/dl . log softmax(r/T), with d softmax = (diag(p) - p p^T) / T
    p, log_q = _softmax(lg / T), (r / T).log_softmax(-1)
    jac = (torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)) / T
    torch.testing.assert_close(g_logits, -(T**2) / 4 * (jac @ log_q.unsqueeze(-1)).squeeze(-1))


def test_logit_alignment_scales_with_temperature_squared():
    logits, reference = _fixed(3, 4, seed=8), _fixed(3, 4, seed=9)
    for t in (1.0, 2.0, 4.0):
        torch.testing.assert_close(logit_alignment(logits, reference, t), _kd(reference, logits, t))


@pytest.mark.parametrize(("shots", "cfg_shots", "weight"), [(4, 0, 1 / 4), (16, 0, 1 / 16), (16, 1, 1.0), (0, 0, 1.0)])
def test_hierarchical_total(shots, cfg_shots, weight):
    cfg = LAMMConfig(shots=cfg_shots)
    logits, reference = 3 * _fixed(5, 4, seed=10), 3 * _fixed(5, 4, seed=11)
    text, ref_text = _fixed(4, 6, seed=12), _fixed(4, 6, seed=13)
    rows, init = _fixed(7, 6, seed=14), _fixed(7, 6, seed=15)
    labels = torch.tensor([0, 1, 2, 3, 1])
    losses = HierarchicalLoss(cfg, shots)(logits, labels, reference, text, ref_text, rows, init)
    ce = -(logits.log_softmax(-1)[torch.arange(5), labels]).mean()
    param = (rows - init).square().sum()
    feature = (1 - _cos(text[labels], ref_text[labels])).mean()
    logit = _kd(reference, logits, 2.0)
    want = {"ce": ce, "param_alignment": param, "feature_alignment": feature, "logit_alignment": logit}
    for key, value in want.items():
        torch.testing.assert_close(losses[key], value, msg=key)
    torch.testing.assert_close(losses["total"], ce + weight * param + feature + 0.05 * logit)


def _moved_model(tiny_clip64, classnames, shots):
    torch.manual_seed(0)
    model = build_model("coop", tiny_clip64, classnames, CoOpConfig(ctx_init="a photo of a"), LAMMConfig(), shots=shots)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # every term non-zero, with non-trivial gradients
        model.label_embedding.weight.add_(0.1 * torch.randn(model.label_embedding.weight.shape, generator=g))
        model.method.ctx.add_(0.1 * torch.randn(model.method.ctx.shape, generator=g))
    return model.train()


def test_model_losses_from_first_principles(tiny_clip64, classnames):
    """The model's terms and total, rebuilt from its text and image features with the formulas above."""
    model = _moved_model(tiny_clip64, classnames, shots=4)
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    losses = model(images, labels).losses
    text, ref = model.encode_text(reference=True)
    image = model.encode_image(images)
    image, text, ref = (x / x.norm(dim=-1, keepdim=True) for x in (image, text, ref))
    scale = model.logit_scale
    logits, ref_logits = scale * image @ text.t(), scale * image @ ref.t()
    rows, init = model.label_embedding.weight, model.label_embedding.init
    want = {
        "ce": -(logits.log_softmax(-1)[torch.arange(6), labels]).mean(),
        "param_alignment": (rows - init).square().sum(),
        "feature_alignment": (1 - _cos(text[labels], ref[labels])).mean(),
        "logit_alignment": _kd(ref_logits, logits, 2.0),
    }
    want["total"] = (
        want["ce"] + want["param_alignment"] / 4 + want["feature_alignment"] + 0.05 * want["logit_alignment"]
    )
    for key, value in want.items():
        assert value.abs() > 1e-4, key
        torch.testing.assert_close(losses[key].double(), value.double(), rtol=1e-5, atol=1e-7, msg=key)


def test_model_gradient_paths(tiny_clip64, classnames):
    """Feature term: the context gets gradient through the learned side only. Distillation: through both sides."""
    model = _moved_model(tiny_clip64, classnames, shots=4)
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    losses = model(images, labels).losses
    params = [model.method.ctx, model.label_embedding.weight]
    got_feature = torch.autograd.grad(losses["feature_alignment"], params, retain_graph=True)
    got_logit = torch.autograd.grad(losses["logit_alignment"], params)

    text, ref = model.encode_text(reference=True)
    image = model.encode_image(images)
    image = image / image.norm(dim=-1, keepdim=True)
    text, ref = text / text.norm(dim=-1, keepdim=True), ref / ref.norm(dim=-1, keepdim=True)
    feature = (1 - _cos(text[labels], ref[labels].detach())).mean()
    want_feature = torch.autograd.grad(feature, params, retain_graph=True)
    logit = _kd(model.logit_scale * image @ ref.t(), model.logit_scale * image @ text.t(), 2.0)
    want_logit = torch.autograd.grad(logit, params)
    for got, want in ((got_feature, want_feature), (got_logit, want_logit)):
        for g, w in zip(got, want):
            assert w.abs().max() > 0
            torch.testing.assert_close(g.double(), w.double(), rtol=1e-4, atol=1e-5 * float(w.abs().max()))
