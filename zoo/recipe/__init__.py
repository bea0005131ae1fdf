"""The recipe DSL: typed, immutable specs composed into a ``Recipe``; overrides as ``dotted.path=value``."""

from zoo.recipe.parts import Augment, BackboneSpec, Losses, ModelSpec, Optim, Schedule, Trainer
from zoo.recipe.recipe import Recipe, load_recipe
from zoo.recipe.spec import Range, spec
from zoo.recipe.tree import apply_overrides, parse_override

__all__ = [
    "Augment", "BackboneSpec", "Losses", "ModelSpec", "Optim", "Schedule", "Trainer", "Recipe", "load_recipe", "Range",
    "spec", "apply_overrides", "parse_override",
]
