"""Markdown tables from an experiment results file: ``python -m lab.report results.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lab.experiment import SCALAR_METRICS, ExperimentResult

LABELS = {
    "macro_f1": "macro-F1 @0.5",
    "macro_f1_val_thr": "macro-F1 @val thr",
    "map": "mAP",
    "cam_iou": "CAM-box IoU",
    "consistency": "consistency",
}


def _pct(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}" if sign else f"{100 * value:.1f}"


def markdown(result: ExperimentResult) -> str:
    """Means per method, per-class F1, and paired differences (points, 95% CI) as Markdown."""
    lines = [
        f"Preset `{result.preset}`, seeds {result.seeds} "
        f"({'complete' if result.complete else 'INCOMPLETE'}), {result.seconds / 60:.0f} min.",
        "",
        "| method | " + " | ".join(LABELS[m] for m in SCALAR_METRICS) + " |",
        "| --- |" + " ---: |" * len(SCALAR_METRICS),
    ]
    for name, method in result.methods.items():
        cells = " | ".join(_pct(method.mean.get(m)) for m in SCALAR_METRICS)
        lines.append(f"| {name} | {cells} |")
    classes = list(next(iter(result.methods.values())).mean_f1)
    lines += [
        "",
        "| method | " + " | ".join(f"F1 {c}" for c in classes) + " |",
        "| --- |" + " ---: |" * len(classes),
    ]
    for name, method in result.methods.items():
        lines.append(f"| {name} | " + " | ".join(_pct(method.mean_f1[c]) for c in classes) + " |")
    lines += [
        "",
        "| paired difference to baseline (points) | "
        + " | ".join(LABELS[m] for m in SCALAR_METRICS)
        + " |",
        "| --- |" + " ---: |" * len(SCALAR_METRICS),
    ]
    for name, diffs in result.paired_diffs.items():
        cells = []
        for m in SCALAR_METRICS:
            d = diffs[m]
            low, high = d.ci95
            ci = "" if low is None or high is None else f" [{_pct(low, True)}, {_pct(high, True)}]"
            cells.append(f"{_pct(d.mean, True)}{ci}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Print the tables of every results file given."""
    for path in argv:
        result = ExperimentResult.model_validate(json.loads(Path(path).read_text()))
        sys.stdout.write(markdown(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
