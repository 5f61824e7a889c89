"""The ``bench`` command: ``run``, ``report`` and ``list``. Overrides are Hydra's."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import MISSING, Field
from typing import Any

from kdbench.errors import BenchError
from rich.console import Console
from rich.table import Table

USAGE = """\
bench run [all] [KEY=VALUE ...]   run the results matrix (or the slice the overrides choose)
bench run all -m [KEY=VALUE ...]  the same as a Hydra multirun, one job per cell (any Hydra launcher)
bench report [KEY=VALUE ...]      rebuild the leaderboards from the records, training nothing
bench list                        show registered datasets, models, defenses and attacks

examples:
  bench run all
  bench run all dataset=cifar10 device=cuda seeds=3
  bench run defense=nasty attack=kd student=mlp
  bench run all defense.nasty.omega=0.1 train.epochs=30
  bench run all -m hydra/launcher=joblib hydra.launcher.n_jobs=2

exit status of run: 0 every cell has a result (ok or diverged), 1 some cell failed (listed on
stderr), 2 bad input (nothing trained), 130 interrupted
"""


def _run(overrides: list[str], console: Console) -> int:
    from kdbench.execute import run_command
    from kdbench.records import STATUS_FAILED

    _, done = run_command(overrides, console)
    failed = [record for record in done if record.status == STATUS_FAILED]
    for record in failed:
        print(f"failed: {record.cell}: {record.reason}", file=sys.stderr)
    return 1 if failed else 0


def _multirun(overrides: list[str], console: Console) -> int:
    from kdbench.multirun import launch
    from kdbench.records import RecordStore
    from kdbench.report import leaderboard_frame, print_leaderboard, records_frame

    start = time.perf_counter()
    plan = launch(overrides)
    board = leaderboard_frame(records_frame(RecordStore(plan.dataset_dir).all()))
    print_leaderboard(board, console, f"kdbench: {plan.dataset.name}")
    console.print(
        f"multirun of {len(plan.cells)} cell(s) in {time.perf_counter() - start:.1f} s; tables in {plan.dataset_dir}/"
    )
    return 0


def _report(overrides: list[str], console: Console) -> int:
    """Rebuild the tables of every dataset with records under ``results_dir`` (or of the one that
    ``dataset=`` names)."""
    from pathlib import Path

    from kdbench.config import compose_config
    from kdbench.report import print_leaderboard, write_reports

    cfg = compose_config(overrides)
    results = Path(str(cfg.results_dir)).expanduser()
    named = any(o.split("=", 1)[0].lstrip("+~") in ("dataset", "preset") for o in overrides)
    found = sorted(p.parent for p in results.glob("*/records") if p.is_dir())
    folders = [results / str(cfg.dataset.name)] if named or not found else found
    for folder in folders:
        board = write_reports(folder)
        print_leaderboard(board, console, f"kdbench: {folder.name}")
        console.print(f"tables rebuilt in {folder}/")
    return 0


def _default(option: Field) -> Any:
    return option.default_factory() if option.default is MISSING else option.default


def _list(console: Console) -> int:
    from dataclasses import fields

    from kdbench.api import ATTACKS, DEFENSES
    from kdbench.datasets import DATASETS
    from kdbench.discovery import load_plugins
    from kdbench.models import MODELS
    from kdbench.registry import build

    load_plugins()
    console.print("[bold]datasets[/]: " + ", ".join(DATASETS.names()))
    console.print("[bold]models[/]: " + ", ".join(MODELS.names()) + ", timm/<any timm model>, package.module:factory")
    for title, registry in (("defenses", DEFENSES), ("attacks", ATTACKS)):
        table = Table(title=title, title_justify="left")
        for column in ("name", "options (defaults)", "threat model" if title == "attacks" else "", "from"):
            if column:
                table.add_column(column)
        for entry in registry:
            options = ", ".join(f"{f.name}={_default(f)!r}" for f in fields(entry.config)) if entry.config else ""
            threat = []
            if title == "attacks":  # an attack may set its threat model from its options: show the defaults'
                attack = build(entry, entry.config() if entry.config else None)
                threat = [f"{attack.access.value}, data: {attack.data_access.value}"]
            table.add_row(entry.name, options or "–", *threat, entry.source)
        console.print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", usage=USAGE, add_help=True)
    parser.add_argument("command", choices=["run", "report", "list"])
    parser.add_argument("-m", "--multirun", action="store_true", help="run the cells as a Hydra multirun")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    console = Console()
    overrides = list(args.overrides)
    try:
        if args.command == "run":
            if overrides[:1] == ["all"]:
                overrides = overrides[1:]
            return _multirun(overrides, console) if args.multirun else _run(overrides, console)
        if args.command == "report":
            return _report(overrides, console)
        return _list(console)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)  # one line, never wrapped: scripts grep it
        return 2
    except RuntimeError as err:
        from kdbench.workers import WorkerDied

        if not isinstance(err, WorkerDied):
            raise
        print(f"failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: finished cells and trained teachers are saved; rerun the same command to continue",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
