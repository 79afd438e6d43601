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


def _labels_ras(lb):  # type: ignore[no-untyped-def]
    import nibabel as nib

    return np.asanyarray(nib.as_closest_canonical(lb).dataobj)


@pytest.fixture(scope="module")
def phantom_source(tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("phantom")
    img, brain = head_phantom()
    save_labels(make_labels(img, brain), out, "phantom")
    return load_source(out, "phantom")


def test_skull_stripped_cases_have_nothing_to_remove(phantom_source) -> None:  # type: ignore[no-untyped-def]
    im, lb, meta = synthesise(phantom_source, np.random.default_rng([7, 0]), kind="skull_stripped")
    assert meta["kind"] == "skull_stripped"
    lab = np.asanyarray(lb.dataobj)
    assert (lab == 2).sum() > 1000 and not (lab == 1).any()
    # the image is dark away from the brain: nothing but noise beyond it
    from scipy import ndimage

    data = np.asanyarray(im.dataobj)
    far = ~ndimage.binary_dilation(lab == 2, iterations=4)
    assert np.percentile(data[far], 99) < 0.6 * np.median(data[lab == 2])


def test_not_head_cases_are_all_keep(phantom_source) -> None:  # type: ignore[no-untyped-def]
    for seed in range(3):
        _, lb, meta = synthesise(phantom_source, np.random.default_rng([7, seed]), kind="not_head")
        assert not np.asanyarray(lb.dataobj).any()


def test_turned_heads_face_the_other_way(phantom_source) -> None:  # type: ignore[no-untyped-def]
    """A head scanned prone or on its side: its face label turns with it about the bore."""
    seen = set()
    for seed in range(12):
        _, lb, meta = synthesise(phantom_source, np.random.default_rng([9, seed]), kind="turned")
        lab = _labels_ras(lb)
        face, brain = np.argwhere(lab == 1).mean(0), np.argwhere(lab == 2).mean(0)
        d = face[:2] - brain[:2]
        seen.add(("x" if abs(d[0]) > abs(d[1]) else "y", bool((d[np.argmax(np.abs(d))]) > 0)))
    assert ("y", False) in seen  # prone: the face points posterior
    assert any(axis == "x" for axis, _ in seen)  # on a side


def test_plane_cut_keeps_the_brain_and_what_face_is_left(phantom_source) -> None:  # type: ignore[no-untyped-def]
    """A quickshear-like cut: much of the face label is dark (zeroed, noise only), the brain
    is whole and bright, and the label keeps the face that the cut left."""
    im, lb, meta = synthesise(phantom_source, np.random.default_rng([7, 1]), kind="plane_cut")
    lab = np.asanyarray(lb.dataobj)
    data = np.asanyarray(im.dataobj)
    brain_level = np.median(data[lab == 2])
    assert (lab == 2).sum() > 1000
    dark = data < 0.25 * brain_level
    # the face label holds air in front of the face in any case; far more is dark here
    # than in the whole head drawn with the same seed
    im_h, lb_h, _ = synthesise(phantom_source, np.random.default_rng([7, 1]), kind="head")
    d_h, lab_h = np.asanyarray(im_h.dataobj), np.asanyarray(lb_h.dataobj)
    dark_head = (d_h < 0.25 * np.median(d_h[lab_h == 2]))[lab_h == 1].mean()
    assert dark[lab == 1].mean() > dark_head + 0.15, (dark[lab == 1].mean(), dark_head)
    assert (~dark[lab == 1]).sum() > 0  # not all of it: what is left stays labelled
    assert dark[lab == 2].mean() < 0.05
