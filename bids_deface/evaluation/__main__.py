"""Evaluate the face model on a real head never used in training (metrics in ``bids_deface.evaluation.metrics``).

Usage::

    python -m bids_deface.training.fetch --only pycortex          # the held-out head
    python -m bids_deface.evaluation --head pycortex_s1 --markdown docs/validation.md

Prints one row per case: coverage of eyes, nose, mouth and ears, brain voxels removed
(independent deepbet mask), Dice and HD95 against the rule-based reference face label,
mL removed and seconds; writes the same table as Markdown when asked.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from ..settings import RUNTIMES
from .cases import CASE_NAMES, load_landmarks, make_cases
from .metrics import (COVERAGE_RADIUS_MM, REQUIRED, brain_gap_mm, brain_voxels_removed, dice,
                      feature_coverage, hd95)

logger = logging.getLogger("bids_deface.evaluation")

FEATURES = ["eye_right", "eye_left", "nose", "mouth", "ear_right", "ear_left"]


def head_cases(head_path: Path, head: str, only: list[str] | None = None) -> list:
    """The evaluation cases (``only`` these, by name) of the head in ``head_path``, with
    deepbet's brain; a head with no landmarks (``landmarks.json``) gets cases without them
    (eyeballs and the brain are still scored)."""
    from ..brainmask import deepbet_brain_mask

    img = nib.load(head_path)
    try:
        landmarks = load_landmarks(head)
    except KeyError:
        landmarks = {}
    return make_cases(img, deepbet_brain_mask(img), landmarks, only)


def evaluate(head_path: Path, head: str, model_dir: Path | None, only: list[str] | None,
             threads: int = 2, extra: bool = False, model=None,  # type: ignore[no-untyped-def]
             runtime: str = "auto") -> list[dict]:
    """Rows of one head's cases (``CASE_NAMES``, and with ``extra`` the input kinds of
    ``INPUT_KIND_CASES``; ``only`` picks cases by name)."""
    from ..data import default_model_dir
    from ..masking import FaceModel

    if only is None and not extra:
        only = list(CASE_NAMES)
    cases = head_cases(head_path, head, only)
    if model is None:
        model = FaceModel(model_dir or default_model_dir(), device="cpu", threads=threads, runtime=runtime)
    return [evaluate_case(model, case) for case in cases]


def evaluate_case(model, case) -> dict:  # type: ignore[no-untyped-def]
    """One row: coverage, eyeballs, brain removed and the rest (see the page's intro)."""
    from ..anatomy import head_mask
    from ..deface import guard_distance_mm, slab_splits

    t0 = time.perf_counter()
    pred = model.predict(case.image)
    seconds = time.perf_counter() - t0
    zooms = case.image.header.get_zooms()[:3]
    row: dict = {"case": case.name, "expect": case.expect, "partial": case.partial,
                 "input_kind": pred.input_kind.kind if pred.input_kind is not None else None}
    if case.expect == "nothing":
        row["brain_removed"] = brain_voxels_removed(pred.face, case.brain)
        row["ml_removed"] = float(pred.face.sum()) * float(np.prod(zooms)) / 1000.0
        row["flags"] = list(pred.notes)
        row["seconds"] = seconds
        row["pass"] = passes(row)
        logger.info("%s", json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}))
        return row
    data = case.image.get_fdata(dtype=np.float32)
    head_tissue = head_mask(data, np.asarray(zooms)) if case.tissue is None else case.tissue
    # features the source head has no landmark for lie outside its field of view
    row["out_of_view"] = [feat for feat in FEATURES if feat not in case.landmarks]
    for feat in FEATURES:
        lm = case.landmarks.get(feat)
        row[feat] = (float("nan") if lm is None else
                     feature_coverage(pred.face, head_tissue, case.image.affine, lm, COVERAGE_RADIUS_MM * case.scale))
    for side in ("right", "left"):
        eye = case.eyes.get(side)
        row[f"eyeball_{side}"] = (float(np.count_nonzero(pred.face & eye)) / np.count_nonzero(eye)
                                  if eye is not None and eye.any() else float("nan"))
    # the most of each ear the guard lets go around a perfect brain (the independent
    # one), whichever part of the mask holds a voxel: beyond the smaller of the guards.
    # Below the threshold, a case passes only where the predicted brain falls short
    if "ears" in pred.guard_mm:
        g = min(pred.guard_mm.values())

        def ears_beyond(dist: np.ndarray) -> dict[str, float]:
            return {feat: feature_coverage(dist > g, head_tissue, case.image.affine,
                                           case.landmarks[feat], COVERAGE_RADIUS_MM * case.scale)
                    for feat in FEATURES if feat.startswith("ear") and feat in case.landmarks}

        # on thick slices the brain of the slices the slabs were made of: the guard's
        # brain is drawn on the slabs' sub-slices (one per source slice here)
        perfect = case.brain if case.brain_slices is None else case.brain_slices
        on_sub_slices = perfect.shape == tuple(n * k for n, k in zip(case.brain.shape, slab_splits(zooms)))
        # (a source acquired in thick slices has no finer brain to count the ceiling from)
        if on_sub_slices:
            row["ear_ceiling"] = ears_beyond(guard_distance_mm(perfect, zooms, g + 1.0, shape=case.brain.shape))
    row["brain_removed"] = brain_voxels_removed(pred.face, case.brain)
    row["brain_gap_mm"] = brain_gap_mm(pred.face, case.brain, zooms)
    row["brain_short_mm"], row["brain_over_mm"] = brain_boundary_error(pred.brain, case.brain,
                                                                       case.reference_face, zooms)
    row["dice"] = dice(pred.face, case.reference_face)
    row["hd95_mm"] = hd95(pred.face, case.reference_face, zooms)
    row["ml_removed"] = float(pred.face.sum()) * float(np.prod(zooms)) / 1000.0
    row["flags"] = list(pred.notes)
    row["seconds"] = seconds
    row["timings"] = {k: round(v, 2) for k, v in pred.timings.items()}
    row["guard_mm"] = {k: round(v, 2) for k, v in pred.guard_mm.items()}
    row["pass"] = passes(row)
    logger.info("%s", json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}))
    return row


def brain_boundary_error(predicted: np.ndarray, brain: np.ndarray, face: np.ndarray,
                         zooms, band_mm: float = 8.0) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Where the face (reference label: front of the face and ears) meets the brain, how far
    the predicted brain's boundary is off the independent one: over the face voxels within
    ``band_mm`` of the independent brain and outside it, the largest amount by which a
    voxel lies farther from the predicted brain than from the true one (``short``: the
    guard's margin is that much smaller than it says) and nearer (``over``: the guard takes
    back voxels that could go). NaN when the face does not come that close."""
    from ..anatomy import distance_mm

    d_true = distance_mm(brain, zooms)
    band = face & (d_true <= band_mm) & ~brain
    if not band.any() or not predicted.any():
        return float("nan"), float("nan")
    diff = distance_mm(predicted, zooms)[band] - d_true[band]
    return float(diff.max()), float(-diff.min())


def passes(row: dict) -> bool:
    """Acceptance of one case: nothing removed where the image holds no face; otherwise the
    coverage thresholds of every feature in view and no brain removed. A feature is out of
    view where the case's image holds no head tissue in its sphere (no globe voxel, for an
    eyeball), or where its head has no landmark for it (NaN): a face at the edge of the
    field of view can leave it out of a case made in thick slabs."""
    if row.get("expect") == "nothing":
        return row["ml_removed"] == 0 and row["brain_removed"] == 0
    for feat, need in REQUIRED.items():
        v = row.get(feat, float("nan"))
        if v is None or math.isnan(v):
            continue
        if v < need:
            return False
    return row["brain_removed"] == 0


INTRO = """# Validation on a held-out real head

**This page scores one held-out head.** The evaluation by held-out heads — every real head
scored by a model that never saw it, with the input kinds of real datasets (skull-stripped,
partial fields of view, heads tilted by 30°, on their side, prone or off-centre, thick slabs
along every axis, a 0.43 mm clinical grid, non-head images) and the real 3-year-old — is
[validation/README.md](validation/README.md); there the shipped model fails cases this page
does not show.

The shipped model evaluated on **pycortex subject S1** (real adult T1w, 1 mm, full face
and both ears in view), a head that was never used to make training data. From that one
head the evaluation builds its own contrast and synthesised T2w, FLAIR, PD, T2\\*w and
newborn-T2w looks (from the head's tissue classes), clinical 5 mm axial slices (block
averages of five 1 mm slices), and child-size heads: scaled to 0.8 (infant, T2w), 0.7
(child, the head's own contrast and FLAIR) and 0.6 (newborn T1w and T2w contrast, and the
newborn T2w in 3 mm axial slices), with the face below the orbits shrunk to 0.9, 0.85 and
0.75 of its size.

Metrics (`bids_deface/evaluation/metrics.py`):

- **coverage** of each feature: fraction of head-tissue voxels in a sphere of 10 mm
  (scaled with the head for child sizes) around a landmark placed by eye (front of
  each eyeball at the lens, mid-nose, lips, concha of each ear) that the final mask removes; required:
  eyes, nose, mouth ≥ 0.99 (every passing case on this page reaches 1.0), each ear ≥ 0.95 (shown truncated, not rounded, to three decimals);
- **brain_removed**: voxels of deepbet's brain mask of the original head (an independent
  network) that the mask removes; required: 0;
- **brain_gap_mm**: smallest distance from a removed voxel to that brain mask (voxel
  centres; on 5 mm grids a neighbouring slice is 5 mm away); [mask.md](mask.md) aims at 2 mm;
- **dice / hd95_mm**: against the rule-based reference face label of the head (which
  includes less air and, for this head, misses most of the ears): reported, not a goal;
- **ml_removed**, **seconds**: size of the mask, and the time of the mask step on two CPU
  threads (prediction, ear zone, brain guard; two predictions for the child sizes, see
  *Small heads* in the model card), machine shared with other work.

"""

#: Why the case that fails does, shown while a case fails.
BELOW_TARGET = """The one case below target, the newborn-size T2w in 3 mm axial slabs, misses ear voxels
(62 of 736 on the right, 42 of 709 on the left; eyes, nose and mouth are whole). All but one
of them lie only in the ear zone, whose guard at newborn size is 3.3 mm (the 2 mm margin
and 1.3 mm of room for the predicted brain's error, [mask.md](mask.md)), in the slabs just
below the temporal lobes. Counted from every slice of their slabs to the independent brain
mask on the slices the slabs were made of, 30 and 13 of them lie within 2.5 mm of the brain
and all but one of the rest within 3.3 mm: around a perfect brain the ear zone's guard
would keep them too. The ceiling in the table above (0.959 / 0.981) takes the model's
smaller guard (2.5 mm), which these voxels do not get, as the model's own face does not
reach them. So this case passes only with less room for error beside the ears of a
newborn-size head, and with this network that costs the margin of another case:
[experiments/ear_zone_guard.md](experiments/ear_zone_guard.md) guards the same masks of the
small-head cases with the ear zone's room for error scaled down. Its ears reach 0.95 with
half the room (the ear zone guarded by 2.63 mm: 0.952 / 0.974), not with three quarters of
it (2.95 mm: 0.938 / 0.961). With half the room the mask comes within 0.6 mm of the brain
in the newborn-size T1w case (2.64 mm) and 0.7 mm in the child FLAIR (2.79 mm); with a
quarter it removes 3 brain voxels of the newborn-size T1w (2.32 mm). In that case the
predicted brain lies up to 2.4 mm short of the independent one where the ear zone meets
it, 1.3 mm within the ears' spheres (in this case 1.9 and 0.8 mm). So this case needs a
predicted brain whose boundary is off by less than about half a millimetre wherever the
ear zone meets it at newborn size, which the shipped network does not have, here or on
the training heads (`ears_short_mm` of
[benchmarks/small_heads.md](../benchmarks/small_heads.md)). Networks fine-tuned on
thick-slice labels, and guards counted between slabs or between voxel centres, were
measured too ([training.md](training.md#thick-slices-labelled-with-their-whole-slabs-brain-measured-not-shipped),
[training.md](training.md#slab-brains-drawn-from-the-shipped-networks-probabilities-measured-not-shipped)).
"""

#: Which rules were changed after this table had been read.
HISTORY = """The brain guard of small heads shrinks with the model's finer voxel ([mask.md](mask.md)).
That rule was chosen after the newborn-size T1w case failed with a uniform 4 mm guard (left
eye 0.988), so that case is no longer an unseen test of it. The newborn-size T2w case was
added afterwards, and the infant, child FLAIR and newborn 3 mm cases after that, each fixed
before its first run. The training heads shrunk to child and newborn size are in
[benchmarks/small_heads.md](../benchmarks/small_heads.md).

How small heads are shown to the model and guarded was changed again after this table had
been read, and the small-head cases are no longer an unseen test of it. Small heads used to be
shown at 0.85 (the middle of the training range, 2.1–2.3 mm voxels at newborn size) with
the ear zone guarded by the whole 4 mm; the newborn-size T2w right ear was then 0.949, and
the 3 mm newborn missed eyes (0.995 / 0.980) and ears (0.853 / 0.916). At newborn size 6 to
11 % of each ear's sphere lies within 4 mm of the independent brain mask, so a 4 mm guard
misses 0.95 even around a perfect brain. Shrinking the ear zone's guard like the model's
face (to 2.95 mm) had been measured then: ears 0.995 / 0.994, but the mask came within
0.6 mm of the brain. The shipped rule shows a smaller head larger, up to the adult size for
a newborn-size head (1.9 mm voxels), where the predicted brain is drawn more finely, and
keeps the 2 mm margin of the ear zone's guard whole, shrinking only its room for error
(3.3 mm at newborn size; [mask.md](mask.md)). Before it was run here it was checked on the
training heads ([benchmarks/small_heads.md](../benchmarks/small_heads.md): no brain
removed; a first form that showed every head under 1.0 as an adult one removed 3 brain
voxels of volpack, an adult head judged 0.89, and was dropped). One intermediate form was
also run on this table: the same showing with both guards shrunk in proportion to the voxel
(ear zone 2.5 mm at newborn size). It passed 13 cases (3 mm newborn ears 0.932 / 0.953)
but came within 0.6 mm of the brain (newborn-size T1w, in the ear zone; 1.0 mm in the child
FLAIR), and the 2 mm margin was kept whole instead. Against the previous rule, the
newborn-size ears went from 0.964 / 0.979 (T1w) and 0.949 / 0.963 (T2w) to 0.960 / 0.996
and 0.961 / 0.975, the 3 mm newborn's eyes to 1.000 (its ears to 0.891 / 0.915), and the
smallest distance to the brain from 1.7 mm to 1.2 mm (newborn-size T1w) and 1.9 mm (T2w),
and from 2.1 mm to 1.4 mm in the child FLAIR; the newborn-size cases take about half as long
again as the 1 mm ones (`seconds`), their second prediction running on finer voxels.

On thick slices the guard then came to count the distance along the slices' axis between
the slabs, since the tissue of both voxels, the face voxel's and the brain voxel's, spans
its slab; it used to add the half slab to the margin in every direction. That old rule removes brain from the 2 mm copy of this head that the tests
use, cut into 8 mm slabs (at least 5 voxels, in slabs next to a predicted brain slab), and
so did a first form of the change that counted only the face voxel's slab (10 voxels).
That copy is not an evaluation case, but the rule was changed after looking at it; the
first form had also been run on this table (5 mm ears 0.985 / 1.000 and 0.995 / 0.998, 3 mm
case eyes 1.000 / 0.996 and ears 0.902 / 0.943) and was dropped for that brain. The rule
shipped was checked on the training heads cut into slabs
([benchmarks/small_heads.md](../benchmarks/small_heads.md)) before this table was run.
Against the old rule the ears of the 5 mm cases went from 0.963 / 0.988 (T1w) and
0.983 / 0.980 (T2w) to 0.956 / 0.986 and 0.976 / 0.976, those of the 3 mm case from
0.849 / 0.885 to 0.853 / 0.916 (eyes unchanged, 0.995 / 0.980), and the smallest
distance to the brain from 5.0, 4.2 and 3.0 mm to 3.0, 3.2 and 2.4 mm.

The guard on thick slices was changed once more after this table had been read: it now
reads the brain on sub-slices of the slabs and keeps every sub-slice of a face voxel's
slab off it (`bids_deface.deface.guard_distance_mm`;
[training.md](training.md#the-guard-on-sub-slices-of-the-slabs-shipped)). Before it was
built, its ceiling on the 3 mm newborn case was computed from the independent brain mask
(0.959 / 0.982 at that case's 2.5 mm guard, head tissue taken from the T1w; against 0.895 / 0.906 for the guard counted
between slabs), so the thick cases are not an unseen test of it. It was then checked on
the training heads ([experiments/thick_guard.md](experiments/thick_guard.md),
[benchmarks/small_heads.md](../benchmarks/small_heads.md): no brain removed) and run on
this table once. Against the guard counted between slabs, the ears of the 5 mm cases went
from 0.956 / 0.986 (T1w) and 0.976 / 0.976 (T2w) to 0.983 / 0.997 and 0.995 / 0.992, those
of the 3 mm newborn from 0.891 / 0.915 to 0.915 / 0.940, and the smallest distance to the
brain from 3.0, 3.2 and 2.4 mm to 3.0, 3.0 and 1.8 mm; the thin cases are unchanged.

After that run, [experiments/ear_zone_guard.md](experiments/ear_zone_guard.md) guarded the
masks of the small-head cases again with less room for error in the ear zone, to measure
what the case below target would need (*The case below target*, above); no rule was
changed from it.
"""


#: Where the generated part of a validation page ends: what follows is kept on regeneration.
KEPT = "<!-- the sections below are not generated; they are kept when the table is regenerated -->"


def kept_part(path: Path) -> str:
    """The part of the page at ``path`` from :data:`KEPT` on (empty when there is none)."""
    text = path.read_text() if path.is_file() else ""
    return "\n" + text[text.index(KEPT):] if KEPT in text else ""


def to_markdown(rows: list[dict], command: str) -> str:
    def fmt(v: object, col: str = "") -> str:
        if col == "brain_gap_mm" and isinstance(v, float):
            return f"{v:.1f}"
        if col in FEATURES and isinstance(v, float) and not math.isnan(v):
            return f"{math.floor(v * 1000) / 1000:.3f}"  # a miss never reads as the threshold
        if isinstance(v, bool):
            return "yes" if v else "**no**"
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.3f}" if v <= 1.0 else f"{v:.1f}"
        return str(v)

    cols = ["case", *FEATURES, "brain_removed", "brain_gap_mm", "dice", "hd95_mm", "ml_removed", "seconds", "pass"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r[c], c) for c in cols) + " |")
    passed = sum(bool(r["pass"]) for r in rows)
    verdict = "Every case passes." if passed == len(rows) else \
        "Cases marked **no** miss an acceptance threshold."
    ceiling = [r for r in rows if "ear_ceiling" in r]
    if ceiling:
        verdict += (
            "\n\nThe guard's **ceiling**: the largest part of each ear's sphere that the brain"
            "\nguard allows to be removed if the predicted brain were exactly the independent"
            "\nbrain mask (on thick slices, that mask on the slices each slab was made of),"
            "\ntaking the smaller of the guards applied (`guard_mm`: the model's face, the ear"
            "\nzone). Below 0.95 a case can pass only where the predicted brain under-segments"
            "\nthat mask, which is where the guard's margin is thinner than it says.\n\n"
            "| case | guard_mm (face, ears) | ceiling ear_right | ceiling ear_left |\n|---|---|---|---|")
        for r in ceiling:
            g, c = r["guard_mm"], r["ear_ceiling"]
            verdict += (f"\n| {r['case']} | {g['face']:.1f}, {g['ears']:.1f} | "
                        f"{fmt(c['ear_right'], 'ear_right')} | {fmt(c['ear_left'], 'ear_left')} |")
    summary = f"**{passed} of {len(rows)} cases pass.**\n\n"
    notes = "" if passed == len(rows) else f"\n\n## The case below target\n\n{BELOW_TARGET}"
    notes += ("\n## How the guard's rules came about\n\nThe rules below were changed after cases of"
              " this table had been read;\nthose cases are no longer an unseen test of them.\n\n"
              + HISTORY)
    return (INTRO + summary + "\n".join(lines) + f"\n\n{verdict}{notes}\nRegenerate with (after "
            "`python -m bids_deface.training.fetch --only pycortex`):\n\n"
            f"```\n{command}\n```\n")


def add_runtime_option(parser: argparse.ArgumentParser) -> None:
    """``--runtime``: what runs the network (:data:`bids_deface.settings.RUNTIMES`)."""
    parser.add_argument("--runtime", choices=list(RUNTIMES), default="auto",
                        help="what runs the network (default: as the app, OpenVINO when installed)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate the face model on a held-out real head.")
    parser.add_argument("--head", default="pycortex_s1")
    parser.add_argument("--sources", type=Path, default=Path("cache/sources"))
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--cases", nargs="*", choices=CASE_NAMES, default=None)
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown")
    parser.add_argument("--threads", type=int, default=2)
    add_runtime_option(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    rows = evaluate(args.sources / f"{args.head}.nii.gz", args.head, args.model_dir, args.cases, args.threads,
                    runtime=args.runtime)
    command = "python -m bids_deface.evaluation " + shlex.join(argv if argv is not None else sys.argv[1:])
    table = to_markdown(rows, command)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.markdown:
        args.markdown.write_text(table + kept_part(args.markdown))
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
