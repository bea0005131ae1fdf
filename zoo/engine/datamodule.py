"""The one LightningDataModule: a dataset adapter's splits, the recipe's augmentation, fed loaders."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from zoo.data.base import DataSplits, TransformedDataset
from zoo.data.targets import SamplePreparer, collate_samples
from zoo.errors import ZooError
from zoo.recipe import Recipe

__all__ = ["ZooDataModule", "SeededOrder", "ResumableLoader"]


def lightning_limit(limit: int | float) -> int | float:
    """Lightning's ``limit_*_batches``: an int counts batches, a float ≤ 1 is a fraction; a float above 1 counts."""
    return limit if isinstance(limit, int) or limit <= 1 else int(limit)


class SeededOrder(Sampler):
    """Sample order and augmentation seeds that depend only on ``(seed, epoch, index)``, sharded across ranks.

    Yields ``(index, sample seed)``; the order of epoch ``e`` is a permutation drawn from a generator seeded with
    ``(seed, e)`` (the identity when not shuffling). Lightning calls ``set_epoch`` before every epoch, so a run
    resumed at epoch ``e`` sees exactly the batches and augmentations the uninterrupted run saw, whatever the number
    of worker processes. Under data parallelism rank ``r`` of ``w`` takes every ``w``-th sample of that order from
    the ``r``-th: training pads the order to a multiple of ``w`` (every rank steps equally often), evaluation does
    not (every sample counted once, so metrics equal a single process's).
    """

    def __init__(self, size: int, *, seed: int, shuffle: bool, rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0
        self.rank, self.world = rank, world
        self._resume: tuple[int, int] | None = None  # (epoch, samples already trained in it): see resume_at

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, skip: int) -> None:
        """The next pass over ``epoch`` leaves out its first ``skip`` samples (a run resumed mid-epoch); once."""
        self._resume = (epoch, skip)

    def _padded(self) -> bool:
        return self.shuffle and self.world > 1

    def __len__(self) -> int:
        if self._padded():
            return -(-self.size // self.world)
        return len(range(self.rank, self.size, self.world))

    def __iter__(self):
        base = (self.seed * 1_000_003 + self.epoch) * 10_000_019
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(base % 2**63)).tolist()
        else:
            order = list(range(self.size))
        if self._padded():
            order += order[:len(self) * self.world - self.size]
        order = order[self.rank::self.world]
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip, self._resume = self._resume[1], None
        return iter((i, (base + i) % 2**31) for i in order[skip:])


class ResumableLoader(DataLoader):
    """The training loader, resumable mid-epoch (a run checkpointed every ``trainer.checkpoint_every_n_steps``).

    Lightning treats a loader with ``state_dict``/``load_state_dict`` as stateful: it saves the state in every
    checkpoint and hands it back before a resumed run iterates, so the interrupted epoch goes on with the first
    batch it had not trained on (its order and augmentation seeds are ``SeededOrder``'s, the same as before).
    """

    trained: Callable[[], int] = staticmethod(lambda: 0)  # batches trained this epoch (Lightning's count)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.trained()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_at(state["epoch"], state["batches"] * self.batch_size)


class ZooDataModule(L.LightningDataModule):
    """Loaders over ``splits`` (from ``recipe.data.setup()``), with the recipe's albumentations pipelines.

    Args:
        recipe: supplies batch size, workers, image size, normalisation and augmentation.
        splits: the adapter's samples; reading them is the adapter's business, done before this.
    """

    def __init__(self, recipe: Recipe, splits: DataSplits) -> None:
        super().__init__()
        self.recipe, self.splits = recipe, splits

    def _loader(self, split: str, *, train: bool) -> DataLoader:
        d = self.recipe.data
        source = getattr(self.splits, split)
        if len(source) == 0:
            raise ZooError(f"the {split} split of {type(d).__name__} is empty; give it images (a {split}/ folder "
                           f"or a non-zero data.{split}_fraction)")
        prepare = SamplePreparer(self.recipe.transform(train=train), self.recipe.target_keys())
        workers = d.num_workers
        # Ranks shard the data here, not through Lightning's DistributedSampler (which pads evaluation splits with
        # repeated samples and hides SeededOrder's epoch); the trainer runs with use_distributed_sampler=False.
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        order = SeededOrder(len(source), seed=self.recipe.seed, shuffle=train, rank=rank, world=world)
        return (ResumableLoader if train else DataLoader)(
            TransformedDataset(source, prepare),
            batch_size=d.batch_size,
            sampler=order,
            drop_last=train and len(order) > d.batch_size,  # no tiny last batch upsetting BatchNorm
            num_workers=workers,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate_samples,
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train", train=True)
        if self.trainer is not None:
            progress = self.trainer.fit_loop.epoch_loop.batch_progress
            loader.trained = lambda: progress.current.processed
        return loader

    @property
    def batch_size(self) -> int:
        """``data.batch_size``; settable, as Lightning's batch-size finder does (``zoo tune batch``)."""
        return self.recipe.data.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.recipe = self.recipe.override(**{"data.batch_size": int(value)})

    def steps_per_epoch(self) -> int:
        """Optimizer steps per training epoch: batches (last partial one dropped, ``trainer.limit_train_batches``)
        over ``trainer.accumulate_grad_batches``. Known without making a loader, so the learning-rate schedule is
        built before Lightning restores a resumed run's loader state (``trainer.estimated_stepping_batches`` would
        make the loader too early)."""
        world = self.trainer.world_size if self.trainer is not None else 1
        size, batch = -(-len(self.splits.train) // world), self.recipe.data.batch_size  # this rank's share
        batches = size // batch if size > batch else 1
        limit = lightning_limit(self.recipe.trainer.limit_train_batches)
        batches = min(batches, limit) if isinstance(limit, int) else max(1, int(batches * limit))
        return max(1, -(-batches // self.recipe.trainer.accumulate_grad_batches))

    def on_after_batch_transfer(self, batch: tuple, dataloader_idx: int) -> tuple:
        if self.recipe.trainer.channels_last:  # the layout the weights have (zoo.engine.speed)
            images, targets = batch
            return images.contiguous(memory_format=torch.channels_last), targets
        return batch

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def split_loader(self, split: str) -> DataLoader:
        """An evaluation loader over any split (``zoo eval --split``)."""
        return self._loader(split, train=False)
