"""The experiment runner: the smoke preset end to end, paired statistics, the step schedule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cli.main import main as vigil
from lab.finetune import schedule
from lab.presets import PRESETS, FineTuning
from lab.stats import paired_diff

METRICS = ("macro_f1", "macro_f1_val_thr", "map", "cam_iou", "consistency")


def test_smoke_experiment_writes_per_seed_means_and_paired_cis(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = [
        "experiment",
        "--preset",
        "smoke",
        "--seeds",
        "2",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
    ]
    assert vigil(args) == 0
    result = json.loads(out.read_text())
    assert result["complete"] and result["seeds"] == [0, 1]
    assert set(result["methods"]) == {"baseline", "atcon_gb", "atcon_ig"}
    for name, method in result["methods"].items():
        assert [r["seed"] for r in method["per_seed"]] == [0, 1]
        for row in method["per_seed"]:
            m = row["metrics"]
            assert 0.0 <= m["macro_f1"] <= 1.0 and set(m["f1"]) == set(PRESETS["smoke"].classes)
            assert -1.0 <= m["consistency"] <= 1.0
            assert row["training"]["labeled_steps"] == PRESETS["smoke"].finetuning.labeled_steps
            assert (row["training"]["unlabeled_steps"] > 0) == (name != "baseline")
        values = [r["metrics"]["macro_f1"] for r in method["per_seed"]]
        assert method["mean"]["macro_f1"] == pytest.approx(sum(values) / 2)
    base = result["methods"]["baseline"]["per_seed"]
    for name in ("atcon_gb", "atcon_ig"):
        diffs = result["paired_diffs"][name]
        assert set(diffs) == set(METRICS)
        for metric in ("macro_f1", "consistency"):
            d = diffs[metric]
            own = result["methods"][name]["per_seed"]
            expected = [
                a["metrics"][metric] - b["metrics"][metric] for a, b in zip(own, base, strict=True)
            ]
            assert d["per_seed"] == pytest.approx(expected)
            low, high = d["ci95"]
            assert low <= d["mean"] <= high
    # The same start: a baseline seed is reproducible (same k-shot frames, head and batches).
    assert result["data"]["clips"]["test"] >= 1


def test_paired_diff_t_interval() -> None:
    d = paired_diff([0.6, 0.7, 0.8], [0.5, 0.5, 0.5])
    assert d.per_seed == pytest.approx([0.1, 0.2, 0.3])
    assert d.mean == pytest.approx(0.2) and d.sd == pytest.approx(0.1)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2)
    assert d.ci95[0] == pytest.approx(0.2 - half) and d.ci95[1] == pytest.approx(0.2 + half)
    one = paired_diff([0.4, None], [0.3, 0.2])
    assert one.n == 1 and one.ci95 == (None, None)


def test_schedule_keeps_labeled_steps_equal_across_methods() -> None:
    ft = FineTuning(k=2, labeled_steps=20, alpha=8.0)
    gen = torch.Generator().manual_seed(0)
    base = schedule("baseline", ft, n_labeled=10, n_unlabeled=160, gen=gen)
    atcon = schedule("atcon_gb", ft, n_labeled=10, n_unlabeled=160, gen=gen)
    assert base == [True] * 20
    assert sum(atcon) == 20 and len(atcon) - sum(atcon) == 40  # L * U / (alpha * S)


def test_preset_overrides() -> None:
    from lab.presets import with_overrides

    changed = with_overrides(
        PRESETS["synthetic"], ["finetuning.mask_intensity=16", "finetuning.k=2"]
    )
    assert changed.finetuning.mask_intensity == 16.0 and changed.finetuning.k == 2
    assert changed.pretraining == PRESETS["synthetic"].pretraining  # same cached start
    with pytest.raises(ValueError, match="unknown setting"):
        with_overrides(PRESETS["synthetic"], ["finetuning.nope=1"])
