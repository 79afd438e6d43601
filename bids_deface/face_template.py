"""Where the face of refacing comes from: an average head that is nobody in particular.

Two sources, tried in this order (:func:`load_face_template`):

1. **TemplateFlow** — ``MNI152NLin2009cAsym`` at 1 mm, the whole head (``_res-01_T1w``,
   not the brain-extracted ``desc-brain`` image) and its brain mask, from a TemplateFlow
   cache that already holds them (``TEMPLATEFLOW_HOME``, TemplateFlow's own setting; the
   container image fetches them when it is built). Nothing is downloaded at run time: a
   cache without the files counts as no cache. Licence: the MNI ICBM 2009 licence
   (use, copy, modify and distribute with the copyright notice; the cache's ``LICENSE``).
2. **The fallback that ships with bids-deface** (``models/FaceTemplate``): pydeface's
   average head (``pydeface/data/mean_reg2mean.nii.gz`` of the pydeface 2.1.0 wheel on
   PyPI, MIT licence, notice in ``models/FaceTemplate/LICENSE``), resampled to 1.5 mm and
   stored in 8 bits, with its brain and eyeballs labelled
   (:mod:`bids_deface.training.face_template` makes it).

Colin27 is one person scanned 27 times: it is never used as a face.

The choice is logged once per process and recorded in every refaced image's sidecar
(:meth:`FaceTemplate.record`). Templates are held in RAS axis order
(:func:`nibabel.as_closest_canonical`), as float32 intensities on their own grid.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from .anatomy import largest_component
from .io import sha256_file

__all__ = [
    "TEMPLATEFLOW_ID",
    "FaceTemplate",
    "templateflow_home",
    "templateflow_files",
    "load_templateflow",
    "load_fallback",
    "load_face_template",
]

logger = logging.getLogger(__name__)

#: The TemplateFlow template whose head is the face (and its query: 1 mm, whole head).
TEMPLATEFLOW_ID = "MNI152NLin2009cAsym"
_TF_HEAD = {"resolution": 1, "suffix": "T1w", "desc": None, "extension": ".nii.gz"}
_TF_BRAIN = {"resolution": 1, "suffix": "mask", "desc": "brain", "extension": ".nii.gz"}
_TF_LICENCE = ("MNI ICBM 2009 licence: use, copy, modify and distribute with the copyright notice "
               "(Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal "
               "Neurological Institute, McGill University)")
_TF_CITATION = ("Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased average "
                "age-appropriate atlases for pediatric studies. NeuroImage 54(1), 2011. "
                "doi:10.1016/j.neuroimage.2010.07.033 (via TemplateFlow, doi:10.1038/s41592-022-01681-2)")

#: Bits of the fallback's label map (a voxel may be fluid and face).
FALLBACK_LABELS = {"brain": 1, "fluid": 2, "face": 4}

Source = Literal["templateflow", "fallback"]


@dataclass(frozen=True)
class FaceTemplate:
    """An average head to take the face from, in RAS axis order.

    Attributes
    ----------
    name : str
        ``MNI152NLin2009cAsym`` or ``pydeface-mean_reg2mean``.
    source : {"templateflow", "fallback"}
    data : ndarray
        Head intensities (float32, T1-weighted) on the template's grid.
    affine : ndarray
        Voxel to world (RAS mm) of ``data``.
    brain : ndarray of bool
        The template's brain (used to place and scale it on a subject's brain).
    fluid : ndarray of bool
        The vitreous of the eyeballs: mapped to the subject's own fluid (CSF) intensity,
        not to the face's tissue (dark in T1w, bright in T2w).
    face : ndarray of bool or None
        The template's face mask.
    licence, citation : str
    path : str
        The file the head was read from.
    sha256 : str
        SHA-256 of that file.
    """

    name: str
    source: Source
    data: np.ndarray
    affine: np.ndarray
    brain: np.ndarray
    fluid: np.ndarray
    licence: str
    citation: str
    path: str
    sha256: str
    notes: dict[str, Any] = field(default_factory=dict)
    face: np.ndarray | None = None
    """The template's face mask (the shipped model's, as defacing would remove it): the
    face of refacing is fitted by it to the image's own mask (:func:`bids_deface.reface.fit_face`)."""

    @property
    def zooms(self) -> np.ndarray:
        """Voxel sizes (mm) of ``data``."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def brain_ml(self) -> float:
        """Volume of the template's brain (mL)."""
        return float(np.count_nonzero(self.brain)) * float(np.prod(self.zooms)) / 1000.0

    @property
    def brain_centre(self) -> np.ndarray:
        """Centre of mass of the template's brain (world RAS mm)."""
        return nib.affines.apply_affine(self.affine, np.argwhere(self.brain).mean(axis=0))

    def record(self) -> dict[str, Any]:
        """The sidecar's description of the face (``Refacing.Template``...)."""
        return {"Template": self.name, "TemplateSource": self.source, "TemplateFile": Path(self.path).name,
                "TemplateSHA256": self.sha256, "TemplateLicense": self.licence,
                "TemplateCitation": self.citation}


def _canonical(path: Path) -> nib.Nifti1Image:
    img = nib.load(str(path))
    return nib.as_closest_canonical(img)  # type: ignore[no-any-return]


#: A template's lowest slice is repeated this far (mm) below its field of view: a face mask
#: may reach farther down the neck than the template does.
EXTEND_DOWN_MM = 60.0


def _extend_down(data: np.ndarray, affine: np.ndarray, *masks: np.ndarray,
                 mm: float = EXTEND_DOWN_MM) -> tuple[np.ndarray, ...]:
    """``data`` (RAS axis order) with its lowest slice repeated ``mm`` further down, the
    new affine, and ``masks`` padded with False alike.

    >>> d, a, m = _extend_down(np.ones((2, 2, 3)), np.eye(4), np.ones((2, 2, 3), bool), mm=2.0)
    >>> d.shape, float(a[2, 3]), int(m.sum())
    ((2, 2, 5), -2.0, 12)
    """
    n = int(np.ceil(mm / float(np.sqrt((affine[:3, 2] ** 2).sum()))))
    out = np.concatenate([np.repeat(data[:, :, :1], n, axis=2), data], axis=2)
    new = np.array(affine, float)
    new[:3, 3] = nib.affines.apply_affine(affine, [0, 0, -n])
    padded = [np.concatenate([np.zeros(m.shape[:2] + (n,), bool), m], axis=2) for m in masks]
    return (out, new, *padded)


def templateflow_home() -> Path | None:
    """TemplateFlow's cache folder as TemplateFlow itself finds it (``TEMPLATEFLOW_HOME``,
    or the user cache folder); None when the ``templateflow`` package is not installed."""
    if importlib.util.find_spec("templateflow") is None:
        return None
    if os.environ.get("TEMPLATEFLOW_HOME"):
        return Path(os.environ["TEMPLATEFLOW_HOME"]).absolute()
    from platformdirs import user_cache_dir  # a dependency of templateflow

    return Path(user_cache_dir("templateflow")).absolute()


def _templateflow_client(home: Path):  # type: ignore[no-untyped-def]
    """``templateflow.client.TemplateFlowClient``, imported without side effects.

    Importing ``templateflow`` sets up its default cache folder (``TEMPLATEFLOW_HOME`` or
    the user cache folder) with a skeleton of empty files when that folder is empty; the
    first import is made with ``TEMPLATEFLOW_HOME`` pointing at ``home``, which holds a
    cache already, so that nothing is written anywhere.
    """
    import sys

    if "templateflow.conf" in sys.modules:
        from templateflow.client import TemplateFlowClient

        return TemplateFlowClient
    before = os.environ.get("TEMPLATEFLOW_HOME")
    os.environ["TEMPLATEFLOW_HOME"] = str(home)
    try:
        from templateflow.client import TemplateFlowClient
    finally:
        if before is None:
            del os.environ["TEMPLATEFLOW_HOME"]
        else:
            os.environ["TEMPLATEFLOW_HOME"] = before
    return TemplateFlowClient


def templateflow_files(home: Path | None) -> tuple[Path, Path] | str:
    """The template head and its brain mask in the TemplateFlow cache ``home``, or why
    they cannot be used.

    Only files already in the cache count (a TemplateFlow skeleton holds empty
    placeholders until a file is fetched): nothing is downloaded, and a folder that does
    not exist is not created (importing ``templateflow.api`` would create a skeleton).
    """
    if home is None:
        return "the templateflow package is not installed"
    home = Path(home)
    if not home.is_dir() or not any(home.iterdir()):
        return f"no TemplateFlow cache at {home}"
    try:
        TemplateFlowClient = _templateflow_client(home)
        client = TemplateFlowClient(root=home, autoupdate=False)
        heads = client.ls(TEMPLATEFLOW_ID, **_TF_HEAD)
        brains = client.ls(TEMPLATEFLOW_ID, **_TF_BRAIN)
    except Exception as exc:  # pybids or templateflow cannot index the folder
        return f"the TemplateFlow cache at {home} cannot be read ({type(exc).__name__}: {exc})"
    found = []
    for kind, paths in (("head", heads), ("brain mask", brains)):
        full = [p for p in paths if p.is_file() and p.stat().st_size > 0]
        if not full:
            return f"the TemplateFlow cache at {home} has no {TEMPLATEFLOW_ID} 1 mm {kind}"
        found.append(full[0])
    return found[0], found[1]


def load_templateflow(head: Path, brain: Path) -> FaceTemplate:
    """The TemplateFlow template from its head and brain-mask files."""
    from .anatomy import head_mask
    from .eyes import find_globes, globe_masks

    img = _canonical(head)
    data = np.asarray(img.get_fdata(dtype=np.float32))
    mask = _canonical(brain)
    if mask.shape != img.shape:
        raise ValueError(f"{brain} ({mask.shape}) is not on the grid of {head} ({img.shape})")
    brain_mask = np.asanyarray(mask.dataobj) > 0
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
    globes = find_globes(data, brain_mask, zooms, head=head_mask(data, zooms))
    fluid = np.zeros(data.shape, bool)
    for ball in globe_masks(data.shape, zooms, globes, wall_mm=-1.0).values():
        fluid |= ball
    licence_file = Path(head).parent / "LICENSE"
    licence = _TF_LICENCE
    if licence_file.is_file():
        licence += f"; {licence_file}"
    face = _model_face(data, img.affine)
    data, affine, brain_mask, fluid, face = _extend_down(data, img.affine, largest_component(brain_mask), fluid,
                                                         face if face is not None else np.zeros(data.shape, bool))
    return FaceTemplate(TEMPLATEFLOW_ID, "templateflow", data, affine, brain_mask, fluid,
                        licence, _TF_CITATION, str(head), sha256_file(Path(head)), {"eyes_found": len(globes)},
                        face if face.any() else None)


def _model_face(data: np.ndarray, affine: np.ndarray) -> np.ndarray | None:
    """The shipped model's face mask of a template head (None when the model cannot run)."""
    try:
        from .data import default_model_dir
        from .masking import FaceModel

        return np.asarray(FaceModel(default_model_dir(), device="cpu").predict(nib.Nifti1Image(data, affine)).face,
                          bool)
    except Exception as exc:  # the face fit is left out; refacing works without it
        logger.warning("no face mask of the template (%s: %s): its face is placed with the head", type(exc).__name__,
                       exc)
        return None


def load_fallback(folder: Path | None = None) -> FaceTemplate:
    """The face template that ships with bids-deface (``models/FaceTemplate``)."""
    from .data import face_template_dir

    folder = Path(folder) if folder is not None else face_template_dir()
    meta = json.loads((folder / "template.json").read_text())
    head_path = folder / meta["Head"]
    img = _canonical(head_path)
    labels = np.asanyarray(_canonical(folder / meta["Labels"]).dataobj).astype(np.uint8)
    if labels.shape != img.shape:
        raise ValueError(f"{folder}: labels {labels.shape} and head {img.shape} differ in shape")
    brain, fluid, face = ((labels & FALLBACK_LABELS[k]) > 0 for k in ("brain", "fluid", "face"))
    data, affine, brain, fluid, face = _extend_down(np.asarray(img.get_fdata(dtype=np.float32)), img.affine,
                                                    brain, fluid, face)
    return FaceTemplate(meta["Name"], "fallback", data, affine, brain, fluid,
                        meta["License"], meta["Citation"], str(head_path), sha256_file(head_path),
                        {"derived_from": meta.get("Source", "")}, face if face.any() else None)


@lru_cache(maxsize=4)
def _load(home: Path | None, why_not: str = "TemplateFlow is not looked in") -> FaceTemplate:
    found = templateflow_files(home) if home is not None else why_not
    if isinstance(found, tuple):
        template = load_templateflow(*found)
        logger.info("refacing with the face of TemplateFlow's %s (%s)", template.name, template.path)
        return template
    template = load_fallback()
    logger.warning("refacing with the face that ships with bids-deface, %s (%s): %s", template.name,
                   template.licence, found)
    return template


def load_face_template(templateflow: Path | None | Literal["auto"] = "auto") -> FaceTemplate:
    """The face template: TemplateFlow's when its cache holds it, else the shipped one.

    Parameters
    ----------
    templateflow : Path, None or "auto"
        The TemplateFlow cache to look in; ``"auto"`` finds it as TemplateFlow does
        (:func:`templateflow_home`), None skips TemplateFlow.

    Loaded once per process and cache folder, and the choice logged once (a warning when
    the fallback is used, saying why).
    """
    if templateflow == "auto":
        home = templateflow_home()
        return _load(home) if home is not None else _load(None, "the templateflow package is not installed")
    return _load(Path(templateflow).absolute() if templateflow is not None else None)
