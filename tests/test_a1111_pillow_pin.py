"""Image decoding and depth-map handling under Pillow 9.5, the version A1111 v1.10 pins.

The project's own environment has a newer Pillow; inside A1111 the same code meets 9.5 (no
`ImageOps.ExifTags`, no `exif_transpose(in_place=...)`). The image and depth-map tests run again
in a subprocess with Pillow 9.5.0 first on the path.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.pinned_packages import cache_folder, install_pinned

A1111_PILLOW = "9.5.0"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def a1111_pillow_site(request, tmp_path_factory) -> Path:
    return install_pinned(f"pillow=={A1111_PILLOW}", cache_folder(request, tmp_path_factory, f"pillow-{A1111_PILLOW}"))


def test_image_and_depth_map_tests_pass_under_a1111_pillow(a1111_pillow_site):
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(a1111_pillow_site), str(REPO_ROOT)]))
    version = subprocess.run([sys.executable, "-c", "import PIL; print(PIL.__version__)"], env=environment,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == A1111_PILLOW
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_images.py", "tests/test_depthmaps_values.py", "tests/test_depthmaps_source.py"],
        cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=600, check=False,
    )
    assert child.returncode == 0, child.stdout[-4000:]
