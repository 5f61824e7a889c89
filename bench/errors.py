"""The one exception type the CLI turns into a single clear line (no traceback)."""

from __future__ import annotations

import errno
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


class CannotWrite(BenchError):
    """A file of the run could not be written for a reason of the machine, not of the cell (a full
    disk, a folder that turned read-only): the run stops there, with the finished cells kept."""

    def __init__(self, path: object, err: OSError) -> None:
        self.errno = err.errno
        super().__init__(f"cannot write {path}: {(err.strerror or str(err)).lower()}")

    def __reduce__(self) -> tuple:  # a worker's raises it in the parent
        return (_rebuilt_cannot_write, (str(self), self.errno))

    @property
    def remedy(self) -> str:
        """What the user can do about it, in a few words."""
        if self.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return "free some space"
        return "make the folder writable"


def _rebuilt_cannot_write(message: str, number: int | None) -> CannotWrite:
    err = CannotWrite.__new__(CannotWrite)
    Exception.__init__(err, message)
    err.errno = number
    return err


# Why a write can fail that no cell can do anything about: the run stops with CannotWrite.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


@contextmanager
def writing(path: object) -> Iterator[None]:
    """Inside, an OSError of the machine's storage (:data:`STORAGE_ERRNOS`) becomes :class:`CannotWrite`."""
    try:
        yield
    except OSError as err:
        if err.errno in STORAGE_ERRNOS:
            raise CannotWrite(path, err) from None
        raise


class RunStopped(RuntimeError):
    """A part of the run died (a worker process, a multirun job): the run stops with one line,
    the finished cells kept."""


class DatasetNotFoundError(BenchError):
    """A dataset folder that is missing or incomplete while downloads are off."""


class Terminated(BaseException):
    """SIGTERM reached ``bench``: unwinds like Ctrl-C (workers ended, finished cells kept), exit 143."""
