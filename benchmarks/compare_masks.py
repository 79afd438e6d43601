"""Voxel-by-voxel agreement of the face masks of two bids-deface output folders.

Usage::

    python benchmarks/compare_masks.py OUT_A OUT_B

Every ``*_label-face_*mask.nii.gz`` under ``OUT_A`` is matched by its path to the same file
under ``OUT_B``; for each pair the table gives both voxel counts, the voxels that differ and
the Dice overlap. Use it to compare two devices (``--device cpu`` and ``--device cuda``) or
two versions of the model on the same dataset. Exit code 1 when a mask is missing from
``OUT_B`` or the grids differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bids_deface.evaluation.metrics import dice  # noqa: E402


def compare(out_a: Path, out_b: Path) -> tuple[list[tuple[str, int, int, int, float]], list[str]]:
    rows, problems = [], []
    for path_a in sorted(out_a.rglob("*_label-face_*mask.nii.gz")):
        rel = path_a.relative_to(out_a)
        path_b = out_b / rel
        if not path_b.exists():
            problems.append(f"{rel}: missing from {out_b}")
            continue
        a, b = nib.load(path_a), nib.load(path_b)
        if a.shape != b.shape or not np.allclose(a.affine, b.affine):
            problems.append(f"{rel}: grids differ")
            continue
        ma = np.asanyarray(a.dataobj) > 0
        mb = np.asanyarray(b.dataobj) > 0
        rows.append((rel.as_posix(), int(ma.sum()), int(mb.sum()), int((ma ^ mb).sum()), dice(ma, mb)))
    return rows, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_a", type=Path)
    parser.add_argument("out_b", type=Path)
    args = parser.parse_args(argv)
    rows, problems = compare(args.out_a, args.out_b)
    print("| mask | voxels A | voxels B | differing | Dice |\n|---|---|---|---|---|")
    for rel, na, nb, diff, overlap in rows:
        print(f"| {rel} | {na} | {nb} | {diff} | {overlap:.5f} |")
    for line in problems:
        print(line)
    return 1 if problems or not rows else 0


if __name__ == "__main__":
    raise SystemExit(main())
