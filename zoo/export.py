"""``zoo export``: a checkpoint as one ONNX or TorchScript graph, preprocessing and decoding inside.

The graph takes an image batch ``[N, C, S, S]`` at the recipe's input size (``S = data.image_size``, ``C =
data.channels``): ``uint8`` pixels 0..255 (default) or ``float`` pixels in [0, 1]. It divides by 255 and normalises
with the recipe's ``data.mean`` / ``data.std``, runs backbone (→ neck) → heads, and ends with each head task's
``Task.export`` (probabilities, decoded boxes after class-wise NMS, masks, greedy caption tokens). Resizing an image
to ``S x S`` (``aug.resize``: stretch or letterbox) is left to the caller; the metadata says which, and
``tools/onnx_predict.py`` shows it. Output names are the task's (``probs``), prefixed ``NAME/`` for named heads
(``det/boxes``).

The metadata (ONNX ``metadata_props["zoo"]``, TorchScript extra file ``zoo.json``, and always ``FILE.json`` beside
the model) holds: tasks, class names / vocabulary per head, input name, dtype, shape, size, channels, resize mode,
mean/std, output names, the heads' specs (predict options: thresholds, ``max_length``) and the zoo version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from zoo import version as zoo_version
from zoo.errors import ZooError
from zoo.recipe.parts import ModelSpec
from zoo.recipe.tree import to_data
from zoo.task import Geometry

__all__ = ["ExportGraph", "export", "export_module", "export_metadata", "read_metadata", "FORMATS"]

log = logging.getLogger(__name__)
FORMATS = ("onnx", "torchscript")
INPUT_NAME = "images"


class ExportGraph(nn.Module):
    """Pixels ``[N, C, S, S]`` → the heads' exported outputs, as a tuple in :attr:`output_names` order.

    Args:
        module: a loaded ``ZooModule`` (``zoo.engine.load_module``).
        input_dtype: "uint8" (pixels 0..255) or "float" (pixels in [0, 1]).

    Raises:
        ZooError: a head whose task has no ``Task.export``.
    """

    def __init__(self, module: Any, *, input_dtype: Literal["uint8", "float"] = "uint8") -> None:
        super().__init__()
        recipe = module.recipe
        for name, ctx in module.contexts.items():
            if type(ctx.spec).task.export is None:
                raise ZooError(f"{ModelSpec.path(name)}: the {type(ctx.spec).task.name} task ({type(ctx.spec).__name__}) "
                               f"cannot be exported: its Task has no export hook (see zoo.task.Task.export)")
        self.model, self.contexts, self.single = module.model, module.contexts, module.model.single
        self.input_dtype = input_dtype
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(recipe.data.mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(recipe.data.std, dtype=torch.float32).reshape(shape))
        self.size, self.channels = recipe.data.image_size, recipe.data.channels
        self.resize = recipe.aug.resize
        self.output_names = self._names()

    def _named_outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels = images.float() / 255 if self.input_dtype == "uint8" else images.float()
        outputs = self.model((pixels - self.mean) / self.std)
        per_head = {"": outputs} if self.single else outputs
        geometry = Geometry(input_size=tuple(images.shape[-2:]), resize=self.resize)
        named = {}
        for name, ctx in self.contexts.items():
            for key, value in type(ctx.spec).task.export(per_head[name], ctx, geometry).items():
                named[f"{ModelSpec.prefix(name)}{key}"] = value
        return named

    def _names(self) -> list[str]:
        with torch.no_grad():
            return list(self._named_outputs(self.example(1)))

    def example(self, batch: int = 2) -> torch.Tensor:
        """A pixel batch of the input's dtype and shape (random, seeded), for tracing."""
        g = torch.Generator().manual_seed(0)
        pixels = torch.randint(0, 256, (batch, self.channels, self.size, self.size), generator=g, dtype=torch.uint8)
        return pixels if self.input_dtype == "uint8" else pixels.float() / 255

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self._named_outputs(images).values())


def export_metadata(graph: ExportGraph, module: Any, *, fmt: str, dynamic_batch: bool, batch: int) -> dict[str, Any]:
    """What travels with an exported file (see the module docstring)."""
    recipe = module.recipe
    heads = {}
    for name, ctx in module.contexts.items():
        task = type(ctx.spec).task
        prefix = ModelSpec.prefix(name)
        heads[name] = {"task": task.name, "classes": list(ctx.classes), "spec": to_data(ctx.spec),
                       "outputs": [o for o in graph.output_names if o.startswith(prefix) and "/" not in o[len(prefix):]]}
    return {
        "zoo_version": zoo_version(), "format": fmt, "recipe": recipe.name,
        "tasks": {name: h["task"] for name, h in heads.items()}, "heads": heads,
        "input": {"name": INPUT_NAME, "dtype": graph.input_dtype, "layout": "NCHW",
                  "shape": ["N" if dynamic_batch else batch, graph.channels, graph.size, graph.size],
                  "size": graph.size, "channels": graph.channels, "resize": graph.resize,
                  "range": "0..255" if graph.input_dtype == "uint8" else "0..1",
                  "mean": list(recipe.data.mean), "std": list(recipe.data.std)},
        "outputs": graph.output_names,
        "coordinates": "boxes are xyxy in model-input pixels; map them back with the input's resize mode",
    }


def export(checkpoint: str | Path, *, fmt: str = "onnx", out: str | Path | None = None, dynamic_batch: bool = False,
           batch: int = 1, opset: int = 17, input_dtype: Literal["uint8", "float"] = "uint8",
           overrides: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """Exports a checkpoint; returns the written file and its metadata (also written to ``FILE.json``).

    Args:
        checkpoint: a zoo checkpoint.
        fmt: "onnx" or "torchscript" (a traced ``torch.jit`` module).
        out: the file (default: beside the checkpoint, ``best.onnx`` / ``best.torchscript.pt``).
        dynamic_batch: the batch dimension is free (ONNX: a symbolic ``N``); otherwise fixed at ``batch``.
        batch: the example batch traced, and the fixed batch size without ``dynamic_batch``.
        opset: ONNX opset version.
        input_dtype: "uint8" or "float".
        overrides: dotted path → value changes to the saved recipe (predict options, e.g.
            ``{"model.head.score_threshold": 0.3}``, become constants of the graph).

    Raises:
        ZooError: an unknown format, a head that cannot be exported, or an exporter failure (nothing is left at
            ``out``).
    """
    from zoo.engine.run import load_module

    if fmt not in FORMATS:
        raise ZooError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    suffix = ".onnx" if fmt == "onnx" else ".torchscript.pt"
    out = Path(out) if out is not None else Path(checkpoint).with_suffix(suffix)
    return export_module(load_module(checkpoint, overrides), out, fmt=fmt, dynamic_batch=dynamic_batch, batch=batch,
                         opset=opset, input_dtype=input_dtype)


def export_module(module: Any, out: str | Path, *, fmt: str = "onnx", dynamic_batch: bool = False, batch: int = 1,
                  opset: int = 17, input_dtype: Literal["uint8", "float"] = "uint8") -> tuple[Path, dict[str, Any]]:
    """:func:`export` of a loaded ``ZooModule`` to ``out``."""
    if fmt not in FORMATS:
        raise ZooError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if batch < 1:
        raise ZooError(f"--batch {batch}: the traced batch size is at least 1")
    module = module.cpu().eval()
    graph = ExportGraph(module, input_dtype=input_dtype).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = export_metadata(graph, module, fmt=fmt, dynamic_batch=dynamic_batch, batch=batch)
    example = graph.example(batch)
    try:
        with torch.no_grad(), warnings.catch_warnings(), _quiet_stdout():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings: parity is tested, not assumed
            if fmt == "onnx":
                _export_onnx(graph, example, out, info, dynamic_batch=dynamic_batch, opset=opset)
            else:
                _export_torchscript(graph, example, out, info, dynamic_batch=dynamic_batch)
    except ZooError:
        out.unlink(missing_ok=True)
        raise
    except Exception as e:  # noqa: BLE001  (any exporter failure: refuse clearly, leave no broken file)
        out.unlink(missing_ok=True)
        tasks = ", ".join(sorted(set(info["tasks"].values())))
        first = str(e).splitlines()[0] if str(e) else ""
        raise ZooError(f"cannot export the {tasks} model of recipe {module.recipe.name!r} to {fmt}: "
                       f"{type(e).__name__}: {first}") from None
    Path(f"{out}.json").write_text(json.dumps(info, indent=1))
    return out, info


def _export_onnx(graph: ExportGraph, example: torch.Tensor, out: Path, info: dict, *, dynamic_batch: bool,
                 opset: int) -> None:
    try:
        import onnx
    except ImportError:
        raise ZooError("zoo export --format onnx needs the onnx package: pip install 'zoo[export]'") from None
    names = graph.output_names
    axes = None
    if dynamic_batch:  # outputs of flat detections ([M, ...]) are free anyway; per-image outputs follow the batch
        axes = {INPUT_NAME: {0: "N"}, **{n: {0: "M" if _is_flat(n) else "N"} for n in names}}
    torch.onnx.export(graph, (example,), str(out), dynamo=False, input_names=[INPUT_NAME], output_names=names,
                      dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
    model = onnx.load(str(out))
    entry = model.metadata_props.add()
    entry.key, entry.value = "zoo", json.dumps(info)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


_FLAT_OUTPUTS = ("boxes", "scores", "labels", "batch_index")  # detection: one row per kept box of the whole batch


def _is_flat(name: str) -> bool:
    return name.rsplit("/", 1)[-1] in _FLAT_OUTPUTS


def _export_torchscript(graph: ExportGraph, example: torch.Tensor, out: Path, info: dict, *,
                        dynamic_batch: bool) -> None:
    traced = torch.jit.trace(graph, (example,), check_trace=False)
    if dynamic_batch:  # a trace may have recorded the batch size as a constant: run it on another one
        other = torch.cat([example, example[:1]])
        try:
            traced(other)
        except RuntimeError as e:
            raise ZooError(f"the traced graph of recipe {info['recipe']!r} only runs at batch {len(example)} "
                           f"({str(e).splitlines()[0]}); export without --dynamic-batch") from None
    torch.jit.save(traced, str(out), _extra_files={"zoo.json": json.dumps(info)})


@contextlib.contextmanager
def _quiet_stdout():
    """The legacy ONNX exporter prints whole graphs from C++ on some failures: keep them off the terminal (the
    failure itself becomes a one-line ZooError)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an exported file (its ``FILE.json`` sidecar)."""
    sidecar = Path(f"{path}.json")
    if not sidecar.is_file():
        raise ZooError(f"{path}: no {sidecar.name} beside it; export with `zoo export`")
    return json.loads(sidecar.read_text())

