"""Config keys as command-line flags: one ``--section.key`` per field, short forms, did-you-mean.

The flags and their ``--help`` come from the config dataclasses' field metadata, so a key is
documented once for YAML and the command line alike.
"""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn

__all__ = [
    "ALIASES",
    "COMPARE_ALIASES",
    "Parser",
    "add_aliases",
    "add_config_flags",
    "choice_flag",
    "field_help",
    "unrecognized",
]

# Short flags for the options people type most; each maps to a config key.
ALIASES = {
    "--data": "data.name",
    "--data-dir": "data.data_dir",
    "--download": "data.download",
    "--val-split": "data.val_split",
    "--batch-size": "data.batch_size",
    "--model": "model.name",
    "--method": "method",
    "--epochs": "trainer.epochs",
    "--seed": "trainer.seed",
    "--lr": "optim.lr",
    "--run-dir": "trainer.run_dir",
    "--accelerator": "trainer.accelerator",
    "--devices": "trainer.devices",
    "--precision": "trainer.precision",
}


BOOL_FLAGS = {"--download"}


# compare's quick form takes the short forms of keys that every run shares (not the run's own
# seed, method or directory: --seeds, --methods and --out say those).
COMPARE_ALIASES = tuple(f for f in ALIASES if f not in ("--method", "--seed", "--run-dir"))


class Parser(argparse.ArgumentParser):
    """argparse, but an unrecognised flag is reported by its command's parser with the closest valid
    flag, as an unknown YAML key is (``--optim.lrr`` -> did you mean '--optim.lr'?)."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            target = self._command_parser(parsed) or self
            target.error(unrecognized(extras, target))
        return parsed

    def error(self, message: str) -> NoReturn:
        """The error after the usage, in one line when the full usage is long (a command's lists
        every config key)."""
        usage = self.format_usage()
        if len(usage) > 400:
            usage = f"usage: {self.prog} [options] (see {self.prog} --help)\n"
        self.exit(2, f"{usage}{self.prog}: error: {message}\n")

    def _command_parser(self, parsed: argparse.Namespace) -> argparse.ArgumentParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(getattr(parsed, action.dest, None))
        return None


def unrecognized(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """``unrecognized arguments: ...`` with the closest valid flag of each unknown one."""
    from patchswap.config_base import did_you_mean

    flags = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    unknown = [arg.split("=", 1)[0] for arg in extras if arg.startswith("--")]
    hints = {name: did_you_mean(name, flags) for name in unknown}
    if "--set" in flags:  # compare and eval take config keys as --set KEY=VALUE, not as flags
        for name in unknown:
            if "." in name:
                hints[name] = f" (did you mean '--set {name[2:]}=VALUE'?)"
    text = f"unrecognized arguments: {' '.join(extras)}"
    if len(unknown) == 1 and hints[unknown[0]]:
        return text + hints[unknown[0]]
    said = [f"{name}: {hint.strip()[1:-1]}" for name, hint in hints.items() if hint]
    return text + (f" ({'; '.join(said)})" if said else "") + f"; see {parser.prog} --help"


def field_help(cls: type) -> dict[str, str]:
    """Field name -> its help text (the ``help`` in its metadata): one place documents a key for YAML,
    the flags and --help."""
    import dataclasses

    return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(cls)}


def _shown(default: Any) -> Any:
    """A default as it is typed on the command line (lists comma-separated)."""
    return ",".join(map(str, default)) if isinstance(default, list) else default


def _type_name(tp: Any) -> str:
    if tp is dict or getattr(tp, "__origin__", None) is dict:
        return "K=V,..."
    return re.sub(r"\btyping\.|<class '(\w+)'>", lambda m: m.group(1) or "", str(tp))


def add_config_flags(parser: argparse.ArgumentParser, factory: Any = None) -> None:
    """--config plus one --section.key flag per config field (RunConfig, or ``factory``'s class)."""
    import dataclasses

    from patchswap.engine.config import RunConfig, section_fields

    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE", help="YAML config (repeatable)"
    )
    defaults = (factory or RunConfig)()
    add_aliases(parser, defaults)
    group = parser.add_argument_group("choices")
    for key, text in defaults.top_level_help().items():
        group.add_argument(
            choice_flag(key),
            dest=f"cfg:{key}",
            default=argparse.SUPPRESS,
            metavar="NAME",
            help=f"{text} (default: {getattr(defaults, key)})",
        )
    for name, (default_obj, title) in defaults.flag_sections().items():
        cls = type(default_obj)
        group = parser.add_argument_group(title)
        helps = field_help(cls)
        types = section_fields(cls)
        for f in dataclasses.fields(cls):
            text = helps[f.name]
            shown = _shown(getattr(default_obj, f.name))
            group.add_argument(
                f"--{name}.{f.name}",
                dest=f"cfg:{name}.{f.name}",
                default=argparse.SUPPRESS,
                metavar=_type_name(types[f.name]).replace(" ", ""),
                help=f"{text} (default: {shown})" if text else f"(default: {shown})",
            )


def choice_flag(key: str) -> str:
    """The flag of a top-level choice: ``--method.name`` (``--method`` is its short form), ``--task``."""
    return f"--{key}.name" if key == "method" else f"--{key}"


def add_aliases(parser: argparse.ArgumentParser, defaults: Any, flags: Any = None) -> None:
    """The short forms in ALIASES (or those of ``flags``) whose key ``defaults``'s config has, each
    documented with the help and default of the key it sets."""
    short = parser.add_argument_group("common options (short forms of config keys)")
    choices = defaults.top_level_help()
    sections = defaults.sections()
    for flag in flags or ALIASES:
        key = ALIASES[flag]
        section, _, name = key.partition(".")
        if key in choices:
            target, text, default = choice_flag(key), choices[key], getattr(defaults, key)
        elif section in sections and hasattr(sections[section], name):
            target = f"--{key}"
            text = field_help(type(sections[section]))[name]
            default = _shown(getattr(sections[section], name))
        else:  # this config has no such key (transfer has no model.name): no short form
            continue
        if flag in BOOL_FLAGS:  # a switch: --download alone means true
            short.add_argument(
                flag,
                dest=f"cfg:{key}",
                action="store_const",
                const="true",
                default=argparse.SUPPRESS,
                help=f"= {target} true: {text}",
            )
        else:
            short.add_argument(
                flag,
                dest=f"cfg:{key}",
                default=argparse.SUPPRESS,
                metavar="V",
                help=f"= {target}: {text} (default: {default})",
            )
