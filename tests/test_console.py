"""What a run shows on the console and what its ``log.txt`` keeps: the tee's two sides, the progress line and its
ETA, the checkpoint note and the header's device (the end-to-end run: ``tests/test_dassl_train.py``)."""

from __future__ import annotations

import io
import sys

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

import torch  # noqa: E402

import train  # noqa: E402
from lamm_plugin.dassl.console import emit, is_notice  # noqa: E402
from lamm_plugin.dassl.progress import EtaClock, format_eta, short_progress  # noqa: E402
from lamm_plugin.dassl.resume import checkpoint_note  # noqa: E402

pytestmark = pytest.mark.dassl


def test_log_only_keeps_everything_in_the_log_and_only_notices_on_the_console(tmp_path):
    console = io.StringIO()
    tee = train.Tee(console, str(tmp_path / "log.txt"))
    with tee.log_only():
        tee.write("** Config **\nUSE_CUDA: True\n")
        tee.write("Note: 2 of 4 classes")  # a line in pieces, as print writes it
        tee.write(" have fewer images\nLoading dataset")
        tee.write(": X\nWarning: odd\n")
        tee.write("Note: unfinished at the end")
    tee.write("epoch 1/2\n")
    tee.write_split("short\n", "full line with every term\n")
    tee.file.close()
    assert console.getvalue() == (
        "Note: 2 of 4 classes have fewer images\nWarning: odd\nNote: unfinished at the end" + "epoch 1/2\nshort\n"
    )
    log = (tmp_path / "log.txt").read_text()
    assert log == (
        "** Config **\nUSE_CUDA: True\nNote: 2 of 4 classes have fewer images\nLoading dataset: X\nWarning: odd\n"
        "Note: unfinished at the endepoch 1/2\nfull line with every term\n"
    )


def test_a_tee_inside_a_tee_gives_both_logs_the_full_text(tmp_path):
    console = io.StringIO()
    outer = train.Tee(console, str(tmp_path / "run" / "log.txt"))
    inner = train.Tee(outer, str(tmp_path / "run" / "stage1" / "log.txt"))
    inner.write_split("short\n", "full\n")
    inner.write("plain\n")
    inner.file.close(), outer.file.close()
    assert console.getvalue() == "short\nplain\n"
    assert (tmp_path / "run" / "log.txt").read_text() == "full\nplain\n"
    assert (tmp_path / "run" / "stage1" / "log.txt").read_text() == "full\nplain\n"


def test_core_warnings_reach_the_console_while_it_is_quiet(tmp_path, monkeypatch):
    import sys

    from lamm_plugin.fast_paths import logger  # a core module's logger (routed to stdout by lamm_plugin.dassl)

    console = io.StringIO()
    tee = train.Tee(console, str(tmp_path / "log.txt"))
    monkeypatch.setattr(sys, "stdout", tee)
    with tee.log_only():
        logger.info("Label embeddings: 4 of 4 classes loaded")
        logger.warning("CUDA graph capture failed")
    monkeypatch.undo()
    tee.file.close()
    assert console.getvalue() == "CUDA graph capture failed\n"
    assert (tmp_path / "log.txt").read_text() == (
        "Label embeddings: 4 of 4 classes loaded\nCUDA graph capture failed\n"
    )


def test_emit_without_a_split_stdout_prints_the_full_text(capsys):
    emit("short", "full")
    emit(None, "log only")
    assert capsys.readouterr().out == "full\nlog only\n"
    assert is_notice("  Note: x") and is_notice("No --seed given: drew seed 3") and not is_notice("Loading trainer")


def test_eta_is_the_mean_pace_of_the_run_so_far_not_the_last_batch():
    now = [100.0]
    clock = EtaClock(lambda: now[0])
    assert clock.eta(10) == 0.0  # nothing measured yet
    clock.begin()
    for step in (1.0, 1.0, 1.0, 7.0):  # one slow batch (a checkpoint write, a worker start)
        now[0] += step
        clock.batch_done()
    clock.begin()  # a later epoch does not restart the clock
    assert clock.seconds_per_batch() == pytest.approx(2.5)
    assert clock.eta(100) == pytest.approx(250.0)
    for _ in range(96):
        now[0] += 1.0
        clock.batch_done()
    assert clock.seconds_per_batch() == pytest.approx(1.06)  # the slow batch fades out
    assert format_eta(3725.9) == "1:02:05" and format_eta(-1) == "0:00:00"


def test_progress_line_is_short_even_for_long_runs():
    line = short_progress(199, 200, 12345, 99999, 12345.678, 100.0, 2e-3, format_eta(10 * 86400))
    assert len(line) < 100, line
    assert line.startswith("epoch 199/200 batch 12345/99999") and "acc 100.0%" in line and "eta 10 days" in line
    assert short_progress(2, 20, 5, 24, 3.2, 12.5, 0.05, "0:00:06") == (
        "epoch  2/20 batch  5/24  loss 3.2000  acc  12.5%  lr 5.00e-02  eta 0:00:06"
    )


def test_checkpoint_note_says_what_is_kept_once_and_names_the_final_file():
    path = "out/prompt_learner/model.pth.tar-{}"
    notes = [checkpoint_note(e, 20, path.format(e), 0, first=e == 1) for e in range(1, 21)]
    assert [i + 1 for i, n in enumerate(notes) if n] == [1, 20]
    assert (
        notes[0] == "checkpoint: epoch 1/20 -> out/prompt_learner/model.pth.tar-1 (each epoch's replaces the previous)"
    )
    assert notes[-1] == "checkpoint: epoch 20/20 -> out/prompt_learner/model.pth.tar-20 (the run's final one)"
    assert "every 5-th stays" in checkpoint_note(3, 20, "p", 5, first=True)
    # A resumed process notes its first save again.
    assert checkpoint_note(7, 20, "p", 0, first=True) is not None


def test_header_device_is_the_real_one():
    cfg = train.setup_cfg(train.parse_args([]))
    assert cfg.USE_CUDA  # Dassl's default
    assert train.device_text(cfg, torch.device("cpu")) == "cpu (USE_CUDA is True, but no CUDA device is available)"
    cfg.defrost()
    cfg.USE_CUDA = False
    assert train.device_text(cfg, torch.device("cpu")) == "cpu"


def test_a_hosts_dassl_logger_writes_each_line_as_it_is_printed(tmp_path, monkeypatch):
    from dassl.utils.logger import Logger

    from lamm_plugin.dassl.console import line_buffered_log

    logger = Logger(str(tmp_path / "log.txt"))  # what setup_logger in a host's train.py makes sys.stdout
    logger.console = io.StringIO()
    monkeypatch.setattr(sys, "stdout", logger)
    assert line_buffered_log() and not line_buffered_log()  # once
    print("epoch [1/2] batch [1/4] loss 3.2")
    text = (tmp_path / "log.txt").read_text()  # nothing flushed or closed: what a kill -9 now leaves
    monkeypatch.undo()
    logger.file.close()
    assert text == "epoch [1/2] batch [1/4] loss 3.2\n"


def test_header_names_a_validation_set_that_is_the_test_set():
    from types import SimpleNamespace

    own = SimpleNamespace(train_x=[0] * 8, val=[0] * 4, test=[0] * 6, has_val=True)
    assert train.split_sizes(own) == "8 train, 4 val, 6 test images"
    test = [0] * 51
    shared = SimpleNamespace(train_x=[0] * 8, val=test, test=test, has_val=False)  # a validation share of 0
    assert train.split_sizes(shared) == "8 train, 51 test images; validation on the test images"
