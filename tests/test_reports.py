"""Reports: surface renders, mosaics and the HTML of subject reports and the group index."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_deface.reports import ReportRun, write_group_index, write_subject_report
from bids_deface.reports.figures import make_run_figures, render_pair
from bids_deface.reports.mosaic import slice_mosaic
from bids_deface.reports.volume import head_threshold, mask_to_ras, to_ras

SHAPE = (40, 48, 40)  # x (L->R), y (P->A), z (I->S) in RAS voxel order
CENTRE = np.array([19.5, 22.0, 19.5])
NOSE = (19, 40, 17)  # voxel of the nose tip region (x, y, z), in front of the ellipsoid


def _head(nose: bool = True, seed: int = 0) -> np.ndarray:
    """A noisy ellipsoid 'head' with a box 'nose' sticking out of its front."""
    i, j, k = np.indices(SHAPE, dtype=np.float32)
    r = ((i - CENTRE[0]) / 15) ** 2 + ((j - CENTRE[1]) / 17) ** 2 + ((k - CENTRE[2]) / 16) ** 2
    data = np.where(r <= 1.0, 100.0, 0.0).astype(np.float32)
    if nose:
        x, y, z = NOSE
        data[x - 2 : x + 3, 36 : y + 6, z - 3 : z + 3] = 100.0
    rng = np.random.default_rng(seed)
    data += rng.normal(0, 3, SHAPE).astype(np.float32)
    return np.clip(data, 0, None).astype(np.int16)


def _face_mask() -> np.ndarray:
    """Nose plus the air in front of it (label 1)."""
    mask = np.zeros(SHAPE, np.uint8)
    x, y, z = NOSE
    mask[x - 4 : x + 5, 37:, z - 5 : z + 5] = 1
    return mask


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Source, defaced and mask NIfTIs stored LAS (as many scanners write them)."""
    root = tmp_path_factory.mktemp("report_data")
    las = np.diag([-1.0, 1.0, 1.0, 1.0])
    las[0, 3] = SHAPE[0] - 1  # keep the same world box

    def save(arr: np.ndarray, name: str) -> Path:
        path = root / name
        # flip x so that the file is LAS; nibabel's canonical view flips it back
        nib.Nifti1Image(arr[::-1].copy(), las).to_filename(path)
        return path

    head = _head()
    mask = _face_mask()
    defaced = np.where(mask > 0, 0, head).astype(np.int16)
    return {
        "source": save(head, "sub-01_T1w.nii.gz"),
        "defaced": save(defaced, "sub-01_desc-defaced_T1w.nii.gz"),
        "mask": save(mask, "sub-01_desc-face_mask.nii.gz"),
        "nonose": save(_head(nose=False), "sub-01_acq-nonose_T1w.nii.gz"),
    }


def _load(path: Path):
    return to_ras(nib.load(str(path)))


# --------------------------------------------------------------------------- renderer


def _pixel(render, view: str, row: int, col: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """The render's pixel at the centre of the 1 mm voxel ``(row, col)`` of a view (the
    surfaces are rendered on a grid of their own, ``reports.volume.RENDER_MM``)."""
    row_mm, col_mm = render.pixel_mm[view]
    return int((row + 0.5) / row_mm), int((col + 0.5) / col_mm)


def test_render_shows_nose_before_and_not_after(files: dict[str, Path]) -> None:
    before, after = render_pair(_load(files["source"]), _load(files["defaced"]))
    plain, _ = render_pair(_load(files["nonose"]), None, threshold=before.threshold)
    assert after is not None
    x, _, z = NOSE
    # front view: superior up, subject's R left
    row, col = _pixel(before, "front", SHAPE[2] - 1 - z, SHAPE[0] - 1 - x)
    d_nose = before.depth["front"][row, col]
    d_plain = plain.depth["front"][row, col]
    d_after = after.depth["front"][row, col]
    # the nose sticks out about 6 mm in front of the ellipsoid
    assert d_plain - d_nose > 4.0
    # after defacing the ray goes past where the nose was, down to the cut face
    assert d_after > d_nose + 4.0
    assert d_after >= d_plain - 1.0
    # far from the nose, defacing changes nothing
    assert before.depth["front"][5, col] == pytest.approx(after.depth["front"][5, col], abs=1e-3)
    # and the shaded images differ at the nose
    assert int(before.images["front"][row, col]) != int(after.images["front"][row, col])


def test_profiles_face_the_right_way(files: dict[str, Path]) -> None:
    before, _ = render_pair(_load(files["source"]), None)
    for view, side in (("left", "first"), ("right", "last")):
        row = _pixel(before, view, SHAPE[2] - 1 - NOSE[2], 0)[0]
        above = _pixel(before, view, SHAPE[2] - 1 - NOSE[2] - 12, 0)[0]  # a row above the nose
        hit = np.isfinite(before.depth[view])
        cols = np.flatnonzero(hit[row])
        plain_cols = np.flatnonzero(hit[above])
        if side == "first":  # left profile: face on the viewer's left
            assert cols[0] < plain_cols[0] - 2
        else:  # right profile: face on the viewer's right
            assert cols[-1] > plain_cols[-1] + 2
    # no ray hits the air above the head in the front view
    assert not np.isfinite(before.depth["front"][0]).any()


def test_head_threshold_between_air_and_tissue() -> None:
    t = head_threshold(_head())
    assert 10 < t < 90


def test_mosaic_overlays_mask_in_colour(files: dict[str, Path]) -> None:
    src_img = nib.load(str(files["source"]))
    src = to_ras(src_img)
    labels = mask_to_ras(nib.load(str(files["mask"])), src_img)
    assert labels.data[NOSE] == 1  # LAS file came back in RAS
    t = head_threshold(src.data)
    plain = slice_mosaic(src, "sagittal", t, None, n_slices=3, height=60)
    over = slice_mosaic(src, "sagittal", t, labels, n_slices=3, height=60)
    assert plain.shape == over.shape and plain.ndim == 3
    red = (over[..., 0].astype(int) - over[..., 2].astype(int)) > 60
    assert red.any() and not ((plain[..., 0].astype(int) - plain[..., 2]) > 60).any()


def test_mask_on_another_grid_is_resampled(files: dict[str, Path]) -> None:
    src_img = nib.load(str(files["source"]))
    small = nib.Nifti1Image(np.ones((10, 12, 10), np.uint8), np.diag([4.0, 4.0, 4.0, 1.0]))
    labels = mask_to_ras(small, src_img)
    assert labels.shape == to_ras(src_img).shape
    assert labels.data.max() == 1


# --------------------------------------------------------------------------- subject report


SIDECAR = {
    "Defacing": {
        "ToolVersion": "0.1.0",
        "ModelName": "Dataset801_FaceEars",
        "ModelSHA256": "ab" * 32,
        "Device": "cpu",
        "Seconds": 3.27,
        "VoxelsRemoved": 123456,
        "VolumeRemovedML": 98.7,
        "GuardVoxels": 42,
        "Flags": ["ears-outside-fov"],
        "Comment": "<script>alert('x')</script>",
    }
}


@pytest.fixture(scope="module")
def subject_html(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("report") / "sub-01.html"
    runs = [
        ReportRun(
            name="sub-01_T1w.nii.gz",
            source=files["source"],
            defaced=files["defaced"],
            mask=files["mask"],
            sidecar=SIDECAR,
            status="ok",
            error=None,
            flags=("guard-removed-voxels",),
        ),
        ReportRun(
            name="sub-01_FLAIR.nii.gz",
            source=None,
            defaced=None,
            mask=None,
            sidecar={},
            status="failed",
            error='Traceback (most recent call last):\nValueError: bad <img src="x">',
            flags=(),
        ),
    ]
    write_subject_report(out, "01", runs)
    return out.read_text(encoding="utf-8")


def test_subject_report_is_self_contained(subject_html: str) -> None:
    assert "http://" not in subject_html and "https://" not in subject_html
    sources = re.findall(r'\bsrc="([^"]*)"', subject_html)
    # 2 x 3 surface renders and 3 mosaics of the ok run, all inline PNGs
    assert len(sources) == 9
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    hrefs = re.findall(r'\bhref="([^"]*)"', subject_html)
    assert hrefs and all(h.startswith("#") for h in hrefs)
    assert "<link" not in subject_html and "@import" not in subject_html
    assert "<script" not in subject_html.lower()


def test_subject_report_says_it_shows_the_face(subject_html: str) -> None:
    # the renders "before" show the subject's face: the page must say it is not for publishing
    assert "Not for sharing." in subject_html
    assert subject_html.index("Not for sharing.") < subject_html.index("data:image/png")


def test_subject_report_escapes_untrusted_text(subject_html: str) -> None:
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in subject_html
    assert "&lt;img src=&#34;x&#34;&gt;" in subject_html  # the error text, escaped


def test_subject_report_shows_runs_numbers_and_flags(subject_html: str) -> None:
    for text in (
        "sub-01",
        "sub-01_T1w.nii.gz",
        "sub-01_FLAIR.nii.gz",
        "123,456",
        "98.7 mL",
        "3.3 s",
        "Dataset801_FaceEars",
        "ab" * 32,
        "guard-removed-voxels",
        "ears-outside-fov",
        "Defacing failed",
        "ValueError: bad",
    ):
        assert text in subject_html, text
    assert subject_html.count('class="flag"') >= 4  # in the summary and the run's banner


def test_missing_defaced_image_becomes_a_note(files: dict[str, Path]) -> None:
    figs = make_run_figures(files["source"], files["source"].with_name("gone.nii.gz"), None)
    assert set(figs.renders) == {"before"}
    assert any("not found" in n for n in figs.notes)
    assert set(figs.mosaics) == {"axial", "sagittal", "coronal"}


# --------------------------------------------------------------------------- group index


def test_group_index_orders_problems_first(tmp_path: Path) -> None:
    base = dict(session="1", voxels_removed=10, ml_removed=0.5, guard_voxels=0, seconds=1.0)
    rows = [
        dict(base, subject="01", name="a_ok.nii.gz", status="ok", flags=[], report="sub-01.html",
             error=None),
        dict(base, subject="02", name="b_flagged.nii.gz", status="ok", flags=["odd-fov"],
             report="sub-02.html", error=None),
        dict(base, subject="03", name="c_failed.nii.gz", status="failed", flags=[],
             report="javascript:alert(1)", error="Traceback\nRuntimeError: <boom>"),
        dict(base, subject="04", name="d_skipped.nii.gz", status="skipped", flags=(),
             report="sub-04.html", error="already defaced"),
        dict(base, subject="05", name="e_stale.nii.gz", status="stale", flags=["input_changed"],
             report=None, error=""),
    ]
    out = tmp_path / "index.html"
    write_group_index(out, rows)
    html = out.read_text(encoding="utf-8")
    order = [html.index(n) for n in ("c_failed", "e_stale", "b_flagged", "d_skipped", "a_ok")]
    assert order == sorted(order)
    assert "javascript:" not in html
    assert 'href="sub-02.html"' in html
    assert "RuntimeError: &lt;boom&gt;" in html
    assert "http://" not in html and "https://" not in html
    assert "ses-1" in html and "odd-fov" in html
