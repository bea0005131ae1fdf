"""Degradation experiment: resnet56 under the budget of recipes/degradation_resnet20.py (docs/degradation.md).

    zoo train recipes/degradation_resnet56.py --out runs/degradation/resnet56
"""

from recipes.degradation_resnet20 import recipe as base

recipe = base.override("model.backbone.name=resnet56", name="degradation_resnet56")
