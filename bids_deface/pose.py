"""The head's pose from its brain, and the upright frame in which a tilted head is masked.

The network has seen heads tilted by up to ±35° in a small share of its training cases,
and the ear zone (:func:`bids_deface.anatomy.ear_zone`) is placed from axis-aligned brain
landmarks: both assume a head sitting roughly upright in the image's RAS axes. A head
pitched or rolled by 30° is therefore masked in a frame in which it sits upright
(:class:`UprightFrame`), and its masks are brought back to the image's grid.

The pose comes from the predicted brain, on voxels of about 4 mm:

* **roll and yaw** from the brain's mirror symmetry: the plane through the brain's centroid
  whose reflection of the brain overlaps the brain most is the mid-sagittal plane. Yaw is
  searched over a whole half turn: a head lying on its side in an image whose header says
  it lies supine is turned by 90° about the superior axis;
* **pitch** from the brain's principal axis in that plane (antero-posterior), relative to
  its mean direction in upright training heads (:data:`PITCH_REFERENCE_DEG`).

The mirror plane does not tell which way the face looks. A head whose plane is turned by
more than ``SEARCH_DEG`` (on its side) is beyond what the network saw: the masking tries
both ways (``reverse``) and keeps the one in which the network finds more face in front of
the brain, if more than in the image's own axes (:meth:`bids_deface.masking.FaceModel.predict`).
A prone head with a supine header (turned by 180°) has its plane where an upright head has
it. Where the network finds little face in front of the brain (under
:data:`PRONE_CHECK_ML`), the head is also masked with its face taken to look the other way,
and that way is kept where the network finds at least :data:`PRONE_RATIO` times as much
face in front of the brain, and at least :data:`PRONE_FACE_ML`
(``docs/experiments/prone-heads.md``).

Arrays are in RAS axis order (``[x, y, z]``), positions in mm from the array's first
voxel (``index * zooms``), as in :mod:`bids_deface.anatomy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from .anatomy import block_factors, block_reduce

__all__ = ["HeadPose", "head_pose", "face_in_front_ml", "UprightFrame", "PITCH_REFERENCE_DEG",
           "TILT_LIMIT_DEG", "PRONE_AHEAD_ML", "PRONE_CHECK_ML", "PRONE_FACE_ML", "PRONE_RATIO", "rotation_x",
           "rotation_y", "rotation_z"]

#: Direction of the brain's principal axis in the mid-sagittal plane of an upright head
#: (degrees above the anterior direction), the mean over the training heads' own images
#: (``docs/validation/README.md``).
PITCH_REFERENCE_DEG = 20.0
#: A head tilted by more than this (pitch, roll or yaw) is masked in its upright frame;
#: below it the image's own axes are used, so upright heads are masked as before.
TILT_LIMIT_DEG = 12.0
#: The range searched for roll and yaw, and within which pitch is trusted (degrees).
SEARCH_DEG = 45.0
#: A head (not on its side) in which the network finds less face than this in front of the
#: brain (mL, :func:`face_in_front_ml`) is also masked the other way along its mirror plane,
#: as if prone under a supine header; that way is kept where the network finds at least
#: ``PRONE_RATIO`` times as much face there, and at least ``PRONE_FACE_ML``. Measured on the
#: five tuning heads' 121 upright and 5 prone cases (``docs/experiments/prone-heads.md``):
#: prone, 10–235 mL as they lie and 382–918 mL the other way (3.0–58 times as much);
#: upright, at most 414 mL the other way, and twice as much as they lie only in two
#: plane-cut faces (181 and 118 mL). ``PRONE_FACE_ML`` was raised from 250 to 350 mL after
#: the held-out table, where pycortex S1's plane-cut face gave 260 mL turned round.
#: ``PRONE_CHECK_ML`` was raised from 300 to 600 mL, the upper end of what that experiment
#: measured both ways (75 upright cases under 600 mL as they lie: none turned round), after
#: fold N's table, where a prone head no model had seen showed 366 mL of "face" as it lay.
PRONE_CHECK_ML = 600.0
PRONE_FACE_ML = 350.0
PRONE_RATIO = 2.0
#: Before that upright pass, a quick look: the network's face in front of the brain with the
#: image turned by a half turn in its grid (no resampling, no pitch). The upright pass is
#: made only where that is at least ``PRONE_RATIO`` times the face as the head lies and at
#: least this (mL). The tuning heads turned so give their upright faces (398–1032 mL).
PRONE_AHEAD_ML = 200.0
#: Voxel size of the brain the pose is measured on (mm), and most points used.
POSE_VOXEL_MM = 4.0
MAX_POINTS = 3000


def rotation_x(degrees: float) -> np.ndarray:
    """3×3 right-handed rotation about x (pitch: positive turns +y towards +z)."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rotation_y(degrees: float) -> np.ndarray:
    """3×3 right-handed rotation about y (roll: positive turns +z towards +x)."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_z(degrees: float) -> np.ndarray:
    """3×3 right-handed rotation about z (yaw: positive turns +x towards +y)."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class HeadPose:
    """How a head sits in its image: the angles (degrees) and the rotation that makes it
    upright about the brain's centroid (``upright = rotation @ (p - centre_mm)``)."""

    pitch: float | None
    """None when not measured (a brain cut by the field of view)."""
    roll: float
    yaw: float
    centre_mm: np.ndarray
    rotation: np.ndarray
    symmetry: float
    """Share of the brain that its reflection in the mid-sagittal plane overlaps."""

    @property
    def tilt(self) -> float:
        """The largest of the three angles' magnitudes (degrees)."""
        return float(max(abs(self.pitch or 0.0), abs(self.roll), abs(self.yaw)))

    @property
    def turned(self) -> bool:
        """Whether the head's mirror plane is yawed by more than ``SEARCH_DEG`` (a head on
        its side with the header of a supine head): beyond the network's training poses."""
        return abs(self.yaw) > SEARCH_DEG

    @property
    def tilted(self) -> bool:
        """Whether the head is masked in its upright frame (tilt above ``TILT_LIMIT_DEG``)."""
        return self.tilt > TILT_LIMIT_DEG

    def record(self) -> dict[str, float | None]:
        """The angles for a sidecar (degrees, one decimal; pitch None when not measured)."""
        return {"Pitch": None if self.pitch is None else round(self.pitch, 1), "Roll": round(self.roll, 1),
                "Yaw": round(self.yaw, 1)}


def _coarse_points(brain: np.ndarray, zooms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Brain voxels on blocks of about ``POSE_VOXEL_MM``: the coarse mask, its voxel size,
    the offset of its first voxel's centre (mm) and the points (N×3 mm, at most
    ``MAX_POINTS``, evenly thinned)."""
    f = block_factors(zooms, POSE_VOXEL_MM)
    coarse = block_reduce(brain, f, np.any)
    czooms = zooms * f
    origin = (f - 1) / 2.0 * zooms
    pts = np.argwhere(coarse) * czooms + origin
    step = max(1, len(pts) // MAX_POINTS)
    return coarse, czooms, origin, pts[::step]


def _overlap(coarse: np.ndarray, czooms: np.ndarray, origin: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Share of the points ``pts`` (``...×N×3``, mm) that fall on a voxel of ``coarse``,
    for each leading index."""
    idx = np.rint((pts - origin) / czooms).astype(np.int32)
    ok = np.all((idx >= 0) & (idx < np.array(coarse.shape, np.int32)), axis=-1)
    idx = np.where(ok[..., None], idx, 0)
    hit = coarse[idx[..., 0], idx[..., 1], idx[..., 2]] & ok
    return hit.mean(axis=-1)


def _normal(roll: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """The left-right axes (``...×3``) of heads rolled by ``roll`` and yawed by ``yaw``
    (degrees): ``rotation_z(yaw) @ rotation_y(roll) @ [1, 0, 0]``."""
    r, w = np.deg2rad(roll), np.deg2rad(yaw)
    return np.stack([np.cos(w) * np.cos(r), np.sin(w) * np.cos(r), -np.sin(r)], axis=-1)


def _symmetry(coarse: np.ndarray, czooms: np.ndarray, origin: np.ndarray, pts: np.ndarray,
              centre: np.ndarray, rolls: np.ndarray, yaws: np.ndarray) -> tuple[float, float, float]:
    """The ``(roll, yaw, overlap)`` among the candidates whose mirror plane through ``centre``
    overlaps the brain most."""
    r, w = (a.ravel() for a in np.meshgrid(rolls, yaws, indexing="ij"))
    n = _normal(r, w).astype(np.float32)  # K×3
    rel = (pts - centre).astype(np.float32)
    d = n @ rel.T  # K×N
    mirrored = pts.astype(np.float32)[None] - 2.0 * d[..., None] * n[:, None, :]
    score = _overlap(coarse, czooms.astype(np.float32), origin.astype(np.float32), mirrored)
    best = int(np.argmax(score))
    return float(r[best]), float(w[best]), float(score[best])


def head_pose(brain: np.ndarray, zooms: Sequence[float], pitch: bool = True, turns: bool = True,
              reverse: bool = False) -> HeadPose | None:
    """The pose of the head whose brain is ``brain`` (RAS axis order, voxel sizes ``zooms``);
    None when there is too little brain to tell (under 20 mL). ``pitch=False`` leaves the
    pitch unmeasured (and the head unpitched in its upright frame): for a brain cut by the
    field of view, whose principal axis is not the whole brain's (a slab from the orbits up
    of an upright training head measures 14° off).

    Roll is searched within ±``SEARCH_DEG`` and yaw over a half turn (within ±``SEARCH_DEG``
    with ``turns=False``) on a 5° grid and refined to 1°; the face is taken to look along the
    plane's side nearer anterior, or with ``reverse`` along the other (180° more yaw, the
    roll reversed). Pitch is the principal axis's direction in the mid-sagittal plane less
    :data:`PITCH_REFERENCE_DEG`.

    Examples
    --------
    An ellipsoid "brain" longer front to back, rolled by 20° and pitched by 25°:

    >>> g = np.mgrid[-60:61:2, -80:81:2, -60:61:2].astype(float)
    >>> upright = np.stack([v.ravel() for v in g], 1) @ (rotation_y(20) @ rotation_x(25))
    >>> inside = ((upright / [55.0, 75.0, 45.0]) ** 2).sum(1) <= 1
    >>> p = head_pose(inside.reshape(g.shape[1:]), (2.0, 2.0, 2.0))
    >>> [abs(a - b) <= 1 for a, b in ((p.roll, 20), (p.pitch + PITCH_REFERENCE_DEG, 25), (p.yaw, 0))]
    [True, True, True]
    """
    zooms = np.asarray(zooms, float)
    brain = np.asarray(brain, bool)
    if np.count_nonzero(brain) * float(np.prod(zooms)) < 20_000.0:
        return None
    coarse, czooms, origin, pts = _coarse_points(brain, zooms)
    if len(pts) < 50:
        return None
    centre = pts.mean(0)
    grid = np.arange(-SEARCH_DEG, SEARCH_DEG + 0.1, 5.0)
    yaws = np.arange(-90.0, 90.0, 5.0) if turns else grid
    roll, yaw, _ = _symmetry(coarse, czooms, origin, pts, centre, grid, yaws)
    fine = np.arange(-4.0, 4.1, 1.0)
    roll, yaw, score = _symmetry(coarse, czooms, origin, pts, centre, roll + fine, yaw + fine)
    if reverse:
        # the same plane, the face looking the other way
        roll, yaw = -roll, float((yaw + 360.0) % 360.0 - 180.0)
    # undo roll and yaw: the mid-sagittal plane's normal onto x
    level = rotation_y(roll).T @ rotation_z(yaw).T
    angle = _principal_angle((pts - centre) @ level.T)
    measured = float(np.clip(angle - PITCH_REFERENCE_DEG, -SEARCH_DEG, SEARCH_DEG)) if pitch else None
    rotation = rotation_x(measured or 0.0).T @ level
    return HeadPose(measured, roll, yaw, centre, rotation, score)


def _principal_angle(q: np.ndarray) -> float:
    """Direction (degrees above +y) of the principal axis of points ``q`` (N×3) in the
    y-z plane, taken pointing towards +y."""
    w, v = np.linalg.eigh(np.cov(q[:, 1:].T))
    major = v[:, int(np.argmax(w))]
    if major[0] < 0:
        major = -major
    return float(np.degrees(np.arctan2(major[1], major[0])))


def face_in_front_ml(face: np.ndarray, brain: np.ndarray, zooms: Sequence[float]) -> float:
    """The network's face (mL) where an upright face lies: in front of a plane 25 mm behind
    the brain's front (its 97th percentile along y) and below 10 mm above the brain's
    centre (RAS axis order). On the five tuning heads, the network finds 1.4 to 56 times
    more of it with the head upright than turned by a quarter or a half turn.

    >>> face = np.zeros((10, 40, 20), bool); face[:, 35:, :5] = True
    >>> brain = np.zeros((10, 40, 20), bool); brain[:, 5:35, 5:] = True
    >>> face_in_front_ml(face, brain, (10.0, 1.0, 1.0)), face_in_front_ml(face[:, ::-1], brain[:, ::-1], (10.0, 1.0, 1.0))
    (2.5, 0.0)
    """
    zooms = np.asarray(zooms, float)
    if not brain.any() or not face.any():
        return 0.0
    b = np.argwhere(brain)
    front_y = float(np.percentile(b[:, 1], 97)) - 25.0 / zooms[1]
    top_z = float(b[:, 2].mean()) + 10.0 / zooms[2]
    f = np.argwhere(face)
    inside = (f[:, 1] > front_y) & (f[:, 2] < top_z)
    return float(np.count_nonzero(inside)) * float(np.prod(zooms)) / 1000.0


@dataclass(frozen=True)
class UprightFrame:
    """An isotropic grid in which the head of ``pose`` sits upright, holding the whole field
    of view of an image of ``shape`` and voxel sizes ``zooms`` (RAS axis order).

    Upright position of an image position ``p`` (mm): ``q = R (p - c) + c``; upright voxel
    index ``(q - origin) / spacing``.
    """

    pose: HeadPose
    shape: tuple[int, ...]
    zooms: np.ndarray
    spacing: float
    origin: np.ndarray
    grid_shape: tuple[int, ...]

    @classmethod
    def of(cls, pose: HeadPose, shape: Sequence[int], zooms: Sequence[float],
           min_spacing: float = 1.0) -> "UprightFrame":
        """The frame for an image of ``shape``/``zooms``: voxels as fine as its finest side,
        but not finer than ``min_spacing`` mm."""
        zooms = np.asarray(zooms, float)
        spacing = max(float(zooms.min()), min_spacing)
        corners = np.array(list(np.ndindex(2, 2, 2)), float) * (np.asarray(shape, float) - 1) * zooms
        c = pose.centre_mm
        q = (corners - c) @ pose.rotation.T + c
        origin = q.min(0)
        grid_shape = tuple(int(v) for v in np.ceil((q.max(0) - origin) / spacing) + 1)
        return cls(pose, tuple(int(s) for s in shape), zooms, spacing, origin, grid_shape)

    def _to_image(self, sub: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Matrix and offset from an image index (on a grid splitting its voxels ``sub``
        times along each axis) to an upright index."""
        r, c = self.pose.rotation, self.pose.centre_mm
        k = np.ones(3) if sub is None else np.asarray(sub, float)
        # image index v = m / k + (1 / k - 1) / 2 for a sub-slice index m
        scale = np.diag(self.zooms / k)
        shift = self.zooms * (1.0 / k - 1.0) / 2.0
        matrix = r @ scale / self.spacing
        offset = (r @ (shift - c) + c - self.origin) / self.spacing
        return matrix, offset

    def upright(self, data: np.ndarray, order: int = 1) -> np.ndarray:
        """``data`` (on the image's grid) resampled onto the upright grid (0 outside it)."""
        matrix, offset = self._to_image()
        inv = np.linalg.inv(matrix)
        return ndimage.affine_transform(np.asarray(data, np.float32), inv, offset=-inv @ offset,
                                        output_shape=self.grid_shape, order=order, mode="constant", cval=0.0)

    def back(self, mask: np.ndarray, splits: Sequence[int] | None = None) -> np.ndarray:
        """A mask on the upright grid brought back to the image's grid (nearest voxel), or
        to a grid splitting the image's voxels ``splits`` times along each axis."""
        matrix, offset = self._to_image(splits)
        shape = self.shape if splits is None else tuple(n * int(k) for n, k in zip(self.shape, splits))
        out = ndimage.affine_transform(np.asarray(mask, np.uint8), matrix, offset=offset, output_shape=shape,
                                       order=0, mode="constant", cval=0)
        return out > 0
