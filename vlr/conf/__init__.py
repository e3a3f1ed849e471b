"""Hydra config groups, shipped in the package (a regular package, so Hydra finds it after an editable install too)."""
