"""The ``bench`` command: ``run``, ``report`` and ``list``. Overrides are Hydra's."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import threading
import time
from dataclasses import MISSING, Field
from typing import Any, NoReturn

from rich.console import Console

from kdbench.errors import BenchError, CannotWrite, RunStopped, Terminated

USAGE = """\
bench run [all] [KEY=VALUE ...]   run the results matrix (or the slice the overrides choose)
bench run all -m [KEY=VALUE ...]  the same as a Hydra multirun, one job per cell (any Hydra launcher)
bench report [--full] [KEY=VALUE ...]
                                  rebuild the leaderboards from the records, training nothing;
                                  --full prints every column and student (leaderboard.md's tables)
bench list [KEY=VALUE ...]        registered datasets, models, defenses and attacks, then the settings
                                  and options that `bench run all` with these overrides would run
bench help                        this text

`all` is optional: `bench run` and `bench run all` are the same command; the overrides choose the
slice (`bench run defense=nasty attack=kd`), and without any it is every cell of the matrix.

examples:
  bench run all
  bench run all dataset=cifar10 device=cuda seeds=3
  bench run defense=nasty attack=kd student=mlp
  bench run all defense.nasty.omega=0.1 train.epochs=30
  bench run all -m hydra/launcher=joblib hydra.launcher.n_jobs=2

exit status of run: 0 every cell has a result (ok or diverged), 1 some cell failed or some record
file is unreadable (each listed on stderr), 2 bad input (nothing trained), 130 interrupted (143 on
SIGTERM); of report: 0, or 1 when a record file is unreadable (the tables leave it out and say so)
"""


def _run(overrides: list[str], console: Console) -> int:
    from kdbench.matrix.run import run_command
    from kdbench.store.records import STATUS_FAILED

    plan, done = run_command(overrides, console)
    failed = [record for record in done if record.status == STATUS_FAILED]
    for record in failed:
        where = f" (traceback: {record.details.traceback})" if record.details.traceback else ""
        print(f"failed: {record.cell}: {record.reason}{where}", file=sys.stderr)
    unreadable = _warn_unreadable(plan.dataset_dir)
    return 1 if failed or unreadable else 0


def _warn_unreadable(folder: Any) -> int:
    """Name on stderr each record file the tables left out; their number (the tables are incomplete)."""
    from kdbench.report.files import unreadable_records

    unreadable = unreadable_records(folder)
    for path, reason in unreadable:
        print(f"unreadable record: {path}: {reason}; left out of the tables", file=sys.stderr)
    return len(unreadable)


def _multirun(overrides: list[str], console: Console) -> int:
    from kdbench.matrix.multirun import launch
    from kdbench.progress import duration
    from kdbench.report.leaderboard import leaderboard_frame, records_frame
    from kdbench.report.terminal import print_summary
    from kdbench.store.records import RecordStore

    start = time.perf_counter()
    plan = launch(overrides)
    cells = {cell.name for cell in plan.selected_cells}  # the board of this run, as bench run prints it
    board = leaderboard_frame(records_frame([r for r in RecordStore(plan.dataset_dir).all() if r.cell in cells]))
    took = f"multirun of {len(plan.cells)} cell(s) in {duration(time.perf_counter() - start)}."
    print_summary(board, console, f"kdbench: {plan.dataset.name}", plan.dataset_dir, [took])
    return 0


def _report(overrides: list[str], console: Console, *, full: bool = False) -> int:
    """Rebuild the tables of every dataset with records under ``results_dir`` (or of the one that
    ``dataset=`` names); print their summary, or (``full``) every column and student."""
    from pathlib import Path

    from kdbench.config.compose import compose_config, override_key
    from kdbench.report.files import write_reports
    from kdbench.report.terminal import print_summary, print_terminal_view
    from kdbench.store.atomic import sweep_results

    cfg = compose_config(overrides)
    results = Path(str(cfg.results_dir)).expanduser()
    keys = [override_key(o) for o in overrides]
    named = any(k in ("dataset", "dataset.name", "preset") for k in keys)
    found = sorted(p.parent for p in results.glob("*/records") if p.is_dir())
    folders = [results / str(cfg.dataset.name)] if named or not found else found
    unreadable = 0
    for folder in folders:
        sweep_results(folder)
        board = write_reports(folder)
        show = print_terminal_view if full else print_summary
        show(board, console, f"kdbench: {folder.name}", folder)
        console.print(f"tables rebuilt in {folder}/", soft_wrap=True)
        unreadable += _warn_unreadable(folder)
    return 1 if unreadable else 0


def _default(option: Field) -> Any:
    return option.default_factory() if option.default is MISSING else option.default


def _list(overrides: list[str], console: Console) -> int:
    """Every registry in full (one option per line, never cut, whatever the width or the pipe), then
    the settings and options that ``bench run all`` with ``overrides`` would run."""
    from dataclasses import asdict, fields

    from kdbench.api import ATTACKS, DEFENSES
    from kdbench.data.catalogue import DATASETS
    from kdbench.models import MODELS
    from kdbench.plugins.discovery import load_plugins
    from kdbench.plugins.registry import build

    load_plugins()

    def say(text: str = "") -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    say("datasets: " + ", ".join(DATASETS.names()))
    say("models: " + ", ".join(MODELS.names()) + ", timm/<any timm model>, package.module:factory")
    for title, registry in (("defenses", DEFENSES), ("attacks", ATTACKS)):
        say()
        say(f"{title} (options with their defaults: `{title.removesuffix('s')}.<name>.<option>=...`)")
        for entry in registry:
            threat = ""
            if title == "attacks":  # an attack may set its threat model from its options: show the defaults'
                attack = build(entry, entry.config() if entry.config else None)
                threat = f"; access: {attack.access.value}, data: {attack.data_access.value}"
            say(f"  {entry.name} (from {entry.source}{threat})")
            options = fields(entry.config) if entry.config else ()
            for option in options:
                say(f"      {option.name}={_default(option)!r}")
            if not options:
                say("      (no options)")
    from kdbench.config.compose import compose_config
    from kdbench.config.plan import plan_from_config

    cfg = compose_config(overrides)
    variants = cfg.get("attack_variants") or {}
    say()
    say("attack variants (`attack_variants.<name>={base: <attack>, <option>: <value>}`)")
    for name, spec in variants.items():
        options = {k: v for k, v in spec.items() if k != "base"}
        changes = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "no option changed"
        say(f"  {name} (base {spec.get('base')}): {changes}")
    # What `bench run all` with these overrides would run: the values after the dataset and preset
    # have tuned them, which the class defaults above are not.
    plan = plan_from_config(cfg)
    say()
    say(f"what `{' '.join(['bench run all', *overrides])}` would run")
    say(
        f"  settings: preset {plan.preset}, dataset {plan.dataset.name}, teacher {', '.join(plan.teachers)}, "
        f"students {', '.join(plan.students)}, seeds {', '.join(map(str, plan.seeds))}, device {plan.device}, "
        f"workers {plan.workers}, threads {plan.threads}, results_dir {plan.results_dir}, "
        f"cache_dir {plan.cache_dir}, {len(plan.cells)} cells"
    )
    say(f"  dataset: {', '.join(f'{k}={v!r}' for k, v in asdict(plan.dataset).items())}")
    say(f"  train: {', '.join(f'{k}={v!r}' for k, v in asdict(plan.recipe).items())}")
    for arch, recipe in plan.recipe_by_model.items():
        say(f"  train_by_model.{arch}: {', '.join(f'{k}={v!r}' for k, v in asdict(recipe).items())}")
    if plan.restarts:
        say(f"  restarts (students a cell averages): {', '.join(f'{c} {n}' for c, n in plan.restarts.items())}")
    for group, chosen in (("defense", plan.defenses), ("attack", plan.attacks)):
        for name, options in chosen.items():
            values = asdict(options) if options is not None else {}
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "no options"
            say(f"  {group}.{name}: {shown}")
    return 0


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, whose refusals print the usage (16 lines) before the error: one line instead."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}; usage: bench run|report|list [KEY=VALUE ...] (bench help)", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="bench", usage=USAGE, add_help=True)
    parser.add_argument("command", choices=["run", "report", "list", "help"])
    parser.add_argument("-m", "--multirun", action="store_true", help="run the cells as a Hydra multirun")
    parser.add_argument("--full", action="store_true", help="report: every column and student")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    console = Console()
    previous = _stop_on_sigterm()
    overrides = list(args.overrides)
    try:
        if args.command == "run":
            if overrides[:1] == ["all"]:
                overrides = overrides[1:]
            return _multirun(overrides, console) if args.multirun else _run(overrides, console)
        if args.full and args.command != "report":
            parser.error(f"--full is an option of bench report, not of bench {args.command}")
        if args.multirun and args.command != "run":
            parser.error(f"-m is an option of bench run, not of bench {args.command}")
        if args.command == "report":
            return _report(overrides, console, full=args.full)
        if args.command == "help":
            print(USAGE, end="")
            return 0
        return _list(overrides, console)
    except CannotWrite as err:
        print(
            f"failed: {err}; the cells finished before are kept: {err.remedy} and rerun the same command to continue",
            file=sys.stderr,
        )
        return 1
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)  # one line, never wrapped: scripts grep it
        return 2
    except RunStopped as err:
        print(f"failed: {err}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as err:
        print(
            f"{'terminated' if isinstance(err, Terminated) else 'interrupted'}: finished cells and trained "
            "teachers are saved; rerun the same command to continue",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _stop_on_sigterm() -> Any:
    """SIGTERM unwinds like Ctrl-C (the worker pool ends its workers); the previous handler, or None
    off the main thread, where Python cannot install one."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def program() -> None:
    """The ``bench`` executable: :func:`main`, then exit with its status. The interpreter's last
    garbage collection would walk every object torch's import made (about 0.6 s on the 2-core
    machine); the process ends here, so they are frozen out of it first. (Not in :func:`main`,
    which tests and notebooks call in their own process.)"""
    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    program()
