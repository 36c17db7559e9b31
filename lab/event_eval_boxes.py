"""Grad-CAM localisation against labeled boxes (``vigil evaluate --boxes`` with a checkpoint).

For each labeled (clip, time, label) — several boxes of one (clip, time, label) count as their
union box — the frame nearest the time is decoded at the clip's own resolution
(:mod:`worker.decode`, every frame of a short window around the time), preprocessed as the
checkpoint says, and Grad-CAM of the label's class is taken at the detector's Grad-CAM layer and
shown at clip resolution (:func:`model.attention.grad_cam_display`). Two answers per box:

- **IoU** of the CAM's box (:func:`model.metrics.cam_box`: the largest connected region at or
  above half the map's maximum) with the labeled box (0 when the map is flat);
- **pointing game**: the map's maximum pixel (the first in row-major order) has its centre inside
  the labeled box.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path

import torch

from lab.datasets import BoxRow
from lab.event_eval import BoxRowResult
from model.checkpoint import LoadedModel
from worker.decode import DecodeError, DecodeOptions, SampledFrame, VideoDecoder, VideoLimits

Box = tuple[float, float, float, float]
BoxKey = tuple[str, float, str]
FRAME_WINDOW_S = 0.5
"""The nearest frame is searched within this many seconds either side of a box's time."""


def union_boxes(rows: Iterable[BoxRow]) -> dict[BoxKey, Box]:
    """``(clip, t_s, label) -> box``: the union (bounding) box of the rows sharing a key."""
    out: dict[BoxKey, Box] = {}
    for row in rows:
        key = (row.clip, row.t_s, row.label)
        old = out.get(key)
        b = row.box
        out[key] = b if old is None else (
            min(old[0], b[0]), min(old[1], b[1]), max(old[2], b[2]), max(old[3], b[3])
        )  # fmt: skip
    return out


def nearest_frame(path: str | Path, t_s: float, window_s: float = FRAME_WINDOW_S) -> SampledFrame:
    """The decoded frame (clip resolution) whose time is nearest ``t_s`` (seconds from the first
    frame). Raises ``ValueError`` when no frame lies within ``window_s``."""
    options = DecodeOptions(
        fps=1000.0,  # above any camera's rate: every frame of the window is a sample
        max_side=None,
        limits=VideoLimits(max_duration_s=None, max_pixels=None),
        start_s=max(0.0, t_s - window_s),
        end_s=t_s + window_s,
    )
    best: SampledFrame | None = None
    with VideoDecoder(path, options) as video:
        for sample in video:
            if best is None or abs(sample.t_s - t_s) < abs(best.t_s - t_s):
                best = sample
    if best is None:
        raise ValueError(f"{path}: no frame within {window_s} s of {t_s:.3f} s")
    return best


def class_cam(loaded: LoadedModel, frame: torch.Tensor, class_index: int) -> torch.Tensor:
    """Display Grad-CAM ``(H,W)`` in ``[0, 1]`` of ``class_index`` for one ``(3,H,W) uint8``
    frame, at the frame's resolution."""
    from model.attention import grad_cam, grad_cam_display
    from model.detector import gradcam_layer

    model = loaded.model
    device = next(model.parameters()).device
    x = loaded.meta.preprocessing(frame[None]).to(device)
    target = torch.tensor([class_index], device=device)
    raw = grad_cam(model, gradcam_layer(model), x, target)
    return grad_cam_display(raw, tuple(frame.shape[-2:]))[0].float().cpu()


def pointing_hit(cam: torch.Tensor, box: Box) -> bool:
    """Whether the centre of the map's maximum pixel lies inside ``box`` (exclusive ends)."""
    row, col = divmod(int(torch.argmax(cam)), cam.shape[1])
    x0, y0, x1, y1 = box
    return x0 <= col + 0.5 < x1 and y0 <= row + 0.5 < y1


def score_cam(cam: torch.Tensor, box: Box) -> tuple[float, Box | None, bool]:
    """``(IoU, CAM box or None for a flat map, pointing hit)`` of one map against one box."""
    from model.metrics import box_iou, cam_box

    found = cam_box(cam)
    iou = float(box_iou(found[None], torch.tensor([box]))[0])
    cam_b = None if bool(torch.isnan(found).any()) else tuple(float(v) for v in found.tolist())
    return iou, cam_b, pointing_hit(cam, box)  # type: ignore[return-value]


def evaluate_boxes(
    loaded: LoadedModel,
    rows: Iterable[BoxRow],
    data_root: Path,
    clips: Collection[str],
    *,
    wrap: Callable[[list[tuple[BoxKey, Box]]], Iterator[tuple[BoxKey, Box]]] | None = None,
) -> tuple[list[BoxRowResult], list[str]]:
    """Score every union box of ``rows`` whose clip is in ``clips``; returns the per-box results
    and notes on rows left out (another clip, a label the model lacks, no frame near the time).
    ``wrap`` may wrap the iteration (a progress bar)."""
    classes = {name: i for i, name in enumerate(loaded.meta.classes)}
    boxes = union_boxes(rows)
    wanted = [(k, b) for k, b in boxes.items() if k[0] in clips and k[2] in classes]
    notes = _left_out_notes(boxes, clips, classes)
    results = []
    for (clip, t_s, label), box in (wrap or iter)(wanted):
        try:
            sample = nearest_frame(data_root / clip, t_s)
        except (ValueError, DecodeError) as exc:
            notes.append(f"box at {t_s:.3f} s of {clip} left out: {exc}")
            continue
        cam = class_cam(loaded, sample.frame, classes[label])
        iou, cam_b, hit = score_cam(cam, box)
        results.append(BoxRowResult(
            clip=clip, t_s=t_s, frame_t_s=sample.t_s, label=label, box=box, cam_box=cam_b,
            iou=iou, pointing_hit=hit,
        ))  # fmt: skip
    return results, notes


def _left_out_notes(
    boxes: dict[BoxKey, Box], clips: Collection[str], classes: Collection[str]
) -> list[str]:
    notes = []
    other = sum(k[0] not in clips for k in boxes)
    if other:
        notes.append(f"{other} labeled box(es) on clips outside the evaluated set left out")
    unknown = sorted({k[2] for k in boxes if k[0] in clips and k[2] not in classes})
    if unknown:
        notes.append(f"boxes of labels the model does not have left out: {', '.join(unknown)}")
    return notes
