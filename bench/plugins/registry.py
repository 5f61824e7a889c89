"""Name → factory registries with one decorator each and errors that list the known names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kdbench.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: T
    config: type | None  # the plugin's structured config (a dataclass), if it takes options
    source: str  # the module (or installed package) that registered it, for error messages


class Registry(Generic[T]):
    """A named collection of plugins of one kind ("attack", "defense", "model", "dataset")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, config: type | None = None) -> Callable[[T], T]:
        def decorator(factory: T) -> T:
            self.add(name, factory, config=config, source=getattr(factory, "__module__", "?"))
            return factory

        return decorator

    def add(self, name: str, factory: T, *, config: type | None = None, source: str = "?") -> None:
        if name in self._entries:
            other = self._entries[name].source
            raise ConfigError(
                f"{self.kind} name {name!r} is registered twice: by {other} and by {source}; rename one of them"
            )
        self._entries[name] = Entry(name, factory, config, source)

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names()) or '(none)'}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[name] for name in self.names())

    def unregister(self, name: str) -> None:
        """Remove an entry (tests register throwaway plugins)."""
        self._entries.pop(name, None)


def build(entry: Entry[Any], options: Any = None) -> Any:
    """Instantiate a plugin with its validated options."""
    return entry.factory(options) if entry.config is not None else entry.factory()
