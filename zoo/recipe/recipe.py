"""The ``Recipe``: one immutable description of a run, and the loading of recipe files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Annotated, Any

from zoo.errors import RecipeError, ZooError
from zoo.recipe.parts import Augment, ModelSpec, Optim, Schedule, Trainer
from zoo.recipe.spec import Range, spec
from zoo.recipe.tree import apply_overrides, flatten, from_data, to_data

__all__ = ["Recipe", "load_recipe"]


@spec
class Recipe:
    data: Any  # a dataset adapter spec from zoo.data (DigitsData, ImageFolderData, ShapesData ...)
    model: ModelSpec  # backbone | head
    loss: Any  # a loss spec from heads/ matching the head's task
    aug: Augment = Augment()  # albumentations pipelines
    optim: Optim = Optim()
    sched: Schedule = Schedule()
    trainer: Trainer = Trainer()
    seed: Annotated[int, Range(ge=0)] = 0  # seeds python, numpy, torch and the data splits
    name: str = "run"  # names the default run folder runs/<name>

    def __post_init__(self) -> None:
        self.check()

    @property
    def task(self):
        return type(self.model.head).task

    def check(self) -> None:
        """Agreement between parts, decided without reading any data."""
        head, loss, data = self.model.head, self.loss, self.data
        task = type(head).task
        if getattr(type(loss), "task", None) is not task:
            loss_task = getattr(getattr(type(loss), "task", None), "name", "no")
            raise RecipeError("loss", f"{type(loss).__name__} is a {loss_task} loss but model.head "
                                      f"{type(head).__name__} is a {task.name} head")
        targets = getattr(data, "targets", ())
        if task.target != "image" and task.target not in targets:  # every adapter yields images
            raise RecipeError("data", f"{type(data).__name__} yields {list(targets)} targets; the {task.name} "
                                      f"head needs {task.target!r}")
        if self.model.backbone.in_chans != data.channels:
            raise RecipeError("model.backbone.in_chans", f"is {self.model.backbone.in_chans} but data.channels "
                                                         f"is {data.channels}; they must agree")
        classes = data.static_classes()
        if classes is not None and head.num_classes is not None and head.num_classes != len(classes):
            raise RecipeError("model.head.num_classes", f"is {head.num_classes} but {type(data).__name__} has "
                                                        f"{len(classes)} classes {list(classes)}")

    def transform(self, *, train: bool) -> Any:
        """The albumentations pipeline for training (``train=True``) or val/test/predict images."""
        d = self.data
        extra = self.task.compose_kwargs() if self.task.compose_kwargs else {}
        return self.aug.compose(train=train, size=d.image_size, mean=d.mean, std=d.std, **extra)

    def override(self, *overrides: str, **values: Any) -> Recipe:
        """A copy with ``"dotted.path=value"`` strings (or ``**{"dotted.path": value}``) applied."""
        return apply_overrides(apply_overrides(self, list(overrides)), values)

    def listing(self) -> str:
        """Every field as ``dotted.path = value``, one per line: the keys ``override`` accepts."""
        rows = flatten(self)
        width = max(len(p) for p, _ in rows)
        return "\n".join(f"{p:<{width}} = {v!r}" if not str(v).startswith("<") else f"{p:<{width}} : {v}"
                         for p, v in rows)

    def to_data(self) -> dict:
        return to_data(self)

    @staticmethod
    def from_data(data: dict) -> Recipe:
        import heads  # noqa: F401  (registers the task specs a saved recipe may name)

        recipe = from_data(data)
        if not isinstance(recipe, Recipe):
            raise RecipeError("recipe", f"saved data describes a {type(recipe).__name__}, not a Recipe")
        return recipe


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
        module_spec = importlib.util.spec_from_file_location(f"_zoo_recipe_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except ZooError as e:
        e.add_note(f"while running recipe file {path}")
        raise
    finally:
        if added:
            sys.path.remove(root)
    recipe = getattr(module, "recipe", None)
    if not isinstance(recipe, Recipe):
        raise ZooError(f"{path}: defines no module-level `recipe = Recipe(...)` (found {type(recipe).__name__})")
    return recipe.override(*(overrides or []))
