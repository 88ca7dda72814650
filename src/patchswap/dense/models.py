"""Transfer a patchswap classification backbone to torchvision's dense models.

The classifier (zoo, timm or torchvision; random or trained by ``patchswap train``) is cut into its
stages with torchvision's FX feature extraction, so functional ops of its ``forward`` (``F.relu``,
a final BN-ReLU of pre-activation nets) are kept, unlike ``IntermediateLayerGetter`` which only replays
``children()``. The stages then feed torchvision's own heads: DeepLabV3 / FCN for segmentation,
Faster R-CNN / RetinaNet on an FPN for detection, sized for small images (no upscaling to 800 px,
anchors proportional to the feature strides).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from patchswap.models import create_model
from patchswap.models.cifar_resnet import PreActResNet
from patchswap.models.registry import TIMM_PREFIX, TORCHVISION_PREFIX, available_models
from patchswap.models.wide_resnet import WideResNet
from patchswap.runs import (
    CONFIG_KEY,
    RUN_CHECKPOINTS,
    CheckpointError,
    load_checkpoint,
    locate_checkpoint,
    network_state,
    run_config_beside,
)

__all__ = [
    "DenseFeatures",
    "DenseModel",
    "LoadedBackbone",
    "SegmentationModel",
    "build_dense_model",
    "build_detection_model",
    "build_segmentation_model",
    "default_anchor_sizes",
    "feature_extractor",
    "load_backbone",
]

# Head size of a randomly initialised backbone: the classifier is discarded by the dense models.
_PLACEHOLDER_CLASSES = 10
# Side of the dry-run input that measures stage channels and strides (a multiple of 32: ImageNet
# ResNets still keep a 2x2 map at stride 32).
_PROBE_SIZE = 64
SUPPORTED_FAMILIES = (
    "ResNets with stages layer1..layerN (zoo resnet8..resnet110, resnet8x4/32x4, resnet18/34/50; "
    "torchvision resnet*/resnext*/wide_resnet*; timm resnet*/resnext*/seresnet*), "
    "zoo wide resnets (wrn_*: block1..block3), zoo preact_resnet18 (layers, grouped by resolution)"
)


# --------------------------------------------------------------------------- loading a backbone


class LoadedBackbone(NamedTuple):
    """A classifier to cut into stages, where its weights came from, and the model name that rebuilds
    its architecture (so a finished transfer run can be reloaded without the backbone's run)."""

    model: nn.Module
    origin: str
    name: str


class DenseModel(NamedTuple):
    """A segmentation or detection model, a description of its backbone's weights, and the backbone's
    model name."""

    model: nn.Module
    origin: str
    backbone_name: str


def load_backbone(spec: str | Path, *, in_chans: int) -> LoadedBackbone:
    """The classifier named by ``spec`` and where its weights came from.

    ``spec`` is, in this order: an existing run directory (``checkpoints/`` best.ckpt, best.safetensors,
    last.ckpt, last.safetensors, the first present), a checkpoint file (a ``.ckpt`` written by
    ``patchswap train``, which stores its config, or a ``.safetensors`` inside a run's ``checkpoints/``
    next to ``config.yaml``), or a model name (zoo, ``timm:NAME``, ``torchvision:NAME``) for a randomly
    initialised backbone. The run's class count and input channels are read from the weights themselves
    (the config names the dataset, not its shape), so no dataset has to be loaded; an ``in_chans`` that
    differs from the run's is an error, because the stem would not fit the new images.
    """
    text = str(spec).strip()
    path = Path(text).expanduser()
    if text and path.exists():
        return _load_from_path(path, in_chans)
    if _is_model_name(text):
        model = create_model(text, _PLACEHOLDER_CLASSES, in_chans=in_chans)
        return LoadedBackbone(model, f"{text} (random initialisation, in_chans={in_chans})", text)
    zoo = [m for m in available_models() if ":" not in m]
    raise FileNotFoundError(
        f"backbone {text!r} is neither an existing run directory or checkpoint file nor a model name "
        f"(zoo: {', '.join(zoo)}; or {TIMM_PREFIX}NAME / {TORCHVISION_PREFIX}NAME)"
    )


def _is_model_name(text: str) -> bool:
    lower = text.lower()
    if lower.startswith((TIMM_PREFIX, TORCHVISION_PREFIX)):
        return len(text.split(":", 1)[1]) > 0
    return lower in {m for m in available_models() if ":" not in m}


def _load_from_path(path: Path, in_chans: int) -> LoadedBackbone:
    path = locate_checkpoint(path, RUN_CHECKPOINTS)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
        config = run_config_beside(path)
        if config is None:
            raise CheckpointError(
                f"{path} holds bare weights and no config.yaml was found beside it (in its run directory); "
                "pass the run directory, its .ckpt, or a model name"
            )
    elif suffix in (".ckpt", ".pt", ".pth"):
        ckpt = load_checkpoint(path)
        config = ckpt.get(CONFIG_KEY)
        if not isinstance(config, dict):
            config = run_config_beside(path)
        if config is None:
            raise CheckpointError(
                f"{path} carries no patchswap config and no config.yaml was found beside it; was it written "
                "by patchswap train? Pass its run directory or a model name instead"
            )
        state = network_state(ckpt["state_dict"])
    else:
        raise ValueError(f"{path}: unknown checkpoint type {suffix!r}; expected .ckpt or .safetensors")

    model_cfg = config.get("model") or {}
    data_cfg = config.get("data") or {}
    name = model_cfg.get("name")
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"the config of {path} names no model (model.name)")
    data_name = data_cfg.get("name", "?")

    num_classes = _infer_size(name, "num_classes", state) or _PLACEHOLDER_CLASSES
    run_chans = _infer_size(name, "in_chans", state)
    if run_chans is not None and run_chans != in_chans:
        raise ValueError(
            f"{path} was trained on {run_chans}-channel images (data.name={data_name!r}) but the dense data "
            f"has in_chans={in_chans}; use a backbone trained on {in_chans}-channel images, or a model name "
            "for a fresh one"
        )
    model = create_model(name, num_classes, in_chans=in_chans)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit model {name!r}: {str(err)[:500]}") from err
    return LoadedBackbone(
        model, f"{name} trained on {data_name} ({num_classes} classes), weights from {path}", name
    )


def _infer_size(name: str, arg: str, state: dict[str, Tensor]) -> int | None:
    """The value of ``arg`` (num_classes / in_chans) a state dict was built with.

    Two models differing only in ``arg`` are built on the meta device (no memory, no init cost); the
    first tensor whose shape differs between them tells where ``arg`` shows up, and the checkpoint's
    size there is the answer. None when nothing depends on it or the key is absent.
    """
    a, b = ({"num_classes": 2, "in_chans": 3}, {"num_classes": 3, "in_chans": 3})
    if arg == "in_chans":
        a, b = ({"num_classes": 2, "in_chans": 1}, {"num_classes": 2, "in_chans": 2})
    try:
        with torch.device("meta"):
            sa = create_model(name, a["num_classes"], in_chans=a["in_chans"]).state_dict()
            sb = create_model(name, b["num_classes"], in_chans=b["in_chans"]).state_dict()
    except Exception:  # noqa: BLE001 - a builder that cannot run on meta: fall back to real tensors
        sa = create_model(name, a["num_classes"], in_chans=a["in_chans"]).state_dict()
        sb = create_model(name, b["num_classes"], in_chans=b["in_chans"]).state_dict()
    for key, ta in sa.items():
        tb = sb.get(key)
        if tb is None or ta.shape == tb.shape or key not in state or state[key].ndim != ta.ndim:
            continue
        dim = next(i for i, (x, y) in enumerate(zip(ta.shape, tb.shape, strict=True)) if x != y)
        return int(state[key].shape[dim])
    return None


# --------------------------------------------------------------------------- stage features


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
    features = _dense_features(model, stages)
    return features, list(features.channels), list(features.strides)


def _dense_features(model: nn.Module, stages: int | None) -> DenseFeatures:
    from torchvision.models.feature_extraction import create_feature_extractor

    nodes = _stage_nodes(model)
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


def _stage_nodes(model: nn.Module) -> list[str]:
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


# --------------------------------------------------------------------------- segmentation


class _LastStage(nn.Module):
    """torchvision's segmentation models read the backbone's ``"out"`` feature."""

    def __init__(self, features: DenseFeatures) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"out": self.features(x)[self.features.names[-1]]}


class SegmentationModel(nn.Module):
    """``forward(images) -> logits [N, K, H, W]`` at the input size, around a torchvision model.

    With ``image_mean``/``image_std`` the input is float images in [0, 1], normalised here per channel
    (as torchvision's detection models do); without, it must already be normalised.
    """

    def __init__(
        self,
        net: nn.Module,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.normalize = image_mean is not None
        if (image_mean is None) != (image_std is None):
            raise ValueError("give both image_mean and image_std, or neither")
        mean = torch.as_tensor(list(image_mean or [0.0]), dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.as_tensor(list(image_std or [1.0]), dtype=torch.float32).view(1, -1, 1, 1)
        if bool((std <= 0).any()):
            raise ValueError(f"image_std must be positive, got {list(image_std or [])}")
        self.register_buffer("image_mean", mean, persistent=False)
        self.register_buffer("image_std", std, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.normalize:
            if x.shape[1] != self.image_mean.shape[1]:
                raise ValueError(
                    f"images have {x.shape[1]} channels but image_mean/std have {self.image_mean.shape[1]}"
                )
            x = (x - self.image_mean) / self.image_std
        return self.net(x)["out"]


def build_segmentation_model(
    arch: str,
    num_classes: int,
    backbone: nn.Module,
    *,
    atrous_rates: Sequence[int] = (6, 12, 18),
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
) -> nn.Module:
    """DeepLabV3 or FCN (torchvision's heads and classes) on the backbone's last stage.

    ``atrous_rates`` default to DeepLabV3's output-stride-16 rates rather than torchvision's (12, 24, 36),
    which assume a dilated output-stride-8 ResNet on large images: small feature maps would see
    mostly padding. No auxiliary head. The result returns logits, not torchvision's dict.
    """
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    features = _dense_features(backbone, stages=1)
    channels = features.channels
    if arch == "deeplabv3":
        net: nn.Module = DeepLabV3(_LastStage(features), DeepLabHead(channels[-1], num_classes, atrous_rates))
    elif arch == "fcn":
        net = FCN(_LastStage(features), FCNHead(channels[-1], num_classes))
    else:
        raise ValueError(f"unknown segmentation arch {arch!r}; choose deeplabv3 or fcn")
    return SegmentationModel(net, image_mean, image_std)


# --------------------------------------------------------------------------- detection


class _BackboneWithFPN(nn.Module):
    """Stage features -> FPN, with the ``out_channels`` attribute torchvision's detectors read.

    torchvision's own BackboneWithFPN replays ``children()`` (IntermediateLayerGetter); this one runs the
    FX extractor so the classifier's forward is reproduced exactly.
    """

    def __init__(self, features: DenseFeatures, fpn: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.body = features
        self.fpn = fpn
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body(x))


def default_anchor_sizes(arch: str, strides: Sequence[int]) -> tuple[tuple[float, ...], ...]:
    """One anchor size per pyramid level proportional to its stride: ``4 * stride``.

    Faster R-CNN: one size per level, the extra max-pool level at twice the last stride. RetinaNet:
    torchvision's three octave scales ``4s * 2**(k/3)`` per level, P6/P7 at 2x and 4x the last stride
    (torchvision uses 32 at stride 8, i.e. the same 4*stride rule). With ratios 0.5/1/2 each.
    """
    if arch == "fasterrcnn":
        levels = [*strides, 2 * strides[-1]]
        return tuple((float(4 * s),) for s in levels)
    levels = [*strides, 2 * strides[-1], 4 * strides[-1]]
    return tuple(tuple(round(4 * s * 2 ** (k / 3), 2) for k in range(3)) for s in levels)


def build_detection_model(
    arch: str,
    num_classes: int,
    backbone: nn.Module,
    *,
    image_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    anchor_sizes: Sequence[Sequence[float]] | None = None,
    fpn_channels: int = 64,
    stages: int | None = None,
    representation_size: int = 256,
) -> nn.Module:
    """torchvision Faster R-CNN or RetinaNet on an FPN over the backbone's stages, for small images.

    ``num_classes`` includes background (label 0). Images are float in [0, 1] with ``image_mean`` /
    ``image_std`` in that scale (one value per channel; 1-channel images work), resized to
    ``min_size=max_size=image_size`` (no upscaling to torchvision's 800). ``stages`` defaults to all
    stages of stride 2 or more for Faster R-CNN (FPN + LastLevelMaxPool)
    and the 3 deepest for RetinaNet (FPN +
    LastLevelP6P7 from P5, torchvision's v1 convention). ``anchor_sizes``: one tuple per pyramid level,
    default :func:`default_anchor_sizes`. Faster R-CNN's box head is ``representation_size`` wide (256
    instead of 1024: small data) and its RoI level mapping is rescaled to the 4*stride anchors. Returns
    the torchvision model: train mode ``model(images, targets) -> losses``, eval ``-> detections``.
    """
    from torchvision.models.detection import FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.retinanet import RetinaNetHead
    from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

    if arch not in ("fasterrcnn", "retinanet"):
        raise ValueError(f"unknown detection arch {arch!r}; choose fasterrcnn or retinanet")
    if num_classes < 2:
        raise ValueError(f"num_classes counts background too and must be >= 2, got {num_classes}")
    if len(image_mean) != len(image_std):
        raise ValueError(f"image_mean {list(image_mean)} and image_std {list(image_std)} differ in length")
    if stages is None and arch == "retinanet":
        stages = min(3, len(_stage_nodes(backbone)))
    features = _dense_features(backbone, stages)
    if stages is None and features.strides[0] == 1 and len(features.strides) > 1:
        # A full-resolution stage (CIFAR-style stems) would make the pyramid's largest level cost more
        # than the whole backbone; detectors start at stride 2 or more (torchvision's P2 is stride 4).
        features = _dense_features(backbone, len(features.strides) - 1)
    channels, strides = features.channels, features.strides
    extra: ExtraFPNBlock = (
        LastLevelMaxPool() if arch == "fasterrcnn" else LastLevelP6P7(fpn_channels, fpn_channels)
    )
    fpn = FeaturePyramidNetwork(channels, fpn_channels, extra_blocks=extra)
    body = _BackboneWithFPN(features, fpn, fpn_channels)

    sizes = tuple(
        tuple(float(s) for s in level) for level in (anchor_sizes or default_anchor_sizes(arch, strides))
    )
    levels = len(strides) + (1 if arch == "fasterrcnn" else 2)
    if len(sizes) != levels:
        raise ValueError(f"anchor_sizes needs one tuple per pyramid level ({levels}), got {len(sizes)}")
    if len({len(s) for s in sizes}) != 1:
        raise ValueError("every level of anchor_sizes needs the same number of sizes")
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * levels)
    common: dict[str, Any] = {
        "min_size": image_size,
        "max_size": image_size,
        "image_mean": list(image_mean),
        "image_std": list(image_std),
    }
    if arch == "retinanet":
        head = RetinaNetHead(fpn_channels, anchors.num_anchors_per_location()[0], num_classes)
        return RetinaNet(body, num_classes, anchor_generator=anchors, head=head, **common)

    # LevelMapper sends a box of side canonical_scale to level canonical_level (stride 2**level):
    # 4 * 16 = 64 makes a box of side 4*stride land on the level whose anchors have that size.
    roi_pool = MultiScaleRoIAlign(features.names, output_size=7, sampling_ratio=2, canonical_scale=4 * 16)
    box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
    return FasterRCNN(
        body,
        rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
        **common,
        **_proposal_budget(image_size),
    )


def _proposal_budget(image_size: int) -> dict[str, int]:
    """Fewer proposals and sampled RoIs for small images (torchvision's defaults are sized for 800 px).

    A 64x64 scene holds a handful of objects; 2,000 proposals and 512 sampled RoIs per image made the
    box head cost ~30x the backbone on CPU. The budget scales with the image area, capped at the defaults.
    """
    scale = min(1.0, (image_size / 800) ** 2)
    return {
        "rpn_pre_nms_top_n_train": max(200, int(2000 * scale)),
        "rpn_post_nms_top_n_train": max(100, int(2000 * scale)),
        "rpn_pre_nms_top_n_test": max(100, int(1000 * scale)),
        "rpn_post_nms_top_n_test": max(50, int(1000 * scale)),
        "box_batch_size_per_image": max(32, int(512 * scale)),
    }


# --------------------------------------------------------------------------- both


def build_dense_model(
    task: str,
    arch: str,
    num_classes: int,
    backbone_spec: str | Path,
    *,
    in_chans: int,
    image_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
) -> DenseModel:
    """A segmentation (``"segment"``) or detection (``"detect"``) model on a transferred backbone.

    Both take float images in [0, 1] and normalise them with ``image_mean``/``image_std`` themselves.
    Returns the model, a description of the backbone's weights and the backbone's model name.
    """
    if task not in ("segment", "detect"):
        raise ValueError(f"unknown dense task {task!r}; choose segment or detect")
    backbone, origin, name = load_backbone(backbone_spec, in_chans=in_chans)
    if task == "segment":
        model = build_segmentation_model(
            arch, num_classes, backbone, image_mean=image_mean, image_std=image_std
        )
    else:
        model = build_detection_model(
            arch, num_classes, backbone, image_size=image_size, image_mean=image_mean, image_std=image_std
        )
    return DenseModel(model, f"{task} {arch} ({num_classes} classes) on {origin}", name)
