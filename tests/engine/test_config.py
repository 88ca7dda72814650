"""Run configuration: defaults, YAML then flags, strict keys and types, round trips."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml

from patchswap.config_base import field_help
from patchswap.engine.config import (
    SECTIONS,
    ConfigError,
    RunConfig,
    apply_mapping,
    load_config,
    parse_value,
    section_fields,
)
from patchswap.methods import available_methods, method_class


def _yaml(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


# -- defaults and precedence -------------------------------------------------------------------------
def test_defaults():
    cfg = load_config()
    assert cfg.to_dict() == RunConfig().to_dict()
    assert cfg.method == "ips"
    assert (cfg.data.name, cfg.data.batch_size, cfg.data.train_subset) == ("digits", 64, None)
    assert (cfg.model.name, cfg.optim.optimizer, cfg.optim.schedule) == ("resnet8", "sgd", "cosine")
    assert cfg.optim.milestones == [] and cfg.trainer.run_dir is None
    assert cfg.methods["ips"].prob == 0.5 and cfg.methods["ips"].grid == 2
    assert cfg.method_options is cfg.methods["ips"]
    # Every method has its own section in memory; a saved config holds the active method's only,
    # and every section has all its fields.
    assert set(cfg.methods) == set(available_methods()) and {"ce", "ips"} <= set(available_methods())
    assert set(cfg.to_dict()) == {"method", *SECTIONS, "ips"}
    assert set(cfg.to_dict()["ips"]) == {f.name for f in dataclasses.fields(cfg.methods["ips"])}
    for name, cls in SECTIONS.items():
        assert set(cfg.to_dict()[name]) == {f.name for f in dataclasses.fields(cls)}


def test_files_in_order_then_overrides(tmp_path):
    first = _yaml(
        tmp_path,
        "a.yaml",
        {
            "method": "ce",
            "optim": {"lr": 0.2, "momentum": 0.5},
            "trainer": {"epochs": 7},
            "ips": {"prob": 0.3},
        },
    )
    second = _yaml(tmp_path, "b.yaml", {"trainer": {"epochs": 9, "seed": 4}, "data": None})
    cfg = load_config([first, second], {"optim.lr": "0.3", "method": "ips", "ips.grid": "4"})
    assert cfg.optim.lr == 0.3  # the flag beats the file
    assert cfg.optim.momentum == 0.5  # the file beats the default
    assert (cfg.trainer.epochs, cfg.trainer.seed) == (9, 4)  # the later file beats the earlier one
    assert cfg.method == "ips" and cfg.method_options.prob == 0.3 and cfg.method_options.grid == 4
    assert cfg.optim.weight_decay == 5e-4 and cfg.data.batch_size == 64  # untouched defaults


def test_method_switch_selects_its_options():
    cfg = load_config(None, {"method": "ce", "ce.label_smoothing": "0.1"})
    assert cfg.method == "ce" and cfg.method_options.label_smoothing == 0.1


# -- unknown keys ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "typo", "suggestion"),
    [
        ({"optm": {"lr": 0.1}}, "optm", "optim"),
        ({"optim": {"lrr": 0.1}}, "optim.lrr", "optim.lr"),
        ({"trainer": {"epoch": 3}}, "trainer.epoch", "trainer.epochs"),
        ({"ips": {"prb": 0.2}}, "ips.prb", "ips.prob"),
        ({"trainr": {"epochs": 3}}, "trainr", "trainer"),
        ({"optim.lrr": 0.1}, "optim.lrr", "optim.lr"),
    ],
)
def test_unknown_yaml_key_suggests_the_closest(tmp_path, data, typo, suggestion):
    path = _yaml(tmp_path, "c.yaml", data)
    with pytest.raises(ConfigError) as e:
        load_config([path])
    msg = str(e.value)
    assert path in msg and repr(typo) in msg and f"did you mean {suggestion!r}" in msg


def test_unknown_override_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"did you mean 'data\.batch_size'"):
        load_config(None, {"data.batchsize": "32"})
    with pytest.raises(ConfigError, match="valid keys"):
        load_config(None, {"zzz.qqq": "1"})


def test_unknown_method_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="valid methods: " + ", ".join(available_methods())):
        load_config(None, {"method": "ipx"})
    with pytest.raises(ValueError, match="did you mean 'ips'"):
        load_config([_yaml(tmp_path, "m.yaml", {"method": "isp"})])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([tmp_path / "missing.yaml"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([_yaml(tmp_path, "bad.yaml", "optim: {lr: [0.1\n")])
    with pytest.raises(ConfigError, match="mapping"):
        load_config([_yaml(tmp_path, "list.yaml", "- 1\n- 2\n")])
    with pytest.raises(ConfigError, match="section 'optim' must be a mapping"):
        load_config([_yaml(tmp_path, "scalar.yaml", "optim: 0.1\n")])
    assert load_config([_yaml(tmp_path, "empty.yaml", "")]).to_dict() == RunConfig().to_dict()


# -- types -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("trainer.epochs", "abc"),
        ("trainer.epochs", "2.5"),
        ("trainer.epochs", "none"),
        ("trainer.progress_bar", "maybe"),
        ("optim.lr", "fast"),
        ("data.train_subset", "lots"),
        ("optim.milestones", "10,abc"),
        ("ips.detach_teacher", "2"),
    ],
)
def test_bad_values_name_the_key(key, text):
    with pytest.raises(ConfigError) as e:
        load_config(None, {key: text})
    assert key in str(e.value) and text.split(",")[-1] in str(e.value)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"trainer": {"epochs": True}}, "trainer.epochs"),
        ({"trainer": {"epochs": 2.5}}, "trainer.epochs"),
        ({"trainer": {"progress_bar": "maybe"}}, "trainer.progress_bar"),
        ({"optim": {"lr": [0.1]}}, "optim.lr"),
        ({"optim": {"milestones": 150}}, "optim.milestones"),
        ({"model": {"name": None}}, "model.name"),
    ],
)
def test_bad_yaml_values_name_the_key(tmp_path, data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config([_yaml(tmp_path, "t.yaml", data)])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("Yes", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("NO", False),
        ("off", False),
    ],
)
def test_bool_words(text, expected):
    assert load_config(None, {"trainer.deterministic": text}).trainer.deterministic is expected


@pytest.mark.parametrize(
    ("key", "says"),
    [("num_classes", "comes from the data"), ("reset_classifier", "is model.reset_classifier")],
)
def test_model_kwargs_may_not_set_what_patchswap_sets(key, says):
    with pytest.raises(ConfigError, match=f"may not set {key}: {key} {says}"):
        load_config(None, {"model.kwargs": f"{key}=1"})


def test_dotted_keys_in_yaml_as_flags_spell_them(tmp_path):
    data = {"optim.lr": 0.3, "data": {"batch_size": 16}, "ips.prob": 1}
    cfg = load_config([_yaml(tmp_path, "c.yaml", data)])
    assert (cfg.optim.lr, cfg.data.batch_size, cfg.methods["ips"].prob) == (0.3, 16, 1.0)
    both = _yaml(tmp_path, "both.yaml", {"optim.lr": 0.3, "optim": {"lr": 0.1}})
    with pytest.raises(ConfigError, match="optim.lr is given twice, dotted and in its section"):
        load_config([both])


def test_numbers_from_yaml_and_text(tmp_path):
    cfg = load_config([_yaml(tmp_path, "n.yaml", {"trainer": {"epochs": 3.0}, "optim": {"lr": 1}})])
    assert cfg.trainer.epochs == 3 and isinstance(cfg.trainer.epochs, int)
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert load_config(None, {"optim.weight_decay": "1e-4"}).optim.weight_decay == 1e-4


@pytest.mark.parametrize("word", ["none", "None", "null", ""])
def test_none_for_optional_fields(word):
    cfg = load_config(None, {"data.train_subset": "100", "model.pretrained": "w.pt"})
    assert cfg.data.train_subset == 100 and cfg.model.pretrained == "w.pt"
    cfg = load_config(None, {"data.train_subset": word, "model.pretrained": word, "trainer.run_dir": word})
    assert cfg.data.train_subset is None and cfg.model.pretrained is None and cfg.trainer.run_dir is None


def test_optional_number_keeps_counts_as_int(tmp_path):
    assert load_config(None, {"data.test_split": "0.25"}).data.test_split == 0.25
    count = load_config(None, {"data.test_split": "100"}).data.test_split
    assert count == 100 and isinstance(count, int)
    assert load_config([_yaml(tmp_path, "n.yaml", {"data": {"test_split": None}})]).data.test_split is None


def test_lists(tmp_path):
    cfg = load_config(None, {"optim.schedule": "multistep", "optim.milestones": "150,180,210"})
    assert cfg.optim.milestones == [150, 180, 210]
    assert load_config(None, {"optim.milestones": " 5, 9 ,"}).optim.milestones == [5, 9]
    from_yaml = load_config([_yaml(tmp_path, "l.yaml", {"optim": {"milestones": [10, 20]}})])
    assert from_yaml.optim.milestones == [10, 20]
    assert parse_value("", list[int], "k", from_text=True) == []


def test_multistep_needs_milestones():
    with pytest.raises(ConfigError, match="milestones"):
        load_config(None, {"optim.schedule": "multistep"})


@pytest.mark.parametrize(
    ("key", "text", "match"),
    [
        ("trainer.epochs", "0", "trainer.epochs"),
        ("data.batch_size", "0", "batch_size"),
        ("optim.optimizer", "lion", "optim.optimizer"),
        ("optim.schedule", "linear", "optim.schedule"),
        ("optim.lr", "0", "optim.lr"),
        ("trainer.limit_train_batches", "0", "limit_train_batches"),
        ("trainer.val_every_n_epochs", "0", "val_every_n_epochs"),
        ("trainer.val_every_n_epochs", "7", "divisor of trainer.epochs"),  # default epochs 30
    ],
)
def test_validation(key, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, {key: text})


# -- round trip ------------------------------------------------------------------------------------
def test_dump_then_load_round_trips(tmp_path):
    overrides = {
        "method": "ce",
        "data.train_subset": "123",
        "data.test_split": "0.3",
        "data.val_split": "50",
        "model.pretrained": "none",
        "optim.schedule": "multistep",
        "optim.milestones": "3,6",
        "optim.lr": "0.125",
        "trainer.epochs": "11",
        "trainer.progress_bar": "false",
        "trainer.run_dir": str(tmp_path / "run"),
        "ips.patch_size": "4",
        "ips.direction": "confident",
        "ce.label_smoothing": "0.1",
    }
    cfg = load_config(None, overrides)
    path = tmp_path / "config.yaml"
    cfg.dump(path)
    again = load_config([path])
    assert again.to_dict() == cfg.to_dict()
    assert again.data.val_split == 50 and isinstance(again.data.val_split, int)
    assert again.optim.milestones == [3, 6] and again.model.pretrained is None
    # And the default config too.
    RunConfig().dump(path)
    assert load_config([path]).to_dict() == RunConfig().to_dict()


def test_saved_config_holds_only_the_active_method(tmp_path):
    cfg = load_config(None, {"method": "ce", "ce.label_smoothing": "0.2", "ips.prob": "0.3"})
    saved = cfg.to_dict()
    assert list(saved) == ["method", *SECTIONS, "ce"] and saved["ce"] == {"label_smoothing": 0.2}
    cfg.dump(tmp_path / "config.yaml")
    assert set(yaml.safe_load((tmp_path / "config.yaml").read_text())) == {"method", *SECTIONS, "ce"}
    again = load_config([tmp_path / "config.yaml"])
    assert again.to_dict() == saved and again.method_options.label_smoothing == 0.2


def test_older_config_with_every_method_section_still_loads(tmp_path):
    """Configs saved before only the active method was kept carry all methods' sections."""
    old = RunConfig().to_dict()
    for name, opts in RunConfig().methods.items():
        old[name] = dataclasses.asdict(opts)
    old["method"] = "ce"
    old["ce"]["label_smoothing"] = 0.1
    old["ips"]["prob"] = 0.25
    assert set(old) == {"method", *SECTIONS, *available_methods()}
    from_yaml = load_config([_yaml(tmp_path, "old.yaml", old)])
    assert from_yaml.method_options.label_smoothing == 0.1 and from_yaml.methods["ips"].prob == 0.25
    from_dict = RunConfig()
    apply_mapping(from_dict, old, "checkpoint")  # how evaluation reads a checkpoint's config
    assert from_dict.to_dict() == from_yaml.to_dict()
    assert set(from_dict.to_dict()) == {"method", *SECTIONS, "ce"}


def test_validate_does_not_change_the_config():
    cfg = RunConfig()
    before = copy.deepcopy(cfg)
    cfg.validate()
    assert cfg == before


def test_transfer_validate_does_not_fill_in_the_arch():
    """``model.arch: auto`` is resolved into a copy when loading, never by ``validate``."""
    from patchswap.engine.transfer_config import TransferConfig

    cfg = TransferConfig(task="detect")
    before = copy.deepcopy(cfg)
    cfg.validate()
    assert cfg == before and cfg.model.arch == "auto" and cfg.resolved_arch() == "fasterrcnn"
    resolved = cfg.resolved()
    assert resolved.model.arch == "fasterrcnn" and cfg.model.arch == "auto"
    loaded = TransferConfig.load(None, {"task": "detect"})
    assert loaded.model.arch == "fasterrcnn" and loaded.to_dict()["model"]["arch"] == "fasterrcnn"
    assert list(loaded.to_dict()) == ["task", "method", "data", "model", "optim", "trainer", "ips"]


def test_every_config_field_has_help():
    """--help and the docs come from field metadata: no key may be left undocumented."""
    from patchswap.engine.transfer_config import SECTIONS as TRANSFER_SECTIONS

    classes = {
        **{f"run {n}": c for n, c in SECTIONS.items()},
        **{f"method {n}": method_class(n).Options for n in available_methods()},
        **{f"transfer {n}": c for n, c in TRANSFER_SECTIONS.items()},
    }
    for where, cls in classes.items():
        for f in dataclasses.fields(cls):
            assert field_help(cls, f.name).strip(), f"{where}.{f.name} has no help"


def test_every_field_parses_its_own_default_as_text():
    """What --help shows as a default can be typed back as a flag."""
    cfg = RunConfig()
    sections = {**{n: getattr(cfg, n) for n in SECTIONS}, **cfg.methods}
    for name, obj in sections.items():
        for key, tp in section_fields(type(obj)).items():
            default = getattr(obj, key)
            text = ",".join(map(str, default)) if isinstance(default, list) else str(default)
            assert parse_value(text, tp, f"{name}.{key}", from_text=True) == default, (name, key)


def test_compile_modes():
    from patchswap.engine.config import ConfigError, load_config

    cfg = load_config(None, {"model.compile_mode": "reduce-overhead"})
    assert cfg.model.compile_mode == "reduce-overhead"
    try:
        load_config(None, {"model.compile_mode": "fast"})
    except ConfigError as err:
        assert "reduce-overhead" in str(err)
    else:
        raise AssertionError("an unknown compile mode was accepted")


# -- model.kwargs: a mapping, in YAML and as a flag (issue 18) -------------------------------------------
def test_model_kwargs_from_flags_and_yaml_round_trip(tmp_path):
    flag = load_config(None, {"model.kwargs": "img_size=32, patch_size=4,drop_path_rate=0.1,act=gelu"})
    assert flag.model.kwargs == {"img_size": 32, "patch_size": 4, "drop_path_rate": 0.1, "act": "gelu"}
    assert load_config(None, {"model.kwargs": "{img_size: 32, global_pool: avg}"}).model.kwargs == {
        "img_size": 32,
        "global_pool": "avg",
    }
    assert load_config(None, {"model.kwargs": "none"}).model.kwargs == {}
    assert load_config().model.kwargs == {}
    path = _yaml(tmp_path, "m.yaml", {"model": {"kwargs": {"img_size": 32, "qkv_bias": False}}})
    from_yaml = load_config([path])
    assert from_yaml.model.kwargs == {"img_size": 32, "qkv_bias": False}
    saved = tmp_path / "saved.yaml"
    from_yaml.dump(saved)
    assert load_config([saved]).model.kwargs == {"img_size": 32, "qkv_bias": False}


@pytest.mark.parametrize(
    ("text", "match"),
    [("img_size", "name=value pairs"), ("{img_size: [", "cannot read"), ("=3", "name=value")],
)
def test_model_kwargs_bad_text_says_the_form(text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, {"model.kwargs": text})


def test_model_kwargs_in_yaml_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="model.kwargs must be a mapping"):
        load_config([_yaml(tmp_path, "bad.yaml", "model: {kwargs: [1, 2]}\n")])
