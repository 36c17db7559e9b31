"""``vigil experiment``: the ATCON benchmark (baseline vs ATCON-GB vs ATCON-IG over seeds)."""

from __future__ import annotations

import argparse
from pathlib import Path

PRESET_NAMES = ("smoke", "synthetic", "upfall")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``experiment`` subcommand."""
    parser = subparsers.add_parser(
        "experiment",
        help="run the ATCON benchmark and write results JSON",
        description="Fine-tune a supervised baseline, ATCON with Guided Backprop and ATCON with "
        "Integrated Gradients from the same start and budget for each seed; evaluate on held-out "
        "clips; report paired differences with 95% confidence intervals.",
    )
    parser.add_argument("--preset", choices=PRESET_NAMES, required=True)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--out", type=Path, required=True, help="results JSON")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="upfall: folder with upfall-s1/ (e.g. /work/shared/data/real)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("~/.cache/vigil/lab"),
        help="pre-trained backbones and decoded frames are cached here",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset field, e.g. finetuning.mask_intensity=16 (repeatable)",
    )
    parser.add_argument(
        "--methods",
        default="baseline,atcon_gb,atcon_ig",
        help="comma-separated subset (baseline is required)",
    )
    parser.add_argument(
        "--evaluate-on",
        choices=("test", "val"),
        default="test",
        help="'val' scores on the validation clips (for searches; test untouched)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the preset and print a short table."""
    import torch

    from lab.experiment import run_experiment
    from lab.presets import PRESETS, with_overrides

    if args.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    result = run_experiment(
        with_overrides(PRESETS[args.preset], args.overrides),
        args.seeds,
        args.out,
        data_path=args.data,
        cache_dir=args.cache_dir.expanduser(),
        progress=not args.no_progress,
        methods_run=methods,  # type: ignore[arg-type]
        evaluate_on=args.evaluate_on,
    )
    for name, method in result.methods.items():
        cells = "  ".join(f"{k}={_fmt(v)}" for k, v in method.mean.items())
        print(f"{name:10s} {cells}")
    for name, diffs in result.paired_diffs.items():
        d = diffs["macro_f1"]
        print(
            f"{name} - baseline macro-F1: {_fmt(d.mean)} "
            f"ci95 [{_fmt(d.ci95[0])}, {_fmt(d.ci95[1])}]"
        )
    print(f"wrote {args.out} ({result.seconds:.0f}s)")
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
