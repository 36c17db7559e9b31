"""``vigil experiment``: supervised baseline vs ATCON (Guided Backprop, Integrated Gradients).

For every seed: draw a k-shot labeled set from the target pool, then fine-tune each method from
the same pre-trained backbone and the same seeded head with the same labeled steps (ATCON's
unlabeled steps come on top), keep the best step by validation mAP, and score on held-out clips.
With ``finetuning.start="baseline"`` the shared start is instead a stage-1 supervised model of
the seed (the normal baseline run), so the reported baseline is stage 1 plus the same labeled
steps again and ATCON is stage 1 plus the same labeled steps and its unlabeled steps.
The results file holds per-seed and mean metrics per method and, for each ATCON variant, the
paired difference to the baseline with a 95% t-interval over seeds. It is rewritten after every
(seed, method), so an interrupted run leaves what it finished.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import nn

from lab.evaluation import Metrics, evaluate_model
from lab.finetune import METHODS, FineTuneLog, Method, finetune
from lab.presets import Preset
from lab.stats import PairedDiff, mean_or_none, paired_diff

logger = logging.getLogger(__name__)

SCALAR_METRICS: tuple[str, ...] = ("macro_f1", "macro_f1_val_thr", "map", "cam_iou", "consistency")
NOTE = (
    "No ImageNet weights exist here: 'pretrained' means a ResNet-18 trained from scratch on "
    "synthetic rooms that never appear in the target data, on a different label set "
    "(person_present, in_bed, staff_present); its head is replaced for the target classes."
)


class SeedResult(BaseModel):
    """One method on one seed."""

    seed: int
    metrics: Metrics
    training: FineTuneLog


class MethodResult(BaseModel):
    """Per-seed results and the means of the scalar metrics."""

    per_seed: list[SeedResult] = Field(default_factory=list)
    mean: dict[str, float | None] = Field(default_factory=dict)
    mean_f1: dict[str, float | None] = Field(default_factory=dict)


class ExperimentResult(BaseModel):
    """The file written by ``vigil experiment --out``."""

    preset: str
    seeds: list[int]
    complete: bool
    note: str = NOTE
    config: dict[str, object]
    data: dict[str, object]
    hardware: dict[str, object]
    started_at: str
    seconds: float
    methods: dict[str, MethodResult]
    paired_diffs: dict[str, dict[str, PairedDiff]]


def hardware() -> dict[str, object]:
    """What the numbers were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "load_average_at_start": list(os.getloadavg()),
    }


def summarise(methods: dict[str, MethodResult]) -> dict[str, dict[str, PairedDiff]]:
    """Fill each method's means; return ATCON-minus-baseline paired differences per metric."""
    for result in methods.values():
        rows = [r.metrics for r in result.per_seed]
        result.mean = {m: mean_or_none([getattr(r, m) for r in rows]) for m in SCALAR_METRICS}
        classes = rows[0].f1 if rows else {}
        result.mean_f1 = {c: mean_or_none([r.f1[c] for r in rows]) for c in classes}
    base = {r.seed: r.metrics for r in methods["baseline"].per_seed}
    diffs: dict[str, dict[str, PairedDiff]] = {}
    for name in [m for m in METHODS[1:] if m in methods]:
        pairs = [(r.metrics, base[r.seed]) for r in methods[name].per_seed if r.seed in base]
        diffs[name] = {
            m: paired_diff([getattr(a, m) for a, _ in pairs], [getattr(b, m) for _, b in pairs])
            for m in SCALAR_METRICS
        }
    return diffs


def run_experiment(
    preset: Preset,
    seeds: int,
    out: Path,
    *,
    data_path: Path | None = None,
    cache_dir: Path,
    progress: bool = True,
    methods_run: tuple[Method, ...] = METHODS,
    evaluate_on: Literal["test", "val"] = "test",
) -> ExperimentResult:
    """Run ``preset`` over seeds ``0..seeds-1`` and write ``out`` (JSON) as it goes.

    ``evaluate_on="val"`` scores on the validation clips instead of the test clips: for
    searching settings without ever looking at the test set.
    """
    from lab.targets import pretrained_start, synthetic_target, upfall_target

    started, started_at = time.perf_counter(), datetime.now(UTC).isoformat()
    machine = hardware()
    start = pretrained_start(preset, cache_dir, progress=progress)
    if preset.source == "upfall":
        if data_path is None:
            raise ValueError("the upfall preset needs --data (e.g. /work/shared/data/real)")
        target = upfall_target(preset, data_path, cache_dir)
    else:
        target = synthetic_target(preset, progress=progress)
    if evaluate_on == "val":
        target = replace(
            target, test=target.val, description={**target.description, "evaluated_on": "val"}
        )
    if "baseline" not in methods_run:
        raise ValueError("the baseline is needed for the paired differences")
    methods = {name: MethodResult() for name in methods_run}
    result: ExperimentResult | None = None
    for seed in range(seeds):
        _run_seed(preset, seed, start, target, methods)
        result = ExperimentResult(
            preset=preset.name,
            seeds=list(range(seed + 1)),
            complete=seed + 1 == seeds,
            config=preset.model_dump(mode="json"),
            data=target.description,
            hardware=machine,
            started_at=started_at,
            seconds=time.perf_counter() - started,
            methods=methods,
            paired_diffs=summarise(methods),
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result.model_dump_json(indent=2) + "\n")
    assert result is not None
    return result


def _run_seed(preset: Preset, seed: int, start: Path, target, methods: dict[str, MethodResult]):
    """Fine-tune and score every method of ``methods`` on ``seed``, appending to its results.

    With ``finetuning.start == "baseline"`` a stage-1 supervised model is trained first and
    every method starts from a copy of it (its log records the stage-1 run).
    """
    from lab.datasets import k_shot

    ft = preset.finetuning
    labeled = target.pool.subset(k_shot(target.pool, ft.k, seed=seed)).frames
    logger.info(
        "seed %d: %d labeled frames %s", seed, len(labeled), labeled.targets.sum(0).tolist()
    )
    run = partial(
        finetune, start=start, labeled=labeled, unlabeled=target.unlabeled, val=target.val, ft=ft,
        input_size=preset.input_size, seed=seed,
    )
    initial: nn.Module | None = None
    stage1: FineTuneLog | None = None
    if ft.start == "baseline":
        # Stage 1: the normal baseline run from the pre-trained backbone; every method below
        # (the baseline included) starts from a copy of it with its own normal schedule.
        initial, stage1 = run("baseline")
        logger.info("seed %d: stage-1 baseline, val mAP %s", seed, stage1.val_map)
    for name in methods:
        method: Method = name  # type: ignore[assignment]
        model, log = run(method, initial=initial)
        if stage1 is not None:
            log = log.model_copy(update={"start": "baseline", "stage1": stage1})
        t0 = time.perf_counter()
        metrics = evaluate_model(
            model,
            target.test,
            target.val,
            input_size=preset.input_size,
            consistency_frames=preset.consistency_frames,
            iou_frames=preset.iou_frames,
        )
        metrics.seconds = time.perf_counter() - t0
        methods[name].per_seed.append(SeedResult(seed=seed, metrics=metrics, training=log))
        logger.info(
            "seed %d %s: macro-F1 %.3f mAP %s IoU %s consistency %s",
            seed,
            name,
            metrics.macro_f1,
            metrics.map,
            metrics.cam_iou,
            metrics.consistency,
        )
