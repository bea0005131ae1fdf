"""The ``Recipe``: one immutable description of a run, and the loading of recipe files."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from importlib.machinery import SourceFileLoader
from pathlib import Path
from typing import Annotated, Any

from zoo.errors import RecipeError, ZooError
from zoo.recipe.comments import field_comments
from zoo.recipe.parts import Augment, ModelSpec, Optim, Schedule, Trainer
from zoo.recipe.spec import Range, spec
from zoo.recipe.tree import apply_overrides, flatten, from_data, to_data

__all__ = ["Recipe", "load_recipe"]


@spec
class Recipe:
    data: Any  # a dataset adapter spec from zoo.data (DigitsData, ImageFolderData, ShapesData ...)
    model: ModelSpec  # backbone | head, or backbone | {name: head}
    loss: Any  # a loss spec from heads/ matching the head's task; Losses(heads={name: loss}) for named heads
    aug: Augment = Augment()  # albumentations pipelines
    optim: Optim = Optim()  # optimizer, learning rates, weight decay, fine-tuning parameter groups
    sched: Schedule = Schedule()  # learning-rate schedule and warm-up
    trainer: Trainer = Trainer()  # Lightning trainer: devices, precision, epochs, checkpoints, logging, EMA
    seed: Annotated[int, Range(ge=0)] = 0  # seeds python, numpy, torch and the data splits
    name: str = "run"  # names the default run folder runs/<name>

    def __post_init__(self) -> None:
        self.check()

    def heads(self) -> dict[str, tuple[Any, Any]]:
        """``{name: (head spec, loss spec)}``; a single ``model.head`` is named "" (unprefixed metrics)."""
        named = self.model.named_heads()
        if self.model.head is not None:
            return {"": (self.model.head, self.loss)}
        return {name: (head, self.loss.heads.get(name)) for name, head in named.items()}

    def target_keys(self) -> list[str]:
        """The target keys the heads learn from, in head order, each once."""
        return list(dict.fromkeys(type(head).task.target for head, _ in self.heads().values()))

    def metric_names(self) -> list[str]:
        """The validation metric names the heads declare (``trainer.monitor`` must be one), prefixed by head name."""
        names = ["loss"]
        for name, (head, _) in self.heads().items():
            prefix = ModelSpec.prefix(name)
            names += [prefix + m for m in type(head).task.metrics] + ([f"{name}/loss"] if name else [])
        return names

    def monitor(self) -> tuple[str, str]:
        """``(metric name without "val/", "min" | "max")`` that picks ``best.ckpt``: ``trainer.monitor``, or the first
        head's task default."""
        heads = self.heads()
        wanted = self.trainer.monitor
        if wanted is None:
            name, (head, _) = next(iter(heads.items()))
            task = type(head).task
            return (f"{name}/{task.monitor}" if name else task.monitor), task.mode
        wanted = wanted.removeprefix("val/")
        if wanted == "loss" or wanted.endswith("/loss"):
            return wanted, "min"
        for name, (head, _) in heads.items():
            prefix = ModelSpec.prefix(name)
            if wanted.startswith(prefix):
                task = type(head).task
                rest = wanted[len(prefix):]
                if rest in task.metrics or task.per_class and rest.startswith(f"{task.per_class}/"):
                    return wanted, task.mode
        raise RecipeError("trainer.monitor", f"{self.trainer.monitor!r} is no metric of this model's heads; valid: "
                                             f"{', '.join(self.metric_names())} (or a per-class name such as "
                                             f"acc/<class> where the task has one)")

    def check(self) -> None:
        """Agreement between parts, decided without reading any data."""
        data, model = self.data, self.model
        if model.heads is not None:
            from zoo.recipe.parts import Losses

            if not isinstance(self.loss, Losses):
                raise RecipeError("loss", f"model.heads names {sorted(model.heads)}: give one loss per head, "
                                          f"loss=Losses(heads={{name: LossSpec(), ...}}), not {type(self.loss).__name__}")
            if set(self.loss.heads) != set(model.heads):
                raise RecipeError("loss.heads", f"names {sorted(self.loss.heads)} but model.heads names "
                                                f"{sorted(model.heads)}; give each head one loss")
            for name, loss in self.loss.heads.items():
                if getattr(loss, "mixes_batches", False):
                    raise RecipeError(f"loss.heads.{name}", "mixes training batches (mixup / CutMix), which would "
                                                            "change the images every head sees; use it with one head")
        targets = getattr(data, "targets", ())
        known = data.target_classes()
        for name, (head, loss) in self.heads().items():
            task, path = type(head).task, ModelSpec.path(name)
            loss_path = f"loss.heads.{name}" if name else "loss"
            if getattr(type(loss), "task", None) is not task:
                loss_task = getattr(getattr(type(loss), "task", None), "name", "no")
                raise RecipeError(loss_path, f"{type(loss).__name__} is a {loss_task} loss but {path} "
                                             f"{type(head).__name__} is a {task.name} head")
            if task.target != "image" and task.target not in targets:  # every adapter yields images
                raise RecipeError("data", f"{type(data).__name__} yields {list(targets)} targets; the {task.name} "
                                          f"head {path} needs {task.target!r}")
            classes = known.get(task.target)
            if classes is not None and head.num_classes is not None and head.num_classes != len(classes):
                raise RecipeError(f"{path}.num_classes", f"is {head.num_classes} but {type(data).__name__} has "
                                                         f"{len(classes)} classes {list(classes)}")
        if self.model.backbone.in_chans != data.channels:
            raise RecipeError("model.backbone.in_chans", f"is {self.model.backbone.in_chans} but data.channels "
                                                         f"is {data.channels}; they must agree")
        self.monitor()

    def transform(self, *, train: bool, with_targets: bool = True) -> Any:
        """The albumentations pipeline for training (``train=True``) or val/test/predict images; with
        ``with_targets=False`` for images alone (no ``bbox_params`` demanding boxes)."""
        from zoo.data.targets import compose_kwargs_for

        d = self.data
        extra = compose_kwargs_for(self.target_keys()) if with_targets else {}
        return self.aug.compose(train=train, size=d.image_size, mean=d.mean, std=d.std, **extra)

    def override(self, *overrides: str, **values: Any) -> Recipe:
        """A copy with ``"dotted.path=value"`` strings (or ``**{"dotted.path": value}``) applied."""
        return apply_overrides(apply_overrides(self, list(overrides)), values)

    def listing(self, *, comments: bool = False) -> str:
        """Every field as ``dotted.path = value``, one per line: the keys ``override`` accepts; with ``comments``,
        each followed by its field's comment from the spec's source (what ``zoo check`` prints)."""
        rows = flatten(self)
        width = max(len(p) for p, _ in rows)
        lines = [f"{p:<{width}} = {v!r}" if not str(v).startswith("<") else f"{p:<{width}} : {v}" for p, v in rows]
        if not comments:
            return "\n".join(lines)
        column = min(max(map(len, lines)), width + 30) + 2
        notes = [_comment(self, path) for path, _ in rows]
        return "\n".join(f"{line:<{column - 2}}  # {note}" if note else line for line, note in zip(lines, notes))

    def to_data(self) -> dict:
        return to_data(self)

    @staticmethod
    def from_data(data: dict) -> Recipe:
        import heads  # noqa: F401  (registers the task specs a saved recipe may name)

        recipe = from_data(data)
        if not isinstance(recipe, Recipe):
            raise RecipeError("recipe", f"saved data describes a {type(recipe).__name__}, not a Recipe")
        return recipe


def _comment(root: Any, path: str) -> str:
    """The comment of the field at ``path`` in its spec class (``""`` for keys of a dict and unknown fields)."""
    *parents, name = path.split(".")
    node = root
    for part in parents:
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return "" if isinstance(node, dict) else field_comments(type(node)).get(name, "")


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Runs a recipe file and returns its module-level ``recipe``, with overrides applied.

    Recipe files may import one another (``from recipes.classify_folder import recipe as base``): the
    folder above ``recipes/`` is put on ``sys.path`` while the file runs.
    """
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"recipe file {str(path)!r} does not exist")
    root = str(path.resolve().parent.parent)
    added = root not in sys.path
    if added:
        sys.path.insert(0, root)
    try:
        name = f"_zoo_recipe_{path.stem}"
        # an explicit source loader: a file of any name is read as Python (and fails as such, not as "no loader")
        module_spec = importlib.util.spec_from_file_location(name, path, loader=SourceFileLoader(name, str(path)))
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except ZooError as e:
        e.add_note(f"while running recipe file {path}")
        raise
    except SyntaxError as e:  # the file and line, not the interpreter's traceback
        raise ZooError(f"{path}:{e.lineno}: {e.msg} (the recipe file is not valid Python)") from None
    except Exception as e:  # noqa: BLE001  (whatever the recipe's own code raised: where, and what)
        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == path]
        where = f"{path}:{lines[-1]}" if lines else str(path)
        raise ZooError(f"{where}: {type(e).__name__}: {e} (raised while running the recipe file)") from None
    finally:
        if added:
            sys.path.remove(root)
    recipe = getattr(module, "recipe", None)
    if not isinstance(recipe, Recipe):
        raise ZooError(f"{path}: defines no module-level `recipe = Recipe(...)` (found {type(recipe).__name__})")
    return recipe.override(*(overrides or []))
