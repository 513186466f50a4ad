"""Reading what a checkpoint learned: nearest tokens, drift, tables and figure (lamm_experiments.interpret)."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pytest
import torch

from lamm_experiments.interpret import (
    Vocabulary,
    compare,
    drift_labels,
    format_comparison,
    format_report,
    interpret,
    load_checkpoint,
    main,
    nearest_tokens,
    plot_drift,
    printable,
    run_label,
    vocabulary_for,
)
from lamm_experiments.synthetic import make_tensors
from lamm_plugin import CoOpConfig, LAMMConfig, build_model

FIXTURES = Path(__file__).parent / "fixtures" / "classnames"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pets() -> list[str]:
    """Eight real class names of one to three tokens (Oxford Pets, CoOp's folder-style names)."""
    names = (FIXTURES / "oxford_pets.txt").read_text().split("\n")
    return [n for n in names if n][:8]


def _trained_state(clip, steps: int = 8) -> dict:
    """A LAMM_CoOp checkpoint trained a few SGD steps on the synthetic shapes (labels and context move)."""
    train = make_tensors("train", num_per_class=4, num_classes=6, seed=0)
    mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.std).view(1, 3, 1, 1)
    images = (train.images - mean) / std
    torch.manual_seed(0)
    model = build_model("coop", clip, train.classnames, CoOpConfig(ctx_init="a photo of a"), LAMMConfig(), shots=4)
    optim = torch.optim.SGD(model.trainable_parameters(), lr=0.5, momentum=0.9)
    model.train()
    for _ in range(steps):
        loss = model(images, train.labels).losses["total"]
        optim.zero_grad()
        loss.backward()
        optim.step()
    return model.checkpoint_state()


@pytest.fixture(scope="module")
def clip0():
    """The tiny CLIP as tests/conftest.py builds it (torch seed 0), kept for the module."""
    from lamm_plugin.backbone import load_clip

    torch.manual_seed(0)
    return load_clip("tiny-vit")


@pytest.fixture(scope="module")
def trained(clip0) -> dict:
    return _trained_state(clip0)


@pytest.fixture(scope="module")
def untrained_shapes(clip0) -> dict:
    return _trained_state(clip0, steps=0)


@pytest.fixture(scope="module")
def untrained(clip0) -> dict:
    model = build_model("coop", clip0, _pets(), CoOpConfig(ctx_init="a photo of a"), LAMMConfig())
    return model.checkpoint_state()


def test_nearest_tokens_match_brute_force_and_chunking():
    generator = torch.Generator().manual_seed(0)
    vocab = torch.randn(500, 16, generator=generator)
    vectors = torch.cat([vocab[[3, 77]] * 1.5, torch.randn(5, 16, generator=generator)])
    ids, sims = nearest_tokens(vectors, vocab, k=4, metric="cosine", chunk=3)
    brute = torch.nn.functional.cosine_similarity(vectors[:, None], vocab[None], dim=-1)
    assert torch.equal(ids, brute.topk(4, dim=-1).indices)
    torch.testing.assert_close(sims, brute.topk(4, dim=-1).values)
    assert ids[:2, 0].tolist() == [3, 77]  # a scaled vocabulary row: its own row by cosine
    ids, dist = nearest_tokens(vectors, vocab, k=4, metric="l2", chunk=2)
    brute = torch.cdist(vectors, vocab)
    assert torch.equal(ids, brute.topk(4, dim=-1, largest=False).indices)
    torch.testing.assert_close(dist, brute.topk(4, dim=-1, largest=False).values, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="metric"):
        nearest_tokens(vectors, vocab, metric="dot")


def test_untrained_every_label_decodes_to_its_own_tokens(untrained, clip0):
    report = interpret(untrained, Vocabulary.from_clip(clip0), k=3)
    tokenizer = clip0.tokenizer
    assert [c.name for c in report.classes] == [n.replace("_", " ") for n in _pets()]
    for c in report.classes:
        ids = tokenizer.encode(c.name)
        assert [r.original_id for r in c.rows] == ids
        assert [r.nearest_id for r in c.rows] == ids
        assert c.decodes_to_self and c.drift_l2 == 0.0 and c.drift_cos == 0.0
        for r in c.rows:
            assert r.cosine[0][1] == pytest.approx(1.0, abs=1e-5) and r.l2[0][1] == pytest.approx(0.0, abs=1e-3)
        assert c.original == c.nearest
    s = report.summary
    assert s["classes_decoding_to_own_name"] == s["classes"] == 8
    assert s["drift_l2"]["max"] == 0.0
    assert [name for name, _ in report.context] == ["ctx[0]", "ctx[1]", "ctx[2]", "ctx[3]"]
    assert s["context_nearest"] == "a photo of a" and s["context_decoding_to_own_token"] == 4
    assert all(r.drift_l2 == 0.0 for _, r in report.context)


@pytest.mark.e2e
def test_trained_labels_moved(trained, clip0):
    report = interpret(trained, Vocabulary.from_clip(clip0), k=5)
    assert len(report.classes) == 6
    assert all(c.drift_l2 > 0 and c.drift_cos > 0 for c in report.classes)
    # Drift is measured from the rows' initial values, which are still CLIP's own embeddings of the names.
    for c in report.classes:
        assert [r.original_id for r in c.rows] == clip0.tokenizer.encode(c.name)
    moved = report.summary["moved_most"]
    assert [v for _, v in moved] == sorted((c.drift_l2 for c in report.classes), reverse=True)[:5]
    assert report.summary["drift_l2"]["max"] == moved[0][1]
    assert all(r.drift_l2 > 0 for _, r in report.context)  # CoOp's context trains too
    assert len(report.classes[0].rows[0].cosine) == 5


def test_dassl_run_folder_and_core_file(trained, clip0, tmp_path):
    core = tmp_path / "core.pt"
    torch.save(trained, core)
    run = tmp_path / "run"
    folder = run / "prompt_learner"
    folder.mkdir(parents=True)
    for epoch in (1, 2):  # Dassl's layout: epoch checkpoints with training keys, the index names the last
        torch.save(
            {**trained, "epoch": epoch, "optimizer": None, "val_result": None}, folder / f"model.pth.tar-{epoch}"
        )
    (folder / "checkpoint").write_text("model.pth.tar-2\n")
    assert load_checkpoint(str(run))["path"].endswith("model.pth.tar-2")
    assert load_checkpoint(str(folder), epoch=1)["path"].endswith("model.pth.tar-1")
    vocab = Vocabulary.from_clip(clip0)
    a = interpret(load_checkpoint(str(core)), vocab).to_dict()
    b = interpret(load_checkpoint(str(run)), vocab).to_dict()
    a.pop("source"), b.pop("source")
    assert a == b
    with pytest.raises(FileNotFoundError, match="model.pth.tar-7"):
        load_checkpoint(str(run), epoch=7)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is damaged.*cannot be read"):
        load_checkpoint(str(tmp_path / "junk.pt"))
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a lamm_plugin/1 checkpoint"):
        load_checkpoint(str(tmp_path / "other.pt"))


def test_vocabulary_is_checked_against_the_checkpoint(untrained, tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save(untrained, path)
    state = load_checkpoint(str(path))
    assert vocabulary_for(state, seed=0).fingerprint == untrained["clip_weights"]
    with pytest.raises(ValueError, match="--seed"):
        vocabulary_for(state, seed=1)


def _markdown_table(text: str) -> list[list[str]]:
    """The first markdown table of ``text``, cells unescaped."""
    lines = [line for line in text.split("\n\n")[0].splitlines() if line.startswith("|")]
    rows = []
    for line in lines[2:]:
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([c.strip().replace("\\|", "|").replace("\\\\", "\\") for c in cells])
    return rows


@pytest.mark.e2e
def test_command_csv_markdown_table_and_figures(trained, untrained_shapes, untrained, tmp_path, capsys):
    a, b = tmp_path / "trained.pt", tmp_path / "untrained.pt"
    torch.save(trained, a)
    torch.save(untrained_shapes, b)
    report = interpret(trained, vocabulary_for({**trained, "path": str(a)}, seed=0), k=2)

    assert main([str(a), "--seed", "0", "--topk", "2", "--format", "csv", "--figure", str(tmp_path / "d.png")]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["class"] for r in rows] == [c.name for c in report.classes]
    for row, c in zip(rows, report.classes):
        assert float(row["drift L2"]) == pytest.approx(c.drift_l2, abs=1e-6)
        assert row["nearest"] == c.nearest and row["own token"] == f"{c.own_rows}/{len(c.rows)}"
    assert (tmp_path / "d.png").read_bytes()[:8] == PNG_MAGIC

    assert main([str(a), "--seed", "0", "--topk", "2", "--format", "markdown"]) == 0
    parsed = _markdown_table(capsys.readouterr().out)
    assert [r[0] for r in parsed] == [c.name for c in report.classes]
    assert [float(r[5]) for r in parsed] == pytest.approx([c.drift_l2 for c in report.classes], abs=1e-6)
    assert format_report(report, "markdown").startswith("| class | original |")
    assert "moved most:" in format_report(report, "table")

    out = tmp_path / "cmp.md"
    args = [str(a), "--compare", str(b), "--seed", "0", "--format", "markdown", "--figure", str(tmp_path / "c.png")]
    assert main([*args, "--output", str(out)]) == 0
    parsed = _markdown_table(out.read_text())
    assert [r[0] for r in parsed] == [c.name for c in report.classes]
    assert all(float(r[4]) > 0 and float(r[5]) == 0 for r in parsed)  # drift L2 A, drift L2 B (untrained)
    assert all(r[3] == r[1] for r in parsed)  # nearest B == original: the untrained rows decode to their names
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC

    # No shared class (pets vs shapes): the table is written, the figure is refused with a clear error.
    torch.save(untrained, b)
    assert main([str(a), "--compare", str(b), "--seed", "0", "--figure", str(tmp_path / "e.png")]) == 1
    assert "No label rows to plot" in capsys.readouterr().err and not (tmp_path / "e.png").exists()


def test_a_failed_write_leaves_the_existing_table_and_figure_as_they_were(trained, tmp_path, capsys, monkeypatch):
    import errno

    a = tmp_path / "trained.pt"
    torch.save(trained, a)
    table, figure = tmp_path / "table.md", tmp_path / "drift.png"
    for path in (table, figure):
        path.write_text("kept\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # the disk fills up while the files are written
    assert main([str(a), "--seed", "0", "--output", str(table)]) == 1
    assert f"Could not write {table}: No space left on device" in capsys.readouterr().err
    assert main([str(a), "--seed", "0", "--figure", str(figure)]) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert table.read_text() == "kept\n" and figure.read_text() == "kept\n"
    assert sorted(os.listdir(tmp_path)) == ["drift.png", "table.md", "trained.pt"]


@pytest.mark.e2e
def test_comparison_side_by_side(trained, clip0, tmp_path):
    vocab = Vocabulary.from_clip(clip0)
    later = dict(trained)
    later["state_dict"] = dict(trained["state_dict"])
    rows, init = trained["state_dict"]["label_embedding.rows"], trained["state_dict"]["label_embedding.init"]
    later["state_dict"]["label_embedding.rows"] = init + 2 * (rows - init)  # twice the drift
    cmp = compare(interpret(trained, vocab), interpret(later, vocab))
    assert len(cmp.classes) == 6 and not cmp.only_a and not cmp.only_b
    for x, y in cmp.pairs():
        assert y.drift_l2 == pytest.approx(2 * x.drift_l2, rel=1e-5)
    parsed = list(csv.DictReader(io.StringIO(format_comparison(cmp, "csv"))))
    assert [float(r["drift L2 B"]) / float(r["drift L2 A"]) for r in parsed] == pytest.approx([2.0] * 6, rel=1e-4)
    path = plot_drift(cmp, str(tmp_path / "fig" / "cmp.png"))
    assert Path(path).read_bytes()[:8] == PNG_MAGIC and os.path.getsize(path) > 5000


@pytest.mark.e2e
def test_command_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 1
    assert "No checkpoint file or run folder" in capsys.readouterr().err
    (tmp_path / "empty_run" / "prompt_learner").mkdir(parents=True)
    assert main([str(tmp_path / "empty_run")]) == 1
    assert "No checkpoint in" in capsys.readouterr().err


def _untrained_report(clip, dataset: str):
    names = [n for n in (FIXTURES / f"{dataset}.txt").read_text().split("\n") if n]
    model = build_model("coop", clip, names, CoOpConfig(ctx_init="a photo of a"), LAMMConfig())
    return names, interpret(model.checkpoint_state(), Vocabulary.from_clip(clip), k=2)


def test_untrained_cifar100_decodes_to_its_names(clip0):
    names, report = _untrained_report(clip0, "cifar100")
    assert len(report.classes) == len(names) == 100
    assert report.summary["classes_decoding_to_own_name"] == 100 and report.summary["drift_l2"]["max"] == 0.0
    assert all([r.original_id for r in c.rows] == clip0.tokenizer.encode(c.name) for c in report.classes)


@pytest.mark.e2e
@pytest.mark.filterwarnings("ignore:Repeated class names")  # ImageNet's two repeated names, warned by LAMM
def test_untrained_imagenet_1000_classes(clip0):
    names, report = _untrained_report(clip0, "imagenet")
    assert len(report.classes) == 1000
    assert {"missile #2", "sunglasses #2"} <= {c.name for c in report.classes}  # repeated names keep their rows
    assert report.summary["classes_decoding_to_own_name"] == 1000 and report.summary["drift_l2"]["max"] == 0.0


def test_maple_first_layer_prompts_and_a_baseline_without_labels(clip0, tmp_path):
    from lamm_plugin import MaPLeConfig

    vocab = Vocabulary.from_clip(clip0)
    maple = build_model("maple", clip0, _pets()[:3], MaPLeConfig(n_ctx=2, prompt_depth=2), LAMMConfig())
    report = interpret(maple.checkpoint_state(), vocab, k=2)
    assert [name for name, _ in report.context] == ["ctx[0]", "ctx[1]"]  # deeper layers' prompts: not decoded
    assert report.summary["context_nearest"] == "a photo" and all(r.drift_l2 == 0 for _, r in report.context)
    assert report.summary["classes_decoding_to_own_name"] == 3

    coop = build_model("coop", clip0, _pets()[:3], CoOpConfig(n_ctx=4, ctx_init=""), LAMMConfig(enabled=False))
    report = interpret(coop.checkpoint_state(), vocab, k=2)
    assert report.classes == [] and len(report.context) == 4  # random context: no original token, no drift
    assert all(r.original_id is None and r.drift_l2 is None for _, r in report.context)
    assert "no label rows (trained without LAMM)" in format_report(report, "markdown")
    with pytest.raises(ValueError, match="No label rows to plot"):
        plot_drift(report, str(tmp_path / "none.png"))


def test_tokens_are_readable():
    import open_clip

    decoder = open_clip.SimpleTokenizer().decoder
    ids = {text: i for i, text in decoder.items()}
    vocab = Vocabulary(torch.empty(0, 1), decoder)
    assert vocab.token(ids["dog</w>"]) == "dog"  # a whole word
    assert vocab.token(ids["gol"]) == "gol-"  # a word piece
    assert vocab.token(ids["ðŁ¤·"]) == "\U0001f937-"  # bytes decoded to UTF-8
    assert vocab.token(ids["Đ"]) == "\\x10-"  # a control byte, escaped
    assert vocab.token(10**6) == "<1000000>"


def test_terminal_table_fits_and_hostile_class_names_are_escaped(trained, clip0):
    import dataclasses

    report = interpret(trained, Vocabulary.from_clip(clip0), k=5)
    hostile = "\x1b[2J\x1b[31mred\x07 circle\r\n" + "very long name " * 12
    report.classes[0] = dataclasses.replace(report.classes[0], name=hostile)
    report.summary["moved_most"] = [(hostile, 1.0), *report.summary["moved_most"][1:]]
    report.source = "/runs/\x1b]0;title\x07demo/prompt_learner/model.pth.tar-8"
    for fmt in ("table", "markdown", "csv"):
        text = format_report(report, fmt)
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text), fmt  # no raw control bytes, in any format
        assert "\\x1b[2J\\x1b[31mred\\x07 circle\\r\\n" in text.replace("\n", " ") or fmt == "table"
    table = format_report(report, "table")
    assert max(len(line) for line in table.splitlines()) <= 120
    header = table.splitlines()[0]
    assert "original" not in header and "top-k L2" not in header and "top-k cosine" in header  # the rest: markdown
    assert "\\x1b[2J\\x1b[31mred\\x07" in table and "…" in table  # escaped, and the long name cut
    assert printable("ok é 🤷") == "ok é 🤷" and printable("a\tb\x00") == "a\\tb\\x00"
    side_by_side = format_comparison(compare(report, report), "table")
    assert max(len(line) for line in side_by_side.splitlines()) <= 120
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", side_by_side)


def test_drift_figure_names_runs_not_paths(trained, clip0):
    vocab = Vocabulary.from_clip(clip0)
    a, b = interpret(trained, vocab), interpret(trained, vocab)
    a.source = "/work/output/fewshot/pets/shots_1/LAMM_CoOp/cfg/seed1/prompt_learner/model.pth.tar-50"
    b.source = "/work/output/fewshot/pets/shots_16/LAMM_CoOp/cfg/seed1/prompt_learner/model-best.pth.tar"
    assert drift_labels(a) == ["coop, seed1, epoch 50"]
    # Two runs named seed1: the folders where their paths differ tell them apart.
    assert drift_labels(compare(a, b)) == ["A: coop, shots_1 (seed1), epoch 50", "B: coop, shots_16 (seed1), best"]
    b.source = "/elsewhere/demo/prompt_learner/model.pth.tar-20"
    assert drift_labels(compare(a, b)) == ["A: coop, seed1, epoch 50", "B: coop, demo, epoch 20"]
    assert run_label("/x/learned.pt", "maple") == "maple, learned"
    assert run_label("", "coop") == "coop"
