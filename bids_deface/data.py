"""The one place that locates data shipped with the package (the trained models and the
fallback face template of refacing)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "FACE_TEMPLATE", "models_root", "default_model_dir", "face_template_dir"]

#: Name of the model folder used when none is given.
DEFAULT_MODEL = "Dataset801_FaceEars"
#: Folder of the face template that refacing falls back to (:mod:`bids_deface.face_template`).
FACE_TEMPLATE = "FaceTemplate"


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


def face_template_dir() -> Path:
    """Folder of the shipped face template (``template.json``, head, labels, licence)."""
    root = models_root() / FACE_TEMPLATE
    if not (root / "template.json").is_file():
        raise FileNotFoundError(f"no face template under {root}")
    return root
