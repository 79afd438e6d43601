"""The defacing metrics on small arrays whose answers follow from their geometry."""

from __future__ import annotations

import math

import numpy as np

from bids_deface.evaluation.metrics import brain_gap_mm, brain_voxels_removed, feature_coverage


def test_feature_coverage_counts_head_tissue_in_the_sphere() -> None:
    head = np.ones((21, 21, 21), bool)
    face = np.zeros_like(head)
    face[10:] = True  # the half of the sphere at and beyond the centre plane
    cov = feature_coverage(face, head, np.eye(4), (10, 10, 10), 5.0)
    assert 0.5 < cov < 0.6
    assert math.isnan(feature_coverage(face, np.zeros_like(head), np.eye(4), (10, 10, 10), 5.0))


def test_brain_gap_follows_voxel_size() -> None:
    brain = np.zeros((12, 3, 3), bool)
    brain[:4] = True
    face = np.zeros_like(brain)
    face[9:] = True
    affine_zooms = (1.5, 1.0, 1.0)
    assert brain_gap_mm(face, brain, affine_zooms) == 6 * 1.5  # slices 3 and 9 are six voxels apart
    assert brain_voxels_removed(face, brain) == 0
    face[3] = True
    assert brain_gap_mm(face, brain, affine_zooms) == 0.0
    assert brain_voxels_removed(face, brain) == 9
    assert brain_gap_mm(np.zeros_like(face), brain, affine_zooms) == math.inf
