"""One registry for every network the engine can train, plus pretrained-weights loading.

The CIFAR zoo lives in a single dict filled by the ``@register_model`` decorator, so adding an
architecture is one builder function and one decorator line. Anything else comes from timm or
torchvision through a ``"timm:"`` / ``"torchvision:"`` name prefix; those libraries are imported only
when such a name is asked for, so the zoo works without them. Pretrained weights come from a local file
(:func:`load_pretrained`) or from the hubs' caches (:mod:`patchswap.models.pretrained`, which reads the
spec, and :mod:`~patchswap.models.hub_timm` / :mod:`~patchswap.models.hub_torchvision`, which load).
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from patchswap.runs import COMPILED_PREFIX, MODEL_PREFIX, clean_key

from .heads import classifier_names
from .hub_timm import create_timm_pretrained
from .hub_torchvision import create_torchvision_pretrained
from .pretrained import TIMM_PREFIX, TORCHVISION_PREFIX, parse_pretrained, report_line

__all__ = [
    "ModelBuilder",
    "available_models",
    "check_model_kwargs",
    "create_model",
    "load_pretrained",
    "register_model",
]

ModelBuilder = Callable[..., nn.Module]
"""A zoo builder: ``builder(num_classes=..., in_chans=..., **kwargs) -> nn.Module``."""

_MODEL_REGISTRY: dict[str, ModelBuilder] = {}
logger = logging.getLogger("patchswap.models")

# Checkpoint key prefixes left by wrappers: a LightningModule holding ``self.model`` and DataParallel.
_WRAPPER_PREFIXES = (MODEL_PREFIX, "module.")
# How many offending keys an error message lists before eliding the rest.
_MAX_KEYS_SHOWN = 8


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator adding a zoo builder under ``name`` (lowercase); duplicate names are a bug, so raise."""
    key = name.strip().lower()
    if not key or ":" in key:
        raise ValueError(f"invalid model name {name!r}: must be non-empty and contain no ':'")

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if key in _MODEL_REGISTRY:
            raise ValueError(f"model {key!r} is already registered (by {_MODEL_REGISTRY[key].__module__})")
        _MODEL_REGISTRY[key] = builder
        return builder

    return decorator


def available_models() -> list[str]:
    """Sorted zoo names, followed by the two prefix patterns that reach timm and torchvision."""
    return sorted(_MODEL_REGISTRY) + [
        f"{TIMM_PREFIX}<any timm model>",
        f"{TORCHVISION_PREFIX}<any torchvision classification model>",
    ]


def create_model(
    name: str,
    num_classes: int,
    *,
    in_chans: int = 3,
    pretrained: str | Path | bool | None = None,
    reset_classifier: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a classifier returning logits ``[N, num_classes]``.

    ``name`` is a zoo name (see :func:`available_models`), ``"timm:<name>"`` or
    ``"torchvision:<name>"``. ``pretrained`` is a path to a local ``.safetensors`` / ``.pt`` / ``.ckpt``
    file whose tensors are loaded after building (a classifier whose size differs is skipped with a
    warning, so fine-tuning on a new label set works); ``True``/``"true"`` for a timm model (timm's hub
    download and cache); or a torchvision weights name (``"IMAGENET1K_V2"``, ``"DEFAULT"``) for a
    torchvision model. Hub weights get their classifier resized to ``num_classes`` and a one-line
    report of what was skipped (see :mod:`patchswap.models.pretrained`). ``reset_classifier``: a
    local file's classifier is never loaded, even when its shape fits (fine-tuning on other classes
    of the same count). Extra ``kwargs`` go to the zoo builder or to the timm/torchvision constructor.
    """
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_chans", in_chans)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    name = name.strip()
    spec = parse_pretrained(name, pretrained)
    hub = spec is not None and spec.source != "file"

    try:
        if name.lower().startswith(TIMM_PREFIX):
            model = _create_timm(name[len(TIMM_PREFIX) :], num_classes, in_chans, kwargs, hub=hub)
        elif name.lower().startswith(TORCHVISION_PREFIX):
            weights = spec.value if hub and spec is not None else None
            model = _create_torchvision(
                name[len(TORCHVISION_PREFIX) :], num_classes, in_chans, kwargs, weights
            )
        else:
            builder = _MODEL_REGISTRY.get(name.lower())
            if builder is None:
                raise ValueError(
                    f"unknown model {name!r}. Zoo models: {', '.join(sorted(_MODEL_REGISTRY))}. "
                    f"Any timm model is available as '{TIMM_PREFIX}<name>' (e.g. '{TIMM_PREFIX}resnet18') "
                    f"and any torchvision classification model as '{TORCHVISION_PREFIX}<name>' "
                    f"(e.g. '{TORCHVISION_PREFIX}resnet18')."
                )
            model = builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as e:
        refused = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if refused is None or refused.group(1) not in kwargs:
            raise  # anything else is not the user's keyword: keep the error and its traceback
        key = refused.group(1)
        raise ValueError(
            f"model {name!r} does not take model.kwargs {key}={kwargs[key]!r} ({e}); check the "
            "spelling against the model's constructor, or drop it"
        ) from e

    if spec is not None and spec.source == "file":
        load_pretrained(model, spec.value, reset_classifier=reset_classifier)
    return model


# Constructor arguments patchswap sets itself, and where a user sets them instead.
_SET_ELSEWHERE = {
    "num_classes": "comes from the data's classes",
    "in_chans": "comes from the data's channels",
    "pretrained": "is model.pretrained",
    "reset_classifier": "is model.reset_classifier",
}


def check_model_kwargs(kwargs: Mapping[str, Any]) -> None:
    """A ValueError naming the option to use when ``kwargs`` sets what patchswap sets itself."""
    reserved = sorted(set(kwargs) & _SET_ELSEWHERE.keys())
    if reserved:
        raise ValueError(
            f"model.kwargs may not set {', '.join(reserved)}: "
            + "; ".join(f"{k} {_SET_ELSEWHERE[k]}" for k in reserved)
        )


def _check_positive_int(what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")


# --------------------------------------------------------------------------- timm / torchvision


def _create_timm(
    arch: str, num_classes: int, in_chans: int, kwargs: dict[str, Any], *, hub: bool = False
) -> nn.Module:
    """timm sizes the head and the input stem itself; ``hub``: its pretrained weights (hub cache)."""
    if not arch:
        raise ValueError(f"empty timm model name; use '{TIMM_PREFIX}<name>', e.g. '{TIMM_PREFIX}resnet18'")
    try:
        import timm
    except ImportError as err:  # pragma: no cover - timm is an app dependency
        raise ValueError(f"'{TIMM_PREFIX}{arch}' needs timm installed (pip install timm)") from err
    try:
        if hub:
            return create_timm_pretrained(arch, num_classes, in_chans, kwargs)
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except RuntimeError as err:
        if "unknown model" in str(err).lower():
            raise ValueError(
                f"timm: {err}. Hint: list candidates with timm.list_models('*{arch.split('.')[0]}*')."
            ) from err
        raise


def _create_torchvision(
    arch: str, num_classes: int, in_chans: int, kwargs: dict[str, Any], weights: str | None = None
) -> nn.Module:
    """torchvision has no ``in_chans`` argument, so a non-RGB input gets its first conv rebuilt (from the
    pretrained kernel when ``weights`` names torchvision weights)."""
    if not arch:
        raise ValueError(
            f"empty torchvision model name; use '{TORCHVISION_PREFIX}<name>', "
            f"e.g. '{TORCHVISION_PREFIX}resnet18'"
        )
    try:
        import torchvision
    except ImportError as err:  # pragma: no cover - torchvision is an app dependency
        raise ValueError(f"'{TORCHVISION_PREFIX}{arch}' needs torchvision installed") from err
    if kwargs.pop("weights", None) is not None:
        raise ValueError(
            "pass torchvision weights as pretrained='IMAGENET1K_V1' (a weights name) or a local file, "
            "not as weights="
        )

    # Only top-level (classification) builders: detection/segmentation models take other arguments.
    classification = torchvision.models.list_models(module=torchvision.models)
    if arch.lower() not in classification:
        try:
            torchvision.models.get_model_builder(arch.lower())
            message = f"{arch!r} is a torchvision model but not an image classification model"
        except ValueError as err:
            message = str(err)
        raise ValueError(
            f"torchvision: {message}. Hint: torchvision.models.list_models(module=torchvision.models) "
            "lists the classification models."
        )
    if in_chans != 3 and kwargs.get("transform_input"):
        raise _transform_input_error(arch, in_chans)  # fail before paying for the build
    if weights is not None:
        model = create_torchvision_pretrained(arch, weights, num_classes, kwargs)
    else:
        model = torchvision.models.get_model(arch.lower(), weights=None, num_classes=num_classes, **kwargs)
    if in_chans != 3:
        _replace_input_conv(model, in_chans, arch)
    return model


def _replace_input_conv(model: nn.Module, in_chans: int, arch: str) -> None:
    """Swap the first RGB convolution for one reading ``in_chans`` channels, other settings unchanged.

    The new kernel is derived from the model's own initial kernel (channels summed for 1 channel, tiled
    and rescaled otherwise, as timm's ``adapt_input_conv`` does) so the model's init scheme is kept.
    """
    if getattr(model, "transform_input", False):
        raise _transform_input_error(arch, in_chans)
    first = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first[1].in_channels != 3 or first[1].groups != 1:
        raise ValueError(
            f"torchvision:{arch} does not start with a plain 3-channel nn.Conv2d, so in_chans={in_chans} "
            "is not supported for it; use in_chans=3 or a timm model (timm supports in_chans natively)"
        )
    path, old = first
    new = nn.Conv2d(
        in_chans,
        old.out_channels,
        kernel_size=old.kernel_size,  # type: ignore[arg-type]
        stride=old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        dilation=old.dilation,  # type: ignore[arg-type]
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    with torch.no_grad():
        weight = old.weight
        if in_chans == 1:
            new.weight.copy_(weight.sum(dim=1, keepdim=True))
        else:
            repeats = -(-in_chans // 3)
            new.weight.copy_(weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (3 / in_chans))
        if old.bias is not None:
            new.bias.copy_(old.bias)  # type: ignore[union-attr]
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, new)


def _transform_input_error(arch: str, in_chans: int) -> ValueError:
    return ValueError(
        f"torchvision:{arch} re-normalises RGB input (transform_input=True), so it cannot take "
        f"in_chans={in_chans}; pass transform_input=False or use another model"
    )


# --------------------------------------------------------------------------- local checkpoints


def _unreadable(file: Path, err: BaseException) -> str:
    return (
        f"pretrained weights file {str(file)!r} is corrupt or truncated ({type(err).__name__}: "
        f"{str(err)[:200]}); copy or download it again, or point model.pretrained at another file"
    )


def load_pretrained(model: nn.Module, path: str | Path, *, reset_classifier: bool = False) -> nn.Module:
    """Load a local checkpoint into ``model`` in place (and return it).

    Accepts a bare state_dict, or a dict holding it under ``"state_dict"`` (Lightning) or ``"model"``;
    a ``model.`` / ``module.`` prefix from wrapper modules and torch.compile's ``_orig_mod.`` are
    stripped. Tensors whose shape differs from the model's (typically the classifier after a
    label-set change) are skipped with a warning; any other missing or unexpected key is an error,
    because silently half-loading a backbone would only show up as poor accuracy much later.

    The classifier head (:func:`~patchswap.models.heads.classifier_names`) is skipped and left at its
    fresh initialisation when ``reset_classifier`` is set; when it is loaded because its shape fits,
    a warning says so (the classes may still differ).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {str(path)!r}")

    if file.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(file), device="cpu")
        except Exception as err:  # noqa: BLE001 - safetensors' own error type: the file is unusable
            raise ValueError(_unreadable(file, err)) from None
    else:
        try:
            raw = torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"{str(file)!r} could not be loaded safely with torch.load(weights_only=True): it is not a "
                "checkpoint or holds objects that are unsafe to unpickle; re-save just the tensors, e.g. "
                f"torch.save(model.state_dict(), path). torch said: {first_line}"
            ) from err
        except (OSError, RuntimeError, EOFError) as err:  # a zip archive cut short, or not one
            raise ValueError(_unreadable(file, err)) from None

    state = _extract_state_dict(raw, file)
    state = _strip_wrapper_prefix(state, model)

    own = model.state_dict()
    filtered = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    mismatched = [
        f"{k} (checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)})"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    head_keys = _head_keys(model, own, strict=reset_classifier)
    if reset_classifier:
        filtered = {k: v for k, v in filtered.items() if k not in head_keys}
    unexpected = [k for k in state if k not in own]
    # BatchNorm's step counter is not a learned quantity; older checkpoints lack it.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_shorten(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_shorten(unexpected)}")
        raise ValueError(
            f"checkpoint {str(file)!r} does not match the {type(model).__name__} architecture; "
            + "; ".join(parts)
            + ". Was it saved from a different model name or in_chans?"
        )
    same_shape_head = sorted(k for k in head_keys if k in state and own[k].shape == state[k].shape)
    skipped = []
    if mismatched:
        skipped.append(
            f"{len(mismatched)} tensor(s) with a different shape (left at their fresh initialisation): "
            f"{_shorten(mismatched)}"
        )
    if reset_classifier and same_shape_head:
        skipped.append(
            f"{len(same_shape_head)} classifier tensor(s) re-initialised (model.reset_classifier): "
            f"{_shorten(same_shape_head)}"
        )
    if skipped:
        warnings.warn(
            f"pretrained weights from {str(file)!r}: loaded {len(filtered)}/{len(state)} tensors; skipped "
            + "; ".join(skipped),
            stacklevel=2,
        )
    else:
        line = report_line(repr(str(file)), len(state), {})
        if same_shape_head:
            line += f" (classifier too: {_shorten(same_shape_head)}; model.reset_classifier resets it)"
        logger.info(line)
    model.load_state_dict(filtered, strict=False)
    return model


def _head_keys(model: nn.Module, own: Mapping[str, torch.Tensor], *, strict: bool) -> set[str]:
    """State-dict keys of the classifier head; none when it cannot be found (an error when ``strict``)."""
    try:
        prefixes = tuple(name + "." for name in classifier_names(model))
    except ValueError:
        if strict:
            raise
        return set()
    return {k for k in own if k.startswith(prefixes)}


def _extract_state_dict(raw: Any, file: Path) -> dict[str, torch.Tensor]:
    if isinstance(raw, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = raw.get(wrapper)
            if isinstance(inner, Mapping):
                raw = inner
                break
        tensors = {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise ValueError(
        f"{str(file)!r} holds no state_dict: expected a mapping of tensors, or a dict with one under "
        f"'state_dict' or 'model' (got {type(raw).__name__})"
    )


def _strip_wrapper_prefix(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Remove a ``model.``/``module.`` prefix the target model itself does not use.

    A LightningModule may hold more than ``self.model`` (an EMA copy, loss buffers); those keys do not
    belong to the network, so they are dropped with a warning rather than reported as unexpected.
    """
    own_keys = model.state_dict().keys()
    stripped = True
    while stripped:  # e.g. "model.module." from a Lightning module around a DataParallel model
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if any(k.startswith(prefix) for k in own_keys) or not any(k.startswith(prefix) for k in state):
                continue
            dropped = [k for k in state if not k.startswith(prefix)]
            if dropped:
                warnings.warn(
                    f"checkpoint keys are prefixed with {prefix!r}; ignoring {len(dropped)} key(s) outside "
                    f"it: {_shorten(dropped)}",
                    stacklevel=3,
                )
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            stripped = True
    if not any(COMPILED_PREFIX in k for k in own_keys):  # a torch.compile'd network's checkpoint
        state = {clean_key(k): v for k, v in state.items()}
    return state


def _shorten(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    return shown + (f", ... (+{len(keys) - _MAX_KEYS_SHOWN} more)" if len(keys) > _MAX_KEYS_SHOWN else "")
