"""The layering of the package: imports point down only (docs/architecture.md draws the layers).

Every import in a module counts, at the top or inside a function, since a late import is still a
dependency: a module of a lower layer that names a higher one cannot be used without it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "patchswap"

# torch (and numpy, yaml, safetensors) only: the op (its cell grid and its target companions), loss and
# sampler, their options, seeding, the run format, the config machinery and device names that every layer
# may use
CORE = (
    "ops",
    "cells",
    "swap_targets",
    "losses",
    "sampling",
    "ips_options",
    "seeding",
    "runs",
    "config_base",
    "devices",
)
LIBRARY = ("methods", "models", "data", "evaluation", "dense", "deploy")  # used by the engine, never using it
APP = ("engine", "study", "cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _modules(*top: str) -> list[Path]:
    paths: list[Path] = []
    for name in top:
        if (SRC / f"{name}.py").exists():
            paths.append(SRC / f"{name}.py")
        paths.extend(sorted((SRC / name).rglob("*.py")) if (SRC / name).is_dir() else [])
    return paths


def _offending(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in paths:
        for name in sorted(_imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    return bad


def test_the_layer_lists_name_every_part_of_the_package():
    parts = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.suffix == ".py" or p.is_dir()}
    parts -= {"__init__", "__pycache__"}
    assert parts <= set(CORE) | set(LIBRARY) | set(APP), "a new part of the package needs a layer here"


def test_the_core_depends_on_torch_alone():
    assert _offending(_modules(*CORE), ("lightning", "torchvision", "timm", "patchswap.engine")) == []
    upward = tuple(f"patchswap.{p}" for p in (*LIBRARY, *APP))
    assert _offending(_modules(*CORE), upward) == []


@pytest.mark.parametrize("part", LIBRARY)
def test_the_library_never_imports_the_engine_the_studies_or_the_cli(part):
    assert _offending(_modules(part), tuple(f"patchswap.{p}" for p in APP)) == []


@pytest.mark.parametrize("part", ["methods", "dense", "data", "models", "evaluation", "deploy"])
def test_methods_and_dense_parts_run_without_lightning(part):
    # A method (or a dense method) runs in a plain training loop: Lightning is the engine's business.
    assert _offending(_modules(part), ("lightning", "pytorch_lightning")) == []


def test_the_engine_never_imports_the_studies_or_the_cli():
    assert _offending(_modules("engine"), ("patchswap.study", "patchswap.cli")) == []
    assert _offending(_modules("study"), ("patchswap.cli",)) == []


def test_the_checker_sees_late_and_relative_imports(tmp_path):
    mod = SRC / "evaluation" / "suite.py"
    assert "patchswap.evaluation.calibration" in _imports(mod), "relative import resolved"
    assert _offending([mod], ("patchswap.evaluation.calibration",)), "and a forbidden one is reported"
