"""Stage features of a classification backbone, cut with torchvision's FX feature extraction.

The classifier (zoo, timm or torchvision) is cut into its stages so functional ops of its ``forward``
(``F.relu``, a final BN-ReLU of pre-activation nets) are kept, unlike ``IntermediateLayerGetter`` which
only replays ``children()``. Channels and strides of each stage are measured by a dry run.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from patchswap.models.cifar_resnet import PreActResNet
from patchswap.models.wide_resnet import WideResNet

__all__ = ["SUPPORTED_FAMILIES", "DenseFeatures", "dense_features", "feature_extractor", "stage_nodes"]

# Side of the dry-run input that measures stage channels and strides (a multiple of 32: ImageNet
# ResNets still keep a 2x2 map at stride 32).
_PROBE_SIZE = 64
SUPPORTED_FAMILIES = (
    "ResNets with stages layer1..layerN (zoo resnet8..resnet110, resnet8x4/32x4, resnet18/34/50; "
    "torchvision resnet*/resnext*/wide_resnet*; timm resnet*/resnext*/seresnet*), "
    "zoo wide resnets (wrn_*: block1..block3), zoo preact_resnet18 (layers, grouped by resolution)"
)


class DenseFeatures(nn.Module):
    """Stage feature maps of a classifier: ``forward(x) -> OrderedDict("0": stage 1, ...)``.

    ``channels`` and ``strides`` (input pixels per feature pixel) are measured, one per returned stage.
    The FX graph shares its parameters with the classifier it was cut from.
    """

    def __init__(self, body: nn.Module, names: list[str], channels: list[int], strides: list[int]) -> None:
        super().__init__()
        self.body = body
        self.names = names
        self.channels = channels
        self.strides = strides
        self.out_channels = channels[-1]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        out = self.body(x)
        return OrderedDict((k, out[k]) for k in self.names)


def feature_extractor(model: nn.Module, stages: int | None = None) -> tuple[nn.Module, list[int], list[int]]:
    """``(extractor, channels, strides)`` for the stages of a ResNet-family classifier.

    Stage nodes are found by architecture: children ``layer1..layerN`` (torchvision, timm and zoo
    ResNets); the zoo's wide resnets (``block1..block3``) and pre-activation ResNet (``layers``, whose
    blocks are grouped into stages by output resolution). For the last two the last stage is the final
    BN-ReLU, i.e. exactly what the classifier pools. ``stages=k`` keeps the ``k`` deepest stages
    (detection heads usually skip the high-resolution first stage). Anything else: ValueError.
    """
    features = dense_features(model, stages)
    return features, list(features.channels), list(features.strides)


def dense_features(model: nn.Module, stages: int | None) -> DenseFeatures:
    """The :class:`DenseFeatures` of ``model``: its stages (the ``stages`` deepest), measured by a dry run."""
    from torchvision.models.feature_extraction import create_feature_extractor

    nodes = stage_nodes(model)
    if stages is not None:
        if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= len(nodes):
            raise ValueError(f"stages must be an integer in 1..{len(nodes)} for this model, got {stages!r}")
        nodes = nodes[-stages:]
    names = [str(i) for i in range(len(nodes))]
    body = create_feature_extractor(model, return_nodes=dict(zip(nodes, names, strict=True)))
    x = _probe_input(model)
    with _eval_mode(body), torch.no_grad():
        feats = body(x)
    channels = [int(feats[n].shape[1]) for n in names]
    strides = [_PROBE_SIZE // int(feats[n].shape[-1]) for n in names]
    return DenseFeatures(body, names, channels, strides)


def stage_nodes(model: nn.Module) -> list[str]:
    """The FX node names of ``model``'s stages, shallowest first; ValueError for an unsupported family."""
    children = dict(model.named_children())
    if isinstance(model, WideResNet):
        return ["block1", "block2", "relu"]  # relu(bn(block3)) is what the classifier pools
    if isinstance(model, PreActResNet):
        return _preact_nodes(model)
    layers = []
    while f"layer{len(layers) + 1}" in children:
        layers.append(f"layer{len(layers) + 1}")
    if layers:
        return layers
    raise ValueError(
        f"{type(model).__name__} is not a supported backbone for dense tasks; supported: {SUPPORTED_FAMILIES}"
    )


def _preact_nodes(model: PreActResNet) -> list[str]:
    """The last block of each resolution in ``model.layers``, then the final BN-ReLU."""
    sizes: list[int] = []
    hooks = [
        blk.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-1])) for blk in model.layers
    ]
    try:
        with _eval_mode(model), torch.no_grad():
            model(_probe_input(model))
    finally:
        for h in hooks:
            h.remove()
    ends = [i for i in range(len(sizes) - 1) if sizes[i + 1] != sizes[i]]
    return [f"layers.{i}" for i in ends] + ["relu"]


def _probe_input(model: nn.Module) -> Tensor:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(f"{type(model).__name__} has no convolution; supported: {SUPPORTED_FAMILIES}")
    return torch.zeros(1, conv.in_channels, _PROBE_SIZE, _PROBE_SIZE, device=conv.weight.device)


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode inside the block (a dry run must not touch BN statistics), the old mode after."""
    training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(training)
