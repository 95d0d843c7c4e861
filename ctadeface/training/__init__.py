"""Training: what builds the face model, never imported by the app at run time.

``phantom`` (synthetic CTA heads with exact face masks), ``annotate`` (an anatomical annotator
that labels real CT without a model), ``train`` (the recipe that writes an nnU-Net v2 model
folder; ``python -m ctadeface.training.train``). The demo uses ``phantom`` for its synthetic
heads.
"""
