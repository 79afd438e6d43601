"""Test-time mirroring, scored on the tuning heads.

The network's brain falls short of deepbet's, or overshoots it, by more than the brain
guard's room for error on heads it never saw. Every evaluation case (``CASE_NAMES`` and
``INPUT_KIND_CASES``) of the tuning heads, masked by the shipped model as it is and with
its predictions averaged with those of the image mirrored left to right
(``FaceModel(mirror=True)``), scored as the held-out evaluation scores its cases, with
``brain_short_mm`` / ``brain_over_mm`` (the predicted brain's boundary against deepbet's
where the face meets it).

    python docs/experiments/scripts/mirror_tta.py --json benchmarks/mirror-tta/tuning-heads.json
    python docs/experiments/scripts/mirror_tta.py --table benchmarks/mirror-tta/tuning-heads.json
"""

from __future__ import annotations


import numpy as np

from bids_deface.data import default_model_dir
from bids_deface.evaluation.folds import summary_rows
from bids_deface.masking import FaceModel
from guard_margin import settings_command  # docs/experiments/scripts/, run from the repository root

#: Training heads of the shipped model (ds000031, colin27) and a head it never saw that
#: the rules were tuned on (Slicer MRHead), as for the guard experiments.
TUNING = ("ds000031", "colin27", "slicer_mrhead")


def table(rows: list[dict], key: str = "mirror", title: str = "mirrored") -> str:
    """One line per setting (the rows' ``key``) and head group: the fold tables' counts
    and the brain's boundary error (median and largest over the cases)."""
    lines = [f"| {title} | heads | cases passing | cases with brain removed (voxels) | cases with an ear < 0.95 | "
             "cases with an eye, eyeball, nose or mouth short | brain short, mm (median, max) | "
             "brain over, mm (median, max) |", "|---|---|---|---|---|---|---|---|"]
    heads = list(dict.fromkeys(r["head"] for r in rows))
    settings = sorted({r[key] for r in rows})
    for group in [*([h] for h in heads), heads]:
        for m in settings:
            sel = [r for r in rows if r[key] == m and r["head"] in group]
            if not sel:
                continue
            n = summary_rows(sel)

            def spread(key: str) -> str:
                v = [r[key] for r in sel if isinstance(r.get(key), float) and not np.isnan(r[key])]
                return f"{np.median(v):.1f}, {max(v):.1f}" if v else "–"

            shown = ("yes" if m else "no") if isinstance(m, bool) else m if isinstance(m, str) else f"{m:g}"
            lines.append(f"| {shown} | {', '.join(group) if len(group) < len(heads) else 'all'} | "
                         f"{n['pass']} of {n['cases']} | {n['brain_removed_cases']} "
                         f"({sum(r['brain_removed'] for r in sel)}) | {n['ears_short']} | "
                         f"{n['eyes_nose_mouth_short']} | {spread('brain_short_mm')} | {spread('brain_over_mm')} |")
    return "\n".join(lines)


def main() -> None:
    settings_command(TUNING, "mirror", table,
                     lambda args: {m: FaceModel(default_model_dir(), device="cpu", threads=2, mirror=m)
                                   for m in (False, True)})


if __name__ == "__main__":
    main()
