"""Stand-in for `modules.paths`: where models and outputs live (tests point them at tmp_path)."""

import os

script_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data_path = script_path
models_path = os.path.join(data_path, "models")
