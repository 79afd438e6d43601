"""Images of one acquisition, defaced with one mask.

The parts of a complex image (``part-mag``, ``-phase``, ``-real``, ``-imag``), the echoes
of a multi-echo image (``echo-``), and the images of a file collection (an MP2RAGE's
inversions ``inv-``, the flip angles ``flip-`` and magnetisation transfer ``mt-`` of VFA,
MPM or MTS collections) show one head on one grid, and so do the maps computed from a
collection with the same other entities (an MP2RAGE's ``UNIT1`` and ``T1map``). They are
defaced with one mask, made on the image of the group the face is seen best in — its
**reference**: a magnitude image before any other part (a phase image shows no face the
network knows, but its noise-free region outlines the head), the last inversion (an
MP2RAGE's second is proton-density-like; its first is dark), the first echo, flip angle
and ``mt-off``, and an image before a map computed from it (of maps alone, an MP2RAGE's
``UNIT1``, which looks like a T1w image). The other images of the group
(its **companions**) take the reference's mask; a phase, real or imaginary part without a
magnitude image among the selected runs is not defaced on its own.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from .discover import AnatRun

__all__ = ["VARYING", "COLLECTIONS", "MAPS", "COMPLEX_PARTS", "group_key", "reference_rank", "references",
           "needs_magnitude"]

#: Entities whose values tell the images of one acquisition apart.
VARYING = ("echo", "flip", "inv", "mt", "part")
#: File collections: suffixes whose images differ only by ``VARYING`` entities.
COLLECTIONS = frozenset({"MP2RAGE", "MPM", "MTS", "VFA", "IRT1", "MEGRE", "MESE"})
#: Maps computed from a file collection, in the collection's group when their other
#: entities are its.
MAPS = frozenset({"UNIT1", "T1map", "R1map", "T2map", "R2map", "T2starmap", "R2starmap", "PDmap", "MTsat",
                  "MTRmap"})
#: The parts of a complex image that are not its magnitude.
COMPLEX_PARTS = frozenset({"phase", "real", "imag"})
_NOT_KEY = frozenset({*VARYING, "suffix", "extension", "datatype"})


def group_key(run: AnatRun) -> tuple:
    """What the images of one group share: their folder, every entity but ``VARYING`` and,
    but for file collections and their maps, their suffix."""
    ents: Mapping[str, str] = run.entities
    family = "collection" if run.suffix in COLLECTIONS | MAPS else run.suffix
    folder = run.relpath.rsplit("/", 1)[0]
    return (folder, family, tuple(sorted((k, str(v)) for k, v in ents.items() if k not in _NOT_KEY)))


def _number(value: object, default: int) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


def reference_rank(run: AnatRun) -> tuple:
    """Sort key: the group's reference sorts first (see the module docstring)."""
    ents = run.entities
    return (
        run.suffix in MAPS,                        # an image before a map computed from it
        run.suffix != "UNIT1",                     # of maps, the uniform image (a T1w look)
        str(ents.get("part", "mag")) in COMPLEX_PARTS,  # the magnitude before other parts
        -_number(ents.get("inv"), 0),               # the last inversion
        _number(ents.get("echo"), 0),               # the first echo
        _number(ents.get("flip"), 0),               # the first flip angle
        str(ents.get("mt", "off")) != "off",        # magnetisation transfer off
        run.relpath,
    )


def needs_magnitude(run: AnatRun) -> bool:
    """Whether ``run`` is a phase, real or imaginary part: defaced only with a magnitude's mask."""
    return str(run.entities.get("part", "")) in COMPLEX_PARTS


def references(runs: Iterable[AnatRun]) -> dict[str, AnatRun]:
    """The reference run of every companion among ``runs``, by the companion's ``relpath``
    (a run that is its group's reference, or alone, is not a key).

    A group whose best image is a phase, real or imaginary part has no reference: its
    images are not keys, and :func:`needs_magnitude` tells which of them cannot be defaced.
    """
    groups: dict[tuple, list[AnatRun]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    out: dict[str, AnatRun] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        ranked: Sequence[AnatRun] = sorted(members, key=reference_rank)
        ref = ranked[0]
        if needs_magnitude(ref) or (ref.suffix in MAPS and ref.suffix != "UNIT1"):
            continue  # no image of the group shows the face as a magnitude image does
        for run in ranked[1:]:
            out[run.relpath] = ref
    return out
