"""A training epoch's values, handed to everything that reads them in one go instead of ``self.log`` each.

Lightning's ``self.log`` costs about 1.5 ms a call on a 2-core CPU whatever the value (it re-checks and
deep-copies the value's metadata each time), and a training epoch has nine: the method's means, the
learning rate, images/s and the epoch's seconds, 12-15 ms an epoch, 1.5-2% of a short one
(docs/benchmarks.md). The values are reduced across ranks here in one collective (not one each), then
set where Lightning's epoch-end logging would put them: ``trainer.callback_metrics`` (metrics.csv, the
progress line, EarlyStopping and ModelCheckpoint monitors) and a point of every logger (TensorBoard) at
the epoch's step. They are not in ``trainer.logged_metrics`` (nothing here reads it). Validation and
test keep ``self.log``: ``Trainer.validate`` returns what it logged.
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch

__all__ = ["publish_epoch_values"]


def publish_epoch_values(
    trainer: L.Trainer, values: Mapping[str, torch.Tensor | float], device: torch.device
) -> dict[str, torch.Tensor]:
    """Reduce ``values`` (0-d tensors or numbers) to their mean over the ranks, on every rank, and make
    them the epoch's ``trainer.callback_metrics`` and a logger point; the reduced values.

    Called on every rank (the reduction is a collective); the host reads them once, for the loggers.
    """
    if not values:
        return {}
    names = list(values)
    vec = torch.stack(
        [torch.as_tensor(v, dtype=torch.float32, device=device).detach().reshape(()) for v in values.values()]
    )
    if trainer.world_size > 1:
        vec = trainer.strategy.reduce(vec, reduce_op="mean")
    reduced = dict(zip(names, vec.unbind(), strict=True))
    trainer.callback_metrics.update(reduced)
    if trainer.loggers and trainer.is_global_zero:
        # As Lightning logs epoch values: the epoch along, at the epoch's last step counted from 0 (its
        # fit loop steps its counter back by one for them), where its validation values are logged too.
        scalars = {**dict(zip(names, vec.tolist(), strict=True)), "epoch": trainer.current_epoch}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=max(0, trainer.global_step - 1))
            logger.save()
    return reduced
