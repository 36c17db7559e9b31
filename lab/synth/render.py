"""Render a synthetic clip frame by frame, with the people and labels of each frame.

Every frame is a pure function of the clip and its index (its noise comes from a generator seeded
by both), so a frame can be rendered again with a person left out and compared pixel by pixel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from lab.synth.figure import FOOT_A, FOOT_B, HIP, Raster, rasterise
from lab.synth.room import Room, light_gain, render_background, sample_room, window_light
from lab.synth.scenario import ScenarioConfig, patient_script, staff_scripts
from lab.synth.script import Actor, Role, State

DEFAULT_CLASSES: tuple[str, ...] = ("person_present", "multiple_people", "falling", "fallen")
KNOWN_CLASSES: tuple[str, ...] = (*DEFAULT_CLASSES, "in_bed", "staff_present")
VISIBLE_FRACTION = 0.5
"""A person counts as present when at least this share of their body is inside the frame
(the convention of the UP-Fall development labels: "at least about half of the body")."""


@dataclass
class SynthClip:
    """A fully specified clip: room, people, nuisances. Frames come from :func:`render_frame`."""

    room: Room
    actors: list[Actor]
    duration_s: float
    fps: float
    seed: int
    switch_times: tuple[float, ...]
    switch_gains: tuple[float, ...]
    window_phase: float
    curtain_sway: float
    _background: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_frames(self) -> int:
        return round(self.duration_s * self.fps)

    def background(self) -> np.ndarray:
        if self._background is None:
            self._background = render_background(self.room)
        return self._background


@dataclass(frozen=True)
class PersonInFrame:
    """One actor in one frame: ``box`` is ``(x0, y0, x1, y1)`` in frame pixels (clipped) or None."""

    actor: int
    role: Role
    state: State
    visible: float
    box: tuple[int, int, int, int] | None


@dataclass(frozen=True)
class RenderedFrame:
    """``image`` is ``(H, W, 3) uint8`` RGB."""

    image: np.ndarray
    people: tuple[PersonInFrame, ...]


def make_clip(
    room: Room, seed: int, duration_s: float, fps: float, cfg: ScenarioConfig
) -> SynthClip:
    """Sample the people and nuisances of one clip recorded in ``room``."""
    rng = np.random.default_rng(seed)
    actors = [
        patient_script(room, rng, duration_s, cfg),
        *staff_scripts(room, rng, duration_s, cfg),
    ]
    switches = rng.random() < 0.3
    return SynthClip(
        room=room,
        actors=actors,
        duration_s=duration_s,
        fps=fps,
        seed=seed,
        switch_times=(float(rng.uniform(0.1, 0.9) * duration_s),) if switches else (),
        switch_gains=(float(rng.choice([rng.uniform(0.6, 0.8), rng.uniform(1.2, 1.45)])),)
        if switches
        else (),
        window_phase=float(rng.uniform(0, 2 * np.pi)),
        curtain_sway=float(rng.uniform(0, 3)),
    )


def random_clip(
    room_seed: int,
    clip_seed: int,
    *,
    width: int = 320,
    height: int = 240,
    duration_s: float = 20.0,
    fps: float = 10.0,
    cfg: ScenarioConfig | None = None,
) -> SynthClip:
    """Convenience: a clip from a room seed and a clip seed."""
    room = sample_room(np.random.default_rng(room_seed), width, height)
    return make_clip(room, clip_seed, duration_s, fps, cfg or ScenarioConfig())


def render_frame(clip: SynthClip, index: int, *, exclude: Iterable[int] = ()) -> RenderedFrame:
    """Frame ``index`` of ``clip``; actors whose index is in ``exclude`` are not drawn (they keep
    their labels and boxes, so a test can compare the two renders)."""
    room, t = clip.room, index / clip.fps
    rng = np.random.default_rng([clip.seed, index])
    skip = set(exclude)
    canvas = clip.background().copy()
    _window(canvas, room, window_light(room, t, clip.window_phase))
    rasters = _rasters(clip, t)
    shift = _jitter(room, rng)
    people = []
    for i, raster, state in sorted(rasters, key=lambda r: _depth(r[1], r[2])):
        if i not in skip:
            _paste(canvas, raster)
        people.append(_measure(clip, i, state, raster, shift))
    _blanket(canvas, clip, t)
    _curtain(canvas, room, t, clip.curtain_sway)
    canvas *= light_gain(room, t, clip.switch_times, clip.switch_gains)
    canvas *= np.asarray(room.colour_cast, dtype=np.float32)
    y0, x0 = room.pad + shift[1], room.pad + shift[0]
    frame = canvas[y0 : y0 + room.height, x0 : x0 + room.width] * 255.0
    frame += rng.normal(0.0, room.noise_sigma, frame.shape).astype(np.float32)
    image = np.clip(frame, 0, 255).astype(np.uint8)
    people.sort(key=lambda p: p.actor)
    return RenderedFrame(image=image, people=tuple(people))


def frame_labels(
    people: Iterable[PersonInFrame], classes: Iterable[str] = DEFAULT_CLASSES
) -> set[str]:
    """The labels that hold in a frame with these people."""
    return {label for label, _ in label_boxes(people, classes)}


def label_boxes(
    people: Iterable[PersonInFrame], classes: Iterable[str] = DEFAULT_CLASSES
) -> list[tuple[str, tuple[int, int, int, int]]]:
    """``(label, box)`` for every labeled person: each present person under ``person_present``
    (and ``multiple_people`` when two or more are present), the patient under ``falling`` /
    ``fallen`` / ``in_bed``, staff under ``staff_present``."""
    wanted = set(classes)
    unknown = wanted - set(KNOWN_CLASSES)
    if unknown:
        raise ValueError(f"unknown classes {sorted(unknown)}; known: {KNOWN_CLASSES}")
    present = [p for p in people if p.visible >= VISIBLE_FRACTION and p.box is not None]
    rows: list[tuple[str, tuple[int, int, int, int]]] = []
    for p in present:
        assert p.box is not None
        tags = ["person_present"]
        if len(present) >= 2:
            tags.append("multiple_people")
        if p.role == "patient" and p.state in {"falling", "fallen", "in_bed"}:
            tags.append(p.state)
        if p.role == "staff":
            tags.append("staff_present")
        rows.extend((tag, p.box) for tag in tags if tag in wanted)
    return rows


def _rasters(clip: SynthClip, t: float) -> list[tuple[int, Raster, State]]:
    out = []
    for i, actor in enumerate(clip.actors):
        seg = actor.segment_at(t)
        placed = seg.at(t)
        if placed is not None:
            out.append((i, rasterise(placed[0], placed[1], actor.look), seg.state))
    return out


def _depth(raster: Raster, state: State) -> float:
    """Paint order: people in bed first (they lie on the background's bed), then by foot row."""
    return -1e9 if state == "in_bed" else raster.y0 + raster.mask.shape[0]


def _paste(canvas: np.ndarray, raster: Raster) -> None:
    h, w = canvas.shape[:2]
    ys = slice(max(raster.y0, 0), min(raster.y0 + raster.mask.shape[0], h))
    xs = slice(max(raster.x0, 0), min(raster.x0 + raster.mask.shape[1], w))
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return
    local = (
        slice(ys.start - raster.y0, ys.stop - raster.y0),
        slice(xs.start - raster.x0, xs.stop - raster.x0),
    )
    mask = raster.mask[local]
    canvas[ys, xs][mask] = raster.rgb[local][mask]


def _measure(
    clip: SynthClip, actor: int, state: State, raster: Raster, shift: tuple[int, int]
) -> PersonInFrame:
    """Share of the figure inside the frame and its clipped box in frame pixels."""
    room = clip.room
    fx0, fy0 = room.pad + shift[0], room.pad + shift[1]
    ys, xs = np.nonzero(raster.mask)
    xs = xs + raster.x0 - fx0
    ys = ys + raster.y0 - fy0
    inside = (xs >= 0) & (xs < room.width) & (ys >= 0) & (ys < room.height)
    visible = float(inside.mean()) if len(xs) else 0.0
    box = None
    if inside.any():
        box = (
            int(xs[inside].min()),
            int(ys[inside].min()),
            int(xs[inside].max()) + 1,
            int(ys[inside].max()) + 1,
        )
    return PersonInFrame(
        actor=actor, role=clip.actors[actor].role, state=state, visible=visible, box=box
    )


def _jitter(room: Room, rng: np.random.Generator) -> tuple[int, int]:
    if room.jitter_px <= 0:
        return 0, 0
    limit = room.pad - 1
    dx, dy = np.clip(np.round(rng.normal(0, room.jitter_px, 2)), -limit, limit).astype(int)
    return int(dx), int(dy)


def _window(canvas: np.ndarray, room: Room, brightness: float) -> None:
    x0, y0, x1, y1 = room.window
    canvas[y0:y1, x0:x1] += brightness
    # A patch of sunlight on the floor below the window.
    floor_y0 = room.horizon + (room.pad + room.height - room.horizon) // 3
    span = (x1 - x0) // 2
    canvas[floor_y0 : floor_y0 + (y1 - y0), max(x0 - span, 0) : x1 + span] += 0.35 * brightness


def _blanket(canvas: np.ndarray, clip: SynthClip, t: float) -> None:
    """Over the patient's legs while in bed, folded at the foot end otherwise."""
    room = clip.room
    if not room.has_blanket:
        return
    x0, y0, x1, y1 = room.bed
    depth = max(2, (y1 - y0) // 3)
    patient = clip.actors[0]
    seg = patient.segment_at(t)
    placed = seg.at(t) if seg.state == "in_bed" else None
    if placed is not None and _on_mattress(placed[0], room):
        joints, h = placed
        hip_x, foot_x = joints[HIP, 0], 0.5 * (joints[FOOT_A, 0] + joints[FOOT_B, 0])
        lo, hi = sorted((hip_x, foot_x))
        top = int(min(joints[HIP, 1], joints[FOOT_A, 1]) - 0.07 * h)
        canvas[max(top, 0) : y0 + depth + 2, int(lo) : int(hi + 0.06 * h) + 1] = room.blanket
        return
    fold = (x1 - x0) // 5
    fx0 = x1 - fold if room.bed_head_left else x0
    canvas[y0 - 2 : y0 + depth + 2, fx0 : fx0 + fold] = room.blanket


def _on_mattress(joints: np.ndarray, room: Room) -> bool:
    """Whether the hips are still on the bed (not while getting out)."""
    x0, _, x1, _ = room.bed
    return bool(
        x0 <= joints[HIP, 0] <= x1
        and joints[HIP, 1] <= room.mattress_y + 0.2 * (room.bed[3] - room.bed[1])
    )


def _curtain(canvas: np.ndarray, room: Room, t: float, sway: float) -> None:
    if room.curtain is None:
        return
    (x0, y0, x1, y1), colour = room.curtain
    dx = round(sway * np.sin(0.7 * t))
    canvas[y0:y1, max(x0 + dx, 0) : x1 + dx] = colour
    canvas[y0:y1, max(x0 + dx, 0) : x1 + dx : 4] *= 0.85  # folds
