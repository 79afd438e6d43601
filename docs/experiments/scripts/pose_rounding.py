"""How much the head's measured roll and yaw move with the network's rounding, and a
roll and yaw read between the grid's angles: on the five tuning heads only.

For each tuning head, upright and turned by known angles, the first pass's brain is made
by the network in OpenVINO and in ONNX Runtime (logits 1e-3 apart), and the pose is
measured from each by ``bids_deface.pose.head_pose`` (the best of a 1° grid) and by
candidates that read the angle between the grid's points: the score-weighted centre of the
fine grid's angles within ``band`` of its best score (``centre-<band>``).

    python docs/experiments/scripts/pose_rounding.py --json benchmarks/pose-rounding.json
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_deface.anatomy import largest_component
from bids_deface.data import default_model_dir
from bids_deface.evaluation.cases import rotated
from bids_deface.masking import LABELS, FaceModel, to_ras
from bids_deface.pose import SEARCH_DEG, _coarse_points, _normal, _overlap, head_pose

TUNING = ("ds000031", "colin27", "slicer_mrhead", "pydeface_template", "volpack")
#: (RAS axis, degrees): 0 pitch, 1 roll, 2 yaw
TURNS = ((None, 0.0), (1, 15.0), (1, -15.0), (1, 30.0), (1, -30.0), (0, 30.0), (0, -30.0), (2, 20.0), (2, -20.0))
BANDS = (0.005, 0.01, 0.02)


def scores(brain: np.ndarray, zooms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fine grid of ``head_pose`` (rolls, yaws, overlap scores), upright search only."""
    coarse, czooms, origin, pts = _coarse_points(brain, zooms)
    centre = pts.mean(0)

    def grid(rolls: np.ndarray, yaws: np.ndarray) -> np.ndarray:
        r, w = (a.ravel() for a in np.meshgrid(rolls, yaws, indexing="ij"))
        n = _normal(r, w).astype(np.float32)
        d = n @ (pts - centre).astype(np.float32).T
        mirrored = pts.astype(np.float32)[None] - 2.0 * d[..., None] * n[:, None, :]
        s = _overlap(coarse, czooms.astype(np.float32), origin.astype(np.float32), mirrored)
        return s.reshape(len(rolls), len(yaws))

    coarse_grid = np.arange(-SEARCH_DEG, SEARCH_DEG + 0.1, 5.0)
    s = grid(coarse_grid, coarse_grid)
    i, j = np.unravel_index(int(np.argmax(s)), s.shape)
    fine = np.arange(-4.0, 4.1, 1.0)
    rolls, yaws = coarse_grid[i] + fine, coarse_grid[j] + fine
    return rolls, yaws, grid(rolls, yaws)


def centre_of(rolls: np.ndarray, yaws: np.ndarray, s: np.ndarray, band: float) -> tuple[float, float]:
    """Score-weighted centre of the angles within ``band`` of the best score."""
    w = np.clip(s - (s.max() - band), 0.0, None)
    r, y = np.meshgrid(rolls, yaws, indexing="ij")
    return float((w * r).sum() / w.sum()), float((w * y).sum() / w.sum())


def measure(model: FaceModel, data: np.ndarray, zooms: np.ndarray) -> dict[str, tuple[float, float]]:
    seg = model.label_map_ras(data, zooms)
    brain = largest_component(seg == LABELS["brain"])
    pose = head_pose(brain, zooms, turns=False)
    out = {"grid": (pose.roll, pose.yaw)}
    rolls, yaws, s = scores(brain, zooms)
    for band in BANDS:
        out[f"centre-{band}"] = centre_of(rolls, yaws, s, band)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, default=Path("cache/sources"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    models = {rt: FaceModel(default_model_dir(), device="cpu", threads=2, runtime=rt)
              for rt in ("openvino", "onnxruntime")}
    rows = []
    for head in TUNING:
        _, data, zooms = to_ras(nib.load(args.sources / f"{head}.nii.gz"))
        data = np.asarray(data, np.float32)
        seg = models["onnxruntime"].label_map_ras(data, zooms)
        centre = np.argwhere(largest_component(seg == LABELS["brain"])).mean(0)
        for axis, deg in TURNS:
            d = data if axis is None else rotated(data, zooms, centre, axis, deg, 1)
            row = {"head": head, "axis": axis, "degrees": deg}
            for rt, model in models.items():
                row[rt] = measure(model, d, zooms)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    summarise(rows)
    return 0


def summarise(rows: list[dict]) -> None:
    """Per estimator: how far the two runtimes' angles lie apart, and how far each turned
    head's change of angle from its upright one lies from the turn applied."""
    upright = {(r["head"], rt): r[rt] for r in rows if r["axis"] is None for rt in ("openvino", "onnxruntime")}
    print("| estimator | runtimes apart: roll median / max (°) | yaw median / max (°) | "
          "roll turns: error median / max (°) | yaw turns: error median / max (°) |")
    print("|---|---|---|---|---|")
    for est in ["grid", *(f"centre-{b}" for b in BANDS)]:
        apart_r = [abs(r["openvino"][est][0] - r["onnxruntime"][est][0]) for r in rows]
        apart_y = [abs(r["openvino"][est][1] - r["onnxruntime"][est][1]) for r in rows]
        err_r, err_y = [], []
        for r in rows:
            for rt in ("openvino", "onnxruntime"):
                up = upright[(r["head"], rt)][est]
                change = np.subtract(r[rt][est], up)
                if r["axis"] == 1:
                    err_r.append(abs(abs(change[0]) - abs(r["degrees"])))
                elif r["axis"] == 2:
                    err_y.append(abs(abs(change[1]) - abs(r["degrees"])))
        print(f"| {est} | {statistics.median(apart_r):.2f} / {max(apart_r):.2f} | "
              f"{statistics.median(apart_y):.2f} / {max(apart_y):.2f} | "
              f"{statistics.median(err_r):.2f} / {max(err_r):.2f} | {statistics.median(err_y):.2f} / {max(err_y):.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
