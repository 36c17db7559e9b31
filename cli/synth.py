"""``vigil synth``: generate a synthetic clinical-room video dataset (MP4 + labels + boxes)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``synth`` subcommand."""
    parser = subparsers.add_parser(
        "synth",
        help="generate synthetic clinical-room clips with labels and boxes",
        description="Render procedurally generated clinical-room clips (H.264 MP4) with interval "
        "labels (labels.csv) and per-frame person boxes (boxes.csv). Seeded and deterministic.",
    )
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--rooms", type=int, default=4, help="number of rooms (camera set-ups)")
    parser.add_argument("--clips-per-room", type=int, default=3)
    parser.add_argument(
        "--room-offset",
        type=int,
        default=0,
        help="first room id; disjoint ranges give disjoint rooms",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per clip")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fall-prob", type=float, default=0.5, help="share of clips with a fall")
    parser.add_argument(
        "--classes",
        default="person_present,multiple_people,falling,fallen",
        help="comma-separated; also known: in_bed, staff_present",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the dataset with a progress bar."""
    from tqdm import tqdm

    from lab.synth.scenario import ScenarioConfig
    from lab.synth.writer import SynthConfig, write_dataset

    cfg = SynthConfig(
        rooms=args.rooms,
        clips_per_room=args.clips_per_room,
        room_offset=args.room_offset,
        duration_s=args.duration,
        fps=args.fps,
        width=args.width,
        height=args.height,
        seed=args.seed,
        classes=tuple(c.strip() for c in args.classes.split(",") if c.strip()),
        scenario=ScenarioConfig(fall_prob=args.fall_prob),
    )
    with tqdm(total=cfg.rooms * cfg.clips_per_room, unit="clip", desc="synth") as bar:
        write_dataset(cfg, args.out, progress=lambda done, _total: bar.update(1))
    print(f"wrote {cfg.rooms * cfg.clips_per_room} clips, labels.csv and boxes.csv to {args.out}")
    return 0
