"""The experiment runner: the smoke preset end to end, paired statistics, the step schedule,
the start point (pre-trained backbone or stage-1 baseline)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import lab.experiment
import lab.finetune
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


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of the smoke pre-trained backbone for the start-point tests."""
    return tmp_path_factory.mktemp("smoke-cache")


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run_recording_starts(
    monkeypatch: pytest.MonkeyPatch, out: Path, cache: Path, overrides: list[str]
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """Run the smoke preset (1 seed, baseline + ATCON-GB) and record, for every fine-tuning run,
    its method, the weights it started training from and the model it returned."""
    runs: list[dict[str, object]] = []
    real_finetune, real_train_mode = lab.finetune.finetune, lab.finetune.set_train_mode

    def set_train_mode(model: torch.nn.Module, freeze_bn: bool) -> None:
        # First call of a run: right before its first step.
        runs[-1].setdefault("initial", _state(model))
        real_train_mode(model, freeze_bn)

    def finetune(method, *args, **kwargs):  # type: ignore[no-untyped-def]
        runs.append({"method": method})
        model, log = real_finetune(method, *args, **kwargs)
        runs[-1]["final"] = _state(model)
        return model, log

    monkeypatch.setattr(lab.finetune, "set_train_mode", set_train_mode)
    monkeypatch.setattr(lab.experiment, "finetune", finetune)
    args = ["experiment", "--preset", "smoke", "--seeds", "1", "--methods", "baseline,atcon_gb"]
    # One thread: much faster than two when the machine is busy; restored afterwards.
    args += ["--out", str(out), "--cache-dir", str(cache), "--no-progress", "--threads", "1"]
    for item in overrides:
        args += ["--set", item]
    threads = torch.get_num_threads()
    try:
        assert vigil(args) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads(out.read_text()), runs


def test_default_start_is_the_pretrained_backbone_with_a_seeded_head(
    tmp_path: Path, smoke_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model.detector import build_detector

    result, runs = _run_recording_starts(monkeypatch, tmp_path / "r.json", smoke_cache, [])
    assert [r["method"] for r in runs] == ["baseline", "atcon_gb"]  # no stage 1
    (start,) = smoke_cache.glob("pretrain-*.safetensors")
    torch.manual_seed(0)
    fresh = _state(build_detector("resnet18", len(PRESETS["smoke"].classes), weights=start))
    for run in runs:
        assert _same(run["initial"], fresh)  # type: ignore[arg-type]
    assert result["config"]["finetuning"]["start"] == "pretrained"
    for method in result["methods"].values():
        log = method["per_seed"][0]["training"]
        assert log["start"] == "pretrained" and log["stage1"] is None


def test_baseline_start_runs_every_method_from_the_stage1_model(
    tmp_path: Path, smoke_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, runs = _run_recording_starts(
        monkeypatch, tmp_path / "r.json", smoke_cache, ["finetuning.start=baseline"]
    )
    # Stage 1 (a normal baseline run from the pre-trained backbone), then every method.
    assert [r["method"] for r in runs] == ["baseline", "baseline", "atcon_gb"]
    stage1, methods = runs[0], runs[1:]
    assert not _same(stage1["final"], stage1["initial"])  # type: ignore[arg-type]
    for run in methods:
        # The stage-1 model, head included, not a fresh pre-trained start.
        assert _same(run["initial"], stage1["final"])  # type: ignore[arg-type]
        assert not _same(run["initial"], stage1["initial"])  # type: ignore[arg-type]
        assert not torch.equal(run["initial"]["fc.weight"], stage1["initial"]["fc.weight"])  # type: ignore[index]
    assert result["config"]["finetuning"]["start"] == "baseline"
    ft = PRESETS["smoke"].finetuning
    stage1_logs = []
    for name, method in result["methods"].items():
        log = method["per_seed"][0]["training"]
        assert log["start"] == "baseline"
        assert log["labeled_steps"] == ft.labeled_steps  # the normal schedule on top
        assert (log["unlabeled_steps"] > 0) == (name != "baseline")
        assert log["stage1"]["start"] == "pretrained"
        assert log["stage1"]["labeled_steps"] == ft.labeled_steps
        assert log["stage1"]["unlabeled_steps"] == 0 and len(log["stage1"]["val_map"]) == 1
        stage1_logs.append(log["stage1"])
    assert stage1_logs[0] == stage1_logs[1]  # one stage-1 model per seed, shared
