"""build_dense_dataset: names, options and the registry."""

from __future__ import annotations

import pytest
import torch

from patchswap.dense.datasets import (
    DenseRequest,
    SceneSegmentation,
    available_dense_datasets,
    build_dense_dataset,
    dense_dataset_entry,
    register_dense_dataset,
)
from patchswap.dense.scenes import Scenes


def test_unknown_names_and_bad_options() -> None:
    with pytest.raises(ValueError, match="scenes.*voc.*coco:DIR"):
        build_dense_dataset("imagenet", "segment", "train")
    with pytest.raises(ValueError, match="task"):
        build_dense_dataset("scenes", "classify", "train")
    with pytest.raises(ValueError, match="split"):
        build_dense_dataset("scenes", "segment", "holdout")


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch):
    """The real dense registry with its built-ins, restored after the test."""
    from patchswap.dense import registry

    reg = registry.DENSE_DATASETS
    reg.entries()
    monkeypatch.setattr(reg, "_entries", dict(reg._entries))
    monkeypatch.setattr(reg, "_aliases", dict(reg._aliases))
    return reg


def test_a_registered_dense_name_is_built_with_its_request(scratch_registry) -> None:
    seen: list[DenseRequest] = []

    @register_dense_dataset("tiles", prefix="tiles:", pattern="tiles:N", held_out="test")
    def load(request: DenseRequest) -> SceneSegmentation:
        seen.append(request)
        masks = torch.zeros(int(request.argument), 4, 4, dtype=torch.uint8)
        empty = [torch.zeros(0, 4)] * len(masks), [torch.zeros(0)] * len(masks)
        scenes = Scenes(masks.unsqueeze(1), masks, *empty, ["background"])
        return SceneSegmentation(scenes)

    assert "tiles:N" in available_dense_datasets()
    ds = build_dense_dataset("tiles:3", "segment", "val", data_dir="somewhere", canvas=32)
    assert len(ds) == 3 and ds.task == "segment"
    req = seen[0]
    assert (req.name, req.split, req.data_dir, req.canvas) == ("tiles", "val", "somewhere", 32)
    assert dense_dataset_entry("tiles:9").held_out == "test"
    with pytest.raises(ValueError, match="held_out"):
        register_dense_dataset("bad", load, held_out="holdout")


def test_dense_names_and_their_held_out_split() -> None:
    assert available_dense_datasets() == ["scenes", "voc", "voc2012", "voc2007", "coco:DIR"]
    held = {name: dense_dataset_entry(name).held_out for name in ("scenes", "VOC", "voc2012", "voc2007")}
    assert held == {"scenes": None, "VOC": "val", "voc2012": "val", "voc2007": "test"}
    assert dense_dataset_entry("coco:/anywhere").held_out is None
    with pytest.raises(ValueError, match="Did you mean 'voc2007'"):
        build_dense_dataset("voc2077", "detect", "train")
