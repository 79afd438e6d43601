"""Inputs with no face to remove: empty, noise, skull-stripped; and whole heads."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_deface.inputs import judge_input, neighbour_correlation

from .phantoms import head_phantom


def _phantom():  # type: ignore[no-untyped-def]
    img, brain = head_phantom()
    return img.get_fdata(dtype=np.float32), brain, np.asarray(img.header.get_zooms()[:3], float)


def test_whole_head_is_a_head() -> None:
    data, brain, zooms = _phantom()
    kind = judge_input(data, zooms, brain)
    assert kind.kind == "head" and kind.removable and kind.flag is None
    assert kind.face_tissue_ml > 100  # face, nose, ears and neck lie far from the brain


def test_skull_stripped_has_no_face() -> None:
    data, brain, zooms = _phantom()
    kind = judge_input(np.where(brain, data, 0), zooms, brain)
    assert kind.kind == "no_face" and not kind.removable and kind.flag == "no_face_in_image"


def test_skull_stripped_with_a_brain_that_falls_short_is_still_no_face() -> None:
    """A predicted brain 4 mm short of the image's brain all round: still nothing far from it."""
    from scipy import ndimage

    data, brain, zooms = _phantom()
    short = ndimage.binary_erosion(brain, iterations=2)
    assert judge_input(np.where(brain, data, 0), zooms, short).kind == "no_face"


def test_empty_and_noise_images() -> None:
    rng = np.random.default_rng(1)
    zooms = np.array([2.0, 2.0, 2.0])
    none = np.zeros((60, 60, 60), bool)
    assert judge_input(np.zeros((60, 60, 60), np.float32), zooms, none).kind == "empty"
    assert judge_input(np.full((60, 60, 60), 7.0, np.float32), zooms, none).kind == "empty"
    noise = rng.uniform(0, 1000, (60, 60, 60)).astype(np.float32)
    kind = judge_input(noise, zooms, none)
    assert kind.kind == "noise" and kind.flag == "noise_image"
    # even where a network would see a brain in it
    blob = np.zeros((60, 60, 60), bool)
    blob[10:50, 10:50, 10:50] = True
    assert judge_input(noise, zooms, blob).kind == "noise"


def test_no_brain_and_no_face_is_not_a_head() -> None:
    data, brain, zooms = _phantom()
    none = np.zeros_like(brain)
    assert judge_input(data, zooms, none, face=none).kind == "not_head"
    # a face without a brain in view is still defaced
    face = np.zeros_like(brain)
    face[30:60, 80:, 10:40] = True
    assert judge_input(data, zooms, none, face=face).kind == "head"


def test_neighbour_correlation_of_a_real_head(s1_2mm: nib.Nifti1Image) -> None:
    zooms = s1_2mm.header.get_zooms()[:3]
    assert neighbour_correlation(s1_2mm.get_fdata(dtype=np.float32), zooms) > 0.8


@pytest.fixture(scope="module")
def shipped_model():  # type: ignore[no-untyped-def]
    from bids_deface.data import default_model_dir
    from bids_deface.masking import FaceModel

    return FaceModel(default_model_dir(), device="cpu", threads=2)


@pytest.mark.slow
def test_model_removes_nothing_from_empty_and_noise_images(shipped_model) -> None:  # type: ignore[no-untyped-def]
    """The shipped model end to end: where the network sees a brain and a face in an
    all-zero image, nothing is removed, and the sidecar's flag says why."""
    rng = np.random.default_rng(0)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    for data, flag in ((np.zeros((96, 110, 96), np.int16), "empty_image"),
                       (rng.integers(0, 1000, (96, 110, 96)).astype(np.int16), "noise_image")):
        pred = shipped_model.predict(nib.Nifti1Image(data, aff))
        assert not pred.face.any()
        assert pred.notes == (flag,)


@pytest.mark.slow
def test_model_removes_no_brain_from_a_skull_stripped_real_head(shipped_model, s1_2mm: nib.Nifti1Image) -> None:  # type: ignore[no-untyped-def]
    """pycortex S1 (held out), skull-stripped with deepbet's mask: nothing may be removed.
    The shipped network's brain falls a fifth short in this stripped head and leaves more
    than ``FACE_TISSUE_ML`` far from it; the image's surface being its brain's tells it."""
    from bids_deface.brainmask import deepbet_brain_mask

    brain = deepbet_brain_mask(s1_2mm)
    raw = np.asanyarray(s1_2mm.dataobj)
    stripped = nib.Nifti1Image(np.where(brain, raw, 0).astype(raw.dtype), s1_2mm.affine, s1_2mm.header)
    pred = shipped_model.predict(stripped)
    assert not (pred.face & brain).any(), f"{int((pred.face & brain).sum())} brain voxels removed"
    assert not pred.face.any() and pred.notes == ("no_face_in_image",)


def test_a_phantom_is_not_a_head_even_where_a_brain_and_a_face_are_seen(s1_2mm: nib.Nifti1Image) -> None:
    """A cylinder of fluid with inserts (the evaluation's phantom) in which a network sees a
    brain and a face: not a head, as the uniformity of its tissue says; a real head with the
    same masks stays a head."""
    from bids_deface.evaluation.cases import not_head_cases
    from bids_deface.inputs import UNIFORM_SHARE
    from bids_deface.masking import to_ras

    (phantom,) = [c for c in not_head_cases() if c.name == "phantom"]
    _, data, zooms = to_ras(phantom.image)
    brain = np.zeros(data.shape, bool)
    brain[40:120, 40:120, 30:90] = True
    face = np.zeros(data.shape, bool)
    face[40:120, 125:140, 30:60] = True
    kind = judge_input(data, zooms, brain, face=face)
    assert kind.kind == "not_head" and kind.flag == "not_a_head" and kind.uniform >= UNIFORM_SHARE
    _, head, hz = to_ras(s1_2mm)
    hb = np.zeros(head.shape, bool)
    hb[25:65, 35:85, 35:75] = True
    real = judge_input(head, hz, hb)
    assert real.kind == "head" and real.uniform < UNIFORM_SHARE - 0.1


def test_a_stripped_brain_whose_predicted_brain_misses_a_part_is_told_by_its_surface(s1_2mm: nib.Nifti1Image) -> None:
    """pycortex S1 skull-stripped with deepbet's mask, judged against a brain that misses
    the lowest 30 mm (the cerebellum and brainstem, as a network's brain may): more than
    ``FACE_TISSUE_ML`` lies far from that brain, yet the image's surface is the brain's, so
    it holds no face. The whole head judged against the same brain stays a head."""
    from bids_deface.brainmask import deepbet_brain_mask
    from bids_deface.inputs import FACE_TISSUE_ML, SURFACE_SHARE
    from bids_deface.masking import to_ras

    brain_img = nib.Nifti1Image(deepbet_brain_mask(s1_2mm).astype(np.uint8), s1_2mm.affine)
    _, data, zooms = to_ras(s1_2mm)
    _, brain, _ = to_ras(brain_img)
    brain = brain > 0
    zs = np.nonzero(brain.any((0, 1)))[0]
    short = brain.copy()
    short[:, :, : zs[0] + int(round(30 / zooms[2]))] = False
    stripped = judge_input(np.where(brain, data, 0), zooms, short)
    assert stripped.face_tissue_ml >= FACE_TISSUE_ML  # the distance rule alone would take it for a head
    assert stripped.surface_share >= SURFACE_SHARE and stripped.kind == "no_face"
    whole = judge_input(data, zooms, short)
    assert whole.kind == "head" and whole.surface_share < SURFACE_SHARE / 3


@pytest.mark.slow
def test_a_head_whose_vertex_was_blanked_is_still_a_head(shipped_model) -> None:  # type: ignore[no-untyped-def]
    """volpack's real 2 mm head has a wedge at its vertex set to zero: a third of its
    outer surface lies on its brain, as a skull-stripped image's does, but its face and
    ears lie far from the brain: a head, masked as one."""
    from bids_deface.inputs import STRIPPED_FAR_TISSUE_ML, SURFACE_SHARE

    from .conftest import _fetch

    img = nib.load(_fetch("volpack", "volpack"))
    pred = shipped_model.predict(img)
    kind = pred.input_kind
    assert kind.surface_share >= SURFACE_SHARE  # the surface rule alone would take it for skull-stripped
    assert kind.face_tissue_ml >= STRIPPED_FAR_TISSUE_ML and kind.kind == "head"
    removed_ml = np.count_nonzero(pred.face) * float(np.prod(img.header.get_zooms()[:3])) / 1000
    assert removed_ml > 300


def test_loud_background_of_a_real_head_in_mp2rage_unit1_noise(s1_2mm) -> None:  # type: ignore[no-untyped-def]
    """pycortex S1 (2 mm) as it is has the dark background of MR images; as an MP2RAGE
    UNIT1 image, its background is found and the head is left out of it."""
    from scipy import ndimage

    from bids_deface.anatomy import head_mask
    from bids_deface.evaluation.cases import mp2rage_unit1
    from bids_deface.inputs import loud_background, quiet_background

    data = s1_2mm.get_fdata(dtype=np.float32)
    zooms = nib.affines.voxel_sizes(s1_2mm.affine)
    assert loud_background(data, zooms) is None and quiet_background(data, zooms) is None
    head = head_mask(data, zooms)
    # CSF bright in the second inversion, as it is (here: everything 20 mm into the head)
    deep = ndimage.binary_erosion(head, iterations=10)
    unit1 = mp2rage_unit1(data, zooms, fluid=deep)
    background = loud_background(unit1, zooms)
    assert background is not None
    assert np.mean(background[~head]) > 0.9 and np.mean(background[head]) < 0.1
    # what it takes of the head is skin and scalp, in blocks (here 4 mm) it shares with the
    # noise, air cavities open to the outside (dark in T1w) and bone (noise in UNIT1 too):
    # little tissue 6 mm in, next to none 20 mm in (single blocks that the simulation's
    # noisy CSF under the skull joins to the noisy bone)
    from bids_deface.anatomy import tissue_level

    tissue = head & (data > tissue_level(data))
    for depth, most in ((3, 0.03), (10, 0.001)):
        inner = ndimage.binary_erosion(head, iterations=depth) & tissue
        assert inner.sum() > 100_000 and np.mean(background[inner]) <= most, depth
    quiet = quiet_background(unit1, zooms)
    assert (quiet[background] == unit1.min()).all() and np.array_equal(quiet[~background], unit1[~background])
    # the quieted head is judged a head (as it is, noise), with its neighbours correlated
    assert neighbour_correlation(unit1, zooms) < 0.3 < neighbour_correlation(quiet, zooms)
