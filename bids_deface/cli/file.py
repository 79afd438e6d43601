"""``bids-deface-file``: deface single NIfTI files outside a BIDS dataset.

Examples
--------
``bids-deface-file sub01_T1w.nii.gz sub01_T1w_defaced.nii.gz --mask sub01_face.nii.gz``

``bids-deface-file sub01_part-phase_T2starw.nii.gz out.nii.gz --mask-from sub01_face.nii.gz``
defaces a phase image with the mask written for its magnitude image (the images of one
acquisition take one mask: :mod:`bids_deface.bids.companions`).

``bids-deface-file sub01_T1w.nii.gz sub01_T1w_defaced.nii.gz --reface sub01_T1w_refaced.nii.gz``
also writes the image with a face that is nobody's in place of the removed one
(:mod:`bids_deface.reface`), and its sidecar ``sub01_T1w_refaced.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import __version__
from ..settings import RUNTIMES
from .parser import positive_int

__all__ = ["build_parser", "main"]

logger = logging.getLogger("bids_deface")


def build_parser() -> argparse.ArgumentParser:
    """Parser of ``bids-deface-file`` (pure: no I/O)."""
    p = argparse.ArgumentParser(
        prog="bids-deface-file",
        description="Remove the face and ears from one structural MRI (NIfTI). The header, "
        "dtype and every voxel outside the face mask are kept exactly.",
    )
    p.add_argument("input", type=Path, help="input NIfTI (.nii or .nii.gz)")
    p.add_argument("output", type=Path, help="defaced NIfTI to write (must differ from input)")
    p.add_argument("--mask", type=Path, help="also write the binary uint8 face mask here")
    p.add_argument("--mask-from", type=Path, metavar="MASK",
                   help="deface with this mask (non-zero: removed) instead of predicting one: the mask "
                        "written for another image of the same acquisition on the same grid (the "
                        "magnitude of a phase image, the first echo, an MP2RAGE's second inversion)")
    p.add_argument("--reface", type=Path, metavar="REFACED",
                   help="also write the refaced image here: the removed voxels filled with the face of an "
                        "average head (TemplateFlow's MNI152NLin2009cAsym when its cache holds it, else the "
                        "shipped one), mapped to the image's contrast; every other voxel as in the input. "
                        "Its sidecar (.json beside it) records the face's source and licence")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--runtime", choices=list(RUNTIMES), default="auto",
                   help="what runs the network on the CPU (default: OpenVINO, else ONNX Runtime)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for inference")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="nnU-Net v2 model folder (default: the shipped model)")
    p.add_argument("--guard-mm", type=float, default=4.0,
                   help="no voxel within this distance of the predicted brain is removed (default 4; "
                        "in a small head, shrunk with the finer model voxel; see docs/mask.md)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bids-deface-file``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    from ..deface import deface_image
    from ..errors import ModelError
    from ..io import load_nifti, save_mask_like, save_raw_like
    from ..pipeline import load_face_model

    src = args.input.resolve()
    refaced_json = _sidecar_path(args.reface) if args.reface else None
    targets = [args.output] + ([args.mask] if args.mask else []) + (
        [args.reface, refaced_json] if args.reface and refaced_json else [])
    if any(t.resolve() == src for t in targets):
        logger.error("the output must not overwrite the input %s", args.input)
        return 2
    if len({t.resolve() for t in targets}) < len(targets):
        logger.error("the output, --mask and --reface must be different files")
        return 2
    existing = [t for t in targets if t.exists()]
    if existing and not args.force:
        logger.error("%s exists (use --force to overwrite)", existing[0])
        return 2
    try:
        img = load_nifti(args.input)
    except (ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 3
    t0 = time.perf_counter()
    if args.mask_from is not None:
        try:
            pred = _given_mask(img, args.mask_from)
        except (ValueError, FileNotFoundError) as exc:
            logger.error("%s", exc)
            return 3
    else:
        try:
            model = load_face_model(args.model_dir, device=args.device, threads=args.threads,
                                    runtime=args.runtime)
        except ModelError as exc:
            logger.error("%s", exc)
            return 6
        pred = model.predict(img, guard_mm=args.guard_mm)
    save_raw_like(deface_image(img, pred.face), img, args.output)
    if args.mask:
        save_mask_like(pred.face, img, args.mask)
    ml = float(pred.face.sum()) * float(np.prod(img.header.get_zooms()[:3])) / 1000.0
    logger.info("%s: removed %d voxels (%.1f mL), guard gave back %d, %.1f s",
                args.input.name, int(pred.face.sum()), ml, pred.guard_voxels, time.perf_counter() - t0)
    if args.reface and refaced_json is not None:
        from ..bids.outputs import write_json
        from ..face_template import load_face_template
        from ..reface import reface_image

        refaced = reface_image(img, pred.face, pred.brain, load_face_template(), threads=args.threads)
        save_raw_like(refaced.raw, img, args.reface)
        write_json(refaced_json, {
            "Description": "Input image with the face and ears replaced by the face of an average head "
                           "(nobody's); every other voxel and the header are unchanged.",
            "Sources": [args.input.name],
            "Refacing": refaced.record,
        })
        logger.info("%s: refaced %d voxels with %s (%s) in %.1f s", args.input.name,
                    refaced.record.get("VoxelsRefaced", 0), refaced.record.get("Template"),
                    refaced.record.get("TemplateSource"), refaced.seconds)
    return 0


def _given_mask(img, path: Path):  # type: ignore[no-untyped-def]
    """The mask at ``path`` as a prediction for ``img``; raises unless it lies on its grid."""
    from ..io import load_nifti
    from ..pipeline import companion_prediction, mask_on_grid

    mask = mask_on_grid(load_nifti(path), img, f"{img.get_filename()} is defaced with the mask {path}")
    return companion_prediction(img, mask)


def _sidecar_path(image: Path) -> Path:
    """``x.nii.gz`` -> ``x.json`` (``x.nii`` -> ``x.json``; any other name gets ``.json`` added).

    >>> _sidecar_path(Path("/o/sub-01_T1w.nii.gz")).name, _sidecar_path(Path("a.b")).name
    ('sub-01_T1w.json', 'a.b.json')
    """
    name = image.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return image.with_name(name[: -len(ext)] + ".json")
    return image.with_name(name + ".json")


if __name__ == "__main__":
    raise SystemExit(main())
