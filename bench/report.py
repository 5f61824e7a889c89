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

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from kdbench.cache import atomic_write_text, remove_stale_temporaries
from kdbench.errors import BenchError
from kdbench.paper import paper_note, with_paper_figures
from kdbench.records import STATUS_OK, Record, RecordStore

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
SETTINGS_FILE = "run.json"
SCRATCH_ROW = "scratch (no teacher)"  # the leaderboard row of the students trained on the labels alone
INCOMPLETE_MARK = "†"
# measurements from Record.extra that get a column: the owner's cost of the defense
# (bench/owner_cost.py) and the inputs a black-box attack queried
OWNER_COST_KEYS = ["ece_pct", "kl_nats", "tv_pct"]
EXTRA_COLUMNS = [*(f"owner_{key}" for key in OWNER_COST_KEYS), "queries", "teacher_weights", "teacher_sha256"]
OWNER_COST_HEADER = "owner cost: ECE % · KL · TV %"


def _extra_columns(record: Record) -> dict[str, Any]:
    cost = record.extra.get("owner_cost") or {}
    owned = owned_file(record) or {}
    return {
        **{f"owner_{key}": cost.get(key) for key in OWNER_COST_KEYS},
        "queries": record.extra.get("queries"),
        "teacher_weights": owned.get("path"),
        "teacher_sha256": owned.get("sha256"),
    }


def owned_file(record: Record) -> dict[str, Any] | None:
    """The owner's weight file a record's teacher came from (teacher_weights, or defense=file)."""
    files = record.extra.get("files") or {}
    return files.get("teacher_weights") or files.get("defense.file.path")


def teacher_label(record: Record) -> str:
    """A record's teacher as rows name it: the architecture, or, for a run on the owner's network
    (teacher_weights), the owner's name, the architecture and the file's sha256 (another file is
    another row); every defense of that run, ``file`` included, is a row under it."""
    return record.extra.get("teacher_label") or record.teacher


def records_frame(records: list[Record]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [{**asdict(r), "teacher": teacher_label(r)} for r in records], columns=[*RECORD_COLUMNS, "extra"]
    )
    extra = pd.DataFrame([_extra_columns(r) for r in records], columns=EXTRA_COLUMNS, index=frame.index)
    frame = pd.concat([frame.drop(columns=["extra"]), extra], axis=1)
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
            row[f"{name} status"] = (
                ", ".join(f"{n} {s}" for s, n in bad.value_counts().sort_index().items()) or STATUS_OK
            )
        for student in students:
            options = [(row[f"{a}/{s} drop"], row[f"{a}/{s} drop_std"], a) for a, s in pairs if s == student]
            finished = [o for o in options if not pd.isna(o[0])]
            worst = min(finished, key=lambda o: o[0], default=(float("nan"), float("nan"), ""))
            row[f"{student} worst_drop"], row[f"{student} worst_drop_std"], row[f"{student} worst_attack"] = worst
            # incomplete: an attack with a seed that did not finish, or with no finished seed at all
            row[f"{student} complete"] = len(finished) == len(options) and all(
                row[f"{a}/{s} status"] == STATUS_OK for a, s in pairs if s == student
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


# -- what the data support ------------------------------------------------------------------------
#
# A defense's guaranteed drop is a mean over seeds; its interval is mean ± SIGNIFICANCE standard
# errors (std / √seeds). Defense A ranks above B only when A's interval lies wholly above B's;
# otherwise they share a rank: a defense's rank is 1 + the number of defenses distinguishably
# better than it. With one seed there is no standard error: the ranking is by the point estimates
# and says that no significance can be judged. Defenses whose worst case is incomplete (a cell
# failed, diverged or is missing) come after every complete one, ranked among themselves.

SIGNIFICANCE = 2.0  # standard errors
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
        better = sum(_interval(p.guaranteed_drop, p.guaranteed_drop_se)[0] > high for _, p in peers.iterrows())
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


def ranking_rule(board: pd.DataFrame) -> str:
    """How the ranks and verdicts were decided, in words, for the reader of this board."""
    seeds = board[board.defense != SCRATCH_ROW].seeds
    if seeds.max() <= 1:
        return (
            "One seed: no significance can be judged. Ranks follow the point estimates, and no "
            "defense is said to protect (a verdict needs several seeds)."
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
    pairs = [c.removesuffix(" drop") for c in board.columns if c.endswith(" drop") and "/" in c]
    lines = []
    for label, (_, row) in zip(_labels(ranked), ranked.iterrows(), strict=True):
        attacks: dict[str, list[tuple[float, bool]]] = {}
        for pair in pairs:
            attack, _student = pair.split("/", 1)
            mean, std = row[f"{pair} drop"], row[f"{pair} drop_std"]
            if pd.isna(mean):
                continue
            attacks.setdefault(attack, []).append((mean, _significant_drop(mean, std, int(row.seeds))))
        holds, breaks, partly = [], [], []
        for attack, drops in attacks.items():
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


def _owner_cost(cells: pd.DataFrame) -> dict[str, float]:
    """A defense's owner-cost measurements, averaged over seeds (one teacher per seed)."""
    per_seed = cells.drop_duplicates(["seed"])
    return {f"owner_{key}": pd.to_numeric(per_seed[f"owner_{key}"]).mean() for key in OWNER_COST_KEYS}


def _owner_cost_text(row: pd.Series) -> str:
    values = [row.get(f"owner_{key}") for key in OWNER_COST_KEYS]
    if any(v is None or pd.isna(v) for v in values):
        return "–"
    ece, kl, tv = values
    return f"{ece:.1f} · {'∞' if kl == float('inf') else f'{kl:.2f}'} · {tv:.1f}"


# -- presentation -------------------------------------------------------------------------------


def _value(mean: Any, std: Any = float("nan"), *, signed: bool = False) -> str:
    if mean is None or pd.isna(mean):
        return "–"
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return text if std is None or pd.isna(std) else f"{text} ± {std:.2f}"


def _labels(board: pd.DataFrame) -> list[str]:
    several = board.teacher[board.teacher != ""].nunique() > 1
    return [f"{t} {d}" if several and t else str(d) for t, d in zip(board.teacher, board.defense, strict=True)]


def ranking_table(board: pd.DataFrame) -> list[list[str]]:
    ranked = board[board.defense != SCRATCH_ROW]
    students = [c.removesuffix(" worst_drop") for c in board.columns if c.endswith(" worst_drop")]
    header = [
        "rank",
        "defense",
        "teacher acc",
        "Δ vs normal",
        OWNER_COST_HEADER,
        *[f"worst case → {s}" for s in students],
        "guaranteed drop",
        "verdict",
    ]
    lines = [header]
    for label, (_, row) in zip(_labels(ranked), ranked.iterrows(), strict=True):
        worst = []
        for s in students:
            text = _value(row[f"{s} worst_drop"], row[f"{s} worst_drop_std"], signed=True)
            if row[f"{s} worst_attack"]:
                text += f" ({row[f'{s} worst_attack']})"
            worst.append(text + ("" if row[f"{s} complete"] else f" {INCOMPLETE_MARK}"))
        rank = "–" if pd.isna(row["rank"]) else str(int(row["rank"]))
        if not row["complete"]:
            rank += f" {INCOMPLETE_MARK}"  # after every complete defense, whatever its figure
        guaranteed = _value(row["guaranteed_drop"], row["guaranteed_drop_std"], signed=True)
        lines.append(
            [
                rank,
                label,
                _value(row["teacher_acc"], row["teacher_acc_std"]),
                _value(row["delta_vs_normal"], signed=True),
                _owner_cost_text(row),
                *worst,
                guaranteed,
                str(row["verdict"]),
            ]
        )
    return lines


def matrix_table(board: pd.DataFrame) -> list[list[str]]:
    """Header plus rows: ``acc (drop)`` per attack × student, or the status of unfinished cells."""
    pairs = [c.removesuffix(" acc") for c in board.columns if c.endswith(" acc") and "/" in c]
    lines = [["defense", "teacher acc", *[p.replace("/", " → ") for p in pairs]]]
    for label, (_, row) in zip(_labels(board), board.iterrows(), strict=True):
        cells = []
        for p in pairs:
            status = row.get(f"{p} status")
            unfinished = isinstance(status, str) and status != STATUS_OK
            if pd.isna(row[f"{p} acc"]):
                cells.append(status if unfinished else "–")
                continue
            text = _value(row[f"{p} acc"], row[f"{p} acc_std"])
            if row["defense"] != SCRATCH_ROW:
                text += f" ({_value(row[f'{p} drop'], row[f'{p} drop_std'], signed=True)})"
            cells.append(text + (f" [{status}]" if unfinished else "") + paper_note(row, f"{p} acc"))
        teacher = _value(row.get("teacher_acc"), row.get("teacher_acc_std")) + paper_note(row, "teacher_acc")
        lines.append([label, teacher, *cells])
    return lines


def _markdown(table: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(table[0]) + " |",
        "|" + "|".join("---" for _ in table[0]) + "|",
        *("| " + " | ".join(r) + " |" for r in table[1:]),
    ]


def applicable_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """A recipe's fields that act: milestones and gamma only under a multistep schedule, momentum
    only with SGD."""
    shown = dict(recipe)
    if shown.get("schedule") != "multistep":
        shown.pop("milestones", None)
        shown.pop("gamma", None)
    if shown.get("optimizer") != "sgd":
        shown.pop("momentum", None)
    return shown


HEADER_SKIPS = ("recipe", "recipe_by_model", "command", "commands", "plugins", "files", "teacher_weights")


def leaderboard_markdown(board: pd.DataFrame, settings: dict[str, Any]) -> str:
    out = [f"# kdbench leaderboard: {settings.get('dataset', '?')}", ""]
    shown = ", ".join(f"{k} {v}" for k, v in settings.items() if k not in HEADER_SKIPS)
    if shown:
        out += [f"Settings: {shown}.", ""]
    if "recipe" in settings:
        out += [f"Training recipe: `{json.dumps(applicable_recipe(settings['recipe']), sort_keys=True)}`.", ""]
    if "recipe_by_model" in settings:
        by_model = {arch: applicable_recipe(r) for arch, r in settings["recipe_by_model"].items()}
        out += [f"Recipes of particular models: `{json.dumps(by_model, sort_keys=True)}`.", ""]
    if settings.get("plugins"):
        out += ["Plugins: " + "; ".join(f"{name} ({where})" for name, where in settings["plugins"].items()) + ".", ""]
    for where, file in sorted((settings.get("files") or {}).items()):
        out += [
            f"Weights from a file ({where}): `{file['path']}`, sha256 `{file['sha256']}`, not trained by the "
            f"suite. Its accuracy is measured on the test split of {settings.get('dataset', '?')}; the suite "
            f"cannot know whether that file saw the test split, so the figure counts only if the split was held out "
            f"from its training (with `dataset=folder` the owner brings its own train/test split).",
            "",
        ]
    commands = settings.get("commands") or ([settings["command"]] if "command" in settings else [])
    if len(commands) == 1:
        out += [f"Reproduce: `{commands[0]}`", ""]
    elif commands:
        out += ["Reproduce (the records shown come from these runs):", "", *(f"- `{c}`" for c in commands), ""]
    out += [
        "## Ranking",
        "",
        "Drop: points of test accuracy the stolen student loses against the same student trained "
        "from scratch on the labels. Worst case: the smallest drop over attacks (the attacker picks "
        "the attack that steals best; it is named in parentheses). Guaranteed drop: the smallest "
        "worst case over students. Means over seeds ± one standard deviation. Higher is better for "
        "the defense; the teacher's own accuracy is its price.",
        "",
        "Owner cost: what the served probabilities cost legitimate users, on the test split: their "
        "expected calibration error (%), and their mean KL(clean ‖ served) (nats; ∞ where the served "
        "probability of a class is 0) and total variation (%) from the network's own softmax.",
        "",
        *_markdown(ranking_table(board)),
    ]
    if not board.complete.fillna(True).all():
        out += [
            "",
            f"{INCOMPLETE_MARK} some attack cells for this student did not finish (see the matrix): "
            "the worst case covers only those that did, so the defense is listed after every complete one.",
        ]
    out += ["", ranking_rule(board)]
    said = findings(board)
    if said:
        out += ["", "What the data show: " + " ".join(said)]
    out += [
        "",
        "## Full matrix",
        "",
        "Each cell: the student's test accuracy (%) and, in parentheses, its drop (points).",
        "",
    ]
    if any(c.endswith(" paper") for c in board.columns):
        out += [
            f"“paper X, Δ Y”: the figure published in the paper (table `{settings.get('paper', '?')}` of "
            "bench/paper_results/) and the measured minus the published figure, in points.",
            "",
        ]
    out += [
        *_markdown(matrix_table(board)),
        "",
        "![teacher accuracy against guaranteed drop](tradeoff.png)",
        "",
        "![drop per defense, attack and student](matrix.png)",
    ]
    return "\n".join(out) + "\n"


def provenance(records: list[Record]) -> dict[str, Any]:
    """What the records shown came from: the distinct commands that wrote them, and each plugin's
    package, version and source hash (records written before these were kept add nothing)."""
    commands = sorted({r.extra["command"] for r in records if r.extra.get("command")})
    plugins: dict[str, set[str]] = {}
    for r in records:
        for role, name in (("defense", r.defense), ("attack", r.attack)):
            code = (r.extra.get("code") or {}).get(role)
            if code:
                plugins.setdefault(name, set()).add(f"{code['package']} {code['version']}, source {code['source']}")
    out: dict[str, Any] = {}
    files = {}
    for r in records:
        for where, file in (r.extra.get("files") or {}).items():
            files[f"{where}, row {teacher_label(r)}"] = file
    if files:
        out["files"] = files
    if commands:
        out["commands"] = commands
    if plugins:
        out["plugins"] = {name: " / ".join(sorted(v)) for name, v in sorted(plugins.items())}
    return out


def save_settings(folder: Path, settings: dict[str, Any]) -> None:
    """Record the run's settings, which every later rebuild of the leaderboard states."""
    atomic_write_text(folder / SETTINGS_FILE, json.dumps(settings, indent=1) + "\n")


def write_reports(folder: Path, settings: dict[str, Any] | None = None) -> pd.DataFrame:
    """Rebuild records.csv, leaderboard.csv, leaderboard.md and the plots of one results folder."""
    from kdbench.plots import plot_matrix, plot_tradeoff

    for stale in (folder, folder / "records"):  # what killed runs left half-written
        remove_stale_temporaries(stale)
    records, unreadable = RecordStore(folder).scan()
    if not records and not unreadable:
        raise BenchError(
            f"no records under {folder}/records; run `bench run all` (or `bench run all dataset=...`) first"
        )
    if not records:
        raise BenchError(
            f"no readable record under {folder}/records ({len(unreadable)} unreadable, e.g. {unreadable[0][0]}: "
            f"{unreadable[0][1]}); delete or fix them, or rerun `bench run all` to recompute them"
        )
    settings_path = folder / SETTINGS_FILE
    if settings is not None:
        save_settings(folder, settings)
    elif settings_path.exists():
        settings = json.loads(settings_path.read_text())
    settings = {**(settings or {}), **provenance(records)}
    frame = records_frame(records)
    board = leaderboard_frame(frame)
    if (settings or {}).get("paper"):
        board = with_paper_figures(board, settings["paper"])
    title = str((settings or {}).get("dataset", folder.name))
    atomic_write_text(folder / "records.csv", frame.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(folder / "leaderboard.csv", board.to_csv(index=False, float_format="%.4f"))
    markdown = leaderboard_markdown(board, settings or {})
    if unreadable:
        markdown += "\n" + unreadable_note(unreadable)
    atomic_write_text(folder / "leaderboard.md", markdown)
    plot_tradeoff(board, folder / "tradeoff.png", title)
    plot_matrix(board, folder / "matrix.png", title)
    return board


def unreadable_records(folder: Path) -> list[tuple[Path, str]]:
    """The record files of ``folder`` that the tables had to leave out, with what is wrong with each."""
    return RecordStore(folder).scan()[1]


def unreadable_note(unreadable: list[tuple[Path, str]]) -> str:
    """The leaderboard's warning that it is incomplete: each record left out, and why."""
    lines = [
        f"**Incomplete:** {len(unreadable)} record file(s) could not be read and are left out of every "
        "table above (fix or delete them; `bench run` recomputes a deleted cell):",
        "",
    ]
    return "\n".join([*lines, *(f"- `{path.name}`: {reason}" for path, reason in unreadable)]) + "\n"
