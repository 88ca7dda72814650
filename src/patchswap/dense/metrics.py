"""Dense-task metrics on top of torchmetrics: segmentation mIoU / pixel accuracy and detection mAP.

Both accumulate over batches (``update``), report plain Python floats (``compute``) and start over
with ``reset``, so one instance serves a whole validation pass and then the next one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["DetectionMetrics", "SegmentationMetrics"]


class SegmentationMetrics:
    """Mean IoU, pixel accuracy and per-class IoU from one accumulated confusion matrix.

    Built on torchmetrics' ``MulticlassConfusionMatrix`` (``ignore_index`` pixels are dropped) rather
    than ``MulticlassJaccardIndex``, because the latter scores a class absent from both predictions and
    targets as 0 (or its ``zero_division``), which drags the mean down on small validation sets where
    some classes never occur. Here such a class has IoU NaN: it is reported as NaN in ``iou_per_class``
    and left out of ``miou``. A class that is only predicted (never a target) has IoU 0 and does count.
    ``pixel_acc`` counts the non-ignored pixels.
    """

    def __init__(
        self, num_classes: int, ignore_index: int | None = 255, class_names: Sequence[str] | None = None
    ) -> None:
        from torchmetrics.classification import MulticlassConfusionMatrix

        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = [str(n) for n in class_names] if class_names is not None else None
        self._confusion = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: class indices ``[N, H, W]`` or logits ``[N, K, H, W]``; target ``[N, H, W]``."""
        if preds.ndim == target.ndim + 1 and preds.shape[1] == self.num_classes:
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape:
            raise ValueError(
                f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ; pass class indices "
                f"[N, H, W] or logits [N, {self.num_classes}, H, W] with targets [N, H, W]"
            )
        if self._confusion.confmat.device != preds.device:
            self._confusion.to(preds.device)
        self._confusion.update(preds.detach().long(), target.detach().long())

    def confusion_matrix(self) -> Tensor:
        """The accumulated counts, rows = target class, columns = predicted class (on CPU)."""
        return self._confusion.confmat.detach().cpu().clone()

    def compute(self) -> dict[str, Any]:
        """``{"miou", "pixel_acc", "iou_per_class": {name: iou}}``; NaN where nothing was counted."""
        cm = self.confusion_matrix().double()
        tp = cm.diagonal()
        union = cm.sum(0) + cm.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))
        total = cm.sum()
        present = ~iou.isnan()
        names = self.class_names or [str(i) for i in range(self.num_classes)]
        return {
            "miou": float(iou[present].mean()) if bool(present.any()) else math.nan,
            "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
            "iou_per_class": {n: float(v) for n, v in zip(names, iou.tolist(), strict=True)},
        }

    def reset(self) -> None:
        self._confusion.reset()


class DetectionMetrics:
    """COCO-style box mAP through torchmetrics' ``MeanAveragePrecision`` (pycocotools backend).

    ``class_names[label]`` names label ``label`` (index 0 is background for torchvision detectors;
    labels beyond the list are named by their number). ``ap_per_class`` has an entry only for classes
    seen in the predictions or targets of the accumulated batches; a class that was only predicted (no
    ground truth anywhere) has no defined AP and is NaN. Inputs are moved to the CPU, where COCO
    evaluation runs anyway.
    """

    def __init__(self, class_names: Sequence[str]) -> None:
        from torchmetrics.detection import MeanAveragePrecision

        self.class_names = [str(n) for n in class_names]
        self._map = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True)
        self._images = 0

    def update(self, preds: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Tensor]]) -> None:
        """Add images: preds with ``boxes`` (xyxy pixels), ``scores``, ``labels``; targets without scores."""
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
        p = [
            {
                "boxes": d["boxes"].detach().float().cpu().reshape(-1, 4),
                "scores": d["scores"].detach().float().cpu().reshape(-1),
                "labels": d["labels"].detach().long().cpu().reshape(-1),
            }
            for d in preds
        ]
        t = [
            {
                "boxes": d["boxes"].detach().float().cpu().reshape(-1, 4),
                "labels": d["labels"].detach().long().cpu().reshape(-1),
            }
            for d in targets
        ]
        self._map.update(p, t)
        self._images += len(p)

    def compute(self) -> dict[str, Any]:
        """``{"map" (IoU 0.5:0.95), "map_50", "map_75", "ap_per_class": {name: ap}}`` as floats.

        torchmetrics' -1 (no ground truth to score against) becomes NaN.
        """
        if self._images == 0:
            return {"map": math.nan, "map_50": math.nan, "map_75": math.nan, "ap_per_class": {}}
        res = self._map.compute()

        def num(value: Tensor) -> float:
            v = float(value)
            return math.nan if v < 0 else v

        classes = res["classes"].flatten().tolist()
        per_class = res["map_per_class"].flatten().tolist()
        if len(per_class) != len(classes):  # no class at all: torchmetrics gives a single -1
            per_class = [-1.0] * len(classes)
        return {
            "map": num(res["map"]),
            "map_50": num(res["map_50"]),
            "map_75": num(res["map_75"]),
            "ap_per_class": {
                self._name(int(c)): (math.nan if v < 0 else float(v))
                for c, v in zip(classes, per_class, strict=True)
            },
        }

    def _name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def reset(self) -> None:
        self._map.reset()
        self._images = 0
