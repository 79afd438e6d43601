"""Metadata de-identification (``--scrub-metadata``): what is removed, shifted and cleared."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_deface.bids.validate import run_validator
from bids_deface.bids.scrub import REMOVED_FIELDS, Scrubber, load_key, read_field_list
from bids_deface.cli.parser import parse_args
from bids_deface.settings import Settings
from bids_deface.workflow import DATE_SHIFT_KEY, participant_level

from .layouts import BoxMasker, make_dataset, tree_digest, write_json

#: identifying values planted in the input; none may appear anywhere in the outputs
SECRETS = {
    "PatientName": "DOE^JANE", "PatientID": "MRN-8812734", "PatientBirthDate": "19870412",
    "InstitutionName": "St Elsewhere Childrens Hospital", "InstitutionAddress": "12 Harbour Road, Springfield",
    "StationName": "MRC40771", "DeviceSerialNumber": "SN-4471920", "OperatorsName": "R. Smithers",
    "ReferringPhysicianName": "DR^HIBBERT", "ImageComments": "patient anxious, mother present",
    "LabNotebookId": "LNB-2291",
}


@pytest.fixture
def identifying_dataset(tmp_path: Path) -> Path:
    root = make_dataset(tmp_path / "bids")
    for side in sorted(root.rglob("sub-*_T1w.nii.gz")):
        img = nib.load(side)
        img.header["descrip"] = b"DOE^JANE 19870412"
        img.header["aux_file"] = b"MRN-8812734"
        img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"St Elsewhere Childrens Hospital"))
        nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header), side)
        write_json(side.with_name(side.name.replace(".nii.gz", ".json")), {
            **SECRETS, "FlipAngle": 9, "AcquisitionDateTime": "2021-05-03T09:41:17.250000",
            "AcquisitionTime": "09:41:17.25"})
    (root / "extra_fields.txt").write_text("# our own\nLabNotebookId\n")
    return root


def test_scrubbed_outputs_hold_no_identifying_value(identifying_dataset: Path, tmp_path: Path,
                                                   validator: str) -> None:
    bids = identifying_dataset
    before = tree_digest(bids)
    out = tmp_path / "out"
    settings = parse_args([str(bids), str(out), "participant", "--skip-bids-validation",
                           "--scrub-metadata", "--scrub-fields", str(bids / "extra_fields.txt")])
    result = participant_level(settings, get_masker=BoxMasker)
    assert not result.failed
    assert tree_digest(bids) == before

    # nothing identifying in any output but the key under logs/
    for path in out.rglob("*"):
        if not path.is_file() or path.name == DATE_SHIFT_KEY:
            continue
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            import gzip

            data = gzip.decompress(data)
        for value in SECRETS.values():
            assert value.encode() not in data, (path, value)
        assert b"DOE^JANE" not in data and b"19870412" not in data

    key = load_key(out / "logs" / DATE_SHIFT_KEY)
    shift = Scrubber(key).shift_days
    for side_path in sorted(out.rglob("*_desc-defaced_T1w.json")):
        side = json.loads(side_path.read_text())
        subject = side_path.name.split("_")[0].removeprefix("sub-")
        assert side["FlipAngle"] == 9 and side["AcquisitionTime"] == "09:41:17.25"
        assert side["DeidentificationMethodCodeSequence"][0]["CodeValue"] == "113102"
        assert side["Defacing"]["MetadataScrubbed"] is True
        shifted = np.datetime64(side["AcquisitionDateTime"][:10])
        assert (np.datetime64("2021-05-03") - shifted).astype(int) == shift(subject)
        assert side["AcquisitionDateTime"][10:] == "T09:41:17.250000"
        image = nib.load(side_path.with_name(side_path.name.replace(".json", ".nii.gz")))
        assert bytes(image.header["descrip"].tobytes()).strip(b"\x00") == b""
        assert not image.header.extensions
        source = nib.load(bids / side["Sources"][0].split(":", 2)[2])
        mask = np.asanyarray(nib.load(next(side_path.parent.glob(
            side_path.name.split("_desc-defaced_")[0] + "_label-face_desc-T1w_mask.nii.gz"))).dataobj).astype(bool)
        # the voxels (and their scaling) are those of the defaced source
        a, b = np.asanyarray(source.dataobj), np.asanyarray(image.dataobj)
        assert np.array_equal(a[~mask], b[~mask])
        assert source.header.get_slope_inter() == image.header.get_slope_inter()
    # one subject's dates move together, another's by its own offset
    assert len({shift(s) for s in ("01", "02")}) == 2

    assert run_validator(out).errors == []
    report = next((out / "logs").glob("deidentification_*.tsv")).read_text()
    assert "PatientName\tremoved" in report and "AcquisitionDateTime\tdate shifted" in report
    assert "LabNotebookId\tremoved" in report and "NIfTI extensions\t1 removed" in report

    # a rerun without de-identification redoes the runs instead of keeping scrubbed ones
    plain = Settings(bids_dir=bids, output_dir=out, skip_bids_validation=True)
    again = participant_level(plain, get_masker=BoxMasker)
    assert {r.status for r in again.results} == {"ok"}
    side = json.loads(next(out.rglob("*_desc-defaced_T1w.json")).read_text())
    assert side["PatientName"] == "DOE^JANE" and "MetadataScrubbed" not in side["Defacing"]


def test_tables_dates_and_ages() -> None:
    s = Scrubber(b"\x01" * 32)
    d = s.shift_days("01")
    scans = "filename\tacq_time\toperator\nanat/sub-01_T1w.nii.gz\t2020-01-10T08:00:00\tX\n"
    out = Scrubber(b"\x01" * 32, extra_fields=("operator",)).table(scans, "01", "scans.tsv").splitlines()
    assert out[0] == "filename\tacq_time"
    expected = (np.datetime64("2020-01-10") - np.timedelta64(d, "D")).astype(str)
    assert out[1] == f"anat/sub-01_T1w.nii.gz\t{expected}T08:00:00"
    participants = "participant_id\tage\nsub-01\t92\nsub-02\t7.5\n"
    assert s.table(participants, None, "participants.tsv").splitlines()[1:] == ["sub-01\t89+", "sub-02\t7.5"]
    # a date that is not one is removed, not kept
    assert "AcquisitionDate" not in s.sidecar({"AcquisitionDate": "yesterday"}, "01", "x.json")
    assert set(REMOVED_FIELDS) >= {"PatientName", "InstitutionName", "DeviceSerialNumber", "OperatorsName"}


def test_field_list_file(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('["LabNotebookId", "ScannerRoom"]')
    (tmp_path / "b.txt").write_text("LabNotebookId  # ours\n\nScannerRoom\n")
    assert read_field_list(tmp_path / "a.json") == read_field_list(tmp_path / "b.txt") == ("LabNotebookId", "ScannerRoom")
    (tmp_path / "c.txt").write_text("not a name!\n")
    with pytest.raises(ValueError):
        read_field_list(tmp_path / "c.txt")


def test_parallel_tasks_share_one_key(tmp_path: Path) -> None:
    path = tmp_path / "logs" / DATE_SHIFT_KEY
    assert load_key(path) == load_key(path) and len(load_key(path)) == 32
