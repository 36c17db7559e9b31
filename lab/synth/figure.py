"""Stick-figure people: poses as joint sets, placement in the image, rasterisation.

A figure is 11 joints in image pixels ``(11, 2) float64`` as ``(x, y)`` with ``y`` pointing down.
Poses are written in *body units* (height 1, origin at the feet, ``y`` up, facing ``+x``) and
placed with :func:`place`. Rasterisation draws capsules (segments with a radius) and a head disc
inside the figure's own bounding box, so it costs a few thousand pixels per figure, not a frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Joint order; the tuples below index into it.
HEAD, NECK, HIP, KNEE_A, FOOT_A, KNEE_B, FOOT_B, ELBOW_A, HAND_A, ELBOW_B, HAND_B = range(11)
N_JOINTS = 11

# (joint, joint, radius in body units, part) where part 0 = clothing, 1 = skin, 2 = legs.
SEGMENTS: tuple[tuple[int, int, float, int], ...] = (
    (NECK, HIP, 0.085, 0),
    (HIP, KNEE_A, 0.05, 2),
    (KNEE_A, FOOT_A, 0.042, 2),
    (HIP, KNEE_B, 0.05, 2),
    (KNEE_B, FOOT_B, 0.042, 2),
    (NECK, ELBOW_A, 0.032, 0),
    (ELBOW_A, HAND_A, 0.028, 1),
    (NECK, ELBOW_B, 0.032, 0),
    (ELBOW_B, HAND_B, 0.028, 1),
)
HEAD_RADIUS = 0.075

_STAND = np.array(
    [
        [0.0, 0.915],
        [0.0, 0.82],
        [0.0, 0.50],
        [0.02, 0.26],
        [0.02, 0.0],
        [-0.02, 0.26],
        [-0.02, 0.0],
        [0.03, 0.64],
        [0.04, 0.46],
        [-0.03, 0.64],
        [-0.04, 0.46],
    ]
)
_SIT_CHAIR = np.array(
    [
        [-0.02, 0.70],
        [-0.03, 0.60],
        [-0.06, 0.28],
        [0.18, 0.28],
        [0.19, 0.0],
        [0.16, 0.27],
        [0.17, 0.0],
        [0.03, 0.44],
        [0.15, 0.34],
        [0.0, 0.44],
        [0.12, 0.33],
    ]
)
_CROUCH = np.array(
    [
        [0.20, 0.60],
        [0.13, 0.54],
        [-0.08, 0.28],
        [0.14, 0.30],
        [0.02, 0.0],
        [0.10, 0.28],
        [-0.02, 0.0],
        [0.18, 0.34],
        [0.24, 0.12],
        [0.14, 0.34],
        [0.20, 0.10],
    ]
)
# Sitting up in bed ("long sitting"): origin at the hip on the mattress, legs along +x.
_SIT_LONG = np.array(
    [
        [-0.04, 0.47],
        [-0.03, 0.38],
        [0.0, 0.06],
        [0.24, 0.08],
        [0.47, 0.05],
        [0.24, 0.06],
        [0.47, 0.04],
        [0.04, 0.24],
        [0.14, 0.12],
        [0.01, 0.24],
        [0.11, 0.11],
    ]
)


def pose(kind: str, phase: float = 0.0) -> np.ndarray:
    """Joints of a named pose in body units ``(11, 2)``: stand, walk, sit_chair, crouch, sit_long.

    ``phase`` (radians) drives the leg and arm swing of ``walk``.
    """
    if kind == "walk":
        joints = _STAND.copy()
        swing = np.sin(phase)
        joints[FOOT_A, 0] += 0.15 * swing
        joints[KNEE_A, 0] += 0.08 * swing
        joints[FOOT_B, 0] -= 0.15 * swing
        joints[KNEE_B, 0] -= 0.08 * swing
        joints[HAND_A, 0] -= 0.10 * swing
        joints[HAND_B, 0] += 0.10 * swing
        joints[[ELBOW_A, ELBOW_B], 0] += np.array([-0.04, 0.04]) * swing
        return joints
    table = {"stand": _STAND, "sit_chair": _SIT_CHAIR, "crouch": _CROUCH, "sit_long": _SIT_LONG}
    if kind not in table:
        raise ValueError(f"unknown pose {kind!r}")
    return table[kind].copy()


def place(
    body: np.ndarray,
    origin: tuple[float, float],
    height_px: float,
    *,
    angle_deg: float = 0.0,
    facing: int = 1,
) -> np.ndarray:
    """Body-unit joints ``(11,2)`` -> image joints ``(11,2)``.

    The pose is mirrored when ``facing == -1``, rotated by ``angle_deg`` about its origin
    (positive = the head goes towards ``+facing``, i.e. 90 is lying with the head on the
    ``facing`` side), scaled to ``height_px`` and moved to ``origin`` (image pixels).
    """
    pts = body.copy()
    pts[:, 0] *= facing
    theta = np.deg2rad(angle_deg) * facing
    cos, sin = np.cos(theta), np.sin(theta)
    x = pts[:, 0] * cos + pts[:, 1] * sin
    y = -pts[:, 0] * sin + pts[:, 1] * cos
    return np.stack([origin[0] + x * height_px, origin[1] - y * height_px], axis=1)


def lying(origin: tuple[float, float], height_px: float, facing: int) -> np.ndarray:
    """A person lying on their side/back on a surface at ``origin`` (feet end), head towards
    ``facing``; the body rests on the surface instead of crossing it."""
    joints = place(pose("stand"), origin, height_px, angle_deg=90.0, facing=facing)
    joints[:, 1] -= 0.085 * height_px
    # Arms rest along the body instead of sticking out of it.
    joints[[HAND_A, HAND_B], 1] += 0.02 * height_px
    return joints


@dataclass(frozen=True)
class Appearance:
    """Colours of a figure, RGB in ``[0, 1]``."""

    clothing: tuple[float, float, float]
    legs: tuple[float, float, float]
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]


@dataclass(frozen=True)
class Raster:
    """A rasterised figure: its bounding box in image pixels and the local layers.

    ``mask`` is ``(h, w) bool`` over the box ``[x0, x0+w) x [y0, y0+h)`` (which may extend past
    the frame); ``rgb`` is ``(h, w, 3) float32`` colour where ``mask`` is set.
    """

    x0: int
    y0: int
    mask: np.ndarray
    rgb: np.ndarray


def rasterise(joints: np.ndarray, height_px: float, look: Appearance) -> Raster:
    """Draw the figure given by image joints ``(11,2)`` whose body height is ``height_px``."""
    pad = HEAD_RADIUS * height_px + 2
    x0 = int(np.floor(joints[:, 0].min() - pad))
    y0 = int(np.floor(joints[:, 1].min() - pad))
    x1 = int(np.ceil(joints[:, 0].max() + pad)) + 1
    y1 = int(np.ceil(joints[:, 1].max() + pad)) + 1
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    mask = np.zeros(xs.shape, dtype=bool)
    rgb = np.zeros((*xs.shape, 3), dtype=np.float32)
    colours = (look.clothing, look.skin, look.legs)
    for a, b, radius, part in SEGMENTS:
        hit = _capsule(xs, ys, joints[a], joints[b], max(radius * height_px, 0.8))
        rgb[hit] = colours[part]
        mask |= hit
    head = (xs - joints[HEAD, 0]) ** 2 + (ys - joints[HEAD, 1]) ** 2 <= (
        HEAD_RADIUS * height_px
    ) ** 2
    rgb[head] = look.skin
    # Hair: the half of the head disc away from the neck.
    away = (joints[HEAD] - joints[NECK]) / (np.linalg.norm(joints[HEAD] - joints[NECK]) + 1e-6)
    side = (xs - joints[HEAD, 0]) * away[0] + (ys - joints[HEAD, 1]) * away[1]
    rgb[head & (side > 0.2 * HEAD_RADIUS * height_px)] = look.hair
    mask |= head
    return Raster(x0=x0, y0=y0, mask=mask, rgb=rgb)


def _capsule(
    xs: np.ndarray, ys: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float
) -> np.ndarray:
    """Pixels within ``radius`` of segment ``a``-``b`` (boolean, shape of ``xs``)."""
    d = b - a
    length2 = float(d @ d) + 1e-9
    t = np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / length2, 0.0, 1.0)
    dx = xs - (a[0] + t * d[0])
    dy = ys - (a[1] + t * d[1])
    return dx * dx + dy * dy <= radius * radius
