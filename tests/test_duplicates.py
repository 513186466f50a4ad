"""Class lists that repeat a name (CLIP's ImageNet list has "missile" and "sunglasses" twice)."""

from __future__ import annotations

import pytest
import torch

from lamm_plugin import CoOpConfig, LAMMConfig, build_model
from lamm_plugin.label_embedding import label_keys

NAMES = ["missile", "dog", "missile", "sunglasses", "sunglasses", "cat"]


def test_label_keys_are_unique_and_keep_first_names():
    assert label_keys(NAMES) == ["missile", "dog", "missile #2", "sunglasses", "sunglasses #2", "cat"]
    # A real class literally named like a generated key still gets a key of its own.
    assert label_keys(["a", "a #2", "a"]) == ["a", "a #2", "a #3"]


def _model(clip, names=NAMES):
    with pytest.warns(UserWarning, match=r"Repeated class names \['missile', 'sunglasses'\]"):
        return build_model("coop", clip, names, CoOpConfig(ctx_init="a photo of a"), LAMMConfig())


def test_each_repeated_class_owns_its_label_rows(tiny_clip):
    model = _model(tiny_clip)
    assert model.label_embedding.classnames == label_keys(NAMES)
    first, second = model.label_embedding.counts[0], model.label_embedding.counts[2]
    assert model.row_index.numel() == sum(model.label_embedding.counts) and first == second == 1

    # Both start from CLIP's embedding of "missile"; a step on the second one's images pulls the two apart.
    optim = torch.optim.SGD(model.trainable_parameters(), lr=1.0)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model(images, torch.tensor([2, 2, 1, 5])).losses["total"].backward()
    optim.step()
    rows = model.label_embedding.rows().detach()
    init = model.label_embedding.init
    assert torch.equal(init[0], init[2]) and not torch.equal(rows[0], rows[2])

    # Both rows survive a checkpoint round trip, each to its own class.
    with pytest.warns(UserWarning, match="Repeated class names"):
        other = build_model("coop", tiny_clip, NAMES, CoOpConfig(ctx_init="a photo of a"), LAMMConfig())
    other.load_checkpoint_state(model.checkpoint_state())
    assert torch.equal(other.label_embedding.rows(), model.label_embedding.rows())
    model.eval(), other.eval()
    assert torch.equal(model(images).logits, other(images).logits)


def test_add_classes_counts_repeats(tiny_clip):
    model = build_model("coop", tiny_clip, ["missile", "dog"], CoOpConfig(ctx_init="a photo of a"), LAMMConfig())
    model.add_classes(["dog", "cat"])  # served names are not added again
    assert model.classnames == ["missile", "dog", "cat"]
    with pytest.warns(UserWarning, match="Repeated class names"):
        model.add_classes(["missile", "missile"])  # one more "missile" than served: a second class
    assert model.classnames == ["missile", "dog", "cat", "missile"]
    assert model.label_embedding.classnames == ["missile", "dog", "cat", "missile #2"]


@pytest.mark.dassl
def test_per_class_results_are_keyed_by_label():
    pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")
    from lamm_plugin.dassl.results import per_class_accuracy

    lab2cname = dict(enumerate(["missile", "dog", "missile"]))
    per_class = per_class_accuracy([0, 2, 2, 1], [0, 0, 2, 1], lab2cname)
    assert list(per_class) == ["0", "1", "2"]
    assert per_class["2"] == {"classname": "missile", "label": 2, "total": 2, "correct": 1, "accuracy": 50.0}
    assert per_class["0"]["classname"] == "missile" and per_class["0"]["accuracy"] == 100.0
