"""Reproducible training pipeline of the face-and-ears model.

Stages (each a module with a ``main``; ``python -m bids_deface.training`` lists them):

1. :mod:`.fetch` — download the public source heads (pip/apt) into a cache folder.
2. :mod:`.labels` — label map per head: 0 keep / 1 face / 2 brain, plus tissue classes.
3. :mod:`.synth` — domain-randomised synthetic images exported as an nnU-Net v2 raw dataset.
4. :mod:`.train` — compact nnU-Net v2 plan, preprocessing and training (resumable).
5. :mod:`.export` — fp16 model folder for ``models/``.
"""
