"""Other learners on the QC's evidence: does the classifier or the evidence limit the verdicts?

On the held-out outcomes (``benchmarks/qc/outcomes.json``, no new outcome made), each
learner is trained on the outcomes of all heads but one and judges that head's outcomes,
both modes, as :func:`bids_deface.qc.train.heldout` does. Reported for the samples the
rules leave to the classifier: the accuracy of its most likely verdict (no referral), per
mode, and the share it could decide at 97 % accuracy if the threshold were chosen on these
held-out probabilities themselves (an upper bound: the app's threshold comes from an
inner validation without the head).

    python docs/experiments/scripts/qc_learners.py
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from bids_deface.qc.train import MIN_ACCURACY, fit_forest, fit_logistic, out_of_fold, ruled_by, samples

OUTCOMES = Path(__file__).resolve().parents[3] / "benchmarks" / "qc" / "outcomes.json"


def learners() -> dict:
    from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier

    return {
        "forest as shipped (60 trees, 64 leaves)": fit_forest,
        "forest, 200 full-depth trees": lambda x, y: RandomForestClassifier(
            n_estimators=200, min_samples_leaf=3, class_weight="balanced", random_state=0, n_jobs=1).fit(x, y),
        "extra trees, 200": lambda x, y: ExtraTreesClassifier(
            n_estimators=200, min_samples_leaf=3, class_weight="balanced", random_state=0, n_jobs=1).fit(x, y),
        "gradient boosting (histogram, 200 rounds)": lambda x, y: HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, max_leaf_nodes=15, class_weight="balanced", random_state=0).fit(x, y),
        "logistic regression": fit_logistic,
    }


def decided_at(p: np.ndarray, y: np.ndarray, classes: list[str]) -> float:
    """The largest share of samples whose verdicts, taken from the most probable down,
    stay right in ``MIN_ACCURACY`` of the cases (0 when none does)."""
    best = np.asarray(classes)[p.argmax(1)]
    order = np.argsort(-p.max(1), kind="stable")
    right = np.cumsum(best[order] == y[order]) / np.arange(1, len(y) + 1)
    ok = np.flatnonzero(right >= MIN_ACCURACY)
    return float((ok.max() + 1) / len(y)) if ok.size else 0.0


def main() -> int:
    warnings.filterwarnings("ignore")
    x, y, heads, info = samples(json.loads(OUTCOMES.read_text()))
    free = np.asarray([v is None for v in ruled_by(x)])
    mode = np.asarray([i["mode"] for i in info])
    x, y, heads, mode = x[free], y[free], heads[free], mode[free]
    print(f"{len(y)} samples left to the classifier by the rules, {len(set(heads))} heads\n")
    print("| learner | accuracy, no referral | defaced image alone | with the original "
          f"| decided at {MIN_ACCURACY:.0%} accuracy (upper bound) |")
    print("|---|---|---|---|---|")
    for name, fit in learners().items():
        p, classes = out_of_fold(x, y, heads, fit)
        best = np.asarray(classes)[p.argmax(1)]
        acc = {m: float((best[mode == m] == y[mode == m]).mean()) for m in ("audit", "paired")}
        print(f"| {name} | {float((best == y).mean()):.3f} | {acc['audit']:.3f} | {acc['paired']:.3f} "
              f"| {decided_at(p, y, classes):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
