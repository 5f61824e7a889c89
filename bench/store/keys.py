"""Every cache and record key, built here and nowhere else.

A key is the hash of everything that determines a computation: the data, the architecture and its
recipe, the seed (and the CPU threads, which change the bits), the plugins' options and the
fingerprint of their code. A network or a record is reused only under the same key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch

from kdbench.models import architecture_fingerprint
from kdbench.plugins.fingerprint import code_fingerprint


class KeyedPlan(Protocol):
    """What a key reads of a run plan (:class:`kdbench.config.plan.RunPlan`, which imports the API
    that builds teacher keys: named here by its shape, not imported)."""

    dataset: Any
    acceleration: Any
    device: torch.device
    threads: int
    teacher_file: Any
    defenses: dict[str, Any]
    attacks: dict[str, Any]
    attack_bases: dict[str, str]
    restarts: dict[str, int]

    def recipe_for(self, arch: str) -> Any: ...
    def defense(self, name: str) -> Any: ...
    def attack(self, name: str) -> Any: ...


class KeyedCell(Protocol):
    """What a key reads of a cell (:class:`kdbench.config.plan.Cell`)."""

    teacher: str
    defense: str
    attack: str
    seed: int

    @property
    def student_arch(self) -> str: ...


# Bump to invalidate every cached network and record at once.
CACHE_VERSION = 1


def config_hash(spec: dict[str, Any]) -> str:
    blob = json.dumps({"cache_version": CACHE_VERSION, **spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def options_identity(options: Any) -> dict[str, Any]:
    """A plugin's options as its keys hold them: ``identity()`` where the options name a file (its
    content hash then counts, not only its path), else every field."""
    identity = getattr(options, "identity", None)
    return identity() if callable(identity) else asdict(options)


def network_identity(plan: KeyedPlan, arch: str, seed: int) -> dict[str, Any]:
    """What determines any network of architecture ``arch`` that ``plan`` trains at ``seed``.

    The common part of every key: a teacher's adds its defense, a baseline's its kind.
    """
    return {
        "dataset": asdict(plan.dataset),
        "arch": arch,
        "arch_fingerprint": architecture_fingerprint(arch),
        "bf16": plan.acceleration.bf16,
        "recipe": asdict(plan.recipe_for(arch)),
        "seed": seed,
        # CPU reductions are split per thread, so the same seed gives other bits with other threads
        **({"threads": plan.threads} if plan.device.type == "cpu" else {}),
    }


def teacher_identity(plan: KeyedPlan, arch: str, seed: int) -> dict[str, Any]:
    """The common part of a teacher's key: with teacher_weights, the file's sha256 too, so every
    network and cell built from another file is computed anew."""
    identity = network_identity(plan, arch, seed)
    if plan.teacher_file is not None:
        identity["teacher_weights"] = plan.teacher_file.sha256
    return identity


def teacher_key(identity: dict[str, Any], kind: str, options: dict[str, Any], module: str) -> str:
    """The cached teacher network ``kind`` trained with ``options`` by the code of ``module`` (and
    the modules of its package that it imports): editing a defense retrains its network."""
    return config_hash({**identity, "kind": kind, "options": options, "code": code_fingerprint(module)})


def baseline_key(plan: KeyedPlan, arch: str, seed: int) -> str:
    """The student of architecture ``arch`` trained from scratch on the labels: its baseline."""
    return config_hash({**network_identity(plan, arch, seed), "kind": "scratch"})


@dataclass(frozen=True)
class CellKey:
    """A cell's key (``digest``) and the plugins' code fingerprints it holds, which its record keeps."""

    digest: str
    code: dict[str, dict[str, Any]]  # "defense" / "attack" → package, version, source hash


def cell_spec(plan: KeyedPlan, cell: KeyedCell) -> dict[str, Any]:
    """Everything that determines ``cell``'s result; its hash is the cell's key."""
    attack_options = asdict(plan.attacks[cell.attack])
    if cell.attack in plan.attack_bases:
        attack_options = {"base": plan.attack_bases[cell.attack], **attack_options}
    restarts = plan.restarts.get(cell.attack, 1)
    return {
        **teacher_identity(plan, cell.teacher, cell.seed),
        "defense": {cell.defense: options_identity(plan.defenses[cell.defense])},
        "attack": {cell.attack: attack_options},
        # only where there are several: a column of one run keeps the key it always had
        **({"restarts": restarts} if restarts > 1 else {}),
        # the plugins' package, version and source hash: editing a plugin recomputes its cells
        "defense_code": code_fingerprint(type(plan.defense(cell.defense)).__module__),
        "attack_code": code_fingerprint(type(plan.attack(cell.attack)).__module__),
        # the architecture, not the name: a "self" cell is the same computation as its twin
        "student": cell.student_arch,
        "student_arch": architecture_fingerprint(cell.student_arch),
        "student_recipe": asdict(plan.recipe_for(cell.student_arch)),
    }


def server_key(plan: KeyedPlan, cell: KeyedCell, weights: dict[str, str], access: str, top_k: int | None) -> str:
    """What the API of ``cell``'s defended teacher answers at ``access``: the served network (its
    checkpoints' digests in ``weights``) and the defense's options and code, not the attack or the
    student. Answers kept under it are shared by every cell that asks that API the same inputs."""
    spec = cell_spec(plan, cell)
    return config_hash(
        {
            **teacher_identity(plan, cell.teacher, cell.seed),
            "defense": spec["defense"],
            "defense_code": spec["defense_code"],
            "weights": weights,
            "access": access,
            "top_k": top_k,
        }
    )


def cell_key(plan: KeyedPlan, cell: KeyedCell) -> CellKey:
    spec = cell_spec(plan, cell)
    return CellKey(config_hash(spec), {"defense": spec["defense_code"], "attack": spec["attack_code"]})
