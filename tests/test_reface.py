"""Refacing (``bids_deface.reface``, ``bids_deface.face_template``) on a real head.

The face mask and brain come from the shipped model on pycortex S1 at 2 mm (``slow``);
the face template is the one that ships (``models/FaceTemplate``) or, for the TemplateFlow
path, a TemplateFlow cache laid out here with TemplateFlow's own skeleton and a head file
in place of the MNI152NLin2009cAsym one (which this machine cannot download).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_deface import face_template as ft
from bids_deface.face_template import load_face_template, load_fallback, templateflow_files
from bids_deface.reface import _to_raw, intensity_map, reface_image


def _clear() -> None:
    ft._load.cache_clear()


@pytest.fixture(scope="module")
def fallback() -> ft.FaceTemplate:
    return load_fallback()


def test_fallback_template_is_an_average_head_with_its_licence(fallback: ft.FaceTemplate) -> None:
    from bids_deface.data import face_template_dir

    folder = face_template_dir()
    meta = json.loads((folder / "template.json").read_text())
    assert "MIT" in meta["License"] and "Permission is hereby granted" in (folder / "LICENSE").read_text()
    assert meta["SourceSHA256"] == "fdc13571d66293f9919648cd8de9a7b3491b12175e09336353d2c9ce0466ecb6"
    assert fallback.source == "fallback" and "colin" not in fallback.name.lower()
    # a whole brain (adult size) and two eyeballs' vitreous, about 5-7 mL each
    assert 1200 < fallback.brain_ml < 1700
    eyes_ml = float(fallback.fluid.sum()) * float(np.prod(fallback.zooms)) / 1000.0
    assert 6 < eyes_ml < 16, eyes_ml
    # the face mask that refacing fits to the image's (the eyes lie in it)
    assert fallback.face is not None and (fallback.face & fallback.fluid).sum() > 0.9 * fallback.fluid.sum()
    assert not (fallback.face & fallback.brain).any()
    rec = fallback.record()
    assert rec["TemplateSource"] == "fallback" and rec["TemplateLicense"].startswith("MIT")


def test_no_templateflow_cache_falls_back_and_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _clear()
    empty = tmp_path / "tf-empty"
    assert isinstance(templateflow_files(empty), str) and not empty.exists()  # nothing created
    with caplog.at_level(logging.INFO, logger="bids_deface.face_template"):
        a = load_face_template(empty)
        b = load_face_template(empty)
    assert a is b and a.source == "fallback"
    said = [r for r in caplog.records if "ships with bids-deface" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "no TemplateFlow cache" in said[0].getMessage()
    _clear()


def _skeleton(root: Path) -> None:
    """TemplateFlow's own skeleton of MNI152NLin2009cAsym (empty placeholder files) in
    ``root``, read from the package's data without importing it (an import of templateflow
    sets up its default cache folder)."""
    spec = importlib.util.find_spec("templateflow")
    assert spec is not None and spec.origin
    with zipfile.ZipFile(Path(spec.origin).parent / "conf" / "templateflow-skel.zip") as zf:
        zf.extractall(root, [m for m in zf.namelist() if m.startswith("tpl-MNI152NLin2009cAsym/") or "/" not in m])


def _templateflow_cache(root: Path, head: Path, brain: Path) -> Path:
    """A TemplateFlow cache: the skeleton with the 1 mm head and brain mask of
    MNI152NLin2009cAsym filled in by ``head`` and ``brain``."""
    _skeleton(root)
    folder = root / "tpl-MNI152NLin2009cAsym"
    shutil.copy(head, folder / "tpl-MNI152NLin2009cAsym_res-01_T1w.nii.gz")
    shutil.copy(brain, folder / "tpl-MNI152NLin2009cAsym_res-01_desc-brain_mask.nii.gz")
    return root


def test_templateflow_cache_is_used_when_it_holds_the_head(tmp_path: Path, fallback: ft.FaceTemplate,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    if importlib.util.find_spec("templateflow") is None:
        pytest.skip("templateflow is not installed")
    from bids_deface.data import face_template_dir

    folder = face_template_dir()
    brain = tmp_path / "brain.nii.gz"
    labels = nib.load(folder / "labels.nii.gz")
    nib.save(nib.Nifti1Image((np.asanyarray(labels.dataobj) & 1).astype(np.uint8), labels.affine), brain)
    root = tmp_path / "templateflow"
    root.mkdir()
    # the skeleton alone holds empty placeholders: not a cached template
    _skeleton(root)
    reason = templateflow_files(root)
    assert isinstance(reason, str) and "has no MNI152NLin2009cAsym" in reason
    shutil.rmtree(root)
    _templateflow_cache(root, folder / "head.nii.gz", brain)
    found = templateflow_files(root)
    assert isinstance(found, tuple), found
    _clear()
    with caplog.at_level(logging.INFO, logger="bids_deface.face_template"):
        tpl = load_face_template(root)
    _clear()
    assert tpl.source == "templateflow" and tpl.name == "MNI152NLin2009cAsym"
    assert tpl.record()["TemplateSource"] == "templateflow" and "McGill" in tpl.licence
    assert any("TemplateFlow" in r.getMessage() for r in caplog.records)
    assert abs(tpl.brain_ml - fallback.brain_ml) < 1.0
    assert tpl.face is not None and tpl.face.any()  # the shipped model's face mask of the template
    # looking in a cache wrote nothing into TemplateFlow's default folder
    default = ft.templateflow_home()
    assert default is not None and (not default.exists() or default == root), default


def test_intensity_map_learns_any_contrast() -> None:
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 100, 50_000)
    # a non-monotone contrast (dark, bright, dark again) with noise
    s = np.where(t < 30, 10.0, np.where(t < 70, 200.0, 60.0)) + rng.normal(0, 5, t.size)
    x, y = intensity_map(t, s)
    assert abs(np.interp(10, x, y) - 10) < 5 and abs(np.interp(50, x, y) - 200) < 5
    assert abs(np.interp(90, x, y) - 60) < 5


def test_raw_values_keep_dtype_and_scaling() -> None:
    raw = _to_raw(np.array([0.0, 10.0, 1e9]), np.dtype(np.int16), slope=2.0, inter=-4.0)
    assert raw.dtype == np.int16 and raw.tolist() == [2, 7, 32767]


# -------------------------------------------------------------- on the real head (slow) --


@pytest.fixture(scope="module")
def prediction(s1_2mm: nib.Nifti1Image):  # type: ignore[no-untyped-def]
    from bids_deface.pipeline import load_face_model

    return load_face_model(None, device="cpu", threads=2).predict(s1_2mm)


@pytest.fixture(scope="module")
def refaced(s1_2mm: nib.Nifti1Image, prediction, fallback: ft.FaceTemplate):  # type: ignore[no-untyped-def]
    return reface_image(s1_2mm, prediction.face, prediction.brain, fallback)


@pytest.mark.slow
def test_outside_the_mask_is_the_input_bit_for_bit(s1_2mm: nib.Nifti1Image, prediction, refaced) -> None:  # type: ignore[no-untyped-def]
    raw = np.asanyarray(s1_2mm.dataobj)
    face = prediction.face
    assert refaced.raw.dtype == raw.dtype and refaced.raw.shape == raw.shape
    assert np.array_equal(refaced.raw[~face], raw[~face])
    assert refaced.record["VoxelsRefaced"] == int(face.sum()) > 0


@pytest.mark.slow
def test_inside_the_mask_a_face_that_is_not_the_subjects(s1_2mm: nib.Nifti1Image, prediction, refaced) -> None:  # type: ignore[no-untyped-def]
    from bids_deface.anatomy import head_mask

    raw = np.asanyarray(s1_2mm.dataobj).astype(np.float32)
    new = refaced.raw.astype(np.float32)
    face = prediction.face
    zooms = np.asarray(s1_2mm.header.get_zooms()[:3])
    # not the subject's voxels ...
    assert np.corrcoef(raw[face], new[face])[0, 1] < 0.9
    assert np.mean(raw[face] != new[face]) > 0.5
    # ... but a head: tissue where defacing left air, about as much of it as the subject had
    tissue_before = (head_mask(raw, zooms) & face).sum()
    tissue_after = (head_mask(new, zooms) & face).sum()
    assert 0.6 < tissue_after / tissue_before < 1.5
    # intensities of the image's own range and noise (no seam: the step across the edge is
    # within the image's own local variation)
    from bids_deface.evaluation.reface_metrics import seam_steps

    seam = seam_steps(new, face, zooms, raw)
    assert seam["patches"] > 50 and seam["ratio"] < 0.5, seam
    assert new[face].max() <= raw.max() and new[face].min() >= raw.min()


@pytest.mark.slow
def test_inverted_contrast_gets_an_inverted_face(s1_2mm: nib.Nifti1Image, prediction,  # type: ignore[no-untyped-def]
                                                 fallback: ft.FaceTemplate) -> None:
    data = s1_2mm.get_fdata(dtype=np.float32)
    inverted = np.where(data > 5, data.max() - data, 0).astype(np.float32)  # tissue inverted, air stays dark
    img = nib.Nifti1Image(inverted, s1_2mm.affine)
    out = reface_image(img, prediction.face, prediction.brain, fallback).raw
    face = prediction.face
    from bids_deface.anatomy import head_mask

    zooms = np.asarray(s1_2mm.header.get_zooms()[:3])
    head = head_mask(data, zooms)
    # the refaced voxels follow the image's contrast: where the T1w face is bright the
    # inverted one is darker, and the air stays dark
    t1 = reface_image(s1_2mm, face, prediction.brain, fallback).raw.astype(np.float32)
    tissue = face & head & (t1 > np.percentile(t1[face & head], 50))
    assert np.corrcoef(t1[tissue], out[tissue])[0, 1] < 0
    assert np.median(out[face & ~head]) < 0.1 * inverted.max()


@pytest.mark.slow
def test_head_in_loud_noise_gets_a_face_in_quiet_air(s1_2mm: nib.Nifti1Image, prediction,  # type: ignore[no-untyped-def]
                                                     fallback: ft.FaceTemplate) -> None:
    """An MP2RAGE UNIT1 image: the template's air in front of its face takes the image's
    lowest value (with the matched noise), not the salt-and-pepper noise's middle."""
    from bids_deface.anatomy import head_mask
    from bids_deface.evaluation.cases import mp2rage_unit1

    data = s1_2mm.get_fdata(dtype=np.float32)
    zooms = nib.affines.voxel_sizes(s1_2mm.affine)
    unit1 = mp2rage_unit1(data, zooms).astype(np.int16)
    img = nib.Nifti1Image(unit1, s1_2mm.affine)
    face = prediction.face
    out = reface_image(img, face, prediction.brain, fallback)
    assert out.record.get("BackgroundQuieted") is True and np.array_equal(out.raw[~face], unit1[~face])
    air = face & ~head_mask(data, zooms)
    assert np.median(out.raw[air]) < 0.1 * 4095 < np.median(unit1[air])


@pytest.mark.slow
def test_per_file_command_refaces(tmp_path: Path, s1_2mm: nib.Nifti1Image,
                                  caplog: pytest.LogCaptureFixture) -> None:
    from bids_deface.cli.file import main

    _clear()
    src = tmp_path / "head.nii.gz"
    nib.save(s1_2mm, src)
    out, mask, ref = tmp_path / "defaced.nii.gz", tmp_path / "face.nii.gz", tmp_path / "refaced.nii.gz"
    with caplog.at_level(logging.INFO):
        assert main([str(src), str(out), "--mask", str(mask), "--reface", str(ref), "--device", "cpu"]) == 0
    m = np.asanyarray(nib.load(mask).dataobj).astype(bool)
    a = np.asanyarray(nib.load(src).dataobj)
    r = nib.load(ref)
    b = np.asanyarray(r.dataobj)
    assert r.header.get_data_dtype() == nib.load(src).header.get_data_dtype()
    assert np.array_equal(a[~m], b[~m]) and not np.array_equal(a[m], b[m])
    sidecar = json.loads((tmp_path / "refaced.json").read_text())
    assert sidecar["Refacing"]["TemplateSource"] in ("templateflow", "fallback")
    assert sidecar["Refacing"]["TemplateLicense"]
    assert sum("refacing with" in rec.getMessage() for rec in caplog.records) == 1
    assert main([str(src), str(out), "--reface", str(out), "--force"]) == 2  # refaced over the defaced
    _clear()
