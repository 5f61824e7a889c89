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
