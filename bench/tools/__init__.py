"""Measurement scripts run by hand, outside CI: ``python -m kdbench.tools.budget_table`` and
``python -m kdbench.tools.time_profile``."""
