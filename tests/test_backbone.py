"""Building CLIP through open_clip: names, local checkpoints, precision, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch

from lamm_plugin import backbone
from lamm_plugin.backbone import OPENAI_MODELS, load_clip


@pytest.mark.e2e
def test_import_does_not_pull_dassl_or_yacs():
    code = "import sys, lamm_plugin; bad = {'dassl', 'yacs'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["ViT-B/16", "ViT-B/32", "ViT-L/14", "RN50"])
def test_openai_names_map_to_quickgelu_architectures(name):
    arch, tag, _ = OPENAI_MODELS[name]
    assert arch.endswith("-quickgelu") and tag == "openai"
    assert arch in open_clip.list_models()
    # open_clip >= 3.0 lists OpenAI weights under the -quickgelu name, older releases under the plain one.
    tags = open_clip.list_pretrained_tags_by_model(arch) + open_clip.list_pretrained_tags_by_model(
        arch[: -len("-quickgelu")]
    )
    assert "openai" in tags


def test_tiny_model_is_frozen_eval_fp32_with_real_tokenizer(tiny_clip):
    model = tiny_clip.model
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    tokens = tiny_clip.tokenizer(["a photo of a dog."])
    assert tokens.shape == (1, 77)
    assert tokens[0, :3].tolist() == [49406, 320, 1125]  # <start_of_text> a photo
    assert tiny_clip.image_size == 32


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="Unknown CLIP backbone 'ViT-B/17'.*ViT-B/16"):
        load_clip("ViT-B/17")


def test_open_clip_name_needs_a_pretrained_tag():
    with pytest.raises(ValueError, match="laion2b_s34b_b88k"):
        load_clip("ViT-B-16")


def test_unknown_precision():
    with pytest.raises(ValueError, match="precision"):
        load_clip("tiny-vit", precision="int8")


@pytest.mark.parametrize(("precision", "dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_low_precision_weights(precision, dtype):
    model = load_clip("tiny-vit", precision=precision).model
    assert model.transformer.resblocks[0].mlp.c_fc.weight.dtype == dtype
    assert model.visual.conv1.weight.dtype == dtype


def test_amp_keeps_fp32_weights():
    assert load_clip("tiny-vit", precision="amp").model.visual.conv1.weight.dtype == torch.float32


def test_clip_in_fp16_is_the_fp16_build_of_the_same_weights(tiny_clip, tmp_path):
    """An fp16 copy of a CLIP in memory is what load_clip builds in fp16 from the same weights (module types,
    tensors, text features bit for bit: the same computation), and copying draws nothing and leaves the CLIP as it
    was."""
    path = tmp_path / "tiny.pt"
    torch.save(tiny_clip.model.state_dict(), path)
    built = load_clip("tiny-vit", pretrained=str(path), precision="fp16")
    rng = torch.get_rng_state()
    copied = backbone.clip_in_precision(tiny_clip, "fp16")
    assert torch.equal(torch.get_rng_state(), rng)
    assert copied.precision == "fp16" and copied.dtype == torch.float16 and tiny_clip.dtype == torch.float32
    assert [type(m) for m in copied.model.modules()] == [type(m) for m in built.model.modules()]
    ours, theirs = copied.model.state_dict(), built.model.state_dict()
    assert list(ours) == list(theirs)
    for name, tensor in ours.items():
        assert tensor.dtype == theirs[name].dtype and torch.equal(tensor, theirs[name]), name
    texts = ["a photo of a dog.", "a photo of a red fox, a type of texture."]
    assert torch.equal(copied.encode_texts(texts), built.encode_texts(texts))
    assert all(p.dtype == torch.float32 for p in tiny_clip.model.parameters())
    assert backbone.clip_in_precision(copied, "fp16") is copied
    # Back to float32, as the originals' .float() of a CLIP built in fp16: the fp16 values, every weight float32.
    floated = backbone.clip_in_precision(copied, "fp32")
    assert floated.dtype == torch.float32 and copied.dtype == torch.float16
    rounded = {k: v.float() for k, v in copied.model.state_dict().items()}
    for name, tensor in floated.model.state_dict().items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, rounded[name]), name
    reference = load_clip("tiny-vit", pretrained=str(path))
    reference.model.load_state_dict(rounded)
    assert torch.equal(floated.encode_texts(texts), reference.encode_texts(texts))
    with pytest.raises(ValueError, match="'amp' is none of fp32, fp16, bf16"):
        backbone.clip_in_precision(tiny_clip, "amp")


def test_download_failure_says_where_to_put_the_file(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(backbone, "OPENAI_CACHE", "/nonexistent/clip-cache")
    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(RuntimeError, match=r"/nonexistent/clip-cache/ViT-B-16\.pt.*PRETRAINED"):
        load_clip("ViT-B/16")


def test_missing_checkpoint_file():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip("tiny-vit", pretrained="/nonexistent/weights.pt")


def test_state_dict_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    source = load_clip("tiny-vit").model
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    loaded = load_clip("tiny-vit", pretrained=str(path)).model
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


class _ScriptedWeights(torch.nn.Module):
    """A TorchScript archive holding a state dict, like OpenAI's original .pt files."""

    def __init__(self, state_dict):
        super().__init__()
        for key, value in state_dict.items():
            self.register_buffer(key.replace(".", "__"), value)

    def forward(self, x):
        return x


def test_openai_torchscript_archive(tmp_path, monkeypatch):
    torch.manual_seed(2)
    source = load_clip("tiny-vit").model
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.script(_ScriptedWeights(source.state_dict())).save(str(path))
    assert backbone._is_torchscript_archive(str(path))
    # OpenAI archives use dotted names; emulate by un-mangling the buffer names on load.
    real_jit_load = torch.jit.load

    class _Unmangled:
        def __init__(self, module):
            self.module = module

        def state_dict(self):
            return {k.replace("__", "."): v for k, v in self.module.state_dict().items()}

    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: _Unmangled(real_jit_load(*a, **k)))
    loaded = load_clip("tiny-vit", pretrained=str(path)).model
    assert torch.equal(loaded.token_embedding.weight, source.token_embedding.weight)
    assert torch.equal(loaded.visual.proj, source.visual.proj)


def test_openai_weights_are_read_from_the_clip_cache(tmp_path, monkeypatch):
    calls = {}

    def fake_create_model(arch, pretrained=None, **kwargs):
        calls["pretrained"] = pretrained
        return load_clip("tiny-vit").model

    monkeypatch.setattr(backbone, "OPENAI_CACHE", str(tmp_path))
    monkeypatch.setattr(open_clip, "create_model", fake_create_model)

    def fake_load(path, name, precision, config, build):
        calls["file"] = path
        return build()

    monkeypatch.setattr(backbone, "_model_for_file", fake_load)
    (tmp_path / "ViT-B-16.pt").write_bytes(b"x")
    bundle = load_clip("ViT-B/16")
    assert calls["pretrained"] is None and calls["file"] == str(tmp_path / "ViT-B-16.pt")
    assert bundle.arch == "ViT-B-16-quickgelu"


#: A small CLIP in OpenAI's layout whose widths are multiples of 64 (OpenAI's loader infers heads as width // 64).
SMALL_OPENAI_LAYOUT = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "patch_size": 16, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


@pytest.mark.parametrize("name", ["ViT-B/32", "tiny-vit"])
def test_a_file_of_other_shapes_builds_its_own_architecture(tmp_path, name):
    torch.manual_seed(3)
    source = open_clip.model.CLIP(**SMALL_OPENAI_LAYOUT)
    path = tmp_path / "small.pt"
    torch.save(source.state_dict(), path)
    bundle = load_clip(name, pretrained=str(path))
    model = bundle.model
    assert backbone.clip_shapes(model.state_dict()) == backbone.clip_shapes(source.state_dict())
    assert len(model.transformer.resblocks) == 2 and model.transformer.resblocks[0].attn.num_heads == 1
    assert isinstance(model.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert bundle.image_size == 32 and bundle.tokenizer(["a dog"]).shape == (1, 77)
    # Only the file's architecture was built: its initialisation made the random draws the originals' builder makes.
    torch.manual_seed(4)
    load_clip(name, pretrained=str(path))
    after_load = torch.rand(1)
    torch.manual_seed(4)
    open_clip.model.CLIP(**SMALL_OPENAI_LAYOUT)
    assert torch.equal(after_load, torch.rand(1))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the same modules in the same mode: the same computation
        assert torch.equal(model.encode_image(images), source.eval().encode_image(images))


def test_a_file_of_other_shapes_without_heads_is_refused_with_its_shapes(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(load_clip("tiny-vit").model.state_dict(), path)  # widths 32 and 48: no width // 64 heads
    with pytest.raises(
        ValueError,
        match=r"tiny\.pt has other shapes \(image 32px, patch 8, vision width 48 x 3 "
        r"layers, text width 32 x 3 layers.*than backbone 'ViT-B/32'.*MODEL.BACKBONE.NAME",
    ):
        load_clip("ViT-B/32", pretrained=str(path))


def test_a_file_of_another_layout_that_does_not_fit_is_refused(tmp_path):
    state = load_clip("tiny-vit").model.state_dict()
    state.pop("ln_final.weight")  # not OpenAI's layout: its shapes cannot be read
    state["token_embedding.weight"] = torch.zeros(49408, 40)
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(
        ValueError,
        match=r"other\.pt does not fit backbone 'tiny-vit'.*token_embedding.weight "
        r"\(49408, 40\) \(expected \(49408, 32\)\).*MODEL.BACKBONE.NAME",
    ):
        load_clip("tiny-vit", pretrained=str(path))


# ---- prompts drawn inside CLIP's construction (VPT, IVLP, PromptSRC as their originals) -------------------------
def _drawn_now(vision: tuple[int, int], text: tuple[int, int], widths: tuple[int, int]) -> list[torch.Tensor]:
    """The prompts of :func:`backbone.draw_inside_clip_build` drawn in its order from the random state as it is."""
    tokens = [(vision[0], widths[0])] * vision[1] + [(text[0], widths[1])] * (text[1] - 1)
    return [torch.nn.init.normal_(torch.empty(shape), std=0.02) for shape in tokens]


def test_prompts_drawn_inside_the_build_take_other_values_and_leave_the_same_random_state():
    torch.manual_seed(7)
    clip = load_clip("tiny-vit")
    drawn = backbone.draw_inside_clip_build(clip, (2, 3), (3, 2), 0.02)
    after = torch.get_rng_state()
    assert [tuple(t.shape) for t in drawn["vision"]] == [(2, 48)] * 3 and [t.shape for t in drawn["text"]] == [(3, 32)]
    torch.manual_seed(7)
    load_clip("tiny-vit")
    now = _drawn_now((2, 3), (3, 2), (48, 32))
    assert torch.equal(torch.get_rng_state(), after)  # what training draws from is the same
    assert not torch.equal(now[0], drawn["vision"][0])  # the values are those of the construction's places


def test_prompts_are_drawn_after_the_build_when_the_random_state_moved_since():
    torch.manual_seed(7)
    clip = load_clip("tiny-vit")
    torch.rand(1)  # something drew between building CLIP and the prompts: their places cannot be taken again
    state = torch.get_rng_state()
    drawn = backbone.draw_inside_clip_build(clip, (2, 2), (3, 3), 0.02)
    torch.set_rng_state(state)
    assert all(torch.equal(a, b) for a, b in zip(drawn["vision"] + drawn["text"], _drawn_now((2, 2), (3, 3), (48, 32))))


@pytest.mark.parametrize(
    ("trainer", "vision", "text"), [("VPT", (4, 2), (0, 0)), ("IVLP", (2, 2), (3, 2)), ("IVLP", (2, 1), (2, 1))]
)
def test_prompts_drawn_inside_the_build_equal_the_original_builders(tmp_path, trainer, vision, text):
    repo = os.environ.get("MAPLE_ORIGINAL_REPO", "")
    if not repo:
        pytest.skip("the original code is not given: set MAPLE_ORIGINAL_REPO to MaPLe's repository")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import originals

    (original_clip,) = originals.import_original(repo, "clip.model")
    path = tmp_path / "small.pt"
    torch.save(open_clip.model.CLIP(**SMALL_OPENAI_LAYOUT).state_dict(), path)
    design = {"trainer": trainer, "vision_depth": vision[1], "language_depth": text[1], "vision_ctx": vision[0],
              "language_ctx": text[0]}  # fmt: skip
    torch.manual_seed(11)
    theirs = original_clip.build_model(torch.load(path), design)
    after = torch.get_rng_state()
    blocks = [theirs.visual.transformer.resblocks, theirs.transformer.resblocks]
    expected = [theirs.visual.VPT] + [b.VPT_shallow for b in blocks[0] if hasattr(b, "VPT_shallow")]
    expected += [b.VPT_shallow for b in blocks[1] if hasattr(b, "VPT_shallow")]
    torch.manual_seed(11)
    drawn = backbone.draw_inside_clip_build(load_clip("ViT-B/32", str(path)), vision, text, 0.02)
    assert torch.equal(torch.get_rng_state(), after)
    assert len(drawn["vision"] + drawn["text"]) == len(expected)
    assert all(torch.equal(a.detach(), b) for a, b in zip(expected, drawn["vision"] + drawn["text"]))
