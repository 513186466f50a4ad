"""Train and evaluate prompt learners on Dassl, with the command line of CoOp's ``train.py``.

Examples::

    # CoOp + LAMM, 16 shots, seed 1
    python train.py --root DATA --seed 1 --trainer LAMM_CoOp \\
        --dataset-config-file configs/datasets/oxford_pets.yaml \\
        --config-file configs/trainers/LAMM_CoOp/vit_b16_ep50_ctxv1.yaml \\
        --output-dir output/fewshot/oxford_pets/shots_16/LAMM_CoOp/vit_b16_ep50_ctxv1/seed1 \\
        DATASET.NUM_SHOTS 16

    # evaluate that model on another class set
    python train.py ... --eval-only --model-dir <that output dir> --load-epoch 50 DATASET.SUBSAMPLE_CLASSES new

Trainers: ``LAMM_CoOp``, ``LAMM_MaPLe``, ``LAMM_VPT`` and the baselines ``CoOp``, ``MaPLe``, ``VPT``,
``ZeroshotCLIP`` (see ``trainers/``). Every run writes ``log.txt`` and, after its final evaluation,
``results.json`` into the output folder; a run restarted with the same output folder resumes from its last
checkpoint.

A run holds its output folder (``run.lock``): a second ``train.py`` on the same folder names the first and exits.
Without ``--seed`` a seed is drawn, printed, recorded and kept in ``seed.txt`` for the folder's resumes. A run
stopped by SIGTERM, SIGINT or SIGHUP says what it kept and that the same command resumes; a full disk, a corrupt
image or a damaged file ends it with one message naming the file and what to do, and every traceback that ends a
run is in its ``log.txt``.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import contextlib
import datetime
import difflib
import errno
import functools
import importlib
import os
import pkgutil
import re
import secrets
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import torch
from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import collect_env_info, set_random_seed

import lamm_plugin.dassl  # noqa: F401  (adds the LAMM config nodes and registers the LAMM_* trainers)
import trainers  # noqa: F401  (registers this repository's baselines)
from lamm_plugin.dassl import compat
from lamm_plugin.dassl.console import is_notice
from lamm_plugin.errors import MissingFileError, UserError, run_main
from lamm_plugin.files import read_text, write_atomic
from lamm_plugin.layout import CONFIG_YAML_FILENAME, last_checkpoint
from lamm_plugin.run_lock import RunLock

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
SEED_FILENAME = "seed.txt"
#: Signals that stop a run with a message (SIGKILL cannot be caught; a run killed by it resumes just the same).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))


def import_datasets() -> list[str]:
    """Import the repository's dataset modules (``datasets/``), which register themselves in Dassl.

    Tolerates a missing ``datasets`` package (then only datasets registered elsewhere are available); a module
    that exists but fails to import raises.

    Returns:
        The names of the imported modules.
    """
    if not os.path.isfile(os.path.join(REPO_ROOT, "datasets", "__init__.py")):
        return []
    package = importlib.import_module("datasets")
    names = [package.__name__]
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            names.append(importlib.import_module(f"{package.__name__}.{module.name}").__name__)
    return names


def print_args(args: argparse.Namespace, cfg) -> None:
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(vars(args)):
        print(f"{key}: {getattr(args, key)}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def reset_cfg(cfg, args: argparse.Namespace) -> None:
    """Command-line arguments that override config values (CoOp's ``reset_cfg``)."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head


def extend_cfg(cfg) -> None:
    """Config nodes of the repository's datasets (the LAMM and baseline nodes are in Dassl's defaults already):
    ``DATASET.SYNTHETIC`` (the generated shapes) and ``DATASET.FOLDER`` (a dataset of one's own images)."""
    for module, add in (("datasets.synthetic", "add_synthetic_config"), ("datasets.folder", "add_folder_config")):
        module = sys.modules.get(module)
        if module is not None and hasattr(module, add):
            getattr(module, add)(cfg)


def config_file(path: str, option: str) -> str:
    """``path`` when it is a file; else a :class:`MissingFileError` that says where it was looked for and where a
    file of that name exists (relative to the repository, when the command runs from another folder)."""
    if os.path.isfile(path):
        return path
    where = f"{path}" if os.path.isabs(path) else f"{path} (relative to the current folder {os.getcwd()})"
    there = os.path.join(REPO_ROOT, path)
    hint = f": it exists as {there}, give that path" if not os.path.isabs(path) and os.path.isfile(there) else ""
    raise MissingFileError(f"{option}: no file {where}{hint}.")


def setup_cfg(args: argparse.Namespace):
    """Defaults (with the LAMM and baseline nodes) <- dataset yaml <- method yaml <- arguments <- opts."""
    cfg = get_cfg_default()
    extend_cfg(cfg)
    if args.dataset_config_file:
        cfg.merge_from_file(config_file(args.dataset_config_file, "--dataset-config-file"))
    if args.config_file:
        cfg.merge_from_file(config_file(args.config_file, "--config-file"))
    reset_cfg(cfg, args)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


@functools.lru_cache(maxsize=1)
def _env_info_future() -> concurrent.futures.Future:
    """Dassl's environment report, collected once per process in a thread: it spends ~2 s waiting for ``pip list``
    and other commands, which overlaps with building the trainer."""
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="env-info")
    future = pool.submit(collect_env_info)
    pool.shutdown(wait=False)
    return future


def env_info() -> str:
    """Dassl's environment report (slow: it runs ``pip`` and friends), computed once per process."""
    return _env_info_future().result()


class Tee:
    """A stdout that also appends everything to a log file.

    Dassl's ``setup_logger`` starts a new ``log.txt-<time>`` whenever ``log.txt`` exists; a resumed run appends to
    the one ``log.txt`` instead, after a line that marks the restart.

    The log always gets everything; the console can get less (:mod:`lamm_plugin.dassl.console`): inside
    :meth:`log_only` only notice lines reach it, and :meth:`write_split` gives each side its own text.
    """

    def __init__(self, console, path: str) -> None:
        self.console = console
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        restarted = os.path.isfile(path) and os.path.getsize(path) > 0
        # Line-buffered: every line printed is in the file when it is printed, so a run killed by SIGKILL (which no
        # handler sees) leaves a log with every line before the kill.
        self.file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115  (closed by log_to)
        self._quiet = 0
        self._pending = ""  # the unfinished console line while quiet (a notice is known once its line is)
        if restarted:
            now = datetime.datetime.now().isoformat(timespec="seconds")
            self.file.write(f"\n===== {now}: run started again =====\n")

    def write(self, text: str) -> None:
        if self._quiet:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            shown = "".join(f"{line}\n" for line in lines if is_notice(line))
            if shown:
                self.console.write(shown)
        else:
            self.console.write(text)
        self._write_file(text)

    def write_split(self, console: str, log: str) -> None:
        """``console`` to the console, ``log`` to the log (the short and the full progress line); a console that is
        a tee itself (``continual.py``'s run log around a stage's) gets both, so its log keeps the full text."""
        outer = getattr(self.console, "write_split", None)
        if outer is not None:
            outer(console, log)
        elif console:
            self.console.write(console)
        self._write_file(log)

    def _write_file(self, text: str) -> None:
        try:
            self.file.write(text)
        except OSError as err:  # the error names the log (a full disk often shows here first)
            raise OSError(err.errno, err.strerror, self.path) from err

    @contextlib.contextmanager
    def log_only(self) -> Iterator[None]:
        """Inside the block, text goes to the log only; lines of :func:`~lamm_plugin.dassl.console.is_notice`
        (notes, warnings, errors) still reach the console."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1
            if not self._quiet and self._pending:
                if is_notice(self._pending):
                    self.console.write(self._pending)
                self._pending = ""

    def flush(self) -> None:
        self.console.flush()
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as err:
            raise OSError(err.errno, err.strerror, self.path) from err

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


@contextlib.contextmanager
def log_to(output_dir: str) -> Iterator[Tee]:
    """Tee stdout into ``output_dir/log.txt`` (appending), and undo it afterwards; yields the :class:`Tee`.

    An exception that leaves the block is written to the log with its traceback (a stopped run: its message only)
    before it goes on, so the log of a failed run says how it ended.
    """
    stdout = sys.stdout
    path = output_dir if output_dir.endswith((".txt", ".log")) else os.path.join(output_dir, "log.txt")
    sys.stdout = tee = Tee(stdout, path)
    try:
        yield tee
    except BaseException as err:
        if isinstance(err, RunStopped):
            text = f"{err}\n"
        else:
            text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        with contextlib.suppress(Exception):  # the log's disk may be the full one
            tee.file.write(text)
            tee.file.flush()
        raise
    finally:
        sys.stdout = stdout
        with contextlib.suppress(Exception):
            tee.file.close()


class RunStopped(BaseException):
    """The run received a stop signal; the message says what was kept and how to resume.

    A ``BaseException`` like ``KeyboardInterrupt``: ``except Exception`` handlers on the way must not take it for
    an error of theirs.
    """

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message or f"Run stopped by signal {signal.Signals(signum).name}.")
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[None]:
    """Turn the stop signals into :class:`RunStopped` inside the block (main thread only; handlers restored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() != owner:
            # A forked data-loader worker inherits the handler: it behaves as before (the run process reports).
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
                return
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise RunStopped(signum)

    previous: dict[int, Any] = {}
    previous.update({s: signal.signal(s, stop) for s in signals})
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class RunFolderError(UserError):
    """The output folder cannot hold this run (it is a file, or its ``seed.txt`` is damaged)."""


class WriteFailedError(UserError, OSError):
    """A file of the run could not be written (full disk, quota, file size limit); the message names it."""


def last_checkpoints(output_dir: str) -> list[str]:
    """The newest checkpoint of each model folder under ``output_dir`` (Dassl's layout: ``<model>/model.pth.tar-N``)."""
    found = []
    if os.path.isdir(output_dir):
        for name in sorted(os.listdir(output_dir)):
            folder = os.path.join(output_dir, name)
            last = last_checkpoint(folder) if os.path.isdir(folder) else None
            if last is not None:
                found.append(os.path.join(folder, last))
    return found


def kept_and_resume(output_dir: str) -> str:
    """What a run that ends now leaves behind, and how to go on."""
    kept = last_checkpoints(output_dir)
    if kept:
        return (
            f"Kept: the last checkpoint {', '.join(kept)}. Rerun the same command to resume from it (it ends as the "
            "uninterrupted run would have)."
        )
    return "No checkpoint had been written yet: rerunning the same command starts the run again."


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or during, outermost first."""
    seen: list[BaseException] = []
    while err is not None and all(err is not e for e in seen):
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


_TMP_SUFFIX = re.compile(r"\.tmp\d+$")
_WRITE_ERRNOS = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded", errno.EFBIG: ""}


def _file_being_written(err: BaseException) -> Optional[str]:
    """The file a failed write was writing: an ``OSError``'s file name, else the innermost file object in the
    traceback's frames (torch's stream writer reports no path); a temporary file stands for its target."""
    for e in _chain(err):
        if isinstance(e, OSError) and isinstance(e.filename, str):
            return _TMP_SUFFIX.sub("", e.filename)
    for e in _chain(err):
        frames = []
        tb = e.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        for frame in reversed(frames):
            for value in frame.f_locals.values():
                name = getattr(value, "name", None)
                if isinstance(name, str) and callable(getattr(value, "write", None)) and os.path.isabs(name):
                    return _TMP_SUFFIX.sub("", name)
    return None


def write_failure(err: BaseException, output_dir: str) -> Optional[WriteFailedError]:
    """A :class:`WriteFailedError` with one clear message when ``err`` is a failed write, else None."""
    reason = None
    remedy = "Free space on that disk first (or give an --output-dir on another disk: a new folder starts over)."
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
            reason = _WRITE_ERRNOS[e.errno] or os.strerror(e.errno)
            if e.errno == errno.EFBIG:
                remedy = "Raise the file size limit of this shell or job (ulimit -f) first."
            break
        if isinstance(e, RuntimeError) and any(
            m in str(e) for m in ("PytorchStreamWriter failed", "file write failed")
        ):
            reason = reason or "the write failed (is the disk full?)"
    if reason is None:
        return None
    path = _file_being_written(err) or output_dir
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free there now"
    except OSError:
        free = "free space unknown"
    return WriteFailedError(
        f"Could not write {path}: {reason} ({free}). The run stopped. {kept_and_resume(output_dir)} {remedy}"
    )


def _is_image_decode_error(err: BaseException) -> bool:
    """Whether ``err`` came from decoding an image (PIL, directly or in a DataLoader worker)."""
    for e in _chain(err):
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        refused = isinstance(e, (OSError, SyntaxError, ValueError)) or type(e).__name__ == "DecompressionBombError"
        if refused and ("PIL" + os.sep in text or "read_image" in text):
            return True
    return False


def image_failure(err: BaseException, cfg, trainer: Any) -> Optional[Exception]:
    """A ``BadImageError`` naming the image that could not be decoded when ``err`` is such a failure, else None.

    The data loader's error names no file: the dataset's images are decoded until the bad one is found (test set
    first: the sampled training images were checked when the dataset was built).
    """
    dataset = getattr(getattr(trainer, "dm", None), "dataset", None)
    if dataset is None or not _is_image_decode_error(err):
        return None
    from datasets.base import BadImageError, bad_images_message, find_bad_images

    print("An image could not be decoded; looking for it ...")
    for split in ("test", "train_x", "val"):
        items = getattr(dataset, split, None) or []
        bad = find_bad_images(list(dict.fromkeys(d.impath for d in items)), limit=1)
        if bad:
            where = {"test": "in the test set", "train_x": "in the training set", "val": "in the validation set"}
            command = dataset.decode_command() if hasattr(dataset, "decode_command") else None
            return BadImageError(bad_images_message(bad, cfg.DATASET.NAME, cfg.DATASET.ROOT, where[split], command))
    return None


def dassl_refusal(err: BaseException) -> Optional[UserError]:
    """A :class:`UserError` when ``err`` is Dassl refusing a config value (``OPTIM.NAME foo``: Dassl's own
    ``ValueError`` or ``KeyError``, raised in Dassl's code), else None."""
    if not isinstance(err, (ValueError, KeyError)) or isinstance(err, UserError):
        return None
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = tb.tb_frame.f_code.co_filename if tb is not None else ""
    if f"{os.sep}dassl{os.sep}" not in where or f"{os.sep}lamm_plugin{os.sep}" in where:
        return None
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return UserError(f"{text} (Dassl refused a config value: set it in the config file or as a KEY VALUE override)")


def device_text(cfg, device: torch.device) -> str:
    """The device a run really uses, with the reason when it is not the one ``USE_CUDA`` asks for."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if cfg.USE_CUDA:
        return f"{device.type} (USE_CUDA is True, but no CUDA device is available)"
    return device.type


def split_sizes(dataset: Any) -> str:
    """The header's image counts, ``"192 train, 51 val, 96 test images"``; a dataset without validation images of its
    own (ImageNet, a ``Folder`` with a validation share of 0) validates on its test images, and says so."""
    own_val = getattr(dataset, "has_val", True) and dataset.val is not dataset.test
    splits = [("train", dataset.train_x), ("val", dataset.val if own_val else None), ("test", dataset.test)]
    sizes = ", ".join(f"{len(items)} {name}" for name, items in splits if items) + " images"
    return sizes if own_val else sizes + "; validation on the test images"


def run_header(cfg, trainer: Any) -> str:
    """The few lines a run prints before training instead of the argument, config and system dumps."""
    dataset = trainer.dm.dataset
    sizes = split_sizes(dataset)
    shots = getattr(trainer, "shots", cfg.DATASET.NUM_SHOTS)
    shot_text = "all training images" if shots <= 0 else f"{shots} shots"
    subset = cfg.DATASET.get("SUBSAMPLE_CLASSES", "all")
    classes = f"{len(dataset.classnames)} classes" + ("" if subset == "all" else f" ({subset})")
    precision = getattr(trainer, "precision", "?")
    out = cfg.OUTPUT_DIR or "."
    return "\n".join([
        f"{cfg.TRAINER.NAME} on {cfg.DATASET.NAME}: {classes}, {shot_text} ({sizes}), seed {cfg.SEED}",
        f"backbone {cfg.MODEL.BACKBONE.NAME}, precision {precision}, device {device_text(cfg, trainer.device)}",
        f"output: {out}",
        f"  {CONFIG_YAML_FILENAME}: the full config; log.txt: everything printed (--verbose shows it all here too)",
    ])  # fmt: skip


def write_config_yaml(cfg) -> str:
    """Write the full config to ``<output>/config.yaml`` (atomically); returns the path."""
    folder = os.path.dirname(cfg.OUTPUT_DIR) if cfg.OUTPUT_DIR.endswith((".txt", ".log")) else cfg.OUTPUT_DIR
    path = os.path.join(folder or ".", CONFIG_YAML_FILENAME)
    text = cfg.dump()
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))
    return path


def resolve_seed(cfg):
    """``cfg`` with a seed: ``SEED`` when set (>= 0), else the one stored in the output folder, else a new draw.

    Dassl's ``SEED -1`` would leave the generators unseeded but name the few-shot cache ``seed_-1``, so that every
    unseeded run trained on one subset and recorded seed -1. A drawn seed is printed and stored in
    ``<output>/seed.txt`` before training, so the runs of that folder (resumes) use it; it seeds the few-shot sampling
    and every generator, and ``results.json`` records it.
    """
    if cfg.SEED >= 0:
        return cfg
    path = os.path.join(cfg.OUTPUT_DIR, SEED_FILENAME)
    seed = None
    if os.path.isfile(path):
        text = read_text(path).strip()
        if not text.isdigit():
            raise RunFolderError(
                f"{path} should hold the seed drawn for this run folder (a number), found {text[:40]!r}: write the "
                "seed back, or give --seed, or delete the file to draw a new one (then delete the checkpoints too)."
            )
        seed = int(text)
        print(f"No --seed given: using seed {seed}, drawn for this run folder earlier ({path})")
    else:
        seed = secrets.randbelow(2**31)
        write_atomic(path, lambda f: f.write(f"{seed}\n".encode()))
        print(f"No --seed given: drew seed {seed} (stored in {path}; reruns of this folder use it; --seed sets one)")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SEED = seed
    cfg.freeze()
    return cfg


def main(args: argparse.Namespace) -> Any:
    """Run one job; returns the trainer.

    Raises:
        RunLockedError: Another live process runs in the output folder (nothing in it was touched).
        RunStopped: A stop signal arrived (the message says what was kept).
        WriteFailedError: A file could not be written (full disk); the message names it.
        BadImageError: An image could not be decoded; the message names it.
    """
    cfg = setup_cfg(args)
    compat.check_trainer_name(cfg.TRAINER.NAME)
    trainer = None
    folder = os.path.dirname(cfg.OUTPUT_DIR) if cfg.OUTPUT_DIR.endswith((".txt", ".log")) else cfg.OUTPUT_DIR
    if os.path.isfile(folder):
        raise RunFolderError(f"--output-dir {folder} is a file, not a folder: give a folder for the run's files.")
    with RunLock(folder or "."), log_to(cfg.OUTPUT_DIR) as tee, stop_on_signals():
        try:
            # The dumps and Dassl's building chatter go to log.txt (and config.yaml); the console gets the header.
            with contextlib.nullcontext() if args.verbose else tee.log_only():
                cfg = resolve_seed(cfg)
                if cfg.SEED >= 0:
                    print(f"Setting fixed seed: {cfg.SEED}")
                    set_random_seed(cfg.SEED)
                if torch.cuda.is_available() and cfg.USE_CUDA:
                    torch.backends.cudnn.benchmark = True

                print_args(args, cfg)
                print("Collecting env info ...")
                _env_info_future()  # collected while the trainer is built, printed after it
                write_config_yaml(cfg)

                trainer = build_trainer(cfg)
                print(f"** System info **\n{env_info()}\n")
            print(run_header(cfg, trainer))
            if args.eval_only:
                trainer.load_model(args.model_dir, epoch=args.load_epoch)
                trainer.test()
            elif not args.no_train:
                trainer.train()
        except RunStopped as stop:
            raise RunStopped(stop.signum, f"{stop} {kept_and_resume(cfg.OUTPUT_DIR)}") from None
        except Exception as err:
            clear = write_failure(err, cfg.OUTPUT_DIR) or image_failure(err, cfg, trainer) or dassl_refusal(err)
            if clear is None:
                raise
            raise clear from err
    return trainer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=str, default="", help="path to dataset")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory (from which the training resumes)")
    parser.add_argument("--seed", type=int, default=None, help="only positive value enables a fixed seed")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to config file for dataset setup")
    parser.add_argument("--trainer", type=str, default="", help="name of trainer")
    parser.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    parser.add_argument("--head", type=str, default="", help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print the arguments, the full config, the system info and Dassl's building steps on the console too "
        "(log.txt always has them)",
    )
    parser.add_argument(
        "opts", default=None, nargs=argparse.REMAINDER, help="modify config options using the command-line"
    )
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return parse_anywhere(build_parser(), argv)


#: A config key as the ``KEY VALUE`` overrides write it (``DATASET.NUM_SHOTS``).
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def parse_anywhere(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``parser``'s arguments, with its options also taken from among the ``KEY VALUE`` overrides (``opts``).

    argparse hands everything after the first override to ``opts``; an option written there (``... DATASET.NUM_SHOTS
    16 --seed 7``) is taken as an option, and a word with ``--`` that is no option of the command is refused by name.
    """
    args = parser.parse_args(argv)
    opts, moved = list(args.opts or []), []
    actions = parser._option_string_actions
    i = 0
    while i < len(opts):
        word = opts[i]
        if not word.startswith("--"):
            i += 1
            continue
        name = word.split("=", 1)[0]
        action = actions.get(name)
        if action is None:
            close = difflib.get_close_matches(name, [o for o in actions if o.startswith("--")], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(
                f"Unknown option {name}{hint} among the KEY VALUE overrides: give options before the overrides, "
                f"or see --help for the options of {parser.prog}."
            )
        end = i + 1
        if "=" not in word and action.nargs != 0:
            if action.nargs is None or isinstance(action.nargs, int):
                end += action.nargs or 1
            else:  # "+" or "*": the values up to the next option or config key
                while end < len(opts) and not opts[end].startswith("--") and not _CONFIG_KEY.match(opts[end]):
                    end += 1
        moved += opts[i:end]
        del opts[i:end]
    if moved:
        args = parser.parse_args(moved, namespace=args)
        args.opts = opts
    return args


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``python train.py``: run :func:`main`; returns the exit status.

    A stopped run ends by its signal again (so the shell and job schedulers see it: 143 for SIGTERM), after its
    message; a :class:`~lamm_plugin.errors.UserError` prints its message alone and exits with 1
    (:func:`~lamm_plugin.errors.run_main`; the traceback is in ``log.txt`` when the run had started).
    """

    def run() -> int:
        main(parse_args(argv))
        return 0

    try:
        return run_main(run, argv)
    except RunStopped as stop:
        print(f"\n{stop}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        signal.signal(stop.signum, signal.SIG_DFL)
        os.kill(os.getpid(), stop.signum)
        return 128 + stop.signum


import_datasets()


def exit_now(status: int) -> None:
    """End the process with ``status`` after the exit handlers, skipping the interpreter's teardown of every module
    (torch, torchvision, sklearn, sympy, ...: seconds per run, which a sweep pays for every run)."""
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    exit_now(cli())
