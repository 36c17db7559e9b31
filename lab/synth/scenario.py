"""Random scenarios: the patient's day in miniature and staff visits, as actor scripts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lab.synth.room import Room
from lab.synth.script import Actor, ScriptBuilder, sample_look


@dataclass(frozen=True)
class ScenarioConfig:
    """Rates of the events in a clip."""

    fall_prob: float = 0.5
    staff_counts: tuple[float, float, float] = (0.45, 0.4, 0.15)
    start_probs: tuple[float, float, float, float] = (0.45, 0.25, 0.15, 0.15)
    """Probabilities that the patient starts in bed, standing, absent, or on a chair."""


def _floor_point(b: ScriptBuilder, *, inside: float = 0.12) -> tuple[float, float]:
    room = b.room
    low, high = room.floor_rows
    margin = inside * room.width
    return (
        float(b.rng.uniform(room.pad + margin, room.pad + room.width - margin)),
        float(b.rng.uniform(low, high - 0.05 * (high - low))),
    )


def _enter(b: ScriptBuilder) -> None:
    """Walk in from a frame edge to a point on the floor."""
    target = _floor_point(b)
    side = -1 if b.rng.random() < 0.5 else 1
    b.pos = (target[0], target[1])
    b.place_standing((b.exit_x(side), target[1]))
    b.walk_to(target)


def _start(b: ScriptBuilder, cfg: ScenarioConfig) -> str:
    kind = ("bed", "stand", "absent", "chair")[int(b.rng.choice(4, p=cfg.start_probs))]
    if kind == "bed":
        b.lie_in_bed(float(b.rng.uniform(1.0, 4.0)))
        return "bed"
    b.place_standing(_floor_point(b))
    if kind == "absent":
        b.absent(float(b.rng.uniform(1.0, 4.0)))
        _enter(b)
    elif kind == "chair":
        b.posture("chair", float(b.rng.uniform(1.5, 4.0)))
    return "stand"


def _from_bed(b: ScriptBuilder, falls_soon: bool) -> str:
    b.sit_up(float(b.rng.uniform(0.9, 1.6)))
    b.hold(float(b.rng.uniform(0.8, 3.0)), "in_bed")
    if not falls_soon and b.rng.random() < 0.25:
        b.lie_back(float(b.rng.uniform(0.9, 1.5)))
        b.hold(float(b.rng.uniform(1.0, 3.0)), "in_bed", sway=0.002)
        return "bed"
    b.get_out(float(b.rng.uniform(1.0, 1.8)))
    return "stand"


def _on_floor(b: ScriptBuilder, falls_soon: bool) -> None:
    choice = str(
        b.rng.choice(["walk", "hold", "crouch", "chair", "exit"], p=[0.5, 0.15, 0.1, 0.1, 0.15])
    )
    if choice == "walk" or (falls_soon and choice in {"exit", "chair"}):
        b.walk_to(_floor_point(b))
    elif choice == "hold":
        b.hold(float(b.rng.uniform(0.5, 2.0)), "stand")
    elif choice in {"crouch", "chair"}:
        b.posture(choice, float(b.rng.uniform(1.0, 3.0)))  # type: ignore[arg-type]
    else:
        side = -1 if b.pos[0] < b.room.pad + b.room.width / 2 else 1
        b.walk_to((b.exit_x(side), b.pos[1]))
        b.absent(float(b.rng.uniform(1.0, 4.0)))
        _enter(b)


def patient_script(
    room: Room, rng: np.random.Generator, duration: float, cfg: ScenarioConfig
) -> Actor:
    """The patient's timeline over ``duration`` seconds (may fall once and then stays down)."""
    actor = Actor(role="patient", look=sample_look(rng, "patient"))
    b = ScriptBuilder(actor, room, rng)
    fall_at = float(rng.uniform(0.25, 0.7) * duration) if rng.random() < cfg.fall_prob else np.inf
    where = _start(b, cfg)
    while b.t < duration:
        falls_soon = b.t + 4.0 >= fall_at
        if where == "bed":
            where = _from_bed(b, falls_soon)
        elif b.t >= fall_at:
            b.fall(float(rng.uniform(0.5, 1.1)), "slump" if rng.random() < 0.3 else "trip")
            b.hold(max(duration - b.t, 0.0) + 1.0, "fallen", sway=0.003)
        else:
            _on_floor(b, falls_soon)
    return actor


def staff_scripts(
    room: Room, rng: np.random.Generator, duration: float, cfg: ScenarioConfig
) -> list[Actor]:
    """Zero to two staff members who walk in from an edge, attend near the bed and leave."""
    actors = []
    for _ in range(int(rng.choice(3, p=cfg.staff_counts))):
        actor = Actor(role="staff", look=sample_look(rng, "staff"))
        b = ScriptBuilder(actor, room, rng)
        b.place_standing(_floor_point(b))
        b.absent(float(rng.uniform(0.0, max(duration - 5.0, 0.5))))
        side = -1 if rng.random() < 0.5 else 1
        x0, _, x1, _ = room.bed
        low, high = room.floor_rows
        target = (float(rng.uniform(x0, x1)), float(rng.uniform(low, low + 0.5 * (high - low))))
        b.pos = target
        b.place_standing((b.exit_x(side), target[1]))
        b.walk_to(target)
        if rng.random() < 0.3:
            b.posture("crouch", float(rng.uniform(1.0, 3.0)))
        else:
            b.hold(float(rng.uniform(1.5, 5.0)), "stand")
        b.walk_to((b.exit_x(side), target[1] + rng.uniform(-3, 3)))
        b.absent(duration + 1.0)
        actors.append(actor)
    return actors
