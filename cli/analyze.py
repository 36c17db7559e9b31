"""``vigil analyze VIDEO``: the worker's pipeline on one file, without Redis.

Writes ``OUT/timeline.json``, ``OUT/overlays/*.jpg`` and ``OUT/report.html``. Exit status: 0 on
success; 2 when the input or the model is unusable (one line on stderr says why); 3 when the file
breaks off part-way (the partial report is still written).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_TRUNCATED = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``analyze`` subcommand."""
    parser = subparsers.add_parser(
        "analyze",
        help="analyse one video file: timeline.json, overlays and report.html",
        description="Run Vigil's detection pipeline on one video file, without any server.",
    )
    parser.add_argument("video", type=Path, help="video file (e.g. H.264 in MP4)")
    parser.add_argument(
        "--model",
        metavar="PATH",
        type=Path,
        default=None,
        help="detector checkpoint (.safetensors); default: the built-in default detector",
    )
    parser.add_argument(
        "--fps",
        metavar="F",
        type=float,
        default=None,
        help="analysis rate in frames/s (default: VIGIL_ANALYSIS_FPS, 2)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=None,
        help="output directory (default: ./<video name>-vigil)",
    )
    parser.add_argument(
        "--device",
        metavar="D",
        default=None,
        help="'auto', 'cpu' or e.g. 'cuda:0' (default: VIGIL_DEVICE)",
    )
    parser.add_argument(
        "--min-length", metavar="S", type=float, default=1.0, help="shortest event kept, seconds"
    )
    parser.add_argument(
        "--merge-gap",
        metavar="S",
        type=float,
        default=1.0,
        help="merge events closer than this, seconds",
    )
    parser.add_argument(
        "--threads",
        metavar="N",
        type=int,
        default=None,
        help="torch intra-op threads on the CPU (default: CPU count - 1; decoding takes one core)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Analyse ``args.video``; returns the exit status."""
    from model.checkpoint import CheckpointError, load_checkpoint
    from service.config import get_settings
    from worker.decode import DecodeError
    from worker.infer import resolve_device
    from worker.pipeline import AnalyzeOptions, analyze_file
    from worker.report import OVERLAY_DIRNAME, write_outputs

    settings = get_settings()
    _set_threads(args.threads)
    out = args.out or Path(f"{args.video.stem}-vigil")
    try:
        options = AnalyzeOptions(
            fps=args.fps if args.fps is not None else settings.analysis_fps,
            min_length_s=args.min_length,
            merge_gap_s=args.merge_gap,
            max_duration_s=settings.max_segment_duration_s,
            max_pixels=settings.max_frame_pixels,
        )
    except ValueError as exc:
        return _fail(_first_error(exc))
    try:
        model_path = args.model or _default_model(progress=not args.no_progress)
        loaded = load_checkpoint(model_path, device=resolve_device(args.device or settings.device))
    except (CheckpointError, OSError) as exc:
        return _fail(f"cannot load the model: {exc}")
    except RuntimeError as exc:  # an unknown device, or CUDA asked for where there is none
        return _fail(f"cannot use device {args.device or settings.device!r}: {exc}".splitlines()[0])
    try:
        with _progress_bar(args.no_progress, args.video.name) as update:
            result = analyze_file(
                args.video,
                loaded,
                options=options,
                overlay_dir=out / OVERLAY_DIRNAME,
                progress=update,
            )
    except DecodeError as exc:
        return _fail(f"{exc.code}: {exc.message}")
    json_path, html_path = write_outputs(result, out)
    overlays = out / OVERLAY_DIRNAME
    print(f"{len(result.events)} event(s); wrote {json_path}, {html_path} and {overlays}/")
    if result.truncation is not None:
        return _fail(
            f"truncated: {result.truncation.message}; partial report written", EXIT_TRUNCATED
        )
    return 0


def _set_threads(threads: int | None) -> None:
    """Leave one core to the decoder thread: OpenMP threads that share a core with it stall at
    every parallel-region barrier (measured in docs/pipeline.md)."""
    import torch

    torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) - 1))


def _default_model(*, progress: bool) -> Path:
    from lab.recipes import ensure_default_detector  # heavy: imported only when needed

    return ensure_default_detector(progress=progress)


def _first_error(exc: ValueError) -> str:
    """One line for an invalid option (pydantic's first validation error)."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and errors():
        first = errors()[0]
        return f"invalid {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return f"invalid option: {str(exc).splitlines()[0]}"


def _fail(reason: str, status: int = EXIT_BAD_INPUT) -> int:
    print(f"vigil analyze: {reason}", file=sys.stderr)
    return status


@contextmanager
def _progress_bar(disabled: bool, name: str) -> Iterator[Callable[[float], None]]:
    """A tqdm bar over 0..100 %, fed by the pipeline's progress callback."""
    from tqdm import tqdm

    bar = tqdm(
        total=100,
        desc=name,
        unit="%",
        disable=disabled,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
    )

    def update(fraction: float) -> None:
        bar.update(round(100 * fraction) - bar.n)

    try:
        yield update
    finally:
        bar.close()
