"""Dassl runs with the feature cache (``LAMM_CACHE``): the same results as without it, the image features read
instead of computed from the second run on, never for a method that prompts its image tower."""

from __future__ import annotations

import copy
import os

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

import torch  # noqa: E402

from lamm_plugin.dassl.config import CACHE_NODE, cache_node  # noqa: E402
from lamm_plugin.dassl.evaluation import cache_dir  # noqa: E402
from lamm_plugin.dassl.results import cfg_to_dict  # noqa: E402
from lamm_plugin.dassl.run_config import config_differences  # noqa: E402
from lamm_plugin.feature_cache import IMAGE_FEATURES, TEXT_FEATURES  # noqa: E402
from lamm_plugin.layout import CACHE_DIR_ENV, CACHE_DIRNAME  # noqa: E402
from tests.test_dassl_train import read_logs, results, run  # noqa: E402

pytestmark = [pytest.mark.dassl, pytest.mark.e2e]

OFF = ("LAMM_CACHE.TEST_FEATURES", "False", "LAMM_CACHE.TEXT_FEATURES", "False")
READ = "read from the feature cache"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("data"))


def _same_results(a: dict, b: dict) -> None:
    """Everything but the timings and the cache's own switches."""
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    for r in (a, b):
        r.pop("timings")
        r["config"].pop(CACHE_NODE)
        r["config"].pop("OUTPUT_DIR")
        if r["checkpoint"]:
            r["checkpoint"].pop("path")
    assert a == b


def _tensors(tree, prefix: str = "") -> dict[str, bytes]:
    """Every tensor of a nested checkpoint, by its path, as its bytes (for exact comparison)."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()}
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _tensors(value, f"{prefix}.{key}").items()}
    return {}


def _files(folder) -> list[str]:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_runs_with_the_cache_equal_the_run_without(data_root, tmp_path):
    """LAMM_CoOp with a validation evaluation after each epoch (best_val): the first run with the cache fills it, the
    second reads the validation and test features; results, per-class numbers and learned tensors are the bits of
    the run without the cache, and the cached features are those the image tower computes."""
    cache = str(tmp_path / "cache")
    opts = ("TEST.FINAL_MODEL", "best_val", "LAMM_CACHE.DIR", cache)
    off = run("LAMM_CoOp", data_root, str(tmp_path / "off"), opts=(*opts, *OFF))
    assert not os.path.exists(cache)
    run("LAMM_CoOp", data_root, str(tmp_path / "first"), opts=opts)
    stored = _files(os.path.join(cache, IMAGE_FEATURES))
    assert len(stored) == 2  # the validation set and the test set
    run("LAMM_CoOp", data_root, str(tmp_path / "second"), opts=opts)
    assert _files(os.path.join(cache, IMAGE_FEATURES)) == stored
    assert read_logs(str(tmp_path / "second")).count(READ) == 3  # val after both epochs, then the test set
    assert READ not in read_logs(str(tmp_path / "off"))

    reference = results(str(tmp_path / "off"))
    for name in ("first", "second"):
        _same_results(results(str(tmp_path / name)), reference)
    # The last epoch trained after a validation read from the cache: its random numbers were those of the run without.
    for checkpoint in ("model-best.pth.tar", "model.pth.tar-2"):
        a = torch.load(str(tmp_path / "off" / "prompt_learner" / checkpoint), weights_only=True)["state_dict"]
        b = torch.load(str(tmp_path / "second" / "prompt_learner" / checkpoint), weights_only=True)["state_dict"]
        assert _tensors(a) and _tensors(a) == _tensors(b)

    # The stored test features are the image tower's output for each image, bit for bit.
    off.set_model_mode("eval")
    with torch.no_grad():
        recomputed = torch.cat([off.model.encode_image(batch["img"]) for batch in off.test_loader])
    entries = [torch.load(os.path.join(cache, IMAGE_FEATURES, f), weights_only=True) for f in stored]
    test_entry = next(e for e in entries if e["key"]["files"]["count"] == len(off.dm.dataset.test))
    assert test_entry["features"].dtype == recomputed.dtype and torch.equal(test_entry["features"], recomputed)
    assert test_entry["key"]["batch_size"] == 16 and test_entry["key"]["precision"] == "fp32"
    assert "Resize" in test_entry["key"]["transform"] and test_entry["key"]["image_tower"]

    # A damaged file: a warning, the features computed again, the same result.
    path = os.path.join(cache, IMAGE_FEATURES, stored[0])
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.warns(UserWarning, match="is not used"):
        run("LAMM_CoOp", data_root, str(tmp_path / "damaged"), opts=opts)
    _same_results(results(str(tmp_path / "damaged")), reference)
    assert torch.load(path, weights_only=True)["features"].shape[1] == recomputed.shape[1]  # rewritten whole


def test_the_cache_read_draws_what_the_loader_would(data_root, tmp_path, capsys):
    """An evaluation read from the cache leaves the random generator where iterating the loader leaves it."""
    trainer = run(
        "ZeroshotCLIP", data_root, str(tmp_path / "zs"), "--eval-only", opts=("LAMM_CACHE.DIR", str(tmp_path))
    )
    capsys.readouterr()
    torch.manual_seed(3)
    list(trainer.loader_logits(trainer.test_loader))
    after_read = torch.get_rng_state()
    assert READ in capsys.readouterr().out
    torch.manual_seed(3)
    for _ in trainer.test_loader:
        pass
    assert torch.equal(after_read, torch.get_rng_state())


def test_zero_shot_reads_its_image_and_text_features(data_root, tmp_path):
    cache = str(tmp_path / "cache")
    opts = ("LAMM_CACHE.DIR", cache)
    run("ZeroshotCLIP", data_root, str(tmp_path / "off"), "--eval-only", opts=(*opts, *OFF))
    run("ZeroshotCLIP", data_root, str(tmp_path / "a"), "--eval-only", opts=opts)
    run("ZeroshotCLIP", data_root, str(tmp_path / "b"), "--eval-only", opts=opts)
    assert len(_files(os.path.join(cache, IMAGE_FEATURES))) == 1
    assert len(_files(os.path.join(cache, TEXT_FEATURES))) == 1
    assert READ in read_logs(str(tmp_path / "b"))
    for name in ("a", "b"):
        _same_results(results(str(tmp_path / name)), results(str(tmp_path / "off")))


def test_a_method_with_visual_prompts_caches_no_image_features(data_root, tmp_path):
    cache = str(tmp_path / "cache")
    for name in ("a", "b"):
        run("LAMM_VPT", data_root, str(tmp_path / name), "--eval-only", opts=("LAMM_CACHE.DIR", cache))
    assert _files(os.path.join(cache, IMAGE_FEATURES)) == []
    assert READ not in read_logs(str(tmp_path / "b"))


def test_cache_node_folder_and_switches_do_not_change_the_experiment(monkeypatch):
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    assert dict(cfg[CACHE_NODE]) == dict(cache_node())
    assert dict(cache_node()) == {
        "DIR": "", "TEST_FEATURES": True, "TEXT_FEATURES": True, "DECODED_IMAGES": True, "DECODED_MAX_MB": 4096
    }  # fmt: skip
    cfg.DATASET.ROOT = "/data"
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    assert cache_dir(cfg) == os.path.join("/data", CACHE_DIRNAME)
    monkeypatch.setenv(CACHE_DIR_ENV, "/env/cache")
    assert cache_dir(cfg) == "/env/cache"
    cfg.LAMM_CACHE.DIR = "/cfg/cache"
    assert cache_dir(cfg) == "/cfg/cache"
    other = cfg.clone()
    other.LAMM_CACHE.TEST_FEATURES = False
    other.LAMM_CACHE.TEXT_FEATURES = False
    other.LAMM_CACHE.DIR = ""
    other.LAMM_CACHE.DECODED_IMAGES = False
    other.LAMM_CACHE.DECODED_MAX_MB = 1
    assert config_differences(cfg_to_dict(cfg), other) == []


@pytest.mark.e2e
def test_continual_stages_read_their_test_sets_with_the_same_results(data_root, tmp_path, capsys):
    """``continual.py``: each stage's evaluation on the classes seen so far goes through the cache; a second run reads
    every stage's test features and reports the numbers of the run without the cache."""
    import continual
    from tests.test_dassl_continual import REPO, SMALL

    def run_continual(out: str, *opts: str) -> dict:
        args = [
            "--root", data_root, "--seed", "1", "--trainer", "LAMM_CoOp",
            "--dataset-config-file", os.path.join(REPO, "configs/datasets/synthetic_shapes.yaml"),
            "--config-file", os.path.join(REPO, "configs/trainers/LAMM_CoOp/demo_cpu.yaml"),
            "--output-dir", out, "--protocol", os.path.join(REPO, "configs/continual/synthetic_4x3.yaml"),
            "--shared", "freeze", *SMALL, *opts,
        ]  # fmt: skip
        continual.main(continual.parse_args(args))
        return results(out)

    cache = ("LAMM_CACHE.DIR", str(tmp_path / "cache"))
    off = run_continual(str(tmp_path / "off"), *cache, *OFF)
    run_continual(str(tmp_path / "first"), *cache)
    capsys.readouterr()
    second = run_continual(str(tmp_path / "second"), *cache)
    assert capsys.readouterr().out.count(READ) >= 4  # every stage's evaluation on the classes seen
    assert off["continual"] and second["continual"] == off["continual"]
