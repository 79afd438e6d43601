"""Derivative names, dataset_description, .bidsignore and sidecars."""

from __future__ import annotations

from pathlib import Path

from bids_deface.bids import outputs
from bids_deface.bids.discover import AnatRun, discover_runs


def _run(name: str, **entities: str) -> AnatRun:
    ents = {"datatype": "anat", "extension": ".nii.gz", **entities}
    return AnatRun(Path("/d") / name, name, ents)


def test_names_keep_every_entity_in_bids_order() -> None:
    run = _run("x", subject="01", session="a", task="t", acquisition="mp", ceagent="gad",
               reconstruction="norm", run="02", echo="1", flip="2", inv="1", mt="on", part="mag", chunk="3",
               suffix="T1w")
    p = outputs.output_paths(run, Path("/o"))
    stem = "sub-01_ses-a_task-t_acq-mp_ce-gad_rec-norm_run-02_echo-1_flip-2_inv-1_mt-on_part-mag_chunk-3"
    assert p.defaced == Path(f"/o/sub-01/ses-a/anat/{stem}_desc-defaced_T1w.nii.gz")
    assert p.defaced_json == Path(f"/o/sub-01/ses-a/anat/{stem}_desc-defaced_T1w.json")
    assert p.mask == Path(f"/o/sub-01/ses-a/anat/{stem}_label-face_desc-T1w_mask.nii.gz")
    assert p.mask_json == Path(f"/o/sub-01/ses-a/anat/{stem}_label-face_desc-T1w_mask.json")
    assert p.error_log == Path(f"/o/logs/{stem}_T1w_error.log")


def test_uncompressed_source_gives_compressed_outputs() -> None:
    p = outputs.output_paths(_run("x", subject="01", suffix="FLAIR", extension=".nii"), Path("/o"))
    assert p.defaced.name == "sub-01_desc-defaced_FLAIR.nii.gz"
    assert p.mask.name == "sub-01_label-face_desc-FLAIR_mask.nii.gz"


def test_outputs_of_all_runs_and_contrasts_never_collide(bids_dataset: Path) -> None:
    runs = discover_runs(bids_dataset)
    paths = [p for r in runs for p in (lambda o: (o.defaced, o.defaced_json, o.mask,
                                                   o.mask_json, o.error_log))(
        outputs.output_paths(r, Path("/o")))]
    assert len(paths) == len(set(paths)) == 5 * len(runs)


def test_dataset_description(bids_dataset: Path) -> None:
    out = bids_dataset / "derivatives" / "bids-deface"
    desc = outputs.dataset_description(bids_dataset, out)
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "bids-deface"
    assert desc["GeneratedBy"][0]["Version"]
    assert desc["DatasetLinks"] == {"raw": "../.."}
    assert desc["SourceDatasets"] == [{"URL": "../.."}]
    assert desc["License"] == "CC0"
    elsewhere = outputs.dataset_description(bids_dataset, bids_dataset.parent / "out")
    assert elsewhere["DatasetLinks"]["raw"] == bids_dataset.as_uri()


def test_bidsignore_keeps_existing_lines(tmp_path: Path) -> None:
    (tmp_path / ".bidsignore").write_text("extra/\n")
    outputs.write_bidsignore(tmp_path)
    outputs.write_bidsignore(tmp_path)
    lines = (tmp_path / ".bidsignore").read_text().splitlines()
    assert lines[0] == "extra/"
    assert sorted(lines[1:]) == sorted(outputs.BIDSIGNORE)


def test_sidecars() -> None:
    run = AnatRun(Path("/d/sub-01/anat/sub-01_T2w.nii.gz"), "sub-01/anat/sub-01_T2w.nii.gz",
                  {"subject": "01", "suffix": "T2w"}, {"EchoTime": 0.1})
    side = outputs.defaced_sidecar(run, {"VoxelsRemoved": 3})
    assert side["EchoTime"] == 0.1
    assert side["Sources"] == ["bids:raw:sub-01/anat/sub-01_T2w.nii.gz"]
    assert side["SkullStripped"] is False
    assert side["Defacing"] == {"VoxelsRemoved": 3}
    mask = outputs.mask_sidecar(run)
    assert mask["Type"] == "Face"
    assert mask["Sources"] == side["Sources"]
