"""What people do in a clip: timed motion segments per actor and the random scenario behind them.

An :class:`Actor` is a list of :class:`Segment` objects; each maps a time to the actor's image
joints ``(11, 2)`` and body height in pixels, and carries a semantic ``state`` (``in_bed``,
``stand``, ``walk``, ``chair``, ``crouch``, ``falling``, ``fallen``, ``absent``) from which the
labels are derived. Coordinates are canvas pixels (see :mod:`lab.synth.room`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lab.synth.figure import HAND_A, HAND_B, Appearance, lying, place, pose
from lab.synth.room import Room

State = Literal["in_bed", "stand", "walk", "chair", "crouch", "falling", "fallen", "absent"]
Role = Literal["patient", "staff"]
Placement = tuple[np.ndarray, float]
"""Image joints ``(11, 2)`` and body height in pixels."""


@dataclass(frozen=True)
class Segment:
    """``[t0, t1)`` of one motion; ``at(t)`` is ``None`` while the actor is off camera."""

    t0: float
    t1: float
    state: State
    at: Callable[[float], Placement | None]


@dataclass
class Actor:
    """One person and their timeline."""

    role: Role
    look: Appearance
    segments: list[Segment] = field(default_factory=list)

    def segment_at(self, t: float) -> Segment:
        """The segment covering ``t`` (the last one extends to the end of the clip)."""
        for seg in self.segments:
            if seg.t0 <= t < seg.t1:
                return seg
        return self.segments[-1]


_GOWNS = (
    (0.62, 0.75, 0.9),
    (0.7, 0.85, 0.75),
    (0.9, 0.9, 0.88),
    (0.6, 0.6, 0.65),
    (0.85, 0.7, 0.75),
)
_SCRUBS = (
    (0.15, 0.2, 0.45),
    (0.1, 0.5, 0.5),
    (0.2, 0.5, 0.25),
    (0.45, 0.12, 0.18),
    (0.95, 0.95, 0.95),
)
_SKINS = (
    (0.95, 0.8, 0.7),
    (0.85, 0.65, 0.5),
    (0.65, 0.45, 0.3),
    (0.45, 0.3, 0.2),
    (0.3, 0.2, 0.15),
)
_HAIR = ((0.1, 0.08, 0.05), (0.4, 0.25, 0.1), (0.85, 0.75, 0.45), (0.7, 0.7, 0.7))


def _jitter(
    rng: np.random.Generator, rgb: tuple[float, float, float], amount: float = 0.06
) -> tuple[float, float, float]:
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0, 1)) for c in rgb)  # type: ignore[return-value]


def sample_look(rng: np.random.Generator, role: Role) -> Appearance:
    """Random clothing, skin and hair colours for a patient (gown) or staff member (scrubs)."""
    top = _jitter(
        rng,
        _GOWNS[rng.integers(len(_GOWNS))]
        if role == "patient"
        else _SCRUBS[rng.integers(len(_SCRUBS))],
    )
    legs = top if rng.random() < 0.6 else _jitter(rng, (0.25, 0.25, 0.3), 0.15)
    return Appearance(
        clothing=top,
        legs=legs,
        skin=_jitter(rng, _SKINS[rng.integers(len(_SKINS))]),
        hair=_jitter(rng, _HAIR[rng.integers(len(_HAIR))]),
    )


class ScriptBuilder:
    """Appends segments to one actor while tracking where they are and what pose they hold."""

    def __init__(self, actor: Actor, room: Room, rng: np.random.Generator, t: float = 0.0) -> None:
        self.actor, self.room, self.rng, self.t = actor, room, rng, t
        self.pos: tuple[float, float] = (0.0, 0.0)
        self.facing = 1
        self.last: Placement | None = None

    # -- helpers -------------------------------------------------------------------------------
    def _add(self, duration: float, state: State, at: Callable[[float], Placement | None]) -> None:
        t0 = self.t
        self.actor.segments.append(Segment(t0, t0 + duration, state, lambda t: at(t - t0)))
        self.t += duration
        self.last = at(duration)

    def _standing(self, pos: tuple[float, float], kind: str = "stand") -> Placement:
        h = self.room.height_at(pos[1])
        return place(pose(kind), pos, h, facing=self.facing), h

    def _lerp(self, duration: float, state: State, end: Placement) -> None:
        start = self.last
        assert start is not None

        def at(dt: float) -> Placement:
            u = float(np.clip(dt / duration, 0, 1))
            u = u * u * (3 - 2 * u)  # smoothstep: people start and stop gently
            return (1 - u) * start[0] + u * end[0], (1 - u) * start[1] + u * end[1]

        self._add(duration, state, at)

    def hold(self, duration: float, state: State, sway: float = 0.004) -> None:
        """Stay in the current pose, breathing/swaying slightly."""
        base = self.last
        assert base is not None
        phase = self.rng.uniform(0, 2 * np.pi)

        def at(dt: float) -> Placement:
            shift = np.array([np.sin(1.3 * dt + phase), np.sin(2.1 * dt + phase)]) * sway * base[1]
            return base[0] + shift, base[1]

        self._add(duration, state, at)

    # -- bed -----------------------------------------------------------------------------------
    def _bed_body(self) -> tuple[float, int, float]:
        """Body height in bed, direction of the feet (+1 = to the right), x of the head end."""
        x0, _, x1, _ = self.room.bed
        h = 0.9 * self.room.height_at(self.room.bed_front_y)
        feet_dir = 1 if self.room.bed_head_left else -1
        head_x = x0 + 0.1 * h if self.room.bed_head_left else x1 - 0.1 * h
        return h, feet_dir, head_x

    def lie_in_bed(self, duration: float) -> None:
        h, feet_dir, head_x = self._bed_body()
        surface = self.room.mattress_y + 0.05 * h
        self.last = lying((head_x + feet_dir * 0.99 * h, surface), h, -feet_dir), h
        self.hold(duration, "in_bed", sway=0.002)

    def sit_up(self, duration: float) -> None:
        h, feet_dir, head_x = self._bed_body()
        end = (
            place(
                pose("sit_long"),
                (head_x + feet_dir * 0.12 * h, self.room.mattress_y + 0.05 * h),
                h,
                facing=feet_dir,
            ),
            h,
        )
        self._lerp(duration, "in_bed", end)

    def lie_back(self, duration: float) -> None:
        h, feet_dir, head_x = self._bed_body()
        end = (
            lying((head_x + feet_dir * 0.99 * h, self.room.mattress_y + 0.05 * h), h, -feet_dir),
            h,
        )
        self._lerp(duration, "in_bed", end)

    def get_out(self, duration: float) -> None:
        x0, _, x1, _ = self.room.bed
        low, high = self.room.floor_rows
        self.pos = (
            float(self.rng.uniform(x0 + 0.3 * (x1 - x0), x1 - 0.3 * (x1 - x0))),
            float(self.rng.uniform(low, low + 0.3 * (high - low))),
        )
        self.facing = 1 if self.room.bed_head_left else -1
        self._lerp(duration, "in_bed", self._standing(self.pos))

    # -- on the floor ----------------------------------------------------------------------------
    def place_standing(self, pos: tuple[float, float]) -> None:
        self.pos = pos
        self.last = self._standing(pos)

    def walk_to(self, target: tuple[float, float], speed_bodies_s: float = 0.55) -> None:
        start = self.pos
        h_mid = self.room.height_at(0.5 * (start[1] + target[1]))
        dist = float(np.hypot(target[0] - start[0], target[1] - start[1]))
        duration = max(dist / (speed_bodies_s * h_mid), 0.3)
        if abs(target[0] - start[0]) > 1:
            self.facing = 1 if target[0] > start[0] else -1
        facing, room = self.facing, self.room
        stride = 0.35 * h_mid

        def at(dt: float) -> Placement:
            u = min(dt / duration, 1.0)
            pos = (start[0] + u * (target[0] - start[0]), start[1] + u * (target[1] - start[1]))
            h = room.height_at(pos[1])
            return place(pose("walk", phase=np.pi * u * dist / stride), pos, h, facing=facing), h

        self._add(duration, "walk", at)
        self.pos = target
        self.last = self._standing(target)

    def posture(self, kind: Literal["chair", "crouch"], duration: float) -> None:
        """Sit on a chair or crouch (pick something up), hold, and stand up again."""
        down = 0.6 if kind == "crouch" else 0.9
        self._lerp(
            down, kind, self._standing(self.pos, "sit_chair" if kind == "chair" else "crouch")
        )
        self.hold(duration, kind)
        self._lerp(down, "stand", self._standing(self.pos))

    def fall(self, duration: float, style: Literal["trip", "slump"]) -> None:
        """Fall sideways from standing; afterwards the person lies on the floor (``fallen``)."""
        # Towards the side with more floor, so the person usually lands inside the picture.
        centre = self.room.pad + self.room.width / 2
        self.facing = 1 if self.pos[0] < centre else -1
        pos, facing = self.pos, self.facing
        h = self.room.height_at(pos[1])
        arms_up = pose("stand")
        arms_up[[HAND_A, HAND_B]] = [[0.25, 0.85], [0.2, 0.9]]
        end = lying(pos, h, facing)
        if style == "slump":  # squat into nothing, then go down backwards (UP-Fall A5)
            self._lerp(
                0.45 * duration, "falling", (place(pose("sit_chair"), pos, h, facing=facing), h)
            )
            self._lerp(0.55 * duration, "falling", (end, h))
            return

        def at(dt: float) -> Placement:
            u = float(np.clip(dt / duration, 0, 1))
            body = (1 - u) * pose("stand") + u * arms_up
            joints = place(body, pos, h, angle_deg=90.0 * u * u, facing=facing)  # accelerating
            joints[:, 1] -= 0.085 * h * u * u
            return joints, h

        self._add(duration, "falling", at)
        self.last = end, h

    def absent(self, duration: float) -> None:
        self._add(duration, "absent", lambda _dt: None)
        self.last = None

    def exit_x(self, side: int) -> float:
        """A foot x where the whole body is outside the frame on ``side`` (-1 left, +1 right)."""
        h = self.room.height_at(self.pos[1])
        edge = self.room.pad if side < 0 else self.room.pad + self.room.width
        return float(edge + side * 0.45 * h)
