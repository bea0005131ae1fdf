"""The one engine every task runs on: a LightningModule, a LightningDataModule, and the run functions."""

from zoo.engine.checkpoint import AtomicCheckpointIO, atomic_torch_save, read_checkpoint
from zoo.engine.datamodule import ZooDataModule
from zoo.engine.module import ZooModule
from zoo.engine.run import evaluate, load_module, predict, train

__all__ = ["AtomicCheckpointIO", "atomic_torch_save", "read_checkpoint", "ZooDataModule", "ZooModule", "evaluate",
           "load_module", "predict", "train"]
