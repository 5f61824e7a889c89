"""How long a preset's teachers, scratch baselines and KD column take on a GPU, planned before it
runs: each network's FLOPs per image of a training step and of a forward pass, counted by torch
(``FlopCounterMode`` on the meta device: no memory, no data), times the images its recipe trains
on, plus the teacher forwards that the nasty teacher's training and every KD cell ask for, against a
stated sustained throughput.

    python -m kdbench.tools.gpu_estimate preset=paper_cifar10_fast [--tflops 150] [overrides...]

The throughput is an assumption, not a measurement: H100 SXM's dense bf16 peak is 989 TFLOP/s, and
networks of 32×32 images reach a fraction of it (small convolutions, BatchNorm and optimiser
steps are bound by memory, not arithmetic). Cells of attacks other than KD are not counted.
"""

from __future__ import annotations

import argparse
import functools

import torch
from torch.utils.flop_counter import FlopCounterMode

from kdbench.config.compose import compose_config
from kdbench.config.plan import RunPlan, plan_from_config
from kdbench.models import create_model

TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "tinyimagenet": 100_000}
PROBE_BATCH = 2
DEFAULT_TFLOPS = 150.0  # sustained bf16 TFLOP/s assumed for an H100 on CIFAR-sized networks


@functools.cache
def flops_per_image(arch: str, num_classes: int, shape: tuple[int, int, int], *, train: bool) -> float:
    """FLOPs of one image through ``arch``: forward and backward (``train``) or forward only."""
    with torch.device("meta"):
        model = create_model(arch, num_classes, shape).train(train)
        x = torch.empty(PROBE_BATCH, *shape)
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(x)
        if train:
            out.sum().backward()
    return counter.get_total_flops() / PROBE_BATCH


def planned_work(plan: RunPlan, train_size: int, num_classes: int, shape: tuple[int, int, int]) -> list[tuple]:
    """(what, images, FLOPs) of every network the plan trains and the KD column's cells."""

    def train(arch: str) -> float:
        return flops_per_image(arch, num_classes, shape, train=True)

    def forward(arch: str) -> float:
        return flops_per_image(arch, num_classes, shape, train=False)

    rows = []
    for seed in plan.seeds:
        for teacher in plan.teachers:
            epochs = plan.recipe_for(teacher).epochs
            images = epochs * train_size
            for defense in plan.defenses:
                adversary = forward(teacher) if defense == "nasty" else 0.0  # the frozen normal teacher
                flops = images * (train(teacher) + adversary)
                rows.append((f"teacher {teacher}/{defense} (seed {seed})", images, flops))
            for student in plan.students:
                arch = teacher if student == "self" else student
                images = plan.recipe_for(arch).epochs * train_size
                for defense in plan.defenses:
                    if "kd" in plan.attacks:
                        flops = images * (train(arch) + forward(teacher))
                        rows.append((f"kd {teacher}/{defense} → {arch} (seed {seed})", images, flops))
        for student in dict.fromkeys(teacher if s == "self" else s for s in plan.students for teacher in plan.teachers):
            images = plan.recipe_for(student).epochs * train_size
            rows.append((f"scratch {student} (seed {seed})", images, images * train(student)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdbench.tools.gpu_estimate", description=__doc__.split("\n")[0])
    parser.add_argument("--tflops", type=float, default=DEFAULT_TFLOPS, help="sustained TFLOP/s assumed")
    parser.add_argument("--train-size", type=int, default=None, help="training images (default: the dataset's)")
    args, overrides = parser.parse_known_args(argv)
    plan = plan_from_config(compose_config(["device=cpu", *overrides]))
    train_size = args.train_size or TRAIN_SIZES.get(plan.dataset.name)
    if train_size is None:
        parser.error(f"no known training-set size for dataset {plan.dataset.name!r}: give --train-size")
    num_classes = {"cifar100": 100, "tinyimagenet": 200}.get(plan.dataset.name, 10)
    shape = (3, 64, 64) if plan.dataset.name == "tinyimagenet" else (3, 32, 32)
    rows = planned_work(plan, train_size, num_classes, shape)
    total = sum(flops for _, _, flops in rows)
    print(f"| network or cell | images | PFLOP | minutes at {args.tflops:g} TFLOP/s |")
    print("|---|---|---|---|")
    for what, images, flops in rows:
        print(f"| {what} | {images:,} | {flops / 1e15:.1f} | {flops / (args.tflops * 1e12) / 60:.2f} |")
    minutes = total / (args.tflops * 1e12) / 60
    print(f"| total | | {total / 1e15:.1f} | {minutes:.1f} |")
    for arch in dict.fromkeys([*plan.teachers, *(s for s in plan.students if s != "self")]):
        train = flops_per_image(arch, num_classes, shape, train=True) / 1e9
        forward = flops_per_image(arch, num_classes, shape, train=False) / 1e9
        print(f"{arch}: {forward:.3f} GFLOP forward, {train:.3f} GFLOP per training image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
