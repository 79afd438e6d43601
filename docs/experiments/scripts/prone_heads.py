"""Front or back: cues for a head turned by a half turn under a supine header (prone), on
every evaluation case of the five tuning heads.

For each case the first pass is run as the pipeline runs it; then, for every case that is
a removable head, not on its side, where the network finds under ``--gate`` mL of face in
front of the brain, the case is also masked in the upright frame of the other way along the
mirror plane (the face taken to look posterior). Recorded per case:

* ``front_here`` — the network's face in front of the brain in the image's own axes
  (:func:`bids_deface.pose.face_in_front_ml`, first pass);
* ``behind_here`` — the same behind the brain (the image mirrored front to back);
* ``front_reversed`` — the same in the reversed upright frame;
* ``globes_here`` / ``globes_reversed`` — the eyeballs :func:`bids_deface.eyes.find_globes`
  finds (count and best score) in the image as it lies and turned by a half turn about the
  superior axis, with dark vitreous (T1-weighted) and with bright vitreous (the image
  negated);
* with ``--score``, the evaluation's row of the case masked in the reversed frame
  (``reversed_*``).

    python docs/experiments/scripts/prone_heads.py --json benchmarks/prone-heads.json

With ``--pipeline``, the named ``--cases`` are instead masked by the shipped pipeline
(:meth:`bids_deface.masking.FaceModel.predict`) and scored:

    python docs/experiments/scripts/prone_heads.py --pipeline --cases "T1w prone (real)" \
        --json benchmarks/prone-heads-pipeline.json
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from bids_deface.data import default_model_dir
from bids_deface.evaluation.__main__ import evaluate_case, head_cases
from bids_deface.eyes import find_globes
from bids_deface.masking import LABELS, FaceModel, _Clock, _to_ras, head_scale, largest_component
from bids_deface.inputs import judge_input
from bids_deface.pose import face_in_front_ml, head_pose

HEADS = ("ds000031", "colin27", "pydeface_template", "volpack", "slicer_mrhead")
COLUMNS = ("eyeball_right", "eyeball_left", "eye_right", "eye_left", "nose", "mouth", "ear_right", "ear_left",
           "brain_removed", "pass")


def _globes(ras: np.ndarray, brain: np.ndarray, zooms: tuple[float, ...]) -> dict:
    out = {}
    for name, data in (("dark", ras), ("bright", -ras)):
        found = find_globes(data, brain, zooms)
        out[name] = [len(found), round(max((g.score for g in found), default=0.0), 2)]
    return out


class _Reversed:
    """The face model masking every head in the upright frame of the other way along its
    mirror plane; records the cues on the way."""

    def __init__(self, model: FaceModel, gate: float, score: bool) -> None:
        self.model, self.gate, self.score = model, gate, score
        self.cues: dict = {}

    def predict(self, img):  # type: ignore[no-untyped-def]
        model = self.model
        ornt, ras, zooms = _to_ras(img)
        ras = np.ascontiguousarray(ras)
        zooms = tuple(float(z) for z in zooms)
        seg, guard_brain = model._labels_ras(ras, np.asarray(zooms))
        brain = largest_component(seg == LABELS["brain"])
        kind = judge_input(ras, zooms, brain, seg == LABELS["face"], largest=True)
        cues = {"kind": kind.kind}
        self.cues = cues
        if not kind.removable:
            return model.predict(img) if self.score else None
        scale = head_scale(brain, zooms, largest=True)
        pose = head_pose(brain, zooms, pitch=scale is not None)
        face = seg == LABELS["face"]
        cues.update(scale=scale, front_here=round(face_in_front_ml(face, brain, zooms), 1),
                    behind_here=round(face_in_front_ml(face[:, ::-1], brain[:, ::-1], zooms), 1))
        if pose is None:
            return model.predict(img) if self.score else None
        cues.update(yaw=round(pose.yaw, 1), turned=pose.turned,
                    globes_here=_globes(ras, brain, zooms),
                    globes_reversed=_globes(ras[::-1, ::-1], brain[::-1, ::-1], zooms))
        if pose.turned or cues["front_here"] >= self.gate:
            return model.predict(img) if self.score else None
        way = head_pose(brain, zooms, pitch=scale is not None, reverse=True)
        t0 = time.perf_counter()
        out = model._predict_upright(ras, zooms, ornt, way, guard_brain, kind, _Clock())  # type: ignore[arg-type]
        cues.update(front_reversed=round(out.face_in_front_ml, 1), reversed_seconds=round(time.perf_counter() - t0, 1))
        return out


class _Last:
    """The face model, keeping its last prediction."""

    def __init__(self, model: FaceModel) -> None:
        self.model = model

    def predict(self, img):  # type: ignore[no-untyped-def]
        self.prediction = self.model.predict(img)
        return self.prediction


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sources", type=Path, default=Path("cache/sources"))
    parser.add_argument("--heads", nargs="+", default=list(HEADS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--gate", type=float, default=600.0)
    parser.add_argument("--score", action="store_true")
    parser.add_argument("--cases", nargs="+", help="only these cases")
    parser.add_argument("--pipeline", action="store_true", help="score the shipped pipeline's masks")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    rows = []
    for head in args.heads:
        for case in head_cases(args.sources / f"{head}.nii.gz", head, args.cases):
            if args.pipeline:
                last = _Last(model)
                row = evaluate_case(last, case)
                pose = last.prediction.pose
                keep = {"head": head, "case": case.name, "upright_frame": last.prediction.upright,
                        "yaw": None if pose is None else round(pose.yaw, 1),
                        **{k: row.get(k) for k in (*COLUMNS, "seconds")}}
                rows.append(keep)
                print(json.dumps(keep), flush=True)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=1) + "\n")
                continue
            rev = _Reversed(model, args.gate, args.score)
            if case.expect == "nothing":
                continue
            if args.score:
                row = evaluate_case(rev, case)
            else:
                rev.predict(case.image)
            keep = {"head": head, "case": case.name, **rev.cues}
            if args.score and "front_reversed" in rev.cues:
                keep.update({f"reversed_{k}": row.get(k) for k in COLUMNS})
            rows.append(keep)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in keep.items()}), flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
