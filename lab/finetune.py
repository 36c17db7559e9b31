"""Few-shot fine-tuning for the experiments: supervised baseline vs ATCON, on one budget.

:func:`model.train.train` is the product's trainer; the experiments need three things it does not
offer, so this small loop reuses its parts instead: the number of Integrated-Gradients steps
(the trainer uses the default 32, ~8x the cost of the value used here), a schedule with exactly
the same labeled steps for every method (ATCON's unlabeled steps come on top, placed at random
with the reference's proportion ``alpha*S : U``), and model selection in memory (no checkpoint
writes per evaluation).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from lab.presets import FineTuning
from model.atcon import consistency_loss
from model.data import FrameSet
from model.detector import build_detector, gradcam_layer
from model.evaluate import prepare
from model.preprocess import Preprocessing
from model.train import BatchCycler, set_train_mode

logger = logging.getLogger(__name__)

Method = Literal["baseline", "atcon_gb", "atcon_ig"]
METHODS: tuple[Method, ...] = ("baseline", "atcon_gb", "atcon_ig")
_SECOND = {"atcon_gb": "guided_backprop", "atcon_ig": "integrated_gradients"}


class FineTuneLog(BaseModel):
    """What a fine-tuning run did."""

    labeled_steps: int
    unlabeled_steps: int
    best_step: int
    val_map: list[float | None]
    seconds: float
    start: Literal["pretrained", "baseline"] = Field(
        default="pretrained",
        description="'pretrained': backbone + fresh seeded head; 'baseline': a copy of the "
        "seed's stage-1 supervised model (see ``stage1``).",
    )
    stage1: FineTuneLog | None = Field(
        default=None,
        description="With start 'baseline': the log of the stage-1 run this one started from "
        "(its best ``val_map`` is the start's validation mAP).",
    )


def schedule(
    method: Method, ft: FineTuning, n_labeled: int, n_unlabeled: int, gen: torch.Generator
) -> list[bool]:
    """``True`` for a labeled step. Every method has ``ft.labeled_steps`` of them; ATCON adds
    ``L * U / (alpha * S)`` unlabeled steps (the reference's share), in a seeded random order."""
    labeled = [True] * ft.labeled_steps
    if method == "baseline" or n_unlabeled == 0:
        return labeled
    extra = max(1, round(ft.labeled_steps * n_unlabeled / (ft.alpha * n_labeled)))
    steps = labeled + [False] * extra
    order = torch.randperm(len(steps), generator=gen).tolist()
    return [steps[i] for i in order]


def finetune(
    method: Method,
    start: Path,
    labeled: FrameSet,
    unlabeled: FrameSet,
    val: FrameSet,
    ft: FineTuning,
    *,
    input_size: int,
    seed: int,
    device: torch.device | None = None,
    initial: nn.Module | None = None,
) -> tuple[nn.Module, FineTuneLog]:
    """Fine-tune from the backbone in ``start`` (a new head, seeded by ``seed``, so the three
    methods of a seed start from identical weights and see the same labeled batches).

    ``initial``, when given, replaces that start: training begins from a deep copy of this
    model, head included (``initial`` itself is not modified), e.g. a stage-1 baseline.

    Returns the model of the best validation mAP (eval mode) and a log.
    """
    device = device or torch.device("cpu")
    started = time.perf_counter()
    torch.manual_seed(seed)
    if initial is None:
        model = build_detector("resnet18", labeled.num_classes, weights=start).to(device)
    else:
        model = copy.deepcopy(initial).to(device)
    layer = gradcam_layer(model)
    prep = Preprocessing(input_size=input_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=ft.lr)
    steps = schedule(method, ft, len(labeled), len(unlabeled), torch.Generator().manual_seed(seed))
    lab = BatchCycler(len(labeled), ft.batch_size, torch.Generator().manual_seed(seed + 1))
    unl = BatchCycler(
        len(unlabeled), ft.unlabeled_batch_size, torch.Generator().manual_seed(seed + 2)
    )
    checks = {round(len(steps) * (i + 1) / ft.evaluations) for i in range(ft.evaluations)}
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    history: list[float | None] = []
    set_train_mode(model, ft.freeze_bn)
    for step, is_labeled in enumerate(steps, start=1):
        if is_labeled:
            idx = lab.next()
            x = prepare(labeled.frames[idx], prep, device, False)
            loss = F.binary_cross_entropy_with_logits(model(x), labeled.targets[idx].to(device))
        else:
            x = prepare(unlabeled.frames[unl.next()], prep, device, False)
            loss = consistency_loss(
                model,
                layer,
                x,
                second=_SECOND[method],  # type: ignore[arg-type]
                mask_intensity=ft.mask_intensity,
                ig_steps=ft.ig_steps,
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step in checks:
            score = _val_map(model, val, prep, device)
            history.append(score)
            set_train_mode(model, ft.freeze_bn)
            value = -math.inf if score is None else score
            if best is None or value > best[0]:
                best = (value, step, copy.deepcopy(model.state_dict()))
    assert best is not None
    model.load_state_dict(best[2])
    model.eval()
    log = FineTuneLog(
        labeled_steps=sum(steps),
        unlabeled_steps=len(steps) - sum(steps),
        best_step=best[1],
        val_map=history,
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "%s seed %d: %d+%d steps, best val mAP %s at step %d (%.0fs)",
        method,
        seed,
        log.labeled_steps,
        log.unlabeled_steps,
        history,
        best[1],
        log.seconds,
    )
    return model, log


def _val_map(
    model: nn.Module, val: FrameSet, prep: Preprocessing, device: torch.device
) -> float | None:
    from model.evaluate import predict_logits
    from model.metrics import ap_per_class

    probs = torch.sigmoid(predict_logits(model, val.frames, prep, device=device))
    ap = ap_per_class(probs, val.targets)
    finite = ap[~torch.isnan(ap)]
    return float(finite.mean()) if finite.numel() else None
