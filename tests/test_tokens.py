"""Token layouts of templates: class-name spans, context slots, EOT, clear errors."""

from __future__ import annotations

import pytest
import torch

from lamm_plugin.tokens import build_layout


def name_token_ids(tokenizer, classnames):
    """BPE ids of each class name (underscores read as spaces), without start/end tokens."""
    return [tokenizer.encode(n.replace("_", " ").strip()) for n in classnames]


@pytest.mark.parametrize(
    ("template", "slots"),
    [("a photo of a {}.", range(4)), ("{} X X X X.", "X"), ("X X {} X X.", "X"), ("a {} in the wild", ())],
)
def test_layout_matches_open_clip_tokenizer(tiny_clip, classnames, template, slots):
    tokenizer = tiny_clip.tokenizer
    layout = build_layout(tokenizer, template, classnames, ctx_slots=slots)
    expected = tokenizer([template.format(n.replace("_", " ")) for n in classnames])
    assert layout.tokens.equal(expected)
    assert layout.eot.equal(expected.argmax(dim=-1))
    names = name_token_ids(tokenizer, classnames)
    for c, ids in enumerate(names):
        start, length = int(layout.name_start[c]), int(layout.name_len[c])
        assert layout.tokens[c, start : start + length].tolist() == ids
    if slots == "X":
        x_id = tokenizer.encode("X")[0]
        assert (layout.tokens.gather(1, layout.ctx_pos) == x_id).all()
        assert layout.ctx_pos.shape == (len(classnames), 4)
    assert layout.max_length == int(expected.argmax(dim=-1).max()) + 1


def test_front_position_shifts_context_after_the_name(tiny_clip):
    layout = build_layout(tiny_clip.tokenizer, "{} X X.", ["dog", "golden retriever"], ctx_slots="X")
    assert layout.name_start.tolist() == [1, 1]
    assert layout.ctx_pos.tolist() == [[2, 3], [3, 4]]


def test_context_slot_indices_count_template_tokens(tiny_clip):
    layout = build_layout(tiny_clip.tokenizer, "a photo of a {}.", ["dog"], ctx_slots=[0, 1])
    assert layout.ctx_pos.tolist() == [[1, 2]]


def test_class_name_too_long_is_named(tiny_clip):
    long_name = " ".join(["word"] * 80)
    with pytest.raises(ValueError, match="Class name 'word word.*does not fit"):
        build_layout(tiny_clip.tokenizer, "a photo of a {}.", ["dog", long_name])


@pytest.mark.parametrize("template", ["a photo", "{} and {}"])
def test_template_needs_one_placeholder(tiny_clip, template):
    with pytest.raises(ValueError, match="exactly one"):
        build_layout(tiny_clip.tokenizer, template, ["dog"])


# The six names of CLIP's (and CoOp's) ImageNet list whose ")" merges with the template's "." into one token.
MERGING_IMAGENET_NAMES = [
    "kite (bird of prey)",
    "Mexican hairless dog (xoloitzcuintli)",
    "ram (adult male sheep)",
    "impala (antelope)",
    "military hat (bearskin or shako)",
    "cherimoya (custard apple)",
]


@pytest.mark.parametrize(
    ("template", "slots"), [("a photo of a {}.", range(4)), ("{} X X X X.", "X"), ("X X {} X X.", "X")]
)
def test_names_merging_with_the_template_keep_the_merged_token(tiny_clip, template, slots):
    tokenizer = tiny_clip.tokenizer
    layout = build_layout(tokenizer, template, MERGING_IMAGENET_NAMES, ctx_slots=slots)
    # The prompts are exactly what CLIP / CoOp tokenise: the whole filled template.
    assert layout.tokens.equal(tokenizer([template.format(n) for n in MERGING_IMAGENET_NAMES]))
    ctx_tokens = layout.tokens.gather(1, layout.ctx_pos)
    expected_ctx = tokenizer.encode("a photo of a") if slots == range(4) else tokenizer.encode("X X X X")
    assert (ctx_tokens == torch.tensor(expected_ctx)).all()
    for c, name in enumerate(MERGING_IMAGENET_NAMES):
        start, length = int(layout.name_start[c]), int(layout.name_len[c])
        span = tokenizer.decode(layout.tokens[c, start : start + length].tolist()).replace(" ", "")
        # At the end of the prompt, ")." is one token and belongs to the name; elsewhere the name is on its own.
        name_text = name.lower().replace(" ", "")
        assert span == (name_text + "." if template.endswith("{}.") else name_text)
        assert start + length <= int(layout.eot[c]) and not set(layout.ctx_pos[c].tolist()) & set(
            range(start, start + length)
        )


def test_merge_with_a_plain_template_word_belongs_to_the_name(tiny_clip):
    tokenizer = tiny_clip.tokenizer
    layout = build_layout(tokenizer, "a photo of a{}s", ["dog"])
    start, length = int(layout.name_start[0]), int(layout.name_len[0])
    whole = tokenizer.encode("a photo of adogs")
    assert layout.tokens[0, 1 : 1 + len(whole)].tolist() == whole
    assert start == 1 + len(tokenizer.encode("a photo of")) and start + length == 1 + len(whole)


def test_merge_with_a_context_slot_is_refused(tiny_clip):
    with pytest.raises(ValueError, match="'dog' merges with a context slot of the template"):
        build_layout(tiny_clip.tokenizer, "a photo of a{}.", ["dog"], ctx_slots=range(4))


def test_context_slots_out_of_range(tiny_clip):
    with pytest.raises(ValueError, match="outside"):
        build_layout(tiny_clip.tokenizer, "a {}.", ["dog"], ctx_slots=[5])
