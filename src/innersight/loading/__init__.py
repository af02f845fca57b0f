"""Reading models, images and class names from files, for the API and the command line.

>>> model = innersight.load_model("model.keras")
>>> x = innersight.load_images(["cat.png", "more_cats/"], model=model, mean=0.5, std=0.25)
"""

from __future__ import annotations

from innersight.loading.images import load_class_names, load_images, read_inputs
from innersight.loading.models import is_spec, load_model

__all__ = ["is_spec", "load_class_names", "load_images", "load_model", "read_inputs"]
