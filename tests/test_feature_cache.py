"""The feature cache (:mod:`lamm_plugin.feature_cache`): exact reuse, checked reads, atomic writes, and which methods
may cache their image features (the Dassl runs: ``test_dassl_feature_cache.py``)."""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from pathlib import Path

import pytest
import torch

from lamm_plugin import KgCoOpConfig, LAMMConfig, build_model, load_clip
from lamm_plugin.feature_cache import (
    IMAGE_FEATURES,
    TEXT_FEATURES,
    FeatureCache,
    cached_text_features,
    files_identity,
    tower_fingerprint,
)
from lamm_plugin.layout import FEATURE_CACHE_FORMAT
from lamm_plugin.methods import METHODS
from tests.cases import CASES

KEY = {"kind": "test", "files": {"count": 2, "sha256": "ab"}, "batch_size": 4}


def _case_model(case, clip, classnames, lamm: bool):
    enabled = lamm and METHODS[case.method].lamm_variant
    return case.build(clip, classnames, LAMMConfig(enabled=enabled)).eval()


# ---- which methods cache ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_prompts_image_tower_matches_visual_prompts(case, tiny_clip, classnames):
    """The class property that decides caching says exactly whether the method prompts the image tower."""
    model = _case_model(case, tiny_clip, classnames, lamm=True)
    prompt = model.method.visual_prompt()
    prompted = prompt.shallow is not None or bool(prompt.deep)
    assert type(model.method).prompts_image_tower is prompted
    assert model.image_features_cacheable is (not prompted)


def test_expected_methods_cache_their_test_features():
    cacheable = {name for name, cls in METHODS.items() if not cls.prompts_image_tower}
    assert cacheable == {"coop", "kgcoop", "cocoop", "prograd", "zeroshot"}


def test_a_method_that_lies_about_its_image_tower_is_refused(tiny_clip, classnames):
    case = next(c for c in CASES if c.method == "vpt")
    model = _case_model(case, tiny_clip, classnames, lamm=False)
    type(model.method).prompts_image_tower = False
    try:
        with pytest.raises(RuntimeError, match="prompts_image_tower"):
            _ = model.image_features_cacheable
    finally:
        type(model.method).prompts_image_tower = True


@pytest.mark.parametrize("lamm", [False, True], ids=["host", "lamm"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_logits_from_image_features_equal_forward(case, lamm, tiny_clip, classnames):
    """The cached path's logits (image tower output -> logits) are the forward's bits, for every method."""
    model = _case_model(case, tiny_clip, classnames, lamm)
    torch.manual_seed(0)
    images = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        expected = model(images).logits
        features = model.encode_image(images)
        model.text_plan.clear()  # the text side recomputed too
        assert torch.equal(model.logits_from_image_features(features.clone()), expected)
    with pytest.raises(RuntimeError, match="eval"):
        model.train().logits_from_image_features(features)


# ---- the cache's files -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_store_and_load_round_trip_bit_for_bit(tmp_path, dtype):
    cache = FeatureCache(str(tmp_path))
    features = torch.randn(7, 5).to(dtype)
    path = cache.store(IMAGE_FEATURES, KEY, features)
    assert path and os.path.isfile(path) and os.path.dirname(path) == str(tmp_path / IMAGE_FEATURES)
    loaded = cache.load(IMAGE_FEATURES, KEY, shape=(7, 5))
    assert loaded.dtype == dtype and torch.equal(loaded.view(torch.uint8), features.view(torch.uint8))
    assert cache.load(IMAGE_FEATURES, {**KEY, "batch_size": 8}) is None  # another key: another file, absent
    assert cache.load(TEXT_FEATURES, KEY) is None
    assert [p for p in os.listdir(os.path.dirname(path)) if ".tmp" in p] == []


def test_cache_files_follow_the_umask_so_a_group_can_share_them(tmp_path):
    old = os.umask(0o002)
    try:
        path = FeatureCache(str(tmp_path)).store(IMAGE_FEATURES, KEY, torch.ones(2, 2))
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o664


class _Payload:
    def __reduce__(self):
        return (print, ("payload ran",))


def test_a_file_with_objects_is_refused_without_advice_to_lift_the_check(tmp_path, capsys):
    cache = FeatureCache(str(tmp_path))
    path = cache.store(IMAGE_FEATURES, KEY, torch.ones(2, 2))
    torch.save({"format": FEATURE_CACHE_FORMAT, "features": _Payload()}, path)
    with pytest.warns(UserWarning, match="is not used") as record:
        assert cache.load(IMAGE_FEATURES, KEY) is None
    message = str(record[0].message)
    assert "weights_only" not in message and "objects other than tensors" in message
    assert "payload ran" not in capsys.readouterr().out


def _damage(path: str, how: str) -> None:
    entry = torch.load(path, weights_only=True)
    if how == "truncated":
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        return
    if how == "garbage":
        Path(path).write_bytes(b"not a torch file")
        return
    if how == "format":
        entry["format"] = "something/else"
    elif how == "key":
        entry["key"] = {**entry["key"], "batch_size": 99}
    elif how == "bytes":
        entry["features"] = entry["features"].clone()
        entry["features"][0, 0] += 1  # the checksum no longer matches
    elif how == "header":
        entry["shape"] = [1, 1]
    elif how == "no-tensor":
        entry["features"] = [1.0, 2.0]
    torch.save(entry, path)


@pytest.mark.parametrize("how", ["truncated", "garbage", "format", "key", "bytes", "header", "no-tensor"])
def test_a_damaged_file_is_recomputed_with_a_warning(tmp_path, how):
    cache = FeatureCache(str(tmp_path))
    features = torch.randn(4, 3)
    path = cache.store(IMAGE_FEATURES, KEY, features)
    _damage(path, how)
    with pytest.warns(UserWarning, match="is not used"):
        assert cache.load(IMAGE_FEATURES, KEY) is None
    with pytest.warns(UserWarning, match="is not used"):
        again = cache.get_or_compute(IMAGE_FEATURES, KEY, lambda: features.clone())
    assert torch.equal(again, features)
    assert torch.equal(cache.load(IMAGE_FEATURES, KEY), features)  # rewritten whole


def test_a_tensor_of_the_wrong_shape_is_not_used(tmp_path):
    cache = FeatureCache(str(tmp_path))
    cache.store(IMAGE_FEATURES, KEY, torch.randn(4, 3))
    with pytest.warns(UserWarning, match=r"expected \[5, 3\]"):
        assert cache.load(IMAGE_FEATURES, KEY, shape=(5, 3)) is None
    assert cache.load(IMAGE_FEATURES, KEY, shape=(4, -1)) is not None
    entry = torch.load(cache.path(IMAGE_FEATURES, KEY), weights_only=True)
    assert entry["format"] == FEATURE_CACHE_FORMAT and entry["key"] == KEY


def test_an_unwritable_cache_folder_costs_a_warning_not_the_run(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cache = FeatureCache(str(blocker / "cache"))
    with pytest.warns(UserWarning, match="cannot be written"):
        features = cache.get_or_compute(IMAGE_FEATURES, KEY, lambda: torch.ones(2, 2))
    assert torch.equal(features, torch.ones(2, 2))


def _store_many(root: str, seed: int) -> None:
    cache = FeatureCache(root)
    for _ in range(5):
        cache.store(IMAGE_FEATURES, KEY, torch.arange(20000, dtype=torch.float32).reshape(200, 100))


def test_runs_filling_the_cache_at_once_leave_one_whole_file(tmp_path):
    """Processes writing the same entry at once: every read meanwhile and after sees a whole, valid file."""
    root = str(tmp_path)
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_store_many, args=(root, i)) for i in range(3)]
    for w in workers:
        w.start()
    cache, reads = FeatureCache(root), 0
    while any(w.is_alive() for w in workers):
        with_warning = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                got = cache.load(IMAGE_FEATURES, KEY)
        except UserWarning as err:  # a half-written file would warn here
            with_warning = err
        assert with_warning is None
        reads += got is not None
    for w in workers:
        w.join()
        assert w.exitcode == 0
    expected = torch.arange(20000, dtype=torch.float32).reshape(200, 100)
    assert torch.equal(cache.load(IMAGE_FEATURES, KEY), expected)
    assert not [p for p in os.listdir(tmp_path / IMAGE_FEATURES) if ".tmp" in p]


# ---- keys ------------------------------------------------------------------------------------------------------------
def test_files_identity_follows_every_change(tmp_path):
    paths = [str(tmp_path / f"{i}.jpg") for i in range(3)]
    for p in paths:
        Path(p).write_bytes(b"abc")
    first = files_identity(paths)
    assert first == files_identity(paths) and first["count"] == 3
    assert files_identity(paths[::-1]) != first  # the order is the batches'
    assert files_identity(paths[:2]) != first
    stat = os.stat(paths[1])
    time.sleep(0.01)
    Path(paths[1]).write_bytes(b"xyz")  # same size, and the modification time set back
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert files_identity(paths) != first
    os.remove(paths[2])
    assert files_identity(paths) is None


def test_tower_fingerprint_covers_every_weight(tiny_clip):
    other = load_clip("tiny-vit")
    visual = tiny_clip.model.visual
    first = tower_fingerprint(visual)
    assert tower_fingerprint(visual) == first
    assert tower_fingerprint(other.model.visual) != first  # other random weights
    block = visual.transformer.resblocks[1].mlp.c_fc.weight
    value = block[0, 0].item()
    with torch.no_grad():
        block[0, 0] += 1.0  # in place, deep inside the tower: the memo notices
    assert tower_fingerprint(visual) != first
    with torch.no_grad():
        block[0, 0] = value
    assert tower_fingerprint(visual) == first


# ---- text features ---------------------------------------------------------------------------------------------------
def _no_encoding(*args, **kwargs):
    raise AssertionError("encoded again although the cache holds the features")


@pytest.mark.parametrize("method", ["promptsrc", "kgcoop", "zeroshot"])
def test_text_features_of_fixed_prompts_are_reused_exactly(method, tiny_clip, classnames, tmp_path, monkeypatch):
    case = next(c for c in CASES if c.method == method)

    def features(model):
        if method == "promptsrc":
            return model.method.frozen_text_features(classnames)
        if method == "kgcoop":
            return model.method.hand_crafted_features(classnames)
        return model._eval_text()

    plain = _case_model(case, tiny_clip, classnames, lamm=False)
    expected = features(plain).clone()
    cache = FeatureCache(str(tmp_path))
    first = _case_model(case, tiny_clip, classnames, lamm=False)
    first.set_feature_cache(cache)
    assert torch.equal(features(first), expected)
    assert len(os.listdir(tmp_path / TEXT_FEATURES)) == 1

    second = _case_model(case, tiny_clip, classnames, lamm=False)
    second.set_feature_cache(cache)
    monkeypatch.setattr(type(tiny_clip), "encode_texts", _no_encoding)
    monkeypatch.setattr(type(second.text_plan), "class_features", _no_encoding)
    assert torch.equal(features(second), expected)


def test_kgcoop_fp16_hand_crafted_features_are_kept_apart_from_float32_ones(tiny_clip, classnames, tmp_path):
    """KgCoOp's default fp16 features (the original's) and the run's float32 ones of the same CLIP: two entries."""
    cache = FeatureCache(str(tmp_path))
    features = {}
    for precision in ("fp16", "run", "fp16"):
        cfg = KgCoOpConfig(dataset="OxfordPets", hand_crafted_precision=precision)
        model = build_model("kgcoop", tiny_clip, classnames, cfg, LAMMConfig(enabled=False))
        model.set_feature_cache(cache)
        features.setdefault(precision, []).append(model.method.hand_crafted_features(classnames))
    assert len(os.listdir(tmp_path / TEXT_FEATURES)) == 2
    (fp16, again), (float32,) = features["fp16"], features["run"]
    assert fp16.dtype == torch.float16 and float32.dtype == torch.float32 and torch.equal(fp16, again)
    assert not torch.equal(fp16.float(), float32)


def test_text_features_are_keyed_by_their_inputs_and_weights(tiny_clip, tmp_path):
    cache = FeatureCache(str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return torch.randn(2, 4)

    a = cached_text_features(cache, tiny_clip.model, {"texts": ["a", "b"]}, compute)
    assert torch.equal(cached_text_features(cache, tiny_clip.model, {"texts": ["a", "b"]}, compute), a)
    cached_text_features(cache, tiny_clip.model, {"texts": ["b", "a"]}, compute)
    with torch.no_grad():
        tiny_clip.model.ln_final.weight[0] += 1
    cached_text_features(cache, tiny_clip.model, {"texts": ["a", "b"]}, compute)
    assert len(calls) == 3
    assert cached_text_features(None, tiny_clip.model, {"texts": ["a", "b"]}, compute) is not None and len(calls) == 4


@pytest.mark.parametrize("precision", ["fp16", "bf16", "amp"])
def test_cached_path_is_exact_in_every_precision(precision, tmp_path, classnames):
    """The image tower's output in its own dtype (fp16/bf16, or autocast's) stored and read back gives the logits
    of the forward, bit for bit."""
    torch.manual_seed(0)
    clip = load_clip("tiny-vit", precision=precision)
    case = next(c for c in CASES if c.id == "coop-init")
    model = _case_model(case, clip, classnames, lamm=True)
    images = torch.randn(5, 3, 32, 32)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "amp")
    cache = FeatureCache(str(tmp_path))
    with torch.no_grad(), autocast:
        expected = model(images).logits
        computed = model.encode_image(images)
        cache.store(IMAGE_FEATURES, KEY, computed)
        features = cache.load(IMAGE_FEATURES, KEY)
        assert features.dtype == computed.dtype and torch.equal(features, computed)
        if precision != "amp":
            assert features.dtype == clip.dtype  # kept in the tower's own precision, not widened
        assert torch.equal(model.logits_from_image_features(features), expected)
