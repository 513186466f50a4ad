"""Where the host methods put their prompts, against forwards written out here from the papers.

CoOp (Zhou et al., IJCV 2022): ``[SOS] ctx [CLASS] . [EOS]``, ``[SOS] [CLASS] ctx . [EOS]`` or
``[SOS] ctx[:M/2] [CLASS] ctx[M/2:] . [EOS]`` (end, front, middle), shared or class-specific context.
MaPLe (Khattak et al., CVPR 2023): text prompts ``[SOS] P_1..P_n <rest of the template> [CLASS] . [EOS]``; at the
input of blocks ``1 .. J-1`` the ``n`` positions after SOS are replaced by fresh prompts, and the image tower
gets the linear projections of the same prompts appended after the class and patch tokens.
VPT (Jia et al., ECCV 2022): ``n`` tokens appended after the class and patch tokens; deep VPT replaces them at
the input of blocks ``1 .. depth-1``. Prompt outputs never enter the pooled feature.
CoCoOp (Zhou et al., CVPR 2022): image i's prompts are ``[SOS] ctx + meta_net(f_i / |f_i|) [CLASS] . [EOS]``, one
per class. KgCoOp (Yao et al., CVPR 2023): CoOp's logits; its term is 1 - mean_c cos(t_c, frozen CLIP's feature of
the hand-crafted prompt of class c).
These forwards share nothing with :mod:`lamm_plugin.encoders` but CLIP's own blocks.
"""

from __future__ import annotations

import pytest
import torch

from lamm_plugin import (
    CoCoOpConfig,
    CoOpConfig,
    KgCoOpConfig,
    LAMMConfig,
    MaPLeConfig,
    VPTConfig,
    build_model,
    load_clip,
)


def _text_tower(clip, x, eot, deep=()):
    """CLIP's text tower on token embeddings ``x`` ``[C, 77, width]``; ``deep[i]`` replaces positions 1..n at the
    input of block i+1 (MaPLe)."""
    x = x + clip.positional_embedding
    for i, block in enumerate(clip.transformer.resblocks):
        if 1 <= i <= len(deep):
            x = x.clone()
            x[:, 1 : 1 + deep[i - 1].shape[0]] = deep[i - 1]
        if getattr(clip.transformer, "batch_first", False):
            x = block(x, attn_mask=clip.attn_mask)
        else:
            x = block(x.transpose(0, 1), attn_mask=clip.attn_mask).transpose(0, 1)
    return clip.ln_final(x)[torch.arange(len(x)), eot] @ clip.text_projection


def _text_by_hand(clip, tokens, ctx, deep):
    """MaPLe's text prompts: ``ctx`` at positions 1..n of the tokenised template."""
    x = clip.token_embedding(tokens).clone()
    x[:, 1 : 1 + ctx.shape[0]] = ctx
    return _text_tower(clip, x, tokens.argmax(-1), deep)


def _image_by_hand(visual, images, shallow, deep):
    """The image tower with ``shallow`` appended and replaced by ``deep[i]`` before block i+1; pooled without
    the prompt tokens, with the tower's own pooling type."""
    n = shallow.shape[0]
    x = visual.conv1(images).flatten(2).transpose(1, 2)  # [B, grid**2, width]
    x = torch.cat([visual.class_embedding.expand(len(images), 1, -1), x], dim=1) + visual.positional_embedding
    tokens = x.shape[1]
    x = visual.ln_pre(torch.cat([x, shallow.expand(len(images), -1, -1)], dim=1))
    for i, block in enumerate(visual.transformer.resblocks):
        if 1 <= i <= len(deep):
            x = torch.cat([x[:, :tokens], deep[i - 1].expand(len(images), -1, -1)], dim=1)
        if getattr(visual.transformer, "batch_first", False):
            x = block(x)
        else:
            x = block(x.transpose(0, 1)).transpose(0, 1)
    assert x.shape[1] == tokens + n
    x = visual.ln_post(x[:, :tokens])
    pooled = x[:, 1:].mean(1) if visual.pool_type == "avg" else x[:, 0]
    return pooled @ visual.proj


def _images(n=3):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def _randomise(module, seed):
    """Give every prompt tensor a distinct random value (deep prompts that equal each other hide placement)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_maple_prompts_sit_where_the_paper_puts_them(tiny_clip64, classnames, depth):
    model = build_model("maple", tiny_clip64, classnames, MaPLeConfig(prompt_depth=depth), LAMMConfig(enabled=False))
    method = model.method.double()
    _randomise(method, depth)
    clip = tiny_clip64.model
    tokens = tiny_clip64.tokenizer([f"a photo of a {n.replace('_', ' ')}." for n in classnames])
    with torch.no_grad():
        text = _text_by_hand(clip, tokens, method.ctx, list(method.deep_text))
        shallow = method.proj(method.ctx)
        deep = [proj(p) for proj, p in zip(method.deep_proj, method.deep_text)]
        image = _image_by_hand(clip.visual, _images(), shallow, deep)
        ours_text, _ = model.encode_text()
        ours_image = model.encode_image(_images())
    torch.testing.assert_close(ours_text, text, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours_image, image, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_vpt_prompts_sit_where_the_paper_puts_them(tiny_clip64, classnames, depth):
    cfg = VPTConfig(n_ctx_vision=3, prompt_depth_vision=depth)
    model = build_model("vpt", tiny_clip64, classnames, cfg, LAMMConfig(enabled=False))
    method = model.method.double()
    _randomise(method, depth)
    with torch.no_grad():
        want = _image_by_hand(tiny_clip64.model.visual, _images(), method.shallow, list(method.deep))
        got = model.encode_image(_images())
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", ["vpt", "maple"])
def test_prompt_tokens_never_enter_the_pooled_feature(tiny_clip64, classnames, method):
    """A tower that average-pools its tokens: prompt outputs would change the feature if they were pooled."""
    tiny_clip64.model.visual.pool_type = "avg"
    cfg = VPTConfig(n_ctx_vision=3, prompt_depth_vision=2) if method == "vpt" else MaPLeConfig(prompt_depth=2)
    model = build_model(method, tiny_clip64, classnames, cfg, LAMMConfig(enabled=False))
    host = model.method.double()
    _randomise(host, 0)
    prompt = host.visual_prompt()
    with torch.no_grad():
        want = _image_by_hand(tiny_clip64.model.visual, _images(), prompt.shallow, prompt.deep)
        got = model.encode_image(_images())
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("csc", [False, True], ids=["shared", "csc"])
@pytest.mark.parametrize("position", ["end", "front", "middle"])
def test_coop_prompts_are_assembled_as_the_paper_says(tiny_clip64, classnames, position, csc):
    cfg = CoOpConfig(n_ctx=4, class_token_position=position, csc=csc)
    model = build_model("coop", tiny_clip64, classnames, cfg, LAMMConfig(enabled=False))
    method = model.method.double()
    _randomise(method, 7)
    clip, tok = tiny_clip64.model, tiny_clip64.tokenizer
    emb = clip.token_embedding.weight
    sot, eot = emb[tok.encoder["<start_of_text>"]], emb[tok.encoder["<end_of_text>"]]
    period = emb[tok.encode(".")[0]]
    rows, ends = [], []
    for c, name in enumerate(classnames):
        ctx = method.ctx[c] if csc else method.ctx
        name_emb = emb[tok.encode(name.replace("_", " "))]
        parts = {
            "end": [ctx, name_emb],
            "front": [name_emb, ctx],
            "middle": [ctx[:2], name_emb, ctx[2:]],
        }[position]
        seq = torch.cat([sot[None], *parts, period[None], eot[None]])
        ends.append(len(seq) - 1)
        rows.append(torch.cat([seq, seq.new_zeros(77 - len(seq), seq.shape[1])]))
    with torch.no_grad():
        want = _text_tower(clip, torch.stack(rows), torch.tensor(ends))
        got, _ = model.encode_text()
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("clone", [False, True])
def test_maple_deep_projections_start_cloned_only_when_asked(tiny_clip, classnames, clone):
    cfg = MaPLeConfig(prompt_depth=3, clone_deep_proj=clone)
    first, second = build_model("maple", tiny_clip, classnames, cfg, LAMMConfig(enabled=False)).method.deep_proj
    assert torch.equal(first.weight, second.weight) == clone
    assert first.weight.data_ptr() != second.weight.data_ptr()  # copies, trained separately


@pytest.mark.parametrize("lamm", [False, True])
def test_cocoop_prompts_are_per_image(tiny_clip64, classnames, lamm):
    """Per image: the meta-network's bias on every context vector, every class; labels (if any) in each prompt."""
    model = build_model("cocoop", tiny_clip64, classnames, CoCoOpConfig(), LAMMConfig(enabled=lamm)).double()
    _randomise(model, 7)  # context, meta-network and label rows: all distinct
    clip = tiny_clip64.model
    tokens = tiny_clip64.tokenizer([f"a photo of a {n.replace('_', ' ')}." for n in classnames])
    images = _images()
    with torch.no_grad():
        image = torch.nn.functional.normalize(clip.encode_image(images), dim=-1)
        base = clip.token_embedding(tokens)
        if lamm:  # the label rows take the class-name positions (after "a photo of a", before ".")
            rows = model.label_embedding.rows()[model.row_index]
            length = model.base_prompts.shape[1]  # flat positions index [C * length] (truncated prompts)
            base = base.clone()
            base[model.flat_position // length, model.flat_position % length] = rows.to(base.dtype)
            assert int((model.flat_position % length).min()) == 5  # after SOS and "a photo of a" (1..4)
        expected = []
        for f in image:  # the original code's loop over images
            x = base.clone()
            x[:, 1:5] = model.method.ctx + model.method.meta_net(f)
            text = torch.nn.functional.normalize(_text_tower(clip, x, tokens.argmax(-1)), dim=-1)
            expected.append(clip.logit_scale.exp() * f @ text.t())
        logits = model.eval()(images).logits
    # Our logits are float32 (normalised features in float32), and the context goes into float32 prompt embeddings.
    torch.testing.assert_close(logits, torch.stack(expected).float(), rtol=1e-5, atol=1e-5)


def test_kgcoop_term_against_frozen_clip_hand_crafted_prompts(tiny_clip64, classnames):
    """With ``hand_crafted_precision "run"`` the hand-crafted features come from the run's CLIP in its precision."""
    cfg = KgCoOpConfig(dataset="DescribableTextures", kg_weight=3.0, hand_crafted_precision="run")
    model = build_model("kgcoop", tiny_clip64, classnames, cfg, LAMMConfig(enabled=False)).double().train()
    _randomise(model, 8)
    clip = tiny_clip64.model
    names = [n.replace("_", " ") for n in classnames]
    labels = torch.tensor([0, 3, 1])
    with torch.no_grad():
        x = clip.token_embedding(tiny_clip64.tokenizer([f"a photo of a {n}." for n in names])).clone()
        x[:, 1:5] = model.method.ctx
        text = _text_tower(clip, x, tiny_clip64.tokenizer([f"a photo of a {n}." for n in names]).argmax(-1))
        hand = clip.encode_text(tiny_clip64.tokenizer([f"a photo of a {n}, a type of texture." for n in names]))
        cos = torch.nn.functional.cosine_similarity(text, hand, dim=-1)
        out = model(_images(), labels)
    kg = out.losses["kg_alignment"]
    torch.testing.assert_close(kg, (1 - cos.mean()).float(), rtol=1e-6, atol=1e-6)
    ce = torch.nn.functional.cross_entropy(out.logits, labels)
    torch.testing.assert_close(out.losses["total"], ce + 3.0 * kg)


def test_kgcoop_hand_crafted_features_are_the_originals_fp16_ones_in_an_fp32_run(tiny_clip, classnames, tmp_path):
    """By default the hand-crafted features are computed as the original KgCoOp computes them whatever the run's
    precision: by CLIP's weights in fp16 (its second CLIP, never floated), normalised in fp16 when built and again at
    each step, and the term's cosine takes them in fp16 (torch normalises them a third time in fp16)."""
    path = tmp_path / "clip.pt"
    torch.save(tiny_clip.model.state_dict(), path)
    fp16 = load_clip("tiny-vit", pretrained=str(path), precision="fp16")
    names = [n.replace("_", " ") for n in classnames]
    hand_tokens = tiny_clip.tokenizer([f"a photo of a {n}, a type of texture." for n in names])
    cfg = KgCoOpConfig(dataset="DescribableTextures", kg_weight=3.0)
    model = build_model("kgcoop", tiny_clip, classnames, cfg, LAMMConfig(enabled=False)).train()
    _randomise(model.method, 9)
    rng = torch.get_rng_state()
    features = model.method.hand_crafted_features(classnames)
    assert torch.equal(torch.get_rng_state(), rng)
    with torch.no_grad():
        expected = fp16.model.encode_text(hand_tokens)
        for _ in range(2):
            expected = expected / expected.norm(dim=-1, keepdim=True)
    assert features.dtype == torch.float16 and torch.equal(features, expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # an amp run's autocast: not applied to them
        again = build_model("kgcoop", tiny_clip, classnames, cfg, LAMMConfig(enabled=False)).method
        assert torch.equal(again.hand_crafted_features(classnames), expected)

    clip, labels = tiny_clip.model, torch.tensor([0, 3, 1])
    tokens = tiny_clip.tokenizer([f"a photo of a {n}." for n in names])
    with torch.no_grad():
        x = clip.token_embedding(tokens).clone()
        x[:, 1:5] = model.method.ctx
        text = torch.nn.functional.normalize(_text_tower(clip, x, tokens.argmax(-1)), dim=-1)
        kg = model(_images().float(), labels).losses["kg_alignment"]
    cos = torch.nn.functional.cosine_similarity(text, expected, dim=-1)
    torch.testing.assert_close(kg, 1 - cos.mean(), rtol=1e-6, atol=1e-6)

    # The run's own precision: float32 features of the run's CLIP, normalised in float32.
    cfg = KgCoOpConfig(dataset="DescribableTextures", hand_crafted_precision="run")
    own = build_model("kgcoop", tiny_clip, classnames, cfg, LAMMConfig(enabled=False)).method
    with torch.no_grad():
        float32 = torch.nn.functional.normalize(clip.encode_text(hand_tokens), dim=-1)
    assert torch.equal(own.hand_crafted_features(classnames), float32)
