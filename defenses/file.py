"""``file``: a network defended elsewhere (a nasty teacher trained by the owner), loaded from
``defense.file.path`` and served as it is: its own row, beside the defenses the suite builds.

Its architecture is the run's ``teacher=``; the file's sha256 is part of every cell's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.api import Defense, DefenseContext, OptionError, Teacher, check_weight_file, register_defense


@dataclass
class FileDefenseConfig:
    path: str | None = None  # the defended network's weights (.pt/.pth state_dict, .safetensors, best_model.tar)

    def __post_init__(self) -> None:
        if self.path is None:
            raise OptionError("path", "is required: the defended network's weights file (defense=file)")
        if not self.resolved.is_file():
            raise OptionError("path", f"={self.resolved}: no such file")

    @property
    def resolved(self) -> Path:
        return Path(str(self.path)).expanduser().resolve()

    def weight_file(self) -> tuple[str, Path, str]:
        """(option, path, sha256), checked before anything trains."""
        return "defense.file.path", self.resolved, check_weight_file(self.resolved, "defense.file.path")

    def identity(self) -> dict[str, Any]:
        """What the cells' keys hold: the file's content, not only its name."""
        return {"path": str(self.resolved), "sha256": check_weight_file(self.resolved, "defense.file.path")}


@register_defense("file", config=FileDefenseConfig)
class FileDefense(Defense):
    def build(self, ctx: DefenseContext) -> Teacher:
        _, path, sha256 = self.cfg.weight_file()
        return Teacher(ctx.loaded(path, "defense.file.path", sha256))
