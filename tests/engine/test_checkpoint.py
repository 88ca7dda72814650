"""Lightning's checkpoint I/O plugin (atomic saves, the clear corrupt-file error of patchswap.runs) and
the linked best checkpoint of runs without validation."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import tiny_checkpoint, tiny_net
from lightning.pytorch.callbacks import ModelCheckpoint

from patchswap.engine.checkpoint import AtomicCheckpointIO, LinkedCheckpoint
from patchswap.runs import CheckpointError, load_checkpoint


def test_round_trip_through_the_checkpoint_io(tmp_path):
    model = tiny_net()
    ckpt = tiny_checkpoint(model)
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(ckpt, path)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["global_step"] == 40
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["state_dict"][key], value)
    assert AtomicCheckpointIO().load_checkpoint(path)["epoch"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_checkpoint_says_so(tmp_path, keep):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(tiny_checkpoint(tiny_net()), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "corrupt or truncated" in msg and str(path) in msg
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        AtomicCheckpointIO().load_checkpoint(path)


class _Tiny(L.LightningModule):
    """Four steps an epoch on random data: enough for epoch-end checkpoints."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3, 2)

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(8, 3, generator=torch.Generator().manual_seed(0)))
        return torch.utils.data.DataLoader(data, batch_size=2)


def _fit(tmp_path, epochs: int, **last_options) -> tuple[L.Trainer, LinkedCheckpoint]:
    folder = str(tmp_path / "checkpoints")
    last = ModelCheckpoint(dirpath=folder, filename="last", save_on_train_epoch_end=True, **last_options)
    best = LinkedCheckpoint(last, dirpath=folder, filename="best", mode="max", enable_version_counter=False)
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[last, best],
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_Tiny())
    return trainer, best


def test_linked_checkpoint_is_the_source_file_of_the_same_step(tmp_path):
    trainer, best = _fit(tmp_path, epochs=2)
    folder = tmp_path / "checkpoints"
    assert (folder / "best.ckpt").samefile(folder / "last.ckpt")  # one file: a link, not a second save
    assert best.best_model_path == str(folder / "best.ckpt")
    assert load_checkpoint(folder / "best.ckpt")["global_step"] == trainer.global_step == 8
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]  # no link.tmp left


def test_linked_checkpoint_saves_itself_when_the_source_did_not_save_at_its_step(tmp_path):
    # The source saves every second epoch: at the first epoch's end the linked one must save on its own.
    _, best = _fit(tmp_path, epochs=1, every_n_epochs=2)
    folder = tmp_path / "checkpoints"
    assert not (folder / "last.ckpt").exists()
    assert load_checkpoint(folder / "best.ckpt")["global_step"] == 4
    assert best.state_key.startswith("ModelCheckpoint{")  # resumes the state of a plain ModelCheckpoint


def test_linked_checkpoint_saves_itself_when_its_source_holds_other_state(tmp_path):
    folder = str(tmp_path)
    last = ModelCheckpoint(dirpath=folder, filename="last", save_weights_only=True)
    best = LinkedCheckpoint(last, dirpath=folder, filename="best", mode="max")
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[last, best],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_Tiny())
    assert not (tmp_path / "best.ckpt").samefile(tmp_path / "last.ckpt")  # weights only: another file
    assert "optimizer_states" in load_checkpoint(tmp_path / "best.ckpt")
    with pytest.raises(ValueError, match="differ from its source"):
        LinkedCheckpoint(last, dirpath=folder, filename="best")  # the same state key as its source
