"""Build a CLIP model through open_clip.

This module is the only caller of ``open_clip.create_model`` and of the tokenizer factory. It accepts the
names CoOp-family configs write (``"ViT-B/16"``), any open_clip model name with a pretrained tag
(``"ViT-B-16"`` + ``"laion2b_s34b_b88k"``), a local checkpoint file (including OpenAI's original TorchScript
``.pt`` files that CoOp-family users keep in ``~/.cache/clip``; a file in OpenAI's layout builds its own shapes,
as OpenAI's loader does) and tiny random-weight configurations for tests.

OpenAI's weights were trained with QuickGELU: ``"ViT-B/16"`` maps to ``"ViT-B-16-quickgelu"``. Building
``"ViT-B-16"`` with OpenAI weights silently gives different features, which is why the mapping lives here.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Optional

import open_clip
import torch
from open_clip.model import CLIP, convert_weights_to_lp, get_cast_dtype
from open_clip.transformer import LayerNorm, LayerNormFp32
from torch import nn

from lamm_plugin.encoders import ImageEncoder
from lamm_plugin.layout import PRECISIONS

logger = logging.getLogger(__name__)

#: OpenAI-style names (as in CoOp configs) -> (open_clip architecture, pretrained tag, OpenAI file name).
OPENAI_MODELS: dict[str, tuple[str, str, str]] = {
    "RN50": ("RN50-quickgelu", "openai", "RN50.pt"),
    "RN101": ("RN101-quickgelu", "openai", "RN101.pt"),
    "RN50x4": ("RN50x4-quickgelu", "openai", "RN50x4.pt"),
    "RN50x16": ("RN50x16-quickgelu", "openai", "RN50x16.pt"),
    "RN50x64": ("RN50x64-quickgelu", "openai", "RN50x64.pt"),
    "ViT-B/32": ("ViT-B-32-quickgelu", "openai", "ViT-B-32.pt"),
    "ViT-B/16": ("ViT-B-16-quickgelu", "openai", "ViT-B-16.pt"),
    "ViT-L/14": ("ViT-L-14-quickgelu", "openai", "ViT-L-14.pt"),
    "ViT-L/14@336px": ("ViT-L-14-336-quickgelu", "openai", "ViT-L-14-336px.pt"),
}

#: Tiny random-weight configurations (real tokenizer, context 77) for tests and CPU demos.
TINY_MODELS: dict[str, dict[str, Any]] = {
    "tiny-vit": {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 3, "width": 48, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3},
    },
    "tiny-rn": {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
}

#: Precisions that hold CLIP's matmul weights in low precision. As in ``open_clip.create_model``, such models are
#: built with a cast dtype, which makes every normalisation a ``LayerNormFp32`` (fp32 weights, fp32 compute): a
#: plain ``LayerNorm`` would keep fp32 weights and receive low-precision activations, which CUDA kernels refuse.
LOW_PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16}

#: Where CoOp-family repos (OpenAI's ``clip`` package) keep downloaded weights.
OPENAI_CACHE = os.path.expanduser("~/.cache/clip")


@dataclass
class CLIPBundle:
    """A frozen CLIP model with everything needed to build prompts for it.

    Attributes:
        model: The open_clip CLIP model, in eval mode with all parameters frozen.
        tokenizer: Callable mapping a list of strings to a ``[N, context_length]`` LongTensor.
        name: The name the model was built from (as given by the user).
        arch: The open_clip architecture name.
        pretrained: Pretrained tag or checkpoint path ("" for random weights).
        precision: One of :data:`PRECISIONS`.
        image_size: Input resolution of the image tower.
        mean: Normalisation mean the weights expect.
        std: Normalisation std the weights expect.
    """

    model: CLIP
    tokenizer: Callable[..., torch.Tensor]
    name: str
    arch: str
    pretrained: str
    precision: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: torch's CPU random state before and after the model's construction (its initialisation's draws), for the
    #: methods whose original draws prompts inside that construction (:func:`draw_inside_clip_build`).
    build_rng: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    # What host methods need to know about the towers, so that they read no open_clip internals themselves.
    @property
    def device(self) -> torch.device:
        """The device CLIP's weights are on."""
        return self.model.token_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the towers compute in (their cast dtype: fp16 / bf16 for low-precision builds)."""
        return self.model.transformer.get_cast_dtype()

    @property
    def text_width(self) -> int:
        """Width of a token embedding of the text tower (text prompt dimension)."""
        return self.model.token_embedding.weight.shape[1]

    @property
    def text_blocks(self) -> int:
        """Number of transformer blocks of the text tower."""
        return len(self.model.transformer.resblocks)

    @property
    def vision_width(self) -> int:
        """Token width of the vision transformer (visual prompt dimension); raises on ResNet towers."""
        return ImageEncoder(self.model).width

    @property
    def image_blocks(self) -> int:
        """Number of transformer blocks of the image tower (0 for ResNet towers, which take no visual prompts)."""
        return ImageEncoder(self.model).num_blocks

    @property
    def embed_dim(self) -> int:
        """Width of the image and text features (the joint embedding)."""
        return self.model.visual.output_dim

    @torch.no_grad()
    def token_embeddings(self, text: str) -> torch.Tensor:
        """CLIP's token embeddings ``[n_tokens, text_width]`` of ``text`` (without start/end tokens), float32."""
        ids = torch.tensor(self.tokenizer.encode(text), dtype=torch.long, device=self.device)
        return self.model.token_embedding(ids).float()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Frozen CLIP's unnormalised text features ``[N, embed_dim]`` of ``texts`` (no prompts), float32."""
        return self.model.encode_text(self.tokenizer(texts).to(self.device)).float()


def _is_torchscript_archive(path: str) -> bool:
    """True for OpenAI's original TorchScript ``.pt`` files (a zip with a ``code/`` folder)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in n or n.startswith("code/") for n in archive.namelist())


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint file: an OpenAI TorchScript archive (as float32) or a (wrapped) state dict."""
    if _is_torchscript_archive(path):
        state_dict = torch.jit.load(path, map_location="cpu").state_dict()
        for key in ("input_resolution", "context_length", "vocab_size"):
            state_dict.pop(key, None)
        return {k: v.float() for k, v in state_dict.items()}
    return open_clip.factory.load_state_dict(path, weights_only=True)


def _blocks(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    """How many numbered blocks ``<prefix><i>.`` the state dict has."""
    return len({k[len(prefix) :].split(".")[0] for k in state_dict if k.startswith(prefix)})


def clip_shapes(state_dict: dict[str, torch.Tensor]) -> Optional[dict[str, Any]]:
    """The architecture a CLIP state dict in OpenAI's layout has (open_clip ``CLIP`` arguments), None for another
    layout.

    As OpenAI's ``build_model`` (which the CoOp-family repositories use) reads it: widths, depths, patch size,
    resolution, context length and vocabulary from the tensors' shapes; heads are ``width // 64``.
    """
    try:
        text_width = state_dict["ln_final.weight"].shape[0]
        text = {
            "context_length": state_dict["positional_embedding"].shape[0],
            "vocab_size": state_dict["token_embedding.weight"].shape[0],
            "width": text_width,
            "heads": text_width // 64,
            "layers": _blocks(state_dict, "transformer.resblocks."),
        }
        embed_dim = state_dict["text_projection"].shape[1]
        if "visual.proj" in state_dict:  # a ViT
            conv = state_dict["visual.conv1.weight"]
            grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            vision = {
                "image_size": grid * conv.shape[-1],
                "layers": _blocks(state_dict, "visual.transformer.resblocks."),
                "width": conv.shape[0],
                "patch_size": conv.shape[-1],
                "head_width": 64,
            }
        else:  # a modified ResNet
            grid = round((state_dict["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
            vision = {
                "image_size": grid * 32,
                "layers": [_blocks(state_dict, f"visual.layer{i}.") for i in (1, 2, 3, 4)],
                "width": state_dict["visual.layer1.0.conv1.weight"].shape[0],
                "head_width": 64,
            }
    except KeyError:
        return None
    return {"embed_dim": embed_dim, "vision_cfg": vision, "text_cfg": text}


def draw_like_a_clip_build(clip: CLIPBundle) -> None:
    """Make, and drop, the random draws that building a CLIP of ``clip``'s shapes makes (its initialisation before
    weights load), as an original that builds a second CLIP while building its model does; nothing for a CLIP not in
    OpenAI's layout (which those originals cannot load)."""
    shapes = clip_shapes(clip.model.state_dict())
    if shapes is not None:  # heads do not change the draws; the shapes give none below width 64
        shapes["text_cfg"]["heads"] = max(1, shapes["text_cfg"]["heads"])
        shapes["vision_cfg"]["head_width"] = min(64, shapes["vision_cfg"]["width"])
        CLIP(**shapes)


def _replay_openai_build(shapes: dict[str, Any], prompt: Callable[[str, int], None]) -> None:
    """Make the random draws of OpenAI's ``build_model`` for a ViT CLIP of ``shapes``, in its order, and call
    ``prompt(tower, block)`` where the originals that prompt inside CLIP (MaPLe's repository's VPT and IVLP,
    PromptSRC; their ``clip/model.py``) draw: ``("vision", 0)`` after the patch embedding, ``(tower, i)`` after the
    initialisation of block ``i`` of a tower. The modules built here only draw (heads do not change the draws)."""
    vision, text, embed = shapes["vision_cfg"], shapes["text_cfg"], shapes["embed_dim"]

    def blocks(tower: str, width: int, layers: int) -> None:
        for i in range(layers):
            nn.MultiheadAttention(width, 1), nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
            if i > 0:  # the first block's prompt is the shallow one
                prompt(tower, i)

    width, patch = vision["width"], vision["patch_size"]
    nn.Conv2d(3, width, patch, patch, bias=False)
    prompt("vision", 0)
    torch.randn(width), torch.randn((vision["image_size"] // patch) ** 2 + 1, width)  # class, positional embeddings
    blocks("vision", width, vision["layers"])
    torch.randn(width, embed)  # visual projection
    width = text["width"]
    blocks("text", width, text["layers"])
    token_embedding = nn.Embedding(text["vocab_size"], width).weight
    # CLIP.initialize_parameters: embeddings, each text block's attention and MLP weights, the text projection
    nn.init.normal_(token_embedding), nn.init.normal_(torch.empty(text["context_length"], width))
    for _ in range(text["layers"]):
        for shape in ((3 * width, width), (width, width), (4 * width, width), (width, 4 * width)):
            nn.init.normal_(torch.empty(shape))
    nn.init.normal_(torch.empty(width, embed))


def draw_inside_clip_build(clip: CLIPBundle, vision: tuple[int, int], text: tuple[int, int], std: float) -> dict:
    """Prompt tokens drawn where the originals that prompt inside CLIP draw them: while OpenAI's ``build_model``
    constructs it (MaPLe's repository's VPT and IVLP, PromptSRC), so that a run starts from their initial values.

    ``vision`` and ``text`` are ``(tokens per block, blocks with prompts)``; returns ``{"vision": [shallow,
    block 1, ...], "text": [block 1, ...]}`` (the first text block's prompt is the prompt learner's, drawn after
    CLIP), each ``[tokens, width]`` from ``N(0, std^2)``. The construction's draws are made again from the random
    state before it, with the prompts' draws in their places: the random state afterwards is the one drawing the
    prompts after construction leaves, which is checked. Where the draws cannot be placed (a CLIP not in OpenAI's
    ViT layout, a random state that moved since the construction, a construction that drew otherwise) the prompts
    are drawn now, in the same order.
    """
    shapes = clip_shapes(clip.model.state_dict())
    spec = {"vision": (vision[0], clip.vision_width, vision[1]), "text": (text[0], clip.text_width, text[1])}
    drawn: dict[str, list[torch.Tensor]] = {"vision": [], "text": []}

    def prompt(tower: str, block: int) -> None:
        tokens, width, depth = spec[tower]
        if block < depth:
            drawn[tower].append(nn.init.normal_(torch.empty(tokens, width), std=std))

    def now() -> None:
        for block in range(spec["vision"][2]):
            prompt("vision", block)
        for block in range(1, spec["text"][2]):
            prompt("text", block)

    placeable = (
        shapes is not None
        and "patch_size" in shapes["vision_cfg"]
        and clip.build_rng is not None
        and torch.equal(torch.get_rng_state(), clip.build_rng[1])
    )
    now()
    if placeable:
        after, posthoc = torch.get_rng_state(), drawn
        drawn = {"vision": [], "text": []}
        torch.set_rng_state(clip.build_rng[0])
        _replay_openai_build(shapes, prompt)
        if not torch.equal(torch.get_rng_state(), after):
            logger.info("CLIP's construction drew otherwise than OpenAI's: prompts drawn after it")
            torch.set_rng_state(after)
            drawn = posthoc
    return drawn


def _shapes_text(shapes: dict[str, Any]) -> str:
    vision, text = shapes["vision_cfg"], shapes["text_cfg"]
    patch = f", patch {vision['patch_size']}" if "patch_size" in vision else " (ResNet)"
    return (
        f"image {vision['image_size']}px{patch}, vision width {vision['width']} x {vision['layers']} layers, "
        f"text width {text['width']} x {text['layers']} layers, context {text['context_length']}, "
        f"embedding {shapes['embed_dim']}"
    )


def _named_shapes(config: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """:func:`clip_shapes` of an architecture's config, read from a model on the meta device (no random draws)."""
    if config is None:
        return None
    with torch.device("meta"):
        return clip_shapes(CLIP(**config).state_dict())


def _model_for_file(
    path: str, name: str, precision: str, named_config: Optional[dict[str, Any]], build_named: Callable[[], CLIP]
) -> CLIP:
    """The model of ``name`` with the weights of a local checkpoint (OpenAI TorchScript archive or a possibly
    wrapped state dict), or, when a file in OpenAI's layout has other shapes than ``name``'s architecture, a CLIP of
    the file's own shapes, as OpenAI's and the originals' loaders build it: only that model is built, so the random
    draws of its initialisation are the originals' too.

    Raises:
        ValueError: The file cannot be loaded into ``name``'s model and its shapes cannot be read (another layout),
            or its widths give no number of heads; the message names the file, the shapes found and ``name``.
    """
    state_dict = _read_state_dict(path)
    found = clip_shapes(state_dict)
    if found is None:  # another layout: open_clip's loader converts the ones it knows
        model = build_named()
        try:
            open_clip.factory.load_checkpoint(model, path, weights_only=True)
        except (RuntimeError, AssertionError, KeyError) as err:
            own = model.state_dict()
            differ = [f"{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})" for k, v in state_dict.items()
                      if k in own and own[k].shape != v.shape][:3]  # fmt: skip
            raise ValueError(
                f"CLIP checkpoint {path} does not fit backbone {name!r} and is not in OpenAI's layout, so its "
                f"architecture cannot be read from it ({'; '.join(differ) or err}): give the MODEL.BACKBONE.NAME "
                "the file was trained as."
            ) from err
        return model
    if found == _named_shapes(named_config):
        model = build_named()
    else:
        if found["text_cfg"]["heads"] < 1 or found["vision_cfg"]["width"] < 64:
            raise ValueError(
                f"CLIP checkpoint {path} has other shapes ({_shapes_text(found)}) than backbone {name!r}, and widths "
                "below 64 give no number of heads (OpenAI's rule: width // 64): give the MODEL.BACKBONE.NAME the "
                "file was trained as."
            )
        quick_gelu = bool((named_config or {}).get("quick_gelu", True))
        logger.info("Building CLIP from the shapes of %s (%s), not those of %r", path, _shapes_text(found), name)
        model = CLIP(**found, quick_gelu=quick_gelu, cast_dtype=get_cast_dtype(precision))
        if precision in LOW_PRECISIONS:
            convert_weights_to_lp(model, dtype=LOW_PRECISIONS[precision])
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if k != "attn_mask"]
    if missing or unexpected:
        raise ValueError(
            f"CLIP checkpoint {path} ({_shapes_text(found)}) does not fit backbone {name!r}: missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}."
        )
    return model


def _resolve(name: str, pretrained: Optional[str]) -> tuple[str, str, Optional[str]]:
    """Map a user-facing name to (open_clip arch, pretrained tag or path, OpenAI file name)."""
    if name in OPENAI_MODELS:
        arch, tag, filename = OPENAI_MODELS[name]
        return arch, tag if pretrained is None else pretrained, filename
    if name in TINY_MODELS:
        return name, pretrained or "", None
    if name in open_clip.list_models():
        if pretrained is None:
            raise ValueError(
                f"open_clip model {name!r} needs a pretrained tag or checkpoint path, one of: "
                f"{open_clip.list_pretrained_tags_by_model(name)} (or pretrained='' for random weights)."
            )
        return name, pretrained, None
    suggestions = ", ".join(sorted(OPENAI_MODELS) + sorted(TINY_MODELS))
    raise ValueError(
        f"Unknown CLIP backbone {name!r}. Use an OpenAI-style name ({suggestions}) or any open_clip model "
        f"name (open_clip.list_models()) with a pretrained tag, e.g. name='ViT-B-16', pretrained='laion2b_s34b_b88k'."
    )


def _tiny_model(name: str, precision: str) -> CLIP:
    """A tiny random-weight CLIP, built for ``precision`` the way ``open_clip.create_model`` builds its models."""
    model = CLIP(**TINY_MODELS[name], cast_dtype=get_cast_dtype(precision))
    if precision in LOW_PRECISIONS:
        convert_weights_to_lp(model, dtype=LOW_PRECISIONS[precision])
    return model


def load_clip(
    name: str,
    pretrained: Optional[str] = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    cache_dir: Optional[str] = None,
) -> CLIPBundle:
    """Build a frozen CLIP model.

    Args:
        name: ``"ViT-B/16"``-style OpenAI name, an open_clip architecture name, or a tiny test config
            (``"tiny-vit"``, ``"tiny-rn"``).
        pretrained: open_clip pretrained tag or a local checkpoint path (a file in OpenAI's layout whose shapes
            differ from ``name``'s architecture builds the file's own architecture, as OpenAI's loader does).
            ``None`` picks the default for OpenAI
            names (their original weights, read from ``~/.cache/clip`` when present) and random weights for
            tiny configs. ``""`` means random weights.
        precision: ``"fp32"``, ``"fp16"``, ``"bf16"`` or ``"amp"`` (fp32 weights, autocast at run time).
        device: Device to put the model on.
        cache_dir: open_clip download cache (defaults to open_clip's / Hugging Face's).

    Returns:
        A :class:`CLIPBundle` with the model in eval mode and all its parameters frozen.

    Raises:
        ValueError: Unknown name or precision; a checkpoint file that fits neither ``name`` nor a readable
            architecture of its own.
        FileNotFoundError: A checkpoint path that does not exist.
        RuntimeError: Weights that cannot be downloaded; the message says where to put the file instead.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; use one of {PRECISIONS}.")
    arch, source, openai_file = _resolve(name, pretrained)

    # CoOp-family users already have OpenAI's files in ~/.cache/clip: use them instead of downloading again.
    if openai_file is not None and source == "openai":
        cached = os.path.join(OPENAI_CACHE, openai_file)
        if os.path.isfile(cached):
            source = cached

    # Weights load into a model already in its precision (low-precision tensors receive rounded copies).
    # A checkpoint file of other shapes than the named architecture's builds a model of the file's shapes.
    is_file = bool(source) and (os.path.sep in source or source.endswith((".pt", ".pth", ".bin", ".safetensors")))
    own_shapes = False
    rng_before = torch.get_rng_state()
    if name in TINY_MODELS and not source:
        model = _tiny_model(name, precision)
    elif not source:
        model = open_clip.create_model(arch, pretrained=None, precision=precision)
    elif name in TINY_MODELS or is_file:
        if name in TINY_MODELS:
            config, build = TINY_MODELS[name], lambda: _tiny_model(name, precision)
        else:
            config = open_clip.get_model_config(arch)
            build = lambda: open_clip.create_model(arch, pretrained=None, precision=precision)  # noqa: E731
        model = _model_for_file(_existing_file(source), name, precision, config, build)
        own_shapes = clip_shapes(model.state_dict()) != _named_shapes(config)
    else:
        if source == "openai" and "openai" not in open_clip.list_pretrained_tags_by_model(arch):
            # open_clip < 3.0 lists OpenAI weights under the plain name and builds them with QuickGELU itself.
            arch = arch.removesuffix("-quickgelu")
        try:
            model = open_clip.create_model(arch, pretrained=source, precision=precision, cache_dir=cache_dir)
        except Exception as err:  # network errors come as many types (OSError, HF hub errors, URLError)
            where = os.path.join(OPENAI_CACHE, openai_file) if openai_file else "/path/to/checkpoint.pt"
            raise RuntimeError(
                f"Could not get the weights of {name!r} (open_clip {arch!r}, pretrained {source!r}): {err}\n"
                f"Without internet access, download the checkpoint elsewhere and either put it at {where} "
                f"or pass its path as the pretrained value (MODEL.BACKBONE.PRETRAINED=/path/to/file in configs)."
            ) from err

    build_rng = (rng_before, torch.get_rng_state())
    model.eval().requires_grad_(False).to(device)
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    return CLIPBundle(
        model=model,
        tokenizer=(
            open_clip.get_tokenizer(arch)
            if name not in TINY_MODELS and not own_shapes
            else open_clip.SimpleTokenizer(context_length=model.context_length)
        ),
        name=name,
        arch=arch,
        pretrained=source,
        precision=precision,
        image_size=int(image_size),
        mean=tuple(getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN),
        std=tuple(getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD),
        build_rng=build_rng,
    )


def clip_in_precision(clip: CLIPBundle, precision: str) -> CLIPBundle:
    """``clip``'s weights (as it holds them) in ``precision``: for a low precision built as :func:`load_clip` builds
    it from those weights (``LayerNormFp32`` normalisations, matmul weights rounded to ``precision``), for ``"fp32"``
    every weight in float32 (as the originals' ``.float()`` of a CLIP their loader built in fp16). A copy made in
    memory, so no file is read and nothing is drawn from the random streams; ``clip`` itself when it is in
    ``precision`` already.

    Raises:
        ValueError: ``precision`` is none of ``"fp32"`` and :data:`LOW_PRECISIONS`.
    """
    if precision not in (*LOW_PRECISIONS, "fp32"):
        raise ValueError(f"Precision {precision!r} is none of fp32, {', '.join(LOW_PRECISIONS)}.")
    if clip.precision == precision:
        return clip
    model = copy.deepcopy(clip.model).float()
    if precision == "fp32":  # every weight in float32 (a LayerNormFp32 computes as a LayerNorm on float32)
        return dataclasses.replace(clip, model=model, precision=precision)
    for module in model.modules():
        if type(module) is LayerNorm:  # what a cast dtype builds (open_clip's towers)
            module.__class__ = LayerNormFp32
    convert_weights_to_lp(model, dtype=LOW_PRECISIONS[precision])
    return dataclasses.replace(clip, model=model, precision=precision)


def pretrained_from_config(value: Any) -> Optional[str]:
    """``MODEL.BACKBONE.PRETRAINED`` of a run's config as :func:`load_clip`'s ``pretrained``.

    ``None`` or ``True`` is the backbone's default weights (``None``), ``False`` random weights (``""``); anything
    else is a pretrained tag or a checkpoint path.
    """
    if value is None or value is True:
        return None
    if value is False:
        return ""
    return str(value)


def autocast_dtype(precision: str, device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype of ``precision`` on a device type: under ``amp`` fp16 on CUDA and bf16 elsewhere (CPU
    autocast supports bf16); ``None`` (no autocast) for the other precisions, whose weights carry their dtype."""
    if precision != "amp":
        return None
    return torch.float16 if device_type == "cuda" else torch.bfloat16


def weights_fingerprint(model: CLIP) -> str:
    """A short hash that tells CLIP weights apart, the same in every precision the model is built in.

    It reads tensors that every precision keeps in float32 (token and positional embeddings, the class
    embedding, the final and pre-transformer LayerNorms), so a model trained in fp16 and evaluated in fp32 agrees.
    """
    visual = model.visual
    tensors = [
        model.token_embedding.weight,
        model.positional_embedding,
        model.ln_final.weight,
        model.ln_final.bias,
        getattr(visual, "class_embedding", None),
        getattr(getattr(visual, "ln_pre", None), "weight", None),
    ]
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is not None:
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _existing_file(path: str) -> str:
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CLIP checkpoint {path!r} does not exist.")
    return path
