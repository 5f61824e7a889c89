"""Seeds derived from a run's seed and a purpose, so that every random stream is independent
of the order in which networks and cells are computed."""

from __future__ import annotations


def derive_seed(seed: int, purpose: str) -> int:
    """A reproducible seed for one purpose ("teacher/normal", "student/mlp/kd", ...).

    Each artifact and cell seeds itself from (run seed, purpose), so results do not depend on which
    other cells ran before it in this process or came from the cache.
    """
    import hashlib

    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def restart_seed(seed: int, restart: int) -> int:
    """The seed of a cell's ``restart``-th run of its attack (``restarts``): the cell's own seed for
    the first, so that a column with one restart computes what it always did, then one derived."""
    return seed if restart == 0 else derive_seed(seed, f"restart/{restart}")
