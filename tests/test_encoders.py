"""Our encoders against open_clip's own: exact parity, EOT truncation, prompt injection."""

from __future__ import annotations

import pytest
import torch

from lamm_plugin.backbone import load_clip
from lamm_plugin.encoders import ImageEncoder, TextEncoder
from lamm_plugin.tokens import build_layout

TEMPLATES = ["a photo of a {}.", "{} X X X X.", "X X {} X X."]


def _capture_block_inputs(transformer, store):
    """Hooks saving each block's input as [batch, positions, width], whatever layout open_clip runs blocks in."""
    batch_first = getattr(transformer, "batch_first", False)

    def hook(i):
        return lambda module, args: store.__setitem__(i, (args[0] if batch_first else args[0].transpose(0, 1)).clone())

    return [block.register_forward_pre_hook(hook(i)) for i, block in enumerate(transformer.resblocks)]


def _tokens(bundle, classnames, template="a photo of a {}."):
    return build_layout(bundle.tokenizer, template, classnames).tokens


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("truncate", [True, False])
def test_text_parity_float64(tiny_clip64, classnames, template, truncate):
    model = tiny_clip64.model
    tokens = _tokens(tiny_clip64, classnames, template)
    encoder = TextEncoder(model, truncate=truncate)
    ours = encoder(encoder.embed(tokens), encoder.eot_index(tokens))
    torch.testing.assert_close(ours, model.encode_text(tokens), rtol=1e-12, atol=1e-12)


def test_text_parity_float32(tiny_clip, classnames):
    tokens = _tokens(tiny_clip, classnames)
    encoder = TextEncoder(tiny_clip.model)
    ours = encoder(encoder.embed(tokens), encoder.eot_index(tokens))
    torch.testing.assert_close(ours, tiny_clip.model.encode_text(tokens), rtol=1e-5, atol=1e-5)


def test_truncation_runs_on_fewer_positions(tiny_clip, classnames):
    tokens = _tokens(tiny_clip, classnames)
    encoder = TextEncoder(tiny_clip.model)
    seen = []
    handle = encoder.transformer.resblocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    encoder(encoder.embed(tokens), encoder.eot_index(tokens))
    handle.remove()
    positions = int(encoder.eot_index(tokens).max()) + 1
    assert sorted(seen[0][:2]) == sorted([len(classnames), positions]) and positions < 77


def test_truncated_equals_full_with_deep_prompts_and_gradients(tiny_clip64, classnames):
    tokens = _tokens(tiny_clip64, classnames)
    eot = tokens.argmax(-1)
    deep = [torch.randn(2, 32, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    outs, grads = [], []
    for truncate in (True, False):
        encoder = TextEncoder(tiny_clip64.model, truncate=truncate)
        out = encoder(encoder.embed(tokens), eot, deep_prompts=deep)
        (g,) = torch.autograd.grad(out.square().sum(), deep[1])
        outs.append(out)
        grads.append(g)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_text_deep_prompts_replace_only_their_slots(tiny_clip64, classnames):
    tokens = _tokens(tiny_clip64, classnames)
    encoder = TextEncoder(tiny_clip64.model, truncate=False)
    deep = [torch.randn(2, 32, dtype=torch.float64) for _ in range(2)]
    captured = {}
    handles = _capture_block_inputs(encoder.transformer, captured)
    plain = encoder(encoder.embed(tokens), tokens.argmax(-1))
    plain_inputs = dict(captured)
    prompted = encoder(encoder.embed(tokens), tokens.argmax(-1), deep_prompts=deep)
    for h in handles:
        h.remove()
    assert prompted.shape == plain.shape and not torch.allclose(prompted, plain)
    # Block 0 input untouched; block 1 input: slots 1..2 are the deep prompt, everything else as computed.
    torch.testing.assert_close(captured[0], plain_inputs[0])
    torch.testing.assert_close(captured[1][:, 1:3], deep[0].expand(len(classnames), -1, -1))
    torch.testing.assert_close(captured[1][:, :1], plain_inputs[1][:, :1])
    torch.testing.assert_close(captured[2][:, 1:3], deep[1].expand(len(classnames), -1, -1))
    # Causality: position 0 (start token) never sees the prompts.
    torch.testing.assert_close(captured[2][:, 0], plain_inputs[2][:, 0])


def test_image_parity(tiny_clip64):
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(
        ImageEncoder(tiny_clip64.model)(images), tiny_clip64.model.encode_image(images), rtol=1e-12, atol=1e-12
    )


def test_image_parity_float32(tiny_clip):
    images = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(ImageEncoder(tiny_clip.model)(images), tiny_clip.model.encode_image(images))


def test_visual_prompts_shallow_and_deep(tiny_clip64):
    encoder = ImageEncoder(tiny_clip64.model)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    shallow = torch.randn(4, encoder.width, dtype=torch.float64)
    deep = [torch.randn(4, encoder.width, dtype=torch.float64) for _ in range(2)]
    captured = {}
    handles = _capture_block_inputs(tiny_clip64.model.visual.transformer, captured)
    plain = encoder(images)
    out_shallow = encoder(images, shallow)
    tokens_shallow = dict(captured)
    out_deep = encoder(images, shallow, deep)
    for h in handles:
        h.remove()
    n_patches = 1 + (32 // 8) ** 2
    assert tokens_shallow[0].shape == (2, n_patches + 4, encoder.width)
    assert out_shallow.shape == out_deep.shape == plain.shape
    assert not torch.allclose(out_shallow, plain) and not torch.allclose(out_deep, out_shallow)
    # Deep prompts replace the last 4 tokens at the input of blocks 1 and 2, and nothing else.
    torch.testing.assert_close(captured[1][:, -4:], deep[0].expand(2, -1, -1))
    torch.testing.assert_close(captured[1][:, :-4], tokens_shallow[1][:, :-4])
    torch.testing.assert_close(captured[2][:, -4:], deep[1].expand(2, -1, -1))


def test_zero_effect_prompts_give_plain_features(tiny_clip64):
    """Prompt tokens that attention cannot see are a no-op: checks prompt removal before pooling."""
    model = tiny_clip64.model
    encoder = ImageEncoder(model)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    # With a mask that hides the prompt tokens, the class token cannot read them: emulate by zero blocks.
    for block in model.visual.transformer.resblocks:
        block.attn.in_proj_weight.data.zero_()
        block.attn.in_proj_bias.data.zero_()
    shallow = torch.randn(3, encoder.width, dtype=torch.float64)
    # Zeroed attention makes every token's update independent of the others.
    torch.testing.assert_close(encoder(images, shallow), model.encode_image(images))


def test_resnet_rejects_visual_prompts_but_encodes():
    bundle = load_clip("tiny-rn")
    encoder = ImageEncoder(bundle.model)
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(encoder(images), bundle.model.encode_image(images))
    with pytest.raises(ValueError, match="ViT image tower"):
        encoder(images, torch.zeros(2, 16))


def test_deep_prompts_need_shallow(tiny_clip):
    with pytest.raises(ValueError, match="shallow"):
        ImageEncoder(tiny_clip.model)(torch.randn(1, 3, 32, 32), None, [torch.zeros(2, 48)])


@pytest.mark.slow
def test_full_size_vit_b16_parity():
    torch.manual_seed(0)
    bundle = load_clip("ViT-B/16", pretrained="")
    model = bundle.model
    tokens = _tokens(bundle, ["dog", "golden retriever", "bernese mountain dog"])
    text = TextEncoder(model)
    torch.testing.assert_close(text(text.embed(tokens), text.eot_index(tokens)), model.encode_text(tokens))
    images = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(ImageEncoder(model)(images), model.encode_image(images))


@pytest.mark.parametrize("deep", [0, 2])
def test_pair_pass_equals_two_passes(tiny_clip64, classnames, deep):
    tokens = _tokens(tiny_clip64, classnames)
    encoder = TextEncoder(tiny_clip64.model)
    eot = encoder.eot_index(tokens)
    base = encoder.embed(tokens).detach()
    # Both sets share a trainable context (positions 1-4) and differ from position 5 (the class name) on.
    ctx = base[0, 1:5].clone().requires_grad_(True)
    delta = (0.1 * torch.randn_like(base[:, 5:])).requires_grad_(True)
    head = torch.cat([base[:, :1], ctx.expand(len(classnames), -1, -1)], dim=1)
    prompts = torch.cat([head, base[:, 5:]], dim=1)
    other = torch.cat([head, base[:, 5:] + delta], dim=1)
    deep_prompts = [torch.randn(2, 32, dtype=torch.float64, requires_grad=True) for _ in range(deep)]
    inputs = [ctx, delta, *deep_prompts]

    separate = (encoder(prompts, eot, deep_prompts), encoder(other, eot, deep_prompts))
    paired = encoder.forward_pair(prompts, other, eot, shared=5, deep_prompts=deep_prompts)
    for a, b in zip(paired, separate):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    weights = torch.randn(2, *separate[0].shape, dtype=torch.float64)
    g_sep = torch.autograd.grad((weights[0] * separate[0]).sum() + (weights[1] * separate[1]).sum(), inputs)
    g_pair = torch.autograd.grad((weights[0] * paired[0]).sum() + (weights[1] * paired[1]).sum(), inputs)
    for a, b in zip(g_pair, g_sep):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_pair_pass_falls_back_when_deep_prompts_leave_the_prefix(tiny_clip64, classnames):
    tokens = _tokens(tiny_clip64, classnames)
    encoder = TextEncoder(tiny_clip64.model)
    eot = encoder.eot_index(tokens)
    prompts = encoder.embed(tokens)
    deep = [torch.randn(4, 32, dtype=torch.float64)]  # slots 1..4 reach past a 3-position prefix
    paired = encoder.forward_pair(prompts, prompts, eot, shared=3, deep_prompts=deep)
    torch.testing.assert_close(paired[0], encoder(prompts, eot, deep), rtol=1e-12, atol=1e-12)


# ---- activation checkpointing of the image blocks ----------------------------------------------------------------
def _step_grads(model, images, labels):
    """Loss terms and every trainable gradient of one forward+backward, and the bytes saved for the backward."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    for p in model.trainable_parameters():
        p.grad = None
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(images, labels)
    out.losses["total"].backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach() for k, v in out.losses.items()}, grads, saved[0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", ["maple", "vpt-deep", "promptsrc", "ivlp"])
def test_checkpointed_image_blocks_give_the_plain_gradients_exactly(case, dtype, tiny_clip, classnames):
    """Recomputing the image blocks in the backward pass changes no loss and no gradient by a single bit, and
    keeps less for the backward pass."""
    from cases import BY_ID

    torch.manual_seed(0)
    model = BY_ID[case].build(tiny_clip, classnames, shots=4).to(dtype).train()
    images = torch.randn(4, 3, 32, 32, dtype=dtype, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2, 4, 1])
    model.image.checkpoint = False
    losses, grads, saved = _step_grads(model, images, labels)
    model.image.checkpoint = True
    losses_ckpt, grads_ckpt, saved_ckpt = _step_grads(model, images, labels)
    assert losses.keys() == losses_ckpt.keys() and grads.keys() == grads_ckpt.keys()
    for name in losses:
        assert torch.equal(losses[name], losses_ckpt[name]), name
    for name in grads:
        assert torch.equal(grads[name], grads_ckpt[name]), name
    assert saved_ckpt < saved
    model.eval()
    with torch.no_grad():  # evaluation: nothing to recompute, the same logits
        logits_ckpt = model(images).logits
        model.image.checkpoint = False
        assert torch.equal(model(images).logits, logits_ckpt)


def test_checkpointing_follows_the_method_config(tiny_clip, classnames):
    from lamm_plugin import MaPLeConfig, VPTConfig, build_model

    maple = build_model("maple", tiny_clip, classnames, MaPLeConfig(prompt_depth=2))
    assert maple.image.checkpoint is False  # off by default: no GPU measurement shows it pays (docs/DESIGN.md)
    on = build_model("maple", tiny_clip, classnames, MaPLeConfig(prompt_depth=2, checkpoint_image=True))
    assert on.image.checkpoint is True
    assert build_model("vpt", tiny_clip, classnames, VPTConfig()).image.checkpoint is False


# ---- our own attention in the text blocks ------------------------------------------------------------------------
#: How far our attention's outputs and gradients may be from the block's own, in units of the dtype's epsilon times
#: the tensor's largest entry. Both compute the same attention of the same weights, inputs and mask, with different
#: kernels (SDPA with ``is_causal`` or the pair mask and one q/k/v projection viewed per head, against
#: nn.MultiheadAttention's packed projection and mask tensor), which sum in different orders: which kernels run
#: depends on the CPU (its vector unit, MKL's and oneDNN's code paths), and so do the last bits. Measured: at most
#: 5.5 epsilon (float64) on an AVX-512 CPU and under ATEN_CPU_CAPABILITY=default/avx2, MKL_ENABLE_INSTRUCTIONS=AVX2,
#: MKL_CBWR=COMPATIBLE and ONEDNN_MAX_CPU_ISA=AVX2.
OWN_ATTENTION_ULPS = 16


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_own_text_attention_equals_the_blocks_own_forward(tiny_clip, classnames, dtype, monkeypatch):
    """One q/k/v projection and SDPA's is_causal (forward) or the pair mask (forward_pair): the numbers and
    gradients of open_clip's block (nn.MultiheadAttention with a mask tensor), to the rounding of another kernel
    (:data:`OWN_ATTENTION_ULPS`)."""
    import lamm_plugin.encoders as encoders

    model = tiny_clip.model.to(dtype)
    tokens = _tokens(tiny_clip, classnames)
    encoder = TextEncoder(model)
    encoder.own_attention = True  # off by default
    assert all(encoders._own_attention(block) for block in model.transformer.resblocks)
    eot = encoder.eot_index(tokens)
    base = encoder.embed(tokens).detach()
    reference = base.clone()
    reference[:, 6:] += 0.1  # differs after the shared prefix of 6 positions
    g = torch.Generator().manual_seed(0)
    deep = [torch.randn(2, base.shape[-1], dtype=dtype, generator=g) for _ in range(2)]
    results = []
    for own in (True, False):
        if not own:
            monkeypatch.setattr(encoders, "_own_attention", lambda block: False)
        prompts = base.clone().requires_grad_(True)
        deep_ = [d.clone().requires_grad_(True) for d in deep]
        single = encoder(prompts, eot, deep_)
        pair = encoder.forward_pair(prompts, reference, eot, shared=6, deep_prompts=deep_)
        (single.square().sum() + sum(p.sum() for p in pair)).backward()
        results.append([single, *pair, prompts.grad, *(d.grad for d in deep_)])
    bound = OWN_ATTENTION_ULPS * torch.finfo(dtype).eps
    for ours, theirs in zip(*results):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        error = (ours - theirs).abs().max().double()
        assert error <= bound * theirs.abs().max().double(), (error, theirs.abs().max())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_own_attention_checks_itself_on_first_use(tiny_clip, classnames, dtype, monkeypatch, fast_path_warnings):
    """The first use in a process on a device compares our attention with open_clip's (nn.MultiheadAttention) on
    the first block's input; an injected difference beyond the bound switches the encoder to open_clip's blocks
    before anything is computed with ours, with one warning."""
    import lamm_plugin.encoders as encoders
    from lamm_plugin import fast_paths

    model = tiny_clip.model.to(dtype)
    tokens = _tokens(tiny_clip, classnames)
    encoder = TextEncoder(model)
    encoder.own_attention = True  # off by default
    eot, prompts = encoder.eot_index(tokens), encoder.embed(tokens).detach()
    with torch.no_grad():
        encoder(prompts, eot)
    verdict = fast_paths.verdict(fast_paths.TEXT_ATTENTION, "cpu")
    assert verdict.passed and verdict.bound == fast_paths.ATTENTION_BOUND[dtype]

    fast_paths.reset()
    ours = encoders._attention
    monkeypatch.setattr(encoders, "_attention", lambda *args: ours(*args) * (1 + 4 * verdict.bound))
    encoder.attention_switch = "TRAINER.X.OWN_ATTENTION False"
    with torch.no_grad():
        got = encoder(prompts, eot)
        verdict = fast_paths.verdict(fast_paths.TEXT_ATTENTION, "cpu")
        assert verdict.state == "fell back" and verdict.difference > verdict.bound
        assert torch.equal(encoder(prompts, eot), got)  # from now on open_clip's blocks, unchecked
        monkeypatch.setattr(encoders, "_own_attention", lambda block: False)
        assert torch.equal(got, encoder(prompts, eot))  # the first call already ran open_clip's blocks
    (warning,) = fast_path_warnings
    for words in ("our attention in the text blocks", "on cpu", "difference", "TRAINER.X.OWN_ATTENTION False"):
        assert words in warning


def test_own_attention_off_by_default_runs_open_clips_blocks_unchecked(tiny_clip, classnames, monkeypatch):
    import lamm_plugin.encoders as encoders
    from lamm_plugin import fast_paths

    tokens = _tokens(tiny_clip, classnames)
    encoder = TextEncoder(tiny_clip.model)
    assert encoder.own_attention is False
    eot, prompts = encoder.eot_index(tokens), encoder.embed(tokens).detach()
    ours = encoders._attention
    monkeypatch.setattr(encoders, "_attention", lambda *args: ours(*args) + 1)  # would be seen if it ran
    with torch.no_grad():
        got = encoder(prompts, eot)
        monkeypatch.setattr(encoders, "_own_attention", lambda block: False)
        assert torch.equal(got, encoder(prompts, eot))
    assert fast_paths.verdict(fast_paths.TEXT_ATTENTION, "cpu") is None
