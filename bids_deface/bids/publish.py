"""The OpenNeuro layout (``--output-layout raw``): a copy of the input dataset, ready to
upload, in which every defaced image replaces its source under the source's own name.

What the copy holds:

* every file of the input but ``derivatives/`` and ``sourcedata/`` (their images may show
  faces) and hidden files: copies, never links, so that nothing done to the upload
  (an edit in place, DataLad making its files read-only) reaches the input; block clones
  where the file system can make them (btrfs, XFS: no space used until one side changes);
* each defaced run's image (``.nii`` or ``.nii.gz``, as the source was) in place of the
  source's; no other image of an ``anat/`` folder — a selected run that failed, or an image
  of a suffix that was not selected — is copied: they are listed in
  ``derivatives/bids-deface/excluded.tsv`` with the reason;
* JSON sidecars and ``scans.tsv`` / ``sessions.tsv`` / ``participants.tsv`` de-identified
  (:mod:`bids_deface.bids.scrub`), rows of excluded images dropped from ``scans.tsv``;
* ``derivatives/bids-deface/``: the face masks with their sidecars, each defaced image's
  sidecar (its QC record: the ``Defacing`` object, less what was computed from the image
  before defacing: :data:`NOT_UPLOADED`), a ``dataset_description.json`` and
  ``excluded.tsv``; the workflow adds there the reports of the defaced images alone and,
  at the group level, ``group.tsv`` and ``group.html``. The reports with the images
  before defacing (which show faces) and the logs (which hold the date-shift key) stay in
  the QC folder, outside this tree.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..io import atomic_path
from .scrub import Scrubber

__all__ = ["RawCopy", "write_raw_copy", "for_upload", "without_input_dir", "EXCLUDED_TSV", "SKIPPED_FOLDERS",
           "NOT_UPLOADED"]

logger = logging.getLogger(__name__)

EXCLUDED_TSV = "excluded.tsv"
#: Top-level folders of the input that are not copied (their images may show faces).
SKIPPED_FOLDERS = ("derivatives", "sourcedata")
_TABLES = ("_scans.tsv", "_sessions.tsv", "participants.tsv")
#: Keys of a sidecar's ``Defacing`` object left out of the upload: the SHA-256 of the image
#: before defacing, which would let whoever holds that image (or another copy of it, in a
#: dataset that was not defaced) link the upload to it. The QC folder's sidecar keeps it
#: (reruns compare it with the input).
NOT_UPLOADED = ("InputSHA256",)
_IMAGE = (".nii", ".nii.gz")


@dataclass
class RawCopy:
    """What :func:`write_raw_copy` did."""

    root: Path
    replaced: list[str] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)
    copied: int = 0


#: Linux's ioctl that makes a file share another's blocks, copy-on-write (``FICLONE``).
_FICLONE = 0x40049409


def _copy_input_file(src: Path, dest: Path) -> None:
    """``dest`` as a copy of the input file ``src`` (its content, times and mode; a block
    clone where the file system can make one), replaced atomically; nothing to do when it
    already is such a copy (same size and modification time, not the same file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    st = src.stat()
    if dest.is_file() and not dest.is_symlink() and not os.path.samefile(src, dest):
        here = dest.stat()
        if (here.st_size, here.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
            return
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.copy")
    tmp.unlink(missing_ok=True)
    try:
        if not _clone(src, tmp):
            shutil.copyfile(src, tmp)
        shutil.copystat(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _clone(src: Path, dest: Path) -> bool:
    """Whether ``dest`` could be made a block clone of ``src`` (copy-on-write)."""
    try:
        import fcntl
    except ImportError:  # not on Windows
        return False
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
        except OSError:  # not Linux, or a file system without clones
            return False
    return True


def _link_or_copy(src: Path, dest: Path) -> None:
    """``dest`` as a hard link to ``src`` (a copy where links are not allowed), replaced
    atomically; nothing to do when it already is one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and os.path.samefile(src, dest):
        return
    # one temporary name per process: job-array tasks write the top-level files at once
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, tmp)
    try:
        os.replace(tmp, dest)
    finally:
        # (renaming a link onto another link of the same file does nothing)
        tmp.unlink(missing_ok=True)


def _subject(rel: str) -> str | None:
    first = rel.split("/", 1)[0]
    return first[4:] if first.startswith("sub-") else None


def _is_image(name: str) -> bool:
    return name.endswith(_IMAGE)


def _stem(name: str) -> str:
    return name[:-7] if name.endswith(".nii.gz") else name[:-4] if name.endswith(".nii") else name.rsplit(".", 1)[0]


def write_raw_copy(bids_dir: Path, root: Path, defaced: dict[str, Path], failed: dict[str, str],
                   derived: Iterable[Path], scrubber: Scrubber,
                   derivative_description: dict[str, Any], subjects: Iterable[str] | None = None,
                   sessions: Iterable[str] | None = None) -> RawCopy:
    """Write the upload tree under ``root`` (see the module docstring).

    Parameters
    ----------
    defaced : dict
        Dataset-relative path of each defaced source image -> its defaced image.
    failed : dict
        Dataset-relative path of each selected image that could not be defaced -> why.
    derived : iterable of Path
        Files of the QC folder copied to ``derivatives/bids-deface/`` (masks, their sidecars,
        the defaced images' sidecars), at the same place below their ``sub-*`` folder.
    subjects : iterable of str, optional
        Only these subjects' folders are written (with the dataset's top-level files): an
        invocation with ``--participant-label``, e.g. one task of a job array, writes its
        own subjects and leaves the others' to their tasks. ``excluded.tsv`` keeps the
        rows of the other subjects.
    sessions : iterable of str, optional
        Likewise for ``--session-label``: only these sessions' folders are written.
    """
    bids_dir, root = Path(bids_dir), Path(root)
    only = set(subjects) if subjects is not None else None
    only_ses = set(sessions) if sessions is not None else None

    def mine(rel: str) -> bool:
        """Whether ``rel`` belongs to this invocation's subjects and sessions."""
        parts = rel.split("/")
        if only is not None and _subject(rel) is not None and _subject(rel) not in only:
            return False
        return not (only_ses is not None and len(parts) > 2 and parts[1].startswith("ses-")
                    and parts[1][4:] not in only_ses)

    copy = RawCopy(root)
    excluded_rel: set[str] = set()
    files = []
    for path in sorted(bids_dir.rglob("*")):
        rel = path.relative_to(bids_dir).as_posix()
        parts = rel.split("/")
        if parts[0] in SKIPPED_FOLDERS or any(p.startswith(".") for p in parts):
            continue
        if path.is_dir():
            continue
        if not mine(rel):
            continue
        files.append((path, rel))
    for path, rel in files:
        if not _is_image(rel):
            continue
        if rel in defaced:
            continue
        if rel in failed:
            copy.excluded.append((rel, failed[rel]))
        elif "/anat/" in f"/{rel}":
            copy.excluded.append((rel, "not selected for defacing"))
        else:
            continue
        excluded_rel.add(rel)
    excluded_stems = {_stem(r) for r in excluded_rel}
    image_stems = {_stem(r) for _, r in files if _is_image(r)}

    for path, rel in files:
        dest = root / rel
        subject = _subject(rel)
        name = path.name
        if rel in excluded_rel or (name.endswith(".json") and _stem(rel) in excluded_stems):
            continue
        if rel in defaced:
            _write_defaced(defaced[rel], dest)
            copy.replaced.append(rel)
        elif name.endswith(".json") and name != "dataset_description.json" and not _is_table_sidecar(name):
            meta = json.loads(path.read_text())
            out = scrubber.sidecar(meta, subject or "", rel) if isinstance(meta, dict) else meta
            # the record goes into the images' own sidecars (in an inherited file too, it
            # would be defined twice)
            if isinstance(out, dict) and _stem(rel) not in image_stems:
                out.pop("DeidentificationMethod", None)
                out.pop("DeidentificationMethodCodeSequence", None)
            _write_text(dest, json.dumps(out, indent=2) + "\n")
        elif name.endswith(_TABLES):
            text = path.read_text()
            if name.endswith("_scans.tsv"):
                text = _drop_rows(text, rel, excluded_rel)
            _write_text(dest, scrubber.table(text, subject, rel))
        else:
            if not path.exists():  # a link to content that is not there
                copy.excluded.append((rel, "content not present"))
                continue
            _copy_input_file(path, dest)
            copy.copied += 1
    deriv = root / "derivatives" / "bids-deface"
    for src in derived:
        subject_root = next(p for p in src.parents if p.name.startswith("sub-"))
        dest = deriv / src.relative_to(subject_root.parent)
        meta = json.loads(src.read_text()) if src.name.endswith(".json") else None
        shared = for_upload(meta) if isinstance(meta, dict) else meta
        if shared is not meta:
            _write_text(dest, json.dumps(shared, indent=2) + "\n")
        else:
            _link_or_copy(src, dest)
    _write_text(deriv / "dataset_description.json", json.dumps(derivative_description, indent=2) + "\n")
    _update_excluded(deriv / EXCLUDED_TSV, copy.excluded, None if only is None and only_ses is None else mine)
    return copy


def for_upload(sidecar: dict[str, Any]) -> dict[str, Any]:
    """``sidecar`` as the upload holds it: its ``Defacing`` object without the keys of
    :data:`NOT_UPLOADED`.

    >>> for_upload({"EchoTime": 0.003, "Defacing": {"VoxelsRemoved": 5, "InputSHA256": "ab"}})
    {'EchoTime': 0.003, 'Defacing': {'VoxelsRemoved': 5}}
    """
    defacing = sidecar.get("Defacing")
    if not isinstance(defacing, dict) or not any(k in defacing for k in NOT_UPLOADED):
        return sidecar
    return {**sidecar, "Defacing": {k: v for k, v in defacing.items() if k not in NOT_UPLOADED}}


def without_input_dir(text: str | None, bids_dir: Path) -> str | None:
    """``text`` (an error message) as the upload shows it: the input folder's location
    taken out of the paths in it, which are then relative to the dataset.

    >>> without_input_dir("cannot read /data/site-x/bids/sub-01/anat/sub-01_T1w.nii.gz", Path("/data/site-x/bids"))
    'cannot read sub-01/anat/sub-01_T1w.nii.gz'
    """
    if not text:
        return text
    for where in sorted({str(Path(bids_dir)), str(Path(bids_dir).absolute()), str(Path(bids_dir).resolve())},
                        key=len, reverse=True):
        text = text.replace(where.rstrip("/") + "/", "")
    return text


def _update_excluded(path: Path, rows: list[tuple[str, str]], mine: Any = None) -> None:
    """Write ``excluded.tsv``: these rows, and, when only some subjects or sessions were
    copied (``mine`` tells which paths), the others' rows already there (read and written
    under a lock: parallel tasks)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    # the lock lives beside the upload tree, not in it
    root = path.parents[2]
    with open(root.parent / f".{root.name}.excluded.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kept = []
        if mine is not None and path.is_file():
            kept = [line for line in path.read_text().splitlines()[1:] if not mine(line.split("\t", 1)[0])]
        lines = ["path\treason", *sorted(set(kept) | {f"{p}\t{r}" for p, r in rows})]
        _write_text(path, "\n".join(lines) + "\n")


def _is_table_sidecar(name: str) -> bool:
    return name in ("participants.json", "sessions.json", "scans.json") or name.endswith(
        ("_scans.json", "_sessions.json"))


def _drop_rows(text: str, rel: str, excluded: set[str]) -> str:
    lines = text.splitlines()
    if not lines:
        return text
    base = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
    keep = [lines[0]] + [ln for ln in lines[1:] if base + ln.split("\t", 1)[0] not in excluded]
    return "\n".join(keep) + "\n"


def _write_text(dest: Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def _write_defaced(src: Path, dest: Path) -> None:
    """The defaced image under the source's name: as it is for ``.nii.gz``, uncompressed
    for a ``.nii`` source."""
    if dest.name.endswith(".nii.gz") or not src.name.endswith(".gz"):
        _link_or_copy(src, dest)
        return
    with atomic_path(dest) as tmp, gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)

