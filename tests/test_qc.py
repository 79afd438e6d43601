"""QC verdicts: the shipped forest, the evidence and the verdicts on a real head."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest

from bids_deface.qc.evidence import FEATURES
from bids_deface.qc.verdict import Forest, default_qc_model, judge_image, load_forest


def test_forest_json_gives_the_probabilities_of_the_sklearn_forest() -> None:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = np.where(x[:, 0] + x[:, 1] ** 2 > 1, "a", np.where(x[:, 2] > 0, "b", "c"))
    sk = RandomForestClassifier(n_estimators=12, max_leaf_nodes=16, random_state=0).fit(x, y)
    forest = Forest.from_sklearn(sk, [f"f{i}" for i in range(5)], 0.5, 0.8)
    again = Forest(**{**forest.__dict__, "trees": [
        {k: np.asarray(v) for k, v in t.items()} for t in json.loads(json.dumps(forest.to_json()))["trees"]]})
    test = rng.normal(size=(50, 5))
    assert np.allclose(again.probabilities(test), sk.predict_proba(test), atol=1e-5)
    assert again.classes == ("a", "b", "c")


def test_shipped_forest_reads_the_evidence_it_was_trained_on() -> None:
    forest = load_forest()
    assert default_qc_model().is_file()
    assert forest.features == FEATURES
    assert set(forest.classes) == {"pass", "face-remaining", "brain-removed", "not-defaced"}
    assert 0.0 < forest.threshold <= forest.pass_threshold <= 1.0
    assert len(forest.trees) >= 10


#: Why the verdicts of the acceptance are not reached yet (docs/validation/qc.md).
NOT_MET = ("the verdict classifier refers most images to review: on held-out heads 95 % of the "
           "outcomes are referred (docs/validation/qc.md)")


@pytest.fixture(scope="module")
def judged(s1_2mm: nib.Nifti1Image) -> dict:
    """The 2 mm copy of a real head judged untouched, defaced by this tool (alone and with
    the original), with both eyeballs left, unchanged beside its original, and two images
    that are not heads."""
    from bids_deface.data import default_model_dir
    from bids_deface.deface import deface_image
    from bids_deface.eyes import find_globes, globe_masks
    from bids_deface.masking import FaceModel, to_ras

    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    out: dict = {"untouched": judge_image(model, s1_2mm)}
    pred = model.predict(s1_2mm)
    raw = deface_image(s1_2mm, pred.face)
    out["own"] = judge_image(model, s1_2mm, raw, pred.label_map())
    out["own_alone"] = judge_image(model, nib.Nifti1Image(raw, s1_2mm.affine, s1_2mm.header))
    out["unchanged"] = judge_image(model, s1_2mm, np.asanyarray(s1_2mm.dataobj), pred.label_map())
    # the same mask with both eyeballs left in place
    ornt, ras, zooms = to_ras(s1_2mm)
    globes = find_globes(ras, nib.orientations.apply_orientation(pred.brain, ornt), zooms)
    assert len(globes) == 2
    eyes_ras = np.zeros(ras.shape, bool)
    for ball in globe_masks(ras.shape, zooms, globes, wall_mm=3.0).values():
        eyes_ras |= ball
    back = nib.orientations.ornt_transform(np.c_[np.arange(3), np.ones(3)], ornt)
    eyes = nib.orientations.apply_orientation(eyes_ras, back)
    out["eyes_left"] = judge_image(model, s1_2mm, deface_image(s1_2mm, pred.face & ~eyes), pred.label_map())
    out["zero"] = judge_image(model, nib.Nifti1Image(np.zeros(s1_2mm.shape, np.float32), s1_2mm.affine))
    noise = np.random.default_rng(0).uniform(0, 100, s1_2mm.shape).astype(np.float32)
    out["noise"] = judge_image(model, nib.Nifti1Image(noise, s1_2mm.affine))
    return out


@pytest.mark.slow
def test_verdicts_on_a_real_head_never_pass_what_should_not(judged: dict) -> None:
    assert judged["untouched"].evidence.features["face_front_ml"] > 100
    assert judged["untouched"].verdict in ("not-defaced", "review"), judged["untouched"].record()
    own = judged["own"]
    assert own.evidence.with_original and own.evidence.features["orig_removed_ml"] > 50
    assert own.verdict in ("pass", "review"), own.record()
    alone = judged["own_alone"]
    assert not alone.evidence.with_original and math.isnan(alone.evidence.features["orig_removed_ml"])
    assert alone.evidence.features["face_front_ml"] < judged["untouched"].evidence.features["face_front_ml"] / 2
    # facts decide: nothing removed beside the original is not-defaced, with certainty
    assert judged["unchanged"].verdict == "not-defaced" and judged["unchanged"].probability == 1.0
    # both eyeballs left: never pass
    assert judged["eyes_left"].verdict != "pass", judged["eyes_left"].record()
    # not heads: review, with the note that says why
    assert judged["zero"].verdict == "review" and judged["zero"].notes == ("empty_image",)
    assert judged["noise"].verdict == "review" and judged["noise"].notes == ("noise_image",)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=NOT_MET)
def test_verdicts_on_a_real_head_as_the_acceptance_asks(judged: dict) -> None:
    assert judged["untouched"].verdict == "not-defaced"
    assert judged["own"].verdict == "pass" and judged["own_alone"].verdict == "pass"
    assert judged["eyes_left"].verdict == "face-remaining"


@pytest.mark.slow
def test_a_defaced_clinical_head_is_judged_as_the_head_it_was(clinical_ce_t1: nib.Nifti1Image) -> None:
    # Removing the face leaves this real contrast-enhanced T1's tissue more uniform, near
    # the share at which a phantom is told; judged with its original it stays a head,
    # and the verdict comes from the evidence, not from a "not a head" note.
    from bids_deface.data import default_model_dir
    from bids_deface.deface import deface_image
    from bids_deface.masking import FaceModel

    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    pred = model.predict(clinical_ce_t1)
    assert pred.input_kind is not None and pred.input_kind.kind == "head"
    raw = deface_image(clinical_ce_t1, pred.face)
    paired = judge_image(model, clinical_ce_t1, raw, pred.label_map())
    assert paired.evidence.kind == "head" and "not_a_head" not in paired.notes
    assert paired.evidence.features["orig_removed_ml"] > 300
