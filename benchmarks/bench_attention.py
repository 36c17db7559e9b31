"""Benchmark: batched Grad-CAM and one ATCON training step, side by side with their references.

Run (CPU, the issue's setting)::

    .venv/bin/python benchmarks/bench_attention.py --out bench-attention.json
    .venv/bin/python benchmarks/bench_attention.py --arch efficientnet_lite0 \
        --out bench-attention-lite0.json

GPU run::

    .venv/bin/python benchmarks/bench_attention.py --device cuda --batch 32 \
        --out bench-attention-gpu.json

Measured in one process, interleaved round by round so that load from other processes on a
shared machine hits every method alike; each figure is the median over the rounds.

- Grad-CAM frames/s: ours (raw maps + the display form) vs a forward pass alone (``no_grad``)
  vs ``pytorch_grad_cam.GradCAM`` (which returns the display form).
- ATCON step (consistency loss, backward, Adam) vs a per-image loop that follows the paper's
  code (``tests/support/atcon_reference.py``, the oracle of the tests): each Grad-CAM by a
  backward pass that runs to the input with ``create_graph=True``, Guided Backprop on a forward
  pass of its own with ReLUs swapped for a guided Function, one image at a time. Before timing,
  the two steps are checked to compute the same loss and the same parameter gradients. Each
  method's turn is ``--settle`` untimed steps and one timed step (the steady state of a training
  loop); the first step of each turn, which pays for the memory the other method left behind,
  is printed as well.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from model.atcon import consistency_loss  # noqa: E402
from model.attention import grad_cam, grad_cam_display  # noqa: E402
from model.detector import build_detector, gradcam_layer  # noqa: E402
from tests.support.atcon_reference import consistency_loss as loop_consistency_loss  # noqa: E402


# ---------------------------------------------------------------------------------- measurement
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` of one call."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


@dataclass(frozen=True)
class Timing:
    """Medians over the rounds, in seconds: ``wall`` and ``cpu`` of the timed (last) call of each
    turn, ``first_wall`` of the first call of each turn (the same call when ``settle == 0``)."""

    wall: float
    cpu: float
    first_wall: float


def _interleaved(
    methods: dict[str, Callable[[], object]],
    rounds: int,
    warmup: int,
    device: torch.device,
    settle: int = 0,
) -> dict[str, Timing]:
    """Time each method, the methods taking turns in every round.

    A turn is ``settle + 1`` consecutive calls of one method and the last one is timed: the
    steady state that a training loop repeating the same step sees. The first call of a turn
    also pays for the memory the other method left behind (on these VMs a step right after the
    per-image loop spends up to ~1.5 s more in the kernel on page faults); it is reported as
    ``first_wall``. CPU time is reported too: on a shared machine wall time includes waiting for
    other processes, while CPU time counts only the work done (robust with one thread).
    """
    for _ in range(warmup):
        for fn in methods.values():
            fn()
    last: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    first: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            turn = [_timed(fn, device) for _ in range(settle + 1)]
            first[name].append(turn[0][0])
            last[name].append(turn[-1])
    return {
        name: Timing(wall=statistics.median(t[0] for t in last[name]),
                     cpu=statistics.median(t[1] for t in last[name]),
                     first_wall=statistics.median(first[name]))
        for name in methods
    }


def _detector(args: argparse.Namespace, reflect_padding: bool = False) -> nn.Module:
    """The benchmarked architecture; EfficientNet-Lite with its ImageNet weights (its random
    initialisation has near-zero gradients, which would make the maps degenerate)."""
    weights = "IMAGENET1K" if args.arch.startswith("efficientnet") else None
    return build_detector(args.arch, args.classes, weights=weights, input_size=args.size,
                          reflect_padding=reflect_padding)


def bench_grad_cam(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    from pytorch_grad_cam import GradCAM

    torch.manual_seed(0)
    model = _detector(args).to(device).eval()
    layer = gradcam_layer(model)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    oracle_model = copy.deepcopy(model)
    oracle = GradCAM(oracle_model, [gradcam_layer(oracle_model)])

    def forward_only() -> None:
        with torch.no_grad():
            model(x)

    def ours() -> None:
        with torch.no_grad():
            grad_cam_display(grad_cam(model, layer, x), (args.size, args.size))

    def reference() -> None:
        oracle(x, None)

    try:
        seconds = _interleaved({"forward_only": forward_only, "ours": ours,
                                "pytorch_grad_cam": reference}, args.rounds, 1, device)
    finally:
        oracle.activations_and_grads.release()
    return {f"{k}_frames_per_s": args.batch / t.wall for k, t in seconds.items()} | {
        f"{k}_cpu_frames_per_s": args.batch / t.cpu for k, t in seconds.items()}


def bench_atcon_step(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    base = _detector(args, reflect_padding=True).to(device).eval()
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    models = {"ours": base, "loop": copy.deepcopy(base)}
    optims = {k: torch.optim.Adam(m.parameters(), lr=1e-9) for k, m in models.items()}
    losses = {"ours": consistency_loss, "loop": loop_consistency_loss}
    agreement = _same_step(models, losses, x)

    def step(name: str) -> Callable[[], None]:
        model, opt, loss_fn = models[name], optims[name], losses[name]

        def run() -> None:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model, gradcam_layer(model), x)
            loss.backward()
            opt.step()

        return run

    seconds = _interleaved({"ours": step("ours"), "loop": step("loop")}, args.step_rounds, 1,
                           device, settle=args.settle)
    return {f"{k}_step_s": t.wall for k, t in seconds.items()} | {
        f"{k}_step_cpu_s": t.cpu for k, t in seconds.items()} | {
        f"{k}_first_step_s": t.first_wall for k, t in seconds.items()} | agreement


def _same_step(
    models: dict[str, nn.Module], losses: dict[str, Callable[..., Tensor]], x: Tensor
) -> dict[str, float]:
    """Check, before timing, that both steps compute the same loss and parameter gradients.

    In float64 on two of the images (float32 rounding in a loss near -1 hides real differences
    at a random initialisation); the thresholds are the tests' (1e-5 and 1e-3).
    """
    values, grads = {}, {}
    for name, model in models.items():
        model64 = copy.deepcopy(model).double()
        loss = losses[name](model64, gradcam_layer(model64), x[:2].double())
        params = [p for p in model64.parameters() if p.requires_grad]
        flat = torch.autograd.grad(loss, params, allow_unused=True)
        values[name] = float(loss.detach())
        grads[name] = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                                 for g, p in zip(flat, params, strict=True)])
    loss_rel = abs(values["ours"] - values["loop"]) / abs(values["loop"])
    grad_rel = float((grads["ours"] - grads["loop"]).norm() / grads["loop"].norm())
    if loss_rel > 1e-5 or grad_rel > 1e-3:
        raise AssertionError(f"the two steps differ: loss {loss_rel:.2e}, gradients {grad_rel:.2e}")
    return {"check_loss_rel_diff": loss_rel, "check_grad_rel_l2_diff": grad_rel}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--arch", default="resnet18",
                        help="resnet18 (the earlier figures) or efficientnet_lite0 (the default "
                             "detector's)")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7, help="Grad-CAM timing rounds")
    parser.add_argument("--step-rounds", type=int, default=3, help="ATCON step timing rounds")
    parser.add_argument("--settle", type=int, default=1,
                        help="untimed ATCON steps before the timed one in each method's turn")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cam = bench_grad_cam(args, device)
    step = bench_atcon_step(args, device)
    result = {
        "setting": {"arch": args.arch, "device": str(device), "batch": args.batch,
                    "size": args.size, "threads": torch.get_num_threads(),
                    "settle": args.settle,
                    "torch": torch.__version__, "machine": platform.processor() or
                    platform.machine()},
        "grad_cam": cam | {
            "ours_vs_forward_only": cam["ours_frames_per_s"] / cam["forward_only_frames_per_s"],
            "ours_vs_pytorch_grad_cam": cam["ours_frames_per_s"]
            / cam["pytorch_grad_cam_frames_per_s"],
            "cpu_ours_vs_forward_only": cam["ours_cpu_frames_per_s"]
            / cam["forward_only_cpu_frames_per_s"],
            "cpu_ours_vs_pytorch_grad_cam": cam["ours_cpu_frames_per_s"]
            / cam["pytorch_grad_cam_cpu_frames_per_s"],
        },
        "atcon_step": step | {
            "speedup_vs_loop": step["loop_step_s"] / step["ours_step_s"],
            "cpu_speedup_vs_loop": step["loop_step_cpu_s"] / step["ours_step_cpu_s"],
            "first_step_speedup_vs_loop": step["loop_first_step_s"] / step["ours_first_step_s"],
        },
    }
    _print_table(result)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _print_table(result: dict) -> None:
    cam, step, s = result["grad_cam"], result["atcon_step"], result["setting"]
    rows = [
        ("Grad-CAM, forward only (no_grad)", f"{cam['forward_only_frames_per_s']:.1f}",
         f"{cam['forward_only_cpu_frames_per_s']:.1f}", "frames/s", ""),
        ("Grad-CAM, ours (raw + display)", f"{cam['ours_frames_per_s']:.1f}",
         f"{cam['ours_cpu_frames_per_s']:.1f}", "frames/s",
         f"{cam['ours_vs_forward_only']:.2f}x / {cam['cpu_ours_vs_forward_only']:.2f}x "
         "forward-only (target >= 0.9)"),
        ("Grad-CAM, pytorch_grad_cam.GradCAM", f"{cam['pytorch_grad_cam_frames_per_s']:.1f}",
         f"{cam['pytorch_grad_cam_cpu_frames_per_s']:.1f}", "frames/s",
         f"ours {cam['ours_vs_pytorch_grad_cam']:.2f}x / {cam['cpu_ours_vs_pytorch_grad_cam']:.2f}x"
         " (target >= 2.5)"),
        ("ATCON step, per-image loop", f"{step['loop_step_s']:.3f}",
         f"{step['loop_step_cpu_s']:.3f}", "s", ""),
        ("ATCON step, ours (batched)", f"{step['ours_step_s']:.3f}",
         f"{step['ours_step_cpu_s']:.3f}", "s",
         f"{step['speedup_vs_loop']:.2f}x / {step['cpu_speedup_vs_loop']:.2f}x the loop "
         "(target >= 2.5 CPU, >= 10 GPU)"),
    ]
    print(f"{s['arch']}, {s['size']}x{s['size']}, batch {s['batch']}, {s['device']}, "
          f"{s['threads']} threads, torch {s['torch']}")
    print(f"  same ATCON step checked first (float64, 2 images): loss rel diff "
          f"{step['check_loss_rel_diff']:.1e}, "
          f"gradient rel L2 diff {step['check_grad_rel_l2_diff']:.1e}")
    print(f"  {'':<36} {'wall':>9} {'cpu':>9}            ratio wall / cpu")
    for name, wall, cpu, unit, ratio in rows:
        print(f"  {name:<36} {wall:>9} {cpu:>9} {unit:<9}  {ratio}")
    if s["settle"]:
        print(f"  ATCON steps timed after {s['settle']} untimed step(s) of the same method; the "
              f"first step of each turn: loop {step['loop_first_step_s']:.3f} s, ours "
              f"{step['ours_first_step_s']:.3f} s ({step['first_step_speedup_vs_loop']:.2f}x)")


if __name__ == "__main__":
    raise SystemExit(main())
