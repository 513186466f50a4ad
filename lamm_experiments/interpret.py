"""What a checkpoint learned: nearest vocabulary tokens and drift of LAMM's label rows and the method's context.

LAMM (Gao et al., AAAI 2024, arXiv 2312.08212) learns one embedding per class-name token, initialised from CLIP's
token embedding of that token. This module reads a checkpoint (a core checkpoint saved from
:meth:`lamm_plugin.LAMM.checkpoint_state`, a Dassl checkpoint file ``prompt_learner/model.pth.tar-N`` or a Dassl
run folder) and reports, for each class:

* the nearest vocabulary tokens of each learned label row, by cosine similarity and by L2 distance (top ``k``),
  in the token-embedding space of the CLIP the checkpoint was trained with;
* the drift of the rows from their initial values (L2 norm of the difference over the class's rows, and
  ``1 - cos`` averaged over its rows);
* whether each row's nearest token (by cosine) is still the token it started from;

and the same for the method's learned context vectors in token-embedding space (CoOp's ``ctx``, MaPLe's
first-layer prompts; deeper MaPLe prompts live in other layers' spaces and are not decoded). Like the
``interpret_prompt.py`` of CoOp and MaPLe, but for label rows. Neither Dassl nor image data is needed;
importing the module needs no torch (reading a checkpoint does).

From Python::

    from lamm_experiments.interpret import interpret, load_checkpoint, vocabulary_for
    state = load_checkpoint("output/demo")
    report = interpret(state, vocabulary_for(state))
    report.summary, report.classes[0].nearest

From the shell::

    python -m lamm_experiments.interpret output/demo --topk 5 --figure drift.png
    python -m lamm_experiments.interpret run_1shot --compare run_16shots --format markdown

The figure needs matplotlib (``pip install matplotlib``), the ``table`` format tabulate (``markdown`` and ``csv``
need nothing).
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import logging
import os
import os.path as osp
import statistics
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from lamm_experiments.tabular import markdown_table
from lamm_plugin.errors import MissingFileError, UserError, run_main
from lamm_plugin.files import check_output, save_figure, write_text
from lamm_plugin.layout import (
    BEST_FILE,
    CHECKPOINT_FORMAT,
    EPOCH_FILE_PATTERN,
    MODEL_FOLDER,
    RESULTS_FILENAME,
    checkpoint_epochs,
    epoch_file,
    find_checkpoint,
    read_checkpoint,
)

if TYPE_CHECKING:
    import torch

    from lamm_plugin.backbone import CLIPBundle

__all__ = [
    "ClassReport",
    "Comparison",
    "Interpretation",
    "RowReport",
    "Vocabulary",
    "compare",
    "format_comparison",
    "format_report",
    "interpret",
    "load_checkpoint",
    "main",
    "nearest_both",
    "nearest_tokens",
    "plot_drift",
    "vocabulary_for",
]

logger = logging.getLogger(__name__)

FORMATS = ("table", "markdown", "csv")
#: Rows of the similarity matrix computed at once (``[chunk, vocabulary]`` floats: 256 x 49408 x 4 B = 50 MB).
CHUNK = 256
#: An initial label row is a vocabulary row; a larger distance means the vocabulary is not the checkpoint's.
INIT_TOLERANCE = 1e-4


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """BPE character -> byte (the inverse of open_clip's ``bytes_to_unicode``)."""
    import open_clip

    return {v: k for k, v in open_clip.tokenizer.bytes_to_unicode().items()}


# ---- the vocabulary ----------------------------------------------------------------------------------------------
@dataclass
class Vocabulary:
    """CLIP's token-embedding matrix with the tokenizer's decoder.

    Attributes:
        embeddings: ``[V, width]`` float32 token embeddings.
        decoder: Token id -> BPE string (``"dog</w>"``: ``</w>`` ends a word).
        fingerprint: :func:`lamm_plugin.backbone.weights_fingerprint` of the CLIP they come from ("" if unknown).
    """

    embeddings: torch.Tensor
    decoder: dict[int, str]
    fingerprint: str = ""

    @classmethod
    def from_clip(cls, clip: CLIPBundle) -> Vocabulary:
        import open_clip
        import torch

        from lamm_plugin.backbone import weights_fingerprint

        tokenizer = clip.tokenizer
        decoder = getattr(tokenizer, "decoder", None)
        if decoder is None:  # e.g. a Hugging Face tokenizer wrapper: CLIP's own BPE vocabulary
            decoder = open_clip.SimpleTokenizer().decoder
        weight = clip.model.token_embedding.weight.detach().to("cpu", torch.float32)
        return cls(weight, dict(decoder), weights_fingerprint(clip.model))

    def token(self, token_id: int) -> str:
        """Readable token: a word-final token without ``</w>``, a word piece followed by ``-`` (``"gol-"``).

        BPE tokens spell bytes as printable characters; they are decoded to UTF-8 (``"ðŁĺĬ"`` -> an emoji).
        """
        text = self.decoder.get(int(token_id))
        if text is None:
            return f"<{int(token_id)}>"
        end = text.endswith("</w>")
        text = text[: -len("</w>")] if end else text
        byte_decoder = _byte_decoder()
        if all(c in byte_decoder for c in text):
            text = bytearray(byte_decoder[c] for c in text).decode("utf-8", errors="backslashreplace")
        if not text.isprintable():  # control bytes and the like: escaped, not printed raw
            text = text.encode("unicode_escape").decode("ascii")
        return text if end else text + "-"


def nearest_both(
    vectors: torch.Tensor, vocabulary: torch.Tensor, k: int = 5, chunk: int = CHUNK
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The ``k`` nearest vocabulary rows of each vector by cosine and by L2, from one matrix product per chunk.

    Vectorised over the whole vocabulary and chunked over the vectors (``[chunk, V]`` at a time).

    Args:
        vectors: ``[R, width]``.
        vocabulary: ``[V, width]``.
        k: Neighbours per vector.
        chunk: Vectors per matrix product.

    Returns:
        ``((cos_ids, cos_similarity), (l2_ids, l2_distance))``, each ``[R, k]``; similarities descending,
        distances ascending.
    """
    import torch

    k = min(k, vocabulary.shape[0])
    vectors, vocabulary = vectors.detach().float(), vocabulary.detach().float()
    vocab_norm = vocabulary.norm(dim=-1)  # [V]
    vocab_sq = vocab_norm * vocab_norm
    out: list[list[torch.Tensor]] = [[], [], [], []]
    with torch.no_grad():
        for part in vectors.split(chunk):
            norm = part.norm(dim=-1, keepdim=True)  # [c, 1]
            dot = part @ vocabulary.t()  # [c, V]
            top = (dot / (norm * vocab_norm).clamp_min(1e-12)).topk(k, dim=-1)
            out[0].append(top.indices)
            out[1].append(top.values)
            # ||x - v||^2 = ||x||^2 - 2 x.v + ||v||^2, in place on the product
            top = dot.mul_(-2).add_(vocab_sq).add_(norm * norm).topk(k, dim=-1, largest=False)
            out[2].append(top.indices)
            out[3].append(top.values.clamp_min(0).sqrt())
    if not out[0]:
        empty = (torch.empty(0, k, dtype=torch.long), torch.empty(0, k))
        return empty, empty
    cos_ids, cos_sim, l2_ids, l2_dist = (torch.cat(x) for x in out)
    return (cos_ids, cos_sim), (l2_ids, l2_dist)


def nearest_tokens(
    vectors: torch.Tensor, vocabulary: torch.Tensor, k: int = 5, metric: str = "cosine", chunk: int = CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest vocabulary rows of each vector by one metric (:func:`nearest_both`).

    Args:
        metric: ``"cosine"`` (similarity, descending) or ``"l2"`` (distance, ascending).

    Returns:
        ``(ids, scores)``, each ``[R, k]``.
    """
    if metric not in ("cosine", "l2"):
        raise UserError(f"metric must be 'cosine' or 'l2', not {metric!r}.")
    cosine, l2 = nearest_both(vectors, vocabulary, k, chunk)
    return cosine if metric == "cosine" else l2


# ---- checkpoints -------------------------------------------------------------------------------------------------
def _checkpoint_file(path: str, epoch: Optional[int] = None) -> str:
    """The checkpoint file ``path`` stands for: the file itself, or the one a Dassl run / model folder holds."""
    if osp.isfile(path):
        return path
    if not osp.isdir(path):
        raise MissingFileError(f"No checkpoint file or run folder at {path!r}.")
    folder = osp.join(path, MODEL_FOLDER) if osp.isdir(osp.join(path, MODEL_FOLDER)) else path
    found = find_checkpoint(folder, epoch)
    if found is not None:
        return found
    if epoch is not None:
        epochs = checkpoint_epochs(folder)
        raise MissingFileError(f"No {epoch_file(epoch)} in {folder} (epochs there: {epochs or 'none'}).")
    raise MissingFileError(
        f"No checkpoint in {folder}: expected {BEST_FILE} or model.pth.tar-<epoch> (a Dassl run folder holds them "
        f"under {MODEL_FOLDER}/), or pass the checkpoint file itself."
    )


def load_checkpoint(path: str, epoch: Optional[int] = None) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)``.

    Args:
        path: A checkpoint file (core or Dassl), a Dassl run folder (its ``prompt_learner/model-best.pth.tar``, else
            the last epoch's checkpoint) or the ``prompt_learner`` folder itself.
        epoch: Read ``model.pth.tar-<epoch>`` of a folder instead.

    Returns:
        The checkpoint dict, with ``"path"`` (the file read) added.
    """
    file = _checkpoint_file(path, epoch)
    state = read_checkpoint(file)  # the one message for a damaged or foreign file (CheckpointFormatError)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        keys = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{file} is not a {CHECKPOINT_FORMAT} checkpoint (found: {keys}).")
    return {**state, "path": file}


def _run_seed(checkpoint_path: str) -> Optional[int]:
    """The ``SEED`` of the Dassl run a checkpoint file belongs to, from its ``results.json`` (None if unknown)."""
    run = osp.dirname(osp.dirname(osp.abspath(checkpoint_path)))
    try:
        with open(osp.join(run, RESULTS_FILENAME)) as f:
            seed = json.load(f).get("config", {}).get("SEED")
    except (OSError, ValueError, AttributeError):
        return None
    return int(seed) if isinstance(seed, int) and seed >= 0 else None


def vocabulary_for(
    state: dict[str, Any],
    backbone: Optional[str] = None,
    pretrained: Optional[str] = None,
    seed: Optional[int] = None,
) -> Vocabulary:
    """The vocabulary of the CLIP a checkpoint was trained with, checked against its ``clip_weights`` fingerprint.

    Args:
        state: :func:`load_checkpoint` output.
        backbone: Backbone name (default: the checkpoint's).
        pretrained: Pretrained tag or local weights file, as for :func:`lamm_plugin.load_clip`.
        seed: For the tiny random-weight test CLIPs: the torch seed set before building them (a Dassl run's
            ``--seed``; read from the run's ``results.json`` when not given).

    Raises:
        ValueError: The CLIP built has other weights than the checkpoint's.
    """
    import torch

    from lamm_plugin.backbone import TINY_MODELS, load_clip

    name = backbone or state["backbone"]
    if name in TINY_MODELS and seed is None:
        seed = _run_seed(state.get("path", ""))
    logger.info("Loading CLIP %s for its token embeddings", name)
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        if name in TINY_MODELS and seed is not None:
            torch.manual_seed(seed)
        vocabulary = Vocabulary.from_clip(load_clip(name, pretrained=pretrained))
    theirs = state.get("clip_weights")
    if theirs is not None and theirs != vocabulary.fingerprint:
        hint = (
            "a tiny random-weight CLIP is rebuilt from the torch seed of its run: pass --seed (the run's --seed)"
            if name in TINY_MODELS
            else "pass the weights it was trained with (--pretrained TAG_OR_FILE)"
        )
        raise UserError(
            f"The checkpoint was trained on CLIP weights {theirs}, but {name!r} as loaded has weights "
            f"{vocabulary.fingerprint} (a weights fingerprint): {hint}."
        )
    return vocabulary


# ---- reports -----------------------------------------------------------------------------------------------------
@dataclass
class RowReport:
    """One learned vector (a label row or a context vector).

    Attributes:
        original_id: Token it started from (``None``: random initialisation).
        original: That token, readable.
        cosine: ``(token, similarity)`` of the top ``k`` by cosine.
        l2: ``(token, distance)`` of the top ``k`` by L2.
        nearest_id: Token id of the top-1 by cosine.
        drift_l2: ``||row - initial||`` (``None`` without an initial value).
        drift_cos: ``1 - cos(row, initial)``.
        is_original: The nearest token by cosine is still the original one.
    """

    original_id: Optional[int]
    original: str
    cosine: list[tuple[str, float]]
    l2: list[tuple[str, float]]
    nearest_id: int
    drift_l2: Optional[float]
    drift_cos: Optional[float]
    is_original: Optional[bool]

    @property
    def nearest(self) -> str:
        return self.cosine[0][0]


@dataclass
class ClassReport:
    """The label rows of one class.

    Attributes:
        name: Class name (its label key: a repeated name carries ``" #k"``).
        rows: One report per learned row (one per learned name token).
        drift_l2: L2 norm of ``rows - initial`` over all the class's rows.
        drift_cos: ``1 - cos`` averaged over the rows.
        frozen: The rows were frozen in the checkpoint (continual learning: an earlier stage's classes).
    """

    name: str
    rows: list[RowReport]
    drift_l2: float
    drift_cos: float
    frozen: bool = False

    @property
    def original(self) -> str:
        """The tokens the rows started from."""
        return " ".join(r.original for r in self.rows)

    @property
    def nearest(self) -> str:
        """The nearest token (cosine) of each row."""
        return " ".join(r.nearest for r in self.rows)

    @property
    def own_rows(self) -> int:
        """How many rows still decode to their own token."""
        return sum(bool(r.is_original) for r in self.rows)

    @property
    def decodes_to_self(self) -> bool:
        return self.own_rows == len(self.rows)


@dataclass
class Interpretation:
    """What a checkpoint learned (:func:`interpret`).

    Attributes:
        source: The checkpoint file.
        method: Host method name.
        backbone: CLIP backbone name.
        k: Neighbours per row.
        classes: One report per class with label rows, in the checkpoint's order.
        context: Name of each learned context vector (``"ctx[0]"``, ``"ctx[<class>][0]"``) and its report.
        summary: Drift distribution, the classes that moved most, how many labels decode to their own name.
    """

    source: str
    method: str
    backbone: str
    k: int
    classes: list[ClassReport]
    context: list[tuple[str, RowReport]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def class_report(self, name: str) -> ClassReport:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(f"No label rows for class {name!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return asdict(self)


def _drift(rows: torch.Tensor, init: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: ``||row - init||`` and ``1 - cos(row, init)`` (exactly 0 for an unchanged row), in float64."""
    import torch

    rows, init = rows.double(), init.double()
    l2 = (rows - init).norm(dim=-1)
    cos = 1 - torch.nn.functional.cosine_similarity(rows, init, dim=-1)
    return l2, torch.where(l2 == 0, torch.zeros_like(cos), cos.clamp_min(0))


def _row_reports(
    vectors: torch.Tensor,
    init: Optional[torch.Tensor],
    original_ids: Optional[Sequence[int]],
    vocabulary: Vocabulary,
    k: int,
) -> list[RowReport]:
    (cos_ids, cos_sim), (l2_ids, l2_dist) = nearest_both(vectors, vocabulary.embeddings, k)
    drift_l2, drift_cos = _drift(vectors, init) if init is not None else (None, None)
    reports = []
    for r in range(len(vectors)):
        original = None if original_ids is None else int(original_ids[r])
        top = int(cos_ids[r, 0])
        reports.append(
            RowReport(
                original_id=original,
                original="" if original is None else vocabulary.token(original),
                cosine=[(vocabulary.token(i), float(s)) for i, s in zip(cos_ids[r].tolist(), cos_sim[r].tolist())],
                l2=[(vocabulary.token(i), float(s)) for i, s in zip(l2_ids[r].tolist(), l2_dist[r].tolist())],
                nearest_id=top,
                drift_l2=None if drift_l2 is None else float(drift_l2[r]),
                drift_cos=None if drift_cos is None else float(drift_cos[r]),
                is_original=None if original is None else top == original,
            )
        )
    return reports


def _original_ids(init: torch.Tensor, vocabulary: Vocabulary, what: str) -> list[int]:
    """The vocabulary row each initial vector equals; raises when one equals none (another CLIP's vocabulary).

    Initial rows are copies of token embeddings: an exact lookup finds them; rows that do not match exactly (a
    vocabulary in other precision) take their nearest row by L2, within a tolerance.
    """
    vocab = vocabulary.embeddings
    exact = {row.tobytes(): i for i, row in reversed(list(enumerate(vocab.numpy())))}
    init = init.detach().float()
    ids = [exact.get(row.tobytes(), -1) for row in init.numpy()]
    missing = [r for r, i in enumerate(ids) if i < 0]
    if missing:
        nearest = nearest_tokens(init[missing], vocab, 1, "l2")[0][:, 0]
        dist = (init[missing] - vocab[nearest]).norm(dim=-1)  # exact, not through the expansion
        worst = float(dist.max())
        if worst > INIT_TOLERANCE * max(vocab.norm(dim=-1).mean().item(), 1.0):
            raise UserError(
                f"The initial {what} are not token embeddings of this vocabulary (largest distance {worst:.3g}): "
                "the checkpoint was trained with another CLIP; pass its backbone and weights (--backbone, "
                "--pretrained)."
            )
        for r, i in zip(missing, nearest.tolist()):
            ids[r] = i
    return ids


def _context(state: dict[str, Any], vocabulary: Vocabulary, k: int, tokenizer: Any) -> list[tuple[str, RowReport]]:
    """Reports of the context vectors (``method.ctx``) in token-embedding space, with drift when ``ctx_init`` set."""
    import torch

    ctx = state["state_dict"].get("method.ctx")
    if ctx is None or ctx.shape[-1] != vocabulary.embeddings.shape[1]:
        return []
    ctx = ctx.detach().float().cpu()
    n = ctx.shape[-2]
    words = str(state.get("method_config", {}).get("ctx_init", "")).replace("_", " ").strip()
    ids = tokenizer.encode(words)[:n] if words else []
    init = vocabulary.embeddings[torch.tensor(ids, dtype=torch.long)] if len(ids) == n else None
    if ctx.dim() == 2:
        names, flat = [f"ctx[{i}]" for i in range(n)], ctx
    else:  # class-specific context [C, n, width]
        classes = state.get("classnames") or [str(c) for c in range(ctx.shape[0])]
        names = [f"ctx[{c}][{i}]" for c in classes for i in range(n)]
        flat = ctx.reshape(-1, ctx.shape[-1])
    if init is not None:
        init = init.repeat(len(flat) // n, 1)
        ids = ids * (len(flat) // n)
    reports = _row_reports(flat, init, ids if init is not None else None, vocabulary, k)
    return list(zip(names, reports))


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "max": max(values),
    }


def interpret(state: dict[str, Any], vocabulary: Vocabulary, k: int = 5, most: int = 5) -> Interpretation:
    """Nearest tokens and drift of every learned label row and context vector of a checkpoint.

    Args:
        state: :func:`load_checkpoint` output (or :meth:`lamm_plugin.LAMM.checkpoint_state`).
        vocabulary: :func:`vocabulary_for` (or :meth:`Vocabulary.from_clip` of the model's CLIP).
        k: Neighbours per row.
        most: Classes listed in the summary as those that moved most.
    """
    import open_clip

    if k < 1:
        raise UserError(f"k must be at least 1, got {k}.")
    sd = state["state_dict"]
    classes: list[ClassReport] = []
    if "label_embedding.rows" in sd:
        rows, init = sd["label_embedding.rows"].float().cpu(), sd["label_embedding.init"].float().cpu()
        meta = sd["label_embedding._extra_state"]
        frozen = set(meta.get("frozen", []))
        original = _original_ids(init, vocabulary, "label rows")
        reports = _row_reports(rows, init, original, vocabulary, k)
        l2, cos = _drift(rows, init)
        offset = 0
        for name, count in zip(meta["classnames"], meta["counts"]):
            part = slice(offset, offset + count)
            classes.append(
                ClassReport(
                    name=name,
                    rows=reports[part],
                    drift_l2=float(l2[part].pow(2).sum().sqrt()),
                    drift_cos=float(cos[part].mean()) if count else 0.0,
                    frozen=name in frozen,
                )
            )
            offset += count
    tokenizer = open_clip.SimpleTokenizer()
    context = _context(state, vocabulary, k, tokenizer)
    drift = [c.drift_l2 for c in classes]
    moved = sorted(classes, key=lambda c: -c.drift_l2)[:most]
    summary: dict[str, Any] = {
        "classes": len(classes),
        "label_rows": sum(len(c.rows) for c in classes),
        "drift_l2": _stats(drift),
        "drift_cos": _stats([c.drift_cos for c in classes]),
        "moved_most": [(c.name, c.drift_l2) for c in moved],
        "classes_decoding_to_own_name": sum(c.decodes_to_self for c in classes),
        "rows_decoding_to_own_token": sum(c.own_rows for c in classes),
        "context_vectors": len(context),
        "context_decoding_to_own_token": sum(bool(r.is_original) for _, r in context),
        "context_nearest": " ".join(r.nearest for _, r in context),
    }
    return Interpretation(
        source=str(state.get("path", "")),
        method=str(state.get("method", "")),
        backbone=str(state.get("backbone", "")),
        k=k,
        classes=classes,
        context=context,
        summary=summary,
    )


# ---- two checkpoints ---------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """Two interpretations over the classes they share (e.g. 1 vs 16 shots, stage 1 vs stage 5).

    Attributes:
        a: The first checkpoint's report.
        b: The second's.
        classes: Shared class names, in ``a``'s order.
        only_a: Classes only ``a`` has label rows for.
        only_b: Classes only ``b`` has label rows for.
    """

    a: Interpretation
    b: Interpretation
    classes: list[str]
    only_a: list[str]
    only_b: list[str]

    def pairs(self) -> list[tuple[ClassReport, ClassReport]]:
        b = {c.name: c for c in self.b.classes}
        return [(self.a.class_report(n), b[n]) for n in self.classes]


def compare(a: Interpretation, b: Interpretation) -> Comparison:
    """Match two interpretations by class name."""
    names_b = {c.name for c in b.classes}
    names_a = {c.name for c in a.classes}
    return Comparison(
        a=a,
        b=b,
        classes=[c.name for c in a.classes if c.name in names_b],
        only_a=[c.name for c in a.classes if c.name not in names_b],
        only_b=[c.name for c in b.classes if c.name not in names_a],
    )


# ---- tables ------------------------------------------------------------------------------------------------------
ROW_SEP = " / "  # between the rows of a multi-token class


#: The ``table`` format (the terminal's) fits in about 115 columns: long cells are wrapped, the columns of
#: :data:`TABLE_DROPPED` are left to ``markdown`` and ``csv``, and the summary lines are wrapped at this width.
TABLE_WIDTH = 100
#: Column widths of the ``table`` format (characters; other string columns get :data:`NAME_WIDTH`).
TABLE_WIDTHS = {"top-k cosine": 34, "vector": 12, "nearest A": 18, "nearest B": 18}
NAME_WIDTH = 20
#: Lines a wrapped cell may take for each of its label rows before it is cut with "…".
MAX_CELL_LINES = 2
#: Columns only ``markdown`` and ``csv`` show (``original`` is the class name's own tokens, mostly the name).
TABLE_DROPPED = ("original", "top-k L2")


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped (``"\\x1b"``, ``"\\n"``): class names and paths come
    from users and files, and control bytes must not reach a terminal or a table raw."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _safe_row(row: Sequence[Any]) -> list[Any]:
    return [printable(v) if isinstance(v, str) else v for v in row]


def _wrap(text: str, width: int) -> str:
    """``text`` in lines of at most ``width`` characters; each row of a multi-token class (``" / "``) starts a new
    line and takes at most :data:`MAX_CELL_LINES`, the last cut with "…" (``markdown`` and ``csv`` keep it all)."""
    lines = []
    for part in text.split(ROW_SEP):
        wrapped = textwrap.wrap(part, width, break_long_words=True, break_on_hyphens=False) or [""]
        if len(wrapped) > MAX_CELL_LINES:
            wrapped = wrapped[:MAX_CELL_LINES]
            wrapped[-1] = wrapped[-1][: width - 1] + "…"
        lines += wrapped
    return "\n".join(lines)


def _terminal_cell(value: Any, width: int) -> Any:
    if isinstance(value, float):
        return f"{value:.4f}"
    return _wrap(value, width) if isinstance(value, str) else value


def terminal_columns(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[list[str], list[list[Any]]]:
    """The ``table`` format's columns: :data:`TABLE_DROPPED` left out, string cells wrapped to their width, numbers
    to 4 decimals."""
    keep = [i for i, name in enumerate(header) if name not in TABLE_DROPPED]
    widths = [TABLE_WIDTHS.get(header[i], NAME_WIDTH) for i in keep]
    body = [[_terminal_cell(row[i], w) for i, w in zip(keep, widths)] for row in rows]
    return [header[i] for i in keep], body


def _topk(pairs: Sequence[tuple[str, float]]) -> str:
    return ", ".join(f"{t} {s:.3f}" for t, s in pairs)


def class_rows(report: Interpretation) -> tuple[list[str], list[list[Any]]]:
    """Header and one row per class: the per-class table of every output format."""
    header = ["class", "original", "nearest", "top-k cosine", "top-k L2", "drift L2", "drift cos", "own token"]
    rows = [
        [
            c.name,
            c.original,
            c.nearest,
            ROW_SEP.join(_topk(r.cosine) for r in c.rows),
            ROW_SEP.join(_topk(r.l2) for r in c.rows),
            round(c.drift_l2, 6),
            round(c.drift_cos, 6),
            f"{c.own_rows}/{len(c.rows)}",
        ]
        for c in report.classes
    ]
    return header, [_safe_row(row) for row in rows]


def context_rows(report: Interpretation) -> tuple[list[str], list[list[Any]]]:
    header = ["vector", "original", "nearest", "top-k cosine", "top-k L2", "drift L2", "drift cos"]
    rows = [
        [
            name,
            r.original,
            r.nearest,
            _topk(r.cosine),
            _topk(r.l2),
            "" if r.drift_l2 is None else round(r.drift_l2, 6),
            "" if r.drift_cos is None else round(r.drift_cos, 6),
        ]
        for name, r in report.context
    ]
    return header, [_safe_row(row) for row in rows]


def summary_lines(report: Interpretation) -> list[str]:
    s = report.summary
    lines = [f"checkpoint: {report.source} (method {report.method}, backbone {report.backbone})"]
    if s["classes"]:
        d, c = s["drift_l2"], s["drift_cos"]
        lines += [
            f"classes: {s['classes']}, label rows: {s['label_rows']}",
            f"drift L2: min {d['min']:.4g}, median {d['median']:.4g}, mean {d['mean']:.4g}, max {d['max']:.4g}",
            f"drift cos: min {c['min']:.4g}, median {c['median']:.4g}, mean {c['mean']:.4g}, max {c['max']:.4g}",
            "moved most: " + ", ".join(f"{n} ({v:.4g})" for n, v in s["moved_most"]),
            f"labels still decoding to their own name: {s['classes_decoding_to_own_name']} of {s['classes']} classes"
            f" ({s['rows_decoding_to_own_token']} of {s['label_rows']} rows)",
        ]
    else:
        lines.append("no label rows (trained without LAMM)")
    if s["context_vectors"]:
        lines.append(
            f"context: {s['context_vectors']} vectors, nearest tokens: {s['context_nearest']} "
            f"({s['context_decoding_to_own_token']} still their initial token)"
        )
    return [printable(line) for line in lines]


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    try:
        from tabulate import tabulate
    except ImportError as err:
        raise UserError("--format table needs tabulate: pip install tabulate (or use markdown or csv)") from err
    header, rows = terminal_columns(header, rows)
    return tabulate(rows, headers=header, tablefmt="simple", disable_numparse=True)


def _render(fmt: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if fmt not in FORMATS:
        raise UserError(f"Unknown format {fmt!r}; use one of {FORMATS}.")
    return {"table": _table, "markdown": markdown_table, "csv": _csv}[fmt](header, rows)


def format_report(report: Interpretation, fmt: str = "table") -> str:
    """The per-class table, the context table and the summary; ``csv`` gives the per-class table only."""
    if fmt == "csv":
        return _csv(*class_rows(report))
    parts = []
    if report.classes:
        parts.append(_render(fmt, *class_rows(report)))
    if report.context:
        parts.append(_render(fmt, *context_rows(report)))
    summary = summary_lines(report)
    if fmt == "table":
        summary = [textwrap.fill(line, TABLE_WIDTH, subsequent_indent="  ") for line in summary]
    parts.append("\n".join(f"- {line}" for line in summary) if fmt == "markdown" else "\n".join(summary))
    return "\n\n".join(parts) + "\n"


def comparison_rows(comparison: Comparison) -> tuple[list[str], list[list[Any]]]:
    header = ["class", "original", "nearest A", "nearest B", "drift L2 A", "drift L2 B", "own token A", "own token B"]
    rows = [
        [
            a.name,
            a.original,
            a.nearest,
            b.nearest,
            round(a.drift_l2, 6),
            round(b.drift_l2, 6),
            f"{a.own_rows}/{len(a.rows)}",
            f"{b.own_rows}/{len(b.rows)}",
        ]
        for a, b in comparison.pairs()
    ]
    return header, [_safe_row(row) for row in rows]


def format_comparison(comparison: Comparison, fmt: str = "table") -> str:
    """Side-by-side table of the shared classes, then both summaries; ``csv`` gives the table only."""
    table = _render(fmt, *comparison_rows(comparison))
    if fmt == "csv":
        return table
    lines = []
    for tag, report in (("A", comparison.a), ("B", comparison.b)):
        lines += [f"{tag}: {line}" for line in summary_lines(report)]
    lines.append(f"shared classes: {len(comparison.classes)}")
    if comparison.only_a or comparison.only_b:
        lines.append(f"only in A: {len(comparison.only_a)}, only in B: {len(comparison.only_b)}")
    if fmt == "table":
        lines = [textwrap.fill(line, TABLE_WIDTH, subsequent_indent="  ") for line in lines]
    bullet = "- " if fmt == "markdown" else ""
    return table + "\n\n" + "\n".join(bullet + line for line in lines) + "\n"


# ---- figure ------------------------------------------------------------------------------------------------------
#: Above this many classes the figure has no per-class tick labels.
MAX_LABELLED = 60


def plot_drift(report: Interpretation | Comparison, path: str, title: Optional[str] = None) -> str:
    """Bar chart of the L2 drift per class, sorted (for a comparison: both checkpoints side by side, sorted by
    the larger of the two), saved to ``path``. Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise UserError("The figure needs matplotlib: pip install matplotlib") from err

    labels = drift_labels(report)
    if isinstance(report, Comparison):
        pairs = sorted(report.pairs(), key=lambda p: -max(p[0].drift_l2, p[1].drift_l2))
        names = [a.name for a, _ in pairs]
        series = [(labels[0], [a.drift_l2 for a, _ in pairs]), (labels[1], [b.drift_l2 for _, b in pairs])]
        default = "Label drift per class: two checkpoints"
    else:
        ordered = sorted(report.classes, key=lambda c: -c.drift_l2)
        names = [c.name for c in ordered]
        series = [(labels[0], [c.drift_l2 for c in ordered])]
        default = f"Label drift per class: {labels[0]}"
    names = [printable(n) for n in names]
    if not names:
        raise UserError("No label rows to plot (a checkpoint trained without LAMM, or no shared classes).")
    n, groups = len(names), len(series)
    labelled = n <= MAX_LABELLED
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.35 * n * groups + 2), 16) if labelled else 12, 4.5))
    width = 0.8 / groups
    for g, (label, values) in enumerate(series):
        positions = [i + (g - (groups - 1) / 2) * width for i in range(n)]
        ax.bar(positions, values, width=width, label=label)
    if labelled:
        ax.set_xticks(range(n))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_xlabel("class")
    else:
        ax.set_xlabel(f"{n} classes, sorted by drift")
    ax.set_ylabel("L2 drift from initial embedding")
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_title(printable(title or default))
    if groups > 1:  # one series is named by the title
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def _run_parts(source: str) -> tuple[list[str], str]:
    """The run folder of checkpoint ``source`` as path parts, and which checkpoint (``"epoch 20"``, ``"best"``,
    ``""`` for a file saved from ``model.checkpoint_state()``, whose own name then ends the parts)."""
    folder, name = osp.split(osp.normpath(source)) if source else ("", "")
    match = EPOCH_FILE_PATTERN.match(name)
    if match or name == BEST_FILE:
        when = f"epoch {match.group(1)}" if match else "best"
        if osp.basename(folder) == MODEL_FOLDER:
            folder = osp.dirname(folder)
    else:
        when, folder = "", osp.join(folder, osp.splitext(name)[0])
    return [p for p in folder.split(os.sep) if p], when


def run_label(source: str, method: str, run: Optional[str] = None) -> str:
    """A short name of the checkpoint ``source`` of ``method`` for a figure: the method, the run (default: the run
    folder's name) and the checkpoint (``"coop, demo, epoch 20"``), not the file's whole path."""
    parts, when = _run_parts(source)
    if run is None:
        run = parts[-1] if parts else ""
    return ", ".join(part for part in (method, run, when) if part)


def drift_labels(report: Interpretation | Comparison) -> list[str]:
    """The figure's name of each series: :func:`run_label` of each checkpoint, tagged ``A``/``B`` in a comparison;
    two runs of the same name (``seed1`` of 1 and of 16 shots) are told apart by the folders where their paths
    differ (``"shots_1 (seed1)"``)."""
    if not isinstance(report, Comparison):
        return [printable(run_label(report.source, report.method))]
    (pa, _), (pb, _) = _run_parts(report.a.source), _run_parts(report.b.source)
    runs: list[Optional[str]] = [None, None]
    if pa and pb and pa[-1] == pb[-1] and pa != pb:
        start = next(i for i, (x, y) in enumerate(zip(pa + [None], pb + [None])) if x != y)
        end = next(i for i, (x, y) in enumerate(zip(pa[::-1] + [None], pb[::-1] + [None])) if x != y)
        runs = [f"{'/'.join(p[start : len(p) - end]) or '.'} ({p[-1]})" for p in (pa, pb)]
    a, b = (run_label(r.source, r.method, run) for r, run in zip((report.a, report.b), runs))
    return [printable(f"A: {a}"), printable(f"B: {b}")]


# ---- command line ------------------------------------------------------------------------------------------------
def _load(path: str, args: argparse.Namespace, epoch: Optional[int]) -> Interpretation:
    state = load_checkpoint(path, epoch)
    backbone = args.backbone or state["backbone"]
    print(f"Read {state['path']}; loading CLIP {backbone} for its vocabulary", file=sys.stderr)
    vocabulary = vocabulary_for(state, args.backbone, args.pretrained, args.seed)
    return interpret(state, vocabulary, args.topk, args.most)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lamm_experiments.interpret",
        description="Nearest vocabulary tokens and drift of the label rows and context a checkpoint learned.",
    )
    parser.add_argument("checkpoint", help="checkpoint file, Dassl run folder, or its prompt_learner/ folder")
    parser.add_argument("--compare", metavar="CKPT2", help="a second checkpoint: drift side by side")
    parser.add_argument("--epoch", type=int, help="read model.pth.tar-EPOCH of a folder (default: best, else last)")
    parser.add_argument("--compare-epoch", type=int, help="the same for --compare")
    parser.add_argument("--topk", type=int, default=5, help="nearest tokens per row (default 5)")
    parser.add_argument("--most", type=int, default=5, help="classes listed as moved most (default 5)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    parser.add_argument("--figure", metavar="PNG", help="write the drift-per-class figure here (needs matplotlib)")
    parser.add_argument("--output", metavar="FILE", help="write the table here instead of printing it")
    parser.add_argument("--backbone", help="CLIP backbone (default: the checkpoint's)")
    parser.add_argument("--pretrained", help="CLIP pretrained tag or weights file (default: the backbone's)")
    parser.add_argument("--seed", type=int, help="tiny random CLIPs only: the run's seed (default: its results.json)")
    args = parser.parse_args(argv)
    if args.topk < 1:
        parser.error("--topk must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return run_main(lambda: _main(args), argv)


def _main(args: argparse.Namespace) -> int:
    """The command's work: outputs are checked before it and written whole (:func:`~lamm_plugin.files.write_text`)."""
    for path, option in ((args.output, "--output"), (args.figure, "--figure")):
        if path:
            check_output(path, option)
    report: Interpretation | Comparison = _load(args.checkpoint, args, args.epoch)
    if args.compare:
        report = compare(report, _load(args.compare, args, args.compare_epoch))
        text = format_comparison(report, args.format)
    else:
        text = format_report(report, args.format)
    if args.output:
        write_text(args.output, text, option="--output")
        print(f"Wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.figure:
        print(f"Wrote {plot_drift(report, args.figure)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
