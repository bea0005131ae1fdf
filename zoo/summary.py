"""``zoo summary``: a per-layer table of a model's shapes, parameters, activation memory and FLOPs.

One forward pass of a single image (batch 1, eval mode, no gradients) with forward hooks on every module. The rows,
in the order the calls finish: every layer, i.e. module without children (conv, linear, pool, norm, activation,
dropout, ...), and every container whose own code did something the layers inside it did not: allocated a new
output (an inception module's concatenation, a residual unit's sum), ran a functional matmul, or owns parameters
directly. A module called twice gives two rows; its parameters are counted on the first.

What the columns count:

- ``output_shape``: ``[C, H, W]`` of the layer's output, without the batch dimension.
- ``params``: the layer's own parameters; the rows sum to ``total_params``.
- ``activation_bytes``: fp32 bytes (4 per value) of the layer's output for one image, counted where the memory is
  allocated: an output that shares storage with a tensor already counted (an in-place ReLU, eval-mode dropout, a
  flatten view) counts 0, so the rows sum to ``total_activation_bytes``. The input image is not counted.
- ``flops``: from :class:`torch.utils.flop_counter.FlopCounterMode`: 2 per multiply-add of convolutions and matrix
  products; element-wise work (norms, activations, pooling, additions) counts 0. ``total_macs = total_flops / 2``.

Training memory is an estimate. Per image: ``training_bytes_per_image = 2 * total_activation_bytes`` (backward keeps
every forward activation and allocates a gradient of the same size). Per model, whatever the batch size:
``training_state_bytes = 3 * 4 * total_params`` (fp32 weights, their gradients and SGD's momentum; Adam keeps one
more copy). A batch of ``B`` needs about ``B * training_bytes_per_image + training_state_bytes`` plus the
framework's workspace.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from zoo.errors import ZooError

__all__ = ["LayerRow", "ModelSummary", "summarize_module", "summarize", "parse_input", "write_json"]

_BYTES_PER_VALUE = 4  # fp32


@dataclass(frozen=True)
class LayerRow:
    """One layer call: ``output_shape`` is ``[C, H, W]`` (a list of such for several outputs)."""

    name: str
    type: str
    output_shape: list
    params: int
    activation_bytes: int
    flops: int


@dataclass(frozen=True)
class ModelSummary:
    """A model's layer rows and totals (see the module doc for what each number counts)."""

    name: str  # what was summarised, e.g. "vgg16_d + paper classifier (1000 classes)"
    input: tuple[int, int, int]  # (C, H, W) of the image
    layers: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    total_flops: int = 0

    @property
    def total_macs(self) -> int:
        return self.total_flops // 2

    @property
    def total_activation_bytes(self) -> int:
        return sum(r.activation_bytes for r in self.layers)

    @property
    def training_bytes_per_image(self) -> int:
        return 2 * self.total_activation_bytes

    @property
    def training_state_bytes(self) -> int:
        return 3 * _BYTES_PER_VALUE * self.total_params

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "input": list(self.input), "layers": [asdict(r) for r in self.layers],
            "total_params": self.total_params, "total_flops": self.total_flops, "total_macs": self.total_macs,
            "total_activation_bytes": self.total_activation_bytes,
            "training_bytes_per_image": self.training_bytes_per_image,
            "training_state_bytes": self.training_state_bytes,
        }

    def table(self) -> str:
        """The rows and totals as fixed-width text."""
        head = ("layer", "type", "output", "params", "activations", "FLOPs")
        rows = [(r.name, r.type, _shape(r.output_shape), f"{r.params:,}", _size(r.activation_bytes),
                 _count(r.flops)) for r in self.layers]
        widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]

        def fmt(row: tuple[str, ...]) -> str:  # text columns left-aligned, numbers right-aligned
            return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

        c, h, w = self.input
        lines = [f"{self.name}, input {c}x{h}x{w}", fmt(head), *map(fmt, rows), "",
                 f"total params        {self.total_params:,}",
                 f"total FLOPs         {_count(self.total_flops)} ({_count(self.total_macs)} multiply-adds)",
                 f"activations         {_size(self.total_activation_bytes)} per image (fp32, forward)",
                 f"training memory     ~{_size(self.training_bytes_per_image)} per image (activations and their "
                 f"gradients) + {_size(self.training_state_bytes)} per model (weights, gradients, SGD momentum)"]
        return "\n".join(lines)


def _shape(shape: list) -> str:
    """``[96, 55, 55]`` → ``96x55x55``; several outputs are joined with commas."""
    if shape and not isinstance(shape[0], int):
        return ", ".join(map(_shape, shape))
    return "x".join(map(str, shape))


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _count(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def summarize_module(model: nn.Module, input_shape: tuple[int, int, int], *, name: str = "") -> ModelSummary:
    """Runs ``model`` on one zero image of ``input_shape`` ``(C, H, W)`` and tabulates its layers.

    The model runs in eval mode (its mode is restored afterwards) on the device of its first parameter.

    Raises:
        ZooError: the model cannot run on that input (too small, wrong channel count).
    """
    param = next(model.parameters(), None)
    x = torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu")
    rows: list[LayerRow] = []
    counted: set[nn.Module] = set()
    seen_storage = {x.untyped_storage().data_ptr()}
    keep: list[torch.Tensor] = []  # outputs stay alive so that freed memory cannot be reused under a seen address
    starts: list[tuple[int, int]] = []
    counter = FlopCounterMode(display=False)

    def before(module: nn.Module, args: Any) -> None:
        starts.append((counter.get_total_flops(), len(rows)))

    def after(name: str, module: nn.Module, args: Any, output: Any) -> None:
        flops_at_start, first_row = starts.pop()
        # A container's hook fires after its children's: it reports only what they did not.
        flops = counter.get_total_flops() - flops_at_start - sum(r.flops for r in rows[first_row:])
        tensors = _tensors(output)
        new_bytes = 0
        for t in tensors:
            ptr = t.untyped_storage().data_ptr()
            if ptr not in seen_storage:
                seen_storage.add(ptr)
                new_bytes += t[0].numel() * _BYTES_PER_VALUE if t.ndim else _BYTES_PER_VALUE
            keep.append(t)
        params = 0 if module in counted else sum(p.numel() for p in module.parameters(recurse=False))
        counted.add(module)
        is_leaf = next(module.children(), None) is None
        # A container gets a row only for what its own code did: a concatenation or a residual sum (new memory),
        # a functional matmul (FLOPs), parameters of its own.
        if is_leaf or params or new_bytes or flops:
            shapes = [list(t.shape[1:]) for t in tensors]
            rows.append(LayerRow(name=name, type=type(module).__name__,
                                 output_shape=shapes[0] if len(shapes) == 1 else shapes, params=params,
                                 activation_bytes=new_bytes, flops=int(flops)))

    handles = []
    for layer_name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(lambda m, a, o, n=layer_name: after(n, m, a, o)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(x)
    except RuntimeError as e:
        c, h, w = input_shape
        raise ZooError(f"{name or type(model).__name__} cannot run on a {c}x{h}x{w} input: "
                       f"{str(e).splitlines()[0]}") from e
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    total_params = sum(p.numel() for p in model.parameters())
    return ModelSummary(name=name or type(model).__name__, input=tuple(input_shape), layers=rows,
                        total_params=total_params, total_flops=int(counter.get_total_flops()))


def parse_input(text: str) -> tuple[int, int, int]:
    """``"3x227x227"`` → ``(3, 227, 227)``.

    Raises:
        ZooError: not three positive integers joined by ``x``.
    """
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ZooError(f"--input must be CxHxW with positive integers, e.g. 3x224x224; got {text!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def _is_checkpoint(target: str) -> bool:
    return target.endswith(".ckpt") or Path(target).expanduser().is_file()


def summarize(target: str, *, input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None,
              backbone_only: bool = False) -> ModelSummary:
    """Summary of a registered backbone name or of a zoo checkpoint's model.

    Args:
        target: a backbone name (``zoo backbones`` lists them) or a checkpoint path (``runs/x/best.ckpt``).
        input_shape: ``(C, H, W)``; default: the backbone's design input (a checkpoint: its recipe's channels
            and image size).
        num_classes: for a zoo family with a published classifier (AlexNet, VGG, GoogLeNet, the ResNets, ...),
            the classifier's outputs; default: the paper's (1000 for ImageNet nets, 10 for CIFAR nets).
        backbone_only: summarise the feature extractor alone, without the paper's classifier.

    A name whose family has a paper classifier is summarised with it, so that the totals are the paper's
    (VGG-16: 138,357,544 parameters); other names (timm, torchvision, LeNet-5) as the feature extractor.

    Raises:
        ZooError: an unknown name (with close matches), an unreadable checkpoint, or contradicting options.
    """
    if _is_checkpoint(target):
        if num_classes is not None or backbone_only:
            raise ZooError("--num-classes and --backbone-only apply to backbone names, not to a checkpoint")
        return _summarize_checkpoint(target, input_shape)

    from zoo.backbones import create_backbone, default_input, resolve_backbone
    from zoo.backbones.own import OWN_BACKBONES
    from zoo.backbones.paper_classifier import with_paper_head

    if num_classes is not None and backbone_only:
        raise ZooError("--num-classes builds the paper's classifier; it contradicts --backbone-only")
    source, bare = resolve_backbone(target)
    shape = input_shape or default_input(target)
    if source == "zoo":
        body = OWN_BACKBONES.get(bare).builder(in_chans=shape[0])
        if backbone_only or (num_classes is None and not hasattr(body, "paper_head")):
            return summarize_module(body, shape, name=f"{target} (backbone)")
        model = with_paper_head(body, num_classes=num_classes)
        n = num_classes if num_classes is not None else body.paper_num_classes
        return summarize_module(model, shape, name=f"{target} + paper classifier ({n} classes)")
    if num_classes is not None:
        raise ZooError(f"--num-classes: {target} is a {source} backbone; only zoo families carry a paper classifier")
    return summarize_module(create_backbone(target, in_chans=shape[0]).body, shape, name=f"{target} (backbone)")


def _summarize_checkpoint(path: str, input_shape: tuple[int, int, int] | None) -> ModelSummary:
    from zoo.engine import load_module

    if not Path(path).expanduser().is_file():
        raise ZooError(f"checkpoint {path} does not exist")
    module = load_module(path)
    recipe = module.recipe
    if input_shape is None:
        size = getattr(recipe.data, "image_size", None)
        if size is None:
            from zoo.backbones import default_input

            input_shape = default_input(recipe.model.backbone.name)
        else:
            input_shape = (recipe.model.backbone.in_chans, size, size)
    return summarize_module(module.model, input_shape, name=f"{path} ({recipe.name}: {recipe.model.backbone.name})")


def write_json(summary: ModelSummary, path: str | Path) -> None:
    """Writes ``summary.to_dict()`` (the ``--json`` format) to ``path``, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary.to_dict(), indent=1))
