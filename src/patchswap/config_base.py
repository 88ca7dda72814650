"""What every patchswap config shares: typed sections, YAML files, overrides, strict keys, help text.

A config is a dataclass of *sections* (dataclasses of typed fields) plus a few *top-level choices*
(``method``, ``task``). Each field carries its ``--help`` text in its metadata (declare it with
:func:`opt`), so the YAML schema, the ``--section.key`` flags and their help all come from the
dataclasses. Any key a config does not know is an error that suggests the closest valid one.

Free of Lightning and of the rest of patchswap: methods, data and models may raise
:class:`ConfigError` or declare options with :func:`opt` without reaching up into the engine.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Union

import yaml

__all__ = [
    "ConfigBase",
    "ConfigError",
    "apply_mapping",
    "did_you_mean",
    "field_help",
    "load_into",
    "opt",
    "parse_value",
    "section_fields",
    "unknown_key",
]


class ConfigError(ValueError):
    """A configuration problem the user must fix (unknown key, bad value, bad file)."""


def opt(
    default: Any = dataclasses.MISSING, doc: str = "", *, factory: Callable[[], Any] | None = None
) -> Any:
    """A dataclass field with its help text: ``lr: float = opt(0.05, "peak learning rate")``.

    ``factory`` instead of ``default`` for mutable defaults: ``opt(doc="...", factory=list)``.
    """
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": doc})
    return dataclasses.field(default=default, metadata={"help": doc})


def field_help(cls: type, name: str) -> str:
    """The help text of field ``name`` of dataclass ``cls`` ("" when it has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(name)


def section_fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def did_you_mean(name: str, valid: list[str] | tuple[str, ...]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or "" when none is close."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key(key: str, valid: list[str]) -> str:
    """The message for an unknown config key: the closest valid one, then all of them."""
    return f"unknown config key {key!r}{did_you_mean(key, valid)}; valid keys: {', '.join(valid)}"


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(raw: Any, tp: Any, key: str, *, from_text: bool = False) -> Any:
    """Coerce ``raw`` (YAML value, or command-line text when ``from_text``) to annotation ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw is None or (from_text and str(raw).lower() in ("none", "null", "")):
            if type(None) in typing.get_args(tp):
                return None
        for arg in sorted(args, key=lambda a: a is not int):  # int before float: "3" stays a count
            try:
                return parse_value(raw, arg, key, from_text=from_text)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: cannot read {raw!r} as {tp}")
    if origin is dict or tp is dict:
        return _parse_mapping(raw, key, from_text=from_text)
    if origin is list:
        (item,) = typing.get_args(tp)
        if from_text and isinstance(raw, str):
            raw = [p for p in raw.replace(" ", "").split(",") if p]
        if not isinstance(raw, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {raw!r}")
        return [parse_value(v, item, key, from_text=from_text) for v in raw]
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise ConfigError(f"{key} must be true or false, got {raw!r}")
    if tp is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{key} must be an integer, got {raw!r}")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer() and not from_text:
            return int(raw)
        if isinstance(raw, str):
            try:
                return int(raw)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {raw!r}")
    if tp is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{key} must be a number, got {raw!r}")
        if isinstance(raw, (int, float)):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {raw!r}")
    if tp is str:
        if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
            return str(raw)
        raise ConfigError(f"{key} must be a string, got {raw!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def _parse_mapping(raw: Any, key: str, *, from_text: bool) -> dict[str, Any]:
    """A mapping of names to plain values: a YAML mapping, or on the command line
    ``name=value,name=value`` (each value read as YAML: ``32`` an int, ``0.1`` a float, ``true`` a
    bool) or a YAML flow mapping ``{name: value}``; ``none`` or empty text is an empty mapping."""
    if from_text and isinstance(raw, str):
        text = raw.strip()
        if text.lower() in ("", "none", "null", "{}"):
            return {}
        if text.startswith("{"):
            try:
                raw = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ConfigError(f"{key}: cannot read {text!r} as a mapping: {e}") from None
        else:
            raw = {}
            for part in (p for p in text.split(",") if p.strip()):
                name, sep, value = part.partition("=")
                if not sep or not name.strip():
                    raise ConfigError(
                        f"{key} takes name=value pairs separated by commas "
                        f"(e.g. img_size=32,drop_path_rate=0.1), got {part!r}"
                    )
                raw[name.strip()] = yaml.safe_load(value.strip()) if value.strip() else None
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise ConfigError(f"{key} must be a mapping of names to values, got {raw!r}")
    return dict(raw)


class ConfigBase:
    """The interface of a config; subclasses are dataclasses that declare their sections.

    A subclass sets ``TOP_LEVEL`` (its top-level choices, e.g. ``("method",)``), ``SECTIONS`` (section
    name -> dataclass, each an attribute of the config) and ``CHOICE_HELP`` (top-level choice -> what
    it chooses), implements :meth:`choices` and :meth:`validate`, and may add sections
    (:meth:`sections`), leave some out of saved configs (:meth:`saved_sections`), title them for
    ``--help`` (:meth:`section_title`) and fill ``auto`` values (:meth:`resolved`).
    """

    TOP_LEVEL: ClassVar[tuple[str, ...]] = ()
    SECTIONS: ClassVar[dict[str, type]] = {}
    CHOICE_HELP: ClassVar[dict[str, str]] = {}

    # -- what the config holds ---------------------------------------------------------------------
    def choices(self, key: str) -> tuple[str, ...]:
        """The valid values of top-level choice ``key``."""
        raise NotImplementedError

    def sections(self) -> dict[str, Any]:
        """Section name -> section object, every section the config knows (saved or not)."""
        return {name: getattr(self, name) for name in self.SECTIONS}

    def saved_sections(self) -> list[str]:
        """The sections written by :meth:`to_dict` (default: all of them)."""
        return list(self.sections())

    def section_title(self, name: str) -> str:
        """The ``--help`` heading of a section."""
        return f"{name} options"

    def _section(self, name: str) -> Any:
        sections = self.sections()
        if name in sections:
            return sections[name]
        raise ConfigError(unknown_key(name, [*self.TOP_LEVEL, *sections]))

    # -- setting values ----------------------------------------------------------------------------
    def check_choice(self, key: str, value: str) -> None:
        """Raise :class:`ConfigError` unless ``value`` is a valid value of top-level choice ``key``."""
        valid = self.choices(key)
        if value not in valid:
            raise ConfigError(
                f"{key} must be one of {', '.join(valid)}, got {value!r}{did_you_mean(value, valid)}"
            )

    def set(self, dotted: str, raw: Any, *, from_text: bool = False) -> None:
        """Set ``section.key`` (or a top-level choice) to ``raw``, parsed from text when ``from_text``."""
        if dotted in self.TOP_LEVEL:
            self.check_choice(dotted, str(raw))
            setattr(self, dotted, str(raw))
            return
        section_name, _, key = dotted.partition(".")
        section = self._section(section_name)
        hints = section_fields(type(section))
        if key not in hints:
            raise ConfigError(unknown_key(f"{section_name}.{key}", [f"{section_name}.{k}" for k in hints]))
        setattr(section, key, parse_value(raw, hints[key], f"{section_name}.{key}", from_text=from_text))

    # -- checking ----------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` on a value the user must change. Never changes the config."""

    def resolved(self) -> ConfigBase:
        """A copy with ``auto`` values filled in (the config the run uses); this one is unchanged."""
        return copy.deepcopy(self)

    # -- reading and writing -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Top-level choices, then the saved sections, as plain YAML-ready values."""
        out: dict[str, Any] = {key: getattr(self, key) for key in self.TOP_LEVEL}
        sections = self.sections()
        for name in self.saved_sections():
            out[name] = dataclasses.asdict(sections[name])
        return out

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def top_level_help(self) -> dict[str, str]:
        """Top-level choice -> help text, for generating command-line flags."""
        return {
            key: f"{self.CHOICE_HELP.get(key, key)}: {', '.join(self.choices(key))}" for key in self.TOP_LEVEL
        }

    def flag_sections(self) -> dict[str, tuple[Any, str]]:
        """Section name -> (defaults object, --help title), for generating command-line flags."""
        return {name: (obj, self.section_title(name)) for name, obj in self.sections().items()}

    @classmethod
    def load(cls, paths: list[str | Path] | None = None, overrides: dict[str, Any] | None = None) -> Any:
        """Defaults, then each YAML file in order, then ``section.key -> text`` overrides; validated."""
        return load_into(cls(), paths, overrides)


def apply_mapping(cfg: Any, data: dict[str, Any], source: str) -> None:
    """Apply a parsed YAML mapping (top-level choices such as ``method``, then sections) to ``cfg``.

    A section's keys may also be written dotted at the top level (``optim.lr: 0.1``), as flags are.

    A saved config may hold sections the config no longer writes (older configs carry every
    method's options): they are read like any other known section.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    top = getattr(cfg, "TOP_LEVEL", ("method",))
    for key in top:  # first: choosing a method decides which sections exist
        if key in data:
            cfg.set(key, data[key])
    nested = {f"{name}.{key}" for name, body in data.items() if isinstance(body, dict) for key in body}
    for name, body in data.items():
        if name in top:
            continue
        if "." in name:  # a dotted key, as flags and study files spell it (data.name: folder:pics)
            if name in nested:
                raise ConfigError(f"{source}: {name} is given twice, dotted and in its section: keep one")
            cfg.set(name, body)
            continue
        cfg._section(name)  # unknown section -> error with suggestion
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping, got {body!r}")
        for key, value in body.items():
            cfg.set(f"{name}.{key}", value)


def load_into(
    cfg: ConfigBase, paths: list[str | Path] | None = None, overrides: dict[str, Any] | None = None
) -> Any:
    """Apply YAML files in order, then ``section.key -> text`` overrides, to ``cfg``.

    Returns the resolved config (``auto`` values filled in, see :meth:`ConfigBase.resolved`), validated.
    """
    for path in paths or []:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p} is not valid YAML: {e}") from e
        try:
            apply_mapping(cfg, data, str(p))
        except ValueError as e:
            raise ConfigError(f"{p}: {e}") from e
    for key, text in (overrides or {}).items():
        cfg.set(key, text, from_text=True)
    cfg = cfg.resolved()
    cfg.validate()
    return cfg
