"""Two measurements on the QC's held-out outcomes (``benchmarks/qc/outcomes.json``), no new outcome made.

1. **Thresholds per verdict** instead of one for all: each verdict the forest gives stands
   where its own share of right answers reached ``MIN_ACCURACY`` in the inner validation
   (at that probability and every higher one); ``pass`` as shipped (none wrongly passed).
   Held-out heads and inner validation as in :func:`bids_deface.qc.train.heldout`.
2. **How far what was removed lies from the face model's brain** on the original
   (``orig_removed_min_brain_mm``), for outcomes that deserve ``pass`` and for each kind
   that removed brain: the evidence a verdict on brain removal rests on.

    python docs/experiments/scripts/qc_limits.py
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from bids_deface.qc.train import (_GRID, MIN_ACCURACY, REFER_ALL, class_probabilities, fit_forest, out_of_fold,
                                  ruled_by, samples)


def per_verdict_thresholds(p: np.ndarray, y: np.ndarray, classes: list[str]) -> dict[str, float]:
    best, prob = np.asarray(classes)[p.argmax(1)], p.max(1)
    out = {}
    for c in classes:
        ok = []
        for t in _GRID:
            kept = (best == c) & (prob >= t)
            ok.append(not np.any(kept & (y != "pass")) if c == "pass"
                      else (not kept.any()) or float((y[kept] == c).mean()) >= MIN_ACCURACY)
        t_c = REFER_ALL
        for i in range(len(_GRID) - 1, -1, -1):
            if not ok[i]:
                break
            t_c = float(_GRID[i])
        out[c] = t_c
    return out


def main() -> None:
    rows = json.loads(Path("benchmarks/qc/outcomes.json").read_text())
    x, y, heads, info = samples(rows)
    ruled_v = ruled_by(x)
    ruled = np.asarray([v is not None for v in ruled_v])
    given = np.empty(len(y), dtype=object)
    for h in sorted(set(heads)):
        test = heads == h
        p_in, classes = out_of_fold(x[~test], y[~test], heads[~test])
        th = per_verdict_thresholds(p_in[~ruled[~test]], y[~test][~ruled[~test]], classes)
        ph = class_probabilities(fit_forest(x[~test], y[~test]), x[test], classes)
        best, prob = np.asarray(classes)[ph.argmax(1)], ph.max(1)
        given[test] = [b if pr >= th[b] else "review" for b, pr in zip(best, prob)]
        print(f"held out {h}: thresholds " + ", ".join(f"{c} {t:.2f}" for c, t in th.items()))
    for k, v in enumerate(ruled_v):
        if v is not None:
            given[k] = v
    mode = np.asarray([i["mode"] for i in info])
    print("\n| verdicts | accuracy of the verdicts not referred | referred | `pass` that should not pass |\n|---|---|---|---|")
    for m in ("audit", "paired", None):
        s = (mode == m) if m else np.ones(len(y), bool)
        kept = s & (given != "review")
        print(f"| {m or 'all'} ({int(s.sum())}) | {float((given[kept] == y[kept]).mean()):.3f} | "
              f"{float((given[s] == 'review').mean()):.3f} | {int(((given == 'pass') & (y != 'pass') & s).sum())} |")
    dist = defaultdict(list)
    for r in rows:
        d = r["paired"].get("orig_removed_min_brain_mm")
        if d is not None and r["verdict"] in ("pass", "brain-removed"):
            dist["pass (all kinds)" if r["verdict"] == "pass" else f"brain-removed: {r['outcome']}"].append(d)
    print("\n| outcomes | n | removed to the model's brain, mm (10th percentile, median, 90th) |\n|---|---|---|")
    for k in sorted(dist):
        v = np.asarray(dist[k], float)
        print(f"| {k} | {len(v)} | {np.percentile(v, 10):.1f}, {np.median(v):.1f}, {np.percentile(v, 90):.1f} |")


if __name__ == "__main__":
    main()
