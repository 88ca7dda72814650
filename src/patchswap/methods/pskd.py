"""PS-KD (Kim et al. 2021): progressive self-KD; targets mix in last epoch's prediction per sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patchswap.config_base import opt
from patchswap.losses import soft_cross_entropy
from patchswap.methods.base import Method, MethodBatch, StepOutput, register_method


@register_method
class ProgressiveSelfKD(Method):
    """``CE(z, (1 - alpha_t) * one_hot(y) + alpha_t * p_prev(x))``, ``alpha_t = alpha_T * t / T``.

    ``t = epoch + 1`` is the paper's 1-based epoch (so ``alpha_t`` reaches ``alpha_T`` in the last
    epoch) and ``p_prev`` the softmax this model gave the same sample when it last saw it in an
    earlier epoch. Predictions live in the buffer ``predictions`` (float16, ``[num_samples,
    num_classes]``) with the epoch that wrote each row in ``written_epoch`` (-1: never); both move
    with the module and are checkpointed, so resuming keeps them. A sample without an earlier-epoch
    prediction (epoch 0, or dropped by ``drop_last`` so far) gets the one-hot target.
    """

    name = "pskd"

    @dataclass
    class Options:
        alpha_T: float = opt(0.8, "weight of the past prediction in the last epoch (rises linearly)")

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        if not 0.0 <= self.options.alpha_T <= 1.0:
            raise ValueError(f"pskd alpha_T must be in [0, 1], got {self.options.alpha_T!r}")
        if self.num_samples < 1 or self.num_classes < 1:
            raise ValueError(
                "pskd keeps one prediction per training sample: build it with num_samples and num_classes, "
                f"e.g. create_method('pskd', num_samples=50000, num_classes=100) (got num_samples="
                f"{self.num_samples}, num_classes={self.num_classes})"
            )
        self.register_buffer(
            "predictions", torch.zeros(self.num_samples, self.num_classes, dtype=torch.float16)
        )
        self.register_buffer("written_epoch", torch.full((self.num_samples,), -1, dtype=torch.int32))
        # Under DDP, what this rank's writes of the epoch replaced: (epoch, [(rows, predictions, stamps)]),
        # one entry per write; a row's first entry holds its value as the epoch began. With it a checkpoint
        # can describe the epoch's start, which every rank shares, and each rank's own writes since
        # (rank_state); a single process never needs it.
        self._undo: tuple[int, list[tuple[Tensor, Tensor, Tensor]]] = (-1, [])

    def on_epoch_end(self, epoch: int) -> None:
        """Under DDP each rank saw other samples this epoch: merge the rows written in ``epoch`` so every
        rank knows every sample's prediction next epoch (a row written by several ranks is averaged)."""
        if not _distributed():
            return
        self._undo = (-1, [])  # merged: every rank holds the same rows again
        dist = torch.distributed
        chunk = 1 << 16  # rows per all-reduce: bounded extra memory for large datasets
        for start in range(0, self.num_samples, chunk):
            rows = slice(start, start + chunk)
            mine = self.written_epoch[rows] == epoch
            preds = torch.where(mine[:, None], self.predictions[rows].float(), 0.0)
            count = mine.float()
            dist.all_reduce(preds)
            dist.all_reduce(count)
            seen = count > 0
            merged = preds / count.clamp_min(1.0)[:, None]
            self.predictions[rows] = torch.where(seen[:, None], merged.half(), self.predictions[rows])
            self.written_epoch[rows] = torch.where(
                seen, torch.full_like(self.written_epoch[rows], epoch), self.written_epoch[rows]
            )

    def alpha_at(self, epoch: int, max_epochs: int) -> float:
        return self.options.alpha_T * min(1.0, (epoch + 1) / max(1, max_epochs))

    def targets(self, y: Tensor, index: Tensor, epoch: int, max_epochs: int) -> Tensor:
        """The soft targets of a batch, from predictions written before ``epoch``."""
        one_hot = F.one_hot(y.long(), self.num_classes).to(torch.float32)
        past = self.predictions[index].to(torch.float32)
        past = past / past.sum(dim=1, keepdim=True).clamp_min(1e-12)  # undo float16 rounding of the sum
        written = self.written_epoch[index]
        known = ((written >= 0) & (written < epoch))[:, None]
        alpha = self.alpha_at(epoch, max_epochs)
        return (1.0 - alpha) * one_hot + alpha * torch.where(known, past, one_hot)

    def forward(self, model: nn.Module, batch: MethodBatch) -> StepOutput:
        if batch.index is None:
            raise ValueError("pskd needs the dataset index of every sample (MethodBatch.index)")
        index = batch.index.to(device=self.predictions.device, dtype=torch.long)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_samples):
            raise ValueError(f"pskd got sample indices outside 0..{self.num_samples - 1}")
        logits = model(batch.x)
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"pskd was built for {self.num_classes} classes, the model gives {logits.shape[1]}"
            )
        with torch.no_grad():
            target = self.targets(batch.y, index, batch.epoch, batch.max_epochs)
        loss = soft_cross_entropy(logits, target)
        # Read before write: this step's targets never see its own predictions; they are stored for the
        # next epoch, and the epoch stamp hides them from any later visit within this epoch.
        with torch.no_grad():
            if _distributed():
                self._remember_replaced(index, batch.epoch)
            self.predictions[index] = logits.detach().float().softmax(dim=1).to(torch.float16)
            self.written_epoch[index] = batch.epoch
        alpha = torch.tensor(self.alpha_at(batch.epoch, batch.max_epochs), device=logits.device)
        return StepOutput(loss, logits, batch.y, {"ce": loss.detach(), "alpha_t": alpha})

    # -- resuming under DDP ----------------------------------------------------------------------
    def _remember_replaced(self, index: Tensor, epoch: int) -> None:
        """Log what this write replaces. Every write, unmasked: picking the rows not yet written would make
        the host wait for the device at every step; a row's first entry in the epoch has its start."""
        if self._undo[0] != epoch:
            self._undo = (epoch, [])
        self._undo[1].append((index, self.predictions[index].clone(), self.written_epoch[index].clone()))

    def _first_writes(self) -> tuple[Tensor, Tensor, Tensor]:
        """(rows, their predictions and stamps as the epoch began), each row written this epoch once."""
        log = self._undo[1]
        rows = torch.cat([r for r, _, _ in log])
        unique, inverse = torch.unique(rows, return_inverse=True)
        position = torch.arange(rows.numel(), device=rows.device)
        first = torch.full((unique.numel(),), rows.numel(), dtype=torch.long, device=rows.device)
        first = first.scatter_reduce(0, inverse, position, reduce="amin")
        return unique, torch.cat([p for _, p, _ in log])[first], torch.cat([e for _, _, e in log])[first]

    def rank_state(self) -> dict[str, Any] | None:
        """The rows this rank wrote so far in the epoch with their new predictions; rank 0 also sends what
        they replaced (its buffers are the checkpoint's, and a resumed rank undoes its writes)."""
        epoch, log = self._undo
        if not log:
            return None
        rows, old, old_stamps = self._first_writes()
        state = {"epoch": epoch, "rows": rows.cpu(), "new": self.predictions[rows].cpu()}
        if _rank() == 0:
            state.update(old=old.cpu(), old_stamps=old_stamps.cpu())
        return state

    def load_rank_states(self, states: list[Any], rank: int, device: torch.device) -> None:
        """Rank 0's buffers were loaded: undo rank 0's writes of the epoch (back to the start every rank
        shares), then redo this rank's own, so each rank holds exactly what it held at the save."""
        writer, mine = states[0], states[rank]
        with torch.no_grad():
            if writer is not None:
                rows = writer["rows"].to(device)
                self.predictions[rows] = writer["old"].to(device)
                self.written_epoch[rows] = writer["old_stamps"].to(device)
            if mine is not None:
                rows, epoch = mine["rows"].to(device), int(mine["epoch"])
                start = (rows, self.predictions[rows].clone(), self.written_epoch[rows].clone())
                self._undo = (epoch, [start])  # what these rows held as the epoch began
                self.predictions[rows] = mine["new"].to(device)
                self.written_epoch[rows] = epoch


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
