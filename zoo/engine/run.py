"""Train, evaluate and predict: the three things the CLI does, for any task."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from zoo.data.base import DataSplits
from zoo.engine.checkpoint import AtomicCheckpointIO, migrate_checkpoint, read_checkpoint
from zoo.engine.datamodule import ZooDataModule, lightning_limit
from zoo.engine.examples import (decode_outputs, draw_prediction, picture_grid, save_prediction_grid,
                                  save_worst_examples, to_uint8_images)
from zoo.engine.finetune import BackboneFreeze, frozen_parameters
from zoo.engine.finite import FiniteLoss
from zoo.engine.module import CHECKPOINT_KEY, ZooModel, ZooModule
from zoo.engine.progress import log_evaluation, progress_callbacks, recipe_hparams, show_progress_bar
from zoo.engine.resume import RngStates, clear_run, existing_run, resume_recipe
from zoo.engine.speed import ModelSpeed
from zoo.errors import CheckpointError, RecipeError, ZooError
from zoo.recipe import Recipe
from zoo.recipe.parts import ModelSpec
from zoo.report import evaluation_record, write_report

__all__ = ["train", "evaluate", "is_main_process", "predict", "check_model", "load_module", "prepare_data",
           "picture_grid", "to_uint8_images", "decode_outputs", "draw_prediction", "save_prediction_grid"]

log = logging.getLogger(__name__)


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=".*number of training batches.*smaller than the logging interval.*")
    # torch deprecated isinstance checks against LeafSpec, which Lightning's pytree helper still makes (every run)
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*", category=FutureWarning)
    # a frozen backbone's BatchNorm layers are in eval mode on purpose (model.backbone.freeze_bn)
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")


def prepare_data(recipe: Recipe) -> DataSplits:
    """Runs the adapter's ``setup`` and checks each head against the classes of its target."""
    recipe.data.preflight()
    splits = recipe.data.setup()
    for name, (head, _) in recipe.heads().items():
        key = type(head).task.target
        if key != "image" and key not in splits.classes:
            raise ZooError(f"{type(recipe.data).__name__} set up targets {sorted(splits.classes)}, not {key!r} "
                           f"that {ModelSpec.path(name)} needs")
        classes = splits.classes.get(key, ())
        if head.num_classes is not None and head.num_classes != len(classes):
            raise RecipeError(f"{ModelSpec.path(name)}.num_classes", f"is {head.num_classes} but the data has "
                                                                     f"{len(classes)} classes {list(classes)[:10]}")
    return splits


_PLACEHOLDER_CLASSES = 8  # classes assumed for a target whose names only the data knows (zoo check reads no data)


def check_model(recipe: Recipe) -> ZooModel:
    """Builds the recipe's model on the ``meta`` device (no memory, no weights, no data) and runs a dummy batch of the
    recipe's input size through backbone, neck and heads, so a bad level, mismatched channels or a head that cannot
    take the backbone's maps fail here, naming the recipe path. Targets whose classes only the data knows get
    placeholder classes."""
    recipe = recipe.override(**{"model.backbone.pretrained": False, "model.weights": None})
    known = recipe.data.target_classes()
    classes = {key: known.get(key) or tuple(f"class{i}" for i in range(_PLACEHOLDER_CLASSES))
               for key in recipe.target_keys()}
    with torch.device("meta"):
        model = ZooModel(recipe, classes).eval()
        size = recipe.data.image_size
        images = torch.zeros(2, recipe.data.channels, size, size)
        try:
            model.run_heads(images)
        except ZooError:
            raise
        except NotImplementedError as e:  # an operator without a meta kernel: the build itself succeeded
            log.info("zoo check: built the model; the dummy forward needs an operator meta tensors lack (%s)", e)
        except Exception as e:  # noqa: BLE001  (shape errors of any kind: say where and what)
            raise RecipeError("model", f"a dummy batch [2, {recipe.data.channels}, {size}, {size}] does not run "
                                       f"through backbone {recipe.model.backbone.name!r} and the head(s): "
                                       f"{type(e).__name__}: {e}") from None
        frozen_parameters(recipe, model.backbone)  # freeze_stages within the backbone's levels
        if recipe.optim.layer_decay is not None:
            model.backbone.layer_ids()
    return model


def _trainer(recipe: Recipe, out: Path | None, callbacks: list, *, logger: Any = False, **overrides: Any) -> L.Trainer:
    t = recipe.trainer
    kwargs = dict(
        max_epochs=t.max_epochs, accelerator=t.accelerator, strategy=t.strategy,
        devices=list(t.devices) if isinstance(t.devices, tuple) else t.devices,
        num_nodes=t.num_nodes,
        precision=t.precision, deterministic=t.deterministic, gradient_clip_val=t.gradient_clip_val,
        limit_train_batches=lightning_limit(t.limit_train_batches),
        limit_val_batches=lightning_limit(t.limit_val_batches),
        limit_test_batches=lightning_limit(t.limit_test_batches),
        log_every_n_steps=t.log_every_n_steps, callbacks=callbacks, logger=logger, max_time=t.max_time,
        accumulate_grad_batches=t.accumulate_grad_batches,
        default_root_dir=str(out) if out else None, plugins=[AtomicCheckpointIO()],
        enable_model_summary=False, enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        use_distributed_sampler=False,  # ZooDataModule shards by rank itself (SeededOrder)
    )
    kwargs["enable_progress_bar"] = show_progress_bar(t.progress_bar)
    kwargs.update(overrides)
    setting = "bar" if kwargs["enable_progress_bar"] else "lines"
    kwargs["callbacks"] = [*kwargs["callbacks"], *progress_callbacks(setting, out, t.log_every_n_steps)]
    return L.Trainer(**kwargs)


def is_main_process() -> bool:
    """Whether this process is rank 0 of its run, as the launcher's environment says before any process group
    exists: ``RANK`` (torchrun), ``SLURM_PROCID``, or ``LOCAL_RANK`` and ``NODE_RANK`` (Lightning's DDP launcher
    starts the other ranks with them set). A plain process is the main one."""
    env = os.environ
    if "RANK" in env:
        return env["RANK"] == "0"
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and env["SLURM_NTASKS"] != "1":
        return env["SLURM_PROCID"] == "0"
    return env.get("LOCAL_RANK", "0") == "0" and env.get("NODE_RANK", "0") == "0"


def _loggers(recipe: Recipe, out: Path, version: str) -> list:
    """The loggers ``trainer.loggers`` names, writing under ``out`` only (nothing that needs a network)."""
    made = []
    for name in recipe.trainer.loggers:
        if name == "csv":
            made.append(CSVLogger(out, name="logs", version=version))
        elif name == "tensorboard":
            made.append(TensorBoardLogger(out, name="logs", version="", default_hp_metric=False))
        else:
            from lightning.pytorch.loggers import MLFlowLogger

            # a folder store needs no server or database; MLflow 3 asks for this opt-in to keep writing one
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            made.append(MLFlowLogger(experiment_name=recipe.name or "zoo", run_name=out.name,
                                     tracking_uri=(out / "mlruns").resolve().as_uri()))
    return made


def _check_runtime(recipe: Recipe) -> None:
    """What the recipe asks of this machine: the accelerator it names is present, the loggers' packages installed."""
    accelerator = recipe.trainer.accelerator
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RecipeError("trainer.accelerator", f"is {accelerator!r} but this machine has no CUDA GPU that torch "
                                                 f"can use; 'auto' takes the GPU when there is one, else the CPU")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise RecipeError("trainer.accelerator", "is 'mps' but Apple's Metal backend is not available here; "
                                                 "use 'auto' or 'cpu'")
    if "mlflow" in recipe.trainer.loggers:
        import importlib.util

        if importlib.util.find_spec("mlflow") is None:
            raise RecipeError("trainer.loggers", "names 'mlflow' but the mlflow package is not installed: "
                                                 "pip install mlflow-skinny (or drop 'mlflow')")


def train(recipe: Recipe, out: str | Path, *, resume: bool = False, overwrite: bool = False) -> dict[str, float]:
    """Fits ``recipe`` and evaluates the best checkpoint on the test split.

    Writes to ``out``: ``best.ckpt``, ``last.ckpt``, ``metrics.json``, ``recipe.json`` / ``recipe.txt``,
    ``data.json`` (split sizes, skipped files), ``logs/`` (CSV and TensorBoard), and the task's pictures.
    A folder that already holds a run is refused unless ``resume`` (continue it from ``last.ckpt`` with the recipe
    stored there; see ``zoo.engine.resume``) or ``overwrite`` (remove what that run wrote, start clean).
    """
    _quiet_lightning()
    out = Path(out)
    if resume and overwrite:
        raise ZooError("--resume continues the run in the folder, --overwrite replaces it: choose one")
    # Under data parallelism every process runs this function; the other ranks start (Lightning's launcher) or run
    # (torchrun, SLURM) beside the main one, so only the main process guards and writes the run folder.
    main = is_main_process()
    found = existing_run(out) if main else []
    if resume:
        recipe = resume_recipe(out, recipe)
    elif found and not overwrite:
        raise ZooError(f"{out} already holds a run ({', '.join(found)}); pass --resume to continue it from its "
                       f"last.ckpt, or --overwrite to remove it and start again (or choose another --out)")
    check_model(recipe)  # a model that cannot be built fails here, before any data is read or file written
    _check_runtime(recipe)
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    splits = prepare_data(recipe)  # the data's checks too, before anything of an earlier run is removed or replaced
    if overwrite and found:
        clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    if main:
        (out / "recipe.json").write_text(json.dumps(recipe.to_data(), indent=1))
        (out / "recipe.txt").write_text(recipe.listing() + "\n")
        (out / "data.json").write_text(json.dumps(data_record(splits), indent=1))
    if splits.skipped and main:
        shown = "; ".join(f"{Path(path).name}: {reason}" for path, reason in splits.skipped[:3])
        more = f"; {len(splits.skipped) - 3} more" if len(splits.skipped) > 3 else ""
        print(f"skipped {len(splits.skipped)} input(s) ({shown}{more}); all listed with their reasons in "
              f"{out / 'data.json'}")
    datamodule = ZooDataModule(recipe, splits)
    module = ZooModule(recipe, splits.classes)
    name, mode = recipe.monitor()
    monitor = f"val/{name}"
    callbacks: list = [
        ModelCheckpoint(dirpath=out, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                        enable_version_counter=False, auto_insert_metric_name=False),
        # last.ckpt after every epoch, improved or not (Lightning's save_last=True now writes it only together with
        # a new best checkpoint, which would leave --resume an older epoch)
        ModelCheckpoint(dirpath=out, filename="last", every_n_epochs=1, save_top_k=1, enable_version_counter=False,
                        auto_insert_metric_name=False),
        LearningRateMonitor(),  # at the schedule's interval: every step, or every epoch
        RngStates(),
        FiniteLoss(),
        ModelSpeed(recipe),
    ]
    if recipe.trainer.checkpoint_every_n_steps:  # last.ckpt mid-epoch too (the epoch-end one above stays)
        callbacks.append(ModelCheckpoint(dirpath=out, filename="last", save_top_k=1, enable_version_counter=False,
                                         every_n_train_steps=recipe.trainer.checkpoint_every_n_steps,
                                         auto_insert_metric_name=False))
    if recipe.model.backbone.frozen:
        callbacks.append(BackboneFreeze(recipe))
    if recipe.trainer.ema_decay is not None:
        callbacks.append(EMAWeightAveraging(decay=recipe.trainer.ema_decay))
    if recipe.trainer.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=recipe.trainer.early_stopping_patience))
    # A resumed run's CSV rows go to logs/resumed_<n>/ (Lightning's CSV writer would replace the earlier rows);
    # TensorBoard appends another event file to logs/.
    version = f"resumed_{len(list((out / 'logs').glob('resumed_*'))) + 1}" if resume else ""
    loggers = _loggers(recipe, out, version)
    # An epoch shorter than log_every_n_steps would never log train/loss: log at least once per epoch.
    steps = datamodule.steps_per_epoch()
    trainer = _trainer(recipe, out, callbacks, logger=loggers,
                       log_every_n_steps=max(1, min(recipe.trainer.log_every_n_steps, steps)))
    for lg in loggers:  # hparams.yaml (and MLflow's params) hold the recipe; TensorBoard gets it with the test metrics
        if not isinstance(lg, TensorBoardLogger):
            lg.log_hyperparams(recipe_hparams(recipe))
    trainer.fit(module, datamodule=datamodule, ckpt_path=out / "last.ckpt" if resume else None)
    if trainer.world_size > 1:  # the test pass runs once, in the main process, on the whole split
        trainer.strategy.barrier("fit done")
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if not trainer.is_global_zero:
            return {}
    best = out / "best.ckpt"
    metrics = evaluate(best, split="test", out=out, splits=splits)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log_evaluation(loggers, recipe, metrics, out, trainer.global_step)
    return metrics


def data_record(splits: DataSplits) -> dict[str, Any]:
    """What ``data.json`` holds: classes per target, split sizes, skipped inputs with their reasons."""
    return {"classes": {k: list(v) for k, v in splits.classes.items()},
            "sizes": {s: len(getattr(splits, s)) for s in ("train", "val", "test")},
            "skipped": [[str(p), r] for p, r in splits.skipped]}


def load_module(checkpoint: str | Path, overrides: dict[str, Any] | None = None) -> ZooModule:
    """Rebuilds the trained module from a checkpoint alone (recipe and classes are inside it); ``overrides``
    (dotted path → value) edit the saved recipe first. Checkpoints of earlier formats are migrated on load."""
    data = read_checkpoint(checkpoint)
    saved = migrate_checkpoint(data[CHECKPOINT_KEY], checkpoint)
    # The weights are in the checkpoint: don't look for the pretrained files the run started from.
    try:
        recipe = Recipe.from_data(saved["recipe"]).override(**{"model.backbone.pretrained": False,
                                                                "model.weights": None, **(overrides or {})})
    except ZooError as e:
        e.add_note(f"in the recipe stored in checkpoint {checkpoint}")
        raise
    module = ZooModule(recipe, saved["classes"])
    try:
        module.load_state_dict(data["state_dict"])
    except RuntimeError as e:  # shapes or keys that are not the recipe's model
        first = [line.strip() for line in str(e).splitlines() if line.strip()][1:3]
        raise CheckpointError(f"{checkpoint}: its weights do not fit the model its recipe builds "
                              f"({'; '.join(first)}); was the checkpoint or its recipe edited?") from None
    module.eval()
    return module


def check_classes(module: ZooModule, splits: DataSplits, checkpoint: str | Path) -> None:
    """Refuses data whose classes are not the ones the checkpoint was trained on."""
    for key, classes in module.classes.items():
        if tuple(splits.classes.get(key, ())) != tuple(classes):
            raise ZooError(f"{checkpoint}: its {key!r} target was trained on classes {list(classes)[:10]}, the data "
                           f"now has {list(splits.classes.get(key, ()))[:10]}")


def evaluate(checkpoint: str | Path, *, split: str = "test", out: str | Path | None = None,
             splits: DataSplits | None = None, overrides: dict[str, Any] | None = None) -> dict[str, float]:
    """Metrics of a checkpoint on one split of its recipe's data; pictures go to ``out`` when given.

    ``overrides`` (dotted path → value) edit the saved recipe for this evaluation only, e.g.
    ``{"aug.input_only_eval": (A.GaussNoise(...),)}`` to measure a model on noisy inputs; the weights stay.
    """
    _quiet_lightning()
    module = load_module(checkpoint, overrides)
    if splits is None:
        splits = prepare_data(module.recipe)
    check_classes(module, splits, checkpoint)
    loader = ZooDataModule(module.recipe, splits).split_loader(split)
    trainer = _trainer(module.recipe, None, [], enable_progress_bar=False, devices=1, num_nodes=1, strategy="auto")
    trainer.test(module, dataloaders=loader, verbose=False)
    metrics = dict(module.last_metrics)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        for name, head_metrics in zip(module.contexts, module.test_metrics.values()):
            head_metrics.save_artifacts(_head_folder(Path(out), name))
        save_prediction_grid(module, loader, Path(out) / f"predictions_{split}.png")
        save_worst_examples(module, loader, Path(out))
        record = evaluation_record(checkpoint=checkpoint, split=split, metrics=metrics, heads=list(module.contexts))
        record["recipe"] = module.recipe.listing()
        record["data"] = data_record(splits)
        (Path(out) / "evaluation.json").write_text(json.dumps(record, indent=1))
        write_report(out)
    return metrics


def _head_folder(out: Path, name: str) -> Path:
    """Where head ``name``'s files go: ``out/<name>/`` (``out`` itself for a single head)."""
    folder = out / name if name else out
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def predict(checkpoint: str | Path, inputs: Sequence[str | Path], *, batch_size: int = 32,
            out: str | Path | None = None, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Predictions for image files or folders: one ``{"image": path, **prediction}`` per image (a named-head model
    gives ``{"image": path, name: prediction, ...}``). ``overrides`` edit the saved recipe, e.g.
    ``{"model.head.score_threshold": 0.5}`` (a head's predict options are fields of its spec).

    With ``out``, writes ``predictions.json``, the tasks' own formats, and each image with its prediction drawn
    (``out/images/``). Undecodable files are skipped with a warning (``zoo.inference.predict_files``).
    """
    from zoo.inference import load, predict_files

    model = load(checkpoint, batch_size=batch_size, overrides=overrides)
    return predict_files(model, inputs, out=out).results
