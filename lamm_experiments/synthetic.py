"""A synthetic image-classification dataset that needs no download.

Every class is a coloured shape with an optional texture ("red circle", "striped blue circle", "moon"), drawn
at a random position, size and rotation on a noisy grey background. The class decides the image content, and
the class names are ordinary English words that CLIP's tokenizer knows, so prompt learning (and LAMM's label
embeddings) have something real to align: names span one to four BPE tokens, and one word ("checkered") splits
into two sub-word tokens.

Generation is deterministic: the images of class ``c`` in split ``s`` depend only on ``(seed, s, c)`` and the
image size, never on global random state, so a few-shot sampler seeded elsewhere is not disturbed and a
subset of the classes yields exactly the same images as the full set.

Two outputs:
    * :func:`make_tensors`: in-memory ``[N, 3, H, W]`` tensors for training loops without Dassl.
    * :func:`write_image_folder`: a small PNG tree plus a CoOp-style ``split_zhou_*.json`` split file, which
      the repository's Dassl dataset ``SyntheticShapes`` reads like any CoOp dataset.
    * :func:`write_class_folders` (``python -m lamm_experiments.synthetic DIR``): an ImageFolder tree
      ``DIR/<split>/<Class_Name>/*.png``, the layout the ``Folder`` dataset reads (a dataset of one's own images).

Generating images needs numpy and PIL (tensors also torch), imported by the functions that use them: importing this
module needs the standard library only (no Dassl, no yacs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Optional, Union

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "SHAPE_CLASSES",
    "SPLITS",
    "ShapeClass",
    "SyntheticTensors",
    "classnames",
    "generate_split",
    "get_classes",
    "make_tensors",
    "read_metadata",
    "render_image",
    "write_class_folders",
    "write_image_folder",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEFAULT_SPLIT_FILENAME = "split_zhou_SyntheticShapes.json"
METADATA_FILENAME = "synthetic.json"
IMAGE_SUBDIR = "images"
# Bump when the drawing code changes, so that folders written by an older version are regenerated.
GENERATOR_VERSION = 1

_RED = (215, 40, 40)
_GREEN = (40, 170, 60)
_BLUE = (40, 80, 220)
_YELLOW = (235, 215, 40)
_PURPLE = (140, 50, 180)
_ORANGE = (245, 140, 30)
_WHITE = (245, 245, 245)
_PALE_YELLOW = (250, 240, 170)
# Colour of the "off" parts of a texture (gaps between stripes, dots or checks): dark, so that textures stay
# visible against the light colours and the grey background at 32 px.
_TEXTURE_OFF = (30, 30, 30)
# Supersampling factor for anti-aliased shape edges.
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapeClass:
    """One synthetic class.

    Attributes:
        name: Class name used in prompts.
        shape: One of ``circle``, ``square``, ``triangle``, ``star``, ``ring``, ``cross``, ``diamond``,
            ``crescent``.
        colour: RGB colour of the shape before jitter.
        texture: One of ``solid``, ``striped``, ``dotted``, ``checkered``.
    """

    name: str
    shape: str
    colour: tuple[int, int, int]
    texture: str = "solid"


# Label order. The first half (base classes under CoOp's base-to-new protocol) are solid shapes; the second half
# adds the single-word class and the textured variants, which share colours and shapes with base classes.
SHAPE_CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass("red circle", "circle", _RED),
    ShapeClass("blue square", "square", _BLUE),
    ShapeClass("green triangle", "triangle", _GREEN),
    ShapeClass("yellow star", "star", _YELLOW),
    ShapeClass("purple ring", "ring", _PURPLE),
    ShapeClass("orange cross", "cross", _ORANGE),
    ShapeClass("white diamond", "diamond", _WHITE),
    ShapeClass("moon", "crescent", _PALE_YELLOW),
    ShapeClass("striped blue circle", "circle", _BLUE, "striped"),
    ShapeClass("dotted red square", "square", _RED, "dotted"),
    ShapeClass("checkered green square", "square", _GREEN, "checkered"),
    ShapeClass("striped yellow triangle", "triangle", _YELLOW, "striped"),
)

_SPLIT_CODES = {name: i for i, name in enumerate(SPLITS)}


class SyntheticTensors(NamedTuple):
    """In-memory split: ``images`` ``[N, 3, H, W]`` float32 in [0, 1], ``labels`` ``[N]`` int64, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classnames: list[str]


def get_classes(num_classes: Optional[int] = None) -> tuple[ShapeClass, ...]:
    """The first ``num_classes`` classes in label order (all of them when None).

    Raises:
        ValueError: If ``num_classes`` is not in ``[1, len(SHAPE_CLASSES)]``.
    """
    if num_classes is None:
        return SHAPE_CLASSES
    if not 1 <= num_classes <= len(SHAPE_CLASSES):
        raise ValueError(f"num_classes must be between 1 and {len(SHAPE_CLASSES)}, got {num_classes}")
    return SHAPE_CLASSES[:num_classes]


def classnames(num_classes: Optional[int] = None) -> list[str]:
    """Class names in label order."""
    return [c.name for c in get_classes(num_classes)]


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate ``[P, 2]`` points about the origin by ``angle`` radians."""
    import numpy as np

    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _regular_polygon(n: int, radius: float, phase: float) -> np.ndarray:
    """``[n, 2]`` vertices of a regular polygon centred on the origin."""
    import numpy as np

    t = phase + 2 * math.pi * np.arange(n) / n
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Anti-aliased ``[size, size]`` float mask in [0, 1] of one shape.

    Args:
        shape: Shape name (see :class:`ShapeClass`).
        size: Output side in pixels.
        cx: Centre column in pixels.
        cy: Centre row in pixels.
        r: Radius of the shape's bounding circle in pixels.
        angle: Rotation in radians (ignored by rotation-invariant shapes).
    """
    import numpy as np
    from PIL import Image, ImageDraw

    k = _SUPERSAMPLE
    big = Image.new("L", (size * k, size * k), 0)
    draw = ImageDraw.Draw(big)
    centre = np.array([cx, cy]) * k
    rk = r * k

    def polygon(points: np.ndarray, fill: int = 255) -> None:
        pts = _rotate(points, angle) + centre
        draw.polygon([tuple(p) for p in pts.tolist()], fill=fill)

    def disc(x: float, y: float, radius: float, fill: int = 255) -> None:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)

    if shape == "circle":
        disc(*centre, rk)
    elif shape == "ring":
        disc(*centre, rk)
        disc(*centre, rk * 0.55, fill=0)
    elif shape == "crescent":
        # A disc minus a disc shifted along the rotation direction.
        disc(*centre, rk)
        shift = _rotate(np.array([[rk * 0.45, -rk * 0.2]]), angle)[0]
        disc(*(centre + shift), rk * 0.85, fill=0)
    elif shape == "square":
        polygon(_regular_polygon(4, rk, math.pi / 4))
    elif shape == "diamond":
        # A rhombus, taller than wide, so that it differs from a rotated square.
        polygon(np.array([[0.0, -rk], [0.6 * rk, 0.0], [0.0, rk], [-0.6 * rk, 0.0]]))
    elif shape == "triangle":
        polygon(_regular_polygon(3, rk, -math.pi / 2))
    elif shape == "star":
        outer = _regular_polygon(5, rk, -math.pi / 2)
        inner = _regular_polygon(5, rk * 0.42, -math.pi / 2 + math.pi / 5)
        polygon(np.stack([outer, inner], axis=1).reshape(-1, 2))
    elif shape == "cross":
        w = rk * 0.32
        polygon(np.array([[-rk, -w], [rk, -w], [rk, w], [-rk, w]]))
        polygon(np.array([[-w, -rk], [w, -rk], [w, rk], [-w, rk]]))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    small = big.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _texture(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """``[size, size]`` float pattern in {0, 1}: 1 where the shape shows its colour, 0 for the dark gaps."""
    import numpy as np

    if texture == "solid":
        return np.ones((size, size), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = max(size / 5.0, 3.0)
    phase = rng.uniform(0, period)
    if texture == "striped":
        theta = rng.choice([0.0, 0.25, 0.5, 0.75]) * math.pi
        u = xx * math.cos(theta) + yy * math.sin(theta) + phase
        return ((u % period) < period / 2).astype(np.float32)
    if texture == "dotted":
        # Colour everywhere except dark dots on a square grid.
        du = (xx + phase) % period - period / 2
        dv = (yy + phase) % period - period / 2
        return (du**2 + dv**2 > (period * 0.3) ** 2).astype(np.float32)
    if texture == "checkered":
        cell = period / 1.5
        return ((np.floor((xx + phase) / cell) + np.floor((yy + phase) / cell)) % 2).astype(np.float32)
    raise ValueError(f"unknown texture {texture!r}")


def render_image(spec: ShapeClass, rng: np.random.Generator, image_size: int = 32) -> np.ndarray:
    """Draw one image of a class.

    Args:
        spec: The class to draw.
        rng: Source of the per-image randomness (position, size, rotation, colours, noise).
        image_size: Side of the square image in pixels (at least 16).

    Returns:
        ``[image_size, image_size, 3]`` uint8 array.
    """
    import numpy as np

    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    s = image_size
    r = rng.uniform(0.28, 0.42) * s
    cx, cy = rng.uniform(r + 1, s - r - 1, size=2)
    angle = rng.uniform(-math.pi / 12, math.pi / 12)
    mask = _shape_mask(spec.shape, s, cx, cy, r, angle)[..., None]  # [H, W, 1]
    pattern = _texture(spec.texture, s, rng)[..., None]  # [H, W, 1]

    grey = rng.uniform(80, 170)
    background = grey + rng.uniform(-12, 12, size=3)  # [3] slight tint
    colour = np.clip(np.array(spec.colour, dtype=np.float32) + rng.uniform(-20, 20, size=3), 0, 255)
    foreground = pattern * colour + (1 - pattern) * np.array(_TEXTURE_OFF, dtype=np.float32)  # [H, W, 3]
    image = mask * foreground + (1 - mask) * background
    image = image + rng.normal(0, 6, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")


def generate_split(
    split: str,
    num_per_class: int,
    num_classes: Optional[int] = None,
    image_size: int = 32,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split, class-major (all images of class 0, then class 1, ...).

    Args:
        split: ``train``, ``val`` or ``test``; each split has its own images.
        num_per_class: Images per class.
        num_classes: Number of classes (the first ones of :data:`SHAPE_CLASSES`; all when None).
        image_size: Side of the images in pixels.
        seed: Data seed (non-negative); independent of any global random state.

    Returns:
        ``images`` ``[N, H, W, 3]`` uint8 and ``labels`` ``[N]`` int64, with ``N = num_classes * num_per_class``.
    """
    import numpy as np

    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if num_per_class < 0:
        raise ValueError(f"num_per_class must be non-negative, got {num_per_class}")
    _check_seed(seed)
    classes = get_classes(num_classes)
    images = np.zeros((len(classes) * num_per_class, image_size, image_size, 3), dtype=np.uint8)
    for label, spec in enumerate(classes):
        # One generator per (seed, split, class): a class's images do not depend on how many classes are drawn.
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], label])
        for i in range(num_per_class):
            images[label * num_per_class + i] = render_image(spec, rng, image_size)
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), num_per_class)
    return images, labels


def make_tensors(
    split: str = "train",
    num_per_class: int = 16,
    num_classes: Optional[int] = None,
    image_size: int = 32,
    seed: int = 0,
) -> SyntheticTensors:
    """In-memory tensors of one split, for training loops that do not use Dassl.

    The pixels equal those that :func:`write_image_folder` saves for the same arguments (PNG is lossless).
    Images are not normalised: apply the model's mean/std (and resizing) yourself.

    Args:
        split: ``train``, ``val`` or ``test``.
        num_per_class: Images per class.
        num_classes: Number of classes (all when None).
        image_size: Side of the images in pixels.
        seed: Data seed (non-negative).

    Returns:
        ``SyntheticTensors(images [N, 3, H, W] float32 in [0, 1], labels [N] int64, classnames)``.
    """
    import torch

    images, labels = generate_split(split, num_per_class, num_classes, image_size, seed)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous()  # [N, 3, H, W]
    return SyntheticTensors(x, torch.from_numpy(labels), classnames(num_classes))


def _folder_name(name: str) -> str:
    return name.replace(" ", "_")


def _metadata(
    num_per_split: dict[str, int], num_classes: Optional[int], image_size: int, seed: int, split_filename: str
) -> dict:
    meta = {
        "generator_version": GENERATOR_VERSION,
        "num_per_class": {s: int(num_per_split[s]) for s in SPLITS},
        "classes": [asdict(c) for c in get_classes(num_classes)],
        "image_size": int(image_size),
        "seed": int(seed),
        "split_file": split_filename,
    }
    # Round trip through JSON so that the result compares equal to what read_metadata() returns (tuples -> lists).
    return json.loads(json.dumps(meta))


def read_metadata(root: Union[str, os.PathLike]) -> Optional[dict]:
    """The generation parameters stored by :func:`write_image_folder`, or None if absent or unreadable."""
    path = Path(root) / METADATA_FILENAME
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def write_image_folder(
    root: Union[str, os.PathLike],
    num_train: int = 16,
    num_val: int = 4,
    num_test: int = 8,
    num_classes: Optional[int] = None,
    image_size: int = 32,
    seed: int = 0,
    split_filename: str = DEFAULT_SPLIT_FILENAME,
) -> Path:
    """Write a PNG tree and a CoOp-style split file, unless an identical one is already there.

    Layout (relative paths in the split file are relative to ``root/images``)::

        root/
            images/<class_name>/<split>_<index>.png      class names with "_" for spaces
            split_zhou_SyntheticShapes.json              {"train": [[relpath, label, classname], ...], "val", "test"}
            synthetic.json                               the generation parameters

    The split file is written last, atomically: a folder without it is incomplete and is rewritten. A folder
    written with other parameters is rewritten too (its images, split file and ``split_fewshot`` caches are
    removed, since few-shot caches refer to the old images).

    Args:
        root: Dataset folder.
        num_train: Training images per class.
        num_val: Validation images per class.
        num_test: Test images per class.
        num_classes: Number of classes (all when None).
        image_size: Side of the images in pixels.
        seed: Data seed (non-negative).
        split_filename: Name of the split file.

    Returns:
        Path of the split file.
    """
    _check_seed(seed)
    root = Path(root)
    split_path = root / split_filename
    num_per_split = {"train": num_train, "val": num_val, "test": num_test}
    meta = _metadata(num_per_split, num_classes, image_size, seed, split_filename)
    if split_path.is_file() and read_metadata(root) == meta:
        return split_path
    root.mkdir(parents=True, exist_ok=True)
    with _folder_lock(root):
        # Another process may have written the folder while this one waited for the lock.
        if split_path.is_file() and read_metadata(root) == meta:
            return split_path
        _write_folder(root, split_path, meta, num_per_split, num_classes, image_size, seed)
    return split_path


@contextlib.contextmanager
def _folder_lock(root: Path) -> Iterator[None]:
    """Exclusive lock on ``root/.lock`` so that parallel runs do not write the same folder at once (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform
        yield
        return
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_folder(
    root: Path,
    split_path: Path,
    meta: dict,
    num_per_split: dict[str, int],
    num_classes: Optional[int],
    image_size: int,
    seed: int,
) -> None:
    from PIL import Image

    image_dir = root / IMAGE_SUBDIR
    for stale in (image_dir, root / "split_fewshot"):
        if stale.exists():
            shutil.rmtree(stale)
    if split_path.exists():
        split_path.unlink()
    logger.info("Writing synthetic images to %s", image_dir)

    split: dict[str, list[list]] = {}
    names = classnames(num_classes)
    for split_name, n in num_per_split.items():
        images, labels = generate_split(split_name, n, num_classes, image_size, seed)
        entries = []
        for j, (image, label) in enumerate(zip(images, labels.tolist())):
            relpath = f"{_folder_name(names[label])}/{split_name}_{j % max(n, 1):04d}.png"
            (image_dir / relpath).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(image_dir / relpath)
            entries.append([relpath, label, names[label]])
        split[split_name] = entries
    _write_json_atomic(meta, root / METADATA_FILENAME)
    _write_json_atomic(split, split_path)  # last: its presence marks a complete folder


def write_class_folders(
    root: Union[str, os.PathLike],
    num_per_split: Optional[dict[str, int]] = None,
    num_classes: Optional[int] = None,
    image_size: int = 32,
    seed: int = 0,
) -> list[Path]:
    """Write an ImageFolder tree ``root/<split>/<Class_Name>/<index>.png`` (class names with ``_`` for spaces,
    capitalised, as folders of one's own often are); returns the written files.

    Args:
        root: The tree's folder (created).
        num_per_split: Images per class of each split, e.g. ``{"train": 8, "test": 4}`` (default: train 8,
            val 2, test 4); a split with 0 images gets no folder.
        num_classes: Number of classes (all when None).
        image_size: Side of the images in pixels.
        seed: Data seed (non-negative); the images equal :func:`generate_split`'s.
    """
    from PIL import Image

    num_per_split = {"train": 8, "val": 2, "test": 4} if num_per_split is None else num_per_split
    names = classnames(num_classes)
    written = []
    for split, n in num_per_split.items():
        if n < 1:
            continue
        images, labels = generate_split(split, n, num_classes, image_size, seed)
        for j, (image, label) in enumerate(zip(images, labels.tolist())):
            path = Path(root) / split / _folder_name(names[label]).capitalize() / f"{j % n:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
            written.append(path)
    return written


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m lamm_experiments.synthetic DIR``: write an example ImageFolder tree of the shapes into DIR."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m lamm_experiments.synthetic", description=main.__doc__.split(": ", 1)[1]
    )
    parser.add_argument("dir", help="folder of the tree (DIR/train/<class>/*.png, DIR/val/..., DIR/test/...)")
    parser.add_argument("--classes", type=int, default=None, help=f"number of classes (default {len(SHAPE_CLASSES)})")
    parser.add_argument("--train", type=int, default=8, help="training images per class")
    parser.add_argument("--val", type=int, default=2, help="validation images per class (0: no val folder)")
    parser.add_argument("--test", type=int, default=4, help="test images per class")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    args = parser.parse_args(argv)
    counts = {"train": args.train, "val": args.val, "test": args.test}
    written = write_class_folders(args.dir, counts, args.classes, args.size, args.seed)
    print(f"Wrote {len(written)} images of {len(classnames(args.classes))} classes to {args.dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
