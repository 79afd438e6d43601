"""Evaluation of defacing on real heads (metrics of ``bids_deface.evaluation.metrics``): ``python -m bids_deface.evaluation``."""

from .metrics import brain_voxels_removed, dice, feature_coverage, hd95, sphere_mask

__all__ = ["feature_coverage", "brain_voxels_removed", "dice", "hd95", "sphere_mask"]
