"""The landmark rule of the evaluation against landmarks placed by eye on a real head."""

from __future__ import annotations

import nibabel as nib
import numpy as np


def test_rule_lands_near_the_landmarks_placed_by_eye(s1_2mm: nib.Nifti1Image) -> None:
    """On pycortex S1 at 2 mm, each landmark the rule places lies on the feature the eye chose:
    within 8 mm for the eyes (the rule takes the globe's front, the eye a point behind it),
    within 11 mm for the nose and the lips (the rule takes their front surface, the eye their
    inside), within 13 mm for the ear (the rule takes the pinna's median, the eye the concha's
    rim, on a pinna 60 mm tall); the pinna pressed against the right side of the head does not
    stand out of it, so no right ear is placed."""
    from bids_deface.brainmask import deepbet_brain_mask
    from bids_deface.evaluation.cases import load_landmarks
    from bids_deface.evaluation.landmark_rule import place_landmarks

    by_eye = load_landmarks("pycortex_s1")
    placed = place_landmarks(s1_2mm, deepbet_brain_mask(s1_2mm))
    far = {k: float(np.linalg.norm(np.subtract(placed[k], by_eye[k]))) for k in placed}
    assert set(placed) == {"eye_right", "eye_left", "nose", "mouth", "ear_left"}, far
    assert far["eye_right"] < 8 and far["eye_left"] < 8, far
    assert far["nose"] < 11 and far["mouth"] < 11 and far["ear_left"] < 13, far
    # the nose and the lips in front of the eyes, the lips below the nose
    assert placed["nose"][1] > placed["eye_right"][1] + 15 and placed["mouth"][2] < placed["nose"][2] - 15
