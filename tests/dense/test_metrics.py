"""Dense metrics against hand-computed values: confusion-matrix IoU and COCO box mAP."""

from __future__ import annotations

import math

import pytest
import torch

from patchswap.dense.metrics import DetectionMetrics, SegmentationMetrics

NAMES = ["bg", "a", "b", "c"]
# Class c (3) is never a target; the prediction 3 only falls on ignored (255) pixels.
TARGET = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 255], [1, 1, 2, 255]]])
PREDS = torch.tensor([[[0, 2, 1, 1], [0, 2, 1, 3], [1, 1, 2, 3]]])
# Rows = target, columns = prediction, over the 10 counted pixels.
CONFUSION = torch.tensor([[2, 0, 1, 0], [0, 4, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]])
IOU = {"bg": 2 / 3, "a": 4 / 5, "b": 2 / 4}  # tp / (row + column - tp)


def _check(result):
    assert result["pixel_acc"] == pytest.approx(8 / 10)
    assert result["miou"] == pytest.approx(sum(IOU.values()) / 3)  # c is absent: not averaged as 0
    per_class = result["iou_per_class"]
    assert list(per_class) == NAMES
    for name, value in IOU.items():
        assert per_class[name] == pytest.approx(value)
    assert math.isnan(per_class["c"])
    assert all(type(v) is float for v in [result["miou"], result["pixel_acc"], *per_class.values()])


def test_segmentation_metrics_hand_computed_with_ignore_and_absent_class():
    metrics = SegmentationMetrics(4, ignore_index=255, class_names=NAMES)
    metrics.update(PREDS, TARGET)
    assert torch.equal(metrics.confusion_matrix(), CONFUSION)
    _check(metrics.compute())


def test_segmentation_metrics_accept_logits_and_accumulate():
    metrics = SegmentationMetrics(4, class_names=NAMES)
    logits = torch.nn.functional.one_hot(PREDS, 4).permute(0, 3, 1, 2).float() * 3.0
    metrics.update(logits[:, :, :2], TARGET[:, :2])  # the same pixels in two batches
    metrics.update(logits[:, :, 2:], TARGET[:, 2:])
    _check(metrics.compute())


def test_segmentation_metrics_reset_and_default_names():
    metrics = SegmentationMetrics(4)
    metrics.update(PREDS, TARGET)
    assert list(metrics.compute()["iou_per_class"]) == ["0", "1", "2", "3"]
    metrics.reset()
    empty = metrics.compute()
    assert math.isnan(empty["miou"]) and math.isnan(empty["pixel_acc"])
    metrics.update(TARGET.clamp(max=2), TARGET)  # perfect on the counted pixels
    result = metrics.compute()
    assert result["miou"] == 1.0 and result["pixel_acc"] == 1.0


def test_segmentation_metrics_reject_mismatched_shapes():
    metrics = SegmentationMetrics(4)
    with pytest.raises(ValueError, match="differ"):
        metrics.update(PREDS[:, :2], TARGET)


BOX = torch.tensor([[10.0, 10.0, 30.0, 30.0]])


def _pred(boxes, labels, scores=None):
    scores = torch.full((len(labels),), 0.9) if scores is None else torch.tensor(scores)
    return {"boxes": boxes, "scores": scores, "labels": torch.tensor(labels)}


def _target(boxes, labels):
    return {"boxes": boxes, "labels": torch.tensor(labels)}


def test_detection_perfect_predictions_score_one():
    metrics = DetectionMetrics(["background", "one", "two"])
    boxes = torch.cat([BOX, BOX + 20])
    metrics.update([_pred(boxes, [1, 2])], [_target(boxes, [1, 2])])
    result = metrics.compute()
    assert result["map"] == result["map_50"] == result["map_75"] == pytest.approx(1.0)
    assert result["ap_per_class"] == {"one": pytest.approx(1.0), "two": pytest.approx(1.0)}
    assert all(type(v) is float for v in [result["map"], *result["ap_per_class"].values()])


def test_detection_shifted_box_counts_at_iou_50_not_75():
    metrics = DetectionMetrics(["background", "one"])
    shifted = BOX + torch.tensor([4.0, 0.0, 4.0, 0.0])  # IoU = 320 / 480 = 0.667
    metrics.update([_pred(shifted, [1])], [_target(BOX, [1])])
    result = metrics.compute()
    assert result["map_50"] == pytest.approx(1.0)
    assert result["map_75"] == pytest.approx(0.0)
    # Matched at IoU thresholds 0.50, 0.55, 0.60, 0.65: 4 of the 10.
    assert result["map"] == pytest.approx(0.4, abs=1e-6)


def test_detection_accumulates_wrong_class_and_reset():
    metrics = DetectionMetrics(["background", "one", "two"])
    # Image 1 is found, image 2's object is missed: recall 0.5 at precision 1 -> 51 of 101 COCO points.
    metrics.update([_pred(BOX, [1])], [_target(BOX, [1])])
    metrics.update([_pred(torch.zeros(0, 4), [])], [_target(BOX + 20, [1])])
    assert metrics.compute()["map_50"] == pytest.approx(51 / 101, abs=1e-6)
    metrics.reset()
    assert math.isnan(metrics.compute()["map"])
    metrics.update([_pred(BOX, [2])], [_target(BOX, [1])])  # right box, wrong class
    result = metrics.compute()
    assert result["map_50"] == 0.0
    assert result["ap_per_class"]["one"] == 0.0
    assert math.isnan(result["ap_per_class"]["two"])  # predicted only: no ground truth to score
