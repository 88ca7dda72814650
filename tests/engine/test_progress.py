"""What a run shows while training, and that a training step reads nothing back from the device."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from patchswap.engine.config import load_config
from patchswap.engine.harness import lightning_trainer
from patchswap.engine.progress import (
    EpochLines,
    EpochProgressBar,
    HostScalar,
    format_duration,
    progress_callback,
)
from patchswap.engine.training import ClassificationRun


def test_format_duration():
    assert format_duration(0) == "0:00"
    assert format_duration(61.4) == "1:01"
    assert format_duration(3 * 3600 + 5) == "3:00:05"


def test_host_scalar_reads_cpu_values_at_once():
    value = HostScalar()
    value.push(None)
    assert value.value is None
    value.push(torch.tensor(1.5))
    assert value.value == 1.5


def test_the_bar_or_the_lines():
    assert isinstance(progress_callback(True, 5), EpochProgressBar)
    assert not isinstance(progress_callback(False, 5), EpochProgressBar)


def _shown(trainer) -> list[type]:
    return [type(c) for c in trainer.callbacks if isinstance(c, (EpochLines, EpochProgressBar))]


def test_a_bar_only_where_it_can_redraw_lines_into_a_log_file(tmp_path, monkeypatch):
    t = load_config(None, {"trainer.progress_bar": "true"}).trainer
    # Output into a file (as under pytest's capture, nohup or SLURM): one line per epoch, no bar.
    with open(tmp_path / "log.txt", "w") as log:
        monkeypatch.setattr("sys.stdout", log)  # where Lightning's bar draws (> train.log)
        trainer = lightning_trainer(t, tmp_path / "run")
    assert _shown(trainer) == [EpochLines] and trainer.progress_bar_callback is None
    # A terminal: the bar, and Lightning's own bar is not added beside it.
    monkeypatch.setattr("patchswap.engine.harness.interactive", lambda: True)
    trainer = lightning_trainer(t, tmp_path / "run")
    assert _shown(trainer) == [EpochProgressBar]
    assert isinstance(trainer.progress_bar_callback, EpochProgressBar)
    # Asked for none: lines even in a terminal.
    t = load_config(None, {"trainer.progress_bar": "false"}).trainer
    assert _shown(lightning_trainer(t, tmp_path / "run")) == [EpochLines]


class _HostReads(TorchDispatchMode):
    """Counts reads of a tensor's value by the host (.item(), float(), bool(): a sync on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        return func(*args, **(kwargs or {}))


class _StepWatch:
    """A callback that watches every training step, from its start hook to its end hook."""

    def __init__(self) -> None:
        import lightning as L

        outer = self

        class Watch(L.Callback):
            def on_train_batch_start(self, *args):
                outer.mode = _HostReads()
                outer.mode.__enter__()

            def on_train_batch_end(self, *args):
                outer.mode.__exit__(None, None, None)
                outer.reads.append(outer.mode.reads)

        self.reads: list[int] = []
        self.callback = Watch()


def test_training_steps_read_nothing_back_and_each_epoch_prints_one_line(
    tiny_overrides, tmp_path, single_thread, capsys, monkeypatch
):
    # As on an accelerator: no per-step check may read a value (on the CPU they do, as it is free).
    monkeypatch.setattr("patchswap.losses.VALUE_CHECK_DEVICES", ())
    cfg = load_config(None, tiny_overrides(tmp_path / "run", trainer__epochs=2, data__train_subset=160))
    run = ClassificationRun(cfg)
    watch = _StepWatch()
    trainer = run.trainer(tmp_path / "run", callbacks=[watch.callback])
    trainer.fit(run.module, datamodule=run.datamodule)
    assert len(watch.reads) == 2 * (160 // 32)  # 16 per class: 4 groups of 4, 8 classes per batch
    assert watch.reads == [0] * len(watch.reads)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    for line in lines:
        assert "loss " in line and "img/s" in line and "left " in line and "val acc " in line
    assert {"train/loss", "train/acc", "train/kd", "lr"} <= set(trainer.callback_metrics)
