"""The yacs nodes stay in step with the dataclasses; config files only override keys; typos are named."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed; it installs from its GitHub repository")

from cases import HOSTS  # noqa: E402
from dassl.config import get_cfg_default  # noqa: E402
from yacs.config import CfgNode  # noqa: E402

import lamm_plugin.dassl  # noqa: E402, F401
import trainers  # noqa: E402, F401
from lamm_plugin.config import LAMMConfig, official_preset  # noqa: E402
from lamm_plugin.dassl.config import (  # noqa: E402
    BASELINE_NODES,
    LAMM_NODES,
    ConfigFileError,
    ConfigKeyError,
    add_lamm_config,
    dataclass_to_node,
    lamm_config_from_cfg,
    method_config_from_cfg,
    node_to_dataclass,
)
from lamm_plugin.dassl.linear_probe import NODE as LINEAR_PROBE_NODE  # noqa: E402
from lamm_plugin.methods import METHODS  # noqa: E402

pytestmark = pytest.mark.dassl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINER_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "trainers", "*", "*.yaml")))
ALL_NODES = {**LAMM_NODES, **BASELINE_NODES}


def changed(instance):
    """A copy of a dataclass instance with every field set to a non-default value of the same type."""
    values = {}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if isinstance(value, bool):
            values[f.name] = not value
        elif isinstance(value, (int, float)):
            values[f.name] = value + 3
        elif f.name == "label_tokens":
            values[f.name] = "first_k"
        elif f.name == "class_token_position":  # validated: one of end, middle, front
            values[f.name] = "front"
        elif f.name == "label_slot":  # validated: name or after_context
            values[f.name] = "after_context"
        elif f.name in ("hand_crafted_precision", "teacher_precision"):  # validated: fp16/fp32 or run
            values[f.name] = "run"
        else:
            values[f.name] = value + " x"
    return dataclasses.replace(instance, **values)


@pytest.mark.parametrize("cls", [*(m.config_class for m in METHODS.values()), LAMMConfig], ids=lambda c: c.__name__)
def test_dataclass_node_round_trip(cls):
    for instance in (cls(), changed(cls())):
        node = dataclass_to_node(instance)
        assert list(node) == [f.name.upper() for f in dataclasses.fields(cls)]
        assert node_to_dataclass(node, cls) == instance


#: Published defaults (LAMM paper and official configs; CoOp, MaPLe and VPT's own defaults), written out in
#: tests/cases.py rather than read from the dataclasses the nodes are generated from.
PUBLISHED_DEFAULTS = {method: host.published for method, host in HOSTS.items()}
LAMM_DEFAULTS = {
    "ENABLED": True,
    "LABEL_TOKENS": "all",
    "SHOTS": 0,
    "PARAM_SCALE": 1.0,
    "FEATURE_WEIGHT": 1.0,
    "LOGIT_WEIGHT": 0.05,
    "TEMPERATURE": 2.0,
}


def test_nodes_and_trainers_are_named_as_the_hosts_name_them():
    """Host repositories and our yaml files name these nodes and trainers: derived from the registry, they must
    stay exactly the names written out in tests/cases.py."""
    from dassl.engine import TRAINER_REGISTRY

    assert {host.trainer.upper(): method for method, host in HOSTS.items()} == BASELINE_NODES
    assert {host.lamm_trainer.upper(): method for method, host in HOSTS.items() if host.lamm_trainer} == LAMM_NODES
    registered = set(TRAINER_REGISTRY.registered_names())
    for method, host in HOSTS.items():
        for name, node in ((host.trainer, host.trainer.upper()), (host.lamm_trainer, f"LAMM_{host.trainer.upper()}")):
            if name is None:
                continue
            trainer = TRAINER_REGISTRY.get(name)
            assert name in registered and (method, node) == (trainer.METHOD, trainer.NODE), name
            assert name.startswith("LAMM_") == trainer.USE_LAMM, name


@pytest.mark.parametrize("node", sorted(ALL_NODES))
def test_default_nodes_hold_the_published_defaults(node):
    cfg = get_cfg_default()
    cls = METHODS[ALL_NODES[node]].config_class
    runtime = {"PREC", "CUDA_GRAPH", "FP16_LEARNED", "OWN_ATTENTION"}
    assert set(cfg.TRAINER[node]) == {f.name.upper() for f in dataclasses.fields(cls)} | runtime
    assert cfg.TRAINER[node].CUDA_GRAPH is True and cfg.TRAINER[node].FP16_LEARNED is False
    assert cfg.TRAINER[node].OWN_ATTENTION is False
    for key, value in PUBLISHED_DEFAULTS[ALL_NODES[node]].items():
        assert cfg.TRAINER[node][key] == value, key
    for key, value in LAMM_DEFAULTS.items():
        assert cfg.TRAINER.LAMM[key] == value, key


def test_yaml_sets_every_lamm_key(tmp_path):
    target = changed(LAMMConfig())
    lines = ["TRAINER:", "  LAMM:"]
    for f in dataclasses.fields(target):
        value = getattr(target, f.name)
        lines.append(f"    {f.name.upper()}: {value!r}" if isinstance(value, str) else f"    {f.name.upper()}: {value}")
    path = tmp_path / "lamm.yaml"
    path.write_text("\n".join(lines) + "\n")
    cfg = get_cfg_default()
    cfg.merge_from_file(str(path))
    assert lamm_config_from_cfg(cfg) == target


def test_import_adds_nodes_to_dassl_defaults_and_keeps_host_values():
    cfg = get_cfg_default()
    for node in (*LAMM_NODES, "LAMM"):
        assert node in cfg.TRAINER
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all"
    # A tag or a local file replaces Dassl's bool default.
    cfg.merge_from_list(["MODEL.BACKBONE.PRETRAINED", "laion2b_s34b_b88k"])
    assert cfg.MODEL.BACKBONE.PRETRAINED == "laion2b_s34b_b88k"

    host = CfgNode({"TRAINER": {"LAMM_COOP": {"N_CTX": 4}}, "DATASET": {"SUBSAMPLE_CLASSES": "base"}, "MODEL": {}})
    host.MODEL.BACKBONE = CfgNode({"PRETRAINED": True})
    add_lamm_config(add_lamm_config(host))
    assert host.TRAINER.LAMM_COOP.N_CTX == 4 and host.TRAINER.LAMM_COOP.CTX_INIT == ""
    assert host.DATASET.SUBSAMPLE_CLASSES == "base" and host.MODEL.BACKBONE.PRETRAINED is None


def test_host_extend_cfg_then_merge(tmp_path):
    # Host repositories add plain nodes in extend_cfg and then merge their yaml files into the same config.
    cfg = get_cfg_default()
    cfg.TRAINER.COOP = CfgNode()
    cfg.TRAINER.COOP.N_CTX = 16
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    path = tmp_path / "host.yaml"
    path.write_text("TRAINER:\n  COOP:\n    N_CTX: 4\n  LAMM_COOP:\n    N_CTX: 8\nDATASET:\n  SUBSAMPLE_CLASSES: new\n")
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(["TRAINER.LAMM.SHOTS", "16"])
    cfg.merge_from_other_cfg(CfgNode({"OPTIM": {"MAX_EPOCH": 3}}))
    assert (cfg.TRAINER.COOP.N_CTX, cfg.TRAINER.LAMM_COOP.N_CTX, cfg.TRAINER.LAMM.SHOTS) == (4, 8, 16)
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "new" and cfg.OPTIM.MAX_EPOCH == 3


def test_lamm_nodes_survive_clean_cfg_before_and_after_the_merges():
    from dassl.config import clean_cfg

    # Cleaned before the merges (DePT): the nodes are back for the yaml files and the command line.
    cfg = get_cfg_default()
    clean_cfg(cfg, "COOP")
    assert not {"LAMM", "LAMM_MAPLE"} & set(cfg.TRAINER)
    cfg.merge_from_list(["TRAINER.LAMM.LOGIT_WEIGHT", "0.5", "TRAINER.LAMM_MAPLE.N_CTX", "3"])
    assert (cfg.TRAINER.LAMM.LOGIT_WEIGHT, cfg.TRAINER.LAMM_MAPLE.N_CTX) == (0.5, 3)

    # Cleaned after the merges (Dassl's tools/train.py), then frozen: the named trainer's nodes are back, with the
    # merged values, frozen with the config, and shown by print(cfg); dump() shows no bookkeeping.
    cfg = get_cfg_default()
    cfg.merge_from_list(["TRAINER.LAMM.LOGIT_WEIGHT", "0.5", "TRAINER.NAME", "LAMM_MaPLe"])
    copy = cfg.clone()
    clean_cfg(cfg, "LAMM_MaPLe")
    assert set(cfg.TRAINER) == {"NAME", "LAMM_MAPLE"}
    cfg.freeze()
    assert set(cfg.TRAINER) == {"NAME", "LAMM_MAPLE", "LAMM"} and cfg.TRAINER.LAMM.LOGIT_WEIGHT == 0.5
    assert cfg.TRAINER.LAMM.is_frozen() and "LOGIT_WEIGHT: 0.5" in str(cfg) and "KEPT" not in cfg.dump()
    # A clone keeps its own nodes: cleaned and frozen later, it gets back its own values, not the original's.
    copy.merge_from_list(["TRAINER.LAMM.LOGIT_WEIGHT", "0.25"])
    clean_cfg(copy, "LAMM_MaPLe")
    copy.freeze()
    assert (copy.TRAINER.LAMM.LOGIT_WEIGHT, cfg.TRAINER.LAMM.LOGIT_WEIGHT) == (0.25, 0.5)

    # A host's own trainer: clean_cfg keeps what it meant to keep (the LAMM nodes stay out of print(cfg)).
    cfg = get_cfg_default()
    cfg.TRAINER.NAME = "MaPLe"
    clean_cfg(cfg, "MaPLe")
    cfg.freeze()
    assert set(cfg.TRAINER) <= {"NAME", "MAPLE"}


@pytest.mark.parametrize(
    "bad, good, in_file",
    [
        ("TRAINER.LAMM_COOP.N_CTXX", "TRAINER.LAMM_COOP.N_CTX", "TRAINER.LAMM_COOP.N_CTX"),
        ("TRAINER.LAM.ENABLED", "TRAINER.LAMM.ENABLED", "TRAINER.LAMM"),
        ("TRAINER.LAMM.LOGIT_WIEGHT", "TRAINER.LAMM.LOGIT_WEIGHT", "TRAINER.LAMM.LOGIT_WEIGHT"),
        ("OPTIM.LRR", "OPTIM.LR", "OPTIM.LR"),
    ],
)
def test_typo_names_key_and_close_matches(bad, good, in_file, tmp_path):
    with pytest.raises(
        ConfigKeyError, match=rf"Unknown config key {bad} \(on the command line\)\. Did you mean: {good}[,?]"
    ):
        get_cfg_default().merge_from_list([bad, "1"])
    # From a file, yacs stops at the first missing level: a mistyped node is reported as the node.
    *nodes, leaf = bad.split(".")
    text = "".join(f"{'  ' * i}{n}:\n" for i, n in enumerate(nodes)) + f"{'  ' * len(nodes)}{leaf}: 1\n"
    (tmp_path / "typo.yaml").write_text(text)
    with pytest.raises(KeyError, match=rf"\({tmp_path / 'typo.yaml'}\)\. Did you mean: {in_file}[,?]"):
        get_cfg_default().merge_from_file(str(tmp_path / "typo.yaml"))  # the message names the file
    with pytest.raises(ConfigKeyError, match="No similar key"):
        get_cfg_default().merge_from_list(["XYZZY", "1"])


BROKEN_YAML = {
    # A value with a stray colon, 21 lines down (what a hand-edited config looks like).
    "stray-colon": (
        "".join(f"# comment {i}\n" for i in range(19)) + "DATASET:\n  NAME: Oxford: Pets\n  NUM_SHOTS: 1\n",
        21,
        "mapping values are not allowed here",
    ),
    "missing-colon": ("DATASET:\n  NAME: x\nOPTIM\n  LR: 0.1\n", 4, "could not find expected ':'"),
    "tab": ("DATASET:\n\tNAME: OxfordPets\n", 2, "found character '\\t' that cannot start any token"),
    "unclosed-quote": ('OPTIM:\n  NAME: "sgd\n', 3, "found unexpected end of stream"),
}


@pytest.mark.parametrize("which", ["dataset", "trainer"])
@pytest.mark.parametrize("case", sorted(BROKEN_YAML))
def test_yaml_syntax_error_names_file_line_and_problem(tmp_path, which, case):
    import train

    text, line, problem = BROKEN_YAML[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    option = "--dataset-config-file" if which == "dataset" else "--config-file"
    with pytest.raises(ConfigFileError) as e:
        train.setup_cfg(train.parse_args([option, str(path)]))
    msg = str(e.value)
    assert msg.startswith(f"{path}, line {line}, column ")
    assert problem in msg and "<unicode string>" not in msg
    assert len(msg.splitlines()) == 1
    assert e.value.__suppress_context__  # the short message is the whole report, not PyYAML's traceback


def test_yaml_that_is_not_a_mapping_names_the_file(tmp_path):
    import train

    path = tmp_path / "list.yaml"
    path.write_text("- DATASET.NAME\n- OxfordPets\n")
    with pytest.raises(ConfigFileError, match=rf"^{path}: expected a mapping of config keys, found a list$"):
        train.setup_cfg(train.parse_args(["--config-file", str(path)]))
    (tmp_path / "empty.yaml").write_text("# nothing set\n")
    assert train.setup_cfg(train.parse_args(["--config-file", str(tmp_path / "empty.yaml")])).DATASET.NAME == ""


def backbone_of(name: str) -> str:
    """The backbone a config's name gives, as CoOp names its configs (``rn50_ep50.yaml``: RN50; ``vit_b16*``)."""
    for prefix, backbone in (("rn50", "RN50"), ("rn101", "RN101"), ("vit_b32", "ViT-B/32")):
        if name in (f"{prefix}.yaml",) or name.startswith(f"{prefix}_"):
            return backbone
    return "ViT-B/16"


@pytest.mark.parametrize("path", TRAINER_CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_trainer_configs_only_override_existing_keys(path):
    cfg = get_cfg_default()
    cfg.merge_from_file(path)  # raises on a key that does not exist
    trainer = os.path.basename(os.path.dirname(path))
    node = trainer.upper()
    assert node in ALL_NODES or node == LINEAR_PROBE_NODE  # a method's node, or the linear probe's own
    # The file configures its own trainer's node (and TRAINER.LAMM), nothing else.
    default = get_cfg_default()
    touched = {k for k in cfg.TRAINER if cfg.TRAINER[k] != default.TRAINER[k]}
    assert touched <= {node, "LAMM"}
    assert cfg.TRAINER[node].PREC in ("fp16", "fp32", "bf16", "amp")
    assert node == LINEAR_PROBE_NODE or method_config_from_cfg(cfg, node) is not None
    name = os.path.basename(path)
    if name.startswith("demo_cpu"):
        assert cfg.MODEL.BACKBONE.NAME == "tiny-vit" and cfg.TRAINER[node].PREC == "fp32"
        assert tuple(cfg.INPUT.SIZE) == (32, 32) and (cfg.OPTIM.MAX_EPOCH <= 20 or trainer == "ZeroshotCLIP")
    else:
        assert (cfg.MODEL.BACKBONE.NAME, tuple(cfg.INPUT.SIZE)) == (backbone_of(name), (224, 224))
    if "official" in name:
        assert lamm_config_from_cfg(cfg) == official_preset(ALL_NODES[node])
    elif trainer.startswith("LAMM_"):
        assert lamm_config_from_cfg(cfg) == LAMMConfig()


def _flat(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, CfgNode):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _set(cfg, key, value):
    *path, last = key.split(".")
    node = cfg
    for part in path:
        node = node[part]
    old = node[last]
    # The originals write 25 where our float keys hold 25.0 (yacs refuses to merge an int into a float key).
    node[last] = float(value) if isinstance(old, float) and isinstance(value, int) else value


with open(os.path.join(REPO, "tests", "fixtures", "original_configs.json")) as _f:
    ORIGINAL_CONFIGS = json.load(_f)["cases"]


def test_every_shipped_trainer_config_has_its_original():
    """A yaml we ship for a benchmark (not a ``demo_*`` config of ours) is compared with the config it reproduces."""
    shipped = {os.path.relpath(f, os.path.join(REPO, "configs", "trainers")) for f in
               glob.glob(os.path.join(REPO, "configs", "trainers", "*", "*.yaml"))}  # fmt: skip
    assert sorted(f for f in shipped if not os.path.basename(f).startswith("demo")) == sorted(ORIGINAL_CONFIGS)


@pytest.mark.parametrize("name", sorted(ORIGINAL_CONFIGS))
def test_trainer_config_equals_its_original_key_by_key(name):
    """Our yaml, merged over the defaults, equals the original yaml merged over the original's train.py defaults of
    its node: every key of the whole config, not only the keys either file writes. ``allowed`` names the keys that
    differ on purpose, each with its reason; ``extra`` the values a derived config adds to its original (a script's
    overrides); ``rename`` an original key our node spells otherwise (``null``: no counterpart), with its reason."""
    case = ORIGINAL_CONFIGS[name]
    rename = {key: target for key, (target, _why) in case.get("rename", {}).items()}
    ours = get_cfg_default()
    ours.merge_from_file(os.path.join(REPO, "configs", "trainers", name))
    theirs = get_cfg_default()
    values = {**case["defaults"]["values"], **{k: v for k, v in case["values"].items() if not k.startswith("TRAINER.")}}
    values.update({k: v for k, v in case["values"].items() if k.startswith("TRAINER.")})
    values.update(case["extra"].get("values", {}))
    node, our_node = f"TRAINER.{case['node']}.", f"TRAINER.{case['our_node']}."
    for key, value in values.items():
        if key in rename:
            if rename[key] is None:
                continue
            key = rename[key]
        key = our_node + key[len(node) :] if key.startswith(node) else key
        if isinstance(value, str) and key.startswith(("INPUT.SIZE", "OPTIM.WARMUP_CONS_LR")):
            value = eval(value) if key == "INPUT.SIZE" else float(value)  # yaml strings yacs would evaluate
        _set(theirs, key, value)
    a, b = _flat(ours), _flat(theirs)
    assert set(a) == set(b)
    differ = {k: (a[k], b[k]) for k in a if a[k] != b[k] and not (isinstance(a[k], tuple) and list(a[k]) == list(b[k]))}
    assert set(differ) == set(case["allowed"]), {k: v for k, v in differ.items() if k not in case["allowed"]}


def official_settings(trainer, name):
    cfg = get_cfg_default()
    cfg.merge_from_file(os.path.join(REPO, "configs", "trainers", trainer, name))
    return cfg


@pytest.mark.parametrize(
    "trainer, name, lr, epochs, batch",
    [
        ("LAMM_CoOp", "vit_b16_ep50_ctxv1.yaml", 0.002, 50, 32),
        ("LAMM_CoOp", "vit_b16_ep50_ctxv1_frozen.yaml", 0.002, 50, 32),
        ("LAMM_MaPLe", "vit_b16_c2_ep5_batch4_2ctx.yaml", 0.0035, 5, 4),
        ("LAMM_VPT", "vit_b16_c2_ep5_batch4_4.yaml", 0.0025, 5, 4),
        ("LAMM_CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1.yaml", 0.002, 10, 1),
        ("LAMM_CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1_official.yaml", 0.002, 10, 1),
        ("CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1.yaml", 0.002, 10, 1),
        ("LAMM_KgCoOp", "vit_b16_ep100_ctxv1.yaml", 0.002, 100, 128),
        ("LAMM_KgCoOp", "vit_b16_ep100_ctxv1_official.yaml", 0.002, 100, 128),
        ("KgCoOp", "vit_b16_ep100_ctxv1.yaml", 0.002, 100, 128),
    ],
)
def test_reference_settings(trainer, name, lr, epochs, batch):
    cfg = official_settings(trainer, name)
    o = cfg.OPTIM
    settings = {"optim": o.NAME, "lr": o.LR, "epochs": o.MAX_EPOCH, "batch": cfg.DATALOADER.TRAIN_X.BATCH_SIZE}
    assert settings == {"optim": "sgd", "lr": lr, "epochs": epochs, "batch": batch}
    assert (o.LR_SCHEDULER, o.WARMUP_EPOCH, o.WARMUP_TYPE, o.WARMUP_CONS_LR) == ("cosine", 1, "constant", 1e-5)
    assert (o.MOMENTUM, o.WEIGHT_DECAY) == (0.9, 5e-4)
    method = method_config_from_cfg(cfg, trainer.upper())
    if trainer == "LAMM_CoOp":
        assert method.ctx_init == "a photo of a" and method.train_ctx is ("frozen" not in name)
    elif trainer.endswith("CoCoOp"):
        assert (method.n_ctx, method.ctx_init, method.meta_reduction) == (4, "a photo of a", 16)
    elif trainer.endswith("KgCoOp"):
        assert (method.ctx_init, method.kg_weight, method.train_ctx) == ("a photo of a", 8.0, True)
    elif trainer == "LAMM_MaPLe":
        assert (method.n_ctx, method.prompt_depth) == (2, 9)
    else:
        assert (method.n_ctx_vision, method.prompt_depth_vision) == (8, 12)


@pytest.mark.e2e
def test_plugin_imports_nothing_of_dassl_and_registers_only_lamm_trainers():
    code = (
        "import sys, lamm_plugin\n"
        "assert not {'dassl', 'yacs'} & set(sys.modules), sorted(m for m in sys.modules if 'dassl' in m)\n"
        "from dassl.engine import TRAINER_REGISTRY\n"
        "from dassl.data.datasets import DATASET_REGISTRY\n"
        "trainers, datasets = set(TRAINER_REGISTRY.registered_names()), set(DATASET_REGISTRY.registered_names())\n"
        "import lamm_plugin.dassl\n"
        "print(sorted(set(TRAINER_REGISTRY.registered_names()) - trainers))\n"
        "print(sorted(set(DATASET_REGISTRY.registered_names()) - datasets))\n"
    )
    env = {**os.environ, "PYTHONPATH": REPO}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=os.path.dirname(REPO), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    expected = str(sorted(host.lamm_trainer for host in HOSTS.values() if host.lamm_trainer))
    assert out.stdout.split("\n")[:2] == [expected, "[]"]
