"""Independent brain masks from deepbet (an optional dependency, ``pip install bids-deface[train]``).

Used to label training heads and to check, in evaluation, that no brain voxel was removed.
deepbet is a separate brain-extraction network with its own weights, so its mask is
independent of the face model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from functools import lru_cache

import nibabel as nib
import numpy as np

__all__ = ["deepbet_brain_mask"]

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _extractor():  # type: ignore[no-untyped-def]
    try:
        from deepbet import BrainExtraction
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("deepbet is needed for independent brain masks: "
                          "pip install 'bids-deface[train]'") from exc
    return BrainExtraction(no_gpu=True)


def deepbet_brain_mask(img: nib.Nifti1Image, threshold: float = 0.5) -> np.ndarray:
    """Boolean brain mask of ``img`` on its own grid (any orientation)."""
    data = np.asanyarray(img.dataobj).astype(np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    img3 = nib.Nifti1Image(data, img.affine)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        _, mask, _ = _extractor().run(img3, threshold=threshold)
    out = np.asanyarray(mask.dataobj).astype(bool)
    if out.shape != data.shape:
        raise RuntimeError(f"deepbet returned shape {out.shape} for {data.shape}")
    return out
