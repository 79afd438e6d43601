"""Find the structural runs to deface with pybids.

A run is one image file (``.nii`` or ``.nii.gz``) of the ``anat`` datatype whose suffix is
selected, with all the entities pybids parsed from its name and its metadata after the
BIDS inheritance principle. Links (datalad / git-annex) are listed whether or not their
content is present; a run whose content is missing fails on its own when processed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import FilterError, InvalidDatasetError
from ..settings import DEFAULT_SUFFIXES

__all__ = ["AnatRun", "IMAGE_EXTENSIONS", "load_filters", "discover_runs", "strip_prefix", "annex_key", "annex_sha256"]

logger = logging.getLogger(__name__)

#: Extensions of the images we read.
IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii")

#: Short entity keys accepted in filter files, mapped to pybids' names.
_ENTITY_ALIASES: Mapping[str, str] = {
    "sub": "subject",
    "ses": "session",
    "acq": "acquisition",
    "ce": "ceagent",
    "rec": "reconstruction",
    "dir": "direction",
}


@dataclass(frozen=True)
class AnatRun:
    """One structural image of the input dataset.

    Attributes
    ----------
    path : Path
        Absolute path of the image inside the dataset (links are not resolved).
    relpath : str
        Dataset-relative POSIX path, e.g. ``sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz``.
    entities : mapping of str to str
        pybids entities of the file name, values as written in the name (``run`` keeps its
        zero padding), plus ``suffix``, ``datatype`` and ``extension``.
    metadata : mapping
        Sidecar metadata after inheritance (empty when there is none).
    metadata_error : str or None
        Why the metadata could not be read (the run then fails when processed).
    """

    path: Path
    relpath: str
    entities: Mapping[str, str]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    metadata_error: str | None = None

    @property
    def subject(self) -> str:
        return self.entities["subject"]

    @property
    def session(self) -> str | None:
        return self.entities.get("session")

    @property
    def suffix(self) -> str:
        return self.entities["suffix"]

    @property
    def name(self) -> str:
        """File name of the source image."""
        return self.path.name

    @property
    def content_present(self) -> bool:
        """False for a link whose target is missing (annexed content not fetched)."""
        return self.path.exists()


_ANNEX_SHA256 = re.compile(r"^SHA256E?-s\d+(?:-[a-zA-Z]\d+)*--([0-9a-f]{64})")


def annex_key(path: Path) -> str | None:
    """The git-annex key a link points to (the file name of its target in the annex's
    object store), whether the content is present or not; None for other files.

    Examples
    --------
    >>> import os, tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> key = "SHA256E-s4--" + "ab" * 32 + ".nii.gz"
    >>> os.symlink(f"../.git/annex/objects/Xx/Yy/{key}/{key}", d / "img.nii.gz")
    >>> annex_key(d / "img.nii.gz") == key, annex_sha256(d / "img.nii.gz") == "ab" * 32
    (True, True)
    """
    try:
        target = Path(os.readlink(path))
    except OSError:
        return None
    return target.name if "/annex/objects/" in target.as_posix() else None


def annex_sha256(path: Path) -> str | None:
    """The SHA-256 of the content a git-annex link names, for keys of the SHA256 backends
    (``SHA256E-s<size>--<hash>``); None for other files and backends (MD5E, ...)."""
    key = annex_key(path)
    match = _ANNEX_SHA256.match(key) if key else None
    return match.group(1) if match else None


def strip_prefix(label: str, prefix: str) -> str:
    """Drop a leading ``prefix-`` from a label.

    Examples
    --------
    >>> strip_prefix("sub-01", "sub"), strip_prefix("01", "sub")
    ('01', '01')
    """
    label = label.strip()
    return label[len(prefix) + 1:] if label.startswith(f"{prefix}-") else label


def _normalise_query(query: Mapping[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(query, Mapping):
        raise FilterError(f"{where}: expected a JSON object of entity filters, got {query!r}")
    out: dict[str, Any] = {}
    for key, value in query.items():
        if not isinstance(key, str):
            raise FilterError(f"{where}: entity names must be strings, got {key!r}")
        name = _ENTITY_ALIASES.get(key, key)
        if isinstance(value, list):
            if not all(isinstance(v, (str, int, bool)) or v is None for v in value):
                raise FilterError(f"{where}: {key} must be a value or a list of values")
        elif not (isinstance(value, (str, int, bool)) or value is None):
            raise FilterError(f"{where}: {key} must be a value or a list of values")
        if name == "run" and value is not None:
            values = value if isinstance(value, list) else [value]
            try:
                value = [int(v) for v in values] if isinstance(value, list) else int(value)
            except (TypeError, ValueError) as exc:
                raise FilterError(f"{where}: run must be an integer, got {value!r}") from exc
        out[name] = value
    return out


def load_filters(path: Path | None) -> dict[str, Any]:
    """Read a ``--bids-filter-file``.

    Two forms are accepted:

    * a flat object of entity filters applied to every selected suffix, e.g.
      ``{"session": ["pre", "post"], "acquisition": null}``;
    * fMRIPrep's form, an object of named queries, e.g.
      ``{"t1w": {"acquisition": "mprage"}, "t2w": {"suffix": "T2w", "run": 1}}``: every
      query is run (``suffix`` defaults to the selected suffixes) and the union is taken.

    ``null`` means "the entity must be absent", ``"*"`` "any value, but present". Short
    keys (``acq``, ``ce``, ``rec``, ``ses``, ``sub``) are accepted.

    Returns
    -------
    dict
        ``{"queries": {name: query}}`` for the named form, the flat object otherwise;
        empty when ``path`` is None.
    """
    if path is None:
        return {}
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise FilterError(f"cannot read the BIDS filter file {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise FilterError(f"the BIDS filter file {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise FilterError(f"the BIDS filter file {path} must hold a JSON object")
    if raw and all(isinstance(v, dict) for v in raw.values()):
        return {"queries": {name: _normalise_query(q, f"{path} [{name}]") for name, q in raw.items()}}
    return _normalise_query(raw, str(path))


def _pybids_value(value: Any) -> Any:
    from bids.layout import Query

    if value is None:
        return Query.NONE
    if value == "*":
        return Query.ANY
    if isinstance(value, list):
        return [_pybids_value(v) for v in value]
    return value


def _queries(
    filters: Mapping[str, Any],
    suffixes: Sequence[str],
    participant_label: Sequence[str],
    session_label: Sequence[str],
) -> list[dict[str, Any]]:
    named = filters.get("queries") if "queries" in filters else None
    bases = list(named.values()) if isinstance(named, Mapping) else [dict(filters)]
    queries = []
    for base in bases:
        query: dict[str, Any] = {k: _pybids_value(v) for k, v in base.items()}
        query.setdefault("suffix", list(suffixes))
        query["datatype"] = "anat"
        query["extension"] = list(IMAGE_EXTENSIONS)
        if _restrict(query, "subject", participant_label) and _restrict(query, "session", session_label):
            queries.append(query)
    return queries


def _restrict(query: dict[str, Any], key: str, labels: Sequence[str]) -> bool:
    """Limit ``query[key]`` to ``labels`` (the intersection when the query names values);
    False when nothing is left to select."""
    if not labels:
        return True
    current = query.get(key)
    if current is None or not isinstance(current, (str, int, list)):
        query[key] = list(labels)  # absent, or Query.ANY
        return True
    values = [str(v) for v in (current if isinstance(current, list) else [current])]
    kept = [label for label in labels if label in values]
    query[key] = kept
    return bool(kept)


def _as_labels(entities: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in entities.items():
        if value is None or isinstance(value, (dict, list)):
            continue
        out[key] = str(value)
    return out


def discover_runs(
    bids_dir: Path,
    participant_label: Iterable[str] = (),
    session_label: Iterable[str] = (),
    suffixes: Sequence[str] = DEFAULT_SUFFIXES,
    filters: Mapping[str, Any] | None = None,
) -> list[AnatRun]:
    """Structural runs of ``bids_dir`` that match the selection, sorted by path.

    Parameters
    ----------
    bids_dir : Path
        Root of a BIDS dataset (with ``dataset_description.json``).
    participant_label, session_label : iterable of str
        Labels, with or without ``sub-`` / ``ses-``; empty selects all.
    suffixes : sequence of str
        Suffixes to select (unless a named filter query sets its own).
    filters : mapping
        Output of :func:`load_filters`.

    Raises
    ------
    InvalidDatasetError
        ``bids_dir`` is not a BIDS dataset.
    FilterError
        A filter names an entity pybids does not know.
    """
    from bids import BIDSLayout

    bids_dir = Path(bids_dir).absolute()
    if not (bids_dir / "dataset_description.json").is_file():
        raise InvalidDatasetError(f"{bids_dir} is not a BIDS dataset (no dataset_description.json)")
    subjects = [strip_prefix(s, "sub") for s in participant_label]
    sessions = [strip_prefix(s, "ses") for s in session_label]
    try:
        layout = BIDSLayout(str(bids_dir), validate=False, derivatives=False)
    except Exception as exc:  # pybids raises several types for unreadable datasets
        raise InvalidDatasetError(f"pybids cannot index {bids_dir}: {exc}") from exc

    found: dict[str, Any] = {}
    for query in _queries(filters or {}, suffixes, subjects, sessions):
        try:
            files = layout.get(return_type="object", **query)
        except (ValueError, TypeError) as exc:
            raise FilterError(f"invalid BIDS filter {query}: {exc}") from exc
        for bf in files:
            found.setdefault(bf.path, bf)

    missing = sorted(set(subjects) - set(layout.get_subjects()))
    if missing:
        logger.warning("participant label(s) not in the dataset: %s", ", ".join(missing))

    runs = []
    for path in sorted(found):
        bf = found[path]
        entities = _as_labels(bf.get_entities(metadata=False))
        metadata: dict[str, Any] = {}
        error = None
        try:
            metadata = dict(bf.get_metadata())
        except Exception as exc:  # unreadable or unfetched sidecar: fail this run only
            error = f"cannot read the metadata of {bf.path}: {exc}"
        abspath = Path(bf.path)
        relpath = abspath.relative_to(bids_dir).as_posix()
        runs.append(AnatRun(abspath, relpath, entities, metadata, error))
    logger.info("found %d structural run(s) in %s", len(runs), bids_dir)
    return runs
