"""A verdict on a defaced image: ``pass``, ``face-remaining``, ``brain-removed``,
``not-defaced``, or ``review`` where the classifier is not sure.

The evidence (:mod:`bids_deface.qc.evidence`) goes to a random forest trained on defacing
outcomes made from the real heads (``python -m bids_deface.qc.train``), shipped as plain
JSON (``models/QC/verdict.json``: the trees' thresholds and leaf class fractions), so the
verdict needs numpy only. Rules come before and after it:

* an image that is not a head (empty, noise, a mask or a phantom) gets ``review`` with a
  note, never ``pass``;
* with the original, facts decide (:func:`rule_verdict`): nothing removed is
  ``not-defaced`` (``pass`` on an image without a face), and tissue removed from an image
  without a face (skull-stripped) is ``brain-removed``;
* the forest's ``pass`` stands only when its probability reaches the model's
  ``pass_threshold``; any verdict below ``threshold`` becomes ``review``. Both thresholds
  were chosen on held-out heads (``docs/validation/qc.md``).

An image with no face (skull-stripped, or already defaced) that the forest passes gets the
note ``no_face_in_image``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .evidence import Evidence, gather_evidence

__all__ = ["Forest", "Verdict", "decide", "rule_verdict", "judge", "judge_image", "load_forest", "default_qc_model", "NOT_HEAD_NOTES"]

#: Notes of the images that are not heads, by the evidence's kind.
NOT_HEAD_NOTES = {"empty": "empty_image", "noise": "noise_image", "not_head": "not_a_head"}


@dataclass(frozen=True)
class Forest:
    """A random forest as plain arrays (one dict per tree: ``left``, ``right``,
    ``feature``, ``threshold``, ``value``: class fractions at each node)."""

    trees: list[dict[str, np.ndarray]]
    classes: tuple[str, ...]
    features: tuple[str, ...]
    threshold: float
    pass_threshold: float
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "Forest":
        doc = json.loads(Path(path).read_text())
        trees = [{k: np.asarray(v, float if k in ("threshold", "value") else int) for k, v in t.items()}
                 for t in doc["trees"]]
        return cls(trees, tuple(doc["classes"]), tuple(doc["features"]), float(doc["threshold"]),
                   float(doc["pass_threshold"]), doc.get("meta", {}))

    def to_json(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "features": list(self.features), "threshold": self.threshold,
                "pass_threshold": self.pass_threshold, "meta": self.meta,
                "trees": [{k: np.round(v, 6).tolist() if v.dtype.kind == "f" else v.tolist() for k, v in t.items()}
                          for t in self.trees]}

    @classmethod
    def from_sklearn(cls, forest, features, threshold: float, pass_threshold: float,  # type: ignore[no-untyped-def]
                     meta: Mapping[str, Any] | None = None) -> "Forest":
        trees = []
        for est in forest.estimators_:
            t = est.tree_
            value = t.value[:, 0, :]
            value = value / np.maximum(value.sum(1, keepdims=True), 1e-12)
            trees.append({"left": t.children_left.copy(), "right": t.children_right.copy(),
                          "feature": t.feature.copy(), "threshold": t.threshold.copy(), "value": value})
        return cls(trees, tuple(str(c) for c in forest.classes_), tuple(features), threshold, pass_threshold,
                   dict(meta or {}))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of rows ``x`` (features in ``self.features`` order; NaN is
        read as -1, as in training)."""
        x = np.where(np.isnan(np.atleast_2d(np.asarray(x, float))), -1.0, np.atleast_2d(np.asarray(x, float)))
        out = np.zeros((x.shape[0], len(self.classes)))
        for t in self.trees:
            node = np.zeros(x.shape[0], int)
            while True:
                inner = t["left"][node] >= 0
                if not inner.any():
                    break
                f = t["feature"][node[inner]]
                go_left = x[np.nonzero(inner)[0], f] <= t["threshold"][node[inner]]
                node[inner] = np.where(go_left, t["left"][node[inner]], t["right"][node[inner]])
            out += t["value"][node]
        return out / len(self.trees)


def default_qc_model() -> Path:
    """The shipped verdict model (``models/QC/verdict.json``)."""
    from ..data import models_root

    return models_root() / "QC" / "verdict.json"


@dataclass(frozen=True)
class Verdict:
    verdict: str
    """``pass``, ``face-remaining``, ``brain-removed``, ``not-defaced`` or ``review``."""
    probability: float
    """The forest's probability of its most likely class (1.0 for a rule's verdict)."""
    probabilities: dict[str, float]
    notes: tuple[str, ...]
    evidence: Evidence

    def record(self) -> dict[str, Any]:
        """The verdict as it goes into a sidecar (``QC``)."""
        feats = {k: (None if math.isnan(v) else round(float(v), 3)) for k, v in self.evidence.features.items()}
        return {"Verdict": self.verdict, "Probability": round(self.probability, 3),
                "Probabilities": {k: round(v, 3) for k, v in self.probabilities.items()},
                "Notes": list(self.notes), "WithOriginal": self.evidence.with_original,
                "Evidence": feats, "Seconds": round(self.evidence.seconds, 3)}


#: With the original, the least volume of tissue (mL) removed from an image without a face
#: (skull-stripped) that makes it ``brain-removed``: there is nothing else to remove.
NO_FACE_TISSUE_ML = 0.1
#: The most tissue (mL) an image may hold in front of the brain and beside it, where the
#: face and the ears belong, to count as skull-stripped (the skull-stripped real heads hold
#: 5-10 mL; a newborn-size head with its face out of view, the ears still there, 30 mL).
STRIPPED_TISSUE_ML = 15.0


def rule_verdict(features: Mapping[str, float]) -> str | None:
    """The verdict that facts decide, with the original, before the classifier: nothing
    removed from a head with a face is ``not-defaced``; from a skull-stripped image (no
    face found, hardly any tissue where the face and the ears belong), ``pass``; tissue
    removed from a skull-stripped image is ``brain-removed``. None when the classifier
    decides."""
    removed = features.get("orig_removed_ml", math.nan)
    if removed is None or math.isnan(removed):
        return None
    no_face = features.get("orig_kind_no_face") == 1.0
    stripped = no_face and (features.get("tissue_front_ml", math.inf) + features.get("tissue_ear_ml", math.inf)
                            < STRIPPED_TISSUE_ML)
    if removed == 0.0 and not no_face:
        return "not-defaced"
    if removed == 0.0 and stripped:
        return "pass"
    if stripped and features.get("orig_removed_tissue_ml", 0.0) >= NO_FACE_TISSUE_ML:
        return "brain-removed"
    return None


def decide(forest: Forest, evidence: Evidence) -> Verdict:
    """The verdict of ``evidence`` (see the module docstring)."""
    if evidence.kind in NOT_HEAD_NOTES:
        return Verdict("review", 1.0, {}, (NOT_HEAD_NOTES[evidence.kind],), evidence)
    ruled = rule_verdict(evidence.features)
    if ruled is not None:
        notes = ("no_face_in_image",) if ruled == "pass" else ()
        return Verdict(ruled, 1.0, {ruled: 1.0}, notes, evidence)
    x = np.array([evidence.features.get(k, math.nan) for k in forest.features], float)
    p = forest.probabilities(x)[0]
    probs = {c: float(v) for c, v in zip(forest.classes, p)}
    best = forest.classes[int(np.argmax(p))]
    prob = float(p.max())
    notes: tuple[str, ...] = ()
    if best == "pass" and prob < forest.pass_threshold or prob < forest.threshold:
        verdict = "review"
    else:
        verdict = best
    if verdict == "pass" and evidence.kind == "no_face":
        notes = ("no_face_in_image",)
    return Verdict(verdict, prob, probs, notes, evidence)


def judge(model, forest: Forest, defaced: np.ndarray, zooms, original: np.ndarray | None = None,  # type: ignore[no-untyped-def]
          original_labels: np.ndarray | None = None) -> Verdict:
    """Evidence and verdict of ``defaced`` (RAS array, voxel sizes ``zooms``), with the
    ``original`` when there is one (:func:`bids_deface.qc.evidence.gather_evidence`)."""
    import time

    t0 = time.perf_counter()
    ev = gather_evidence(model, defaced, zooms, original=original, original_labels=original_labels)
    verdict = decide(forest, ev)
    seconds = time.perf_counter() - t0
    return Verdict(verdict.verdict, verdict.probability, verdict.probabilities, verdict.notes,
                   Evidence(ev.features, ev.kind, ev.with_original, seconds, ev.maps))



@lru_cache(maxsize=4)
def load_forest(path: Path | None = None) -> Forest:
    """The verdict model at ``path`` (default: the shipped one), loaded once per process."""
    return Forest.load(Path(path) if path is not None else default_qc_model())


def _scaled(raw: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """Stored values as intensities, 3D (the first volume of a 4D image), float32."""
    raw = np.asarray(raw)
    if raw.ndim == 4:
        raw = raw[..., 0]
    out = raw.astype(np.float32)
    if slope != 1.0 or inter != 0.0:
        out = out * np.float32(slope) + np.float32(inter)
    return out


def judge_image(model, img, defaced_raw: np.ndarray | None = None,  # type: ignore[no-untyped-def]
                original_labels: np.ndarray | None = None, forest: Forest | None = None) -> Verdict:
    """The verdict on a defaced image, in any orientation.

    ``img`` is the defaced image (audit) or, with ``defaced_raw`` (the defaced image's
    stored, unscaled values on the same grid, as written), the original; both are scaled
    by ``img``'s slope and intercept alike, so an unchanged voxel compares equal.
    ``original_labels``: the face model's label map of the original on its grid (0 keep,
    1 face, 2 brain), when already predicted.
    """
    import nibabel as nib

    from ..masking import to_ras

    forest = forest or load_forest()
    if defaced_raw is None:
        _, ras, zooms = to_ras(img)
        return judge(model, forest, ras, zooms)
    ornt = nib.orientations.io_orientation(img.affine)
    zooms = np.asarray(img.header.get_zooms()[:3], float)[ornt[:, 0].astype(int).argsort()]
    proxy = img.dataobj
    raw = np.asanyarray(proxy.get_unscaled()) if hasattr(proxy, "get_unscaled") else np.asanyarray(proxy)
    slope = float(getattr(proxy, "slope", 1.0) or 1.0)
    inter = float(getattr(proxy, "inter", 0.0) or 0.0)

    def oriented(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return nib.orientations.apply_orientation(a[..., 0] if a.ndim == 4 else a, ornt)

    original = oriented(_scaled(raw, slope, inter))
    defaced = oriented(_scaled(defaced_raw, slope, inter))
    labels = None if original_labels is None else oriented(original_labels)
    return judge(model, forest, defaced, zooms, original=original, original_labels=labels)
