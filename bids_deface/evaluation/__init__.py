"""Evaluation of defacing on real heads (DESIGN §5): ``python -m bids_deface.evaluation``."""

from .metrics import brain_voxels_removed, dice, feature_coverage, hd95, sphere_mask

__all__ = ["feature_coverage", "brain_voxels_removed", "dice", "hd95", "sphere_mask"]
