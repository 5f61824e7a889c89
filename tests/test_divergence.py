"""A loss that becomes NaN or infinite stops its cell early; the cell is recorded as diverged with the
reason, the rest of the matrix goes on, and the reports show it."""

import json

import pandas as pd
import pytest
import torch

from kdbench.cli import main
from kdbench.progress import Progress
from kdbench.training.loop import TrainingDiverged, fit
from kdbench.training.recipe import Recipe


def test_fit_stops_at_the_end_of_the_first_epoch_whose_loss_is_not_finite():
    model = torch.nn.Linear(2, 2)
    epochs_started = []

    def batches(epoch):
        epochs_started.append(epoch)
        return iter([(torch.ones(4, 2), torch.zeros(4, dtype=torch.long))] * 3)

    def objective(x, y):
        out = model(x).sum()
        return {"ce": out * 0, "blowup": out * 0 + (float("inf") if len(epochs_started) == 2 else 0.0)}

    with pytest.raises(TrainingDiverged, match=r"^probe: loss \{'blowup': inf\} at epoch 2/10$"):
        fit(
            model,
            objective,
            batches,
            Recipe(epochs=10),
            progress=Progress(quiet=True),
            description="probe",
            steps_per_epoch=3,
        )
    assert epochs_started == [0, 1]


def test_a_diverging_teacher_is_recorded_and_the_matrix_goes_on(tmp_path, capsys):
    # ω·τ² = 1.6e39 overflows float32: the nasty teacher's loss is not finite from its first step.
    run = ["run", "preset=tiny", "quiet=true", f"results_dir={tmp_path}", "defense.nasty.omega=1e38"]
    assert main(run) == 0  # a diverged cell is a result, not an error
    folder = tmp_path / "synthetic"
    normal = json.loads((folder / "records" / "digits_cnn__normal__kd__mlp__seed0.json").read_text())
    nasty = json.loads((folder / "records" / "digits_cnn__nasty__kd__mlp__seed0.json").read_text())
    assert normal["status"] == "ok" and normal["student_acc"] is not None
    assert nasty["status"] == "diverged"
    assert nasty["reason"].startswith("teacher nasty digits_cnn: loss {") and nasty["reason"].endswith("at epoch 1/2")
    assert nasty["teacher_acc"] is None and nasty["student_acc"] is None and nasty["drop"] is None

    assert "| nasty | – | 1 diverged |" in (folder / "leaderboard.md").read_text()
    printed = capsys.readouterr().out.splitlines()  # and so does the printed drop matrix
    assert [line.split() for line in printed if line.startswith("nasty ")] == [["nasty", "diverged"]]
    reasons = pd.read_csv(folder / "records.csv").set_index("defense").reason
    assert reasons["nasty"] == nasty["reason"] and pd.isna(reasons["normal"])

    assert main(run) == 0  # diverged is final for its configuration: nothing is retried
    assert "0 cell(s) computed, 2 reused" in capsys.readouterr().out
