"""Records → tables and plots, RobustBench-style: each defense is judged by its worst case.

Files written to ``<results>/<dataset>/``: records.csv (one row per cell and seed), leaderboard.csv
(one row per teacher × defense), leaderboard.md (the ranking, then the full matrix), tradeoff.png
and matrix.png. Everything here reads records only, so ``bench report`` rebuilds the files
without training anything; ``bench run`` calls the same code at its end.

Definitions (all in points of test accuracy, means over seeds, ± one sample standard deviation):
- drop = scratch-baseline accuracy − stolen-student accuracy, per attack × student;
- worst case for a student = the smallest mean drop over attacks (the attacker picks the attack
  that steals best), with the attack that achieves it;
- guaranteed drop = the smallest worst case over students: what the defense guarantees whatever
  attack and student the attacker picks. Defenses are ranked by it, per teacher architecture.
Cells whose status is not ``ok`` never enter a mean; where a worst case misses some of them, it
is marked.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pandas as pd

from kdbench.store.records import STATUS_NA, STATUS_OK, Record

RECORD_COLUMNS = [
    "dataset",
    "defense",
    "attack",
    "student",
    "student_arch",
    "seed",
    "teacher",
    "teacher_acc",
    "student_acc",
    "baseline_acc",
    "drop",
    "status",
    "wall_s",
    "reason",
    "key",
]


SCRATCH_ROW = "scratch (no teacher)"  # the leaderboard row of the students trained on the labels alone


# the status of a cell no record of the board has: other defenses' runs had that attack, this one's not
NOT_RUN = "not run"


INCOMPLETE_MARK = "†"


# measurements from Record.details that get a column: the owner's cost of the defense
# (bench/owner_cost.py) and the inputs a black-box attack queried
OWNER_COST_KEYS = ["ece_pct", "kl_nats", "tv_pct"]


EXTRA_COLUMNS = [
    *(f"owner_{key}" for key in OWNER_COST_KEYS),
    "serving_ms_per_1k",
    "queries",
    "teacher_weights",
    "teacher_sha256",
]


def _extra_columns(record: Record) -> dict[str, Any]:
    cost = record.details.owner_cost
    owned = owned_file(record) or {}
    return {
        **{f"owner_{key}": cost.get(key) for key in OWNER_COST_KEYS},
        "serving_ms_per_1k": record.details.serving_ms_per_1k,
        "queries": record.details.queries,
        "teacher_weights": owned.get("path"),
        "teacher_sha256": owned.get("sha256"),
    }


def owned_file(record: Record) -> dict[str, Any] | None:
    """The owner's weight file a record's teacher came from (teacher_weights, or defense=file)."""
    files = record.details.files
    return files.get("teacher_weights") or files.get("defense.file.path")


def teacher_label(record: Record) -> str:
    """A record's teacher as rows name it: the architecture, or, for a run on the owner's network
    (teacher_weights), the owner's name, the architecture and the file's sha256 (another file is
    another row); every defense of that run, ``file`` included, is a row under it."""
    return record.details.teacher_label or record.teacher


def records_frame(records: list[Record]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [{**asdict(r), "teacher": teacher_label(r)} for r in records], columns=[*RECORD_COLUMNS, "details"]
    )
    extra = pd.DataFrame([_extra_columns(r) for r in records], columns=EXTRA_COLUMNS, index=frame.index)
    frame = pd.concat([frame.drop(columns=["details"]), extra], axis=1)
    if frame.teacher_weights.isna().all():  # no network from the owner's files: no columns for them
        frame = frame.drop(columns=["teacher_weights", "teacher_sha256"])
    # records written before "self" students existed leave the architecture empty: it is the name
    frame["student_arch"] = frame.student_arch.where(frame.student_arch != "", frame.student)
    return frame.sort_values(["teacher", "defense", "attack", "student", "seed"], kind="stable").reset_index(drop=True)


def _mean_std(values: pd.Series) -> tuple[float, float]:
    return float(values.mean()), float(values.std()) if len(values) > 1 else float("nan")


def leaderboard_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (teacher, defense), ranked within each teacher, after one row of scratch baselines."""
    ok = frame[frame.status == STATUS_OK]
    pairs = sorted(set(zip(frame.attack, frame.student, strict=True)))
    students = sorted(set(frame.student))

    scratch: dict[str, Any] = {"teacher": "", "defense": SCRATCH_ROW, "seeds": int(ok.seed.nunique())}
    baselines = ok.drop_duplicates(["student", "seed"])
    for attack, student in pairs:
        mine = baselines[baselines.student == student].baseline_acc
        # a "self" student is another architecture under each teacher: no one scratch figure
        if len(mine) and ok[ok.student == student].student_arch.nunique() == 1:
            scratch[f"{attack}/{student} acc"], scratch[f"{attack}/{student} acc_std"] = _mean_std(mine)

    rows = []
    for (arch, defense), mine in frame.groupby(["teacher", "defense"], sort=False):
        mine_ok = mine[mine.status == STATUS_OK]
        teacher = mine_ok.drop_duplicates("seed").teacher_acc
        normal = ok[(ok.teacher == arch) & (ok.defense == "normal")].drop_duplicates("seed").teacher_acc
        row: dict[str, Any] = {"teacher": arch, "defense": defense, "seeds": int(mine_ok.seed.nunique())}
        row["teacher_acc"], row["teacher_acc_std"] = _mean_std(teacher)
        row["delta_vs_normal"] = row["teacher_acc"] - normal.mean() if len(normal) else float("nan")
        row.update(_owner_cost(mine_ok))
        for attack, student in pairs:
            cell = mine[(mine.attack == attack) & (mine.student == student)]
            cell_ok = cell[cell.status == STATUS_OK]
            name = f"{attack}/{student}"
            row[f"{name} acc"], row[f"{name} acc_std"] = _mean_std(cell_ok.student_acc)
            row[f"{name} drop"], row[f"{name} drop_std"] = _mean_std(cell_ok["drop"])
            bad = cell[cell.status != STATUS_OK].status
            if cell.empty:  # others ran this attack on this student, this defense's runs did not
                row[f"{name} status"] = NOT_RUN
            elif (cell.status == STATUS_NA).all():
                row[f"{name} status"] = STATUS_NA
            else:
                row[f"{name} status"] = (
                    ", ".join(f"{n} {s}" for s, n in bad.value_counts().sort_index().items()) or STATUS_OK
                )
        for student in students:
            # an attack that cannot run on this teacher (n/a) is not one of its options
            applicable = [
                (a, s) for a, s in pairs if s == student and row[f"{a}/{s} status"] not in (STATUS_NA, NOT_RUN)
            ]
            options = [(row[f"{a}/{s} drop"], row[f"{a}/{s} drop_std"], a) for a, s in applicable]
            finished = [o for o in options if not pd.isna(o[0])]
            worst = min(finished, key=lambda o: o[0], default=(float("nan"), float("nan"), ""))
            row[f"{student} worst_drop"], row[f"{student} worst_drop_std"], row[f"{student} worst_attack"] = worst
            # incomplete: an attack with a seed that did not finish, or with no finished seed at all
            row[f"{student} complete"] = len(finished) == len(options) and all(
                row[f"{a}/{s} status"] == STATUS_OK for a, s in applicable
            )
        candidates = [(row[f"{s} worst_drop"], row[f"{s} worst_drop_std"], s) for s in students]
        finished = [c for c in candidates if not pd.isna(c[0])]
        drop, std, student = min(finished, key=lambda c: c[0], default=(float("nan"), float("nan"), ""))
        row["guaranteed_drop"], row["guaranteed_drop_std"] = drop, std
        row["weakest_to"] = f"{row[f'{student} worst_attack']} → {student}" if student else ""
        row["complete"] = all(row[f"{s} complete"] for s in students)
        rows.append(row)

    board = pd.DataFrame(rows)
    board["guaranteed_drop_se"] = board.guaranteed_drop_std / board.seeds.clip(lower=1) ** 0.5
    board["rank"] = float("nan")
    for _, group in board.groupby("teacher", sort=False):
        board.loc[group.index, "rank"] = _ranks(group)
    board["verdict"] = [_verdict(row) for _, row in board.iterrows()]
    board = board.sort_values(["teacher", "rank", "defense"], kind="stable", na_position="last")
    columns = [
        "teacher",
        "defense",
        "rank",
        "verdict",
        "seeds",
        "teacher_acc",
        "teacher_acc_std",
        "delta_vs_normal",
        "guaranteed_drop",
        "guaranteed_drop_std",
        "guaranteed_drop_se",
        "weakest_to",
        "complete",
    ]
    columns += [c for c in board.columns if c not in columns]
    return pd.concat([pd.DataFrame([scratch]), board], ignore_index=True)[columns]


SIGNIFICANCE = 2.0  # standard errors


# points: drops that differ by less are equal (95.56 − 96.11 and 97.22 − 97.78 are both −5/9 points,
# one image of 360, but not in floating point)
RANK_TOLERANCE = 1e-6


ONE_SEED_NOISE = 1.0  # points: with one seed, a drop at most this large is not called a drop


PROTECTS = "protects"


NO_PROTECTION = "no protection shown"


def _interval(mean: float, se: float) -> tuple[float, float]:
    if pd.isna(se):
        return mean, mean
    return mean - SIGNIFICANCE * se, mean + SIGNIFICANCE * se


def _ranks(group: pd.DataFrame) -> list[float]:
    """Ranks within one teacher: complete defenses first, ties where intervals overlap."""
    complete = group.complete.astype(bool)
    ranks = []
    for _, row in group.iterrows():
        if pd.isna(row.guaranteed_drop):
            ranks.append(float("nan"))
            continue
        peers = group[(complete == row.complete) & group.guaranteed_drop.notna()]
        _, high = _interval(row.guaranteed_drop, row.guaranteed_drop_se)
        better = sum(
            _interval(p.guaranteed_drop, p.guaranteed_drop_se)[0] > high + RANK_TOLERANCE for _, p in peers.iterrows()
        )
        offset = 0 if row.complete else int((complete & group.guaranteed_drop.notna()).sum())
        ranks.append(float(1 + offset + better))
    return ranks


def _significant_drop(mean: float, std: float, seeds: int) -> bool:
    """A drop beyond noise: its interval above 0 (several seeds), or above ONE_SEED_NOISE (one seed)."""
    if pd.isna(mean):
        return False
    if seeds > 1 and not pd.isna(std):
        return mean - SIGNIFICANCE * std / seeds**0.5 > 0
    return mean > ONE_SEED_NOISE


def _verdict(row: pd.Series) -> str:
    if not row.complete:
        return f"{NO_PROTECTION} (incomplete)"
    if row.seeds > 1 and _significant_drop(row.guaranteed_drop, row.guaranteed_drop_std, int(row.seeds)):
        return PROTECTS
    return NO_PROTECTION


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def ranking_rule(board: pd.DataFrame, *, short: bool = False) -> str:
    """How the ranks and verdicts were decided, in words, for the reader of this board (``short``:
    in two lines of 80 columns, for the terminal's summary)."""
    seeds = board[board.defense != SCRATCH_ROW].seeds
    if seeds.max() <= 1:
        if short:
            return "One seed: ranks follow the point estimates, and no verdict says “protects” (that needs seeds)."
        return (
            "One seed: no significance can be judged. Ranks follow the point estimates, and no "
            "defense is said to protect (a verdict needs several seeds)."
        )
    if short:
        return (
            f"Ranks tie unless the guaranteed drops' intervals (mean ± {SIGNIFICANCE:g} standard errors over "
            f"seeds) are disjoint; “{PROTECTS}”: positive beyond that interval."
        )
    return (
        f"Ranks: two defenses share a rank unless their guaranteed drops' intervals (mean ± "
        f"{SIGNIFICANCE:g} standard errors over seeds) are disjoint. Verdict: “{PROTECTS}” where the "
        f"guaranteed drop is positive beyond that interval, otherwise “{NO_PROTECTION}”."
    )


def findings(board: pd.DataFrame) -> list[str]:
    """One sentence per defense, generated from the data: which attacks it holds against (with the
    points the student loses) and which recover everything."""
    ranked = board[board.defense != SCRATCH_ROW]
    lines = []
    for label, (_, row) in zip(row_labels(ranked), ranked.iterrows(), strict=True):
        holds, breaks, partly = [], [], []
        for attack, drops in attack_drops(row, board).items():
            low, high = min(d for d, _ in drops), max(d for d, _ in drops)
            span = f"{low:.1f}" if abs(high - low) < 0.05 else f"{low:.1f}–{high:.1f}"
            if all(sig for _, sig in drops):
                holds.append(f"{attack} loses {span} points")
            elif not any(sig for _, sig in drops):
                breaks.append(attack)
            else:
                partly.append(f"{attack} ({span})")
        parts = []
        if holds:
            parts.append("; ".join(holds))
        if partly:
            parts.append(f"only some students lose to {_join(partly)}")
        if breaks:
            parts.append(f"{_join(breaks)}: no drop beyond noise (the student recovers all of it)")
        if not parts:
            continue
        lines.append(f"{label}: " + "; ".join(parts) + ".")
    return lines


def attack_drops(row: pd.Series, board: pd.DataFrame) -> dict[str, list[tuple[float, bool]]]:
    """A board row's finished cells per attack: (mean drop, beyond noise) for each student."""
    pairs = [c.removesuffix(" drop") for c in board.columns if c.endswith(" drop") and "/" in c]
    attacks: dict[str, list[tuple[float, bool]]] = {}
    for pair in pairs:
        attack, _student = pair.split("/", 1)
        mean, std = row[f"{pair} drop"], row[f"{pair} drop_std"]
        if not pd.isna(mean):
            attacks.setdefault(attack, []).append((mean, _significant_drop(mean, std, int(row.seeds))))
    return attacks


def headline(board: pd.DataFrame) -> str:
    """The run's finding in one sentence: the defense that makes the most attacks' students lose
    points that the normal teacher's students do not lose, and the attacks that recover them."""
    ranked = board[board.defense != SCRATCH_ROW]
    normal_drops = {
        str(row.teacher): attack_drops(row, board) for _, row in ranked[ranked.defense == "normal"].iterrows()
    }
    best: tuple[int, float, str] | None = None
    for label, (_, row) in zip(row_labels(ranked), ranked.iterrows(), strict=True):
        if row.defense == "normal":
            continue
        normal = normal_drops.get(str(row.teacher), {})
        held: list[tuple[str, float, str]] = []  # attack, smallest drop, span
        recovered, partly = [], []
        for attack, drops in attack_drops(row, board).items():
            low, high = min(d for d, _ in drops), max(d for d, _ in drops)
            span = f"{low:.1f}" if abs(high - low) < 0.05 else f"{low:.1f}–{high:.1f}"
            if all(sig for _, sig in drops) and not any(sig for _, sig in normal.get(attack, [])):
                held.append((attack, low, span))
            elif not any(sig for _, sig in drops):
                recovered.append(attack)
            elif not all(sig for _, sig in drops):
                partly.append(attack)
        if not held:
            continue
        losses = [
            f"{a} students lose {span} points" if i == 0 else f"{a} students {span}"
            for i, (a, _, span) in enumerate(held)
        ]
        sentence = f"{label}: {_join(losses)}"
        if normal:
            sentence += ", where the normal teacher's lose none beyond noise"
        if recovered:
            sentence += f"; {_join(recovered)} recover{'s' if len(recovered) == 1 else ''} everything"
        if partly:
            sentence += f" ({_join(partly)} for some students)"
        score = (len(held), sum(low for _, low, _ in held), sentence + ".")
        best = score if best is None or score[:2] > best[:2] else best
    if best is not None:
        return best[2]
    if ranked.empty:
        return "No defense was measured."
    return "No defense makes any attack's students lose points beyond noise that the normal teacher's do not lose."


def attack_set_note(board: pd.DataFrame) -> str:
    """Where defenses are ranked on different attack sets (a slice run against some of them only),
    which attacks each lacks; "" where every defense has every attack."""
    ranked = board[board.defense != SCRATCH_ROW]
    pairs = [c.removesuffix(" status") for c in board.columns if c.endswith(" status") and "/" in c]
    lacking = []
    for label, (_, row) in zip(row_labels(ranked), ranked.iterrows(), strict=True):
        missing = sorted({p.split("/", 1)[0] for p in pairs if row[f"{p} status"] == NOT_RUN})
        if missing:
            lacking.append(f"{label} without {_join(missing)}")
    if not lacking:
        return ""
    return (
        f"Not every defense was attacked alike: {'; '.join(lacking)} (not run against it). Each is ranked "
        "on the attacks it met; run the missing cells for a like-for-like ranking."
    )


def shown_status(status: str) -> str:
    """A cell's status as the tables show it: "n/a" for an attack that cannot run on the teacher."""
    return "n/a" if status == STATUS_NA else status


def _owner_cost(cells: pd.DataFrame) -> dict[str, float]:
    """A defense's owner-cost measurements, averaged over seeds (one teacher per seed)."""
    per_seed = cells.drop_duplicates(["seed"])
    cost = {f"owner_{key}": pd.to_numeric(per_seed[f"owner_{key}"]).mean() for key in OWNER_COST_KEYS}
    # a timing, measured once per teacher in every process that served it: the mean of all that did
    # (records written before it was measured have none)
    cost["serving_ms_per_1k"] = pd.to_numeric(cells.serving_ms_per_1k).mean()
    return cost


def row_labels(board: pd.DataFrame) -> list[str]:
    several = board.teacher[board.teacher != ""].nunique() > 1
    return [f"{t} {d}" if several and t else str(d) for t, d in zip(board.teacher, board.defense, strict=True)]
