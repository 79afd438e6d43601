"""Time of one QC verdict (``bids_deface.qc``), on two CPU threads by default.

Usage::

    python benchmarks/qc_speed.py --threads 2 --repeats 3 --markdown benchmarks/qc_speed.md

On the 1 mm real head (pycortex S1, 256³) and its 0.41×0.41×1.5 mm clinical-grid copy:
the defaced image alone (as ``--qc-only`` judges it, the network run on it included) and
with the original and its labels (as a defacing run judges it). Median of the repeats.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bids_deface.data import default_model_dir  # noqa: E402
from bids_deface.deface import deface_image  # noqa: E402
from bids_deface.masking import FaceModel  # noqa: E402
from bids_deface.qc.verdict import judge_image, load_forest  # noqa: E402


def _clinical(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """The head resampled (linear) to 512×512×120 voxels of 0.41×0.41×1.5 mm (RAS)."""
    from scipy import ndimage

    ras = nib.as_closest_canonical(img)
    data = ras.get_fdata(dtype=np.float32)
    zooms = np.array(ras.header.get_zooms()[:3])
    new = np.array([0.41, 0.41, 1.5])
    shape = (512, 512, 120)
    centre = (np.array(data.shape) - 1) / 2.0
    grid = [np.arange(n) * z / zo + c - (n - 1) / 2 * z / zo for n, z, zo, c in zip(shape, new, zooms, centre)]
    coords = np.meshgrid(*grid, indexing="ij")
    out = ndimage.map_coordinates(data, coords, order=1).astype(np.float32)
    affine = ras.affine.copy()
    affine[:3, :3] = np.diag(new)
    return nib.Nifti1Image(out, affine)


def _median_time(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--head", type=Path, default=REPO / "cache" / "sources" / "pycortex_s1.nii.gz")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    model = FaceModel(default_model_dir(), device="cpu", threads=args.threads)
    load_forest()
    head = nib.load(args.head)
    lines = ["# QC verdict time", "",
             f"{platform.processor() or platform.machine()}, {args.threads} CPU threads, network in {model.runtime}, "
             f"median of {args.repeats}; "
             f"`python benchmarks/qc_speed.py --threads {args.threads} --repeats {args.repeats}`.", "",
             "| image | grid | defaced image alone (s) | with the original (s) | verdict |", "|---|---|---|---|---|"]
    for name, img in (("1 mm head", head), ("clinical grid", _clinical(head))):
        img = nib.Nifti1Image(np.asanyarray(img.dataobj).astype(np.float32), img.affine)
        pred = model.predict(img)
        raw = deface_image(img, pred.face)
        defaced = nib.Nifti1Image(raw, img.affine)
        alone, v = _median_time(lambda: judge_image(model, defaced), args.repeats)
        paired, _ = _median_time(lambda: judge_image(model, img, raw, pred.label_map()), args.repeats)
        grid = "×".join(str(n) for n in img.shape[:3])
        lines.append(f"| {name} | {grid} | {alone:.2f} | {paired:.2f} | {v.verdict} |")  # type: ignore[attr-defined]
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
