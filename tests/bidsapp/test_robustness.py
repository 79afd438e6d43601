"""Bad inputs, a run killed mid-write, and participants run in parallel into one output:
the app with the shipped model on a real head (pycortex S1 at 2 mm) and broken copies of it.

Every scenario checksums the input tree before and after: it is never modified.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_deface.bids.validate import run_validator
from bids_deface.cli.run import main
from bids_deface.errors import EXIT_OK, EXIT_QC_NOT_PASS, EXIT_RUN_FAILED
from bids_deface.evaluation.cases import mp2rage_unit1

#: Exit codes of a run in which every image was defaced (whatever its QC verdict).
FINISHED = (EXIT_OK, EXIT_QC_NOT_PASS)

from .layouts import tree_digest

pytestmark = pytest.mark.slow


def _dataset(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "robustness", "BIDSVersion": "1.10.0", "Authors": ["A. Tester", "B. Tester"]}))
    (root / "README").write_text("Generated for tests.\n")
    return root


def _t1w(root: Path, subject: str) -> Path:
    anat = root / f"sub-{subject}" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    return anat / f"sub-{subject}_T1w.nii.gz"


def _save(root: Path, subject: str, data: np.ndarray, affine: np.ndarray,
          img: nib.Nifti1Image | None = None) -> Path:
    path = _t1w(root, subject)
    nib.save(img if img is not None else nib.Nifti1Image(data, affine), path)
    return path


#: subject -> the words its one-line error must hold (besides the file's path)
FAILS = {
    "truncated": "truncated",
    "zerobyte": "empty (0 bytes)",
    "brokenlink": "not present",
    "twod": "a 3D volume is needed",
    "thinslab": "too thin to hold a head",
    "complex": "complex voxels",
    "rgb": "RGB voxels",
    "hugeheader": "header claims",
    "shortheader": "truncated",
}
#: subject -> the flag of an image that comes out unchanged
UNCHANGED = {"zeros": "empty_image", "noise": "noise_image", "phantom": "not_a_head"}
DEFACED = ("good", "fourd", "naninf", "oblique", "sheared", "qformsform", "signed", "unit1")


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory: pytest.TempPathFactory, s1_2mm: nib.Nifti1Image) -> Path:
    root = _dataset(tmp_path_factory.mktemp("bad") / "bids")
    head = np.asanyarray(s1_2mm.dataobj).astype(np.int16)
    aff = s1_2mm.affine
    good = _save(root, "good", head, aff)
    raw = good.read_bytes()
    _t1w(root, "truncated").write_bytes(raw[: len(raw) // 2])
    _t1w(root, "zerobyte").write_bytes(b"")
    os.symlink("../../.git/annex/objects/XX/SHA256E-s1--0.nii.gz", _t1w(root, "brokenlink"))
    _save(root, "twod", head[:, :, 40:41], aff)
    _save(root, "thinslab", head[:, :, 40:44], aff)  # four 2 mm slices: 8 mm
    _save(root, "fourd", np.stack([head, head // 2], -1), aff)
    f = head.astype(np.float32)
    f[0, 0, 0], f[1, 1, 1] = np.nan, np.inf
    _save(root, "naninf", f, aff)
    _save(root, "signed", head.astype(np.float32) - 1000.0, aff)  # air at -1000, not 0
    # an MP2RAGE UNIT1 image: the head in a background of noise spread over the whole range
    _save(root, "unit1", mp2rage_unit1(head.astype(np.float32), nib.affines.voxel_sizes(aff)).astype(np.int16), aff)
    _save(root, "complex", head.astype(np.complex64), aff)
    rgb = np.zeros(head.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.clip(head // 4, 0, 255)
    _save(root, "rgb", rgb, aff)
    _save(root, "zeros", np.zeros_like(head), aff)
    _save(root, "noise", np.random.default_rng(0).integers(0, 1000, head.shape).astype(np.int16), aff)
    i, j, k = np.indices(head.shape)
    _save(root, "phantom", ((i - 40) ** 2 + (j - 50) ** 2 + (k - 45) ** 2 < 900).astype(np.int16) * 500, aff)
    th = np.deg2rad(20)
    rot = np.array([[1, 0, 0], [0, np.cos(th), -np.sin(th)], [0, np.sin(th), np.cos(th)]])
    oblique = aff.copy()
    oblique[:3, :3] = rot @ aff[:3, :3]
    _save(root, "oblique", head, oblique)
    sheared = aff.copy()
    sheared[0, 1] = 0.8
    _save(root, "sheared", head, sheared)
    img = nib.Nifti1Image(head, aff)
    qform = aff.copy()
    qform[:3, 3] += 30
    img.set_qform(qform, 1)
    img.set_sform(aff, 2)
    _save(root, "qformsform", None, aff, img)
    # headers that claim far more voxels than the file holds: absurd, and merely too many
    for subject, dims in (("hugeheader", (30000, 30000, 30000)), ("shortheader", (400, 400, 400))):
        header = bytearray(gzip.decompress(raw))
        struct.pack_into("<8h", header, 40, 3, *dims, 1, 1, 1, 1)
        _t1w(root, subject).write_bytes(gzip.compress(bytes(header)))
    return root


def test_bad_inputs_fail_alone_with_a_clear_message(tmp_path: Path, bad_dataset: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    before = tree_digest(bad_dataset)
    out = tmp_path / "out"
    code = main([str(bad_dataset), str(out), "participant", "--device", "cpu", "--nprocs", "2",
                 "--skip-bids-validation", "--no-progress"])
    log = capsys.readouterr().err
    assert tree_digest(bad_dataset) == before
    assert code == EXIT_RUN_FAILED

    for subject, words in FAILS.items():
        line = next(ln for ln in log.splitlines() if f"sub-{subject}_T1w.nii.gz: failed" in ln)
        assert words in line and f"sub-{subject}_T1w.nii.gz" in line.split(": failed", 1)[1], line
        anat = out / f"sub-{subject}" / "anat"
        # nothing of the run is left but its error log
        assert not anat.exists() or not any(anat.iterdir()), list(anat.iterdir())
        assert (out / "logs" / f"sub-{subject}_T1w_error.log").is_file()

    for subject, flag in UNCHANGED.items():
        side = json.loads(next((out / f"sub-{subject}" / "anat").glob("*_desc-defaced_T1w.json")).read_text())
        assert side["Defacing"]["VoxelsRemoved"] == 0 and flag in side["Defacing"]["QCFlags"], subject
        # not a head: the QC verdict refers it to a person, with the same note
        assert side["Defacing"]["QC"]["Verdict"] == "review" and side["Defacing"]["QC"]["Notes"] == [flag], subject
        a = nib.load(bad_dataset / f"sub-{subject}" / "anat" / f"sub-{subject}_T1w.nii.gz")
        b = nib.load(next((out / f"sub-{subject}" / "anat").glob("*_desc-defaced_T1w.nii.gz")))
        assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))

    for subject in DEFACED:
        anat = out / f"sub-{subject}" / "anat"
        side = json.loads(next(anat.glob("*_desc-defaced_T1w.json")).read_text())
        assert side["Defacing"]["VoxelsRemoved"] > 50_000, subject
        src = nib.load(bad_dataset / f"sub-{subject}" / "anat" / f"sub-{subject}_T1w.nii.gz")
        dfc = nib.load(next(anat.glob("*_desc-defaced_T1w.nii.gz")))
        mask = np.asanyarray(nib.load(next(anat.glob("*_mask.nii.gz"))).dataobj).astype(bool)
        a, b = np.asanyarray(src.dataobj), np.asanyarray(dfc.dataobj)
        # the header as it was (qform and sform apart, oblique and sheared affines kept)
        assert src.header.binaryblock == dfc.header.binaryblock
        if subject == "fourd":
            # every volume loses the first volume's mask
            assert a.ndim == 4 and (b[mask] == 0).all() and np.array_equal(a[~mask], b[~mask])
        elif subject == "unit1":
            # the head found in its noise, and masked as the same head in quiet air is
            good = np.asanyarray(nib.load(next((out / "sub-good" / "anat").glob("*_mask.nii.gz"))).dataobj) > 0
            assert "loud_background" in side["Defacing"]["QCFlags"] and "noise_image" not in side["Defacing"]["QCFlags"]
            assert 2 * np.count_nonzero(mask & good) / (mask.sum() + good.sum()) > 0.8
            assert np.array_equal(a[~mask], b[~mask])
        elif subject == "signed":
            # taken for the head it is, and removed voxels take the image's air, not 0
            assert "not_a_head" not in side["Defacing"]["QCFlags"] and (b[mask] == a.min()).all()
            assert np.array_equal(a[~mask], b[~mask])
        else:
            assert np.array_equal(a[~mask], b[~mask], equal_nan=True)
    # a good subject's mask does not depend on its affine: the voxels are the same
    masks = [np.asanyarray(nib.load(next((out / f"sub-{s}" / "anat").glob("*_mask.nii.gz"))).dataobj)
             for s in ("good", "oblique", "qformsform")]
    assert all(np.array_equal(masks[0], m) for m in masks[1:])
    assert not list(out.rglob(".*.nii.gz"))  # no temporaries


def _tree_ok(bids: Path, out: Path, subjects: list[str]) -> dict[str, bytes]:
    """Every subject's outputs complete and valid; their voxel files' bytes (uncompressed:
    a gzip header holds a time stamp)."""
    found = {}
    for s in subjects:
        anat = out / f"sub-{s}" / "anat"
        side = json.loads(next(anat.glob("*_desc-defaced_T1w.json")).read_text())
        assert side["Defacing"]["VoxelsRemoved"] > 50_000
        for p in sorted(anat.glob("*.nii.gz")):
            found[f"{s}/{p.name}"] = gzip.decompress(p.read_bytes())
        assert (out / f"sub-{s}.html").is_file()
    assert not list(out.rglob(".*.nii.gz")) and not list(out.rglob(".*.json"))
    return found


def _heads(tmp_path: Path, s1_2mm: nib.Nifti1Image, subjects: list[str]) -> Path:
    root = _dataset(tmp_path / "bids")
    head = np.asanyarray(s1_2mm.dataobj).astype(np.int16)
    for n, s in enumerate(subjects):
        # the same head, each with its own noise
        noisy = head + np.random.default_rng(n).integers(0, 5, head.shape).astype(np.int16)
        _save(root, s, noisy, s1_2mm.affine)
    return root


def _cli(bids: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bids_deface.cli.run", str(bids), str(out), "participant", "--device", "cpu",
            "--nprocs", "1", "--skip-bids-validation", "--no-progress", *extra]


def test_killed_run_restarts_to_the_same_outputs(tmp_path: Path, s1_2mm: nib.Nifti1Image,
                                                 validator: str) -> None:
    subjects = ["01", "02", "03"]
    bids = _heads(tmp_path, s1_2mm, subjects)
    before = tree_digest(bids)
    reference = tmp_path / "reference"
    assert subprocess.run(_cli(bids, reference), capture_output=True).returncode in FINISHED
    expected = _tree_ok(bids, reference, subjects)

    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(bids, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    # SIGKILL while the first run writes its outputs (a temporary file is there) or, at the
    # latest, once its image is in place and its sidecar not yet
    first = out / "sub-01" / "anat"
    while time.monotonic() < deadline and proc.poll() is None:
        if first.is_dir() and any(p.name.startswith(".") or p.name.endswith("_T1w.nii.gz")
                                  for p in first.iterdir()):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # a temporary the kill may have left, and one planted for the second run
    (out / "sub-02" / "anat").mkdir(parents=True, exist_ok=True)
    (out / "sub-02" / "anat" / ".sub-02_desc-defaced_T1w.killed.nii.gz").write_bytes(b"\x1f\x8b partial")

    assert subprocess.run(_cli(bids, out), capture_output=True).returncode in FINISHED
    assert _tree_ok(bids, out, subjects) == expected
    assert tree_digest(bids) == before
    assert run_validator(out).errors == []


def test_parallel_participants_into_one_output(tmp_path: Path, s1_2mm: nib.Nifti1Image,
                                               validator: str) -> None:
    """Four processes, one participant each (as job-array tasks), into one output folder."""
    subjects = ["01", "02", "03", "04"]
    bids = _heads(tmp_path, s1_2mm, subjects)
    before = tree_digest(bids)
    out = tmp_path / "out"
    procs = [subprocess.Popen(_cli(bids, out, "--participant-label", s), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for s in subjects]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode in FINISHED, err.decode()
    _tree_ok(bids, out, subjects)
    assert tree_digest(bids) == before
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert len(list((out / "logs").glob("bids-deface_participant_*.log"))) == 4
    assert main([str(bids), str(out), "group"]) == EXIT_OK
    rows = (out / "group.tsv").read_text().splitlines()[1:]
    assert len(rows) == 4 and all("\tok\t" in r for r in rows)
    assert run_validator(out).errors == []


def test_read_only_input_as_an_unprivileged_user(s1_2mm: nib.Nifti1Image) -> None:
    """A dataset nobody may write to (as on a read-only share), defaced by a user who does
    not own it: every run completes and the input is untouched. Root ignores permissions,
    so as root the app runs as ``nobody`` (``setpriv``)."""
    import shutil
    import stat
    import tempfile

    # pytest's own temporary folders are private to their owner: this one is not
    top = Path(tempfile.mkdtemp(prefix="bids-deface-ro-"))
    try:
        top.chmod(0o755)
        bids = _heads(top, s1_2mm, ["01", "02"])
        out, home = top / "out", top / "home"
        for path in (out, home):
            path.mkdir()
        env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "MPLCONFIGDIR": str(home)}
        prefix: list[str] = []
        if os.geteuid() == 0:
            for path in (out, home):
                os.chown(path, 65534, 65534)
            prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
            reach = subprocess.run(prefix + [sys.executable, "-c", "import bids_deface.workflow"],
                                   capture_output=True, env=env, cwd=Path(__file__).resolve().parents[2])
            if reach.returncode != 0:
                pytest.skip("the checkout or its venv cannot be read by an unprivileged user here")
        for path in [bids, *bids.rglob("*")]:
            mode = path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
            path.chmod(mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH |
                       (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH if path.is_dir() else 0))
        before = tree_digest(bids)
        user = subprocess.run(prefix + ["id", "-u"], capture_output=True, text=True).stdout.strip()
        assert user != "0"
        # the app cannot write into the input, even if it tried
        denied = subprocess.run(prefix + ["touch", str(bids / "sub-01" / "anat" / "probe")], capture_output=True)
        assert denied.returncode != 0
        proc = subprocess.run(prefix + _cli(bids, out), capture_output=True, text=True, env=env,
                              cwd=Path(__file__).resolve().parents[2])
        assert proc.returncode in FINISHED, proc.stderr[-3000:]
        _tree_ok(bids, out, ["01", "02"])
        assert tree_digest(bids) == before
    finally:
        for path in [top, *top.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(top, ignore_errors=True)


def test_not_bids_and_output_inside_the_input_are_refused(tmp_path: Path, s1_2mm: nib.Nifti1Image,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A folder of images that is not a BIDS dataset, and an output folder inside the input
    (outside its ``derivatives/``): one clear line each, nothing written, input untouched."""
    loose = tmp_path / "scans"
    loose.mkdir()
    nib.save(s1_2mm, loose / "head.nii.gz")
    before = tree_digest(loose)
    code = main([str(loose), str(tmp_path / "out1"), "participant", "--skip-bids-validation", "--no-progress"])
    err = capsys.readouterr().err
    assert code != EXIT_OK and f"{loose} is not a BIDS dataset" in err
    assert tree_digest(loose) == before

    bids = _heads(tmp_path, s1_2mm, ["01"])
    before = tree_digest(bids)
    inside = bids / "sub-01" / "defaced"
    code = main([str(bids), str(inside), "participant", "--skip-bids-validation", "--no-progress"])
    err = capsys.readouterr().err
    assert code != EXIT_OK and "lies inside the input dataset" in err
    assert not inside.exists() and tree_digest(bids) == before


def test_upload_leaves_out_images_judged_not_heads(tmp_path: Path, s1_2mm: nib.Nifti1Image,
                                                   validator: str) -> None:
    """``--output-layout raw``: an image left unchanged as noise is not copied into the
    upload (a head the judgement missed would go out with its face); the head in loud
    noise (an MP2RAGE UNIT1 image) is found, defaced and uploaded."""
    root = _dataset(tmp_path / "bids")
    head = np.asanyarray(s1_2mm.dataobj).astype(np.int16)
    aff = s1_2mm.affine
    _save(root, "good", head, aff)
    _save(root, "noise", np.random.default_rng(0).integers(0, 1000, head.shape).astype(np.int16), aff)
    unit1 = mp2rage_unit1(head.astype(np.float32), nib.affines.voxel_sizes(aff)).astype(np.int16)
    _save(root, "unit1", unit1, aff)
    before = tree_digest(root)
    up = tmp_path / "upload"
    code = main([str(root), str(up), "participant", "--device", "cpu", "--nprocs", "2", "--output-layout", "raw",
                 "--no-progress"])
    assert code in FINISHED and tree_digest(root) == before
    assert not (up / "sub-noise").exists()
    excluded = (up / "derivatives" / "bids-deface" / "excluded.tsv").read_text()
    assert "sub-noise/anat/sub-noise_T1w.nii.gz\tleft unchanged as noise (noise_image)" in excluded
    for subject in ("good", "unit1"):
        rel = f"sub-{subject}/anat/sub-{subject}_T1w.nii.gz"
        a = np.asanyarray(nib.load(root / rel).dataobj)
        b = np.asanyarray(nib.load(up / rel).dataobj)
        assert np.count_nonzero(a != b) > 50_000, subject  # defaced in the upload
    assert main([str(root), str(up), "group", "--output-layout", "raw"]) in FINISHED
    assert run_validator(up).errors == []
