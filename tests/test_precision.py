"""Low-precision CLIPs on a CPU, as strict as CUDA kernels are about dtypes.

A CUDA kernel refuses a layer whose input dtype differs from its weight dtype (``expected scalar type Half but
found Float``); the CPU kernels accept the mix silently. Forward pre-hooks on every normalisation, linear,
convolution and attention layer make the CPU refuse it too, so a precision bug fails here, not on a user's GPU.
"""

from __future__ import annotations

import copy

import pytest
import torch
from cases import BY_ID, HOSTS
from open_clip.transformer import LayerNormFp32
from torch import nn

from lamm_plugin import (
    LAMMConfig,
    load_clip,
)

LOW_PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16}
#: Every method case (tests/cases.py), by id.
CASES = BY_ID


@pytest.fixture(scope="module")
def low_precision_clips():
    return {prec: load_clip("tiny-vit", precision=prec) for prec in LOW_PRECISIONS}


def test_hooks_catch_a_mixed_layer(strict_dtypes):
    layer = nn.LayerNorm(4)  # float32 weights
    with strict_dtypes(layer), pytest.raises(TypeError, match="float32 weights received torch.float16"):
        layer(torch.zeros(2, 4, dtype=torch.float16))


@pytest.mark.parametrize("precision", LOW_PRECISIONS)
def test_low_precision_clip_is_built_like_open_clip(precision, low_precision_clips):
    """Normalisations cast to fp32 themselves (LayerNormFp32); matmul weights are in the low precision."""
    model = low_precision_clips[precision].model
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(isinstance(m, LayerNormFp32) for m in norms)
    assert model.visual.conv1.weight.dtype == LOW_PRECISIONS[precision]
    assert model.text_projection.dtype == LOW_PRECISIONS[precision]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("precision", LOW_PRECISIONS)
def test_every_layer_gets_its_own_dtype(precision, case, low_precision_clips, classnames, strict_dtypes):
    clip = copy.deepcopy(low_precision_clips[precision])
    torch.manual_seed(0)
    model = CASES[case].build(clip, classnames, LAMMConfig())
    images = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 1])
    optim = torch.optim.SGD(model.trainable_parameters(), lr=0.1)

    with strict_dtypes(clip.model, model):
        model.train()
        losses = model(images, labels).losses
        losses["total"].backward()
        optim.step()
        model.eval()
        logits = model(images).logits

    assert all(torch.isfinite(v) for v in losses.values())
    assert logits.shape == (4, len(classnames)) and torch.isfinite(logits).all()
    # Learned tensors keep fp32 master weights (and gradients), whatever CLIP's precision.
    for p in model.trainable_parameters():
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32


@pytest.mark.parametrize("case", CASES)
def test_fp16_learned_tensors_as_each_original_keeps_them(case, low_precision_clips, classnames, strict_dtypes):
    """``FP16_LEARNED``: every learned tensor in fp16 (LAMM's label rows too, as the official LAMM code) but those the
    original keeps in fp32 (tests/cases.py, ``Host.fp32_in_fp16_runs``); a step runs with that mix."""
    clip = copy.deepcopy(low_precision_clips["fp16"])
    torch.manual_seed(0)
    model = CASES[case].build(clip, classnames, LAMMConfig())
    model.learned_to_fp16()
    fp32 = HOSTS[CASES[case].method].fp32_in_fp16_runs
    dtypes = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}
    expected = {
        name: torch.float32 if name.split(".")[:2] in [["method", a] for a in fp32] else torch.float16
        for name in dtypes
    }
    assert dtypes == expected
    optim = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    with strict_dtypes(clip.model, model):
        model.train()
        losses = model(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1])).losses
        losses["total"].backward()
        optim.step()
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(p.grad.dtype == p.dtype and torch.isfinite(p).all() for p in model.trainable_parameters())


@pytest.mark.parametrize("precision", LOW_PRECISIONS)
def test_low_precision_loads_local_checkpoints(precision, tmp_path):
    torch.manual_seed(1)
    source = load_clip("tiny-vit").model
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    model = load_clip("tiny-vit", pretrained=str(path), precision=precision).model
    assert all(isinstance(m, LayerNormFp32) for m in model.modules() if isinstance(m, nn.LayerNorm))
    dtype = LOW_PRECISIONS[precision]
    assert torch.equal(model.visual.conv1.weight, source.visual.conv1.weight.to(dtype))
    assert torch.equal(model.ln_final.weight, source.ln_final.weight)  # normalisations stay fp32
