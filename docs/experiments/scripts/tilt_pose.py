"""Head pose (bids_deface.pose) of the training heads' own images, and of ds000031 turned.

    python docs/experiments/scripts/tilt_pose.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_deface.data import default_model_dir
from bids_deface.evaluation.cases import rotated
from bids_deface.masking import FaceModel, LABELS, to_ras
from bids_deface.anatomy import largest_component
from bids_deface.pose import head_pose, PITCH_REFERENCE_DEG

TRAINING = ("ds000031", "colin27", "slicer_mrhead", "pydeface_template", "volpack")


def pose_of(model: FaceModel, data: np.ndarray, zooms: np.ndarray):
    seg = model.label_map_ras(data, zooms)
    return head_pose(largest_component(seg == LABELS["brain"]), zooms)


def main() -> int:
    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    sources = Path("cache/sources")
    print(f"(pitch shown as the raw angle: reference {PITCH_REFERENCE_DEG} added back)")
    for head in TRAINING + tuple(sys.argv[1:]):
        img = nib.load(sources / f"{head}.nii.gz")
        _, data, zooms = to_ras(img)
        p = pose_of(model, data, zooms)
        print(f"{head:20s} own   angle {p.pitch + PITCH_REFERENCE_DEG:6.1f} roll {p.roll:6.1f} yaw {p.yaw:6.1f} sym {p.symmetry:.3f}")
        if head != "ds000031":
            continue
        centre = np.argwhere(largest_component(model.label_map_ras(data, zooms) == 2)).mean(0)
        for axis, deg in ((0, 30.0), (0, -30.0), (1, 30.0), (1, -20.0), (2, 15.0), (0, 10.0)):
            d = rotated(data, zooms, centre, axis, deg, 1)
            p = pose_of(model, d, zooms)
            print(f"{head:20s} {'xyz'[axis]}{deg:+.0f}  angle {p.pitch + PITCH_REFERENCE_DEG:6.1f} roll {p.roll:6.1f} yaw {p.yaw:6.1f} sym {p.symmetry:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
