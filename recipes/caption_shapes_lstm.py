"""Show and Tell on the synthetic shapes: the pooled image feature is the LSTM's first input.

Same data and backbone as ``caption_shapes_transformer.py`` (ResNet-10-T from scratch, 3,000 images), so the two
decoders compare directly; beam search (3 beams) when evaluating.

    zoo train recipes/caption_shapes_lstm.py
"""

from recipes.caption_shapes_transformer import recipe as base

from heads import LstmCaptioner

recipe = base.override(**{"name": "caption_shapes_lstm",
                          "model.head": LstmCaptioner(embed_dim=128, hidden=256, beam_size=3)})
