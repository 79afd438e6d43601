"""Discovery of structural runs with pybids on generated layouts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bids_deface.bids.discover import discover_runs, load_filters
from bids_deface.errors import FilterError, InvalidDatasetError

from .layouts import STANDARD_SELECTED, make_dataset


def names(runs) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.name for r in runs]


def test_every_structural_run_with_its_entities(bids_dataset: Path) -> None:
    runs = discover_runs(bids_dataset)
    assert len(runs) == STANDARD_SELECTED
    found = set(names(runs))
    assert "sub-01_ses-pre_FLAIR.nii" in found  # uncompressed
    assert "sub-01_ses-pre_T1map.nii.gz" not in found  # parametric map: no face to remove
    assert not any("bold" in n for n in found)
    run2 = next(r for r in runs if "run-2" in r.name)
    assert dict(run2.entities) == {
        "subject": "01", "session": "pre", "acquisition": "mprage", "run": "2",
        "suffix": "T1w", "datatype": "anat", "extension": ".nii.gz"}
    assert run2.relpath == "sub-01/ses-pre/anat/sub-01_ses-pre_acq-mprage_run-2_T1w.nii.gz"
    ce = next(r for r in runs if "ce-gad" in r.name)
    assert ce.entities["ceagent"] == "gad"


def test_metadata_follows_inheritance(bids_dataset: Path) -> None:
    runs = {r.name: r for r in discover_runs(bids_dataset)}
    assert runs["sub-01_ses-pre_acq-mprage_run-1_T1w.nii.gz"].metadata["FlipAngle"] == 9
    assert runs["sub-01_ses-pre_acq-mprage_run-2_T1w.nii.gz"].metadata["FlipAngle"] == 8
    assert runs["sub-01_ses-pre_acq-mprage_run-2_T1w.nii.gz"].metadata["RepetitionTime"] == 2.3
    assert runs["sub-01_ses-pre_T2w.nii.gz"].metadata == {}


def test_participant_and_session_labels(bids_dataset: Path) -> None:
    assert {r.subject for r in discover_runs(bids_dataset, ["sub-02"])} == {"02"}
    post = discover_runs(bids_dataset, session_label=["ses-post"])
    assert names(post) == ["sub-01_ses-post_rec-norm_T1w.nii.gz"]
    assert discover_runs(bids_dataset, ["03"]) == []


def test_suffix_selection(bids_dataset: Path) -> None:
    runs = discover_runs(bids_dataset, suffixes=["T2w", "FLAIR"])
    assert sorted(r.suffix for r in runs) == ["FLAIR", "T2w", "T2w"]


def test_flat_filter(bids_dataset: Path, tmp_path: Path) -> None:
    f = tmp_path / "f.json"
    f.write_text(json.dumps({"acq": "mprage", "run": 2}))
    runs = discover_runs(bids_dataset, filters=load_filters(f))
    assert names(runs) == ["sub-01_ses-pre_acq-mprage_run-2_T1w.nii.gz"]


def test_null_and_any_filters(bids_dataset: Path, tmp_path: Path) -> None:
    f = tmp_path / "f.json"
    f.write_text(json.dumps({"ceagent": None, "acquisition": None, "suffix": "T1w"}))
    assert sorted(names(discover_runs(bids_dataset, filters=load_filters(f)))) == [
        "sub-01_ses-post_rec-norm_T1w.nii.gz", "sub-02_ses-pre_T1w.nii.gz"]
    f.write_text(json.dumps({"ceagent": "*"}))
    assert names(discover_runs(bids_dataset, filters=load_filters(f))) == [
        "sub-01_ses-pre_ce-gad_T1w.nii.gz"]


def test_named_queries_as_in_fmriprep(bids_dataset: Path, tmp_path: Path) -> None:
    f = tmp_path / "f.json"
    f.write_text(json.dumps({"t1w": {"suffix": "T1w", "session": "post"},
                             "t2w": {"suffix": "T2w", "subject": "02"}}))
    assert sorted(names(discover_runs(bids_dataset, filters=load_filters(f)))) == [
        "sub-01_ses-post_rec-norm_T1w.nii.gz", "sub-02_ses-pre_T2w.nii.gz"]
    # the command-line labels still restrict the named queries
    assert names(discover_runs(bids_dataset, ["01"], filters=load_filters(f))) == [
        "sub-01_ses-post_rec-norm_T1w.nii.gz"]


def test_unknown_entity_in_filter(bids_dataset: Path, tmp_path: Path) -> None:
    f = tmp_path / "f.json"
    f.write_text(json.dumps({"colour": "blue"}))
    with pytest.raises(FilterError):
        discover_runs(bids_dataset, filters=load_filters(f))


def test_not_a_bids_dataset(tmp_path: Path) -> None:
    with pytest.raises(InvalidDatasetError):
        discover_runs(tmp_path)


def test_annexed_links_with_and_without_content(tmp_path: Path) -> None:
    """datalad/git-annex: images are links into .git/annex; unfetched ones dangle."""
    root = make_dataset(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz",
                                           "sub-01/anat/sub-01_T2w.nii.gz"])
    store = root / ".git" / "annex" / "objects"
    store.mkdir(parents=True)
    for name in ("sub-01_T1w.nii.gz", "sub-01_T2w.nii.gz"):
        path = root / "sub-01" / "anat" / name
        target = store / f"MD5E-s1--{name}"
        path.rename(target)
        os.symlink(os.path.relpath(target, path.parent), path)
    (store / "MD5E-s1--sub-01_T2w.nii.gz").unlink()  # content not fetched
    runs = {r.suffix: r for r in discover_runs(root)}
    assert set(runs) == {"T1w", "T2w"}
    assert runs["T1w"].content_present and runs["T1w"].path.is_symlink()
    assert not runs["T2w"].content_present
    assert runs["T1w"].relpath == "sub-01/anat/sub-01_T1w.nii.gz"
