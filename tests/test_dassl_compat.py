"""Each Dassl 0.6.3 breakage on current torch, and its fix in :mod:`lamm_plugin.dassl.compat`."""

from __future__ import annotations

import math
import pickle

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

import torch  # noqa: E402
from dassl.config import get_cfg_default  # noqa: E402
from dassl.optim import build_optimizer  # noqa: E402
from dassl.optim import lr_scheduler as dassl_lr_scheduler  # noqa: E402
from dassl.utils import load_checkpoint as dassl_load_checkpoint  # noqa: E402

from lamm_plugin.dassl import compat  # noqa: E402

pytestmark = pytest.mark.dassl

LR, EPOCHS, CONS_LR = 0.002, 5, 1e-5


def optim_cfg(warmup_type="constant", warmup_epoch=1, scheduler="cosine"):
    cfg = get_cfg_default().OPTIM
    cfg.NAME, cfg.LR, cfg.MAX_EPOCH, cfg.LR_SCHEDULER = "sgd", LR, EPOCHS, scheduler
    cfg.WARMUP_EPOCH, cfg.WARMUP_TYPE, cfg.WARMUP_CONS_LR, cfg.WARMUP_MIN_LR = warmup_epoch, warmup_type, CONS_LR, 2e-5
    return cfg


def make(cfg):
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = build_optimizer([param], cfg)
    return param, optimizer, compat.build_lr_scheduler(optimizer, cfg)


def epoch_lrs(param, optimizer, scheduler, epochs):
    """The lr of each epoch, stepping the scheduler once per epoch as Dassl's trainers do."""
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        param.grad = torch.ones_like(param)
        optimizer.step()
        scheduler.step()
    return lrs


def cosine(epoch):
    # Dassl's schedule: epoch 0 warms up; the cosine (T_max = MAX_EPOCH) starts at epoch 1 from the base lr.
    return 0.5 * LR * (1 + math.cos(math.pi * (epoch - 1) / EPOCHS))


def test_dassl_warmup_scheduler_breaks_on_current_torch():
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = build_optimizer([param], optim_cfg())
    # Documents the breakage the fix is for; if Dassl or torch change, this test says so.
    with pytest.raises(TypeError, match="positional arguments"):
        dassl_lr_scheduler.build_lr_scheduler(optimizer, optim_cfg())


@pytest.mark.parametrize("warmup_type, first_lr", [("constant", CONS_LR), ("linear", 2e-5)])
def test_warmup_scheduler_follows_dassl_schedule(warmup_type, first_lr):
    _, optimizer, scheduler = sched = make(optim_cfg(warmup_type))
    expected_class = getattr(dassl_lr_scheduler, f"{warmup_type.capitalize()}WarmupScheduler")
    assert isinstance(scheduler, expected_class)
    assert isinstance(scheduler.successor, torch.optim.lr_scheduler.CosineAnnealingLR)
    lrs = epoch_lrs(*sched, EPOCHS)
    assert lrs[0] == pytest.approx(first_lr)
    assert lrs[1:] == pytest.approx([cosine(e) for e in range(1, EPOCHS)])


def test_no_warmup_is_dassls_own_scheduler():
    _, _, scheduler = make(optim_cfg(warmup_epoch=-1, scheduler="single_step"))
    assert type(scheduler) is torch.optim.lr_scheduler.StepLR
    with pytest.raises(ValueError, match="WARMUP_TYPE"):
        make(optim_cfg(warmup_type="exponential"))


def test_scheduler_state_round_trip_under_weights_only(tmp_path):
    param, optimizer, scheduler = make(optim_cfg())
    epoch_lrs(param, optimizer, scheduler, 2)
    # Dassl saves scheduler.state_dict(), which holds the successor object: torch.load refuses it by default.
    torch.save({"scheduler": scheduler.state_dict()}, tmp_path / "dassl.pth")
    with pytest.raises(pickle.UnpicklingError):
        dassl_load_checkpoint(str(tmp_path / "dassl.pth"))
    with pytest.raises(compat.CheckpointFormatError, match="pickled Python objects"):
        compat.load_checkpoint(str(tmp_path / "dassl.pth"))

    state = {"optimizer": optimizer.state_dict(), "scheduler": compat.scheduler_state_dict(scheduler)}
    torch.save(state, tmp_path / "ours.pth")
    loaded = compat.load_checkpoint(str(tmp_path / "ours.pth"))
    param2, optimizer2, scheduler2 = make(optim_cfg())
    optimizer2.load_state_dict(loaded["optimizer"])
    compat.load_scheduler_state_dict(scheduler2, loaded["scheduler"])
    assert isinstance(scheduler2.successor, torch.optim.lr_scheduler.CosineAnnealingLR)
    param2.data.copy_(param.data)
    assert epoch_lrs(param2, optimizer2, scheduler2, 3) == epoch_lrs(param, optimizer, scheduler, 3)
    torch.testing.assert_close(param2, param)  # same momentum buffer, same updates


def test_load_checkpoint_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        compat.load_checkpoint(str(tmp_path / "nothing.pth.tar"))


def test_format_val_result():
    # Dassl's load_model does f"{val_result:.1f}", which raises on the None of last-epoch checkpoints.
    assert compat.format_val_result(None) == "None"
    assert compat.format_val_result(71.25) == "71.2"
