"""Where a run computes: the device, how many worker processes, how many threads each."""

from __future__ import annotations

import os
from typing import Any

import torch

from kdbench.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    allowed = "auto, cpu, cuda, cuda:N, mps"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r}; allowed: {allowed}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {name!r}; allowed: {allowed}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but this machine has no CUDA GPU; allowed here: auto, cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} asked for, but MPS is not available here; allowed here: auto, cpu")
    return device


# Each worker process holds its own torch and data (about half a GiB on the CPU): ``auto`` stops here.
MAX_AUTO_CPU_WORKERS = 16


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Far above any machine's use, far below what breaks a process (threads=100000 exhausted its memory
# maps): a typo is refused instead of run.
MAX_WORKERS = 256
MAX_THREADS = 256


def resolve_workers(setting: Any, device: torch.device) -> int:
    """``auto``: one worker per GPU on CUDA (``device=cuda`` without an index), one per core on the
    CPU, where small networks keep one core busy each far better than two threads share one step."""
    if setting == "auto":
        if device.type == "cuda":
            return max(1, torch.cuda.device_count()) if device.index is None else 1
        if device.type == "cpu":
            return min(available_cores(), MAX_AUTO_CPU_WORKERS)
        return 1
    if isinstance(setting, int) and not isinstance(setting, bool) and 1 <= setting <= MAX_WORKERS:
        return setting
    raise ConfigError(f"workers must be an integer from 1 to {MAX_WORKERS}, or auto, got {setting!r}")


def resolve_threads(setting: Any, workers: int) -> int:
    """``auto``: the cores shared out among the workers (at least one each), whether or not a run
    ends up starting them, so that a network trains with the same threads however it is scheduled."""
    if setting == "auto":
        return max(1, available_cores() // workers)
    if isinstance(setting, int) and not isinstance(setting, bool) and 1 <= setting <= MAX_THREADS:
        return setting
    raise ConfigError(f"threads must be an integer from 1 to {MAX_THREADS}, or auto, got {setting!r}")


def worker_device(device: torch.device, worker: int) -> torch.device:
    """Worker k's device: with ``device=cuda`` (no index) and several GPUs, GPU k mod n."""
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    return torch.device("cuda", worker % gpus) if device.index is None and gpus > 1 else device
