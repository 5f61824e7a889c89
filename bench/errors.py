"""The one exception type the CLI turns into a single clear line (no traceback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class BenchError(Exception):
    """A problem with the user's input or environment: the message says what and what is allowed."""


class ConfigError(BenchError):
    """An invalid configuration value or name."""


class OptionError(ConfigError):
    """A plugin option whose value is not allowed. The plugin names the field (``option``) and says
    what is wrong and what is allowed (``problem``); the framework, which knows under which name
    the plugin runs (``attack.kd_t20``), puts that in front: ``attack.kd_t20.tau must be > 0``."""

    def __init__(self, option: str, problem: str) -> None:
        self.option, self.problem = option, problem
        super().__init__(self.at(""))

    def at(self, where: str) -> str:
        """The message with the option's full name under ``where`` (``attack.kd``, ``defense.topk``)."""
        name = f"{where}.{self.option}" if where else self.option
        return f"{name}{'' if self.problem[:1] in '=:.' else ' '}{self.problem}"


@contextmanager
def options_of(where: str) -> Iterator[None]:
    """Inside, an :class:`OptionError` becomes a :class:`ConfigError` naming the option under ``where``."""
    try:
        yield
    except OptionError as err:
        raise ConfigError(err.at(where)) from None


class DatasetNotFoundError(BenchError):
    """A dataset folder that is missing or incomplete while downloads are off."""


class Terminated(BaseException):
    """SIGTERM reached ``bench``: unwinds like Ctrl-C (workers ended, finished cells kept), exit 143."""
