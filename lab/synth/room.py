"""Procedural clinical rooms: layout, colours, light and camera, and the static background.

A room is sampled once from a seed and then shared by every clip recorded in it (a fixed camera
in one room), so experiments can keep whole rooms apart between pre-training, few-shot training
and testing. Geometry is a simple pseudo-perspective: a back wall above the ``horizon`` line, a
floor below it; a person whose feet touch the floor at row ``y`` is ``height_at(y)`` px tall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Rect = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` in canvas pixels, half-open."""

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Room:
    """Everything that stays fixed while the camera records in one room (canvas pixels).

    The canvas is the frame plus ``pad`` pixels on each side, so camera jitter can crop from it.
    """

    width: int
    height: int
    pad: int
    horizon: int
    vanish: float
    person_px_at_bottom: float
    wall: RGB
    floor: RGB
    bed_frame: RGB
    sheet: RGB
    blanket: RGB
    bed: Rect
    bed_head_left: bool
    door: Rect
    door_colour: RGB
    window: Rect
    furniture: tuple[tuple[Rect, RGB], ...]
    curtain: tuple[Rect, RGB] | None
    colour_cast: RGB
    noise_sigma: float
    jitter_px: float
    light_period_s: float
    light_depth: float
    has_blanket: bool

    def height_at(self, y_foot: float) -> float:
        """Body height in pixels of a person whose feet are at canvas row ``y_foot``."""
        return perspective_height(
            self.pad + self.height, self.vanish, self.person_px_at_bottom, y_foot
        )

    @property
    def mattress_y(self) -> float:
        """Canvas row of the mattress top."""
        return float(self.bed[1])

    @property
    def bed_front_y(self) -> float:
        """Canvas row where the bed touches the floor (front edge)."""
        return float(self.bed[3])

    @property
    def floor_rows(self) -> tuple[float, float]:
        """Range of foot rows where people walk: in front of the bed, inside the frame."""
        low = max(
            self.bed_front_y + 4, self.horizon + 0.25 * (self.pad + self.height - self.horizon)
        )
        high = self.pad + self.height - 3
        return float(min(low, high - 4)), float(high)


def perspective_height(
    frame_bottom: float, vanish: float, px_at_bottom: float, y_foot: float
) -> float:
    """Body height in pixels at foot row ``y_foot``: linear in the distance to the vanishing row."""
    return px_at_bottom * (y_foot - vanish) / (frame_bottom - vanish)


def _colour(rng: np.random.Generator, low: float, high: float, tint: float = 0.15) -> RGB:
    base = rng.uniform(low, high)
    return tuple(float(np.clip(base + rng.uniform(-tint, tint), 0, 1)) for _ in range(3))  # type: ignore[return-value]


def sample_room(rng: np.random.Generator, width: int, height: int) -> Room:
    """Draw a random room for a ``width`` x ``height`` camera."""
    pad = max(4, round(0.03 * max(width, height)))
    horizon = pad + round(rng.uniform(0.30, 0.52) * height)
    vanish = horizon - rng.uniform(0.2, 0.45) * height
    person_px = rng.uniform(0.62, 0.95) * height
    room_w = width + 2 * pad
    bed_y1 = round(horizon + rng.uniform(0.18, 0.42) * (pad + height - horizon))
    # Bed length follows perspective: about 1.15 body heights at its front edge.
    body = perspective_height(pad + height, vanish, person_px, bed_y1)
    bed_len = round(1.15 * body)
    bed_x0 = round(
        rng.uniform(
            pad + 0.02 * width, max(pad + 0.03 * width, room_w - pad - bed_len - 0.02 * width)
        )
    )
    bed = (bed_x0, round(bed_y1 - 0.32 * body), bed_x0 + bed_len, bed_y1)
    window_w = round(rng.uniform(0.12, 0.25) * width)
    window_x = round(rng.uniform(pad, room_w - pad - window_w))
    window = (
        window_x,
        round(horizon - rng.uniform(0.6, 0.9) * (horizon - pad)),
        window_x + window_w,
        round(horizon - rng.uniform(0.12, 0.3) * (horizon - pad)),
    )
    door_w = round(rng.uniform(0.10, 0.16) * width)
    door_x = round(rng.uniform(pad, room_w - pad - door_w))
    door = (
        door_x,
        round(horizon - rng.uniform(0.7, 0.95) * (horizon - pad)),
        door_x + door_w,
        horizon,
    )
    furniture = tuple(
        _furniture(rng, pad, width, height, horizon) for _ in range(rng.integers(1, 4))
    )
    curtain = None
    if rng.random() < 0.35:
        cw = round(rng.uniform(0.05, 0.12) * width)
        cx = pad if rng.random() < 0.5 else room_w - pad - cw
        curtain = ((cx, 0, cx + cw, pad + height + pad), _colour(rng, 0.3, 0.8, 0.2))
    return Room(
        width=width,
        height=height,
        pad=pad,
        horizon=horizon,
        vanish=vanish,
        person_px_at_bottom=person_px,
        wall=_colour(rng, 0.45, 0.85),
        floor=_colour(rng, 0.25, 0.65),
        bed_frame=_colour(rng, 0.2, 0.6, 0.1),
        sheet=_colour(rng, 0.75, 0.95, 0.06),
        blanket=_colour(rng, 0.3, 0.8, 0.25),
        bed=bed,
        bed_head_left=bool(rng.random() < 0.5),
        door=door,
        door_colour=_colour(rng, 0.3, 0.7, 0.2),
        window=window,
        furniture=furniture,
        curtain=curtain,
        colour_cast=tuple(float(v) for v in rng.uniform(0.85, 1.1, 3)),  # type: ignore[arg-type]
        noise_sigma=float(rng.uniform(1.5, 7.0)),
        jitter_px=float(rng.choice([0.0, 0.0, 0.6, 1.5])),
        light_period_s=float(rng.uniform(6, 25)),
        light_depth=float(rng.uniform(0.03, 0.25)),
        has_blanket=bool(rng.random() < 0.7),
    )


def _furniture(
    rng: np.random.Generator, pad: int, width: int, height: int, horizon: int
) -> tuple[Rect, RGB]:
    """A cabinet or chair standing against the back wall."""
    w = round(rng.uniform(0.06, 0.15) * width)
    h = round(rng.uniform(0.08, 0.25) * height)
    x = round(rng.uniform(pad, pad + width - w))
    base = round(horizon + rng.uniform(0.0, 0.08) * height)
    return (x, base - h, x + w, base), _colour(rng, 0.15, 0.75, 0.2)


def render_background(room: Room) -> np.ndarray:
    """The static room without people or light changes: ``(H+2p, W+2p, 3) float32`` in ``[0,1]``."""
    h, w = room.height + 2 * room.pad, room.width + 2 * room.pad
    img = np.empty((h, w, 3), dtype=np.float32)
    img[: room.horizon] = room.wall
    rows = np.arange(room.horizon, h, dtype=np.float32)
    shade = 0.85 + 0.15 * (rows - room.horizon) / max(h - room.horizon, 1)
    img[room.horizon :] = np.asarray(room.floor, dtype=np.float32) * shade[:, None, None]
    img[room.horizon - 2 : room.horizon] *= 0.7  # skirting board
    _fill(img, room.door, room.door_colour)
    dx0, dy0, dx1, _ = room.door
    img[dy0 + (room.horizon - dy0) // 2, dx1 - max(2, (dx1 - dx0) // 6)] = (
        0.9,
        0.85,
        0.4,
    )  # handle
    _fill(img, room.window, (0.55, 0.65, 0.75))
    for rect, colour in room.furniture:
        _fill(img, rect, colour)
        x0, y0, x1, _ = rect
        img[y0 : y0 + 2, x0:x1] *= 0.75
    _draw_bed(img, room)
    return img


def _draw_bed(img: np.ndarray, room: Room) -> None:
    x0, y0, x1, y1 = room.bed
    depth = max(2, (y1 - y0) // 3)
    _fill(img, (x0, y0, x1, y0 + depth), room.sheet)  # mattress top
    _fill(img, (x0, y0 + depth, x1, y1 - depth), room.bed_frame)  # side panel
    leg = max(1, (x1 - x0) // 30)
    _fill(img, (x0, y1 - depth, x0 + leg, y1), room.bed_frame)
    _fill(img, (x1 - leg, y1 - depth, x1, y1), room.bed_frame)
    head_w = max(2, (x1 - x0) // 25)
    head_h = round(0.9 * (y1 - y0))
    hx0 = x0 if room.bed_head_left else x1 - head_w
    _fill(img, (hx0, y0 - head_h // 2, hx0 + head_w, y1), tuple(0.8 * c for c in room.bed_frame))  # type: ignore[arg-type]
    pw = (x1 - x0) // 6
    px0 = x0 + head_w if room.bed_head_left else x1 - head_w - pw
    _fill(img, (px0, y0 - depth // 2, px0 + pw, y0 + depth // 2), (0.95, 0.95, 0.95))  # pillow


def _fill(img: np.ndarray, rect: Rect, colour: RGB) -> None:
    x0, y0, x1, y1 = rect
    img[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = colour


def light_gain(
    room: Room, t: float, switch_times: tuple[float, ...], switch_gains: tuple[float, ...]
) -> float:
    """Global illumination multiplier at time ``t``: slow drift plus lights switched on/off."""
    gain = 1.0 + room.light_depth * np.sin(2 * np.pi * t / room.light_period_s)
    for when, factor in zip(switch_times, switch_gains, strict=True):
        if t >= when:
            gain *= factor
    return float(gain)


def window_light(room: Room, t: float, phase: float) -> float:
    """Brightness added by the window at time ``t`` (clouds passing), in ``[0, 0.5]``."""
    return float(0.25 + 0.2 * np.sin(2 * np.pi * t / (1.7 * room.light_period_s) + phase))
