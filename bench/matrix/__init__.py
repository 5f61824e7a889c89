"""Filling the matrix: which cells are pending, one cell's computation, the in-process and
worker-process executors, and Hydra multirun jobs."""
