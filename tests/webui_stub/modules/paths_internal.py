"""Stand-in for `modules.paths_internal` (install.py reads `script_path` to find A1111's pins)."""

from modules.paths import data_path, models_path, script_path  # noqa: F401
