"""Accuracy against time for networks on this machine: training and inference images per second,
and test accuracy after N epochs of the suite's own training loop (its recipe, augmentation,
channels-last and fused optimisers), each N a schedule of its own.

    python -m kdbench.tools.speed_table whitened_cnn cnn resnetc20 --epochs 5,10 \\
        dataset=cifar10 data_root=../shared/data [overrides...]

The overrides are those of ``bench run`` (the preset's recipe and ``train_by_model`` apply). Run
it on an idle machine: every figure is a wall-clock time.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import torch

from kdbench.config.compose import compose_config
from kdbench.config.plan import RunPlan, plan_from_config
from kdbench.data.catalogue import load_dataset
from kdbench.data.images import ImageData
from kdbench.models import create_model
from kdbench.progress import Progress
from kdbench.training.loop import Trainer
from kdbench.training.losses import cross_entropy
from kdbench.training.recipe import make_optimizer

WARMUP_STEPS = 3
TIMED_STEPS = 20
INFERENCE_BATCH = 1024


def training_rate(plan: RunPlan, arch: str, data: ImageData) -> float:
    """Images per second of training steps (forward, backward, optimiser) at the recipe's batch size."""
    recipe = plan.recipe_for(arch)
    model = plan.acceleration.prepare(create_model(arch, data.num_classes, data.input_shape)).train()
    optimizer = make_optimizer(model.parameters(), recipe)
    generator = torch.Generator().manual_seed(0)
    batches = data.batches(data.train, recipe.batch_size, shuffle=True, augment=data.augment, generator=generator)
    start = 0.0
    for step, (x, y) in enumerate(batches):
        if step == WARMUP_STEPS:
            start = time.perf_counter()
        with plan.acceleration.autocast(plan.device):
            loss = cross_entropy(model(plan.acceleration.inputs(x)), y)["ce"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == WARMUP_STEPS + TIMED_STEPS - 1:
            break
    return TIMED_STEPS * recipe.batch_size / (time.perf_counter() - start)


@torch.no_grad()
def inference_rate(plan: RunPlan, arch: str, data: ImageData) -> float:
    model = plan.acceleration.layout(create_model(arch, data.num_classes, data.input_shape)).eval()
    x = plan.acceleration.inputs(data.normalize(data.test.x[:INFERENCE_BATCH].to(plan.device)))
    model(x)
    start, repeats = time.perf_counter(), 3
    for _ in range(repeats):
        with plan.acceleration.autocast(plan.device):
            model(x)
    return repeats * len(x) / (time.perf_counter() - start)


def accuracy_after(plan: RunPlan, arch: str, data: ImageData, epochs: int) -> tuple[float, float]:
    """Test accuracy (%) after ``epochs`` epochs of the recipe (its schedule over those epochs), and seconds."""
    recipe = replace(plan.recipe_for(arch), epochs=epochs)
    trainer = Trainer(plan.device, 0, recipe, Progress(quiet=True), plan.acceleration)
    model = create_model(arch, data.num_classes, data.input_shape).to(plan.device)
    start = time.perf_counter()
    trainer.fit_scratch(model, data, generator=trainer.seeded(f"speed/{arch}"), description=arch)
    seconds = time.perf_counter() - start
    return trainer.accuracy(model.eval(), data), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdbench.tools.speed_table", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="registered model names")
    parser.add_argument("--epochs", default="", help="comma-separated epoch budgets to train for (none: speed only)")
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]  # Hydra's key=value, as bench run takes
    args = parser.parse_args([a for a in argv if a not in overrides])
    plan = plan_from_config(compose_config(["workers=1", "quiet=true", *overrides]))
    torch.set_num_threads(plan.threads)
    data = load_dataset(plan.dataset, plan.device)
    budgets = [int(n) for n in args.epochs.split(",") if n]
    print(f"{data.name} on {plan.device}, {plan.threads} thread(s), channels_last {plan.acceleration.channels_last}")
    print("| model | parameters | train img/s | inference img/s | " + " | ".join(f"{n} ep." for n in budgets) + " |")
    print("|---|---|---|---|" + "---|" * len(budgets))
    for arch in args.models:
        params = sum(p.numel() for p in create_model(arch, data.num_classes, data.input_shape).parameters())
        cells = [f"{training_rate(plan, arch, data):,.0f}", f"{inference_rate(plan, arch, data):,.0f}"]
        for epochs in budgets:
            accuracy, seconds = accuracy_after(plan, arch, data, epochs)
            cells.append(f"{accuracy:.1f} % ({seconds:,.0f} s)")
        print(f"| {arch} | {params / 1e6:.2f} M | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
