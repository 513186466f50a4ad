"""LAMM on every host method: exact no-op at init, intended parameters only, losses, checkpoints, class sets."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from cases import BY_ID, CASES

from lamm_plugin import CoOpConfig, LAMMConfig, MaPLeConfig, VPTConfig, ZeroshotConfig, build_model
from lamm_plugin.backbone import load_clip

#: Every method case (tests/cases.py), by id.
METHOD_CASES = BY_ID


def _build(case, clip, classnames, enabled=True, **lamm):
    return METHOD_CASES[case].build(clip, classnames, LAMMConfig(enabled=enabled, **lamm))


def _perturb(model, scale):
    """Move the label rows randomly (a constant shift would vanish in CLIP's LayerNorms)."""
    weight = model.label_embedding.weight
    with torch.no_grad():
        weight.add_(scale * torch.randn(weight.shape, generator=torch.Generator().manual_seed(3)))


def _batch_and_length(transformer, x):
    """(batch, positions) of a block input, whatever layout open_clip runs its blocks in."""
    shape = tuple(x.shape[:2])
    return shape if getattr(transformer, "batch_first", False) else shape[::-1]


def _batch(n=6, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % classes


@pytest.mark.parametrize("case", METHOD_CASES)
def test_untrained_lamm_equals_host_method(tiny_clip, classnames, case):
    """LAMM adds nothing until trained. This compares our own two builds; the host methods themselves are
    checked against hand-written forwards in test_placement.py and against the original code in
    test_host_parity.py."""
    _untrained_lamm_equals_host_method(tiny_clip, classnames, case)


def _untrained_lamm_equals_host_method(tiny_clip, classnames, case):
    torch.manual_seed(0)
    host = _build(case, tiny_clip, classnames, enabled=False)
    torch.manual_seed(0)
    lamm = _build(case, tiny_clip, classnames, enabled=True)
    images, _ = _batch()
    host.eval(), lamm.eval()
    assert torch.equal(host(images).logits, lamm(images).logits)


@pytest.mark.parametrize("case", ["coop-init", "zeroshot"])
def test_lamm_alone_untrained_is_zero_shot_clip(tiny_clip64, classnames, case):
    cfg = CoOpConfig(ctx_init="a photo of a", train_ctx=False) if case == "coop-init" else ZeroshotConfig()
    model = build_model(case.split("-")[0], tiny_clip64, classnames, cfg, LAMMConfig()).eval()
    images, _ = _batch()
    clip = tiny_clip64.model
    text = clip.encode_text(tiny_clip64.tokenizer([f"a photo of a {n.replace('_', ' ')}." for n in classnames]))
    image = clip.encode_image(images.double())
    expected = (
        clip.logit_scale.exp()
        * torch.nn.functional.normalize(image, dim=-1)
        @ torch.nn.functional.normalize(text, dim=-1).t()
    )
    torch.testing.assert_close(model(images.double()).logits.double(), expected, rtol=1e-5, atol=1e-5)
    assert [p.shape for p in model.trainable_parameters()] == [model.label_embedding.weight.shape]


def _trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


EXPECTED_TRAINABLE = {case.id: set(case.trainable) for case in CASES}


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("case", METHOD_CASES)
def test_one_step_changes_only_intended_parameters(tiny_clip, classnames, case, enabled):
    torch.manual_seed(0)
    model = _build(case, tiny_clip, classnames, enabled=enabled).train()
    expected = EXPECTED_TRAINABLE[case] | ({"label_embedding.weight"} if enabled else set())
    assert _trainable_names(model) == expected
    clip_before = copy.deepcopy(tiny_clip.model.state_dict())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = model.trainable_parameters()
    if not params:  # zero-shot CLIP without LAMM: nothing to train, and nothing may claim to be trainable
        assert expected == set()
        return
    optim = torch.optim.SGD(params, lr=0.5, momentum=0.9, weight_decay=5e-4)
    images, labels = _batch()
    # A few steps so that terms that start at zero (feature, parameter alignment) get a gradient too.
    for _ in range(3):
        optim.zero_grad()
        model(images, labels).losses["total"].backward()
        optim.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == expected
    for key, value in tiny_clip.model.state_dict().items():
        assert torch.equal(value, clip_before[key]), f"CLIP weight {key} changed"


def test_loss_terms_at_init_and_their_gradients(tiny_clip, classnames):
    torch.manual_seed(0)
    model = _build("coop-init", tiny_clip, classnames).train()
    images, labels = _batch()
    losses = model(images, labels).losses
    assert set(losses) == {"ce", "param_alignment", "feature_alignment", "logit_alignment", "total"}
    assert losses["param_alignment"] == 0
    assert losses["feature_alignment"].abs() < 1e-6
    # Distillation against an identical teacher: its gradient w.r.t. the reference logits is zero.
    weight = model.label_embedding.weight
    (g_param,) = torch.autograd.grad(losses["param_alignment"], weight, allow_unused=True, materialize_grads=True)
    assert g_param.abs().max() == 0
    (g_ce,) = torch.autograd.grad(losses["ce"], weight, retain_graph=True)
    assert g_ce.abs().max() > 0
    # Feature alignment reaches the label rows only (the reference side is detached, no context involved).
    (g_feat_ctx,) = torch.autograd.grad(losses["feature_alignment"], model.method.ctx, retain_graph=True)
    assert g_feat_ctx.abs().max() < 1e-6
    # The total and each term's value and gradients are rebuilt from first principles in test_losses.py.


def test_loss_terms_after_moving_the_labels(tiny_clip, classnames):
    torch.manual_seed(0)
    model = _build("coop-init", tiny_clip, classnames).train()
    with torch.no_grad():
        _perturb(model, 0.1)
    images, labels = _batch()
    losses = model(images, labels).losses
    expected = (model.label_embedding.weight - model.label_embedding.init).square().sum()
    torch.testing.assert_close(losses["param_alignment"], expected)
    assert expected > 0
    assert losses["feature_alignment"] > 0
    grads = torch.autograd.grad(losses["feature_alignment"], [model.label_embedding.weight, model.method.ctx])
    assert grads[0].abs().max() > 0
    assert grads[1].abs().max() > 0  # which side it flows through: test_losses.py::test_model_gradient_paths


def test_feature_alignment_is_zero_for_a_batch_of_one_class(tiny_clip, classnames):
    model = _build("coop-init", tiny_clip, classnames).train()
    with torch.no_grad():
        _perturb(model, 0.1)
    images, _ = _batch(3)
    losses = model(images, torch.tensor([2, 2, 2])).losses
    assert losses["feature_alignment"] == 0
    one = model(images[:1], torch.tensor([1])).losses
    assert one["feature_alignment"] == 0 and torch.isfinite(one["total"])


def test_reference_branch_is_cached_only_when_frozen(tiny_clip, classnames):
    images, labels = _batch()
    block = tiny_clip.model.transformer.resblocks[0]
    seen = []
    transformer = tiny_clip.model.transformer
    block.register_forward_pre_hook(lambda m, a: seen.append(_batch_and_length(transformer, a[0])))
    frozen = build_model("coop", tiny_clip, classnames, CoOpConfig(ctx_init="a photo of a", train_ctx=False))
    frozen.train()
    frozen(images, labels)
    optim = torch.optim.SGD(frozen.trainable_parameters(), lr=0.1)
    optim.step()  # label rows change; the cached reference does not depend on them
    frozen(images, labels)
    length = frozen.layout.max_length
    assert seen == [(5, length)] * 3  # learned, reference (once), learned
    trained = build_model("coop", tiny_clip, classnames, CoOpConfig(ctx_init="a photo of a"))
    trained.train()
    seen.clear()
    trained(images, labels)
    shared = 5  # <start> a photo of a
    assert seen == [(5, length + length - shared)]  # both label sets in one pass, the common prefix once


def test_cached_and_uncached_give_the_same_loss(tiny_clip, classnames):
    images, labels = _batch()
    results = []
    for cache in (True, False):
        torch.manual_seed(0)
        model = _build("vpt", tiny_clip, classnames, cache_reference=cache).train()
        with torch.no_grad():
            _perturb(model, 0.05)
        results.append(model(images, labels).losses)
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key])


def test_truncation_does_not_change_losses_or_gradients(tiny_clip, classnames):
    images, labels = _batch()
    out = []
    for truncate in (True, False):
        torch.manual_seed(0)
        model = _build("maple", tiny_clip, classnames, truncate_text=truncate).train()
        with torch.no_grad():
            _perturb(model, 0.05)
        losses = model(images, labels).losses
        out.append((losses["total"], torch.autograd.grad(losses["total"], model.trainable_parameters())))
    torch.testing.assert_close(out[0][0], out[1][0])
    # The two passes run the text tower on other sequence lengths, which BLAS may block (and round) differently:
    # float32 rounding of a few layers, relative to each gradient's largest entry (3.9e-4 of one entry measured under
    # MKL_CBWR=COMPATIBLE, where an entry is small beside the largest).
    for a, b in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


@pytest.mark.parametrize("case", ["coop", "maple", "vpt-deep", "cocoop"])
def test_checkpoint_round_trip(tiny_clip, classnames, case, tmp_path):
    torch.manual_seed(0)
    model = _build(case, tiny_clip, classnames).train()
    optim = torch.optim.SGD(model.trainable_parameters(), lr=0.5)
    images, labels = _batch()
    model(images, labels).losses["total"].backward()
    optim.step()
    path = tmp_path / "ckpt.pt"
    torch.save(model.checkpoint_state(), path)
    state = torch.load(path, weights_only=True)
    assert not any(k.startswith(("text.", "image.", "frozen.")) for k in state["state_dict"])
    torch.manual_seed(1)
    fresh = _build(case, tiny_clip, classnames)
    fresh.load_checkpoint_state(state)
    model.eval(), fresh.eval()
    assert torch.equal(model(images).logits, fresh(images).logits)


def test_checkpoint_of_another_method_or_backbone_is_refused(tiny_clip, classnames):
    state = _build("coop", tiny_clip, classnames).checkpoint_state()
    with pytest.raises(ValueError, match="method 'coop'"):
        _build("vpt", tiny_clip, classnames).load_checkpoint_state(state)
    state["backbone"] = "ViT-B/16"
    with pytest.raises(ValueError, match="backbone 'ViT-B/16'"):
        _build("coop", tiny_clip, classnames).load_checkpoint_state(state)
    baseline = _build("coop", tiny_clip, classnames).checkpoint_state()
    with pytest.raises(ValueError, match="LAMM"):
        _build("coop", tiny_clip, classnames, enabled=False).load_checkpoint_state(baseline)


def test_base_to_new_switch_keeps_learned_labels_by_name(tiny_clip, classnames):
    torch.manual_seed(0)
    base, new = classnames[:3], classnames[3:]
    model = _build("coop", tiny_clip, base)
    with torch.no_grad():
        _perturb(model, 0.3)
    state = model.checkpoint_state()
    model.eval()
    images, _ = _batch()
    base_logits = model(images).logits
    model.set_classnames(new + base[:1])  # new classes keep CLIP's embeddings; "dog" keeps its learned rows
    mixed = model(images).logits
    reference = _build("coop", tiny_clip, new + base[:1], enabled=False)
    reference.load_state_dict({"method.ctx": model.method.ctx.detach()})
    reference.eval()
    ref_logits = reference(images).logits
    torch.testing.assert_close(mixed[:, :2], ref_logits[:, :2])
    assert not torch.allclose(mixed[:, 2], ref_logits[:, 2])
    # A model built on another class set loads the checkpoint by name.
    other = _build("coop", tiny_clip, [classnames[1], classnames[4], classnames[0]])
    other.load_checkpoint_state(state)
    other.eval()
    torch.testing.assert_close(other(images).logits[:, [2, 0]], base_logits[:, [0, 1]])


def test_add_classes_leaves_old_rows_untouched(tiny_clip, classnames):
    torch.manual_seed(0)
    model = build_model("coop", tiny_clip, classnames[:2], CoOpConfig(ctx_init="a photo of a", train_ctx=False))
    with torch.no_grad():
        _perturb(model, 0.2)
    old_rows = model.label_embedding.rows().detach().clone()
    model.label_embedding.freeze()
    model.add_classes(classnames[2:])
    assert model.classnames == [n.replace("_", " ") for n in classnames]
    optim = torch.optim.SGD(model.trainable_parameters(), lr=1.0, weight_decay=0.1, momentum=0.9)
    images, labels = _batch()
    model.train()
    for _ in range(2):
        optim.zero_grad()
        model(images, labels).losses["total"].backward()
        optim.step()
    rows = model.label_embedding.rows().detach()
    assert torch.equal(rows[: len(old_rows)], old_rows)
    assert not torch.equal(rows[len(old_rows) :], model.label_embedding.init[len(old_rows) :])


def test_random_init_draws_trainable_rows_and_anchors_them(tiny_clip, classnames):
    """``random_init`` (the official ``--random-init``): the trainable label rows and their alignment anchor start
    from the same N(0, 0.02^2) draw; frozen rows (earlier classes) keep theirs; the seed decides the draw."""
    model = _build("coop", tiny_clip, classnames, random_init=True)
    clip_rows = model.label_embedding.rows().detach().clone()
    assert torch.equal(clip_rows, model.label_embedding.init)  # built from the names: randomised when training
    model.label_embedding.freeze(classnames[:1])
    torch.manual_seed(3)
    model.randomize_labels()
    rows, init = model.label_embedding.rows().detach(), model.label_embedding.init
    first = model.label_embedding.counts[0]
    assert torch.equal(rows[:first], clip_rows[:first])  # the frozen class is untouched
    assert torch.equal(rows[first:], init[first:]) and not torch.equal(rows[first:], clip_rows[first:])
    assert 0.01 < rows[first:].std().item() < 0.04
    assert model(*_batch()).losses["param_alignment"].item() == 0.0  # anchored to the random start


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_random_init_draws_as_the_official_code(tiny_clip, classnames, dtype):
    """The official ``--random-init`` draws ``nn.init.normal_(std=0.02)`` on the ``[classes, min_len, width]`` slice
    of its prompts' embeddings (``trainers/coop.py``, ``_get_token_classes``), which torch fills element by element
    in the learned dtype; ours makes the same draws (``tests/test_whole_run.py`` runs the official code)."""
    model = _build("coop", tiny_clip, classnames, label_tokens="min_len")
    width = model.label_embedding.width
    torch.manual_seed(5)
    official = torch.zeros(len(classnames), 77, width, dtype=dtype)[:, 1:2, :]
    torch.nn.init.normal_(official, std=0.02)
    after = torch.get_rng_state()
    torch.manual_seed(5)
    drawn = model.label_embedding.draw(dtype=dtype)
    assert torch.equal(torch.get_rng_state(), after)
    assert torch.equal(torch.stack(drawn), official)


@pytest.mark.parametrize(
    ("rule", "counts"), [("all", [1, 2, 4, 1, 2]), ("first_k", [1, 2, 2, 1, 2]), ("min_len", [1] * 5)]
)
def test_label_token_rules(tiny_clip, classnames, rule, counts):
    model = _build("coop", tiny_clip, classnames, label_tokens=rule, first_k=2)
    assert model.label_embedding.counts == counts


def test_official_min_len_uses_shortest_name(tiny_clip):
    model = _build("coop", tiny_clip, ["golden retriever", "bernese mountain dog"], label_tokens="min_len")
    assert model.label_embedding.counts == [2, 2]
    capped = _build(
        "maple", tiny_clip, ["golden retriever", "bernese mountain dog"], label_tokens="min_len", min_len_cap=1
    )
    assert capped.label_embedding.counts == [1, 1]


def _official_maple(clip, classnames, enabled=True, **lamm):
    return _build("maple", clip, classnames, enabled, label_tokens="min_len", min_len_cap=1, **lamm)


def test_after_context_slot_replaces_the_template_word_and_keeps_the_name(tiny_clip, classnames):
    """The official MaPLe prompt: "a photo <label> a <class name>.", the label started from the name's first token."""
    model = _official_maple(tiny_clip, classnames, label_slot="after_context")
    with torch.no_grad():
        prompts = model._with_context(model.method.text_prompt())
        learned = model._with_labels(prompts)
    slot = 1 + model.method.cfg.n_ctx  # the word "of"
    changed = (learned != prompts).any(-1)
    assert changed[:, slot].all() and changed.sum() == len(classnames)
    first = model.layout.name_start
    assert torch.equal(learned[:, slot], prompts[torch.arange(len(classnames)), first])
    name_slot = _official_maple(tiny_clip, classnames)
    assert torch.equal(name_slot.eot, model.eot) and model.label_embedding.counts == [1] * len(classnames)


def test_after_context_slot_shares_only_the_prefix_before_the_label(tiny_clip, classnames):
    """The one pass of both branches computes the positions before the label once: the reference branch still
    equals the host method's prompts and the learned branch its own pass."""
    model = _official_maple(tiny_clip, classnames, label_slot="after_context", cache_reference=False)
    _perturb(model, 0.05)
    host = _official_maple(tiny_clip, classnames, enabled=False)
    host.method.load_state_dict(model.method.state_dict())
    with torch.no_grad():
        text, ref = model.encode_text(reference=True)
        alone, _ = model.encode_text()
        original, _ = host.encode_text()
    torch.testing.assert_close(text, alone)
    torch.testing.assert_close(ref, original)
    assert not torch.allclose(text, ref)


def test_after_context_slot_errors_name_the_setting(tiny_clip, classnames):
    with pytest.raises(ValueError, match="label_slot 'after_context' needs context slots"):
        _build("vpt", tiny_clip, classnames, label_slot="after_context")
    with pytest.raises(ValueError, match="label slot only 2 positions"):
        _build("maple", tiny_clip, classnames, label_slot="after_context")  # every name token: more than "of a"
    with pytest.raises(ValueError, match="label_slot must be one of"):
        LAMMConfig(label_slot="of")


def test_class_specific_context_refuses_other_classes(tiny_clip, classnames):
    model = _build("coop-csc", tiny_clip, classnames)
    with pytest.raises(ValueError, match="Class-specific"):
        model.set_classnames(classnames[:2])


def test_unknown_method(tiny_clip, classnames):
    with pytest.raises(KeyError, match="registered"):
        build_model("no-such-method", tiny_clip, classnames)


def test_state_dict_holds_only_learned_tensors(tiny_clip, classnames):
    model = _build("maple", tiny_clip, classnames)
    keys = set(model.state_dict())
    assert "label_embedding.rows" in keys and "method.ctx" in keys
    assert not any("transformer" in k or "token_embedding" in k for k in keys)
    assert sum(p.numel() for p in model.parameters()) < 20_000


@pytest.mark.parametrize(
    ("method", "cfg"), [("maple", MaPLeConfig(prompt_depth=9)), ("vpt", VPTConfig(prompt_depth_vision=12))]
)
def test_prompt_depth_beyond_the_backbone_is_refused_at_build_time(tiny_clip, classnames, method, cfg):
    with pytest.raises(ValueError, match="exceeds the 3"):
        build_model(method, tiny_clip, classnames, cfg)


def test_checkpoint_keeps_classes_it_does_not_serve(tiny_clip, classnames):
    """Continual learning: a stage-2 checkpoint still carries stage-1 labels, and stage-1 rows stay frozen."""
    torch.manual_seed(0)
    cfg = CoOpConfig(ctx_init="a photo of a", train_ctx=False)  # continual learning: the context stays fixed

    def lamm_alone(names):
        return build_model("coop", tiny_clip, names, cfg, LAMMConfig())

    stage1 = lamm_alone(classnames[:2])
    _perturb(stage1, 0.2)
    stage2 = lamm_alone(classnames[2:])
    stage2.load_checkpoint_state(stage1.checkpoint_state())
    assert stage2.classnames == [n.replace("_", " ") for n in classnames[2:]]
    assert stage2.label_embedding.weight.shape[0] == 7  # only the served classes' rows train
    optim = torch.optim.SGD(stage2.trainable_parameters(), lr=0.5, weight_decay=0.1)
    images, labels = _batch(n=3, classes=3)
    stage2.train()
    stage2(images, labels).losses["total"].backward()
    optim.step()
    both = lamm_alone(classnames)
    both.load_checkpoint_state(stage2.checkpoint_state())
    stage1.eval(), stage2.eval(), both.eval()
    images, _ = _batch()
    logits = both(images).logits
    torch.testing.assert_close(logits[:, :2], stage1(images).logits)
    torch.testing.assert_close(logits[:, 2:], stage2(images).logits)


def test_constant_text_features_are_computed_once_in_training(tiny_clip, classnames):
    """VPT without LAMM: no text tensor trains, so the text tower runs once, not every step."""
    model = build_model("vpt", tiny_clip, classnames, VPTConfig(n_ctx_vision=2), LAMMConfig(enabled=False)).train()
    seen = []
    transformer = tiny_clip.model.transformer
    transformer.resblocks[0].register_forward_pre_hook(
        lambda m, a: seen.append(_batch_and_length(transformer, a[0])[0])
    )
    optim = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    images, labels = _batch()
    for _ in range(3):
        optim.zero_grad()
        model(images, labels).losses["total"].backward()
        optim.step()
    assert seen == [len(classnames)]


def test_checkpoint_restores_initial_label_values(tiny_clip, classnames):
    """The parameter-alignment anchor comes from the checkpoint, matched by class name, not from the new model."""
    torch.manual_seed(0)
    state = _build("coop", tiny_clip, classnames).checkpoint_state()
    init = state["state_dict"]["label_embedding.init"]
    state["state_dict"]["label_embedding.init"] = init + torch.arange(len(init)).unsqueeze(-1)
    order = [classnames[3], classnames[0], classnames[4], classnames[1], classnames[2]]
    fresh = _build("coop", tiny_clip, order)
    fresh.load_checkpoint_state(state)
    theirs = _build("coop", tiny_clip, classnames)
    theirs.load_checkpoint_state(state)

    def class_init(model, c):
        return model.label_embedding.init[model.row_index][model.flat_position // model.base_prompts.shape[1] == c]

    for i, name in enumerate(order):
        torch.testing.assert_close(class_init(fresh, i), class_init(theirs, classnames.index(name)))
    assert not torch.equal(fresh.label_embedding.init, _build("coop", tiny_clip, order).label_embedding.init)


def test_cocoop_evaluation_in_chunks_of_images_equals_one_pass(tiny_clip, classnames, monkeypatch):
    import lamm_plugin.lamm as lamm_module

    torch.manual_seed(0)
    model = _build("cocoop", tiny_clip, classnames).eval()
    images, _ = _batch(n=5)
    whole = model(images).logits
    monkeypatch.setattr(lamm_module, "EVAL_PROMPTS_PER_PASS", 2 * len(classnames))  # 2 images per pass
    # The chunks run the towers on other batch shapes, which BLAS may block (and round) differently: float32
    # rounding of a few towers' layers, 1.5e-6 measured under MKL_CBWR=COMPATIBLE on logits of about 0.4.
    torch.testing.assert_close(model(images).logits, whole, rtol=1e-5, atol=1e-5)


# ---- the gradient hook (PromptMethod.backward) and ProGrad's projection ------------------------------------------
def test_every_training_loop_backpropagates_through_the_method_hook(tiny_clip, classnames, monkeypatch):
    """The CUDA-graph step and the Dassl-free example take their backward from the method's hook (the Dassl
    trainer's eager step is checked in test_dassl_train.py)."""
    import sys
    from pathlib import Path

    from lamm_plugin.cuda_graph import GraphedStep
    from lamm_plugin.methods import PromptMethod

    calls = []
    original = PromptMethod.backward

    def recorded(self, losses, params, scale):
        calls.append(type(self).__name__)
        original(self, losses, params, scale)

    monkeypatch.setattr(PromptMethod, "backward", recorded)
    model = _build("coop", tiny_clip, classnames).train()
    GraphedStep(model).forward_backward(*_batch())
    assert calls == ["CoOp"]
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    sys.modules.pop("train_core", None)
    import train_core

    train_core.main(["--steps", "1", "--classes", "2", "--shots", "2"])
    assert calls[1:] == ["CoOp"]


def test_prograd_projection_removes_only_a_conflicting_component():
    from lamm_plugin.methods.prograd import project_conflicting

    grad, general = torch.tensor([[2.0, 0.0]]), torch.tensor([[-1.0, 1.0]])
    projected = project_conflicting(grad, general, 1.0)
    assert torch.allclose(projected, torch.tensor([[1.0, 1.0]]))  # what is left is orthogonal to general
    assert torch.allclose(project_conflicting(grad, general, 0.5), torch.tensor([[1.5, 0.5]]))
    assert torch.equal(project_conflicting(grad, -general, 1.0), grad)  # agreeing: unchanged
    assert torch.equal(project_conflicting(grad, torch.zeros(1, 2), 1.0), grad)  # no general direction
    assert not torch.isfinite(project_conflicting(grad, torch.tensor([[float("inf"), 0.0]]), 1.0)).all()


@pytest.mark.parametrize("enabled", [False, True])
def test_prograd_step_is_the_projected_gradient_of_total(tiny_clip, classnames, enabled):
    """ProGrad's backward: per learned tensor, the gradient of ``total`` (cross-entropy alone without LAMM) with
    the component along the distillation's gradient removed where they conflict; the distillation is not in
    ``total``."""
    from lamm_plugin.methods.prograd import project_conflicting

    model = _build("prograd", tiny_clip, classnames, enabled=enabled).train()
    images, labels = _batch()
    out = model.forward_backward(images, labels)
    params = model.trainable_parameters()
    got = [p.grad.clone() for p in params]
    losses = model(images, labels).losses
    if not enabled:
        assert torch.equal(losses["total"], losses["ce"])
    general = torch.autograd.grad(losses["prograd_kl"], params, retain_graph=True)
    plain = torch.autograd.grad(losses["total"], params)
    expected = [project_conflicting(g, d, 1.0) for g, d in zip(plain, general)]
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    conflicts = [float(torch.dot(g.flatten(), d.flatten())) < 0 for g, d in zip(plain, general)]
    for a, g, conflict in zip(got, plain, conflicts):
        assert torch.allclose(a, g, rtol=1e-5, atol=1e-7) != conflict
    assert set(out.losses) >= {"ce", "prograd_kl", "total"}


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_prograd_teacher_is_the_originals_float32_clip_in_a_low_precision_run(tmp_path, classnames, precision):
    """The original ProGrad floats its zero-shot CLIP whatever the run's precision (``trainers/prograd.py``, class
    ``CLIP``): in a low-precision run the teacher's logits are those of the same weights in float32, on the batch;
    ``teacher_precision "run"`` takes the run's CLIP and the step's image features."""
    from lamm_plugin.methods.base import StepFeatures
    from lamm_plugin.methods.prograd import ProGradConfig
    from lamm_plugin.tokens import clean_classname

    path = tmp_path / "tiny.pt"
    torch.save(load_clip("tiny-vit").model.state_dict(), path)
    low = load_clip("tiny-vit", pretrained=str(path), precision=precision)
    reference = load_clip("tiny-vit", pretrained=str(path))
    reference.model.load_state_dict({k: v.float() for k, v in low.model.state_dict().items()})
    images, _ = _batch(n=4)
    logits = torch.randn(4, len(classnames), generator=torch.Generator().manual_seed(1))
    texts = [f"a photo of a {clean_classname(n)}." for n in classnames]
    with torch.no_grad():
        image = F.normalize(reference.model.encode_image(images), dim=-1)
        text = F.normalize(reference.encode_texts(texts), dim=-1)
        teacher = reference.model.logit_scale.exp() * image @ text.t()
    expected = -(F.softmax(teacher, -1) * F.log_softmax(logits, -1)).sum(1).mean()
    own_image = F.normalize(torch.randn(4, low.embed_dim), dim=-1).to(low.dtype)
    for mode in ("fp32", "run"):
        method = build_model("prograd", low, classnames, ProGradConfig(teacher_precision=mode), LAMMConfig(False))
        step = StepFeatures(images, own_image, text, logits, classnames, low.model.logit_scale.exp())
        kl = method.method.regularization(step)["prograd_kl"][1]
        if mode == "fp32":
            torch.testing.assert_close(kl, expected, rtol=1e-6, atol=0)
        else:  # the run's CLIP: the step's image features and low-precision text features
            assert abs(kl.item() - expected.item()) > 1e-4
