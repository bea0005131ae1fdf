"""Degradation experiment: plain20 under the budget of recipes/degradation_resnet20.py (docs/degradation.md).

    zoo train recipes/degradation_plain20.py --out runs/degradation/plain20
"""

from recipes.degradation_resnet20 import recipe as base

recipe = base.override("model.backbone.name=plain20", name="degradation_plain20")
