"""``--output-layout raw``: the upload-ready copy of the input (OpenNeuro layout)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_deface.bids.validate import run_validator
from bids_deface.cli.parser import parse_args
from bids_deface.workflow import group_level, participant_level

from .layouts import BoxMasker, make_dataset, tree_digest, write_json
from .test_scrub import SECRETS


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = make_dataset(tmp_path / "bids")
    for side in sorted(root.rglob("sub-*_T1w.nii.gz")):
        write_json(side.with_name(side.name.replace(".nii.gz", ".json")), {
            **SECRETS, "FlipAngle": 9, "AcquisitionDateTime": "2021-05-03T09:41:17.250000"})
    (root / "sub-01" / "ses-pre" / "sub-01_ses-pre_scans.tsv").write_text(
        "filename\tacq_time\n"
        "anat/sub-01_ses-pre_acq-mprage_run-1_T1w.nii.gz\t2021-05-03T09:41:17\n"
        "anat/sub-01_ses-pre_T2w.nii.gz\t2021-05-03T09:50:02\n"
        "anat/sub-01_ses-pre_T1map.nii.gz\t2021-05-03T09:58:40\n")
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\t92\nsub-02\t7\n")
    # an image that cannot be read: it must not reach the copy
    bad = root / "sub-02" / "ses-pre" / "anat" / "sub-02_ses-pre_T2w.nii.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    (root / "sourcedata").mkdir()
    (root / "sourcedata" / "scan.dcm").write_bytes(b"DICM DOE^JANE")
    return root


def test_raw_layout_is_an_upload_ready_copy(dataset: Path, tmp_path: Path, validator: str) -> None:
    before = digest = tree_digest(dataset)
    up = tmp_path / "upload"
    settings = parse_args([str(dataset), str(up), "participant", "--skip-bids-validation",
                           "--output-layout", "raw"])
    qc = tmp_path / "upload_qc"
    assert settings.output_dir == qc and settings.publish_dir == up and settings.scrub_metadata
    result = participant_level(settings, get_masker=BoxMasker)
    assert result.failed  # the unreadable T2w
    assert tree_digest(dataset) == before

    # every defaced image under its source's name, its voxels the defaced ones
    for run in (r for r in result.results if not r.failed):
        copy = up / run.run.relpath
        assert copy.is_file(), copy
        a = np.asanyarray(nib.load(copy).dataobj)
        b = np.asanyarray(nib.load(run.paths.defaced).dataobj)
        assert np.array_equal(a, b)
        src = np.asanyarray(nib.load(dataset / run.run.relpath).dataobj)
        assert not np.array_equal(a, src)  # not the face-bearing original
    flair = up / "sub-01/ses-pre/anat/sub-01_ses-pre_FLAIR.nii"  # uncompressed as the source was
    assert flair.is_file() and not flair.read_bytes().startswith(b"\x1f\x8b")
    # the failed run, the unselected T1map and sourcedata are left out, and listed
    assert not (up / "sub-02/ses-pre/anat/sub-02_ses-pre_T2w.nii.gz").exists()
    assert not (up / "sub-01/ses-pre/anat/sub-01_ses-pre_T1map.nii.gz").exists()
    assert not (up / "sourcedata").exists()
    excluded = (up / "derivatives/bids-deface/excluded.tsv").read_text()
    assert "sub-02_ses-pre_T2w.nii.gz" in excluded and "not selected" in excluded
    # everything else is there: func, top-level files
    bold = "sub-01/ses-pre/func/sub-01_ses-pre_task-rest_bold.nii.gz"
    assert (up / bold).read_bytes() == (dataset / bold).read_bytes()
    assert (up / "dataset_description.json").read_text() == (dataset / "dataset_description.json").read_text()
    # masks, QC records and reports of the defaced images under derivatives/; the reports
    # that show faces before defacing, and the logs, outside the tree
    deriv = up / "derivatives/bids-deface"
    assert list(deriv.rglob("*_mask.nii.gz"))
    assert all("Defacing" in json.loads(p.read_text()) for p in deriv.rglob("*_desc-defaced_*.json"))
    assert sorted(p.relative_to(up).as_posix() for p in up.rglob("*.html")) == [
        "derivatives/bids-deface/sub-01.html", "derivatives/bids-deface/sub-02.html"]
    assert not (up / "logs").exists() and (qc / "logs").is_dir()
    for subject in ("sub-01", "sub-02"):
        full, shared = (qc / f"{subject}.html").read_text(), (deriv / f"{subject}.html").read_text()
        assert "Not for sharing" in full and "Part of the upload" in shared and "Not for sharing" not in shared
        # the upload's report renders the uploaded images: "As uploaded", no "Before" row,
        # and no figure of the full report's images before defacing
        before = set(re.findall(r'<img src="([^"]+)" alt="Before defacing', full))
        assert before and not before & set(re.findall(r'<img src="([^"]+)"', shared))
        assert 'alt="As uploaded defacing' in shared and 'alt="Before' not in shared
    assert "Defacing failed" in (deriv / "sub-02.html").read_text()  # the unreadable T2w

    # metadata: no identifying value anywhere in the upload tree, nor the checksum of an
    # image before defacing (the QC folder's sidecars keep it for reruns)
    checksums = [hashlib.sha256((dataset / r.run.relpath).read_bytes()).hexdigest()
                 for r in result.results if not r.failed]
    assert all(c in (qc / "sub-01.html").read_text() + (qc / "sub-02.html").read_text() for c in checksums)
    for path in up.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            data = gzip.decompress(data) if path.name.endswith(".gz") else data
            # (LabNotebookId is not in the default list: see test_scrub for --scrub-fields)
            for value in (*(v for k, v in SECRETS.items() if k != "LabNotebookId"), "DOE^JANE", "2021-05-03",
                          *checksums):
                assert value.encode() not in data, (path, value)
    scans = (up / "sub-01/ses-pre/sub-01_ses-pre_scans.tsv").read_text().splitlines()
    assert len(scans) == 3 and "T1map" not in "".join(scans)  # its row goes with the image
    assert "sub-01\t89+" in (up / "participants.tsv").read_text()
    side = json.loads((up / "sub-01/ses-pre/anat/sub-01_ses-pre_acq-mprage_run-1_T1w.json").read_text())
    assert side["FlipAngle"] == 9 and side["DeidentificationMethodCodeSequence"]

    # the group level writes its table and index into the upload's derivatives too: the
    # defaced images where they are in the upload, the reports beside it, no input path
    group_level(parse_args([str(dataset), str(up), "group", "--output-layout", "raw"]))
    assert str(dataset) in (qc / "group.tsv").read_text()  # the failed run's error names its file
    rows = list(csv.DictReader((deriv / "group.tsv").open(), delimiter="\t"))
    assert {r["status"] for r in rows} == {"ok", "failed"}
    for row in rows:
        if row["status"] == "ok":
            assert (deriv / row["defaced"]).resolve() == (up / row["source"]).resolve()
            assert (deriv / row["mask"]).is_file() and (deriv / row["report"]).is_file()
    assert str(dataset) not in (deriv / "group.tsv").read_text() + (deriv / "group.html").read_text()
    # nor anywhere else in the upload: its derivative links to the upload itself
    assert not [p for p in up.rglob("*") if p.is_file() and str(dataset).encode() in p.read_bytes()]
    links = json.loads((deriv / "dataset_description.json").read_text())["DatasetLinks"]
    assert (deriv / links["raw"]).resolve() == up.resolve()

    report = run_validator(up)
    assert report.errors == [], report.errors

    # copies, not links: what is done to the upload (DataLad making a file read-only, an
    # edit in place) does not reach the input
    mode = (dataset / bold).stat().st_mode
    (up / bold).chmod(0o444)
    (up / "dataset_description.json").write_text("{}")  # truncated and written in place
    assert (dataset / bold).stat().st_mode == mode and tree_digest(dataset) == digest


def test_raw_layout_arguments(dataset: Path, tmp_path: Path) -> None:
    up = tmp_path / "upload"
    with pytest.raises(SystemExit):  # the reports must not land in the upload tree
        parse_args([str(dataset), str(up), "participant", "--output-layout", "raw", "--qc-dir", str(up / "qc")])
    with pytest.raises(SystemExit):
        parse_args([str(dataset), str(up), "participant", "--qc-dir", str(tmp_path / "qc")])
    settings = parse_args([str(dataset), str(up), "group", "--output-layout", "raw", "--qc-dir", str(tmp_path / "qc")])
    assert settings.output_dir == tmp_path / "qc" and settings.publish_dir == up


def test_raw_layout_by_participant_tasks(dataset: Path, tmp_path: Path, validator: str) -> None:
    """Job-array tasks, one participant each, into one upload folder: each writes its own
    subjects; the copy and excluded.tsv end up whole."""
    up = tmp_path / "upload"
    for label in ("02", "01"):
        settings = parse_args([str(dataset), str(up), "participant", "--skip-bids-validation",
                               "--output-layout", "raw", "--participant-label", label])
        participant_level(settings, get_masker=BoxMasker)
    assert (up / "sub-01/ses-pre/anat/sub-01_ses-pre_T2w.nii.gz").is_file()
    assert (up / "sub-02/ses-pre/anat/sub-02_ses-pre_T1w.nii.gz").is_file()
    excluded = (up / "derivatives/bids-deface/excluded.tsv").read_text()
    assert "sub-02_ses-pre_T2w.nii.gz" in excluded and "sub-01_ses-pre_T1map.nii.gz" in excluded
    assert not list(up.rglob(".*"))
    assert run_validator(up).errors == []
