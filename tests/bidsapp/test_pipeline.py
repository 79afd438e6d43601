"""Per-run writing: header and voxels preserved, resume, failure isolation.

Masks come from a geometric box (:class:`BoxMasker`), not from the model.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_deface.bids.discover import discover_runs
from bids_deface.bids.outputs import output_paths
from bids_deface.errors import ModelError
from bids_deface.pipeline import process_runs
from bids_deface.settings import Settings
from bids_deface.workflow import participant_level

from .layouts import STANDARD_SELECTED, BoxMasker, make_dataset


def _header_bytes(path: Path, offset: int) -> bytes:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fobj:
        return fobj.read(offset)


def _settings(bids: Path, out: Path, **kw) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(bids_dir=bids, output_dir=out, skip_bids_validation=True, **kw)


def test_header_and_voxels_outside_the_mask_are_bit_exact(bids_dataset: Path, tmp_path: Path,
                                                          box_masker: BoxMasker) -> None:
    out = tmp_path / "out"
    runs = discover_runs(bids_dataset)
    results = process_runs(runs, out, lambda: box_masker)
    assert [r.status for r in results] == ["ok"] * STANDARD_SELECTED
    for run, result in zip(runs, results, strict=True):
        src = nib.load(str(run.path))
        dst = nib.load(str(result.paths.defaced))
        mask_img = nib.load(str(result.paths.mask))
        offset = int(src.dataobj.offset)
        # header block and extensions identical, byte for byte
        assert _header_bytes(result.paths.defaced, offset) == _header_bytes(run.path, offset)
        assert dst.get_data_dtype() == src.get_data_dtype()
        assert dst.dataobj.slope == src.dataobj.slope and dst.dataobj.inter == src.dataobj.inter
        for code in ("qform_code", "sform_code"):
            assert dst.header[code] == src.header[code]
        np.testing.assert_array_equal(dst.get_qform(), src.get_qform())
        np.testing.assert_array_equal(dst.get_sform(), src.get_sform())
        assert dst.header.get_xyzt_units() == src.header.get_xyzt_units()
        # voxels: identical outside the mask, background inside
        face = np.asanyarray(mask_img.dataobj).astype(bool)
        raw_src = np.asanyarray(src.dataobj.get_unscaled())
        raw_dst = np.asanyarray(dst.dataobj.get_unscaled())
        assert raw_dst.dtype == raw_src.dtype
        assert raw_dst[~face].tobytes() == raw_src[~face].tobytes()
        assert face.any()
        np.testing.assert_allclose(np.asanyarray(dst.dataobj)[face], 0.0)
        # the mask: binary uint8 on the same grid
        assert mask_img.get_data_dtype() == np.uint8
        assert set(np.unique(np.asanyarray(mask_img.dataobj))) <= {0, 1}
        assert mask_img.shape == src.shape[:3]
        np.testing.assert_array_equal(mask_img.get_sform(), src.get_sform())
        np.testing.assert_array_equal(mask_img.get_qform(), src.get_qform())
        assert mask_img.header["sform_code"] == src.header["sform_code"]
    scaled = next(r for r in results if "run-2" in r.run.name)
    assert nib.load(str(scaled.paths.defaced)).header.extensions[0].get_content() == b"keep me"


def test_figures_drawn_by_the_run_are_those_of_its_files(bids_dataset: Path, tmp_path: Path,
                                                         box_masker: BoxMasker) -> None:
    # the run draws the report's figures from the images it has just written, in memory
    # (beside its QC verdict); they must be what the files give: scaled stored values
    # (run-2), float voxels and distinct qform/sform (ce-gad), uint8 (T2w)
    from bids_deface.reports.figures import make_run_figures

    results = process_runs(discover_runs(bids_dataset), tmp_path / "out", lambda: box_masker)
    assert [r.status for r in results] == ["ok"] * STANDARD_SELECTED
    for r in results:
        assert r.figures is not None and not r.figures.notes
        assert r.figures == make_run_figures(r.run.path, r.paths.defaced, r.paths.mask), r.run.name
        assert set(r.figures.renders) == {"before", "after"} and r.figures.labels == (1,)


def test_sidecars_written(bids_dataset: Path, tmp_path: Path, box_masker: BoxMasker) -> None:
    out = tmp_path / "out"
    runs = discover_runs(bids_dataset, suffixes=["T1w"], session_label=["pre"], participant_label=["01"])
    results = process_runs(runs, out, lambda: box_masker)
    r = next(r for r in results if "run-1" in r.run.name)
    side = json.loads(r.paths.defaced_json.read_text())
    assert side == r.sidecar
    assert side["FlipAngle"] == 9 and side["RepetitionTime"] == 2.3  # inherited metadata
    assert side["SkullStripped"] is False
    assert side["Sources"] == [f"bids:raw:{r.run.relpath}"]
    d = side["Defacing"]
    assert d["Model"] == "BoxMasker" and d["ModelSHA256"] == "0" * 64 and d["Device"] == "cpu"
    assert d["Runtime"] == "none (boxes)"
    assert d["VoxelsRemoved"] == int(np.asanyarray(nib.load(str(r.paths.mask)).dataobj).sum())
    assert d["VolumeRemovedML"] == pytest.approx(d["VoxelsRemoved"] * 1.1 * 0.9 * 1.2 / 1000, abs=1e-3)
    for key in ("Version", "Seconds", "GuardVoxels", "QCFlags", "InputSHA256"):
        assert key in d
    mask_side = json.loads(r.paths.mask_json.read_text())
    assert mask_side["Type"] == "Face"


def test_rerun_skips_complete_runs_and_never_loads_the_masker(bids_dataset: Path, tmp_path: Path,
                                                             box_masker: BoxMasker) -> None:
    out = tmp_path / "out"
    runs = discover_runs(bids_dataset)
    process_runs(runs, out, lambda: box_masker)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}

    def no_model() -> BoxMasker:
        raise AssertionError("the masker must not be loaded when everything is complete")

    again = process_runs(runs, out, no_model)
    assert {r.status for r in again} == {"skipped"}
    assert all(r.sidecar["Defacing"]["InputSHA256"] for r in again)
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}


def test_overwrite_changed_input_and_incomplete_outputs_are_redone(
        bids_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    runs = discover_runs(bids_dataset, participant_label=["02"])
    t1, t2 = sorted(runs, key=lambda r: r.suffix)
    masker = BoxMasker()
    process_runs(runs, out, lambda: masker)
    assert masker.calls == 2
    # --overwrite redoes both
    assert {r.status for r in process_runs(runs, out, lambda: masker, overwrite=True)} == {"ok"}
    assert masker.calls == 4
    # a changed input (new checksum) is redone, the other skipped
    img = nib.load(str(t1.path))
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj) + 1, img.affine, img.header), str(t1.path))
    # a run with a missing output is redone
    output_paths(t2, out).mask.unlink()
    statuses = {r.run.suffix: r.status for r in process_runs(runs, out, lambda: masker)}
    assert statuses == {"T1w": "ok", "T2w": "ok"}
    assert {r.status for r in process_runs(runs, out, lambda: masker)} == {"skipped"}


def test_one_bad_run_does_not_stop_the_others(bids_dataset: Path, tmp_path: Path) -> None:
    bad = bids_dataset / "sub-01/ses-pre/anat/sub-01_ses-pre_T2w.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file")
    out = tmp_path / "out"
    masker = BoxMasker(fail_on="sub-02_ses-pre_T1w")
    result = participant_level(_settings(bids_dataset, out), get_masker=lambda: masker)
    by_name = {r.run.name: r for r in result.results}
    assert result.failed and result.counts == {"ok": STANDARD_SELECTED - 2, "skipped": 0, "failed": 2}
    for name in ("sub-01_ses-pre_T2w.nii.gz", "sub-02_ses-pre_T1w.nii.gz"):
        r = by_name[name]
        assert r.status == "failed" and r.error
        log = r.paths.error_log
        assert log.parent == out / "logs"
        assert "Traceback" in log.read_text() and str(r.run.path) in log.read_text()
        assert not r.paths.defaced_json.exists()
    assert "simulated prediction failure" in by_name["sub-02_ses-pre_T1w.nii.gz"].error
    # after a fix, a rerun redoes only the failed runs and removes their error logs
    make_dataset(tmp_path / "fixed", ["sub-01/ses-pre/anat/sub-01_ses-pre_T2w.nii.gz"])
    bad.write_bytes((tmp_path / "fixed/sub-01/ses-pre/anat/sub-01_ses-pre_T2w.nii.gz").read_bytes())
    again = participant_level(_settings(bids_dataset, out), get_masker=BoxMasker)
    assert not again.failed
    assert again.counts == {"ok": 2, "skipped": STANDARD_SELECTED - 2, "failed": 0}
    assert not list((out / "logs").glob("*_error.log"))


def test_link_without_content_fails_alone(tmp_path: Path, box_masker: BoxMasker) -> None:
    root = make_dataset(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz",
                                           "sub-01/anat/sub-01_T2w.nii.gz"])
    t2 = root / "sub-01/anat/sub-01_T2w.nii.gz"
    t2.unlink()
    os.symlink("../../.git/annex/objects/XX/MD5E-s9--abc.nii.gz", t2)
    results = process_runs(discover_runs(root), tmp_path / "out", lambda: box_masker)
    status = {r.run.suffix: (r.status, r.error) for r in results}
    assert status["T1w"][0] == "ok"
    assert status["T2w"][0] == "failed" and "datalad get" in status["T2w"][1]


@pytest.mark.parametrize("backend", ["SHA256E", "MD5E"])
def test_dropped_annex_content_keeps_finished_runs_finished(tmp_path: Path, box_masker: BoxMasker,
                                                            backend: str) -> None:
    """datalad: after defacing, `datalad drop` leaves dangling links; a rerun must still see
    the finished runs (by the annex key) and not count them as failures."""
    import hashlib

    from bids_deface.workflow import group_rows

    root = make_dataset(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz",
                                           "sub-01/anat/sub-01_T2w.nii.gz"])
    store = root / ".git" / "annex" / "objects"
    store.mkdir(parents=True)
    content = {}
    for name in ("sub-01_T1w.nii.gz", "sub-01_T2w.nii.gz"):
        path = root / "sub-01" / "anat" / name
        data = path.read_bytes()
        digest = (hashlib.sha256 if backend == "SHA256E" else hashlib.md5)(data).hexdigest()
        content[name] = store / f"{backend}-s{len(data)}--{digest}.nii.gz"
        content[name].write_bytes(data)
        path.unlink()
        os.symlink(os.path.relpath(content[name], path.parent), path)
    out = tmp_path / "out"
    settings = _settings(root, out)
    first = participant_level(settings, get_masker=lambda: box_masker)
    assert first.counts == {"ok": 2, "skipped": 0, "failed": 0}
    content["sub-01_T1w.nii.gz"].unlink()  # datalad drop
    again = participant_level(settings, get_masker=lambda: box_masker)
    assert not again.failed and again.counts == {"ok": 0, "skipped": 2, "failed": 0}
    assert {r["status"] for r in group_rows(settings, discover_runs(root))} == {"ok"}
    # the outputs of a dropped image are redone only once its content is back
    again = participant_level(_settings(root, out, overwrite=True), get_masker=lambda: box_masker)
    status = {r.run.suffix: r.status for r in again.results}
    assert status == {"T1w": "failed", "T2w": "ok"}


def test_subject_report_keeps_runs_of_earlier_invocations(bids_dataset: Path, tmp_path: Path,
                                                          box_masker: BoxMasker) -> None:
    """Working session by session (or suffix by suffix) must not shrink a subject's report
    to the last invocation's runs."""
    import re

    out = tmp_path / "out"
    participant_level(_settings(bids_dataset, out, participant_label=("01",), session_label=("pre",)),
                      get_masker=lambda: box_masker)
    later = participant_level(_settings(bids_dataset, out, participant_label=("01",), session_label=("post",)),
                              get_masker=lambda: box_masker)
    assert [r.run.session for r in later.results] == ["post"]
    html = (out / "sub-01.html").read_text()
    shown = set(re.findall(r"<h2>(sub-01_[^<]*)</h2>", html))  # one section per image
    assert shown == {r.run.name for r in later.results} | {
        p.name for p in (bids_dataset / "sub-01/ses-pre/anat").iterdir()
        if p.name.endswith(("T1w.nii.gz", "T2w.nii.gz", "FLAIR.nii"))}
    assert len(shown) == 6

    # an earlier run whose input changed since is shown as out of date, not as done
    changed = sorted((bids_dataset / "sub-01/ses-pre/anat").glob("*T1w.nii.gz"))[0]
    img = nib.load(changed)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[::-1].copy(), img.affine, img.header), changed)
    participant_level(_settings(bids_dataset, out, participant_label=("01",), session_label=("post",)),
                      get_masker=lambda: box_masker)
    html = (out / "sub-01.html").read_text()
    section = html[html.index(f"<h2>{changed.name}</h2>"):]
    section = section[:section.find("<h2>", 5) if "<h2>" in section[5:] else None]
    assert "changed after it was defaced" in section
    assert len(set(re.findall(r"<h2>(sub-01_[^<]*)</h2>", html))) == 6


def test_model_error_stops_everything(bids_dataset: Path, tmp_path: Path) -> None:
    def broken() -> BoxMasker:
        raise ModelError("no model")

    with pytest.raises(ModelError):
        process_runs(discover_runs(bids_dataset), tmp_path / "out", broken)


def test_input_dataset_is_never_modified(bids_dataset: Path, box_masker: BoxMasker) -> None:
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in bids_dataset.rglob("*")}
    out = bids_dataset / "derivatives" / "bids-deface"
    result = participant_level(_settings(bids_dataset, out), get_masker=lambda: box_masker)
    assert not result.failed
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in bids_dataset.rglob("*")
             if "derivatives" not in p.relative_to(bids_dataset).parts}
    assert after == before
