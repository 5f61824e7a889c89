"""The package version, a leaf (``kdbench.__version__`` re-exports it)."""

__version__ = "0.1.0"
