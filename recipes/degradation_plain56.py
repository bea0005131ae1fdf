"""Degradation experiment: plain56 under the budget of recipes/degradation_resnet20.py (docs/degradation.md).

    zoo train recipes/degradation_plain56.py --out runs/degradation/plain56
"""

from recipes.degradation_resnet20 import recipe as base

recipe = base.override("model.backbone.name=plain56", name="degradation_plain56")
