"""Images of one acquisition grouped, and the reference each is defaced with."""

from __future__ import annotations

from pathlib import Path

import pytest

from bids_deface.bids.companions import needs_magnitude, references
from bids_deface.bids.discover import AnatRun


def _run(name: str) -> AnatRun:
    """An anat run from its file name (entities parsed as ``key-value`` parts)."""
    stem = name.replace(".nii.gz", "")
    *parts, suffix = stem.split("_")
    keys = {"sub": "subject", "ses": "session", "acq": "acquisition", "run": "run"}
    ents = {keys.get(k, k): v for k, v in (p.split("-", 1) for p in parts)}
    ents.update(suffix=suffix, datatype="anat", extension=".nii.gz")
    rel = f"sub-{ents['subject']}/anat/{name}"
    return AnatRun(Path("/d") / rel, rel, ents)


def _refs(*names: str) -> dict[str, str]:
    return {k.rsplit("/", 1)[1]: v.name for k, v in references([_run(n) for n in names]).items()}


def test_phase_takes_the_magnitudes_mask_and_echoes_the_first_echos() -> None:
    assert _refs("sub-01_echo-1_part-mag_T2starw.nii.gz", "sub-01_echo-1_part-phase_T2starw.nii.gz",
                 "sub-01_echo-2_part-mag_T2starw.nii.gz", "sub-01_echo-2_part-phase_T2starw.nii.gz") == {
        "sub-01_echo-1_part-phase_T2starw.nii.gz": "sub-01_echo-1_part-mag_T2starw.nii.gz",
        "sub-01_echo-2_part-mag_T2starw.nii.gz": "sub-01_echo-1_part-mag_T2starw.nii.gz",
        "sub-01_echo-2_part-phase_T2starw.nii.gz": "sub-01_echo-1_part-mag_T2starw.nii.gz",
    }


def test_an_mp2rage_is_defaced_with_its_second_inversions_mask() -> None:
    assert _refs("sub-01_inv-1_MP2RAGE.nii.gz", "sub-01_inv-2_MP2RAGE.nii.gz", "sub-01_UNIT1.nii.gz",
                 "sub-01_T1map.nii.gz") == {
        "sub-01_inv-1_MP2RAGE.nii.gz": "sub-01_inv-2_MP2RAGE.nii.gz",
        "sub-01_UNIT1.nii.gz": "sub-01_inv-2_MP2RAGE.nii.gz",
        "sub-01_T1map.nii.gz": "sub-01_inv-2_MP2RAGE.nii.gz",
    }


def test_other_acquisitions_runs_and_contrasts_stay_apart() -> None:
    assert _refs("sub-01_run-1_T1w.nii.gz", "sub-01_run-2_T1w.nii.gz", "sub-01_T2w.nii.gz",
                 "sub-01_acq-fast_inv-1_MP2RAGE.nii.gz", "sub-01_inv-2_MP2RAGE.nii.gz",
                 "sub-01_acq-fast_UNIT1.nii.gz") == {
        "sub-01_acq-fast_UNIT1.nii.gz": "sub-01_acq-fast_inv-1_MP2RAGE.nii.gz",
    }
    # a map alone is defaced on its own; of maps alone, the T1 map takes the uniform image's
    assert _refs("sub-01_UNIT1.nii.gz") == {} and _refs("sub-01_T1map.nii.gz", "sub-01_R1map.nii.gz") == {}
    assert _refs("sub-01_UNIT1.nii.gz", "sub-01_T1map.nii.gz") == {"sub-01_T1map.nii.gz": "sub-01_UNIT1.nii.gz"}


def test_a_phase_image_without_its_magnitude_has_no_reference() -> None:
    runs = [_run("sub-01_part-phase_T2starw.nii.gz"), _run("sub-01_part-real_T2starw.nii.gz")]
    assert references(runs) == {} and all(needs_magnitude(r) for r in runs)
    assert not needs_magnitude(_run("sub-01_part-mag_T2starw.nii.gz"))
    assert not needs_magnitude(_run("sub-01_T1w.nii.gz"))


def _save(path: Path, data, affine) -> None:  # type: ignore[no-untyped-def]
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2])
def test_companions_take_their_references_mask(tmp_path: Path, s1_2mm, jobs: int) -> None:  # type: ignore[no-untyped-def]
    """With the real model on pycortex S1 (2 mm): a phase image and a second echo take the
    first echo's magnitude's mask, an MP2RAGE's first inversion and UNIT1 its second
    inversion's (in one process, and shared among two workers); a phase image whose
    magnitude is not there, or was not defaced, fails alone with a message."""
    import json

    import nibabel as nib
    import numpy as np

    from bids_deface.cli.run import main
    from bids_deface.errors import EXIT_RUN_FAILED
    from bids_deface.evaluation.cases import mp2rage_unit1

    from .layouts import tree_digest

    root = tmp_path / "bids"
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "c", "BIDSVersion": "1.10.0"}))
    head = np.asanyarray(s1_2mm.dataobj).astype(np.int16)
    aff = s1_2mm.affine
    rng = np.random.default_rng(0)
    phase = np.where(head > 20, (head % 200) * 10 - 1000, rng.integers(-3142, 3142, head.shape)).astype(np.int16)
    anat = root / "sub-01" / "anat"
    _save(anat / "sub-01_echo-1_part-mag_T2starw.nii.gz", head, aff)
    _save(anat / "sub-01_echo-1_part-phase_T2starw.nii.gz", phase, aff)
    _save(anat / "sub-01_echo-2_part-mag_T2starw.nii.gz", (head * 0.6).astype(np.int16), aff)
    _save(anat / "sub-01_inv-2_MP2RAGE.nii.gz", head, aff)
    _save(anat / "sub-01_inv-1_MP2RAGE.nii.gz", np.abs(head.astype(np.int32) - 60).astype(np.int16), aff)
    _save(anat / "sub-01_UNIT1.nii.gz",
          mp2rage_unit1(head.astype(np.float32), nib.affines.voxel_sizes(aff)).astype(np.int16), aff)
    for name in ("sub-01_echo-1_part-phase_T2starw.json", "sub-02_part-phase_T2starw.json",
                 "sub-03_part-phase_T2starw.json"):
        (root / name.split("_")[0] / "anat").mkdir(parents=True, exist_ok=True)
        (root / name.split("_")[0] / "anat" / name).write_text(json.dumps({"Units": "rad"}))
    _save(root / "sub-02" / "anat" / "sub-02_part-phase_T2starw.nii.gz", phase, aff)
    # a magnitude image that cannot be read: its phase image fails with it
    _save(root / "sub-03" / "anat" / "sub-03_part-phase_T2starw.nii.gz", phase, aff)
    _save(root / "sub-03" / "anat" / "sub-03_part-mag_T2starw.nii.gz", head, aff)
    broken = root / "sub-03" / "anat" / "sub-03_part-mag_T2starw.nii.gz"
    broken.write_bytes(broken.read_bytes()[:300])
    before = tree_digest(root)
    out = tmp_path / "out"
    code = main([str(root), str(out), "participant", "--device", "cpu", "--nprocs", "2", "--jobs", str(jobs),
                 "--suffix", "T2starw", "MP2RAGE", "UNIT1", "--no-progress", "--skip-bids-validation"])
    assert code == EXIT_RUN_FAILED and tree_digest(root) == before  # sub-02's and sub-03's

    def mask(stem: str, suffix: str) -> np.ndarray:
        return np.asanyarray(nib.load(out / "sub-01" / "anat" / f"{stem}_label-face_desc-{suffix}_mask.nii.gz")
                             .dataobj) > 0

    def defacing(stem: str, suffix: str) -> dict:
        return json.loads((out / "sub-01" / "anat" / f"{stem}_desc-defaced_{suffix}.json").read_text())["Defacing"]

    for ref, suffix, companions in (("sub-01_echo-1_part-mag", "T2starw",
                                     ("sub-01_echo-1_part-phase", "sub-01_echo-2_part-mag")),
                                    ("sub-01_inv-2", "MP2RAGE", ("sub-01_inv-1",))):
        m = mask(ref, suffix)
        assert m.sum() > 50_000 and "MaskFrom" not in defacing(ref, suffix)
        for stem in companions:
            assert np.array_equal(mask(stem, suffix), m), stem
            rec = defacing(stem, suffix)
            assert rec["MaskFrom"] == f"bids:raw:sub-01/anat/{ref}_{suffix}.nii.gz"
            assert "mask_of_companion" in rec["QCFlags"] and "no_brain_found" not in rec["QCFlags"]
            # the reference's verdict: the same voxels removed from the same head
            ref_qc = defacing(ref, suffix)["QC"]
            assert rec["QC"]["Verdict"] == ref_qc["Verdict"] and rec["QC"]["Notes"] == [*ref_qc["Notes"],
                                                                                     "verdict_of_reference"]
    assert np.array_equal(mask("sub-01", "UNIT1"), mask("sub-01_inv-2", "MP2RAGE"))
    log = next((out / "logs").glob("sub-02_part-phase_T2starw_error.log")).read_text()
    assert "magnitude image (part-mag" in log
    log = next((out / "logs").glob("sub-03_part-phase_T2starw_error.log")).read_text()
    assert "is defaced with the mask of sub-03_part-mag_T2starw.nii.gz" in log and "was not defaced" in log
    # a rerun finds every output complete, companions included: nothing is written again
    sidecars = sorted((out / "sub-01" / "anat").glob("*_desc-defaced_*.json"))
    stamps = [p.stat().st_mtime_ns for p in sidecars]
    assert main([str(root), str(out), "participant", "--device", "cpu", "--nprocs", "2",
                 "--suffix", "T2starw", "MP2RAGE", "UNIT1", "--no-progress", "--skip-bids-validation", "--participant-label", "01"]) in (0, 7)
    assert len(sidecars) == 6 and [p.stat().st_mtime_ns for p in sidecars] == stamps
