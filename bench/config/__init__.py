"""From command-line overrides to a validated run plan: Hydra composition, option validation, the
plan of cells, and the device, worker and thread settings."""
