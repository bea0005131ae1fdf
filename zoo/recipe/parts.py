"""The parts of a recipe that every task shares: backbone, model, optimizer, schedule, trainer, augmentation.

Task parts (heads, losses) live in ``heads/``; dataset adapters in ``zoo/data``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

import torch
from torch import nn

from zoo.backbones import Backbone, create_backbone, resolve_backbone
from zoo.errors import RecipeError, close_matches
from zoo.recipe.spec import Range, spec

__all__ = ["BackboneSpec", "ModelSpec", "Losses", "Optim", "Schedule", "Trainer", "Augment", "SamplePipeline"]


@spec
class BackboneSpec:
    name: str = "lenet5"  # registry name: `zoo backbones` lists them
    pretrained: bool | str = False  # False | True (library default, from the local cache) | weight tag | file
    in_chans: Annotated[int, Range(ge=1)] = 3  # input channels; must equal data.channels
    freeze: bool = False  # fine-tuning: train the heads only (True: a linear probe of a pretrained backbone)
    # fine-tuning: freeze only the first N feature levels (the stem counts to the first; `zoo backbones NAME
    # --features` lists the levels). None: see freeze
    freeze_stages: Annotated[int, Range(ge=1)] | None = None
    freeze_bn: bool = True  # frozen parameters' BatchNorm layers stay in eval mode (their running statistics kept)
    # with freeze or freeze_stages: train the frozen part from this epoch on (0-based, as Lightning counts)
    unfreeze_at_epoch: Annotated[int, Range(ge=1)] | None = None
    unfreeze_lr_mult: Annotated[float, Range(gt=0)] = 0.1  # learning rate of the unfrozen part: its lr x this

    def __post_init__(self) -> None:
        resolve_backbone(self.name)  # unknown names fail here, with close matches
        if self.freeze and self.freeze_stages is not None:
            raise RecipeError("freeze_stages", f"is {self.freeze_stages} but freeze=True already freezes every "
                                               f"stage: set one of them")
        if self.unfreeze_at_epoch is not None and not self.frozen:
            raise RecipeError("unfreeze_at_epoch", f"is {self.unfreeze_at_epoch} but freeze is False: nothing to "
                                                   f"unfreeze (set freeze=True or freeze_stages=N for "
                                                   f"freeze-then-unfreeze)")

    @property
    def frozen(self) -> bool:
        """Whether training starts with some of the backbone frozen."""
        return self.freeze or self.freeze_stages is not None

    def build(self) -> Backbone:
        return create_backbone(self.name, pretrained=self.pretrained, in_chans=self.in_chans)

    def __or__(self, other: Any) -> ModelSpec:
        """``backbone | head`` (one head), ``backbone | {"det": head, "seg": head}`` (named heads), or
        ``backbone | neck`` (then ``| heads``)."""
        if isinstance(other, dict):
            return ModelSpec(backbone=self, heads=other)
        if hasattr(other, "build_neck"):
            return _BackboneWithNeck(self, other)
        return ModelSpec(backbone=self, head=other)


class _BackboneWithNeck:
    """``backbone | neck``, waiting for its head(s)."""

    def __init__(self, backbone: BackboneSpec, neck: Any) -> None:
        self.backbone, self.neck = backbone, neck

    def __or__(self, other: Any) -> ModelSpec:
        if isinstance(other, dict):
            return ModelSpec(backbone=self.backbone, neck=self.neck, heads=other)
        return ModelSpec(backbone=self.backbone, neck=self.neck, head=other)


def _check_head(path: str, head: Any) -> None:
    if not hasattr(head, "build") or not hasattr(type(head), "task"):
        raise RecipeError(path, f"expected a head spec from heads/, got {head!r}")


@spec
class ModelSpec:
    backbone: BackboneSpec  # the feature extractor
    head: Any = None  # one head spec from heads/ (e.g. heads.Classifier); metrics are named as its task names them
    heads: dict[str, Any] | None = None  # several named heads on one backbone; metrics are prefixed "name/"
    neck: Any = None  # optional shared neck between backbone and heads (e.g. heads.yolo.PanNeckSpec)
    weights: str | None = None  # a zoo checkpoint or state dict to start the whole model from (fine-tuning)

    def __post_init__(self) -> None:
        if (self.head is None) == (self.heads is None):
            raise RecipeError("model", "give one head (model.head, `backbone | Head()`) or named heads "
                                       "(model.heads, `backbone | {'det': Yolo(), ...}`), not both and not neither")
        if self.heads is not None:
            if not self.heads:
                raise RecipeError("model.heads", "is empty; name at least one head")
            for name, head in self.heads.items():
                if not isinstance(name, str) or not name.isidentifier():
                    raise RecipeError("model.heads", f"head name {name!r} must be a Python identifier (it becomes "
                                                     f"the metric prefix and the override path model.heads.NAME)")
                _check_head(f"model.heads.{name}", head)
        else:
            _check_head("model.head", self.head)
        if self.neck is not None and not hasattr(self.neck, "build_neck"):
            raise RecipeError("model.neck", f"expected a neck spec (with build_neck), got {self.neck!r}")

    def named_heads(self) -> dict[str, Any]:
        """``{name: head spec}``; the single head of ``model.head`` is named "" (its metrics carry no prefix)."""
        return {"": self.head} if self.head is not None else dict(self.heads)

    @staticmethod
    def path(name: str) -> str:
        """The dotted recipe path of head ``name`` (``model.head`` for the single head)."""
        return f"model.heads.{name}" if name else "model.head"

    @staticmethod
    def prefix(name: str) -> str:
        """What head ``name``'s metric and loss names start with: ``"det/"``; nothing for the single head."""
        return f"{name}/" if name else ""


@spec
class Losses:
    heads: dict[str, Any]  # one loss spec per named head (the same names as model.heads)
    weights: dict[str, float] | None = None  # fixed weight per head's loss (default 1.0 each)
    weighting: Literal["fixed", "uncertainty"] = "fixed"  # uncertainty: learned per-head weights (Kendall et al.)

    def __post_init__(self) -> None:
        for name, loss in self.heads.items():
            if not hasattr(loss, "build") or not hasattr(type(loss), "task"):
                raise RecipeError(f"loss.heads.{name}", f"expected a loss spec from heads/, got {loss!r}")
        unknown = set(self.weights or {}) - set(self.heads)
        if unknown:
            raise RecipeError("loss.weights", f"names {sorted(unknown)}, which have no loss in loss.heads "
                                              f"({sorted(self.heads)})")
        if any(w < 0 for w in (self.weights or {}).values()):
            raise RecipeError("loss.weights", f"must be >= 0, got {self.weights}")

    def weight(self, name: str) -> float:
        return (self.weights or {}).get(name, 1.0)


@spec
class Optim:
    name: Literal["sgd", "adam", "adamw"] = "sgd"  # optimizer
    lr: Annotated[float, Range(gt=0)] = 0.01  # learning rate (per batch of data.batch_size)
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9  # SGD momentum
    nesterov: bool = False  # SGD with Nesterov momentum
    betas: tuple[Annotated[float, Range(ge=0, lt=1)], Annotated[float, Range(ge=0, lt=1)]] = (0.9, 0.999)  # Adam/AdamW
    weight_decay: Annotated[float, Range(ge=0)] = 5e-4  # L2 penalty on weights (not on biases and norms)
    backbone_lr_mult: Annotated[float, Range(gt=0)] = 1.0  # fine-tuning: the backbone's learning rate is lr x this
    # fine-tuning: layer-wise decay; backbone layer i of L (the head is layer L) learns at lr x decay^(L - i).
    # Layers are timm's own grouping for timm models (per block), the feature levels otherwise. None: off
    layer_decay: Annotated[float, Range(gt=0, le=1)] | None = None

    def param_groups(self, params: Iterable[nn.Parameter], *, backbone: Backbone | None,
                     scale: float = 1.0) -> list[dict[str, Any]]:
        """Named parameter groups of the trainable ``params``: ``head`` (everything that is not the backbone) at
        ``lr``, ``backbone`` at ``lr x backbone_lr_mult`` — or, with ``layer_decay``, ``backbone.I`` per layer ``I``
        at ``lr x backbone_lr_mult x layer_decay^(L - I)`` — each with a ``_no_decay`` twin for biases and norms (no
        weight decay); every lr times ``scale``. The names are what the learning-rate monitor logs (``lr/head``)."""
        owner = {id(p): name for name, p in backbone.named_parameters()} if backbone is not None else {}
        layers = backbone.layer_ids() if backbone is not None and self.layer_decay is not None else None
        groups: dict[str, dict[str, Any]] = {}
        for p in params:
            if not p.requires_grad:
                continue
            name, lr = "head", self.lr * scale
            if id(p) in owner:
                name, lr = "backbone", lr * self.backbone_lr_mult
                if layers is not None:
                    layer = layers[0][owner[id(p)]]
                    name, lr = f"backbone.{layer}", lr * self.layer_decay ** (layers[1] - 1 - layer)
            if p.ndim <= 1:
                name = f"{name}_no_decay"
            group = groups.setdefault(name, {"params": [], "name": name, "lr": lr,
                                             "weight_decay": 0.0 if p.ndim <= 1 else self.weight_decay})
            group["params"].append(p)
        return list(groups.values())

    def build(self, model: nn.Module, *, backbone: Backbone | None = None) -> torch.optim.Optimizer:
        """The optimizer over ``param_groups`` of ``model``'s trainable parameters."""
        groups = self.param_groups(model.parameters(), backbone=backbone)
        if self.name == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov)
        cls = torch.optim.Adam if self.name == "adam" else torch.optim.AdamW
        return cls(groups, lr=self.lr, betas=self.betas)


@spec
class Schedule:
    name: Literal["none", "step", "cosine", "plateau"] = "cosine"  # learning-rate schedule
    # when the lr changes: after every optimizer step (warm-up is a ramp) or once per epoch (plateau: always per
    # epoch, it reads the validation metric)
    interval: Literal["step", "epoch"] = "step"
    # linear warm-up from lr/100 (step and cosine); a fraction of an epoch is allowed with interval="step"
    warmup_epochs: Annotated[float, Range(ge=0)] = 0
    step_size: Annotated[int, Range(ge=1)] = 10  # step: epochs between decays
    factor: Annotated[float, Range(gt=0, lt=1)] = 0.1  # step and plateau: lr multiplier at each decay
    patience: Annotated[int, Range(ge=0)] = 3  # plateau: epochs without improvement before a decay
    min_lr: Annotated[float, Range(ge=0)] = 0.0  # cosine and plateau: lowest lr

    def __post_init__(self) -> None:
        if self.interval == "epoch" and self.warmup_epochs != int(self.warmup_epochs):
            raise RecipeError("sched.warmup_epochs", f"is {self.warmup_epochs}: with interval='epoch' the warm-up is "
                                                     f"a whole number of epochs (or use interval='step')")

    def build(self, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int, monitor: str,
              mode: str) -> dict[str, Any] | None:
        """Lightning's ``lr_scheduler`` config for ``configure_optimizers``: torch's schedulers, counted in optimizer
        steps (``steps_per_epoch`` of them per epoch) or in epochs, as ``interval`` says."""
        sched = torch.optim.lr_scheduler
        if self.name == "none":
            return None
        if self.name == "plateau":
            s = sched.ReduceLROnPlateau(optimizer, mode=mode, factor=self.factor, patience=self.patience,
                                        min_lr=self.min_lr)
            return {"scheduler": s, "monitor": monitor, "interval": "epoch", "name": "lr"}
        per = max(1, steps_per_epoch) if self.interval == "step" else 1
        warmup = round(self.warmup_epochs * per)
        if self.name == "step":
            s = sched.StepLR(optimizer, step_size=self.step_size * per, gamma=self.factor)
        else:
            s = sched.CosineAnnealingLR(optimizer, T_max=max(1, epochs * per - warmup), eta_min=self.min_lr)
        if warmup:
            ramp = sched.LinearLR(optimizer, start_factor=0.01, total_iters=warmup)
            s = sched.SequentialLR(optimizer, [ramp, s], milestones=[warmup])
        return {"scheduler": s, "interval": self.interval, "name": "lr"}  # logged as lr/<param group>


@spec
class Trainer:
    max_epochs: Annotated[int, Range(ge=1)] = 10  # passes over the training split
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"  # Lightning accelerator (auto: GPU when present)
    devices: int | str | tuple[int, ...] = "auto"  # Lightning devices: a count (-1: all), "auto", or ids: 0,1 / "0,1"
    strategy: str = "auto"  # Lightning strategy: auto | ddp | ddp_spawn | fsdp ...
    num_nodes: Annotated[int, Range(ge=1)] = 1  # machines of a multi-node run (torchrun or SLURM starts the processes)
    # Lightning precision (fp32 on CPUs: bf16 autocast is slower there)
    precision: Literal["32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true"] = "32-true"
    deterministic: bool = False  # torch deterministic algorithms (slower; bit-reproducible reruns)
    gradient_clip_val: Annotated[float, Range(ge=0)] | None = None  # clip gradient norm
    early_stopping_patience: Annotated[int, Range(ge=1)] | None = None  # stop after N epochs without progress
    # batches per epoch, as in Lightning: an int is a count (1 = one batch), a float a fraction (1.0 = all)
    limit_train_batches: Annotated[int | float, Range(gt=0)] = 1.0
    limit_val_batches: Annotated[int | float, Range(gt=0)] = 1.0  # same, for validation
    limit_test_batches: Annotated[int | float, Range(gt=0)] = 1.0  # same, for the test split (train's final eval, zoo eval)
    log_every_n_steps: Annotated[int, Range(ge=1)] = 10  # training-loss logging period
    max_time: str | None = None  # wall-clock cap of training, Lightning's "DD:HH:MM:SS"; None: no cap
    # exponential moving average of the weights (Lightning's EMAWeightAveraging); validation, best.ckpt, eval and
    # predict use the averaged weights. None: off
    ema_decay: Annotated[float, Range(gt=0, lt=1)] | None = None
    # validation metric that picks best.ckpt, early-stops and drives plateau schedules, as named in metrics.json
    # without "val/" ("top1"; "det/map50" for named heads; "loss"). None: the (first) head's task default
    monitor: str | None = None
    accumulate_grad_batches: Annotated[int, Range(ge=1)] = 1  # one optimizer step per N batches (N x the batch)
    compile: bool = False  # torch.compile backbone and heads before training (GPU: faster steps after a warm-up)
    channels_last: bool = False  # NHWC memory layout of weights and input batches (faster convolutions on GPUs)
    # where metrics are logged, all under OUT/: "csv" (logs/metrics.csv), "tensorboard" (logs/), "mlflow" (a local
    # file store, OUT/mlruns; needs the mlflow package)
    loggers: tuple[Literal["csv", "tensorboard", "mlflow"], ...] = ("csv", "tensorboard")
    # also write last.ckpt every N optimizer steps, so a long epoch can resume mid-way. None: after every epoch only
    checkpoint_every_n_steps: Annotated[int, Range(ge=1)] | None = None
    # "auto": a progress bar in a terminal or a notebook, else one line per epoch (ZOO_PROGRESS=bar|lines overrides
    # auto); "bar" or "lines" always
    progress_bar: Literal["auto", "bar", "lines"] = "auto"

    def __post_init__(self) -> None:
        if len(set(self.loggers)) != len(self.loggers):
            raise RecipeError("trainer.loggers", f"names a logger twice: {self.loggers}")
        devices = self.devices
        if isinstance(devices, int) and devices < 1 and devices != -1:
            raise RecipeError("trainer.devices", f"is {devices}: a count >= 1, -1 (all), 'auto' or a list like '0,1'")
        if isinstance(devices, tuple) and (not devices or min(devices) < 0):
            raise RecipeError("trainer.devices", f"is {devices}: device ids are >= 0")
        if isinstance(devices, str) and devices != "auto" and not all(
                part.strip().isdigit() for part in devices.strip(",").split(",")):
            raise RecipeError("trainer.devices", f"is {devices!r}: a count >= 1, -1 (all), 'auto' or a list like '0,1'")
        from lightning.pytorch.strategies import StrategyRegistry

        strategies = ["auto", *StrategyRegistry.available_strategies()]
        if self.strategy not in strategies:
            hint = close_matches(self.strategy, strategies)
            raise RecipeError("trainer.strategy", f"{self.strategy!r} is not a Lightning strategy"
                                                  + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else "")
                                                  + f" (e.g. 'auto', 'ddp', 'ddp_spawn', 'fsdp', 'deepspeed'; all: "
                                                  f"{', '.join(strategies)})")


class SamplePipeline:
    """One sample's way through the augmentation: shared transforms, input-only transforms, then normalisation.

    Called like an albumentations ``Compose`` (``pipeline(image=..., bboxes=..., mask=...)``) and returning its dict,
    with ``"image"`` the normalised ``[C, H, W]`` float tensor the model sees. Boxes and masks follow the shared
    (geometric) transforms only. When input-only transforms exist (noise for a denoising autoencoder), the dict also
    holds ``"target_image"``: the normalised image before them. ``"pixels"`` is always that image unnormalised
    (the shared transforms' output, usually ``uint8 [H, W, C]``), for tasks whose target is the image in pixel units.
    """

    def __init__(self, shared: Any, input_only: Any | None, finish: Any) -> None:
        self.shared, self.input_only, self.finish = shared, input_only, finish

    def reseed(self, seed: int) -> None:
        """Seeds the random transforms for the next sample (``zoo.engine.datamodule.SeededOrder`` gives each sample of
        each epoch its own seed, so augmentation does not depend on worker processes or on where a run resumed)."""
        self.shared.set_random_seed(seed)
        if self.input_only is not None:
            self.input_only.set_random_seed(seed + 1)

    def __call__(self, **data: Any) -> dict:
        out = self.shared(**data)
        image = out["pixels"] = out["image"]
        if self.input_only is not None:
            out["target_image"] = self.finish(image=image)["image"]
            image = self.input_only(image=image)["image"]
        out["image"] = self.finish(image=image)["image"]
        return out


@spec
class Augment:
    train: tuple[Any, ...] = ()  # albumentations transforms for training images, applied after resizing
    eval: tuple[Any, ...] = ()  # albumentations transforms for val/test/predict images (usually none)
    input_only: tuple[Any, ...] = ()  # training transforms applied to the model input but not to an image target
    input_only_eval: tuple[Any, ...] = ()  # the same for val/test/predict (e.g. noise for a denoising benchmark)
    resize: Literal["stretch", "letterbox"] = "stretch"  # stretch to a square, or keep aspect ratio and pad

    def __post_init__(self) -> None:
        import albumentations as A

        for split in ("train", "eval", "input_only", "input_only_eval"):
            for i, t in enumerate(getattr(self, split)):
                if not isinstance(t, A.BasicTransform | A.BaseCompose):
                    raise RecipeError(f"aug.{split}[{i}]", f"expected an albumentations transform, got {t!r}")

    def compose(self, *, train: bool, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                **compose_kwargs: Any) -> SamplePipeline:
        """The whole pipeline: fit to ``size`` x ``size``, these transforms, normalise, to a ``[C, H, W]`` tensor.

        ``compose_kwargs`` (the targets' ``bbox_params``) go to the shared ``A.Compose``, so boxes follow the image.
        """
        import albumentations as A
        import cv2
        from albumentations.pytorch import ToTensorV2

        if self.resize == "letterbox":
            fit = [A.LongestMaxSize(max_size=size), A.PadIfNeeded(size, size, position="center",
                                                                  border_mode=cv2.BORDER_CONSTANT, fill=0)]
        else:
            fit = [A.Resize(size, size)]
        shared = A.Compose([*fit, *(self.train if train else self.eval)], strict=True, **compose_kwargs)
        extra = self.input_only if train else self.input_only_eval
        input_only = A.Compose(list(extra), strict=True) if extra else None
        finish = A.Compose([A.Normalize(mean=mean, std=std), ToTensorV2()], strict=True)
        return SamplePipeline(shared, input_only, finish)
