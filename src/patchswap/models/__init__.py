"""Model zoo: CIFAR networks from the distillation literature plus timm / torchvision by name.

``create_model("resnet18", num_classes=100)`` builds a zoo network; ``"timm:<name>"`` and
``"torchvision:<name>"`` reach those libraries; ``pretrained=`` takes a local file, ``True`` (timm's hub
cache) or a torchvision weights name, and :func:`pretrained_input` gives those weights' input size and
mean/std. Every model returns logits ``[N, num_classes]``.
Importing this package registers the zoo (each module decorates its builders with ``@register_model``).
"""

from patchswap.models import (  # noqa: F401  (imported for their @register_model side effects)
    cifar_resnet,
    mobilenetv2,
    shufflenetv2,
    vgg,
    wide_resnet,
)
from patchswap.models.heads import classifier_names, classifier_parameters, split_head
from patchswap.models.pretrained import PretrainedNotCachedError, PretrainedReport, pretrained_input
from patchswap.models.registry import (
    available_models,
    check_model_kwargs,
    create_model,
    load_pretrained,
    register_model,
)

__all__ = [
    "PretrainedNotCachedError",
    "PretrainedReport",
    "available_models",
    "check_model_kwargs",
    "classifier_names",
    "classifier_parameters",
    "create_model",
    "load_pretrained",
    "pretrained_input",
    "register_model",
    "split_head",
]
