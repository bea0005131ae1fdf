"""The one LightningDataModule: a dataset adapter's splits, the recipe's augmentation, fed loaders."""

from __future__ import annotations


import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from zoo.data.base import DataSplits, TransformedDataset
from zoo.data.targets import SamplePreparer, collate_samples
from zoo.errors import ZooError
from zoo.recipe import Recipe

__all__ = ["ZooDataModule", "SeededOrder"]


class SeededOrder(Sampler):
    """Sample order and augmentation seeds that depend only on ``(seed, epoch, index)``.

    Yields ``(index, sample seed)``; the order of epoch ``e`` is a permutation drawn from a generator seeded with
    ``(seed, e)`` (the identity when not shuffling). Lightning calls ``set_epoch`` before every epoch, so a run
    resumed at epoch ``e`` sees exactly the batches and augmentations the uninterrupted run saw, whatever the number
    of worker processes.
    """

    def __init__(self, size: int, *, seed: int, shuffle: bool) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        base = (self.seed * 1_000_003 + self.epoch) * 10_000_019
        if not self.shuffle:
            return iter((i, (base + i) % 2**31) for i in range(self.size))
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(base % 2**63))
        return iter((i, (base + i) % 2**31) for i in order.tolist())


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
        return DataLoader(
            TransformedDataset(source, prepare),
            batch_size=d.batch_size,
            sampler=SeededOrder(len(source), seed=self.recipe.seed, shuffle=train),
            drop_last=train and len(source) > d.batch_size,  # no tiny last batch upsetting BatchNorm
            num_workers=workers,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate_samples,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def split_loader(self, split: str) -> DataLoader:
        """An evaluation loader over any split (``zoo eval --split``)."""
        return self._loader(split, train=False)
