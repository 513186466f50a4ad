"""Installs two packages: the library ``lamm_plugin`` and the program ``lamm_experiments`` (sweeps, tables, reports).

The repo-local ``trainers/`` and ``datasets/`` folders are used from a checkout (``python train.py``) and are
deliberately not installed: a top-level ``datasets`` package would shadow the Hugging Face library.
"""

from pathlib import Path

from setuptools import find_packages, setup

DASSL_RUNTIME = [
    # Dassl itself installs from its GitHub repository (see README); these are what it imports at run time.
    "yacs",
    "tabulate",
    "gdown",
    "tensorboard",
    "scikit-learn",
    "scipy",
    "pandas",
    "future",
    "wilds",
]

setup(
    name="lamm-plugin",
    version="0.1.0",
    description="LAMM: label alignment for multi-modal prompt learning, as a plugin for Dassl (CoOp family)",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["lamm_plugin", "lamm_plugin.*", "lamm_experiments", "lamm_experiments.*"]),
    package_data={"lamm_experiments": ["reference/*.csv", "reference/README.md"]},
    install_requires=[
        "torch>=2.0",
        "torchvision>=0.15",
        "open_clip_torch>=2.24,<4",
        "ftfy",
        "regex",
        "tqdm",
        "numpy",
        "pillow",
    ],
    extras_require={
        # The tests cover the tables and figures (tabulate, matplotlib) and the submitit sweep engine; pytest-timeout
        # gives every test a time limit (pyproject.toml).
        "test": ["pytest>=7", "pytest-timeout>=2.1", "ruff>=0.5", "tabulate", "matplotlib>=3.5", "submitit>=1.4"],
        "interpret": ["tabulate", "matplotlib>=3.5"],  # python -m lamm_experiments.interpret
        "dassl": DASSL_RUNTIME,
        "plots": ["matplotlib>=3.5"],  # the few-shot figure of scripts/make_tables.py
        "cluster": ["submitit>=1.4"],  # scripts/lamm/sweep.sh --engine submitit (SLURM)
    },
)
