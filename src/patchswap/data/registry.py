"""Datasets by name: the registry behind :func:`~patchswap.data.build_data`.

A dataset is a name, a loader and optional aliases; a *prefixed* dataset (``npz:``, ``folder:``) takes
the text after its prefix as its argument (paths). ``register_dataset`` adds one, ``available_datasets``
lists them, and an unknown name fails with the valid names and the closest match. The built-in families
(:mod:`patchswap.data.sources`) register themselves when first needed, so this module imports none of
them. :class:`NameRegistry` is the lookup alone; the dense datasets (:mod:`patchswap.dense.registry`)
use it too.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = [
    "DatasetEntry",
    "DatasetNotFoundError",
    "DatasetRequest",
    "NameRegistry",
    "available_datasets",
    "dataset_entry",
    "register_dataset",
    "resolve_dataset",
]


class DatasetNotFoundError(FileNotFoundError, RuntimeError):
    """A named dataset's files are missing (catchable as FileNotFoundError or RuntimeError)."""


@dataclass(frozen=True)
class DatasetRequest:
    """What a loader gets: the dataset's registered ``name``, the ``argument`` after its prefix (``""``
    for a plain name) and the :func:`build_data` options that say where and how to load it.

    ``model_input`` is the pretrained model's ``(image_size, mean, std)`` (image folders use it where
    ``image_size`` is None); ``on_bad_image`` says what image folders do with unusable files."""

    name: str
    argument: str = ""
    data_dir: str | None = None
    download: bool = False
    image_size: int | None = None
    model_input: tuple[Any, ...] | None = None
    on_bad_image: str = "skip"


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset.

    ``loader(request)`` returns a loaded source (:mod:`patchswap.data.sources.base`). ``prefix`` makes
    the name a pattern (``npz:PATH``) whose argument is the text after it, shown as ``pattern`` in
    listings; ``claims(text)`` lets a bare argument (``a.npz``, a directory) select this entry.
    """

    name: str
    loader: Callable[[Any], Any]
    aliases: tuple[str, ...] = ()
    prefix: str | None = None
    pattern: str | None = None
    claims: Callable[[str], bool] | None = None
    summary: str = ""

    @property
    def label(self) -> str:
        """How listings show it: the pattern of a prefixed entry, else the name."""
        return self.pattern or self.name


E = TypeVar("E", bound=DatasetEntry)


class NameRegistry(Generic[E]):
    """Entries by lower-case name and alias, with prefix patterns and did-you-mean errors.

    ``builtins`` names the module whose import registers the built-in entries; it is imported on the
    first lookup, which keeps the registry free of imports of its own entries.
    """

    def __init__(self, kind: str, builtins: str | None = None) -> None:
        self.kind = kind
        self.builtins = builtins
        self._entries: dict[str, E] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = builtins is None

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self.builtins)  # type: ignore[arg-type]

    def add(self, entry: E, *, replace: bool = False) -> E:
        """Register ``entry``; a name or alias already taken is an error unless ``replace``."""
        self._load_builtins()
        key = entry.name.strip().lower()
        if not key or ":" in key or "," in key:
            raise ValueError(f"{self.kind} name {entry.name!r} must be non-empty without ':' or ','")
        keys = [key, *(a.strip().lower() for a in entry.aliases)]
        if not replace:
            taken = [k for k in keys if k in self._entries or k in self._aliases]
            if taken:
                raise ValueError(
                    f"{self.kind} name(s) {taken} already registered; pick another name or pass "
                    "replace=True to override the existing entry"
                )
        self._entries[key] = entry
        for alias in keys[1:]:
            self._aliases[alias] = key
        return entry

    def register(self, entry_type: type[E], name: str, loader: Callable | None, **fields: Any) -> Any:
        """Build an ``entry_type`` for ``loader`` and add it; without a loader, a decorator that does.

        ``fields`` are the entry's other fields (``replace`` passes through to :meth:`add`); a prefix
        without a pattern is shown as ``PREFIXARG``.
        """
        replace = bool(fields.pop("replace", False))
        if fields.get("prefix") and not fields.get("pattern"):
            fields["pattern"] = f"{fields['prefix']}ARG"
        fields["aliases"] = tuple(fields.get("aliases", ()))

        def add(fn: Callable) -> Callable:
            self.add(entry_type(name=name, loader=fn, **fields), replace=replace)
            return fn

        return add if loader is None else add(loader)

    def remove(self, name: str) -> None:
        """Unregister ``name`` and its aliases (tests and plugins that register temporarily)."""
        key = self._aliases.get(name.lower(), name.lower())
        self._entries.pop(key, None)
        self._aliases = {a: k for a, k in self._aliases.items() if k != key}

    def entries(self) -> list[E]:
        """Every entry in registration order."""
        self._load_builtins()
        return list(self._entries.values())

    def labels(self) -> list[str]:
        """Plain names first, then prefix patterns (``npz:PATH[,PATH...]``)."""
        entries = self.entries()
        return [e.name for e in entries if e.prefix is None] + [e.label for e in entries if e.prefix]

    def get(self, name: str) -> E:
        """The entry called ``name`` (or an alias of it), else a ValueError naming the closest match."""
        self._load_builtins()
        key = str(name).strip().lower()
        key = self._aliases.get(key, key)
        if key in self._entries:
            return self._entries[key]
        raise ValueError(self.unknown_message(name))

    def resolve(self, text: str) -> tuple[E, str]:
        """``(entry, argument)`` for a name, ``prefix:ARGUMENT``, or a bare argument an entry claims."""
        self._load_builtins()
        raw = str(text).strip()
        low = raw.lower()
        for entry in self._entries.values():
            if entry.prefix and low.startswith(entry.prefix.lower()):
                return entry, raw[len(entry.prefix) :].strip()
        key = self._aliases.get(low, low)
        if key in self._entries and self._entries[key].prefix is None:
            return self._entries[key], ""
        for entry in self._entries.values():
            if raw and entry.claims is not None and entry.claims(raw):
                return entry, raw
        raise ValueError(self.unknown_message(text))

    def unknown_message(self, name: object) -> str:
        names = self.labels()
        plain = [n for n in names if ":" not in n]
        candidates = plain + list(self._aliases) + [e.prefix for e in self._entries.values() if e.prefix]
        close = difflib.get_close_matches(str(name).strip().lower(), candidates, n=1, cutoff=0.6)
        hint = f" Did you mean {self._aliases.get(close[0], close[0])!r}?" if close else ""
        patterns = [f"{e.label} ({e.summary})" if e.summary else e.label for e in self.entries() if e.prefix]
        tail = f"; or the patterns {' and '.join(patterns)}" if patterns else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid names: {', '.join(plain)}{tail}"


DATASETS: NameRegistry[DatasetEntry] = NameRegistry("dataset", builtins="patchswap.data.sources")


def register_dataset(
    name: str,
    loader: Callable[[DatasetRequest], Any] | None = None,
    *,
    aliases: Sequence[str] = (),
    prefix: str | None = None,
    pattern: str | None = None,
    claims: Callable[[str], bool] | None = None,
    summary: str = "",
    replace: bool = False,
) -> Any:
    """Register a classification dataset so ``build_data(name)`` loads it; usable as a decorator.

    ``loader(request: DatasetRequest)`` returns a :class:`~patchswap.data.sources.base.MemorySource`
    (images in memory) or :class:`~patchswap.data.sources.folders.FolderSource`; :func:`build_data`
    then carves the splits and builds the bundle. ``prefix="name:"`` turns the name into a pattern whose
    argument is passed on as ``request.argument``.
    """
    return DATASETS.register(
        DatasetEntry,
        name,
        loader,
        aliases=aliases,
        prefix=prefix,
        pattern=pattern,
        claims=claims,
        summary=summary,
        replace=replace,
    )


def available_datasets() -> list[str]:
    """Names :func:`build_data` accepts: the plain names, then the path patterns."""
    return DATASETS.labels()


def dataset_entry(name: str) -> DatasetEntry:
    """The registered entry called ``name`` (or an alias); ValueError with a suggestion otherwise."""
    return DATASETS.get(name)


def resolve_dataset(text: str) -> tuple[DatasetEntry, str]:
    """``(entry, argument)`` for what a user typed: a name, ``npz:PATHS``, ``folder:DIR`` or a bare path."""
    return DATASETS.resolve(text)
