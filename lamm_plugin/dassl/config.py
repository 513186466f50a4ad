"""yacs config nodes generated from the dataclasses in :mod:`lamm_plugin.config` (detectron2's ``add_*_config``).

A dataclass field ``n_ctx`` becomes key ``N_CTX`` with the field's default, so every default lives on the
dataclass and nowhere else. Nodes:

* ``TRAINER.LAMM_<HOST>`` for every registered method with a LAMM variant (``LAMM_COOP``, ``LAMM_MAPLE``, ...:
  ``LAMM_`` and the method's ``display_name`` in upper case): the host method's settings, plus ``PREC``
  (``fp16``, ``fp32``, ``bf16`` or ``amp``) as in the host repositories' ``TRAINER.COOP.PREC``, and
  ``CUDA_GRAPH`` (``True``): on a GPU, replay each training step's forward and backward from a CUDA graph,
  ``OWN_ATTENTION`` (``False``): the text blocks run our own attention (:mod:`lamm_plugin.encoders`), and
  ``FP16_LEARNED`` (``False``): under ``PREC fp16``, learned tensors in fp16 without a GradScaler (the originals);
* ``TRAINER.LAMM``: :class:`~lamm_plugin.config.LAMMConfig`, shared by every LAMM trainer;
* baselines of this repository (:func:`add_baseline_config`), one per registered method: ``TRAINER.COOP``,
  ``TRAINER.MAPLE``, ..., ``TRAINER.ZEROSHOTCLIP``. Host repositories define their own ``TRAINER.COOP`` etc., so
  the plugin never adds these on import;
* ``DATASET.SUBSAMPLE_CLASSES`` (``all``, ``base`` or ``new``) when the host has not added it;
* ``MODEL.BACKBONE.PRETRAINED``: a pretrained tag or checkpoint path for :func:`lamm_plugin.load_clip`. Dassl's
  default is the bool ``True``, which yacs would not let a string replace; the default becomes ``None`` (the
  backbone's default weights), which accepts any value;
* ``MODEL.BACKBONE.ALLOW_OTHER_WEIGHTS`` (``False``): load a checkpoint trained on other CLIP weights of the same
  backbone (refused by default: its learned tensors were fitted to those weights).
* ``LAMM_CACHE`` (:func:`cache_node`): what is computed once and reused across runs, exact: ``DIR`` (``""``:
  ``$LAMM_CACHE_DIR``, else ``<DATASET.ROOT>/.lamm_cache``), ``TEST_FEATURES`` (``True``: the image features of
  evaluation sets, for methods without visual prompts; :mod:`lamm_plugin.feature_cache`), ``TEXT_FEATURES``
  (``True``: frozen CLIP's text features of fixed prompts), ``DECODED_IMAGES`` (``True``: keep the decoded training
  images, :mod:`lamm_plugin.dassl.decoded`) and ``DECODED_MAX_MB`` (``4096``: at most that many MB of pixels).

Host repositories merge their yaml files into ``get_cfg_default()`` before any trainer code runs, and yacs
refuses unknown keys, so :func:`install` adds the nodes to Dassl's default config object itself; it runs when
:mod:`lamm_plugin.dassl` is imported. It also makes a mistyped key fail with an error that names the key and
its closest matches (:class:`ConfigKeyError`), and a yaml file that does not parse fail with an error that names
the file, the line and the problem (:class:`ConfigFileError`).

Some hosts call Dassl's ``clean_cfg(cfg, trainer)``, which pops every ``TRAINER`` node but ``NAME`` and the named
trainer's: DePT before merging its yaml files (``clean_cfg(cfg, "COOP")``), Dassl's ``tools/train.py`` after
(``clean_cfg(cfg, args.trainer)`` keeps ``TRAINER.LAMM_COOP`` of ``LAMM_CoOp`` but drops ``TRAINER.LAMM``). The
root of every config made from Dassl's defaults (:class:`SuggestingCfgNode`) therefore keeps a reference to each
``TRAINER.LAMM*`` node object; the yaml files and the command line change these objects in place, so the
references see every value the user set. A node a host popped is put back before the next merge, when the config
is frozen (the named trainer's nodes), and when a LAMM trainer starts (:func:`require_trainer_nodes`), which
refuses to start, naming the node, where none was kept.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from typing import Any, Optional

import yaml
from yacs.config import CfgNode

from lamm_plugin.config import LAMMConfig, from_dict
from lamm_plugin.errors import UserError
from lamm_plugin.files import read_text
from lamm_plugin.layout import PRECISIONS
from lamm_plugin.methods import METHODS

__all__ = [
    "BASELINE_NODES",
    "CACHE_NODE",
    "DECODED_IMAGES_KEY",
    "DECODED_MAX_MB_KEY",
    "LAMM_NODE",
    "LAMM_NODES",
    "CUDA_GRAPH_KEY",
    "FP16_LEARNED_KEY",
    "OWN_ATTENTION_KEY",
    "PRECISION_KEY",
    "PRECISIONS",
    "ConfigFileError",
    "ConfigKeyError",
    "SuggestingCfgNode",
    "add_baseline_config",
    "add_lamm_config",
    "cache_node",
    "all_keys",
    "baseline_node",
    "close_keys",
    "dassl_default_cfg",
    "dataclass_to_node",
    "install",
    "lamm_config_from_cfg",
    "require_trainer_nodes",
    "lamm_nodes_of",
    "lamm_node",
    "method_config_from_cfg",
    "node_to_dataclass",
]

logger = logging.getLogger(__name__)


def baseline_node(method: str) -> str:
    """The baseline trainer's node of registered ``method``: its display name in upper case (``COOP``)."""
    return METHODS[method].display_name.upper()


def lamm_node(method: str) -> str:
    """The LAMM trainer's node of registered ``method`` (``LAMM_COOP``)."""
    return "LAMM_" + baseline_node(method)


#: LAMM trainer node -> method name in :data:`lamm_plugin.methods.METHODS`, for every method with a LAMM variant.
LAMM_NODES: dict[str, str] = {lamm_node(name): name for name, cls in METHODS.items() if cls.lamm_variant}
#: Nodes of this repository's baselines (named like the host repositories' nodes) -> method name.
BASELINE_NODES: dict[str, str] = {baseline_node(name): name for name in METHODS}
#: The node of :class:`~lamm_plugin.config.LAMMConfig`.
LAMM_NODE = "LAMM"
#: Key of the precision in every trainer node, as in the host repositories.
PRECISION_KEY = "PREC"
#: The host repositories' default (CLIP's own weights are fp16).
DEFAULT_PRECISION = "fp16"
#: Key in every trainer node: replay training steps from a CUDA graph (:mod:`lamm_plugin.cuda_graph`) on a GPU.
CUDA_GRAPH_KEY = "CUDA_GRAPH"
#: Key in every trainer node: the text blocks run our own attention, self-checked (:mod:`lamm_plugin.fast_paths`).
OWN_ATTENTION_KEY = "OWN_ATTENTION"
#: Key in every trainer node: under ``PREC fp16``, keep the learned tensors themselves in fp16 and step them with the
#: plain optimiser, no GradScaler, as the original CoOp, MaPLe and LAMM code does (updates smaller than half an fp16
#: step of a value are lost). Default ``False``: fp32 master weights and a GradScaler that loses no step.
FP16_LEARNED_KEY = "FP16_LEARNED"
#: Keys of a trainer node that are not fields of the method's dataclass.
RUNTIME_KEYS = (PRECISION_KEY, CUDA_GRAPH_KEY, FP16_LEARNED_KEY, OWN_ATTENTION_KEY)
#: Top-level node of what is computed once and reused, exact (:func:`cache_node`).
CACHE_NODE = "LAMM_CACHE"
#: ``LAMM_CACHE`` key: keep each training image decoded once, shared by the loader's workers.
DECODED_IMAGES_KEY = "DECODED_IMAGES"
#: ``LAMM_CACHE`` key: bound of the kept pixels in MB (16 shots of ImageNet at its typical ~400x350 take ~6.7 GB).
DECODED_MAX_MB_KEY = "DECODED_MAX_MB"
SUBSAMPLE_CHOICES = ("all", "base", "new")
#: Attribute of a root config (not a key) holding its ``TRAINER.LAMM*`` node objects (:class:`SuggestingCfgNode`).
_KEPT_NODES = "LAMM_KEPT_NODES"


def _key(field_name: str) -> str:
    return field_name.upper()


def dataclass_to_node(config: Any, extra: Optional[dict[str, Any]] = None) -> CfgNode:
    """A yacs node with one upper-case key per dataclass field.

    Args:
        config: A dataclass instance or class (the class gives its defaults).
        extra: Keys appended after the fields (e.g. ``{"PREC": "fp16"}``).

    Returns:
        A new node; keys follow the field order.
    """
    instance = config() if isinstance(config, type) else config
    values = {_key(f.name): getattr(instance, f.name) for f in dataclasses.fields(instance)}
    values.update(extra or {})
    return CfgNode(values)


def node_to_dataclass(node: CfgNode, cls: type, ignore: tuple[str, ...] = RUNTIME_KEYS) -> Any:
    """Build dataclass ``cls`` from a node made by :func:`dataclass_to_node`.

    Args:
        node: The yacs node.
        cls: The dataclass.
        ignore: Node keys that are not fields (the precision, the CUDA-graph switch).

    Raises:
        KeyError: The node has a key that is not a field of ``cls`` (dataclass and node out of step).
    """
    fields = {_key(f.name): f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in node.items():
        if key in ignore:
            continue
        values[fields.get(key, key.lower())] = list(value) if isinstance(value, tuple) else value
    return from_dict(cls, values)


def _add_missing(parent: CfgNode, name: str, node: CfgNode) -> None:
    """Add ``node`` as ``parent[name]``, or only its missing keys when the host already has such a node."""
    if name not in parent:
        setattr(parent, name, node)
        return
    for key, value in node.items():
        if key not in parent[name]:
            parent[name][key] = value


def _trainer_nodes(nodes: dict[str, str], cfg: CfgNode) -> None:
    for name, method in nodes.items():
        runtime = {PRECISION_KEY: DEFAULT_PRECISION, CUDA_GRAPH_KEY: True, OWN_ATTENTION_KEY: False}
        runtime[FP16_LEARNED_KEY] = False
        _add_missing(cfg.TRAINER, name, dataclass_to_node(METHODS[method].config_class, runtime))


def lamm_nodes_of(trainer: str) -> tuple[str, ...]:
    """The ``TRAINER`` nodes of this package that trainer ``trainer`` reads: ``("LAMM_COOP", "LAMM")`` for
    ``LAMM_CoOp``; none for another trainer (a host's own ``CoOp``)."""
    node = str(trainer).upper()
    return (node, LAMM_NODE) if node in LAMM_NODES else ()


def require_trainer_nodes(cfg: CfgNode, nodes: tuple[str, ...]) -> None:
    """Make sure ``cfg.TRAINER`` holds ``nodes``: put back those a host removed (Dassl's ``clean_cfg``) from the
    node objects the config kept, with every value the user set.

    Raises:
        ConfigKeyError: A node is missing and no copy of it was kept (a config not made from Dassl's defaults after
            ``import lamm_plugin.dassl``); the message names the node and the remedy.
    """
    if isinstance(cfg, SuggestingCfgNode):
        cfg.restore_lamm_nodes(nodes)
    missing = [f"TRAINER.{node}" for node in nodes if node not in cfg.TRAINER]
    if missing:
        raise ConfigKeyError(
            f"{', '.join(missing)} not in the config of {cfg.TRAINER.get('NAME', 'this trainer')}: the config was "
            "made before `import lamm_plugin.dassl` ran (or is a copy that kept none of its nodes), so the LAMM "
            "settings are unknown; import lamm_plugin.dassl before the host calls get_cfg_default()"
        )


def cache_node() -> CfgNode:
    """The ``LAMM_CACHE`` node with its defaults: the cache folder and one switch per kind of cached tensor.

    ``DIR``: the cache folder; ``""`` picks ``$LAMM_CACHE_DIR``, else ``<DATASET.ROOT>/.lamm_cache``.
    ``TEST_FEATURES``: keep the image features of evaluation sets (methods whose image tower takes no prompts).
    ``TEXT_FEATURES``: keep frozen CLIP's text features of fixed prompts (PromptSRC, KgCoOp, zero-shot CLIP).
    ``DECODED_IMAGES``, ``DECODED_MAX_MB``: keep the decoded training images in memory, up to that many MB.
    """
    return CfgNode(
        {"DIR": "", "TEST_FEATURES": True, "TEXT_FEATURES": True, DECODED_IMAGES_KEY: True, DECODED_MAX_MB_KEY: 4096}
    )


#: ``DATASET.<key>``: True lets a run train on images that are also in the split it is scored on.
OVERLAP_KEY = "ALLOW_TRAIN_TEST_OVERLAP"


def add_lamm_config(cfg: CfgNode) -> CfgNode:
    """Add the LAMM nodes (``TRAINER.LAMM_*``, ``TRAINER.LAMM``, ...) to ``cfg`` in place; idempotent.

    Existing keys are kept, so calling it after a host's ``extend_cfg`` or twice changes nothing.

    Args:
        cfg: A Dassl config (e.g. ``get_cfg_default()``), not frozen.

    Returns:
        ``cfg``.
    """
    _trainer_nodes(LAMM_NODES, cfg)
    _add_missing(cfg.TRAINER, LAMM_NODE, dataclass_to_node(LAMMConfig))
    if "SUBSAMPLE_CLASSES" not in cfg.DATASET:
        cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    if OVERLAP_KEY not in cfg.DATASET:  # training on images of the split scored is refused unless this is True
        cfg.DATASET[OVERLAP_KEY] = False
    if isinstance(cfg.MODEL.BACKBONE.get("PRETRAINED"), bool) or "PRETRAINED" not in cfg.MODEL.BACKBONE:
        cfg.MODEL.BACKBONE.PRETRAINED = None
    if "ALLOW_OTHER_WEIGHTS" not in cfg.MODEL.BACKBONE:
        cfg.MODEL.BACKBONE.ALLOW_OTHER_WEIGHTS = False
    _add_missing(cfg, CACHE_NODE, cache_node())
    return cfg


def add_baseline_config(cfg: CfgNode) -> CfgNode:
    """Add the nodes of this repository's baselines (``TRAINER.COOP``, ...) to ``cfg`` in place; idempotent."""
    _trainer_nodes(BASELINE_NODES, cfg)
    return cfg


def method_config_from_cfg(cfg: CfgNode, node: str) -> Any:
    """The method dataclass (e.g. :class:`~lamm_plugin.methods.coop.CoOpConfig`) of trainer node ``node``."""
    method = {**LAMM_NODES, **BASELINE_NODES}[node]
    return _checked(f"TRAINER.{node}", lambda: node_to_dataclass(cfg.TRAINER[node], METHODS[method].config_class))


def lamm_config_from_cfg(cfg: CfgNode) -> LAMMConfig:
    """:class:`~lamm_plugin.config.LAMMConfig` from ``cfg.TRAINER.LAMM``."""
    return _checked(f"TRAINER.{LAMM_NODE}", lambda: node_to_dataclass(cfg.TRAINER[LAMM_NODE], LAMMConfig, ignore=()))


def _checked(node: str, build: Any) -> Any:
    """``build()``; a value the dataclass refuses becomes a :class:`UserError` naming the config node."""
    try:
        return build()
    except (ValueError, TypeError) as err:
        raise UserError(f"{node}: {err} (set it in the config file or as a KEY VALUE override)") from err


def all_keys(node: CfgNode, prefix: str = "", nodes: bool = False) -> list[str]:
    """Every full leaf key of ``node`` (``"TRAINER.LAMM_COOP.N_CTX"``, ...), and with ``nodes`` the node paths."""
    keys = []
    for key, value in node.items():
        full = f"{prefix}{key}"
        if isinstance(value, CfgNode):
            keys += ([full] if nodes else []) + all_keys(value, full + ".", nodes)
        else:
            keys.append(full)
    return keys


class ConfigKeyError(UserError, KeyError):
    """A config key that does not exist; the message names it and its closest matches."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigFileError(UserError):
    """A config file that is not valid YAML, or not a mapping of keys; the message names the file and line."""


def _yaml_problem(filename: str, err: yaml.YAMLError) -> ConfigFileError:
    """``file, line L, column C: problem (context at line L')`` from PyYAML's error, which names no file."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context:
        problem += f" ({context}" + (f" at line {context_mark.line + 1})" if context_mark is not None else ")")
    return ConfigFileError(f"{filename}{where}: invalid YAML: {problem}")


def _top_level_type(text: str) -> Optional[str]:
    """The type name of what a yaml text holds when it is neither a mapping nor empty, else None."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return None if data is None or isinstance(data, dict) else type(data).__name__


_MISSING_KEY = re.compile(r"Non-existent (?:config )?key: ([\w.-]+)")
_TYPE_MISMATCH = re.compile(
    r"Type mismatch \(<class '(\w+)'> vs\. <class '(\w+)'>\) with values \((.*) vs\. (.*)\) for config key: ([\w.]+)"
)
_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "True or False",
               "tuple": "a list", "list": "a list"}  # fmt: skip
#: Similarity above which a key is suggested (mean of node-path and leaf-name similarity).
_SUGGEST_CUTOFF = 0.75


def _similarity(bad_key: str, key: str) -> float:
    # Node path and leaf name count equally, so a typo in either is found even when the other part is long.
    bad_node, _, bad_leaf = bad_key.rpartition(".")
    node, _, leaf = key.rpartition(".")
    return (
        0.5 * difflib.SequenceMatcher(None, bad_node, node).ratio()
        + 0.5 * difflib.SequenceMatcher(None, bad_leaf, leaf).ratio()
    )


def close_keys(bad_key: str, root: CfgNode, n: int = 3) -> list[str]:
    """Up to ``n`` existing full keys or node paths of ``root`` most similar to ``bad_key``, best first.

    yacs reports a mistyped node (``TRAINER.LAM``) when merging a file and the whole key when merging a list, so
    both kinds of path are candidates.
    """
    scored = sorted(((_similarity(bad_key, key), key) for key in all_keys(root, nodes=True)), key=lambda x: -x[0])
    return [key for score, key in scored[:n] if score >= _SUGGEST_CUTOFF]


def _suggest(bad_key: str, root: CfgNode, source: str = "") -> ConfigKeyError:
    close = close_keys(bad_key, root)
    hint = f" Did you mean: {', '.join(close)}?" if close else " No similar key exists."
    where = f" ({source})" if source else ""
    return ConfigKeyError(f"Unknown config key {bad_key}{where}.{hint}")


class SuggestingCfgNode(CfgNode):
    """The root of a config made from Dassl's defaults: merges report an unknown key with its closest matches, and
    the ``TRAINER.LAMM*`` nodes survive Dassl's ``clean_cfg``.

    yacs says only ``Non-existent config key: X``; this adds the similar existing keys. Behaviour is otherwise
    unchanged (same class hierarchy, same merge code). Only the root has this class, and the nodes it creates
    while merging are plain ``CfgNode`` objects, because yacs compares node types exactly.

    The root keeps a reference to each ``TRAINER.LAMM*`` node object (:meth:`keep_lamm_nodes`, outside its keys:
    ``print(cfg)`` and ``dump()`` do not show it; ``clone()`` copies it along, still the same objects as the
    clone's nodes, and ``freeze()`` freezes it). :meth:`restore_lamm_nodes` puts back those a host popped: all of
    them before each merge (DePT cleans before merging its yaml files), the named trainer's when the config is
    frozen (Dassl's ``tools/train.py`` cleans after the merges, then freezes).
    """

    def keep_lamm_nodes(self) -> None:
        """Keep a reference to each ``TRAINER.LAMM*`` node object of this config."""
        kept = CfgNode()
        for name in (*LAMM_NODES, LAMM_NODE):
            if name in self.TRAINER:
                kept[name] = self.TRAINER[name]  # item assignment: the same object, not a copy
        self.__dict__[_KEPT_NODES] = kept

    def restore_lamm_nodes(self, names: Optional[tuple[str, ...]] = None) -> list[str]:
        """Put back into ``TRAINER`` the kept nodes (all of them, or ``names``) that are missing; returns their names.

        Dassl's ``clean_cfg`` pops nodes whether or not the config is frozen, so they are put back either way (as
        the same objects, frozen where the config is).
        """
        kept = self.__dict__.get(_KEPT_NODES, {})
        restored = [name for name in (kept if names is None else names) if name in kept and name not in self.TRAINER]
        for name in restored:
            dict.__setitem__(self.TRAINER, name, kept[name])
        if restored:
            logger.debug("Put back TRAINER.%s, removed by the host", ", TRAINER.".join(restored))
        return restored

    def freeze(self) -> None:
        self.restore_lamm_nodes(lamm_nodes_of(self.TRAINER.get("NAME", "")))
        super().freeze()

    @classmethod
    def load_cfg(cls, cfg_file_obj_or_str: Any) -> CfgNode:
        return CfgNode.load_cfg(cfg_file_obj_or_str)

    @classmethod
    def _decode_cfg_value(cls, value: Any) -> Any:
        return CfgNode._decode_cfg_value(value)

    def _merge(self, merge, source: str, *args: Any) -> None:
        """``merge(*args)``; an unknown key or a value of the wrong type raises a :class:`UserError` that names
        ``source`` (the file or the command line the value came from)."""
        self.restore_lamm_nodes()
        try:
            merge(*args)
        except (KeyError, AssertionError, ValueError) as err:
            if isinstance(err, UserError):
                raise
            text = str(err)
            match, mismatch = _MISSING_KEY.search(text), _TYPE_MISMATCH.search(text)
            if match is not None:
                raise _suggest(match.group(1), self, source) from err
            if mismatch is not None:
                wanted, _, old, new, key = mismatch.groups()
                kind = _TYPE_WORDS.get(wanted, f"a {wanted}")
                raise UserError(f"{key} {new} ({source}): {key} takes {kind}, like its default {old}.") from err
            if "odd length" in text:
                raise UserError(
                    f"The KEY VALUE overrides ({source}) come in pairs; got an odd number of words."
                ) from err
            raise

    def merge_from_file(self, cfg_filename: str) -> None:
        """Merge a yaml file; a file that does not parse raises :class:`ConfigFileError` naming it and the line.

        The file is read by :func:`~lamm_plugin.files.read_text` (a byte-order mark or CRLF line ends change
        nothing; a missing or non-UTF-8 file is named), and yacs parses its text, so PyYAML's own error says ``in
        "<unicode string>", line N`` without the file: the error names it.
        """
        text = read_text(cfg_filename, "config")
        try:
            self._merge(lambda: CfgNode.merge_from_other_cfg(self, self.load_cfg(text)), cfg_filename)
        except yaml.YAMLError as err:
            raise _yaml_problem(cfg_filename, err) from None
        except AttributeError:
            # yacs builds a node from whatever the file holds, and a list or a scalar fails inside yacs.
            found = _top_level_type(text)
            if found is None:
                raise
            raise ConfigFileError(f"{cfg_filename}: expected a mapping of config keys, found a {found}") from None

    def merge_from_other_cfg(self, cfg_other: CfgNode) -> None:
        self._merge(super().merge_from_other_cfg, "another config", cfg_other)

    def merge_from_list(self, cfg_list: list) -> None:
        self._merge(super().merge_from_list, "on the command line", cfg_list)


def dassl_default_cfg() -> CfgNode:
    """Dassl's default config object, which ``dassl.config.get_cfg_default()`` clones."""
    from dassl.config import defaults

    return defaults._C


def install(cfg: Optional[CfgNode] = None) -> CfgNode:
    """Add the LAMM nodes to Dassl's default config object and give it key suggestions.

    ``dassl.config.get_cfg_default()`` clones this object, so every config a host builds afterwards has our
    nodes. Called on ``import lamm_plugin.dassl``; idempotent.

    Args:
        cfg: The config to extend; Dassl's default object when None.

    Returns:
        The extended config.
    """
    if cfg is None:
        cfg = dassl_default_cfg()
    add_lamm_config(cfg)
    if type(cfg) is CfgNode:
        # Only the root's merge methods run on a merge (the nested nodes are merged from there), so swapping the
        # root's class is enough; clones keep the class.
        object.__setattr__(cfg, "__class__", SuggestingCfgNode)
    if isinstance(cfg, SuggestingCfgNode):
        cfg.keep_lamm_nodes()
    logger.debug("Added the LAMM config nodes to %s", type(cfg).__name__)
    return cfg
