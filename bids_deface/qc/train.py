"""Train the verdict classifier and validate it on heads it never saw.

Usage::

    python -m bids_deface.qc.build --json benchmarks/qc/outcomes.json     # the outcomes (~40 min)
    python -m bids_deface.qc.train --outcomes benchmarks/qc/outcomes.json \\
        --model models/QC/verdict.json --json benchmarks/qc/heldout.json --markdown docs/validation/qc.md

The rules of :func:`bids_deface.qc.verdict.rule_verdict` decide before the forest, as in
the app. Validation is by held-out heads: for each real head, a forest trained on the outcomes of
the other heads judges that head's outcomes, with thresholds chosen by the same procedure
within those other heads only (an inner leave-one-head-out), so no outcome of a head
is judged by a classifier or a threshold that saw it. Each outcome is judged twice: as in
the audit mode (the defaced image alone) and as in the app (with the original).

The thresholds, chosen on the samples the rules leave to the forest: ``pass_threshold`` is
the lowest probability of ``pass`` at which no outcome of the inner validation that
deserved another verdict was passed; ``threshold`` the lowest at which the verdicts not
referred are right in at least ``MIN_ACCURACY`` of the cases. Where no threshold reaches
that accuracy, both are ``REFER_ALL``: the forest refers every image it is left with, and
only the rules give verdicts. A verdict is given only where it can be trusted; referral
is what that costs (reported against ``MAX_REFERRAL``). The shipped forest is trained on
every head, its thresholds chosen the same way over all heads.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from .evidence import FEATURES
from .outcomes import VERDICTS
from .verdict import Forest, rule_verdict

__all__ = ["samples", "fit_forest", "fit_logistic", "out_of_fold", "class_probabilities", "choose_thresholds", "apply_thresholds", "heldout", "MIN_ACCURACY", "MAX_REFERRAL"]

logger = logging.getLogger("bids_deface.qc")

#: The accuracy the verdicts that are not referred must reach in the inner validation.
MIN_ACCURACY = 0.97
#: The share of referrals the acceptance allows (reported against, not enforced).
MAX_REFERRAL = 0.15
#: A threshold above any probability: every verdict the rules do not decide is ``review``.
REFER_ALL = 1.01
_GRID = np.round(np.arange(0.30, 1.001, 0.02), 2)


def samples(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Feature rows (NaN as -1), true verdicts, heads and per-sample info: two samples per
    outcome (``audit``: the defaced image alone; ``paired``: with the original)."""
    xs, ys, hs, info = [], [], [], []
    for r in rows:
        if r["verdict"] not in VERDICTS:
            continue
        for mode in ("audit", "paired"):
            feats = r[mode]
            xs.append([math.nan if feats.get(k) is None else float(feats[k]) for k in FEATURES])
            ys.append(r["verdict"])
            hs.append(r["head"])
            info.append({"head": r["head"], "case": r["case"], "outcome": r["outcome"], "fill": r["fill"],
                         "mode": mode, "verdict": r["verdict"], "measured": r["measured"]})
    x = np.asarray(xs, float)
    return np.where(np.isnan(x), -1.0, x), np.asarray(ys), np.asarray(hs), info


def fit_forest(x: np.ndarray, y: np.ndarray, seed: int = 0):  # type: ignore[no-untyped-def]
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=60, max_leaf_nodes=64, min_samples_leaf=2,
                                    class_weight="balanced", random_state=seed, n_jobs=1)
    return forest.fit(x, y)


def apply_thresholds(p: np.ndarray, classes: list[str], threshold: float, pass_threshold: float) -> np.ndarray:
    best = np.asarray(classes)[p.argmax(1)]
    prob = p.max(1)
    out = best.copy()
    out[(prob < threshold) | ((best == "pass") & (prob < pass_threshold))] = "review"
    return out


def choose_thresholds(p: np.ndarray, y: np.ndarray, classes: list[str]) -> tuple[float, float]:
    """``(threshold, pass_threshold)`` from out-of-fold probabilities ``p`` of samples
    with true verdicts ``y`` (see the module docstring)."""
    ipass = classes.index("pass")
    unsafe = (y != "pass") & (p.argmax(1) == ipass)
    pass_threshold = float(min([t for t in _GRID if not np.any(unsafe & (p[:, ipass] >= t))], default=REFER_ALL))
    for t in _GRID:
        v = apply_thresholds(p, classes, float(t), pass_threshold)
        kept = v != "review"
        if kept.any() and float((v[kept] == y[kept]).mean()) >= MIN_ACCURACY:
            return float(t), max(pass_threshold, float(t))
    return REFER_ALL, REFER_ALL


def ruled_by(x: np.ndarray) -> list[str | None]:
    """The verdict :func:`bids_deface.qc.verdict.rule_verdict` gives each sample (None
    where the forest decides)."""
    return [rule_verdict(dict(zip(FEATURES, (math.nan if v == -1.0 else float(v) for v in row)))) for row in x]


def class_probabilities(forest, x: np.ndarray, classes: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Probabilities of ``forest`` (scikit-learn) for rows ``x``, one column per class of
    ``classes`` (0 for a class the forest never saw)."""
    p = np.zeros((len(x), len(classes)))
    for j, c in enumerate(forest.classes_):
        p[:, classes.index(c)] = forest.predict_proba(x)[:, j]
    return p


def out_of_fold(x: np.ndarray, y: np.ndarray, heads: np.ndarray, fit=fit_forest) -> tuple[np.ndarray, list[str]]:  # type: ignore[no-untyped-def]
    """Out-of-fold probabilities by leaving one head out at a time (``fit(x, y)`` returns
    a fitted scikit-learn classifier; the shipped forest by default)."""
    classes = sorted(set(y))
    p = np.zeros((len(y), len(classes)))
    for h in sorted(set(heads)):
        test = heads == h
        p[test] = class_probabilities(fit(x[~test], y[~test]), x[test], classes)
    return p, classes


def heldout(x: np.ndarray, y: np.ndarray, heads: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Held-out verdicts, their probabilities and the most likely class (no referral) of
    every sample (see the module docstring), and the thresholds used for each head."""
    verdicts = np.empty(len(y), dtype=object)
    likeliest = np.empty(len(y), dtype=object)
    ruled_verdicts = ruled_by(x)
    ruled = np.asarray([v is not None for v in ruled_verdicts])
    probs = np.zeros(len(y))
    used = {}
    for h in sorted(set(heads)):
        test = heads == h
        p_in, classes = out_of_fold(x[~test], y[~test], heads[~test])
        free = ~ruled[~test]
        t, tp = choose_thresholds(p_in[free], y[~test][free], classes)
        ph = class_probabilities(fit_forest(x[~test], y[~test]), x[test], classes)
        verdicts[test] = apply_thresholds(ph, classes, t, tp)
        likeliest[test] = np.asarray(classes)[ph.argmax(1)]
        probs[test] = ph.max(1)
        for k in np.flatnonzero(test):
            if ruled_verdicts[k] is not None:
                verdicts[k] = likeliest[k] = ruled_verdicts[k]
                probs[k] = 1.0
        used[h] = {"threshold": t, "pass_threshold": tp}
        logger.info("held out %s: threshold %.2f, pass threshold %.2f", h, t, tp)
    return verdicts, probs, likeliest, used


def fit_logistic(x: np.ndarray, y: np.ndarray):  # type: ignore[no-untyped-def]
    """A multinomial logistic regression on standardised features (for comparison)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced")).fit(x, y)


def _logistic_heldout(x: np.ndarray, y: np.ndarray, heads: np.ndarray) -> float:
    """Held-out accuracy (no referral) of :func:`fit_logistic`, for comparison."""
    p, classes = out_of_fold(x, y, heads, fit_logistic)
    return float((np.asarray(classes)[p.argmax(1)] == y).mean())


def summary(info: list[dict], verdicts: np.ndarray) -> dict:
    y = np.asarray([i["verdict"] for i in info])
    kept = verdicts != "review"
    out = {"samples": len(y), "outcomes": len(y) // 2, "referred": int((~kept).sum()),
           "referral": float((~kept).mean()), "accuracy_not_referred": float((verdicts[kept] == y[kept]).mean()),
           "unsafe_pass": int(((verdicts == "pass") & (y != "pass")).sum()),
           "true": dict(Counter(y.tolist())), "confusion": {}}
    for t in VERDICTS:
        out["confusion"][t] = dict(Counter(verdicts[y == t].tolist()))
    return out


def _markdown(info: list[dict], verdicts: np.ndarray, likeliest: np.ndarray, used: dict, logistic: float,
              command: str, not_heads: list[dict]) -> str:
    y = np.asarray([i["verdict"] for i in info])
    lines = ["# QC verdicts on heads the classifier never saw", ""]
    total = summary(info, verdicts)
    lines += [
        f"**{total['outcomes']} defacing outcomes** made from {len(used)} real heads, each judged twice (the "
        "defaced image alone, as in `--qc-only`; and with the original, as in a defacing run): "
        f"{total['samples']} verdicts. Every verdict comes from a classifier trained without the head it "
        "judges, with thresholds chosen without it (`bids_deface/qc/train.py`). A verdict is given only where "
        f"it was right in at least {MIN_ACCURACY:.0%} of the inner validation's cases; the rest is referred to `review`.",
        "",
        "| verdicts | accuracy of the verdicts not referred | referred to `review` | `pass` given to an image that should not pass |",
        "|---|---|---|---|",
    ]
    for mode in ("audit", "paired", None):
        sel = np.asarray([mode is None or i["mode"] == mode for i in info])
        s = summary([i for i, k in zip(info, sel) if k], verdicts[sel])
        name = {"audit": "defaced image alone", "paired": "with the original", None: "all"}[mode]
        lines.append(f"| {name} ({s['samples']}) | {s['accuracy_not_referred']:.3f} | {s['referral']:.3f} "
                     f"({s['referred']}) | {s['unsafe_pass']} |")
    lines += ["", "Confusion (rows: the verdict the outcome deserves; columns: the verdict given):", "",
              "| deserved | " + " | ".join([*VERDICTS, "review"]) + " |", "|---|" + "---|" * (len(VERDICTS) + 1)]
    for t in VERDICTS:
        c = total["confusion"][t]
        lines.append(f"| {t} ({int((y == t).sum())}) | " + " | ".join(str(c.get(v, 0)) for v in [*VERDICTS, "review"]) + " |")
    lines += ["", "By outcome kind (verdicts given, both modes):", "", "| outcome | deserved | given |", "|---|---|---|"]
    kinds: dict[str, list[int]] = {}
    for k, i in enumerate(info):
        kinds.setdefault(i["outcome"], []).append(k)
    for name, idx in kinds.items():
        d = Counter(y[idx].tolist())
        g = Counter(verdicts[idx].tolist())
        lines.append(f"| {name} | " + ", ".join(f"{k} {v}" for k, v in d.most_common()) + " | "
                     + ", ".join(f"{k} {v}" for k, v in g.most_common()) + " |")
    own = [k for k, i in enumerate(info) if i["outcome"] == "bids-deface"]
    if own:
        agree = sum((verdicts[k] == "pass") == (y[k] == "pass") for k in own)
        lines += ["", f"**This tool's own masks**: {len(own)} verdicts; `pass` exactly where the mask met every "
                  f"threshold of the real-heads evaluation in {agree} of them.", ""]
        bad = [k for k in own if (verdicts[k] == "pass") != (y[k] == "pass")]
        if bad:
            lines += ["| head | case | mode | deserved | given | brain voxels removed |", "|---|---|---|---|---|---|"]
            for k in bad:
                i = info[k]
                lines.append(f"| {i['head']} | {i['case']} | {i['mode']} | {y[k]} | {verdicts[k]} | "
                             f"{int(i['measured'].get('brain_removed', 0))} |")
    lines += ["", f"Images that are not heads ({len(not_heads)}: " + ", ".join(r["case"] for r in not_heads)
              + "): `review` by rule, with a note, in every case.", "",
              f"A multinomial logistic regression on the same features, same held-out heads, no referral: "
              f"accuracy {logistic:.3f} (the forest without referral: "
              f"{float((likeliest == y).mean()):.3f}).", "",
              "Thresholds per held-out head: " + "; ".join(f"{h} {u['threshold']:.2f} / pass {u['pass_threshold']:.2f}"
                                                         for h, u in used.items()) + ".", "",
              "Reproduce (the outcomes take about 40 minutes on two cores; deepdefacer's need an environment of "
              "their own, see `benchmarks/peers/deepdefacer_run.py`):", "", "```",
              "python -m bids_deface.qc.build --json benchmarks/qc/outcomes.json --deepdefacer /path/to/deepdefacer-env/bin/python",
              command, "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train and validate the QC verdict classifier.")
    parser.add_argument("--outcomes", type=Path, required=True)
    parser.add_argument("--model", type=Path, help="write the shipped forest here")
    parser.add_argument("--json", type=Path, help="write the held-out verdicts here")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    rows = json.loads(args.outcomes.read_text())
    x, y, heads, info = samples(rows)
    verdicts, probs, likeliest, used = heldout(x, y, heads)
    logistic = _logistic_heldout(x, y, heads)
    not_heads = [r for r in rows if r["verdict"] == "review"]
    command = "python -m bids_deface.qc.train " + shlex.join(list(argv if argv is not None else sys.argv[1:]))
    text = _markdown(info, verdicts, likeliest, used, logistic, command, not_heads)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = [{**i, "given": str(v), "probability": round(float(p), 3)} for i, v, p in zip(info, verdicts, probs)]
        args.json.write_text(json.dumps({"summary": summary(info, verdicts), "thresholds": used, "verdicts": out},
                                        indent=0, default=float))
    if args.model:
        p_all, classes = out_of_fold(x, y, heads)
        free = np.asarray([v is None for v in ruled_by(x)])
        t, tp = choose_thresholds(p_all[free], y[free], classes)
        forest = fit_forest(x, y)
        shipped = Forest.from_sklearn(forest, FEATURES, t, tp, {
            "trained_on": sorted(set(heads.tolist())), "outcomes": len(y) // 2, "samples": len(y)})
        args.model.parent.mkdir(parents=True, exist_ok=True)
        args.model.write_text(json.dumps(shipped.to_json(), separators=(",", ":")))
        logger.info("shipped forest: threshold %.2f, pass threshold %.2f, %s", t, tp, args.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
