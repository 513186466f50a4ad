"""Predictions from a trained run without Dassl (:mod:`lamm_plugin.predict`), checked against the trainer's own
evaluation: one tiny LAMM_CoOp run on the base half of the synthetic shapes (trained once for the module), then its
test images predicted from files, PIL images and tensors, through the Python API and the command.

The logits equal the trainer's to the bit when the images go through in the same batches (the run's test batch
size, in the test split's order): argmax, accuracy and the base-to-new evaluation of the new classes included.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image
from runs import REPO, train_args
from trainer_eval import accuracy, train_recorded

from lamm_plugin.layout import PREDICTIONS_FORMAT
from lamm_plugin.predict import (
    EvalTransform,
    Predictor,
    UnreadableImageError,
    check_classes,
    collect_images,
    main,
    parse_classes,
    resolve_device,
)

TEST_BATCH = 5  # 6 test images per half split into batches 5 + 1: the predictor must batch as the trainer does
# 6 classes (3 base + 3 new), 2 shots, 2 test images per class.
SMALL = [
    "OPTIM.MAX_EPOCH", "2",
    "OPTIM.LR", "0.01",
    "DATASET.NUM_SHOTS", "2",
    "DATASET.SYNTHETIC.NUM_CLASSES", "6",
    "DATASET.SYNTHETIC.TRAIN_PER_CLASS", "2",
    "DATASET.SYNTHETIC.VAL_PER_CLASS", "1",
    "DATASET.SYNTHETIC.TEST_PER_CLASS", "2",
    "DATALOADER.NUM_WORKERS", "0",
    "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
    "DATALOADER.TEST.BATCH_SIZE", str(TEST_BATCH),
    "TRAIN.PRINT_FREQ", "10",
]  # fmt: skip


# ---- without Dassl ------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_command_runs_without_dassl(tmp_path):
    """``python -m lamm_plugin.predict`` with Dassl and yacs made unimportable: zero-shot CLIP on an image."""
    image = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (220, 20, 20)).save(image)
    argv = ["tiny-vit", str(image), "--classes", "red circle,blue square", "--seed", "0", "--format", "json"]
    code = (
        "import runpy, sys; sys.modules['dassl'] = None; sys.modules['yacs'] = None; "
        f"sys.argv = ['predict', *{argv!r}, '--device', 'cpu']; "
        "runpy.run_module('lamm_plugin.predict', run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    expected = Predictor.zero_shot("tiny-vit", ["red circle", "blue square"], seed=0, device="cpu").predict(image)[0]
    assert document["format"] == PREDICTIONS_FORMAT and document["classes"] == ["red circle", "blue square"]
    assert [t["class"] for t in document["predictions"][0]["top"]] == expected.classes


def test_classes_from_list_file_and_sequence(tmp_path):
    assert parse_classes(" red circle, blue square ,,") == ["red circle", "blue square"]
    file = tmp_path / "classes.txt"
    file.write_text("# my classes\nred circle\n\nyellow, star\n")
    assert parse_classes(str(file)) == ["red circle", "yellow, star"]
    assert parse_classes(["a", "b"]) == ["a", "b"]
    with pytest.raises(ValueError, match="No class names"):
        parse_classes(" , ")


def test_class_lists_against_the_trained_names():
    trained = ["crane", "red circle", "crane"]  # ImageNet repeats a few names: each is a class of its own
    check_classes(["crane", "crane", "red_circle"], trained)  # as often as trained; '_' reads as a space
    check_classes(["purple moon", "crane"], trained)  # a new name
    with pytest.raises(ValueError, match=r"given more than once: 'red circle' 2 times .*Give each class once"):
        check_classes(["red circle", "red_circle"], trained)
    with pytest.raises(ValueError, match="'crane' 3 times"):
        check_classes(["crane"] * 3, trained)
    with pytest.raises(ValueError, match="'purple moon' 2 times"):
        check_classes(["purple moon", "purple moon"], trained)
    with pytest.warns(UserWarning, match=r"Class 'Red_Circle' is not a class of this run.*the run has 'red circle'"):
        check_classes(["Red_Circle"], trained)


def test_devices_are_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="Unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda:0")


def test_zero_shot_inputs_paths_pil_and_tensors(tmp_path):
    predictor = Predictor.zero_shot("tiny-vit", "red circle,blue square,green triangle", seed=0, device="cpu")
    image = Image.new("RGB", (50, 37), (200, 30, 10))
    path = tmp_path / "red.png"
    image.save(path)
    tensor = predictor.preprocess(image)
    assert tensor.shape == (3, 32, 32)
    together = predictor.predict([str(path), image, tensor, path], topk=2)
    assert [p.source for p in together] == [str(path), "<image 1>", "<image 2>", str(path)]
    assert all(len(p.classes) == 2 and p.probabilities[0] >= p.probabilities[1] for p in together)
    # One image four times (rows of one batch may differ in the last bits on a CPU).
    assert len({tuple(p.classes) for p in together}) == 1
    torch.testing.assert_close(
        torch.tensor([p.probabilities for p in together]), torch.tensor([together[0].probabilities] * 4)
    )
    # A batch tensor, a single tensor and a single PIL image.
    batch = predictor.predict(torch.stack([tensor, tensor]), topk=10)
    assert len(batch) == 2 and len(batch[0].classes) == 3  # topk is capped at the number of classes
    assert abs(sum(batch[0].probabilities) - 1) < 1e-5
    assert predictor(image)[0].top == together[1].top
    logits = predictor.logits(tensor[None])
    assert together[1].label == int(logits.argmax())
    with pytest.raises(ValueError, match=r"preprocessed image.*\[3, 32, 32\].*got \[3, 50, 37\]"):
        predictor.predict(torch.zeros(3, 50, 37))
    with pytest.raises(TypeError, match="give a path, a PIL image or a tensor"):
        predictor.predict([3])


def test_ranked_by_logit_so_rank_one_is_the_argmax():
    from lamm_plugin.predict import _predictions

    logits = torch.tensor([[1.0, 3.0, 3.0, -2.0], [0.0, 0.0, 0.0, 0.0]])
    first, second = _predictions(logits, ["a", "b", "c", "d"], ["x", "y"], topk=3)
    assert first.labels == [1, 2, 0] and first.classes == ["b", "c", "a"]
    assert second.labels == [0, 1, 2] and second.label == int(logits[1].argmax())


def test_folders_skip_non_images(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/2.PNG", "a.jpg", "notes.txt", "b/readme.md"):
        (tmp_path / name).write_bytes(b"")
    images, skipped = collect_images([tmp_path])
    assert images == [str(tmp_path / "a.jpg"), str(tmp_path / "b" / "2.PNG")]
    assert skipped == [str(tmp_path / "notes.txt"), str(tmp_path / "b" / "readme.md")]
    assert collect_images([tmp_path / "notes.txt"]) == ([str(tmp_path / "notes.txt")], [])  # named: tried
    with pytest.raises(FileNotFoundError, match="No image file or folder at .*missing"):
        collect_images([tmp_path / "missing"])


@pytest.mark.e2e
def test_bad_inputs_to_the_command(tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)

    def fails(*argv: str) -> str:
        assert main(["--device", "cpu", "--no-progress", *argv]) == 1
        return capsys.readouterr().err

    assert "neither a run folder, a checkpoint file nor a CLIP backbone name" in fails("no/such/run", str(image))
    (tmp_path / "plain").mkdir()
    assert "is a folder but not a run folder" in fails(str(tmp_path / "plain"), str(image))
    (tmp_path / "fresh" / "prompt_learner").mkdir(parents=True)
    assert "holds no checkpoint" in fails(str(tmp_path / "fresh"), str(image))
    (tmp_path / "not_a_checkpoint.pth").write_text("hello")
    assert "is damaged" in fails(str(tmp_path / "not_a_checkpoint.pth"), str(image))
    assert "needs the class names" in fails("tiny-vit", str(image))
    assert "--epoch picks a checkpoint of a run folder" in fails(
        "tiny-vit", str(image), "--classes", "a", "--epoch", "2"
    )
    assert "--template applies to zero-shot CLIP only" in fails(str(tmp_path / "fresh"), str(image), "--template", "{}")
    assert "Unknown device 'tpu'" in fails("tiny-vit", str(image), "--classes", "a,b", "--device", "tpu")
    assert "No image file or folder" in fails("tiny-vit", str(tmp_path / "nope.png"), "--classes", "a,b")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    err = fails("tiny-vit", str(image), str(broken), "--classes", "a,b")
    assert f"Cannot read {broken} as an image" in err and "--skip-unreadable" in err
    assert main(["tiny-vit", str(image), str(broken), "--classes", "a,b", "--skip-unreadable", "--format", "json"]) == 0
    out = capsys.readouterr()
    assert "Skipped 1 file(s) that do not decode" in out.err
    document = json.loads(out.out)
    assert [p["path"] for p in document["predictions"]] == [str(image)]
    assert document["skipped"]["unreadable"] == [str(broken)]
    predictor = Predictor.zero_shot("tiny-vit", ["a", "b"], device="cpu")
    with pytest.raises(UnreadableImageError, match="broken.png"):
        predictor.predict(str(broken))
    with pytest.raises(UnreadableImageError, match=r"Cannot read .*broken.png as an image"):
        list(predictor.predict_files([str(image), str(broken)], progress=False))
    # Decoding in a worker process: the same batches, the same predictions, the same skipped file.
    here = list(predictor.predict_files([str(image), str(broken), str(image)], skip_unreadable=True, progress=False))
    there = list(predictor.predict_files([str(image), str(broken), str(image)], skip_unreadable=True, workers=1))
    assert here == there and here[0] == (str(broken), here[0][1]) and "UnidentifiedImageError" in here[0][1]


def test_transform_settings_from_a_config():
    config = {"INPUT": {"SIZE": [48, 40], "INTERPOLATION": "bilinear", "TRANSFORMS": ["random_flip"]}}
    transform = EvalTransform.from_config(config)
    assert transform.size == (48, 40) and transform.interpolation == "bilinear" and not transform.normalize
    out = transform(Image.new("RGB", (100, 60), (255, 0, 0)))
    assert out.shape == (3, 48, 40) and float(out.max()) == 1.0  # [0, 1], not normalised
    assert EvalTransform.from_config({"INPUT": {}}) == EvalTransform(  # Dassl's defaults
        (224, 224), "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), normalize=False
    )
    with pytest.raises(ValueError, match="NO_TRANSFORM"):
        EvalTransform.from_config({"INPUT": {"SIZE": [32, 32], "NO_TRANSFORM": True}})
    with pytest.raises(ValueError, match="Unknown INPUT.INTERPOLATION 'lanczos'"):
        EvalTransform((32, 32), interpolation="lanczos")


# ---- against the trainer (Dassl) ----------------------------------------------------------------------------------
def _train(data_root: str, out: str, *extra: str, trainer: str = "LAMM_CoOp", opts: tuple[str, ...] = ()):
    """``train.py`` in process on the synthetic set; returns the :class:`Evaluation` of its final test."""
    return train_recorded(train_args(trainer, data_root, out, *extra, small=SMALL, opts=opts))


@pytest.fixture(scope="module")
def dassl_runs(tmp_path_factory):
    """One LAMM_CoOp run trained on the base classes, its ``--eval-only`` on the new classes, and zero-shot CLIP
    (``ZeroshotCLIP --eval-only``) on all classes; the same seed, so the same tiny random CLIP."""
    pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")
    root = tmp_path_factory.mktemp("predict")
    data, run = str(root / "data"), str(root / "run")
    base = _train(data, run, opts=("DATASET.SUBSAMPLE_CLASSES", "base"))
    new = _train(data, str(root / "new"), "--eval-only", "--model-dir", run, opts=("DATASET.SUBSAMPLE_CLASSES", "new"))
    zero = _train(data, str(root / "zero"), "--eval-only", trainer="ZeroshotCLIP")
    amp = _train(
        data, str(root / "amp"), "--eval-only", trainer="ZeroshotCLIP", opts=("TRAINER.ZEROSHOTCLIP.PREC", "amp")
    )
    return {"run": run, "base": base, "new": new, "zero": zero, "amp": amp, "root": root}


@pytest.mark.e2e
@pytest.mark.dassl
def test_run_predictions_equal_the_trainers_evaluation(dassl_runs):
    base = dassl_runs["base"]
    predictor = Predictor.from_run(dassl_runs["run"], device="cpu")
    assert predictor.batch_size == TEST_BATCH and predictor.classnames == base.trainer.dm.dataset.classnames
    assert predictor.info["method"] == "coop" and predictor.info["lamm"] and predictor.info["epoch"] == 2
    assert base.batch_size == TEST_BATCH
    logits = base.logits_of(predictor)
    assert torch.equal(logits, base.logits)  # to the bit: same model, transform, batches
    predictions = predictor.predict(base.paths, topk=3)
    assert [p.label for p in predictions] == base.predictions
    assert accuracy(predictions, base.labels) == base.accuracy
    # The trained model is not the untrained one: the run changed the logits.
    untrained = Predictor.zero_shot("tiny-vit", predictor.classnames, template="a photo of a {}.", seed=1)
    first = torch.stack([predictor.preprocess(p) for p in base.batches()[0]])
    assert not torch.equal(untrained.logits(first), logits[:TEST_BATCH])
    # The trainer's model_inference takes tensors only, and says where to go with an image.
    with pytest.raises(TypeError, match=r"not a PngImageFile.*Predictor.from_run\(OUTPUT_DIR\)"):
        base.trainer.model_inference(Image.open(base.paths[0]))
    # PIL images and tensors give the same predictions as the files.
    pil = predictor.predict([Image.open(p) for p in base.paths], topk=3)
    tensors = predictor.predict(torch.stack([predictor.preprocess(p) for p in base.paths]), topk=3)
    for ours in (pil, tensors):
        assert [(p.classes, p.probabilities) for p in ours] == [(p.classes, p.probabilities) for p in predictions]


@pytest.mark.e2e
@pytest.mark.dassl
def test_transform_equals_dassls_test_transform(dassl_runs, tmp_path):
    from dassl.data.transforms import build_transform
    from dassl.utils import read_image

    from lamm_plugin.dassl.results import cfg_to_dict

    base = dassl_runs["base"]
    images = list(base.paths[:3])
    rng = torch.Generator().manual_seed(0)
    for name, size, mode in (
        ("wide.jpg", (57, 41), "RGB"),
        ("tall.png", (23, 70), "L"),
        ("alpha.png", (64, 64), "RGBA"),
    ):
        pixels = (torch.rand(size[1], size[0], len(mode), generator=rng) * 255).to(torch.uint8).squeeze(-1).numpy()
        Image.fromarray(pixels, mode).save(tmp_path / name)
        images.append(str(tmp_path / name))
    variants = [
        (),  # the run's: 32 px, bicubic, normalize
        ("INPUT.SIZE", (48, 40), "INPUT.INTERPOLATION", "bilinear"),
        ("INPUT.INTERPOLATION", "nearest", "INPUT.TRANSFORMS", ["random_flip", "instance_norm"]),
        ("INPUT.SIZE", (224, 224), "INPUT.TRANSFORMS", ["random_resized_crop", "normalize"]),
    ]
    for opts in variants:
        cfg = base.trainer.cfg.clone()
        cfg.defrost()
        for key, value in zip(opts[::2], opts[1::2]):
            node, leaf = key.split(".")
            cfg[node][leaf] = value
        dassl_transform = build_transform(cfg, is_train=False)
        ours = EvalTransform.from_config(cfg_to_dict(cfg))
        for path in images:
            image = read_image(path)
            assert torch.equal(ours(image), dassl_transform(image)), (opts, path)
    from dassl.config import get_cfg_default

    from lamm_plugin.predict import DASSL_INPUT_DEFAULTS

    defaults = get_cfg_default().INPUT
    for key, value in DASSL_INPUT_DEFAULTS.items():  # what a config without these keys had
        assert (list(value) if isinstance(value, tuple) else value) == (
            list(defaults[key]) if isinstance(defaults[key], (tuple, list)) else defaults[key]
        ), key
    assert Predictor.from_run(dassl_runs["run"], device="cpu").transform == EvalTransform.from_config(
        cfg_to_dict(base.trainer.cfg)
    )


@pytest.mark.e2e
@pytest.mark.dassl
def test_new_class_names_equal_base_to_new_evaluation(dassl_runs):
    base, new = dassl_runs["base"], dassl_runs["new"]
    names = new.trainer.dm.dataset.classnames
    assert not set(names) & set(base.trainer.dm.dataset.classnames)
    predictor = Predictor.from_run(dassl_runs["run"], classes=names, device="cpu")
    assert torch.equal(new.logits_of(predictor), new.logits)
    predictions = predictor.predict(new.paths)
    assert [p.label for p in predictions] == new.predictions and accuracy(predictions, new.labels) == new.accuracy


@pytest.mark.e2e
@pytest.mark.dassl
def test_subset_of_the_trained_classes(dassl_runs):
    base = dassl_runs["base"]
    full = Predictor.from_run(dassl_runs["run"], device="cpu", batch_size=64)
    names = full.classnames
    subset = Predictor.from_run(dassl_runs["run"], classes=[names[2], names[0]], device="cpu", batch_size=64)
    assert subset.classnames == [names[2], names[0]]
    images = torch.stack([full.preprocess(p) for p in base.paths])
    # The class set changes how the text prompts are grouped, so the columns agree to float rounding.
    torch.testing.assert_close(subset.logits(images), full.logits(images)[:, [2, 0]], rtol=1e-5, atol=1e-5)
    assert {c for p in subset.predict(base.paths, topk=5) for c in p.classes} == {names[0], names[2]}


@pytest.mark.e2e
@pytest.mark.dassl
@pytest.mark.parametrize("precision", ["fp32", "amp"])
def test_zero_shot_equals_the_zeroshot_trainer(dassl_runs, precision):
    zero = dassl_runs["zero" if precision == "fp32" else precision]
    classnames = zero.trainer.dm.dataset.classnames
    predictor = Predictor.zero_shot(
        "tiny-vit", classnames, dataset="SyntheticShapes", seed=1, batch_size=TEST_BATCH, precision=precision
    )
    assert torch.equal(zero.logits_of(predictor), zero.logits)
    predictions = predictor.predict(zero.paths)
    assert [p.label for p in predictions] == zero.predictions and accuracy(predictions, zero.labels) == zero.accuracy


@pytest.mark.e2e
@pytest.mark.dassl
def test_other_clip_weights_are_refused(dassl_runs, tmp_path):
    run = dassl_runs["run"]
    with pytest.raises(ValueError, match=r"trained on other weights of this backbone.*--seed.*--allow-other-weights"):
        Predictor.from_run(run, seed=2, device="cpu")
    other = tmp_path / "other.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        from lamm_plugin import load_clip

        torch.save(load_clip("tiny-vit").model.state_dict(), other)
    with pytest.raises(ValueError, match=r"ALLOW_OTHER_WEIGHTS.*--pretrained TAG_OR_FILE.*--allow-other-weights"):
        Predictor.from_run(run, pretrained=str(other), device="cpu")
    loaded = Predictor.from_run(run, pretrained=str(other), allow_other_weights=True, device="cpu")
    assert len(loaded.predict(dassl_runs["base"].paths[:2])) == 2
    image = dassl_runs["base"].paths[0]
    assert main([run, image, "--seed", "2", "--no-progress"]) == 1


@pytest.mark.e2e
@pytest.mark.dassl
def test_checkpoint_file_with_and_without_its_run_folder(dassl_runs, tmp_path):
    base, run = dassl_runs["base"], dassl_runs["run"]
    reference = Predictor.from_run(run, device="cpu").predict(base.paths)
    inside = Predictor.from_checkpoint(os.path.join(run, "prompt_learner", "model.pth.tar-2"), device="cpu")
    assert inside.predict(base.paths) == reference
    alone = tmp_path / "model.pth.tar-2"
    shutil.copy(os.path.join(run, "prompt_learner", "model.pth.tar-2"), alone)
    # Without the run's config.json: CLIP's own transform (the demo config's), fp32, the seed given by hand.
    with pytest.raises(ValueError, match="--seed"):
        Predictor.from_checkpoint(alone, device="cpu")
    detached = Predictor.from_checkpoint(alone, seed=1, batch_size=TEST_BATCH, device="cpu")
    assert detached.transform == inside.transform and detached.predict(base.paths) == reference
    # The precision comes from the run's config (TRAINER.<NODE>.PREC).
    moved = tmp_path / "bf16_run"
    shutil.copytree(run, moved)
    config = json.loads((moved / "config.json").read_text())
    config["TRAINER"]["LAMM_COOP"]["PREC"] = "bf16"
    (moved / "config.json").write_text(json.dumps(config))
    bf16 = Predictor.from_run(moved, device="cpu")
    assert bf16.precision == "bf16" and bf16.model.frozen[0].visual.conv1.weight.dtype == torch.bfloat16
    with pytest.raises(FileNotFoundError, match=r"No model.pth.tar-7 .*epochs kept there: \[2\]"):
        Predictor.from_run(run, epoch=7)


@pytest.mark.e2e
@pytest.mark.dassl
def test_command_on_files_and_a_folder(dassl_runs, tmp_path, capsys):
    base, run = dassl_runs["base"], dassl_runs["run"]
    expected = Predictor.from_run(run, device="cpu").predict(base.paths, topk=2)
    capsys.readouterr()  # what loading it logged (the Dassl adapter, imported here, prints the core's log)

    assert main([run, *base.paths, "--topk", "2", "--format", "csv", "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out.out)))
    assert list(rows[0]) == ["path", "rank", "class", "probability"] and len(rows) == 2 * len(base.paths)
    for p, (first, second) in zip(expected, zip(rows[::2], rows[1::2])):
        assert (first["path"], first["rank"], first["class"]) == (p.source, "1", p.top)
        assert float(first["probability"]) == p.probability and second["class"] == p.classes[1]
    assert f"Predicting {len(base.paths)} image(s) among 3 classes on cpu" in out.err

    # A folder with other files and a subfolder; JSON written to a file (format from its ending).
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    copies = {}
    for i, path in enumerate(base.paths[:4]):
        target = folder / ("more" if i % 2 else "") / f"img{i}.png"
        shutil.copy(path, target)
        copies[str(target)] = path
    (folder / "notes.txt").write_text("not an image")
    output = tmp_path / "out" / "predictions.json"
    assert main([run, str(folder), "--output", str(output), "--topk", "3", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "Skipped 1 file(s) that are not images" in err and "notes.txt" in err
    document = json.loads(output.read_text())
    assert document["format"] == PREDICTIONS_FORMAT and document["model"]["method"] == "coop"
    assert document["classes"] == base.trainer.dm.dataset.classnames
    assert document["skipped"] == {"not_images": [str(folder / "notes.txt")], "unreadable": []}
    by_source = {p.source: p for p in Predictor.from_run(run, device="cpu").predict(base.paths[:4], topk=3)}
    assert sorted(p["path"] for p in document["predictions"]) == sorted(copies)
    for entry in document["predictions"]:
        ours = by_source[copies[entry["path"]]]
        assert [t["class"] for t in entry["top"]] == ours.classes and [t["rank"] for t in entry["top"]] == [1, 2, 3]
        assert entry["top"][0]["label"] == ours.label

    # The table: one line per image and rank, probabilities in percent; --classes as a file of names.
    names = tmp_path / "names.txt"
    names.write_text("\n".join(base.trainer.dm.dataset.classnames[:2]) + "\n")
    capsys.readouterr()
    assert main([run, base.paths[0], "--classes", str(names), "--topk", "1", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["path", "rank", "class", "probability"] and len(lines) == 2
    assert lines[1].startswith(base.paths[0]) and lines[1].endswith("%")


@pytest.mark.e2e
@pytest.mark.dassl
def test_command_zero_shot(dassl_runs, capsys):
    zero = dassl_runs["zero"]
    classnames = zero.trainer.dm.dataset.classnames
    expected = Predictor.zero_shot("tiny-vit", classnames, template="a photo of a {}.", seed=1).predict(zero.paths)
    capsys.readouterr()
    argv = ["tiny-vit", *zero.paths, "--classes", ",".join(classnames), "--seed", "1", "--format", "json"]
    assert main([*argv, "--no-progress"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["model"]["kind"] == "zero-shot" and document["classes"] == classnames
    assert [p["top"][0]["label"] for p in document["predictions"]] == [p.label for p in expected]


def test_a_failed_write_leaves_the_existing_predictions_as_they_were(tmp_path, capsys, monkeypatch):
    import errno

    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    out = tmp_path / "predictions.csv"
    out.write_text("path,rank,class,probability\nkept,1,a,100%\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # the disk fills up while the file is written
    argv = ["tiny-vit", str(image), "--classes", "a,b", "--device", "cpu", "--no-progress", "--output", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"Error: Could not write {out}: No space left on device. Nothing was written" in err
    assert "Traceback" not in err
    assert out.read_text() == "path,rank,class,probability\nkept,1,a,100%\n"  # whole, as it was
    assert sorted(os.listdir(tmp_path)) == ["predictions.csv", "x.png"]  # no partial file left
