"""Reading and atomic writing of NIfTI files that keep the input header bit for bit."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener
from nibabel.volumeutils import array_to_file

__all__ = ["load_nifti", "held_in_memory", "save_raw_like", "save_mask_like", "atomic_path",
           "remove_stale_temporaries", "sha256_file", "MAX_VOXELS"]


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's content (links are followed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fobj:
        for chunk in iter(lambda: fobj.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
        fd, name = tempfile.mkstemp(prefix=_temporary_prefix(self.path), suffix=suffix,
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


def _temporary_prefix(path: Path) -> str:
    return f".{Path(path).name.split('.')[0]}."


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files that an interrupted :func:`atomic_path` of ``path`` left
    (a process killed mid-write); returns them. Only ``path``'s own temporaries match."""
    path = Path(path)
    suffix = "".join(path.suffixes)
    stale = [p for p in path.parent.glob(_temporary_prefix(path) + "*")
             if p.is_file() and p.name.endswith(suffix) and p != path]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_path(path: Path) -> _Atomic:
    """``with atomic_path(p) as tmp: write(tmp)`` makes ``p`` appear complete or not at all."""
    return _Atomic(path)


#: The most voxels an input may claim (8 × 1024³: a 0.1 mm whole head; more is a broken header).
MAX_VOXELS = 8 * 1024 ** 3
#: The least field of view in mm along each voxel axis: a thinner image holds a few slices
#: of a head (the model sees heads on 3 mm voxels, the pose on 4 mm blocks), too little to
#: find its face beside its brain, and is refused rather than passed on with its face.
MIN_FIELD_MM = 10.0


def load_nifti(path: Path) -> nib.Nifti1Image:
    """Load a NIfTI-1 or NIfTI-2 file; raise ``ValueError`` naming the file and the reason
    when it is unusable.

    Checked before any voxel is read: the file is not empty (a placeholder of content not
    downloaded), it is a NIfTI image of 3 dimensions (or 4, volumes last) and of real
    scalar voxels (not complex, not RGB), at least ``MIN_FIELD_MM`` across along each voxel
    axis, its header does not claim an absurd size (``MAX_VOXELS``), and the file holds as
    many bytes of voxels as the header says (a ``.nii.gz``: by the uncompressed size its
    gzip trailer records, a whole read confirms a mismatch): truncated files and broken
    headers fail here, with a message, instead of deep in the pipeline or with a memory
    error.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if size == 0:
        raise ValueError(f"{path} is empty (0 bytes): a placeholder of content that was not downloaded?")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken files
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path} is not a NIfTI image")
    shape = img.shape
    if len(shape) < 3 or min(shape[:3]) < 2:
        raise ValueError(f"{path} has shape {shape}: a 3D volume is needed")
    if len(shape) > 4:
        raise ValueError(f"{path} has shape {shape}: 3D or 4D (volumes last) images only")
    dtype = img.header.get_data_dtype()
    if dtype.fields is not None:
        raise ValueError(f"{path} holds RGB voxels: a structural image of real values is needed")
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"{path} holds complex voxels ({dtype}): a structural image of real values is "
                         "needed (its magnitude)")
    sides = nib.affines.voxel_sizes(img.affine)
    field = [int(n) * float(z) for n, z in zip(shape[:3], sides)]
    if min(field) < MIN_FIELD_MM:
        axis = int(np.argmin(field))
        raise ValueError(f"{path} covers only {field[axis]:.1f} mm along its voxel axis {axis} "
                         f"({shape[axis]} voxels of {sides[axis]:.2f} mm): too thin to hold a head "
                         f"(at least {MIN_FIELD_MM:g} mm are needed)")
    voxels = int(np.prod([int(n) for n in shape], dtype=object))
    if voxels > MAX_VOXELS:
        raise ValueError(f"{path}: the header claims {'×'.join(map(str, shape))} voxels "
                         f"({voxels:.3g}), more than any head image holds: a broken header?")
    _check_length(path, img, voxels * dtype.itemsize)
    return img


def _check_length(path: Path, img: nib.Nifti1Image, data_bytes: int) -> None:
    """Raise ``ValueError`` when ``path`` holds fewer bytes of voxels than its header says."""
    offset = int(getattr(img.dataobj, "offset", 0) or 0)
    expected = offset + data_bytes
    if path.name.endswith(".gz"):
        with open(path, "rb") as fobj:
            fobj.seek(-4, os.SEEK_END)
            recorded = int.from_bytes(fobj.read(4), "little")  # uncompressed size mod 2**32
        if recorded == expected % 2 ** 32:
            return
        # not a single gzip member of that size (truncated, or several members): read it
        try:
            with ImageOpener(str(path), "rb") as fobj:
                length = 0
                while chunk := fobj.read(1 << 24):
                    length += len(chunk)
        except Exception as exc:  # EOFError, zlib.error, OSError
            raise ValueError(f"cannot read {path}: the compressed file is truncated or corrupt ({exc})") from exc
    else:
        length = path.stat().st_size
    if length < expected:
        raise ValueError(f"{path} holds {length} bytes, its header needs {expected}: "
                         "the file is truncated (or its header is wrong)")


def held_in_memory(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """``img`` (as :func:`load_nifti` gives it) with its file read once, uncompressed, and
    held in memory: every later read of its voxels copies them from there instead of
    reading (and, for a ``.nii.gz``, decompressing) the file again. The image keeps its
    file name, so that :func:`save_raw_like` copies the header block from the file."""
    path = img.get_filename()
    try:
        with ImageOpener(path, "rb") as fobj:
            content = fobj.read()
    except (OSError, EOFError) as exc:  # gzip and zlib errors are OSErrors
        raise ValueError(f"cannot read {path}: {exc}") from exc
    holder = nib.FileHolder(filename=path, fileobj=io.BytesIO(content))
    return type(img).from_file_map({"image": holder, "header": holder})


def save_raw_like(raw: np.ndarray, reference: nib.Nifti1Image, path: Path,
                  header: nib.Nifti1Header | None = None) -> nib.Nifti1Image:
    """Write ``raw`` (stored values) under the unchanged header of ``reference``.

    The header block, its extensions, the data offset, dtype, byte order and scaling are
    copied from ``reference`` as they are; only the voxel data differ. With ``header``
    (e.g. ``reference``'s with its text cleared and no extensions,
    :meth:`bids_deface.bids.scrub.Scrubber.header`) that header is written instead, its
    dtype, byte order and scaling those of ``reference``. The file is written to a
    temporary name and renamed into place.

    Returns the image as written, held in memory: what reading the file back would give.
    """
    if raw.shape != reference.shape:
        raise ValueError(f"data {raw.shape} do not match reference {reference.shape}")
    dtype = reference.header.get_data_dtype()
    source = reference.get_filename()
    offset = getattr(reference.dataobj, "offset", None)
    buf = io.BytesIO()
    if header is None and source and offset is not None and Path(source).exists():
        # the header block and extensions exactly as they are on disk
        with ImageOpener(source, "rb") as fobj:
            buf.write(fobj.read(int(offset)))
    else:
        header = (header if header is not None else reference.header).copy()
        # a loaded image keeps its scaling on the proxy, not in its header
        proxy = reference.dataobj
        if hasattr(proxy, "slope"):
            header.set_slope_inter(float(proxy.slope), float(proxy.inter))
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
    buf.seek(0)
    return type(reference).from_stream(buf)


def save_mask_like(mask: np.ndarray, reference: nib.Nifti1Image, path: Path) -> nib.Nifti1Image:
    """Write a binary uint8 mask on the grid of ``reference`` (same affine, codes, units).
    Returns the image written (its voxels in memory)."""
    img = nib.Nifti1Image(np.asarray(mask, dtype=np.uint8), reference.affine)
    img.set_qform(reference.get_qform(), int(reference.header["qform_code"]))
    img.set_sform(reference.get_sform(), int(reference.header["sform_code"]))
    img.header.set_xyzt_units(*reference.header.get_xyzt_units())
    img.header.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1, 0)
    with atomic_path(Path(path)) as tmp:
        nib.save(img, str(tmp))
    return img
