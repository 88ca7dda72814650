"""Which parameters are a model's classifier head, for any model patchswap builds.

Fine-tuning treats the head (the layer that maps features to class logits) apart from the rest of the
network, the backbone: its own learning rate, a frozen backbone for the first epochs, a re-initialised
head when the classes change. :func:`classifier_names` finds the head generically:

* timm models: ``pretrained_cfg['classifier']`` (``fc``, ``classifier``, ``head``, ``head.fc``, or a
  tuple of names for distilled models), else the module ``get_classifier()`` returns;
* everything else (torchvision models and the CIFAR zoo, whose heads are ``fc`` or ``classifier``):
  the last ``nn.Linear`` registered, e.g. torchvision's ``fc``, ``classifier.3`` or ``heads.head``.

torch.compile's wrapper (``_orig_mod``) is looked through.
"""

from __future__ import annotations

from torch import nn

__all__ = ["classifier_names", "classifier_parameters", "split_head", "unwrap_compiled"]


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The module torch.compile wrapped (the model itself when it is not compiled)."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model


def _timm_head(model: nn.Module) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", None)
    names = cfg.get("classifier") if isinstance(cfg, dict) else None
    if isinstance(names, str):
        names = [names]
    found = []
    for name in names or []:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if any(True for _ in module.parameters()):
            found.append(name)
    if found:
        return found
    get = getattr(model, "get_classifier", None)
    if callable(get):
        head = get()
        for name, module in model.named_modules():
            if module is head and name and any(True for _ in module.parameters()):
                return [name]
    return []


def classifier_names(model: nn.Module) -> list[str]:
    """Qualified names of the classifier head's module(s) in ``model`` (see the module docstring)."""
    model = unwrap_compiled(model)
    names = _timm_head(model)
    if names:
        return names
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear) and name]
    if not linears:
        raise ValueError(
            f"cannot find the classifier head of {type(model).__name__}: it has no nn.Linear layer and no "
            "timm classifier; fine-tuning options (optim.backbone_lr_scale, optim.freeze_backbone_epochs, "
            "model.reset_classifier) need one"
        )
    return [linears[-1]]


def split_head(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """``(head, backbone)``: every named parameter of ``model``, split by :func:`classifier_names`.

    Names are those of the unwrapped model (no ``_orig_mod.`` prefix); frozen parameters are included.
    """
    model = unwrap_compiled(model)
    prefixes = tuple(name + "." for name in classifier_names(model))
    head, backbone = [], []
    for name, param in model.named_parameters():
        (head if name.startswith(prefixes) else backbone).append((name, param))
    return head, backbone


def classifier_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the classifier head."""
    return [p for _, p in split_head(model)[0]]
