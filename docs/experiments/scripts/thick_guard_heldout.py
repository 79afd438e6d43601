"""The held-out evaluation with the thick-slice guard ``slabs_or_p05`` of
``docs/experiments/scripts/thick_guard.py`` in place of the shipped one (measured, not shipped).

Usage::

    python docs/experiments/scripts/thick_guard_heldout.py --json OUT.json [--markdown OUT.md]

On grids with slabs (an axis longer than ``thick_guard.SLAB_RATIO`` times the finest) a
face voxel stays in the mask when the guard counted between slabs from the brain label at
the voxel centres (rule ``slabs``, the app's until the guard drew the brain on sub-slices
of the slabs), or the guard counted between centres from the ``p05`` brain
(brain probability of 0.05 at any point along the slab) puts it beyond its margin. Other
grids are guarded as shipped. Runs ``python -m bids_deface.evaluation --head pycortex_s1``
otherwise unchanged (about 8 minutes on two cores); ``docs/experiments/slab-brains.md`` gives the result.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


@contextlib.contextmanager
def slabs_or_p05() -> Iterator[None]:
    """The app's guard replaced by ``slabs_or_p05`` while the context is open."""
    from bids_deface import deface, masking
    from thick_guard import SLAB_RATIO, centres, over_slabs

    shipped = masking.upsample_labels, masking.FaceModel._labels, masking.brain_guard_parts
    shipped_distance = deface.guard_distance_mm
    # the p05 brain of the last image with slabs, and that image's brain label
    last: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def labels(self, img, spacing_zyx=None):  # type: ignore[no-untyped-def]
        seg, guard = shipped[1](self, img, spacing_zyx)
        zooms = img.header.get_zooms()[:3]
        last.clear()
        if max(zooms) > min(zooms) * SLAB_RATIO:
            last["p05"] = (guard, seg == masking.LABELS["brain"])
        return seg, guard

    def guard_parts(parts, brain, zooms):  # type: ignore[no-untyped-def]
        if "p05" not in last or last["p05"][0] is not brain:
            return shipped[2](parts, brain, zooms)
        # the brain label at the voxel centres filling its slab (counted between slabs),
        # or the p05 brain counted between centres: kept when either guard keeps it
        between_slabs = shipped[2](parts, last["p05"][1], zooms)
        deface.guard_distance_mm = centres
        try:
            between_centres = shipped[2](parts, brain, zooms)
        finally:
            deface.guard_distance_mm = shipped_distance
        face = between_slabs.face | between_centres.face
        union = np.logical_or.reduce([np.asarray(m, bool) for m, _ in parts])
        return deface.GuardResult(face=face, guard_voxels=int(np.count_nonzero(union & ~face)))

    masking.upsample_labels = over_slabs("likely", 0.05)
    masking.FaceModel._labels = labels
    masking.brain_guard_parts = guard_parts
    try:
        yield
    finally:
        masking.upsample_labels, masking.FaceModel._labels, masking.brain_guard_parts = shipped


def main(argv: list[str] | None = None) -> int:
    from bids_deface.evaluation.__main__ import main as evaluate

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    out = ["--head", "pycortex_s1", "--json", str(args.json)]
    if args.markdown:
        out += ["--markdown", str(args.markdown)]
    with slabs_or_p05():
        return evaluate(out)


if __name__ == "__main__":
    raise SystemExit(main())
