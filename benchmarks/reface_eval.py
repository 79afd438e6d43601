"""Refacing on the real heads and their contrasts: downstream, privacy and seam.

For every case (the held-out heads of fold A in their own image and synthesised
contrasts, ``bids_deface.evaluation.cases.make_cases``; the other real heads in their own
image), the shipped model's face mask is applied both ways, defaced and refaced
(``bids_deface.reface``, the face template this machine has), and:

- **downstream**: the brain volume of deepbet (an independent network) and a whole-head
  affine registration to a template (SimpleITK: centres of intensity, then 12 parameters,
  Mattes MI; Colin27's head as the target — a registration target only, never a face)
  are computed on the original, the defaced and the refaced image; the registration's
  change is the mean distance between where the original's and the other's transform
  put the target's brain voxels;
- **privacy**: the refaced face is fitted to the subject's own face (an affine on the
  face region) and the mean symmetric distance between their skin surfaces in the face
  mask measured; the same for every ordered pair of different real people (their own T1w
  images, started from their brains' centres and sizes);
- **seam**: the intensity step across the mask's edge against the image's local variation
  (``bids_deface.evaluation.reface_metrics.seam_steps``).

Usage::

    python benchmarks/reface_eval.py --sources cache/sources --out benchmarks/reface.md
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

logger = logging.getLogger("reface_eval")

HELD_OUT = ("pycortex_s1", "sag_child3", "itk_t1")
OTHERS = ("ds000031", "slicer_mrhead", "volpack")
CASES = ("T1w 1 mm (real)", "T2w 1 mm", "FLAIR 1 mm", "PD 1 mm", "T2starw 1 mm", "newborn T2w 1 mm",
         "T1w 5 mm axial (real)", "child 0.7 T1w (real)", "newborn 0.6 T2w")
#: Real heads whose faces are compared pairwise (the ITK head's face is out of view).
PEOPLE = ("pycortex_s1", "ds000031", "slicer_mrhead", "sag_child3", "volpack")


def _image(data: np.ndarray, like: nib.Nifti1Image) -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.asarray(data, np.float32), like.affine)
    img.set_qform(like.affine, 1)
    img.set_sform(like.affine, 1)
    return img


def _ml(mask: np.ndarray, img: nib.Nifti1Image) -> float:
    return float(mask.sum()) * float(np.prod(img.header.get_zooms()[:3])) / 1000.0


def _brain_init(fixed_brain: np.ndarray, fixed_aff: np.ndarray, moving_brain: np.ndarray,
                moving_aff: np.ndarray) -> np.ndarray:
    """World RAS matrix fixed -> moving from the brains' centres and sizes."""
    cf = nib.affines.apply_affine(fixed_aff, np.argwhere(fixed_brain).mean(0))
    cm = nib.affines.apply_affine(moving_aff, np.argwhere(moving_brain).mean(0))
    vf = fixed_brain.sum() * abs(np.linalg.det(fixed_aff[:3, :3]))
    vm = moving_brain.sum() * abs(np.linalg.det(moving_aff[:3, :3]))
    k = float((vm / vf) ** (1 / 3))
    m = np.eye(4)
    m[:3, :3] *= k
    m[:3, 3] = cm - k * cf
    return m


def evaluate_case(name: str, head: str, img: nib.Nifti1Image, model, template, target, target_points,  # type: ignore[no-untyped-def]
                  privacy: bool) -> dict:
    from bids_deface.brainmask import deepbet_brain_mask
    from bids_deface.deface import deface_image
    from bids_deface.evaluation.reface_metrics import (affine_to_template, align_face, displacement_mm,
                                                       face_surface_distance, seam_steps)
    from bids_deface.reface import reface_image

    row: dict = {"head": head, "case": name}
    pred = model.predict(img)
    face = np.asarray(pred.face, bool)
    row["face_ml"] = round(_ml(face, img), 1)
    if not face.any():
        row["note"] = "nothing removed"
        return row
    original = img.get_fdata(dtype=np.float32)
    defaced = deface_image(img, face).astype(np.float32)
    t0 = time.perf_counter()
    result = reface_image(img, face, pred.brain, template, threads=2)
    row["reface_s"] = round(time.perf_counter() - t0, 2)
    refaced = result.raw.astype(np.float32)
    zooms = np.asarray(img.header.get_zooms()[:3], float)
    versions = {"original": original, "defaced": defaced, "refaced": refaced}
    volumes, transforms = {}, {}
    for key, data in versions.items():
        im = _image(data, img)
        volumes[key] = _ml(deepbet_brain_mask(im), img)
        transforms[key] = affine_to_template(im, target)
    for key in ("defaced", "refaced"):
        row[f"brain_ml_{key}"] = round(volumes[key], 1)
        row[f"brain_change_{key}"] = round((volumes[key] - volumes["original"]) / volumes["original"], 4)
        row[f"reg_mm_{key}"] = round(displacement_mm(transforms["original"], transforms[key], target_points)[0], 2)
    row["brain_ml_original"] = round(volumes["original"], 1)
    for key in ("defaced", "refaced"):
        s = seam_steps(versions[key], face, zooms, original)
        row[f"seam_ratio_{key}"] = round(s.get("ratio", float("nan")), 3)
        row[f"seam_above_sd_{key}"] = round(s.get("above_sd", float("nan")), 3)
        row["seam_patches"] = s.get("patches", 0)
    row["seam_ratio_original"] = round(seam_steps(original, face, zooms, original).get("ratio", float("nan")), 3)
    if privacy:
        aligned = align_face(original, img.affine, refaced, img.affine, face, initial=np.eye(4))
        row["face_mm_refaced_vs_own"] = round(face_surface_distance(original, aligned, zooms, face), 2)
        row["face_mm_refaced_unaligned"] = round(face_surface_distance(original, refaced, zooms, face), 2)
    row["template"] = result.record.get("TemplateSource")
    logger.info("%s", json.dumps(row))
    return row


def people_pairs(sources: Path, model, names=PEOPLE) -> list[dict]:  # type: ignore[no-untyped-def]
    """Face surface distance between every ordered pair of different real people."""
    from bids_deface.evaluation.reface_metrics import align_face, face_surface_distance

    heads = {}
    for n in names:
        img = nib.load(sources / f"{n}.nii.gz")
        pred = model.predict(img)
        heads[n] = (img, img.get_fdata(dtype=np.float32), np.asarray(pred.face, bool), np.asarray(pred.brain, bool))
    rows = []
    for a in names:
        ia, da, fa, ba = heads[a]
        for b in names:
            if a == b:
                continue
            ib, db, _, bb = heads[b]
            init = _brain_init(ba, ia.affine, bb, ib.affine)
            aligned = align_face(da, ia.affine, db, ib.affine, fa, initial=init)
            d = face_surface_distance(da, aligned, np.asarray(ia.header.get_zooms()[:3]), fa)
            rows.append({"fixed": a, "moving": b, "face_mm": round(d, 2)})
            logger.info("%s", json.dumps(rows[-1]))
    return rows


def _share(values: list[float], limit: float = 0.05) -> str:
    v = [x for x in values if np.isfinite(x)]
    return f"{sum(abs(x) > limit for x in v)} of {len(v)}" if v else "-"


def markdown(rows: list[dict], pairs: list[dict], template: str, command: str) -> str:
    done = [r for r in rows if "brain_change_refaced" in r]
    lines = [
        "# Refacing on the real heads: downstream, privacy, seam",
        "",
        f"Made by `{command}` (face template: {template}). Cases: the held-out heads of fold A",
        "(pycortex S1, the 3-year-old, the ITK head) in their own image and synthesised contrasts,",
        "and the other real heads in their own image; the face mask is the shipped model's.",
        "",
        "## Downstream: brain volume (deepbet) and affine registration to a template",
        "",
        "`brain Δ` is the change of deepbet's brain volume from the original; `reg` the mean",
        "distance (mm) between where the original's and the image's whole-head affine",
        "registrations to Colin27 put Colin27's brain voxels.",
        "",
        "| head | case | brain mL (original) | brain Δ defaced | brain Δ refaced | reg mm defaced | reg mm refaced |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in done:
        lines.append(f"| {r['head']} | {r['case']} | {r['brain_ml_original']:.0f} | {100 * r['brain_change_defaced']:+.1f} % "
                     f"| {100 * r['brain_change_refaced']:+.1f} % | {r['reg_mm_defaced']:.2f} | {r['reg_mm_refaced']:.2f} |")
    vol_closer = sum(abs(r["brain_change_refaced"]) < abs(r["brain_change_defaced"]) for r in done)
    reg_closer = sum(r["reg_mm_refaced"] < r["reg_mm_defaced"] for r in done)
    lines += [
        "",
        f"- Brain volume closer to the original's after refacing than after defacing: **{vol_closer} of {len(done)}** cases.",
        f"- Registration closer to the original's after refacing than after defacing: **{reg_closer} of {len(done)}** cases.",
        f"- Cases with a brain-volume change over 5 %: defaced **{_share([r['brain_change_defaced'] for r in done])}**, "
        f"refaced **{_share([r['brain_change_refaced'] for r in done])}**.",
        f"- Median |brain Δ|: defaced {100 * np.median([abs(r['brain_change_defaced']) for r in done]):.2f} %, "
        f"refaced {100 * np.median([abs(r['brain_change_refaced']) for r in done]):.2f} %; median registration change: "
        f"defaced {np.median([r['reg_mm_defaced'] for r in done]):.2f} mm, refaced "
        f"{np.median([r['reg_mm_refaced'] for r in done]):.2f} mm.",
        "",
        "## Privacy: the refaced face against the subject's own, and two people's faces",
        "",
        "Mean symmetric distance (mm) between skin surfaces within the face mask, after an affine",
        "fit of the one face to the other.",
        "",
    ]
    own = [r for r in done if "face_mm_refaced_vs_own" in r]
    lines += ["| head | case | refaced vs own face (mm) | without the fit (mm) |", "|---|---|---|---|"]
    for r in own:
        lines.append(f"| {r['head']} | {r['case']} | {r['face_mm_refaced_vs_own']:.2f} | {r['face_mm_refaced_unaligned']:.2f} |")
    # per head, on its own grid and mask: its refaced face against the other people's faces
    own_image = {r["head"]: r for r in own if r["case"] in ("T1w 1 mm (real)", "T1w (real, own image)")}
    per_head = []
    for head, r in own_image.items():
        others = sorted(p["face_mm"] for p in pairs if p["fixed"] == head and np.isfinite(p["face_mm"]))
        if others:
            per_head.append((head, r["face_mm_refaced_vs_own"], others))
    if per_head:
        lines += ["", "Per head, in its own image and mask: its refaced face against each other person's face",
                  "fitted to it the same way.", "",
                  "| head | refaced vs own (mm) | other people vs this head (mm) | refaced at least the nearest other person |",
                  "|---|---|---|---|"]
        for head, d, others in per_head:
            lines.append(f"| {head} | {d:.2f} | {', '.join(f'{o:.2f}' for o in others)} | "
                         f"{'yes' if d >= others[0] else 'no'} |")
    if pairs:
        d = np.array([p["face_mm"] for p in pairs if np.isfinite(p["face_mm"])])
        lines += ["", "| fixed | moving | two people's faces (mm) |", "|---|---|---|"]
        lines += [f"| {p['fixed']} | {p['moving']} | {p['face_mm']:.2f} |" for p in pairs]
        o = np.array([r["face_mm_refaced_vs_own"] for r in own if np.isfinite(r["face_mm_refaced_vs_own"])])
        if o.size and d.size:
            lines += ["", f"- Two different people: median {np.median(d):.2f} mm (range {d.min():.2f}–{d.max():.2f}, "
                      f"{d.size} ordered pairs).",
                      f"- Refaced against the subject's own: median {np.median(o):.2f} mm (range {o.min():.2f}–{o.max():.2f}); "
                      f"at least the people's median in **{int((o >= np.median(d)).sum())} of {o.size}** cases, "
                      f"at least their smallest in {int((o >= d.min()).sum())} of {o.size}."]
    lines += [
        "",
        "## Seam at the mask's edge",
        "",
        "Median over 8 mm patches along the edge (where the original has tissue) of the step in",
        "mean intensity across the edge (2 mm each side) over the image's own local standard",
        "deviation there; `above` is the share of patches whose step exceeds it.",
        "",
        "| head | case | patches | original | defaced (above) | refaced (above) |",
        "|---|---|---|---|---|---|",
    ]
    for r in done:
        lines.append(f"| {r['head']} | {r['case']} | {r['seam_patches']} | {r['seam_ratio_original']:.2f} "
                     f"| {r['seam_ratio_defaced']:.2f} ({r['seam_above_sd_defaced']:.2f}) "
                     f"| {r['seam_ratio_refaced']:.2f} ({r['seam_above_sd_refaced']:.2f}) |")
    sec = [r["reface_s"] for r in done]
    lines += ["", f"Refacing took {np.median(sec):.1f} s per case (median; {min(sec):.1f}–{max(sec):.1f} s, "
              "2 threads, any voxel size; `benchmarks/reface_speed.py` times the 1 mm heads alone).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", type=Path, default=Path("cache/sources"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/reface.md"))
    p.add_argument("--json", type=Path, default=None, help="also the rows as JSON (default: --out with .json)")
    p.add_argument("--heads", nargs="*", default=list(HELD_OUT) + list(OTHERS))
    p.add_argument("--cases", nargs="*", default=list(CASES))
    p.add_argument("--no-pairs", action="store_true", help="skip the pairs of people")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="only write --out from the rows and pairs of an earlier run's JSON")
    p.add_argument("--pairs-from", type=Path, default=None,
                   help="take the pairs of people from this JSON of an earlier run (they do not depend on refacing)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    command = "python benchmarks/reface_eval.py --sources cache/sources --out benchmarks/reface.md"
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        args.out.write_text(markdown(saved["rows"], saved["pairs"], saved.get("template", "pydeface-mean_reg2mean "
                                                                              "(fallback)"), command))
        return 0
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    from bids_deface.brainmask import deepbet_brain_mask
    from bids_deface.evaluation.cases import load_landmarks, make_cases
    from bids_deface.face_template import load_face_template
    from bids_deface.pipeline import load_face_model

    model = load_face_model(None, device="cpu", threads=2)
    template = load_face_template()
    target = nib.load(args.sources / "colin27.nii.gz")
    target_brain = np.asanyarray(nib.load(args.sources / "colin27_bet.nii.gz").dataobj) > 0
    pts = np.argwhere(target_brain)[:: max(1, int(target_brain.sum()) // 5000)]
    target_points = nib.affines.apply_affine(target.affine, pts)
    rows: list[dict] = []
    for head in args.heads:
        img = nib.load(args.sources / f"{head}.nii.gz")
        try:
            landmarks = load_landmarks(head)
        except KeyError:
            landmarks = None
        if head in HELD_OUT and landmarks is not None:
            brain = deepbet_brain_mask(img)
            cases = [(c.name, c.image) for c in make_cases(img, brain, landmarks, list(args.cases))]
        else:
            cases = [("T1w (real, own image)", img)]
        for name, case_img in cases:
            rows.append(evaluate_case(name, head, case_img, model, template, target, target_points,
                                      privacy="(real" in name))
    if args.pairs_from is not None:
        pairs = json.loads(args.pairs_from.read_text())["pairs"]
    else:
        pairs = [] if args.no_pairs else people_pairs(args.sources, model)
    name = f"{template.name} ({template.source})"
    args.out.write_text(markdown(rows, pairs, name, command))
    (args.json or args.out.with_suffix(".json")).write_text(
        json.dumps({"template": name, "rows": rows, "pairs": pairs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
