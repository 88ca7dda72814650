"""A trained run, ready for inference: its network (weights loaded, eval mode), data and transforms.

:func:`load_run` reads a run directory (or one of its checkpoints) without the engine: the config
stored in the checkpoint (else ``config.yaml`` beside it) rebuilds the data bundle with
:func:`~patchswap.data.build_data` -- the same splits, class names and normalisation as training --
and the network with :func:`~patchswap.models.create_model`. Nothing is downloaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from patchswap.data import DataBundle, DeviceAugment, FolderImages, build_data_from_section
from patchswap.data.registry import resolve_dataset
from patchswap.devices import resolve_device
from patchswap.models import create_model, pretrained_input
from patchswap.runs import (
    CONFIG_KEY,
    CheckpointError,
    load_checkpoint,
    locate_checkpoint,
    network_state,
    read_weights_metadata,
    run_config_beside,
    run_dir_of,
)

__all__ = ["DeployError", "LoadedRun", "build_run_data", "bundle_from_weights", "load_run"]


class DeployError(RuntimeError):
    """A run cannot be calibrated, used for prediction or exported as asked."""


def build_run_data(config: dict[str, Any]) -> DataBundle:
    """The run's data bundle from its config's ``data`` section (the arguments the engine passes)."""
    d = config.get("data") or {}
    try:
        m = config.get("model") or {}
        model_input = pretrained_input(m["name"], m.get("pretrained")) if m.get("name") else None
        with warnings.catch_warnings():  # training said which files it skipped; inference need not again
            warnings.filterwarnings("ignore", message=r"skipped \d+ unusable file")
            return build_data_from_section(d, model_input=model_input)
    except (OSError, ValueError) as e:
        raise DeployError(
            f"cannot rebuild the run's data {d.get('name')!r} (data_dir {d.get('data_dir')!r}): {e}; the "
            "class names, image size and normalisation come from it"
        ) from e


@dataclass
class LoadedRun:
    """A run's network in eval mode on ``device``, with the data bundle it was trained on."""

    checkpoint: Path
    run_dir: Path | None
    config: dict[str, Any]
    model: nn.Module
    bundle: DataBundle
    device: torch.device

    @property
    def classes(self) -> list[str]:
        return list(self.bundle.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.bundle.image_size)  # type: ignore[return-value]

    @property
    def in_chans(self) -> int:
        return int(self.bundle.in_chans)

    @property
    def model_name(self) -> str:
        return str((self.config.get("model") or {}).get("name", "?"))

    @property
    def method(self) -> str:
        return str(self.config.get("method", "?"))

    def split(self, name: str) -> Any:
        """The ``train``/``val``/``test`` dataset, or a :class:`DeployError` if the run has none."""
        ds = getattr(self.bundle, name, None)
        if ds is None:
            raise DeployError(f"the run's data has no {name} split (data.{name}_split)")
        return ds

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logits of uint8 ``[N, C, H, W]`` images (the run's eval normalisation)."""
        x = self.bundle.eval_augment(images.to(self.device))
        return self.model(x).float()

    def batches(
        self, split: str, batch_size: int = 256, max_images: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(uint8 images, labels)`` of a split in order (the first ``max_images`` when given)."""
        from patchswap.evaluation.suite import ImageSource

        ds = self.split(split)
        n = len(ds)
        source = ImageSource(ds, num_workers=0 if self.bundle.in_memory else 2)
        if max_images is not None and max_images < n:
            source.indices = source.indices[:max_images]
        yield from source.batches(batch_size)

    def split_logits(
        self, split: str, batch_size: int = 256, max_images: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Uncalibrated logits ``[N, K]`` (CPU, float32) and labels ``[N]`` of a whole split."""
        outs, labels = [], []
        for x, y in self.batches(split, batch_size, max_images):
            outs.append(self.logits(x).cpu())
            labels.append(torch.as_tensor(y).long().cpu())
        return torch.cat(outs), torch.cat(labels)


def _run_config(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    cfg = ckpt.get(CONFIG_KEY)
    if isinstance(cfg, dict):
        return cfg
    beside = run_config_beside(path)
    if beside is None:
        raise CheckpointError(
            f"{path} carries no patchswap config and no config.yaml is beside it; was it written by "
            "patchswap train?"
        )
    return beside


def _was_image_folder(name: str) -> bool:
    """Whether the run's data was an image folder (evaluated with its own resize and centre crop), as
    the dataset registry reads the name."""
    try:
        return resolve_dataset(name)[0].name == "folder"
    except ValueError:  # a bare path that nothing claims now that it is gone: a folder, unless arrays
        return not name.strip().lower().endswith(".npz")


def bundle_from_weights(path: Path, config: dict[str, Any], missing: DeployError) -> DataBundle:
    """What predicting new files needs, without the training data: class names, input size and
    normalisation from the header of the weights file saved beside checkpoint ``path`` (``best.ckpt``
    -> ``best.safetensors``, written from the same weights). It has no splits: calibrating, evaluating
    and exporting still need the data (``missing`` says why it is not there)."""
    weights = path.with_suffix(".safetensors")
    if not weights.is_file():
        raise DeployError(
            f"{missing}; nor is {weights.name} beside {path.name}, whose header would do for prediction"
        ) from missing
    meta = read_weights_metadata(weights)
    try:
        classes = [str(c) for c in meta["classes"]]
        c, h, w = (int(v) for v in meta["input_size"])
        mean, std = tuple(float(v) for v in meta["mean"]), tuple(float(v) for v in meta["std"])
    except (KeyError, TypeError, ValueError) as e:
        raise DeployError(
            f"{missing}; and {weights} lacks the classes / input_size / mean / std ({e})"
        ) from missing
    name = str((config.get("data") or {}).get("name", ""))
    folder = _was_image_folder(name)
    images = FolderImages([], classes, h, train=False) if folder else None
    return DataBundle(
        train=images,  # type: ignore[arg-type]  # only the folder's eval crop is read
        val=None,
        test=None,
        num_classes=len(classes),
        classes=classes,
        in_chans=c,
        image_size=(h, w),
        in_memory=not folder,
        mean=mean,
        std=std,
        name=f"{name} (not available: classes and preprocessing from {weights.name})",
        train_augment=DeviceAugment(mean, std),
        eval_augment=DeviceAugment(mean, std),
    )


def load_run(
    target: str | Path, *, device: str | torch.device | None = "cpu", need_data: bool = True
) -> LoadedRun:
    """The run at ``target`` (a run directory: its best, else last checkpoint; or a ``.ckpt`` file).

    ``need_data=False`` (prediction on new files): when the run's data cannot be rebuilt here (a run
    directory copied without its training images), its classes and preprocessing come from the
    weights file beside the checkpoint (:func:`bundle_from_weights`), with a warning.
    """
    path = locate_checkpoint(target)
    ckpt = load_checkpoint(path)
    config = _run_config(ckpt, path)
    try:
        bundle = build_run_data(config)
    except DeployError as missing:
        if need_data:
            raise
        bundle = bundle_from_weights(path, config, missing)
        warnings.warn(
            f"the run's data is not available here ({missing}); predicting with the classes and "
            f"preprocessing stored in {path.with_suffix('.safetensors').name}",
            UserWarning,
            stacklevel=2,
        )
    model_cfg = config.get("model") or {}
    model = create_model(  # the architecture alone: the checkpoint's weights replace any pretrained ones
        model_cfg.get("name", "resnet8"),
        bundle.num_classes,
        in_chans=bundle.in_chans,
        **(model_cfg.get("kwargs") or {}),
    )
    weights = network_state(ckpt["state_dict"])
    if not weights:
        raise CheckpointError(f"{path} holds no network weights (no 'model.' keys in its state_dict)")
    model.load_state_dict(weights)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    bundle.eval_augment = bundle.eval_augment.to(dev)
    return LoadedRun(path, run_dir_of(path), config, model, bundle, dev)
