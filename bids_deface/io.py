"""Reading and atomic writing of NIfTI files that keep the input header bit for bit."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener
from nibabel.volumeutils import array_to_file

__all__ = ["load_nifti", "save_raw_like", "save_mask_like", "atomic_path"]


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a directory's entries) to disk where the system allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # e.g. directories on some network file systems
        pass
    finally:
        os.close(fd)


class _Atomic:
    """Context manager yielding a temporary path that replaces ``path`` on success."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(self.path.suffixes)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name.split('.')[0]}.", suffix=suffix,
                                    dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        assert self.tmp is not None
        if exc_type is None:
            # mkstemp creates 0600 files; outputs are meant to be shared: honour the umask
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)
            # the data reach the disk before the name does: after a crash the path holds
            # the old file or the complete new one, never a truncated one
            _fsync(self.tmp)
            os.replace(self.tmp, self.path)
            _fsync(self.path.parent)
        else:
            self.tmp.unlink(missing_ok=True)


def atomic_path(path: Path) -> _Atomic:
    """``with atomic_path(p) as tmp: write(tmp)`` makes ``p`` appear complete or not at all."""
    return _Atomic(path)


def load_nifti(path: Path) -> nib.Nifti1Image:
    """Load a NIfTI-1 or NIfTI-2 file; raise ``ValueError`` with the reason if it is unusable."""
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken files
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path} is not a NIfTI image")
    if len(img.shape) < 3 or min(img.shape[:3]) < 2:
        raise ValueError(f"{path} has shape {img.shape}: a 3D volume is needed")
    return img


def save_raw_like(raw: np.ndarray, reference: nib.Nifti1Image, path: Path) -> None:
    """Write ``raw`` (stored values) under the unchanged header of ``reference``.

    The header block, its extensions, the data offset, dtype, byte order and scaling are
    copied from ``reference`` as they are; only the voxel data differ. The file is written
    to a temporary name and renamed into place.
    """
    if raw.shape != reference.shape:
        raise ValueError(f"data {raw.shape} do not match reference {reference.shape}")
    header = reference.header
    dtype = header.get_data_dtype()
    source = reference.get_filename()
    offset = getattr(reference.dataobj, "offset", None)
    buf = io.BytesIO()
    if source and offset is not None and Path(source).exists():
        # the header block and extensions exactly as they are on disk
        with ImageOpener(source, "rb") as fobj:
            buf.write(fobj.read(int(offset)))
    else:
        header = header.copy()
        header.set_data_offset(0)
        header.write_to(buf)
        offset = max(buf.tell(), 352)
        header.set_data_offset(offset)
        buf = io.BytesIO()
        header.write_to(buf)
        buf.write(b"\0" * (offset - buf.tell()))
    array_to_file(np.asarray(raw), buf, out_dtype=dtype, offset=int(offset), order="F")
    with atomic_path(Path(path)) as tmp:
        with ImageOpener(str(tmp), "wb") as fobj:
            fobj.write(buf.getbuffer())


def save_mask_like(mask: np.ndarray, reference: nib.Nifti1Image, path: Path) -> None:
    """Write a binary uint8 mask on the grid of ``reference`` (same affine, codes, units)."""
    img = nib.Nifti1Image(np.asarray(mask, dtype=np.uint8), reference.affine)
    img.set_qform(reference.get_qform(), int(reference.header["qform_code"]))
    img.set_sform(reference.get_sform(), int(reference.header["sform_code"]))
    img.header.set_xyzt_units(*reference.header.get_xyzt_units())
    img.header.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1, 0)
    with atomic_path(Path(path)) as tmp:
        nib.save(img, str(tmp))
