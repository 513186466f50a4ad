"""Download the datasets and lay them out in the folders the dataset classes read (CoOp's layout).

Usage::

    python -m datasets.prepare NAME [NAME ...] --root DATA [--check] [--decode] [--keep-archives]

``NAME`` is a registered dataset name (``OxfordPets``), a config name (``oxford_pets``) or ``all``. For each
dataset the command

* downloads the archives into ``DATA/downloads/`` with a progress bar, resuming an interrupted download
  (HTTP Range requests) and verifying the MD5 checksum where one is known;
* downloads CoOp's split files (and the few extra files CoOp publishes) from Google Drive with gdown;
* extracts the archives into the expected layout, then deletes them (unless ``--keep-archives``);
* checks the result and prints what is still missing, with instructions for what cannot be downloaded
  (ImageNet, Stanford Cars, ImageNet-Sketch).

``--check`` only verifies existing folders: it prints every missing path and, for datasets with a split file,
how many of the listed images are missing, and every image file that is empty or cut short (its format's end
marker missing; the doubtful files are decoded to be sure). Its ``[ok]`` says that pixels were not decoded.
``--decode`` also opens and fully decodes every image the splits reference (as training does) and lists each one
that fails, with its error. The exit code is non-zero if any
dataset is incomplete or any image does not decode.

Nothing is lost on a crash: downloads go to ``<file>.part`` and are renamed when complete (run the command
again to resume), and archives are extracted into a temporary folder that is moved into place afterwards.

One module per concern: :mod:`.download` (resume, checksums, Google Drive), :mod:`.archives` (extraction),
:mod:`.steps` (the recipe language), :mod:`.recipes` (the recipes, as data), :mod:`.builders` (datasets written
rather than unpacked), :mod:`.check` (what a complete folder holds, image decoding) and :mod:`.cli` (the command).
"""

from .archives import extract_archive
from .builders import CIFAR100_SOURCE
from .check import (
    check_dataset,
    damaged_problems,
    decode_image,
    decode_images,
    decode_problems,
    looks_complete,
    referenced_images,
)
from .cli import DOWNLOAD_DIRNAME, main, prepare_dataset, resolve_names
from .download import Source, download, drive_download, fetch_source, file_digest
from .errors import ChecksumError, DownloadError, PrepareError
from .recipes import RECIPES, RECIPES_LIST
from .steps import Build, Extract, Fetch, Recipe

__all__ = [
    "CIFAR100_SOURCE",
    "DOWNLOAD_DIRNAME",
    "RECIPES",
    "RECIPES_LIST",
    "Build",
    "ChecksumError",
    "DownloadError",
    "Extract",
    "Fetch",
    "PrepareError",
    "Recipe",
    "Source",
    "check_dataset",
    "damaged_problems",
    "decode_image",
    "decode_images",
    "decode_problems",
    "looks_complete",
    "download",
    "drive_download",
    "extract_archive",
    "fetch_source",
    "file_digest",
    "main",
    "prepare_dataset",
    "referenced_images",
    "resolve_names",
]
