"""The one exception type the CLI turns into a single clear line (no traceback)."""


class BenchError(Exception):
    """A problem with the user's input or environment: the message says what and what is allowed."""


class ConfigError(BenchError):
    """An invalid configuration value or name."""


class DatasetNotFoundError(BenchError):
    """A dataset folder that is missing or incomplete while downloads are off."""


class Terminated(BaseException):
    """SIGTERM reached ``bench``: unwinds like Ctrl-C (workers ended, finished cells kept), exit 143."""
