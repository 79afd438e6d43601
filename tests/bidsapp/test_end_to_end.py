"""The whole app with the shipped face model on the bundled example dataset."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_deface.bids.validate import run_validator
from bids_deface.cli.run import main
from bids_deface.data import default_model_dir
from bids_deface.errors import EXIT_QC_NOT_PASS

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ds-synthetic"


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_example_dataset_participant_and_group(tmp_path: Path, validator: str) -> None:
    bids = tmp_path / "bids"
    shutil.copytree(EXAMPLE, bids)
    before = _digest(bids)
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "--device", "cpu", "--no-progress"])
    assert _digest(bids) == before  # the input is never modified

    sidecars = sorted(out.rglob("*_desc-defaced_*.json"))
    assert len(sidecars) == 4
    verdicts = [json.loads(p.read_text())["Defacing"]["QC"]["Verdict"] for p in sidecars]
    assert set(verdicts) <= {"pass", "face-remaining", "brain-removed", "not-defaced", "review"}
    # 0 only when every verdict is pass; 7 when every run finished but one is not
    assert code == (0 if set(verdicts) == {"pass"} else EXIT_QC_NOT_PASS), verdicts
    for side_path in sidecars:
        side = json.loads(side_path.read_text())
        d = side["Defacing"]
        assert d["Model"] and len(d["ModelSHA256"]) == 64 and d["Device"] == "cpu"
        assert d["Runtime"].startswith("openvino ")  # the default runtime on the CPU, with its version
        assert d["VoxelsRemoved"] > 0 and "no_face_removed" not in d["QCFlags"]
        assert side["SkullStripped"] is False
        spacing = d["ModelSpacingMM"]
        # the adult-size head is seen at the model's own spacing; the child-size (0.75) head at
        # most at it (finer when its brain lies inside the field of view, see test_model)
        plan = json.loads((default_model_dir() / "plans.json").read_text())
        own = plan["configurations"]["3d_fullres"]["spacing"]
        assert len(spacing) == 3 and (max(spacing) <= min(own) if "sub-02" in side_path.name
                                      else spacing == own[::-1])
        # the guard: 4 mm for both parts at the model's own voxel; on a small head's finer
        # voxels the model's face less, the ear zone between that and 4 mm, never under 2 mm
        guard = d["BrainGuardMM"]
        if spacing == own[::-1]:
            assert guard == {"Face": 4.0, "Ears": 4.0}
        else:
            assert 2.0 < guard["Face"] < guard["Ears"] < 4.0
        # upright heads: their pose is recorded, and they are masked in their own axes
        pose = d["HeadPoseDeg"]
        assert set(pose) == {"Pitch", "Roll", "Yaw"} and d["UprightFrame"] is False
        assert max(abs(pose["Roll"]), abs(pose["Yaw"])) <= 12.0
        image = side_path.with_name(side_path.name.replace(".json", ".nii.gz"))
        source = bids / side["Sources"][0].split(":", 2)[2]
        mask_path = next(image.parent.glob(
            image.name.split("_desc-defaced_")[0] + f"_label-face_desc-{image.name.split('_')[-1].split('.')[0]}_mask.nii.gz"))
        mask = np.asanyarray(nib.load(mask_path).dataobj).astype(bool)
        a = np.asanyarray(nib.load(source).dataobj)
        b = np.asanyarray(nib.load(image).dataobj)
        assert np.array_equal(a[~mask], b[~mask]) and (b[mask] == 0).all()
        assert int(mask.sum()) == d["VoxelsRemoved"]
    for sub in ("sub-01", "sub-02"):
        html = (out / f"{sub}.html").read_text()
        assert html.count("data:image/png;base64,") >= 4 and "http://" not in html
        assert "Brain guard" in html

    # a rerun skips the complete runs (same verdicts, same exit); the group level summarises them
    assert main([str(bids), str(out), "participant", "--device", "cpu", "--no-progress"]) == code
    assert main([str(bids), str(out), "group"]) == 0
    rows = list(csv.DictReader((out / "group.tsv").open(), delimiter="\t"))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert sorted(r["qc_verdict"] for r in rows) == sorted(verdicts)
    ranks = [r["qc_verdict"] == "pass" for r in rows]
    assert ranks == sorted(ranks)  # verdicts other than pass are listed first
    assert (out / "group.html").is_file()
    assert run_validator(out).errors == []


def test_images_with_no_face_come_out_unchanged_and_flagged(tmp_path: Path, validator: str) -> None:
    """An all-zero image and a skull-stripped real head (ds000031, a training head, its
    deepbet brain kept): nothing removed, the data written back as they were, and the
    sidecar says why."""
    from bids_deface.brainmask import deepbet_brain_mask

    from ..conftest import _fetch

    bids = tmp_path / "bids"
    shutil.copytree(EXAMPLE, bids, ignore=shutil.ignore_patterns("sub-*"))
    (bids / "participants.tsv").write_text("participant_id\nsub-10\nsub-11\n")
    head = nib.load(_fetch("ds000031", "pydeface"))
    raw = np.asanyarray(head.dataobj)
    stripped = np.where(deepbet_brain_mask(head), raw, 0).astype(raw.dtype)
    for sub, img in (("10", nib.Nifti1Image(np.zeros((120, 140, 120), np.int16), np.diag([1.5, 1.5, 1.5, 1.0]))),
                     ("11", nib.Nifti1Image(stripped, head.affine, head.header))):
        anat = bids / f"sub-{sub}" / "anat"
        anat.mkdir(parents=True)
        img.header.set_xyzt_units("mm", "sec")
        nib.save(img, anat / f"sub-{sub}_T1w.nii.gz")
        (anat / f"sub-{sub}_T1w.json").write_text(json.dumps({"MagneticFieldStrength": 3}))
    before = _digest(bids)
    out = tmp_path / "out"
    # the empty image's QC verdict is review: every run finished, one verdict is not pass
    assert main([str(bids), str(out), "participant", "--device", "cpu", "--no-progress"]) == EXIT_QC_NOT_PASS
    assert _digest(bids) == before
    for sub, flag, kind, verdict in (("10", "empty_image", "empty", "review"),
                                     ("11", "no_face_in_image", "no_face", "pass")):
        side_path = next(out.rglob(f"sub-{sub}_desc-defaced_T1w.json"))
        d = json.loads(side_path.read_text())["Defacing"]
        assert d["VoxelsRemoved"] == 0 and d["InputKind"] == kind and d["QCFlags"][0] == flag
        assert d["QC"]["Verdict"] == verdict and d["QC"]["Notes"] == [flag], d["QC"]
        defaced = nib.load(side_path.with_name(side_path.name.replace(".json", ".nii.gz")))
        source = nib.load(bids / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz")
        np.testing.assert_array_equal(np.asanyarray(defaced.dataobj), np.asanyarray(source.dataobj))
        report = (out / f"sub-{sub}.html").read_text()
        assert flag in report


def test_reface_writes_refaced_images_sidecars_and_renders(tmp_path: Path, validator: str) -> None:
    """``--reface`` at the participant level: beside each defaced image a refaced one,
    identical to the source outside the mask and not inside it, a sidecar that names the
    face's template, source and licence, the refaced render in the report, and a dataset
    that still validates."""
    bids = tmp_path / "bids"
    shutil.copytree(EXAMPLE, bids, ignore=shutil.ignore_patterns("sub-02"))
    (bids / "participants.tsv").write_text("participant_id\nsub-01\n")
    before = _digest(bids)
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "--device", "cpu", "--no-progress", "--reface"])
    assert code in (0, EXIT_QC_NOT_PASS)
    assert _digest(bids) == before
    refaced = sorted(out.rglob("*_desc-refaced_*.nii.gz"))
    assert [p.name for p in refaced] == ["sub-01_desc-refaced_T1w.nii.gz", "sub-01_desc-refaced_T2w.nii.gz"]
    for path in refaced:
        side = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        r = side["Refacing"]
        assert r["TemplateSource"] in ("templateflow", "fallback") and r["TemplateLicense"]
        assert r["Template"] in ("MNI152NLin2009cAsym", "pydeface-mean_reg2mean")
        assert side["Defacing"]["VoxelsRemoved"] == r["VoxelsRefaced"] > 0
        suffix = path.name.split("_")[-1].split(".")[0]
        source = nib.load(bids / "sub-01" / "anat" / f"sub-01_{suffix}.nii.gz")
        mask = np.asanyarray(nib.load(next(path.parent.glob(f"*_label-face_desc-{suffix}_mask.nii.gz"))).dataobj) > 0
        a, b = np.asanyarray(source.dataobj), np.asanyarray(nib.load(path).dataobj)
        assert nib.load(path).header.get_data_dtype() == source.header.get_data_dtype()
        assert np.array_equal(a[~mask], b[~mask]) and np.mean(a[mask] != b[mask]) > 0.5
    html = (out / "sub-01.html").read_text()
    assert "Refaced" in html and "Refacing" in html and html.count("data:image/png;base64,") >= 9
    assert run_validator(out).errors == []
    # a rerun with --reface skips the complete runs
    assert main([str(bids), str(out), "participant", "--device", "cpu", "--no-progress", "--reface"]) == code


def test_jobs_give_the_outputs_of_one_process(tmp_path: Path) -> None:
    """``--jobs 2`` (two worker processes of one thread each) writes the same images, masks
    and de-identification as one process of two threads, isolates a broken input's failure
    in its worker, and brings the workers' log records into the invocation's log."""
    bids = tmp_path / "bids"
    shutil.copytree(EXAMPLE, bids)
    broken = bids / "sub-03" / "anat" / "sub-03_T1w.nii.gz"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x1f\x8b not a whole gzip stream")
    for name in ("sub-01_T1w.json", "sub-01_T2w.json"):  # identifying metadata, for the scrubbing
        side = bids / "sub-01" / "anat" / name
        meta = json.loads(side.read_text()) if side.exists() else {}
        side.write_text(json.dumps({**meta, "InstitutionName": "Example Hospital",
                                    "AcquisitionDateTime": "2020-03-04T10:11:12"}))
    outs = {}
    for jobs, nprocs in ((1, 2), (2, 2)):
        out = tmp_path / f"out-{jobs}"
        code = main([str(bids), str(out), "participant", "--device", "cpu", "--no-progress", "--scrub-metadata",
                     "--skip-bids-validation", "--jobs", str(jobs), "--nprocs", str(nprocs)])
        assert code == 1  # the broken input failed; the others were defaced
        assert [p.name for p in (out / "logs").glob("sub-03*error.log")] == ["sub-03_T1w_error.log"]
        outs[jobs] = out
    one, two = outs[1], outs[2]
    images = sorted(p.relative_to(one) for p in one.rglob("*.nii.gz"))
    assert len(images) == 8  # 4 defaced images and their masks; nothing for the broken one
    assert images == sorted(p.relative_to(two) for p in two.rglob("*.nii.gz"))
    for rel in images:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    for side in sorted(one.rglob("*_desc-defaced_*.json")):
        a = json.loads(side.read_text())
        b = json.loads((two / side.relative_to(one)).read_text())
        for d in (a, b):
            for key in ("Seconds", "PredictionSeconds"):
                del d["Defacing"][key]
            del d["Defacing"]["QC"]["Seconds"]
            assert d["Defacing"].pop("Runtime").startswith("openvino ")  # 2 streams or 1
            # dates are shifted by the output folder's own secret key
            assert d.pop("AcquisitionDateTime", "").endswith("T10:11:12") or "sub-01" not in side.name
            assert "InstitutionName" not in d
        assert a == b, side.name

    def changes(out: Path) -> list[str]:
        return sorted(next((out / "logs").glob("deidentification_*.tsv")).read_text().splitlines())

    assert changes(one) == changes(two) and len(changes(two)) >= 4
    # the subjects' reports, made in the workers too (the failed run's subject included)
    assert sorted(p.name for p in two.glob("sub-*.html")) == ["sub-01.html", "sub-02.html", "sub-03.html"]
    assert sorted(p.name for p in one.glob("sub-*.html")) == ["sub-01.html", "sub-02.html", "sub-03.html"]
    assert "sub-03_T1w.nii.gz" in (two / "sub-03.html").read_text()
    log = next((two / "logs").glob("bids-deface_participant_*.log")).read_text()
    assert log.count("loaded model") == 2  # one model per worker, its record in this log
    assert "sub-03_T1w" in log and "failed" in log
