"""``bench run all -m``: the matrix as a Hydra multirun, one job per cell, on any Hydra launcher.

The parent validates the whole matrix first, writes the run's settings, then hands Hydra a sweep
over the selection keys (``teacher``, ``defense``, ``attack``, ``student``, ``seed``), so each job
is one cell. Jobs share teachers and baselines through the cache in the results folder (on a
cluster: a shared filesystem). When the sweep ends, :class:`LeaderboardCallback` builds the
leaderboard from the records. Choose the launcher the Hydra way: ``hydra/launcher=joblib``
(one machine, ``hydra.launcher.n_jobs=4``) or ``hydra/launcher=submitit_slurm`` (a SLURM cluster).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

from kdbench.config.compose import CONFIG_MODULE, compose_config, override_key, store_plugin_configs
from kdbench.config.plan import RunPlan, plan_from_config
from kdbench.errors import BenchError, RunStopped
from kdbench.plugins.discovery import load_plugins

SELECTION_KEYS = ("teacher", "defense", "attack", "student", "seed")


def sweep_overrides(plan: RunPlan, overrides: list[str]) -> list[str]:
    """The user's overrides, minus their selection, plus a sweep with one job per cell."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    kept = [text for text, o in zip(overrides, parsed, strict=True) if o.key_or_group not in SELECTION_KEYS]
    return [
        *kept,
        f"teacher={','.join(plan.teachers)}",
        f"defense={','.join(plan.defenses)}",
        # variants are not Hydra group options: each job of a base attack also runs its variants
        f"attack={','.join(dict.fromkeys(plan.attack_plugin(a) for a in plan.attacks))}",
        f"student={','.join(plan.students)}",
        f"seed={','.join(str(s) for s in plan.seeds)}",
    ]


def run_cell_job(cfg: DictConfig) -> None:
    """One multirun job: the cell that the sweep selected (trains what it needs, writes its record)."""
    from kdbench.matrix.run import run_matrix
    from kdbench.progress import Progress

    load_plugins()
    job = HydraConfig.get()
    with open_dict(cfg):
        cfg.preset_name = str(job.runtime.choices.get("preset", "default"))
        # the sweep names each job's attack: an attack that cannot run on the job's teacher makes
        # its cell n/a, as in `bench run` (a user's own attack= was checked before the sweep)
        cfg.given_keys = sorted({override_key(o) for o in job.overrides.task} - {"attack"})
        cfg.device = device_for_job(str(cfg.device), job.job.num, torch.cuda.device_count())
    plan = plan_from_config(cfg)
    # Hydra sends the "kdbench" logger to the job's log file (and its console): one line per
    # network and cell, and a heartbeat, as a redirected `bench run` prints them
    progress = Progress(quiet=plan.quiet, logger=logging.getLogger("kdbench"), heartbeat_s=plan.heartbeat_s)
    with progress.session():
        run_matrix(plan, progress)


def device_for_job(device: str, job_number: int, gpus: int) -> str:
    """With several GPUs and ``device=auto``, job k runs on GPU k mod n: one worker per GPU."""
    return f"cuda:{job_number % gpus}" if device == "auto" and gpus > 1 else device


class LeaderboardCallback(Callback):
    """Builds the leaderboard once every job of a multirun has finished."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from kdbench.report.files import write_reports

        write_reports(Path(str(config.results_dir)).expanduser() / str(config.dataset.name))


def launch(overrides: list[str]) -> RunPlan:
    """Validate, then run the matrix as a Hydra multirun; returns the plan that was swept."""
    from kdbench.matrix.run import check_runnable, command_line, settings_of
    from kdbench.report.files import save_settings

    plan = plan_from_config(compose_config(overrides))
    data = check_runnable(plan)
    settings = settings_of(plan, data)
    settings["command"] = command_line(overrides, multirun=True)
    save_settings(plan.dataset_dir, settings)
    store_plugin_configs()
    ConfigStore.instance().store(
        name="multirun_callbacks",
        group="hydra/callbacks",
        node={"leaderboard": {"_target_": "kdbench.matrix.multirun.LeaderboardCallback"}},
        package="hydra.callbacks",
    )
    app = hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name="config", version_base=None)(run_cell_job)
    argv, full_error = sys.argv, os.environ.get(FULL_ERROR)
    sys.argv = ["bench", "--multirun", "hydra/callbacks=multirun_callbacks", *sweep_overrides(plan, overrides)]
    # Hydra then raises a job's failure instead of printing its own traceback: it becomes one line
    os.environ[FULL_ERROR] = "1"
    try:
        app()
    except (BenchError, KeyboardInterrupt):
        raise
    except Exception as err:  # a job that died (killed, preempted) or failed: the launcher's error
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise JobFailed(
            f"a multirun job did not finish ({first}); finished cells are saved, rerun the same command to continue"
        ) from None
    finally:
        sys.argv = argv
        if full_error is None:
            os.environ.pop(FULL_ERROR, None)
        else:
            os.environ[FULL_ERROR] = full_error
    return plan


FULL_ERROR = "HYDRA_FULL_ERROR"


class JobFailed(RunStopped):
    """A job of the multirun did not finish: the sweep stops, the records of finished cells stay."""
