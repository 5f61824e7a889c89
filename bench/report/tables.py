"""The leaderboard as text: the ranking and full-matrix tables (rows of cells), and
leaderboard.md around them."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from kdbench.report.leaderboard import (
    INCOMPLETE_MARK,
    OWNER_COST_KEYS,
    SCRATCH_ROW,
    attack_drops,
    attack_set_note,
    findings,
    ranking_rule,
    row_labels,
    shown_status,
)
from kdbench.report.paper import paper_note
from kdbench.store.records import STATUS_OK

OWNER_COST_HEADER = "owner cost: ECE % · KL · TV %"
SERVING_HEADER = "serving ms / 1k queries"


def _owner_cost_text(row: pd.Series) -> str:
    values = [row.get(f"owner_{key}") for key in OWNER_COST_KEYS]
    if any(v is None or pd.isna(v) for v in values):
        return "–"
    ece, kl, tv = values
    return f"{ece:.1f} · {'∞' if kl == float('inf') else f'{kl:.2f}'} · {tv:.1f}"


def _serving_text(ms: Any) -> str:
    if ms is None or pd.isna(ms):
        return "–"
    return f"{ms:.3g}" if ms < 100 else f"{ms:,.0f}"


def _value(mean: Any, std: Any = float("nan"), *, signed: bool = False) -> str:
    if mean is None or pd.isna(mean):
        return "–"
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return text if std is None or pd.isna(std) else f"{text} ± {std:.2f}"


def ranking_table(board: pd.DataFrame) -> list[list[str]]:
    ranked = board[board.defense != SCRATCH_ROW]
    students = [c.removesuffix(" worst_drop") for c in board.columns if c.endswith(" worst_drop")]
    header = [
        "rank",
        "defense",
        "teacher acc",
        "Δ vs normal",
        OWNER_COST_HEADER,
        SERVING_HEADER,
        *[f"worst case → {s}" for s in students],
        "guaranteed drop",
        "verdict",
    ]
    lines = [header]
    for label, (_, row) in zip(row_labels(ranked), ranked.iterrows(), strict=True):
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
                _serving_text(row.get("serving_ms_per_1k")),
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
    for label, (_, row) in zip(row_labels(board), board.iterrows(), strict=True):
        cells = []
        for p in pairs:
            status = row.get(f"{p} status")
            unfinished = isinstance(status, str) and status != STATUS_OK
            if pd.isna(row[f"{p} acc"]):
                cells.append(shown_status(status) if unfinished else "–")
                continue
            text = _value(row[f"{p} acc"], row[f"{p} acc_std"])
            if row["defense"] != SCRATCH_ROW:
                text += f" ({_value(row[f'{p} drop'], row[f'{p} drop_std'], signed=True)})"
            cells.append(text + (f" [{status}]" if unfinished else "") + paper_note(row, f"{p} acc"))
        teacher = _value(row.get("teacher_acc"), row.get("teacher_acc_std")) + paper_note(row, "teacher_acc")
        lines.append([label, teacher, *cells])
    return lines


BEYOND_NOISE_MARK = "*"


def drop_matrix_table(board: pd.DataFrame) -> list[list[str]]:
    """Defense × attack, one figure per cell: the drop of the student that steals best (the smallest
    mean drop over students), marked where every student's drop is beyond noise; an attack with no
    finished student shows the unfinished cells' status. Figures of a column share one width, so
    that their decimal points align in a left-justified column."""
    ranked = board[board.defense != SCRATCH_ROW]
    pairs = [c.removesuffix(" drop") for c in board.columns if c.endswith(" drop") and "/" in c]
    attacks = list(dict.fromkeys(p.split("/", 1)[0] for p in pairs))
    grid: list[list[tuple[float, str] | str]] = []  # (smallest drop, marks), or the text of a cell without one
    for _, row in ranked.iterrows():
        drops = attack_drops(row, board)
        cells: list[tuple[float, str] | str] = []
        for attack in attacks:
            statuses = [row[f"{p} status"] for p in pairs if p.split("/", 1)[0] == attack]
            unfinished = any(s != STATUS_OK for s in statuses)
            if attack not in drops:
                cells.append(_short_status(statuses) if unfinished else "–")
                continue
            beyond = all(sig for _, sig in drops[attack]) and not unfinished
            marks = (BEYOND_NOISE_MARK if beyond else "") + (INCOMPLETE_MARK if unfinished else "")
            cells.append((min(d for d, _ in drops[attack]), marks))
        grid.append(cells)
    widths = [
        max((len(f"{c[0]:+.1f}") for c in column if isinstance(c, tuple)), default=0)
        for column in zip(*grid, strict=True)
    ] or [0] * len(attacks)
    lines = [["defense", *attacks]]
    for label, cells in zip(row_labels(ranked), grid, strict=True):
        texts = [c if isinstance(c, str) else f"{c[0]:+{w}.1f}{c[1]}" for c, w in zip(cells, widths, strict=True)]
        lines.append([label, *texts])
    return lines


def _short_status(statuses: list[str]) -> str:
    """``["1 failed", "1 diverged"]`` → ``failed``: the first status other than ok, without its count."""
    first = next(s for s in statuses if s != STATUS_OK).split(",")[0]
    count, _, status = first.partition(" ")
    return shown_status(status if count.isdigit() else first)


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


HEADER_SKIPS = (
    "scope",
    "not_applicable",
    "recipe",
    "recipe_by_model",
    "restarts",
    "command",
    "commands",
    "plugins",
    "files",
    "teacher_weights",
    "paper_differences",
    "data",
)


# settings["scope"] of a board built from one run's cells (bench run), not from the whole folder
RUN_SCOPE = "this run's cells"


def seed_counts(board: pd.DataFrame) -> str:
    """The seed count of each row, where the rows do not share one ("" where they do)."""
    counts = {str(row.defense): int(row.seeds) for row in board.itertuples() if "seeds" in board}
    if len(set(counts.values())) <= 1:
        return ""
    return ", ".join(f"{defense} {n}" for defense, n in counts.items())


def leaderboard_markdown(board: pd.DataFrame, settings: dict[str, Any], curves: list[str] | None = None) -> str:
    """leaderboard.md: the header, the ranking, the full matrix, then (``curves``: its lines) the
    stealing curves section."""
    out = [f"# kdbench leaderboard: {settings.get('dataset', '?')}", ""]
    shown = ", ".join(f"{k} {v}" for k, v in settings.items() if k not in HEADER_SKIPS)
    if shown:
        out += [f"Settings: {shown}.", ""]
    if "recipe" in settings:
        out += [f"Training recipe: `{json.dumps(applicable_recipe(settings['recipe']), sort_keys=True)}`.", ""]
    if "recipe_by_model" in settings:
        by_model = {arch: applicable_recipe(r) for arch, r in settings["recipe_by_model"].items()}
        out += [f"Recipes of particular models: `{json.dumps(by_model, sort_keys=True)}`.", ""]
    if settings.get("restarts"):
        counts: dict[str, list[int]] = settings["restarts"]
        restarted = ", ".join(f"{column} {' or '.join(map(str, n))}" for column, n in sorted(counts.items()))
        mixed = (
            " (its records come from runs with different restarts)" if any(len(n) > 1 for n in counts.values()) else ""
        )
        out += [
            f"Restarts: each cell of these columns is the mean accuracy of that many students, the first "
            f"trained with the cell's seed and the others with seeds derived from it, against the same "
            f"teacher (each record's details.restarts lists them): {restarted}{mixed}.",
            "",
        ]
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
    if settings.get("scope") == RUN_SCOPE:
        out += [
            "Records shown: the cells of this run only (`bench report` rebuilds the board of every record here).",
            "",
        ]
    mixed = seed_counts(board)
    if mixed:
        out += [f"Seeds differ between rows: {mixed}. A row's figures are over its own seeds.", ""]
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
        "probability of a class is 0) and total variation (%) from the network's own softmax. "
        "Serving: milliseconds the defended teacher takes to answer 1,000 queries (1,024 at a time), "
        "on the machines and threads that ran the cells: compare rows, not machines; – where the "
        "records predate the measurement.",
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
    if attack_set_note(board):
        out += ["", attack_set_note(board)]
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
        table = f"table `{settings.get('paper', '?')}` of bench/paper_results/"
        differences = settings.get("paper_differences") or []
        if differences:
            out += [
                f"“paper X (other settings)”: the figure published in the paper ({table}), measured with other "
                f"settings than this run's ({'; '.join(differences)}): the two are not comparable, and no "
                "difference is shown.",
                "",
            ]
        else:
            out += [
                f"“paper X, Δ Y”: the figure published in the paper ({table}) and the measured minus the "
                "published figure, in points.",
                "",
            ]
    if settings.get("data"):
        out += [f"Data: {settings['data']}.", ""]
    out += _markdown(matrix_table(board))
    for where, reason in sorted((settings.get("not_applicable") or {}).items()):
        out += ["", f"n/a: attack {where}, not run: {reason}"]
    out += [
        "",
        "![teacher accuracy against guaranteed drop](tradeoff.png)",
        "",
        "![drop per defense, attack and student](matrix.png)",
    ]
    if curves:
        out += ["", *curves, "", "![student accuracy against queries](stealing_curves.png)"]
    return "\n".join(out) + "\n"
