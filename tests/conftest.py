"""Shared fixtures: a tiny random-weight open_clip CLIP (real tokenizer, context 77) built once per session."""

from __future__ import annotations

import copy

import pytest
import torch

from lamm_plugin.backbone import CLIPBundle, load_clip


@pytest.fixture(scope="session")
def _tiny_vit() -> CLIPBundle:
    torch.manual_seed(0)
    return load_clip("tiny-vit")


@pytest.fixture
def tiny_clip(_tiny_vit: CLIPBundle) -> CLIPBundle:
    """A fresh copy of the tiny ViT CLIP (tests may change it)."""
    return copy.deepcopy(_tiny_vit)


@pytest.fixture
def tiny_clip64(_tiny_vit: CLIPBundle) -> CLIPBundle:
    """The tiny ViT CLIP in float64, for exact parity checks."""
    bundle = copy.deepcopy(_tiny_vit)
    bundle.model.double()
    return bundle


CLASSNAMES = ["dog", "golden retriever", "bernese mountain dog", "cat", "red_fox"]


@pytest.fixture
def classnames() -> list[str]:
    """Class names of one to three tokens, one with an underscore (CoOp's folder-style names)."""
    return list(CLASSNAMES)
