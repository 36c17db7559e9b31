"""``vigil train``: train or ATCON-fine-tune a detector.

Settings come from ``--config FILE`` (JSON or TOML with :class:`model.train.TrainConfig`'s
fields), overridden by flags. Inputs: ``--generated`` (a small procedurally generated set: the
quick start), ``--frames DIR`` (frame folders, see ``docs/training.md``) or ``--frameset FILE``
(a saved FrameSet), with ``--unlabeled`` and ``--val``. ``--baseline-epochs N`` first trains a
supervised baseline from the initial weights (batch-norm training) and then fine-tunes it with
the configured mode, like the paper's protocol.
"""

from __future__ import annotations

import argparse
import json
import logging
import tomllib
from pathlib import Path
from typing import Any

# Flags that override TrainConfig fields: (flag, field, type, help).
_OVERRIDES: tuple[tuple[str, str, type, str], ...] = (
    ("--arch", "arch", str, "efficientnet_lite0|1|2 | resnet18 | resnet34 | resnet50"),
    ("--mode", "mode", str, "supervised | unsupervised | alternating | combined"),
    ("--epochs", "epochs", int, "number of epochs"),
    ("--lr", "lr", float, "Adam learning rate"),
    ("--batch-size", "batch_size", int, "labeled batch size"),
    ("--unlabeled-batch-size", "unlabeled_batch_size", int, "unlabeled batch size"),
    ("--alpha", "alpha", float, "labeled weight of the alternating schedule (default 8)"),
    ("--combined-weight", "combined_weight", float, "consistency weight in combined mode"),
    ("--second", "second", str, "guided_backprop | integrated_gradients"),
    ("--mask-intensity", "mask_intensity", float, "ATCON soft-mask intensity w (default 8)"),
    ("--input-size", "input_size", int, "model input size in pixels"),
    ("--steps-per-epoch", "steps_per_epoch", int, "override the steps-per-epoch rule"),
    ("--seed", "seed", int, "random seed"),
    ("--device", "device", str, "cpu | cuda | cuda:N | auto"),
    ("--init-weights", "init_weights", str, "checkpoint / state dict / torchvision weights name"),
)
_CHOICES: dict[str, tuple[str, ...]] = {
    "arch": ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
             "resnet18", "resnet34", "resnet50"),
    "mode": ("supervised", "unsupervised", "alternating", "combined"),
    "second": ("guided_backprop", "integrated_gradients"),
}
_SWITCHES: tuple[tuple[str, str, str], ...] = (
    ("reflect-padding", "reflect_padding", "reflect padding in convolutions (paper setting)"),
    ("freeze-bn", "freeze_bn", "keep batch-norm statistics frozen (default on)"),
    ("channels-last", "channels_last", "channels-last memory format"),
)
# Defaults of the quick start: tiny frames, a lively learning rate for training from scratch.
GENERATED_DEFAULTS: dict[str, Any] = {
    "input_size": 64, "epochs": 2, "lr": 1e-4, "batch_size": 16, "unlabeled_batch_size": 16,
    "eval_batch_size": 64, "val_consistency_frames": 64,
}
GENERATED_SIZES = {"labeled": 128, "unlabeled": 256, "val": 96}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``vigil train``."""
    p = subparsers.add_parser("train", help="train or ATCON-fine-tune a detector",
                              description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", type=Path, help="JSON or TOML file of TrainConfig fields")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--generated", action="store_true",
                        help="use the small generated shapes set (quick start)")
    source.add_argument("--frames", type=Path,
                        help="frame folders: DIR/train, DIR/val[, DIR/unlabeled]")
    source.add_argument("--frameset", type=Path, help="a saved FrameSet (.safetensors): labeled")
    source.add_argument("--recipe", help="run a recipe into --out: 'real' (ImageNet "
                        "EfficientNet-Lite0 on real footage; needs --data), 'shipped' (the "
                        "default detector, from shippable data; needs --data) or 'generated' "
                        "(ResNet-18 from scratch on generated rooms, the old default)")
    p.add_argument("--data", type=Path,
                   help="real-data root for --recipe real (upfall-s1/, gmdcsa24/, coco128-person/)")
    p.add_argument("--split", choices=("trial", "camera"), default="trial",
                   help="--recipe real: hold out UP-Fall T3 (trial) or Cam2 (camera)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--labels", type=Path,
                        help="interval labels (clip,label,start_s,end_s) of clips under "
                             "--data-root; settings of --recipe (default 'real')")
    p.add_argument("--data-root", type=Path, help="folder the clips of --labels are relative to")
    p.add_argument("--val-labels", type=Path,
                   help="validation clips' labels (default: 20%% of the --labels clips)")
    p.add_argument("--images", type=Path, action="append", default=[],
                   help="a YOLO-layout image set with person boxes (repeatable)")
    p.add_argument("--unlabeled-videos", type=Path,
                   help="a folder of videos: unlabeled frames for ATCON (1 frame/s)")
    p.add_argument("--unlabeled", type=Path, help="unlabeled frames: FrameSet file or image folder")
    p.add_argument("--val", type=Path, help="validation frames: FrameSet file or split folder")
    p.add_argument("--frame-size", type=int, help="resize folder images to this square size")
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="output folder")
    p.add_argument("--baseline-epochs", type=int, default=None,
                   help="first train a supervised baseline for N epochs (default: 4 with "
                        "--generated, else 0)")
    p.add_argument("--baseline-lr", type=float, default=1e-3, help="learning rate of the baseline")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from OUT/last.safetensors when present (default on)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar")
    for flag, field, kind, text in _OVERRIDES:
        p.add_argument(flag, dest=field, type=kind, default=None, help=text,
                       choices=_CHOICES.get(field))
    for name, field, text in _SWITCHES:
        p.add_argument(f"--{name}", dest=field, action=argparse.BooleanOptionalAction,
                       default=None, help=text)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``vigil train``."""
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    if args.labels is not None:
        return _run_labels(args)
    if args.recipe in ("real", "shipped"):
        return _run_real(args)
    if args.recipe:
        from lab.recipes import run_recipe  # owned by the lab package; imported only here

        path = run_recipe(args.recipe, args.out, progress=args.progress)
        print(f"checkpoint: {path}")
        return 0
    if not getattr(args, "verbose", False):
        # The per-epoch lines printed here say more than model.train's log line; show one.
        logging.getLogger("model.train").setLevel(logging.WARNING)
    labeled, unlabeled, val = load_inputs(args)
    fields = config_fields(args, labeled.classes)
    baseline_epochs = args.baseline_epochs
    if baseline_epochs is None:
        baseline_epochs = 4 if args.generated else 0
    return train_and_report(fields, labeled, unlabeled, val, args, baseline_epochs)


def _run_real(args: argparse.Namespace) -> int:
    from lab.real_recipe import run_real_recipe, run_shipped_recipe

    if args.data is None:
        raise SystemExit(f"--recipe {args.recipe} needs --data DIR (the real-data root, e.g. "
                         "../shared/data/real)")
    for name in ("lab.real_recipe", "model.train"):
        logging.getLogger(name).setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(message)s")
    overrides = flag_overrides(args)
    try:
        if args.recipe == "shipped":
            path = run_shipped_recipe(args.data, args.out, progress=args.progress,
                                      overrides=overrides)
            print(f"default detector (fp16): {path}; ship it as lab/weights/{path.name}")
            return 0
        path = run_real_recipe(args.data, args.out, split=args.split, progress=args.progress,
                               overrides=overrides)
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None
    print(f"checkpoint: {path}")
    print(f"held-out labels: {args.out / 'heldout-labels.csv'} (vigil evaluate {path} --labels "
          f"{args.out / 'heldout-labels.csv'} --data-root {args.data})")
    return 0


def _run_labels(args: argparse.Namespace) -> int:
    """``vigil train --labels CSV --data-root DIR``: the recipe's settings on the user's clips."""
    from lab.real_recipe import FRAME_SIZE, REAL_TRAIN_CONFIG, unlabeled_frames, user_sets

    if args.data_root is None:
        raise SystemExit("--labels needs --data-root DIR (the folder its clips are relative to)")
    if args.recipe not in (None, "real"):
        raise SystemExit("--labels composes with --recipe real only")
    cache = args.out / "frame-cache"
    try:
        labeled, val, classes, lists = user_sets(
            args.labels, args.data_root, val_labels=args.val_labels, images=args.images,
            val_fraction=0.2, seed=args.seed or 0, size=FRAME_SIZE, cache_dir=cache)
        unlabeled = None
        if args.unlabeled_videos is not None:
            unlabeled = unlabeled_frames(args.unlabeled_videos, classes, size=FRAME_SIZE,
                                         cache_dir=cache)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(str(exc)) from None
    print(f"clips: {len(lists['train'])} train, {len(lists['val'])} validation; frames: "
          f"{len(labeled)} labeled (rare classes oversampled), {len(val)} validation"
          + (f", {len(unlabeled)} unlabeled" if unlabeled is not None else ""))
    # the recipe's settings < config file < flags (config_fields reads the file)
    fields = {**REAL_TRAIN_CONFIG, **config_fields(args, classes), "classes": list(classes)}
    baseline = args.baseline_epochs or 0
    return train_and_report(fields, labeled, unlabeled, val, args, baseline)


def config_fields(args: argparse.Namespace, classes: tuple[str, ...]) -> dict[str, Any]:
    """TrainConfig fields: generated-set defaults < config file < flags; classes from the data."""
    fields: dict[str, Any] = dict(GENERATED_DEFAULTS) if args.generated else {}
    if args.config is not None:
        fields.update(read_config_file(args.config))
    fields.update(flag_overrides(args))
    for _, field, _ in _SWITCHES:
        if getattr(args, field) is not None:
            fields[field] = getattr(args, field)
    fields.setdefault("classes", list(classes))
    return fields


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields set by value flags (``--lr``, ``--epochs``, ...)."""
    return {field: getattr(args, field) for _, field, _, _ in _OVERRIDES
            if getattr(args, field) is not None}


def read_config_file(path: Path) -> dict[str, Any]:
    """A JSON (``.json``) or TOML (anything else) file of TrainConfig fields."""
    text = path.read_text()
    data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a table/object of TrainConfig fields")
    return data


def load_inputs(args: argparse.Namespace):  # -> tuple[FrameSet, FrameSet | None, FrameSet]
    """The labeled, unlabeled and validation FrameSets the flags name."""
    from model.data import FrameSet, generated_frameset

    if args.generated:
        seed = args.seed or 0
        sizes = GENERATED_SIZES
        labeled = generated_frameset(sizes["labeled"], seed=seed * 10 + 1)
        unlabeled = generated_frameset(sizes["unlabeled"], seed=seed * 10 + 2).unlabeled()
        return labeled, unlabeled, generated_frameset(sizes["val"], seed=seed * 10 + 3)
    if args.frames is not None:
        labeled = _load_path(args.frames / "train", None, args.frame_size)
        classes = labeled.classes
        val = _load_path(args.val or args.frames / "val", classes, args.frame_size)
        unl_path = args.unlabeled or args.frames / "unlabeled"
        unlabeled = _load_path(unl_path, classes, args.frame_size) if unl_path.exists() else None
        return labeled, unlabeled, val
    if args.frameset is not None:
        labeled = FrameSet.load(args.frameset)
        classes = labeled.classes
        if args.val is None:
            raise SystemExit("--frameset needs --val (a FrameSet file or a frame folder)")
        val = _load_path(args.val, classes, args.frame_size)
        unlabeled = _load_path(args.unlabeled, classes, args.frame_size) if args.unlabeled else None
        return labeled, unlabeled, val
    raise SystemExit("give an input: --generated, --frames DIR, --frameset FILE or --recipe NAME")


def _load_path(path: Path, classes: tuple[str, ...] | None, size: int | None):  # -> FrameSet
    from model.data import FrameSet, load_frame_folder

    if path.is_dir():
        return load_frame_folder(path, classes=classes, size=size)
    data = FrameSet.load(path)
    if classes is not None and data.classes != tuple(classes):
        raise SystemExit(f"{path}: classes {list(data.classes)} differ from {list(classes)}")
    return data


def train_and_report(fields: dict[str, Any], labeled, unlabeled, val, args: argparse.Namespace,
                     baseline_epochs: int) -> int:
    """Optional supervised baseline, then the configured run; prints a line per epoch."""
    from model.train import TrainConfig, train

    config = TrainConfig.model_validate(fields)
    runs: list[tuple[str, Any]] = []
    if baseline_epochs > 0:
        base = config.model_copy(update={"mode": "supervised", "freeze_bn": False,
                                         "epochs": baseline_epochs, "lr": args.baseline_lr})
        base = TrainConfig.model_validate(base.model_dump())
        print(f"== baseline: supervised, {baseline_epochs} epochs, batch-norm training")
        result = train(base, labeled, None, val, out_dir=args.out / "baseline",
                       progress=args.progress, resume=args.resume, on_epoch=_print_epoch,
                       on_plan=_print_plan)
        runs.append(("baseline", result))
        config = TrainConfig.model_validate(
            {**config.model_dump(), "init_weights": str(result.best_checkpoint)}
        )
    print(f"== {config.mode}: {config.epochs} epochs, freeze_bn={config.freeze_bn}, "
          f"second={config.second}")
    result = train(config, labeled, unlabeled, val, out_dir=args.out, progress=args.progress,
                   resume=args.resume, on_epoch=_print_epoch, on_plan=_print_plan)
    runs.append((config.mode, result))
    _print_summary(runs)
    return 0


def _print_plan(steps: int, seconds_per_step: float | None) -> None:
    if seconds_per_step is None:
        print(f"{steps} steps", flush=True)
        return
    minutes = steps * seconds_per_step / 60
    print(f"{steps} steps; about {minutes:.0f} min at {seconds_per_step:.2f} s per labeled step "
          "(one step timed now; validation adds to it)", flush=True)


def _fmt(value: float | None) -> str:
    return "     -" if value is None else f"{value:6.3f}"


def _print_epoch(m) -> None:  # m: model.train_state.EpochMetrics
    print(f"epoch {m.epoch:3d}  train bce {_fmt(m.train_bce)}  consistency "
          f"{_fmt(m.train_consistency)}  | val bce {_fmt(m.val_bce)}  consistency "
          f"{_fmt(m.val_consistency)}  mAP {_fmt(m.val_map)}  macro-F1 {_fmt(m.val_macro_f1)}"
          f"  ({m.seconds:.1f}s)", flush=True)


def _print_summary(runs: list[tuple[str, Any]]) -> None:
    print("\nrun          val mAP  macro-F1  CAM-box mIoU  checkpoint")
    for name, result in runs:
        metrics = result.meta.metrics
        print(f"{name:<12} {_fmt(metrics.get('val_map'))}   {_fmt(metrics.get('val_macro_f1'))}"
              f"        {_fmt(metrics.get('val_mean_iou'))}  {result.best_checkpoint}")
