"""Make the fallback face template of refacing (``models/FaceTemplate``) from pydeface's
average head.

The source is ``pydeface/data/mean_reg2mean.nii.gz`` of the pydeface 2.1.0 wheel on PyPI
(MIT licence): an average of registered heads, so its face is nobody's. What ships is
derived from it, as the MIT licence allows with its notice (``LICENSE`` beside it):

- ``head.nii.gz``: the head in RAS axis order, resampled to 1.5 mm (trilinear) over the
  head's box plus 30 mm, the air farther than 2 mm from the head's tissue set to 0 (the
  average's air holds faint ghosts of its sources' edges and a thin frame in front of the
  face), stored as uint8 with a scale factor (8 bits hold the
  average's smooth intensities to within half a step of 0.4 % of its range; resampled
  back to 1 mm it differs from the source by 2 % of its face's spread on average, less
  than the noise refacing adds);
- ``labels.nii.gz``: bits 1 brain (the shipped face model's brain label, largest part),
  2 the vitreous of both eyeballs (:mod:`bids_deface.eyes`, 1 mm inside the globe),
  4 the face (the shipped model's face mask of the template, as defacing would remove
  it: refacing fits it to the image's own mask);
- ``template.json``: provenance (source file and its SHA-256, licence, how it was made).

Usage::

    python -m bids_deface.training.face_template --out models/FaceTemplate \\
        [--source cache/sources/pydeface_template.nii.gz]

Without ``--source`` the pydeface wheel is downloaded with pip.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = ["SOURCE_SHA256", "PYDEFACE_LICENSE", "fetch_source", "build_face_template", "main"]

logger = logging.getLogger(__name__)

#: SHA-256 of ``pydeface/data/mean_reg2mean.nii.gz`` in pydeface 2.1.0 (wheel and sdist).
SOURCE_SHA256 = "fdc13571d66293f9919648cd8de9a7b3491b12175e09336353d2c9ce0466ecb6"
SOURCE_MEMBER = "pydeface/data/mean_reg2mean.nii.gz"
#: pydeface's licence (``pydeface-2.1.0.dist-info/licenses/LICENSE.txt``), kept with what is derived from it.
PYDEFACE_LICENSE = """\
The face template in this folder (head.nii.gz, labels.nii.gz) is derived from
pydeface/data/mean_reg2mean.nii.gz of pydeface 2.1.0 (https://github.com/poldracklab/pydeface,
https://pypi.org/project/pydeface/), resampled to 1.5 mm and stored in 8 bits, with brain
and eyeball labels added by bids-deface. pydeface is distributed under the MIT licence:

The MIT License (MIT)

Copyright (c) 2015

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

SPACING_MM = 1.5
MARGIN_MM = 30.0
#: Voxels farther than ``AIR_MM`` from the head's tissue (the largest part brighter than
#: ``TISSUE_FRACTION`` of the range) are air and set to 0: the average's air holds faint
#: ghosts of its sources' edges and a thin frame in front of the face and over the temples
#: (an object of some of the scans, at 6-12 % of the range), which would come out as tissue.
AIR_MM = 2.0
TISSUE_FRACTION = 0.15


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fetch_source(work: Path) -> Path:
    """Download the pydeface 2.1.0 wheel with pip into ``work`` and extract the template."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                    "pydeface==2.1.0", "-d", str(work)], check=True, capture_output=True)
    wheel = next(Path(work).glob("pydeface-2.1.0-*.whl"))
    out = Path(work) / "mean_reg2mean.nii.gz"
    with zipfile.ZipFile(wheel) as zf:
        out.write_bytes(zf.read(SOURCE_MEMBER))
    return out


def _resample(data: np.ndarray, factor: np.ndarray, start: np.ndarray, shape: Sequence[int],
              order: int = 1) -> np.ndarray:
    """``data`` sampled on a grid of voxels ``factor`` times as big, from voxel ``start``."""
    grid = np.meshgrid(*[start[a] + factor[a] * np.arange(shape[a]) for a in range(3)], indexing="ij")
    return ndimage.map_coordinates(data, grid, order=order, mode="constant", cval=0.0)


def build_face_template(source: Path, out: Path, masker=None) -> dict:  # type: ignore[no-untyped-def]
    """Write the fallback face template derived from ``source`` into ``out``; returns its
    ``template.json``. ``masker`` (default: the shipped face model) labels the brain."""
    from ..anatomy import bounding_box, head_mask, largest_component
    from ..eyes import find_globes, globe_masks
    from ..pipeline import load_face_model

    digest = _sha256(source)
    if digest != SOURCE_SHA256:
        raise ValueError(f"{source} is not pydeface 2.1.0's mean_reg2mean.nii.gz (SHA-256 {digest})")
    img = nib.as_closest_canonical(nib.load(str(source)))
    data = img.get_fdata(dtype=np.float32)
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
    masker = masker or load_face_model(None, device="cpu")
    pred = masker.predict(img)
    brain = largest_component(np.asarray(pred.brain, bool))
    face = np.asarray(pred.face, bool)
    head = head_mask(data, zooms)
    globes = find_globes(data, brain, zooms, head=head)
    if len(globes) != 2:
        raise RuntimeError(f"found {len(globes)} eyeballs in the template, not 2")
    fluid = np.zeros(data.shape, bool)
    for ball in globe_masks(data.shape, zooms, globes, wall_mm=-1.0).values():
        fluid |= ball
    box = bounding_box(head)
    factor = SPACING_MM / zooms
    margin = MARGIN_MM / zooms
    lo = np.array([max(0.0, b.start - m) for b, m in zip(box, margin)])
    hi = np.array([min(n - 1.0, b.stop - 1 + m) for b, m, n in zip(box, margin, data.shape)])
    shape = [int(np.floor((h - s) / f)) + 1 for s, h, f in zip(lo, hi, factor)]
    head_1p5 = np.clip(_resample(data, factor, lo, shape), 0, None)
    from ..anatomy import edt_mm

    lo_i, hi_i = np.percentile(head_1p5, [2, 99.5])
    tissue = largest_component(head_1p5 > lo_i + TISSUE_FRACTION * (hi_i - lo_i))
    head_1p5[edt_mm(~tissue, (SPACING_MM,) * 3) > AIR_MM] = 0.0
    brain_1p5 = _resample(brain.astype(np.float32), factor, lo, shape) > 0.5
    fluid_1p5 = _resample(fluid.astype(np.float32), factor, lo, shape) > 0.5
    face_1p5 = _resample(face.astype(np.float32), factor, lo, shape) > 0.5
    affine = img.affine @ np.diag([*factor, 1.0])
    affine[:3, 3] = nib.affines.apply_affine(img.affine, lo)
    slope = float(head_1p5.max()) / 255.0
    raw = np.clip(np.round(head_1p5 / slope), 0, 255).astype(np.uint8)
    # bits: 1 brain, 2 vitreous, 4 face (the face holds the eyes)
    labels = (brain_1p5.astype(np.uint8) | (fluid_1p5.astype(np.uint8) << 1) | (face_1p5.astype(np.uint8) << 2))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, arr, scl in (("head.nii.gz", raw, slope), ("labels.nii.gz", labels, 1.0)):
        im = nib.Nifti1Image(arr, affine)
        im.set_qform(affine, 1)
        im.set_sform(affine, 1)
        im.header.set_xyzt_units("mm")
        im.header.set_slope_inter(scl, 0.0)
        nib.save(im, str(out / name))
    meta = {
        "Name": "pydeface-mean_reg2mean",
        "Description": "Average head of pydeface 2.1.0 (nobody in particular), resampled to 1.5 mm, 8 bits; "
                       "label bits 1 brain (bids-deface model), 2 eyeball vitreous (bids_deface.eyes), "
                       "4 face mask (bids-deface model)",
        "Head": "head.nii.gz",
        "Labels": "labels.nii.gz",
        "Source": f"pydeface 2.1.0 (PyPI wheel), {SOURCE_MEMBER}",
        "SourceSHA256": SOURCE_SHA256,
        "License": "MIT (pydeface; notice in LICENSE)",
        "Citation": "pydeface 2.1.0, Poldrack Lab, https://github.com/poldracklab/pydeface",
        "SpacingMM": SPACING_MM,
        "BrainML": round(float(brain_1p5.sum()) * SPACING_MM ** 3 / 1000.0, 1),
        "Eyeballs": [{"side": g.side, "radius_mm": round(g.radius_mm, 1)} for g in globes],
        "MadeBy": "python -m bids_deface.training.face_template",
        "Model": getattr(masker, "name", ""),
    }
    (out / "template.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "LICENSE").write_text(PYDEFACE_LICENSE)
    logger.info("wrote %s: %s voxels of %.1f mm, brain %.0f mL, %d eyeballs", out, shape, SPACING_MM,
                meta["BrainML"], len(globes))
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bids_deface.training.face_template``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder to write (e.g. models/FaceTemplate)")
    p.add_argument("--source", type=Path, default=None,
                   help="pydeface's mean_reg2mean.nii.gz (default: download the pydeface 2.1.0 wheel)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    with tempfile.TemporaryDirectory() as work:
        source = args.source or fetch_source(Path(work))
        build_face_template(source, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
