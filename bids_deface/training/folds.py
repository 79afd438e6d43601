"""Folds of real heads: which heads each model is trained on and which it is scored on.

Every real head is scored by a model that never saw it (``docs/validation.md``). A fold's
model may start from the shipped weights only when none of its held-out heads made the
shipped model's training data (fine-tuning from weights trained on a head counts as
having seen it); otherwise it is trained from scratch.

Usage::

    python -m bids_deface.training.folds A --stage synth     # then plan, fit, export

On a fresh clone it fetches the source heads and makes their label maps first. A fold's
training state is kept in ``runs/fold-<NAME>/`` (:func:`bids_deface.training.train.stash`:
every 30 minutes and at the end), a folder that is committed, so that a run longer than one
machine's life goes on from there on the next one: ``synth`` remakes the same cases (seeded),
``plan`` preprocesses them with the stashed plan, and ``fit`` resumes from the stashed epoch.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Fold", "FOLDS", "SHIPPED_TRAINING_HEADS", "main"]

logger = logging.getLogger(__name__)

#: Heads the shipped model (models/Dataset801_FaceEars) was trained on.
SHIPPED_TRAINING_HEADS = ("ds000031", "colin27", "pydeface_template", "volpack")
ALL_HEADS = ("ds000031", "colin27", "pydeface_template", "volpack", "pycortex_s1",
             "sag_child3", "slicer_mrhead", "itk_t1")


@dataclass(frozen=True)
class Fold:
    name: str
    held_out: tuple[str, ...]
    cases: int = 250
    epochs: int = 25
    lr: float = 1e-2
    """Initial learning rate (a fine-tune from the shipped weights starts lower)."""
    own_image_only: tuple[str, ...] = ()
    """Held-out heads scored on their own image alone: clinical images already in thick
    slices, and a second scan of a held-out head."""

    @property
    def train(self) -> tuple[str, ...]:
        return tuple(h for h in ALL_HEADS if h not in self.held_out)

    @property
    def from_shipped(self) -> bool:
        """Whether the fold may start from the shipped weights (no held-out head in them)."""
        return not set(self.held_out) & set(SHIPPED_TRAINING_HEADS)


FOLDS = {
    # fine-tuned from the shipped weights: 100 epochs from 3e-3 (a 25-epoch run from 1e-2 was
    # scored first and lost the shipped model's brain: docs/validation/README.md)
    "A": Fold("A", ("pycortex_s1", "sag_child3", "itk_t1"), epochs=100, lr=3e-3),
    "B": Fold("B", ("ds000031", "colin27", "slicer_mrhead"), epochs=100),
    "C": Fold("C", ("pydeface_template", "volpack"), epochs=100),
    # real heads no model was trained on (found in the registries after folds A-C): scored
    # by the shipped model; a model trained on all eight heads above would be fold N's own
    "N": Fold("N", ("brainbrowser", "robex", "brainbrowser_rescan", "pyradiomics_brain1", "pyradiomics_brain2",
                    "papaya_pd"), epochs=100, lr=3e-3,
              own_image_only=("brainbrowser_rescan", "pyradiomics_brain1", "pyradiomics_brain2", "papaya_pd")),
}
# the candidate to ship after fold A's recipe: the same fine-tune on all eight heads above,
# scored on fold N's images, which it never saw (benchmarks/folds/DECISION.md)
FOLDS["F"] = Fold("F", FOLDS["N"].held_out, epochs=100, lr=3e-3, own_image_only=FOLDS["N"].own_image_only)


def _run(args: list[str]) -> None:
    logger.info("$ %s", " ".join(args))
    subprocess.run([sys.executable, "-m", *args], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train one fold's model (resumable stages).")
    parser.add_argument("fold", choices=sorted(FOLDS))
    parser.add_argument("--stage", choices=["synth", "plan", "fit", "export", "stash", "all"], default="all",
                        help="stash: keep the current training state in --stash now")
    parser.add_argument("--work", type=Path, default=None, help="default: cache/fold<NAME>")
    parser.add_argument("--stash", type=Path, default=None,
                        help="where the training state is kept between machines (default: runs/fold-<NAME>)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    fold = FOLDS[args.fold]
    work = args.work or Path(f"cache/fold{fold.name}")
    kept = args.stash or Path(f"runs/fold-{fold.name}")
    if args.stage == "stash":
        from .train import stash

        return 0 if stash(work, kept) else 1
    raw = work / "nnunet_raw" / "Dataset801_FaceEars"
    if args.stage in ("synth", "all") and not (raw / "dataset.json").is_file():
        # a fresh clone: the source heads and their label maps first (each skipped when there)
        missing = [h for h in fold.train if not Path(f"cache/sources/{h}.nii.gz").is_file()]
        if missing:
            _run(["bids_deface.training.fetch"])
        missing = [h for h in fold.train if not Path(f"cache/labels/{h}_target.nii.gz").is_file()]
        if missing:
            _run(["bids_deface.training.labels", "--heads", *missing])
    stages = ["synth", "plan", "fit", "export"] if args.stage == "all" else [args.stage]
    if "synth" in stages and not (raw / "dataset.json").is_file():
        _run(["bids_deface.training.synth", "--heads", *fold.train, "--cases", str(fold.cases),
              "--out", str(raw)])
    preprocessed = work / "nnunet_preprocessed" / "Dataset801_FaceEars"
    done = (preprocessed / "nnUNetPlans.json").is_file() and any((preprocessed / "nnUNetPlans_3d_fullres").glob("*"))
    if "plan" in stages and (args.stage == "plan" or not done):
        # a rerun of the whole fold keeps the plan and data its checkpoints were trained on
        _run(["bids_deface.training.train", "plan", "--work", str(work), "--spacing", "3", "--stash", str(kept)])
    if "fit" in stages:
        fit = ["bids_deface.training.train", "fit", "--work", str(work), "--epochs",
               str(args.epochs or fold.epochs), "--device", args.device, "--threads", str(args.threads),
               "--stash", str(kept), "--lr", str(fold.lr)]
        if fold.from_shipped:
            from ..data import default_model_dir

            fit += ["--pretrained", str(default_model_dir() / "fold_all" / "checkpoint_final.pth")]
        _run(fit)
    if "export" in stages:
        _run(["bids_deface.training.export", "--work", str(work), "--out", str(work / "model")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
