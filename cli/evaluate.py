"""``vigil evaluate MODEL --labels CSV --data-root DIR``: score a detector on labeled clips.

``MODEL`` is a Vigil checkpoint (``.safetensors``: the real pipeline runs on every selected clip
and each timeline is written to ``OUT/timelines/<clip>.json``) or a directory of timelines laid
out the same way (a peer detector's output, or an earlier run's ``OUT/timelines``). Writes
``OUT/evaluation.json`` (every count and per-fall row) and ``OUT/evaluation.md`` (the table, also
printed). Metric definitions: :mod:`lab.event_eval` and ``docs/pipeline.md``. Exit status: 0; 2
with one line ``vigil evaluate: <reason>`` on stderr for a bad input.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TypeVar

from cli.analyze import EXIT_BAD_INPUT

if TYPE_CHECKING:
    from lab.datasets import BoxRow, Interval
    from lab.event_eval import BoxRowResult, EvalTimeline, Evaluation
    from model.checkpoint import LoadedModel

_T = TypeVar("_T")
TIMELINE_DIRNAME = "timelines"
DEFAULT_FPS = 5.0
DEFAULT_OUT = Path("runs/evaluate")


class BadInput(Exception):
    """An input that cannot be evaluated; the message is the one line shown to the user."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint or a directory of timelines against interval labels",
        description="Frame, event, false-alarm, fall-alert and (with --boxes) Grad-CAM box "
        "metrics of a detector on labeled clips.",
    )
    parser.add_argument(
        "model", metavar="MODEL", type=Path,
        help="checkpoint (.safetensors), or a directory of timelines DIR/<clip>.json",
    )  # fmt: skip
    parser.add_argument(
        "--labels", metavar="CSV", type=Path, required=True,
        help="interval labels clip,label,start_s,end_s[,note] (clip relative to --data-root)",
    )  # fmt: skip
    parser.add_argument("--data-root", metavar="DIR", type=Path, required=True,
                        help="folder the labels' clip paths are relative to")  # fmt: skip
    parser.add_argument("--boxes", metavar="CSV", type=Path, default=None,
                        help="boxes clip,t_s,x0,y0,x1,y1,label (clip pixels); checkpoints only")
    parser.add_argument("--fps", metavar="F", type=float, default=None,
                        help=f"analysis rate for a checkpoint (default {DEFAULT_FPS:g})")
    parser.add_argument(
        "--clips", metavar="GLOB", nargs="+", default=None,
        help="evaluate only the labeled clips matching one of these patterns (fnmatch)",
    )  # fmt: skip
    parser.add_argument("--out", metavar="DIR", type=Path, default=DEFAULT_OUT,
                        help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--threads", metavar="N", type=int, default=None,
                        help="torch intra-op threads (default: CPU count - 1)")
    parser.add_argument("--device", metavar="D", default=None,
                        help="'auto', 'cpu' or e.g. 'cuda:0' (default: VIGIL_DEVICE)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate ``args.model``; returns the exit status."""
    try:
        evaluation = _evaluate(args)
    except BadInput as exc:
        print(f"vigil evaluate: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from lab.event_eval import markdown_report

    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown_report(evaluation)
    (args.out / "evaluation.json").write_text(evaluation.model_dump_json(indent=1) + "\n")
    (args.out / "evaluation.md").write_text(table)
    print(table)
    print(f"wrote {args.out / 'evaluation.json'} and {args.out / 'evaluation.md'}")
    return 0


def _evaluate(args: argparse.Namespace) -> Evaluation:
    """Read the inputs, get one timeline per selected clip, score them."""
    from lab.event_eval import evaluate, labels_in_order, summarize_boxes

    intervals = _read_labels(args.labels)
    clips = select_clips(intervals, args.clips)
    notes: list[str] = []
    loaded = box_rows = None
    if args.model.is_dir():
        timelines = peer_timelines(args.model, clips)
        classes, kind, version = labels_in_order(intervals), "timelines", None
        if args.boxes is not None:
            notes.append("--boxes left out: box metrics need a checkpoint (Grad-CAM)")
    elif args.model.is_file() and args.model.suffix == ".safetensors":
        _check_clips(args.data_root, clips)
        box_rows = None if args.boxes is None else _read_box_rows(args.boxes)
        loaded = _load(args)
        timelines = _run_checkpoint(loaded, clips, args, notes)
        classes, kind, version = list(loaded.meta.classes), "checkpoint", loaded.meta.version
        absent = [label for label in labels_in_order(intervals) if label not in classes]
        if absent:
            notes.append(f"labels the model does not have, not scored: {', '.join(absent)}")
    else:
        absent = "" if args.model.exists() else " (it does not exist)"
        raise BadInput(f"MODEL {args.model} is neither a checkpoint (.safetensors) nor a "
                       f"directory of timelines{absent}")  # fmt: skip
    evaluation = evaluate(timelines, intervals, classes)
    if loaded is not None and box_rows is not None:
        rows, box_notes = _boxes(loaded, box_rows, args, clips)
        notes += box_notes
        for label, metrics in summarize_boxes(rows).items():
            evaluation.labels[label].boxes = metrics
        evaluation.boxes = rows
    evaluation.source = {
        "model": str(args.model), "kind": kind, "version": version,
        "labels": str(args.labels), "data_root": str(args.data_root),
        "fps": (args.fps or DEFAULT_FPS) if kind == "checkpoint" else None,
        "clip_patterns": args.clips, "boxes": None if args.boxes is None else str(args.boxes),
    }  # fmt: skip
    evaluation.notes = notes
    return evaluation


def _read_labels(path: Path) -> list[Interval]:
    from lab.datasets import read_intervals

    if not path.is_file():
        raise BadInput(f"labels file not found: {path}")
    try:
        intervals = read_intervals(path)
    except (ValueError, KeyError, OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read the labels {path}: {exc}") from exc
    if not intervals:
        raise BadInput(f"no labeled interval in {path}")
    return intervals


def select_clips(intervals: Sequence[Interval], patterns: Sequence[str] | None) -> list[str]:
    """The labeled clips (in order of first appearance), narrowed to those matching one of
    ``patterns`` when given; each pattern must match a clip, each clip path must be relative."""
    clips = list(dict.fromkeys(iv.clip for iv in intervals))
    for clip in clips:
        parts = PurePosixPath(clip).parts
        if not clip or PurePosixPath(clip).is_absolute() or ".." in parts:
            raise BadInput(f"clip paths must be relative to --data-root without '..': {clip!r}")
    if patterns is None:
        return clips
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(c, pattern) for c in clips):
            raise BadInput(f"--clips {pattern!r} matches no labeled clip")
    return [c for c in clips if any(fnmatch.fnmatchcase(c, p) for p in patterns)]


def timeline_path(root: Path, clip: str) -> Path:
    """Where the timeline of ``clip`` lives in a timeline directory: ``root/<clip>.json``."""
    return root / f"{clip}.json"


def peer_timelines(root: Path, clips: Sequence[str]) -> dict[str, EvalTimeline]:
    """The timeline of every clip from a directory ``root/<clip>.json``."""
    from lab.event_eval import TimelineError, load_timeline

    timelines = {}
    for clip in clips:
        path = timeline_path(root, clip)
        if not path.is_file():
            raise BadInput(f"no timeline for labeled clip {clip} in {root} (expected {path})")
        try:
            timelines[clip] = load_timeline(path)
        except TimelineError as exc:
            raise BadInput(str(exc)) from exc
    return timelines


def _check_clips(data_root: Path, clips: Sequence[str]) -> None:
    missing = [c for c in clips if not (data_root / c).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise BadInput(f"clip not found under {data_root}: {missing[0]}{more}")


def _load(args: argparse.Namespace) -> LoadedModel:
    from model.checkpoint import CheckpointError, load_checkpoint
    from service.config import get_settings
    from worker.infer import resolve_device

    device = args.device or get_settings().device
    try:
        return load_checkpoint(args.model, device=resolve_device(device))
    except (CheckpointError, OSError) as exc:
        raise BadInput(f"cannot load the checkpoint: {exc}") from exc
    except RuntimeError as exc:  # an unknown device, or CUDA where there is none
        raise BadInput(f"cannot use device {device!r}: {exc}".splitlines()[0]) from exc


def _run_checkpoint(
    loaded: LoadedModel, clips: Sequence[str], args: argparse.Namespace, notes: list[str]
) -> dict[str, EvalTimeline]:
    """Analyse every clip; write ``OUT/timelines/<clip>.json``; return the timelines as read
    back from those files (so a re-score of ``OUT/timelines`` sees the same numbers)."""
    import torch
    from tqdm import tqdm

    from lab.event_eval import EvalTimeline
    from worker.decode import DecodeError
    from worker.pipeline import AnalyzeOptions, analyze_file
    from worker.report import timeline_from_result

    try:
        options = AnalyzeOptions(fps=args.fps or DEFAULT_FPS, overlays=False, consistency=False,
                                 max_duration_s=None)  # fmt: skip
    except ValueError as exc:
        raise BadInput(f"invalid --fps {args.fps}: must be in (0, 60]") from exc
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) - 1))
    timelines = {}
    for clip in tqdm(clips, desc="evaluate", unit="clip", disable=args.no_progress):
        try:
            result = analyze_file(args.data_root / clip, loaded, options=options)
        except DecodeError as exc:
            raise BadInput(f"{clip}: {exc.code}: {exc.message}") from exc
        if result.truncation is not None:
            notes.append(f"{clip}: {result.truncation.message}; scored what was decoded")
        path = timeline_path(args.out / TIMELINE_DIRNAME, clip)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = timeline_from_result(result).model_dump_json(indent=1)
        path.write_text(text + "\n", encoding="utf-8")
        timelines[clip] = EvalTimeline.model_validate_json(text)
    return timelines


def _read_box_rows(path: Path) -> list[BoxRow]:
    from lab.datasets import read_boxes

    if not path.is_file():
        raise BadInput(f"boxes file not found: {path}")
    try:
        return read_boxes(path)
    except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read the boxes {path}: {exc!r}") from exc


def _boxes(
    loaded: LoadedModel, rows: list[BoxRow], args: argparse.Namespace, clips: Sequence[str]
) -> tuple[list[BoxRowResult], list[str]]:
    """Grad-CAM box IoU and pointing game on the labeled boxes of the evaluated clips."""
    from tqdm import tqdm

    from lab.event_eval_boxes import evaluate_boxes

    def wrap(items: Iterable[_T]) -> Iterator[_T]:
        return iter(tqdm(items, desc="boxes", unit="box", disable=args.no_progress))

    return evaluate_boxes(loaded, rows, args.data_root, set(clips), wrap=wrap)
