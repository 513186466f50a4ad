"""Training steps replayed from a CUDA graph, and the rules the captured region obeys.

On a CPU: the forward and backward pass of every method read no value on the host (a CUDA graph cannot), the
length groups of the text encoder give the features of one full pass, and the trainer falls back to its eager
step. On a GPU (``benchmarks/gpu_check.sh`` runs this file there): the replayed step equals the eager step,
through optimiser updates, class-set changes, another batch shape and eager steps in between; the captured
evaluation forward equals the eager one, across a training step between evaluations (new text features).
"""

from __future__ import annotations

import copy
import itertools
import random
from pathlib import Path

import pytest
import torch
from cases import CASES as METHOD_CASES

from lamm_plugin import (
    CoOpConfig,
    LAMMConfig,
    build_model,
    fast_paths,
    load_clip,
)
from lamm_plugin.cuda_graph import GraphedForward, GraphedStep, forbid_host_sync
from lamm_plugin.methods import METHODS
from lamm_plugin.text_plan import length_groups

#: Every method case (tests/cases.py) with LAMM, and two LAMM settings: LAMM alone and a host without LAMM.
CASES = {case.id: (case.method, case.config, LAMMConfig()) for case in METHOD_CASES}
CASES["lamm-alone"] = ("coop", CoOpConfig(ctx_init="a photo of a", train_ctx=False), LAMMConfig())
CASES["coop-baseline"] = ("coop", CoOpConfig(n_ctx=4), LAMMConfig(enabled=False))
IMAGENET = Path(__file__).parent / "fixtures" / "classnames" / "imagenet.txt"
# Names of 1 to 9 tokens: prompts of several lengths, so the text encoder runs in several groups.
NAMES = ["dog", "golden retriever", "bernese mountain dog", "kite (bird of prey)", "red_fox", "cat",
         "African hunting dog, hyena dog, Cape hunting dog, Lycaon pictus"]  # fmt: skip
GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run by benchmarks/gpu_check.sh)")


def _model(case: str, clip, names=NAMES):
    method, cfg, lamm = CASES[case]
    torch.manual_seed(0)
    return build_model(method, clip, names, copy.deepcopy(cfg), copy.deepcopy(lamm), shots=4).train()


def _batch(device="cpu", n=4, classes=None):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, 32, 32, generator=g)
    labels = torch.arange(n) * 3 % (classes or len(NAMES))
    return images.to(device), labels.to(device)


# ---- CPU: the captured region reads nothing on the host ----------------------------------------------------------
def test_forbid_host_sync_refuses_every_read():
    x = torch.tensor([1.5, 2.0])
    with forbid_host_sync():
        for read in (lambda: x[0].item(), lambda: int(x[1]), lambda: float(x[0]), lambda: bool(x[0] > 1),
                     lambda: x.tolist(), lambda: x.nonzero(), lambda: [0, 1, 2][x.long()[1]]):  # fmt: skip
            with pytest.raises(RuntimeError, match="on the host"):
                read()
    assert x[0].item() == 1.5  # restored


def test_text_length_read_from_the_gpu_is_refused(tiny_clip):
    """The rule has teeth: the encoder's own fallback (``max(eot)`` read on the host) is caught."""
    model = _model("coop", tiny_clip)
    prompts, eot = model.base_prompts, model.eot
    with forbid_host_sync(), pytest.raises(RuntimeError, match="on the host"):
        model.text(prompts, eot)
    with forbid_host_sync():
        model.text(prompts, eot, length=prompts.shape[1])


@pytest.mark.parametrize("case", CASES)
def test_training_step_reads_nothing_on_the_host(case, tiny_clip):
    model = _model(case, tiny_clip)
    step = GraphedStep(model)
    images, labels = _batch()
    step.forward_backward(images, labels)  # the warm-up before a capture fills the caches
    with forbid_host_sync():
        out = step.forward_backward(images, labels)
    assert set(out.losses) >= {"ce", "total"}
    assert all(p.grad is not None for p in model.trainable_parameters())


def test_graphed_step_runs_eagerly_off_the_gpu(tiny_clip):
    model = _model("coop", tiny_clip)
    assert GraphedStep(model)(*_batch()) is None  # the trainer then takes its eager step


# ---- CPU: length groups ------------------------------------------------------------------------------------------
def _positions(groups, lengths):
    return sum(len(g) * max(lengths[c] for c in g) for g in groups if g)


def test_length_groups_are_optimal():
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(3, 30) for _ in range(rng.randint(1, 12))]
        groups = length_groups(lengths, max_groups=3, min_saving=0.0)
        assert sorted(c for g in groups for c in g) == list(range(len(lengths)))
        best = _positions([list(range(len(lengths)))], lengths)
        distinct = sorted(set(lengths))
        for cuts in itertools.chain.from_iterable(itertools.combinations(distinct[:-1], k) for k in (1, 2)):
            bounds = [-1, *cuts, distinct[-1]]
            split = [[c for c, n in enumerate(lengths) if lo < n <= hi] for lo, hi in itertools.pairwise(bounds)]
            best = min(best, _positions(split, lengths))
        assert _positions(groups, lengths) == best


def test_length_groups_split_only_when_it_pays():
    assert length_groups([9] * 50) == [list(range(50))]
    assert length_groups([9] * 50 + [10]) == [list(range(51))]  # 2% saving: one pass
    groups = length_groups([9] * 50 + [18] * 5)
    assert groups == [list(range(50)), list(range(50, 55))]


@pytest.mark.filterwarnings("ignore:Repeated class names")
@pytest.mark.parametrize("case", ["coop", "lamm-alone", "coop-front", "maple", "vpt-deep"])
def test_length_groups_give_the_features_of_one_pass(case, tiny_clip64):
    """ImageNet's 1000 names run in groups: same text features (and reference features) as one pass."""
    names = IMAGENET.read_text().splitlines()
    method, cfg, _ = CASES[case]
    models = []
    for groups in (4, 1):
        torch.manual_seed(0)
        lamm = LAMMConfig(text_groups=groups)
        models.append(build_model(method, copy.deepcopy(tiny_clip64), names, copy.deepcopy(cfg), lamm).train())
    grouped, single = models
    assert len(grouped.text_plan.groups) > 1 and len(single.text_plan.groups) == 1
    with torch.no_grad():
        grouped.label_embedding.weight.add_(0.01 * torch.randn_like(grouped.label_embedding.weight))
        single.label_embedding.weight.copy_(grouped.label_embedding.weight)
        text, ref = grouped.encode_text(reference=True)
        text1, ref1 = single.encode_text(reference=True)
    torch.testing.assert_close(text, text1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ref, ref1, rtol=1e-10, atol=1e-12)


# ---- GPU: replay equals the eager step ----------------------------------------------------------------------------
def _eager_step(model, optim, images, labels):
    optim.zero_grad()
    loss = model(images, labels).losses["total"]
    loss.backward()
    optim.step()
    return loss.detach()


@GPU
@pytest.mark.parametrize("case", CASES)
def test_replayed_step_equals_eager_step(case, tiny_clip):
    eager_model = _model(case, copy.deepcopy(tiny_clip)).cuda()
    graph_model = _model(case, tiny_clip).cuda()
    eager_optim = torch.optim.SGD(eager_model.trainable_parameters(), lr=0.5, momentum=0.9)
    graph_optim = torch.optim.SGD(graph_model.trainable_parameters(), lr=0.5, momentum=0.9)
    graphed = GraphedStep(graph_model)
    for i in range(4):
        images, labels = _batch("cuda")
        images = images + i  # new data in the same static buffer
        expected = _eager_step(eager_model, eager_optim, images, labels)
        out = graphed(images, labels)
        assert out is not None, "capture failed (see the warning)"
        graph_optim.step()
        torch.testing.assert_close(out.losses["total"], expected, rtol=1e-5, atol=1e-6)
    for a, b in zip(graph_model.trainable_parameters(), eager_model.trainable_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert graphed.captures == 1
    verdict = fast_paths.verdict(fast_paths.GRAPH_STEP, images.device)  # the self-check of the first replay
    assert verdict.passed and verdict.difference == 0, verdict


@GPU
def test_replay_follows_class_sets_batch_shapes_and_eager_steps(tiny_clip):
    eager_model = _model("coop", copy.deepcopy(tiny_clip)).cuda()
    graph_model = _model("coop", tiny_clip).cuda()
    eager_optim = torch.optim.SGD(eager_model.trainable_parameters(), lr=0.5)
    graph_optim = torch.optim.SGD(graph_model.trainable_parameters(), lr=0.5)
    graphed = GraphedStep(graph_model)

    def both(images, labels, graph=True):
        expected = _eager_step(eager_model, eager_optim, images, labels)
        if graph:
            out = graphed(images, labels)
            graph_optim.step()
            got = out.losses["total"]
        else:  # an eager step in between sets param.grad to new tensors
            got = _eager_step(graph_model, graph_optim, images, labels)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)

    both(*_batch("cuda"))
    both(*_batch("cuda", n=6))  # another batch shape: a new capture
    both(*_batch("cuda"), graph=False)
    both(*_batch("cuda"))
    for model in (eager_model, graph_model):
        model.set_classnames(NAMES[:5])  # a new class set: new buffers, a new capture
    both(*_batch("cuda", classes=5))
    assert graphed.captures == 4


# ---- the captured evaluation forward ------------------------------------------------------------------------------
EVAL_CASES = [c for c in CASES if not METHODS[CASES[c][0]].image_conditioned]


@pytest.mark.parametrize("case", EVAL_CASES)
def test_evaluation_region_reads_nothing_on_the_host_and_equals_the_forward(case, tiny_clip):
    """What GraphedForward captures: the model's own evaluation code, bit for bit, with host reads forbidden."""
    model = _model(case, tiny_clip).eval()
    images, _ = _batch()
    with torch.no_grad():
        expected = model(images).logits
        text = model.eval_text()  # taken eagerly, outside the captured region
        with forbid_host_sync():
            logits = GraphedForward(model).region(images, text)
    assert torch.equal(logits, expected)


def test_evaluation_region_under_autocast_equals_the_autocast_forward(tiny_clip):
    model = _model("maple", tiny_clip).eval()
    images, _ = _batch()
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = model(images).logits
        with forbid_host_sync():
            logits = GraphedForward(model, torch.bfloat16).region(images, model.eval_text())
    assert torch.equal(logits, expected)


def test_graphed_forward_runs_eagerly_off_the_gpu_in_training_and_per_image(tiny_clip):
    model = _model("coop", tiny_clip)
    images, _ = _batch()
    assert GraphedForward(model.eval())(images) is None  # CPU
    assert GraphedForward(model.train())(images) is None
    cocoop = _model("cocoop", tiny_clip).eval()
    assert GraphedForward(cocoop)(images) is None


@GPU
@pytest.mark.parametrize("case", EVAL_CASES)
def test_replayed_evaluation_equals_eager_evaluation(case, tiny_clip):
    model = _model(case, tiny_clip).cuda()
    optim = torch.optim.SGD(model.trainable_parameters(), lr=0.5) if model.trainable_parameters() else None
    graphed = GraphedForward(model)
    for epoch in range(2):
        model.eval()
        for n in (4, 4, 4, 3):  # the second batch of a shape is captured; the last, smaller one runs eagerly
            images, _ = _batch("cuda", n=n)
            images = images + epoch
            with torch.no_grad():
                expected = model(images).logits.clone()
            got = graphed(images)
            if got is not None:
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        if optim is not None:  # a training step between evaluations: new text features, the same graph
            model.train()
            _eager_step(model, optim, *_batch("cuda"))
    assert graphed.captures == 1 and not graphed.disabled
    verdict = fast_paths.verdict(fast_paths.GRAPH_EVAL, images.device)
    assert verdict.passed and verdict.difference == 0, verdict


@GPU
def test_replayed_evaluation_under_amp(tiny_clip):
    model = _model("maple", tiny_clip).cuda().eval()
    graphed = GraphedForward(model, torch.float16)
    images, _ = _batch("cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        expected = model(images).logits.clone()
    assert graphed(images) is None  # first sight of the shape: eager
    torch.testing.assert_close(graphed(images), expected, rtol=1e-3, atol=1e-3)
    assert graphed.captures == 1


# ---- the self-checks (CPU: the capture logic on the stand-in of conftest.EagerReplay) ----------------------------
def _grads(model):
    return [p.grad.clone() for p in model.trainable_parameters()]


def _eager_grads(model, images, labels):
    for p in model.trainable_parameters():
        p.grad = None
    loss = model(images, labels).losses["total"]
    loss.backward()
    return loss.detach(), _grads(model)


@pytest.mark.parametrize("case", ["coop", "maple"])
def test_the_first_replay_checks_itself_against_the_eager_step(case, tiny_clip, graph_stand_in, fast_path_warnings):
    model = _model(case, tiny_clip)
    images, labels = _batch()
    loss, grads = _eager_grads(model, images, labels)
    graphed = GraphedStep(model, switch="TRAINER.X.CUDA_GRAPH False")
    for _ in range(2):
        out = graphed(images, labels)
        assert torch.equal(out.losses["total"], loss) and all(map(torch.equal, _grads(model), grads))
    verdict = fast_paths.verdict(fast_paths.GRAPH_STEP, "cpu")
    assert verdict.passed and verdict.difference == 0 and verdict.bound == 0
    assert graphed.captures == 1 and graph_stand_in.replays == 2 and not fast_path_warnings


def test_a_replay_that_differs_falls_back_to_the_eager_step_with_one_warning(
    tiny_clip, graph_stand_in, fast_path_warnings
):
    model = _model("coop", tiny_clip)
    images, labels = _batch()
    graph_stand_in.inject = 1e-3  # the replay's logits, loss terms and gradients off by one part in a thousand
    graphed = GraphedStep(model, switch="TRAINER.X.CUDA_GRAPH False")
    assert graphed(images, labels) is None  # before any optimiser step: the trainer runs its eager step
    verdict = fast_paths.verdict(fast_paths.GRAPH_STEP, "cpu")
    assert verdict.state == "fell back" and verdict.difference == pytest.approx(1e-3, rel=1e-2)
    assert graphed(images, labels) is None and graphed.captures == 1 and graph_stand_in.replays == 1
    another = GraphedStep(model)  # the rest of the process stays eager, without capturing again
    assert another(images, labels) is None and another.captures == 0
    (warning,) = fast_path_warnings
    difference = f"difference {verdict.difference:.3g}"
    for words in ("CUDA graph of the training step", "on cpu", difference, "TRAINER.X.CUDA_GRAPH False"):
        assert words in warning


def test_the_check_of_an_overflowing_fp16_batch_waits_for_the_batch_redone_at_a_lower_scale(
    graph_stand_in, fast_path_warnings
):
    """Under a GradScaler, the first batch's scaled fp16 gradients overflow (the trainer redoes it at a lower
    scale, replaying the graph): the check compares the redone batch, with one eager pass more."""
    clip = load_clip("tiny-vit", precision="fp16")
    model = _model("coop", clip)
    scaler = torch.amp.GradScaler("cpu")
    with torch.no_grad():
        model.logit_scale.fill_(100.0)  # as in tests/test_run_life.py: overflows at the starting scale 2^16
    images, labels = _batch()
    graph_stand_in.inject = 1e-3
    graphed = GraphedStep(model, scaler=scaler)
    out = graphed(images, labels)
    assert out is not None and not all(p.grad.isfinite().all() for p in model.trainable_parameters())
    assert fast_paths.pending(fast_paths.GRAPH_STEP, "cpu")
    for _ in range(40):  # the trainer's redo: a lower scale, the same batch, until the check has spoken
        scaler.update(scaler.get_scale() / 2)
        redone = graphed(images, labels)
        if not fast_paths.pending(fast_paths.GRAPH_STEP, "cpu"):
            break
    assert redone is None and scaler.get_scale() == 2.0**15  # checked on the first redo, with one eager pass more
    assert graphed(images, labels) is None  # fell back: eager from now on
    verdict = fast_paths.verdict(fast_paths.GRAPH_STEP, "cpu")
    assert verdict.state == "fell back" and verdict.difference == pytest.approx(1e-3, rel=1e-2)
    assert len(fast_path_warnings) == 1


def test_the_first_replayed_evaluation_checks_itself(tiny_clip, graph_stand_in, fast_path_warnings):
    model = _model("maple", tiny_clip).eval()
    images, _ = _batch()
    graphed = GraphedForward(model, switch="TRAINER.X.CUDA_GRAPH False")
    with torch.no_grad():
        expected = model(images).logits
    assert graphed(images) is None  # first sight of the shape: eager
    assert torch.equal(graphed(images), expected)
    assert fast_paths.verdict(fast_paths.GRAPH_EVAL, "cpu").passed and not fast_path_warnings

    fast_paths.reset()
    graph_stand_in.inject = 1e-4
    graphed = GraphedForward(model, switch="TRAINER.X.CUDA_GRAPH False")
    assert graphed(images) is None and graphed(images) is None and graphed(images) is None
    verdict = fast_paths.verdict(fast_paths.GRAPH_EVAL, "cpu")
    assert verdict.state == "fell back" and verdict.difference == pytest.approx(1e-4, rel=1e-2)
    assert graphed.captures == 1 and graphed.disabled
    (warning,) = fast_path_warnings
    assert "evaluation forward" in warning and "TRAINER.X.CUDA_GRAPH False" in warning


def test_a_capture_that_fails_is_recorded_and_warned_once(tiny_clip, graph_stand_in, monkeypatch, fast_path_warnings):
    def refuse(region):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graph_stand_in, "record", refuse)
    model = _model("coop", tiny_clip)
    assert GraphedStep(model)(*_batch()) is None
    verdict = fast_paths.verdict(fast_paths.GRAPH_STEP, "cpu")
    assert verdict.state == "fell back" and verdict.difference is None and "not permitted" in verdict.detail
    assert len(fast_path_warnings) == 1


@GPU
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_own_attention_passes_its_self_check_on_the_gpu(precision):
    """Our attention (SDPA's is_causal, maybe another kernel than nn.MultiheadAttention's) within its bound."""
    clip = load_clip("tiny-vit", precision=precision, device="cuda")
    model = _model("coop", clip).cuda()
    model.text.own_attention = True
    model(*_batch("cuda"))
    verdict = fast_paths.verdict(fast_paths.TEXT_ATTENTION, "cuda")
    assert verdict is not None and verdict.passed, verdict
