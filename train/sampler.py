"""Batches of example indices: shuffled, optionally grouped by length, split across ranks, resumable.

:func:`epoch_batches` gives every rank's batches of one epoch as a pure function of
``(lengths, seed, epoch)``, so a resumed run rebuilds exactly the batches it had and skips the ones
it has done. Length grouping follows the usual "mega-batch" recipe: shuffle, cut into mega-batches
of ``MEGABATCH_FACTOR`` global batches, sort each mega-batch by length (longest first), cut into
global batches, and shuffle the order of the global batches. Similar lengths share a batch (little
padding) while the data order stays random. The last incomplete global batch is dropped so that
every rank takes the same number of steps. :class:`BatchStream` loads those batches epoch after
epoch and can be put back to any position ``(epoch, batch)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader

from earthgpt.data.torch_dataset import MMRSTorchDataset, collate
from train.config import TrainConfig

MEGABATCH_FACTOR = 50


def _generator(seed: int, epoch: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


def global_batches(
    lengths: Sequence[int], global_batch: int, *, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """Index lists of ``global_batch`` examples each for one epoch (incomplete last batch dropped)."""
    if global_batch < 1:
        raise ValueError(f"global_batch must be positive, got {global_batch}")
    generator = _generator(seed, epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if group_by_length:
        mega = global_batch * MEGABATCH_FACTOR
        grouped = []
        for start in range(0, len(order), mega):
            chunk = order[start : start + mega]
            grouped += sorted(chunk, key=lambda i: (-lengths[i], i))
        order = grouped
    batches = [order[i : i + global_batch] for i in range(0, len(order) - global_batch + 1, global_batch)]
    if group_by_length and batches:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def epoch_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    world_size: int,
    rank: int,
    seed: int,
    epoch: int,
    group_by_length: bool,
) -> list[list[int]]:
    """This rank's batches (``batch_size`` indices each) of one epoch: slice ``rank`` of each global batch."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    batches = global_batches(
        lengths, batch_size * world_size, seed=seed, epoch=epoch, group_by_length=group_by_length
    )
    return [batch[rank * batch_size : (rank + 1) * batch_size] for batch in batches]


def batches_per_epoch(num_examples: int, batch_size: int, world_size: int) -> int:
    """How many batches each rank gets per epoch."""
    return num_examples // (batch_size * world_size)


class BatchStream:
    """This rank's batches (:func:`epoch_batches`), epoch after epoch, from a position ``(epoch, batch)``."""

    def __init__(
        self, dataset: MMRSTorchDataset, pad_id: int, cfg: TrainConfig, world: int, rank: int
    ) -> None:
        self.dataset, self.cfg, self.world, self.rank = dataset, cfg, world, rank
        self.collate = partial(collate, pad_token_id=pad_id)
        self.epoch = self.batch = 0
        self._iter: Any = None
        if batches_per_epoch(len(dataset), cfg.optim.batch_size, world) == 0:
            raise ValueError(
                f"{len(dataset)} examples do not fill one global batch of {cfg.optim.batch_size} × {world} "
                "processes; lower optim.batch_size or add data"
            )

    def _open(self) -> None:
        batches = epoch_batches(
            self.dataset.lengths,
            self.cfg.optim.batch_size,
            world_size=self.world,
            rank=self.rank,
            seed=self.cfg.run.seed,
            epoch=self.epoch,
            group_by_length=self.cfg.data.group_by_length,
        )
        loader = DataLoader(
            self.dataset,
            batch_sampler=batches[self.batch :],
            collate_fn=self.collate,
            num_workers=self.cfg.data.num_workers,
        )
        self._iter = iter(loader)

    def next(self) -> dict[str, Any]:
        """The next batch; rolls over to the next epoch at the end of one."""
        if self._iter is None:
            self._open()
        try:
            batch = next(self._iter)
        except StopIteration:
            self.epoch, self.batch = self.epoch + 1, 0
            self._open()
            batch = next(self._iter)
        self.batch += 1
        return batch

    def position(self) -> dict[str, int]:
        """Where the stream is: the epoch and the number of its batches already given out."""
        return {"epoch": self.epoch, "batch": self.batch}

    def seek(self, epoch: int, batch: int) -> None:
        """Continue from ``batch`` of ``epoch`` (a resumed run)."""
        self.epoch, self.batch, self._iter = epoch, batch, None
