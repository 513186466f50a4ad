"""Hand-crafted per-dataset prompt templates of zero-shot CLIP, as CoOp-family papers report them."""

from __future__ import annotations

DEFAULT_TEMPLATE = "a photo of a {}."

DATASET_TEMPLATES: dict[str, str] = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}


def dataset_template(dataset: str) -> str:
    """The zero-shot template of ``dataset`` (``"a photo of a {}."`` for datasets without their own)."""
    return DATASET_TEMPLATES.get(dataset, DEFAULT_TEMPLATE)


#: OpenAI's ImageNet prompt-ensemble templates (CLIP's "Prompt_Engineering_for_ImageNet" notebook, shipped by
#: open_clip) that PromptSRC leaves out of the 60 it averages for frozen CLIP's text features.
_PROMPTSRC_EXCLUDED = frozenset(
    [
        "a jpeg corrupted photo of the {}.",
        "a good photo of a {}.",
        "a plushie {}.",
        "a photo of the nice {}.",
        "a photo of the small {}.",
        "a photo of the weird {}.",
        "the cartoon {}.",
        "art of the {}.",
        "a drawing of the {}.",
        "a photo of the large {}.",
        "a black and white photo of a {}.",
        "the plushie {}.",
        "a dark photo of a {}.",
        "itap of a {}.",
        "graffiti of the {}.",
        "a toy {}.",
        "itap of my {}.",
        "a photo of a cool {}.",
        "a photo of a small {}.",
        "a tattoo of the {}.",
    ]
)


def promptsrc_templates() -> list[str]:
    """The 60 hand-crafted templates (``{}`` for the class) whose text features PromptSRC averages."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    templates = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    return [t for t in templates if t not in _PROMPTSRC_EXCLUDED]
