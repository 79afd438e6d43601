"""The one place that locates data shipped with the package (the trained models)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "models_root", "default_model_dir"]

#: Name of the model folder used when none is given.
DEFAULT_MODEL = "Dataset801_FaceEars"


def models_root() -> Path:
    """Folder holding the shipped model folders.

    In an installed wheel the models live inside the package (``bids_deface/_models``);
    in a source checkout they are the repository's top-level ``models/``.
    """
    packaged = resources.files("bids_deface") / "_models"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(str(resources.files("bids_deface"))).parent / "models"


def default_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """nnU-Net v2 model folder (the one holding ``plans.json``) of the shipped model ``name``."""
    root = models_root() / name
    candidates = sorted(p.parent for p in root.glob("*/plans.json"))
    if not candidates:
        raise FileNotFoundError(f"no trained model folder under {root}")
    return candidates[0]
