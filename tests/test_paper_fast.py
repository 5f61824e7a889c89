"""``preset=paper_cifar10_fast``, the paper's Table 1 on a short schedule for one GPU: its code path
(bf16 autocast, channels-last, the dataset resident on the device and augmented there, the JPEG
copy of CIFAR-10) runs here on the CPU at toy size, so that the first GPU run is not its first run;
and its planned GPU time is the arithmetic of ``kdbench.tools.gpu_estimate``."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from kdbench.cli import main
from kdbench.tools import gpu_estimate


@pytest.mark.slow
def test_the_fast_table_1_runs_its_gpu_code_path_on_the_cpu_at_toy_size(tmp_path, small_cifar10, capsys):
    small_cifar10(tmp_path / "data" / "cifar10")
    args = [
        "run",
        "preset=paper_cifar10_fast",
        f"data_root={tmp_path / 'data'}",
        f"results_dir={tmp_path / 'results'}",
        "device=cpu",
        "precision=bf16",  # what auto picks on CUDA
        "channels_last=true",
        "train.epochs=1",
        "train.batch_size=16",
        # two steps at the preset's 0.2 (fp32 or bf16 alike) blow the nasty teacher's logits up at this size
        "train.lr=0.01",
        "student=[cnn,resnetc20]",
        "workers=1",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "runs with settings other than the paper's" in out and "CIFAR-10 read from its JPEG copy" in out
    folder = tmp_path / "results" / "cifar10"
    records = pd.read_csv(folder / "records.csv")
    assert sorted(zip(records.defense, records.student, strict=True)) == [
        ("nasty", "cnn"),
        ("nasty", "resnetc20"),
        ("normal", "cnn"),
        ("normal", "resnetc20"),
    ]
    assert set(records.status) == {"ok"} and set(records.attack) == {"kd"}
    settings = json.loads((folder / "run.json").read_text())
    assert settings["precision"] == "bf16" and settings["paper"] == "nasty_teacher_cifar10"
    assert any("30 epochs" in d for d in settings["paper_differences"])
    assert "train.epochs=1" in settings["paper_differences"]
    markdown = (folder / "leaderboard.md").read_text()
    assert "(other settings)" in markdown and ", Δ " not in markdown  # published beside, no difference


def test_the_planned_h100_time_is_the_flops_arithmetic(capsys):
    assert gpu_estimate.main(["preset=paper_cifar10_fast"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split(" | ") for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert [r[0].removeprefix("| ") for r in rows][-1] == "total"
    kd = [r for r in rows if r[0].startswith("| kd ")]
    assert len(kd) == 8  # normal and nasty teachers × 4 students
    # a ResNet-18 forward of one 32×32 image: 0.56 G multiply-adds, 1.11 GFLOP (as published for it)
    forward = next(line for line in lines if line.startswith("resnet18:"))
    assert 1.0 < float(forward.split()[1]) < 1.2
    # images × FLOPs per image, at the stated throughput: the KD column fits in 8 minutes on one H100
    total_minutes = float(rows[-1][-1].removesuffix(" |"))
    assert total_minutes < 8.0
