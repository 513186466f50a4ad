"""The program package ``lamm_experiments`` beside the library: light to import, and shipped in the wheel.

Sweeps and table scripts start many short processes, so importing the program (and the run layout it reads,
:mod:`lamm_plugin.layout`) must not import torch, open_clip, numpy, Dassl or yacs. The wheel must carry both
packages and the reference numbers, and the program must work from it, not only from a checkout.
"""

from __future__ import annotations

import json
import os
import pkgutil
import shutil
import subprocess
import sys
import zipfile

import pytest

import lamm_experiments
from lamm_plugin import layout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "open_clip", "numpy", "dassl", "yacs")
PROGRAM_MODULES = sorted(f"lamm_experiments.{m.name}" for m in pkgutil.iter_modules(lamm_experiments.__path__))


@pytest.mark.e2e
def test_program_and_layout_import_without_torch():
    code = (
        "import importlib, json, sys\n"
        f"for name in ['lamm_plugin.layout', 'lamm_experiments', *{PROGRAM_MODULES!r}]:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == []
    # Every module of the program is in the list above (a new module is checked too).
    assert {"continual", "interpret", "parse_results", "sweep", "synthetic", "tables", "tabular"} <= {
        m.rsplit(".", 1)[1] for m in PROGRAM_MODULES
    }


def test_library_names_resolve_on_first_use():
    import lamm_plugin

    for name in lamm_plugin.__all__:
        assert getattr(lamm_plugin, name) is not None
    from lamm_plugin import build_model
    from lamm_plugin.lamm import build_model as defined

    assert build_model is defined
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lamm_plugin.nope  # noqa: B018


def test_find_checkpoint_prefers_best_then_index_then_highest_epoch(tmp_path):
    folder = tmp_path / layout.MODEL_FOLDER
    assert layout.find_checkpoint(str(folder)) is None
    folder.mkdir()
    for epoch in (1, 2, 10):
        (folder / layout.epoch_file(epoch)).write_bytes(b"")
    assert layout.find_checkpoint(str(folder)) == str(folder / "model.pth.tar-10")  # numeric, not by name
    (folder / layout.INDEX_FILE).write_text("model.pth.tar-2\n")
    assert layout.find_checkpoint(str(folder)) == str(folder / "model.pth.tar-2")
    (folder / layout.INDEX_FILE).write_text("model.pth.tar-7\n")  # names a file that is gone
    assert layout.find_checkpoint(str(folder)) == str(folder / "model.pth.tar-10")
    (folder / layout.BEST_FILE).write_bytes(b"")
    assert layout.find_checkpoint(str(folder)) == str(folder / layout.BEST_FILE)
    assert layout.find_checkpoint(str(folder), best=False) == str(folder / "model.pth.tar-10")
    assert layout.find_checkpoint(str(folder), epoch=1) == str(folder / "model.pth.tar-1")
    assert layout.find_checkpoint(str(folder), epoch=3) is None
    assert layout.checkpoint_epochs(str(folder)) == [1, 2, 10]


@pytest.mark.e2e
def test_wheel_ships_both_packages_and_the_reference_numbers(tmp_path):
    """Build the wheel from a copy of the sources, then use the program from the unpacked wheel alone."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("lamm_plugin", "lamm_experiments"):
        shutil.copytree(os.path.join(REPO, package), src / package, ignore=ignore)
    wheels = tmp_path / "wheels"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), "."]
    subprocess.run(cmd, cwd=src, check=True, capture_output=True, text=True)
    (wheel,) = wheels.glob("lamm_plugin-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (
        "lamm_experiments/reference/lamm_fewshot_figure.csv",
        "lamm_experiments/reference/published_base2new.csv",
        "lamm_experiments/reference/README.md",
        *(f"{m.replace('.', '/')}.py" for m in PROGRAM_MODULES),
        "lamm_experiments/__init__.py",
        "lamm_plugin/__init__.py",
        "lamm_plugin/layout.py",
        "lamm_plugin/dassl/trainer.py",
        "lamm_plugin/methods/base.py",
    ):
        assert path in names, path
    assert not any(n.startswith(("lamm_plugin/reference/", "trainers/", "datasets/", "tests/")) for n in names)

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import json, sys\n"
        "from lamm_experiments import tables\n"
        "ref = tables.load_reference()\n"
        f"print(json.dumps([tables.__file__, len(ref['fewshot']), len(ref['base2new']), "
        f"sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    where, fewshot, base2new, heavy = json.loads(proc.stdout)
    assert where.startswith(str(site)) and fewshot > 0 and base2new > 0 and heavy == []


@pytest.mark.e2e
def test_install_takes_dassl_from_a_wheel_folder_without_asking_github(tmp_path):
    """scripts/install.sh with a wheel folder installs Dassl from it and never runs git; without an active
    environment it installs into the checkout's .venv."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, body in (("git", 'echo "git $*" >> "$CALLS"; exit 1'), ("python", 'echo "python $*" >> "$CALLS"')):
        (fake / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (fake / name).chmod(0o755)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    env = {**os.environ, "CALLS": str(calls), "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    env.pop("LAMM_DASSL_WHEELS", None)
    script = os.path.join(REPO, "scripts", "install.sh")
    done = subprocess.run(["bash", script, "--reinstall-dassl", "--dassl-wheels", str(wheels)], env={
        **env, "PYTHON": str(fake / "python")}, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    log = calls.read_text()
    assert "git" not in log.split() and f"--find-links {wheels} dassl==0.6.3" in log
    for active in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        env.pop(active, None)
    which = subprocess.run(["bash", script, "--which-python"], env=env, capture_output=True, text=True, timeout=60)
    assert which.stdout.strip() == os.path.join(REPO, ".venv", "bin", "python")
