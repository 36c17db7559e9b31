"""``vigil train``: config file + flag precedence, inputs, a one-step run end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from PIL import Image

from cli.main import build_parser, main
from cli.train import GENERATED_SIZES, config_fields, load_inputs
from model.checkpoint import read_meta
from model.data import generated_frameset


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('mode = "combined"\nlr = 0.01\nepochs = 7\nfreeze_bn = false\n')
    fields = config_fields(_args("--config", str(toml), "--lr", "0.002", "--freeze-bn"), ("a",))
    assert fields == {"mode": "combined", "lr": 0.002, "epochs": 7, "freeze_bn": True,
                      "classes": ["a"]}
    json_file = tmp_path / "run.json"
    json_file.write_text('{"classes": ["x", "y"], "second": "integrated_gradients"}')
    fields = config_fields(_args("--config", str(json_file), "--generated"), ("a",))
    assert fields["classes"] == ["x", "y"] and fields["second"] == "integrated_gradients"
    assert fields["input_size"] == 64  # the generated set's default, not overridden


def test_generated_inputs() -> None:
    labeled, unlabeled, val = load_inputs(_args("--generated"))
    assert (len(labeled), len(unlabeled), len(val)) == (
        GENERATED_SIZES["labeled"], GENERATED_SIZES["unlabeled"], GENERATED_SIZES["val"]
    )
    assert unlabeled.targets.sum() == 0 and val.boxes is not None


def test_inputs_are_required() -> None:
    with pytest.raises(SystemExit, match="give an input"):
        load_inputs(_args())


def _frame_folders(root: Path) -> None:
    data = generated_frameset(12, seed=7)
    for split, rows in (("train", range(0, 8)), ("val", range(8, 12))):
        folder = root / split
        folder.mkdir(parents=True)
        lines = ["file,labels"]
        for i in rows:
            name = f"{i:03d}.png"
            Image.fromarray(data.frames[i].permute(1, 2, 0).numpy()).save(folder / name)
            labels = [c for c, t in zip(data.classes, data.targets[i], strict=True) if t > 0.5]
            lines.append(f"{name},{';'.join(labels)}")
        (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(data.classes) + "\n")


def test_one_step_run_from_frame_folders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _frame_folders(tmp_path / "frames")
    out = tmp_path / "out"
    code = main(["train", "--frames", str(tmp_path / "frames"), "--out", str(out),
                 "--mode", "supervised", "--epochs", "1", "--steps-per-epoch", "1",
                 "--batch-size", "4", "--input-size", "64", "--channels-last", "--no-progress"])
    assert code == 0
    meta = read_meta(out / "best.safetensors")
    assert meta.classes == ["circle", "square", "triangle"]
    assert meta.training_config["mode"] == "supervised"
    assert meta.training_config["batch_size"] == 4
    assert meta.training_config["channels_last"] is True
    printed = capsys.readouterr().out
    assert "epoch   1" in printed and "best.safetensors" in printed


def test_flag_choices_follow_the_config_types() -> None:
    from typing import get_args

    from cli.train import _CHOICES
    from model.detector import ARCHITECTURES
    from model.train import Mode, SecondMethod

    expected = {"arch": ARCHITECTURES, "mode": get_args(Mode), "second": get_args(SecondMethod)}
    assert expected == _CHOICES


def test_train_from_interval_labels_with_the_real_recipe_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.clips import square_event_frames, write_clip

    rows = ["clip,label,start_s,end_s"]
    for i in range(4):
        write_clip(tmp_path / "data" / f"c{i}.mp4", 3.0, fps=5,
                   frame_fn=square_event_frames([(1.0, 2.0)]))
        rows += [f"c{i}.mp4,person_present,1.0,2.0", f"c{i}.mp4,falling,1.0,1.4"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    write_clip(tmp_path / "unl" / "u.mp4", 2.0, fps=5)
    out = tmp_path / "run"
    code = main(["train", "--labels", str(tmp_path / "labels.csv"), "--data-root",
                 str(tmp_path / "data"), "--unlabeled-videos", str(tmp_path / "unl"),
                 "--out", str(out), "--input-size", "64", "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "4", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "clips: 3 train, 1 validation" in printed and "unlabeled" in printed
    assert "2 steps; about" in printed  # the estimate before the run
    meta = read_meta(out / "best.safetensors")
    assert meta.arch == "efficientnet_lite0" and meta.classes == ["person_present", "falling"]
    assert meta.training_config["frozen_prefixes"][0] == "features.0."
    assert meta.training_config["augment"] is not None
    assert meta.mean == (0.5, 0.5, 0.5)
    assert meta.thresholds["falling"].min_length_s == 0.0


def test_train_from_labels_needs_a_data_root(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("clip,label,start_s,end_s\n")
    with pytest.raises(SystemExit, match="--data-root"):
        main(["train", "--labels", str(tmp_path / "l.csv")])
