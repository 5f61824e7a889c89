"""Golden tests of the leaderboards: fixed records in, exact CSV and Markdown out.

The expected figures were computed by hand from the records below (baselines 90 and 92 for seeds
0 and 1; sample standard deviations, e.g. std(91, 93) = √2 = 1.41):
- scratch: 91.00 ± 1.41; normal teacher 97.00 ± 1.41; nasty teacher 95.00 ± 0.00, Δ −2.00;
- normal: kd 92.00 ± 1.41, drop −1.00 ± 0.00; bb 88.00 ± 0.00, drop +3.00 ± 1.41; dafl failed twice;
- nasty: kd 82.00 ± 2.83, drop +9.00 ± 1.41; bb one seed 85.00, drop +5.00, the other diverged;
  no dafl record at all: "not run", and the board says nasty was not attacked like normal;
- worst case (smallest drop): normal −1.00 (kd), nasty +5.00 (bb), so nasty ranks first; both
  worst cases are marked incomplete (a failed or diverged cell was left out), so both ranks carry
  † and neither verdict can say "protects";
- serving: normal's four finished cells timed 2, 4, 3 and 3 ms per 1,000 queries: 3; nasty's
  records have no timing (written before it was measured): "–";
- findings: nasty kd drop 9 ± 1.41 over 2 seeds, interval 9 ± 2·1.0 = [7, 11] > 0: a drop; normal
  bb 3 ± 1.41 → [1, 5]: a drop; normal kd −1 ± 0: none.
"""

from pathlib import Path

import pytest

from kdbench.report.files import write_reports
from kdbench.store.records import CellDetails, Record, RecordStore

SETTINGS = {"dataset": "toy", "preset": "default", "seeds": 2}


def write_records(folder: Path) -> None:
    store = RecordStore(folder)

    def record(defense, attack, seed, teacher_acc, student_acc, status="ok", reason="", serving_ms=None):
        baseline = {0: 90.0, 1: 92.0}[seed]
        drop = None if student_acc is None else baseline - student_acc
        store.put(
            Record(
                dataset="toy",
                defense=defense,
                attack=attack,
                student="s",
                seed=seed,
                teacher="t",
                teacher_acc=teacher_acc,
                student_acc=student_acc,
                baseline_acc=baseline if status == "ok" else None,
                drop=drop,
                status=status,
                wall_s=1.0,
                key=f"k-{defense}-{attack}-{seed}",
                reason=reason,
                details=CellDetails(serving_ms_per_1k=serving_ms),
            )
        )

    for seed, teacher_acc in ((0, 98.0), (1, 96.0)):
        record("normal", "kd", seed, teacher_acc, {0: 91.0, 1: 93.0}[seed], serving_ms={0: 2.0, 1: 4.0}[seed])
        record("normal", "bb", seed, teacher_acc, 88.0, serving_ms=3.0)
        record("normal", "dafl", seed, teacher_acc, None, "failed", "teacher has no BatchNorm layer")
    record("nasty", "kd", 0, 95.0, 80.0)
    record("nasty", "kd", 1, 95.0, 84.0)
    record("nasty", "bb", 0, 95.0, 85.0)
    record("nasty", "bb", 1, 95.0, None, "diverged", "loss nan at epoch 3")


@pytest.fixture
def folder(tmp_path) -> Path:
    write_records(tmp_path)
    write_reports(tmp_path, SETTINGS)
    return tmp_path


GOLDEN = Path(__file__).parent / "golden" / "report"  # checked by hand against the figures above


def test_markdown_leaderboard_is_exactly_as_expected(folder):
    assert (folder / "leaderboard.md").read_text() == (GOLDEN / "leaderboard.md").read_text()


def test_leaderboard_csv_is_exactly_as_expected(folder):
    assert (folder / "leaderboard.csv").read_text() == (GOLDEN / "leaderboard.csv").read_text()


def test_records_csv_keeps_every_seed_and_status(folder):
    assert (folder / "records.csv").read_text() == (GOLDEN / "records.csv").read_text()


def test_plots_are_written_as_png(folder):
    for name in ("tradeoff.png", "matrix.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_rebuilds_from_records_alone_with_the_saved_settings(folder):
    for name in ("leaderboard.md", "leaderboard.csv", "records.csv", "tradeoff.png", "matrix.png"):
        (folder / name).unlink()
    write_reports(folder)  # no settings given: read back from run.json
    assert (folder / "leaderboard.md").read_text() == (GOLDEN / "leaderboard.md").read_text()
    assert (folder / "tradeoff.png").exists()


def test_a_defense_with_more_teachers_is_ranked_per_teacher(tmp_path):
    store = RecordStore(tmp_path)
    for arch, nasty_acc in (("a", 80.0), ("b", 60.0)):
        for defense, acc in (("normal", 90.0), ("nasty", nasty_acc)):
            store.put(Record("toy", defense, "kd", "s", 0, arch, 95.0, acc, 90.0, 90.0 - acc, "ok", 1.0, "k"))
    board = write_reports(tmp_path, {"dataset": "toy"})
    ranked = board[board.teacher != ""][["teacher", "defense", "rank", "guaranteed_drop"]]
    assert ranked.values.tolist() == [
        ["a", "nasty", 1.0, 10.0],
        ["a", "normal", 2.0, 0.0],
        ["b", "nasty", 1.0, 30.0],
        ["b", "normal", 2.0, 0.0],
    ]
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "| 1 | b nasty |" in markdown and "| 2 | a normal |" in markdown


@pytest.mark.parametrize(
    "content,reason",
    [
        (b'{"dataset": "toy", ', "not valid JSON (Expecting property name enclosed in double quotes"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b'"nasty"', "a JSON string, not an object"),
        (b'{"dataset": "toy", "defense": "nasty"}', "lacks field(s) attack, baseline_acc, drop, key, seed"),
        (b"\xff\xfe", "not UTF-8 text"),
    ],
)
def test_bench_report_names_each_unreadable_record_keeps_the_others_and_exits_1(folder, content, reason, capsys):
    from kdbench.cli import main

    # every nasty record becomes unreadable but one: the defense must not silently vanish
    for path in sorted((folder / "records").glob("t__nasty__*.json")):
        path.write_bytes(content)
    (folder / "leaderboard.md").unlink()
    capsys.readouterr()
    assert main(["report", f"results_dir={folder.parent}", f"dataset.name={folder.name}"]) == 1
    err = capsys.readouterr().err.splitlines()
    bad = sorted((folder / "records").glob("t__nasty__*.json"))
    assert len(bad) == 4 and len(err) == 4
    for line, path in zip(err, bad, strict=True):
        assert line.startswith(f"unreadable record: {path}: {reason}") and line.endswith("left out of the tables")
    markdown = (folder / "leaderboard.md").read_text()
    assert "| normal |" in markdown  # the readable records are still tabulated
    assert "**Incomplete:** 4 record file(s) could not be read" in markdown
    assert f"- `{bad[0].name}`: {reason}" in markdown


def test_a_folder_of_unreadable_records_only_is_refused(tmp_path, capsys):
    from kdbench.cli import main

    (tmp_path / "toy" / "records").mkdir(parents=True)
    (tmp_path / "toy" / "records" / "x.json").write_text("[]")
    assert main(["report", f"results_dir={tmp_path}", "dataset.name=toy"]) == 2
    assert "no readable record under" in capsys.readouterr().err
