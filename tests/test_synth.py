"""Synthesis of training cases: the brain label of thick-slice cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from bids_deface.training.labels import make_labels, save_labels
from bids_deface.training.synth import load_source, synthesise

from .phantoms import head_phantom


def _thick_seed(src, step: int, limit: int = 60) -> int:  # type: ignore[no-untyped-def]
    """A seed whose case keeps every ``step``-th slice of the 2 mm working grid."""
    for seed in range(limit):
        _, _, meta = synthesise(src, np.random.default_rng([5, seed]))
        if max(np.round(np.array(meta["acquired_mm"]) / 2.0)) == step:
            return seed
    raise AssertionError(f"no case with {step * 2} mm slices drawn")


@pytest.mark.parametrize("step", [2, 3])  # 4 mm slices (from 3-5 mm), 6 mm (from 5-6.5 mm)
def test_slab_brain_any_marks_every_slab_that_holds_brain(tmp_path: Path, step: int) -> None:
    img, brain = head_phantom()
    save_labels(make_labels(img, brain), tmp_path, "phantom")
    src = load_source(tmp_path, "phantom")
    seed = _thick_seed(src, step)
    im_c, lb_c, meta = synthesise(src, np.random.default_rng([5, seed]), "centre")
    im_a, lb_a, meta_a = synthesise(src, np.random.default_rng([5, seed]), "any")
    # the same draw: only the label differs
    assert meta == meta_a
    np.testing.assert_array_equal(np.asanyarray(im_c.dataobj), np.asanyarray(im_a.dataobj))
    centre = np.asanyarray(lb_c.dataobj)
    anyb = np.asanyarray(lb_a.dataobj)
    assert ((centre == 2) <= (anyb == 2)).all()
    extra = (anyb == 2) & (centre != 2)
    assert extra.any()  # slabs at the brain's edge along the slices' axis
    # ... and only there: at the edge of the centre brain (a neighbour of it), mostly
    # along the thick axis (a brain tip between two slices may add a slab of its own)
    zooms = np.sqrt((lb_a.affine[:3, :3] ** 2).sum(0))
    axis = int(np.argmax(zooms))
    size = [1, 1, 1]
    size[axis] = 3
    assert (ndimage.binary_dilation(centre == 2, np.ones((3, 3, 3), bool)) >= extra).all()
    along = ndimage.maximum_filter(centre == 2, size=size)
    assert (extra & along).sum() > 0.9 * extra.sum()
    # on both sides of the brain along that axis: above it and below it
    below = np.roll(centre == 2, -1, axis)  # brain in the next slab
    above = np.roll(centre == 2, 1, axis)  # brain in the previous slab
    assert (extra & below & ~above).sum() > 0.2 * extra.sum()
    assert (extra & above & ~below).sum() > 0.2 * extra.sum()
    # everything that is not brain keeps its label
    np.testing.assert_array_equal(centre[anyb != 2], anyb[anyb != 2])


def test_slab_brain_leaves_thin_cases_alone(tmp_path: Path) -> None:
    img, brain = head_phantom()
    save_labels(make_labels(img, brain), tmp_path, "phantom")
    src = load_source(tmp_path, "phantom")
    for seed in range(40):
        _, lb_c, meta = synthesise(src, np.random.default_rng([5, seed]), "centre")
        if max(meta["acquired_mm"]) < 3.0:
            _, lb_a, _ = synthesise(src, np.random.default_rng([5, seed]), "any")
            np.testing.assert_array_equal(np.asanyarray(lb_c.dataobj), np.asanyarray(lb_a.dataobj))
            return
    raise AssertionError("no thin case drawn")
