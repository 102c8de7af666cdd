"""The depth networks under the timm that older A1111 installs carry (0.6.x), next to the current one.

A session fixture installs timm 0.6.13 with pip into the pytest cache (once) and a subprocess runs
this project against it: the networks must have the same tensor names and shapes, and the same
weights files must give the same depth maps.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.pinned_packages import cache_folder, install_pinned

from lib_depth2img.estimators import ESTIMATORS, DepthEstimator, build_dpt, write_tiny_depth_weights

OLD_TIMM = "0.6.13"
REPO_ROOT = Path(__file__).resolve().parents[1]

CHILD_SCRIPT = """
import json, sys
import numpy as np
from PIL import Image
from lib_depth2img.estimators import ESTIMATORS, DepthEstimator, build_dpt
from lib_depth2img.estimators.timm_parts import timm_parts

folder = sys.argv[1]
report = {"timm": timm_parts().version, "shapes": {}}
for name in ESTIMATORS:
    model = build_dpt(name, device="meta")
    report["shapes"][name] = {key: list(tensor.shape) for key, tensor in model.state_dict().items()}
    estimator = DepthEstimator.from_file(f"{folder}/{name}.safetensors", name)
    np.save(f"{folder}/{name}-depth.npy", estimator.estimate(Image.open(f"{folder}/scene.png")))
print(json.dumps(report))
"""


@pytest.fixture(scope="session")
def old_timm_site(request, tmp_path_factory) -> Path:
    """A folder holding only timm 0.6.13 (no dependencies: torch comes from this environment)."""
    return install_pinned(f"timm=={OLD_TIMM}", cache_folder(request, tmp_path_factory, f"timm-{OLD_TIMM}"))


def test_networks_and_depth_maps_are_the_same_under_timm_0_6(old_timm_site, tmp_path):
    rng = np.random.default_rng(0)
    scene = Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    scene.save(tmp_path / "scene.png")
    for name in ESTIMATORS:
        write_tiny_depth_weights(tmp_path / f"{name}.safetensors", name)

    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(old_timm_site), str(REPO_ROOT)]))
    child = subprocess.run(
        [sys.executable, "-c", CHILD_SCRIPT, str(tmp_path)],
        check=False,
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])

    assert report["timm"] == OLD_TIMM
    for name in ESTIMATORS:
        ours = {
            key: list(tensor.shape) for key, tensor in build_dpt(name, device="meta").state_dict().items()
        }
        assert report["shapes"][name] == ours, name
        depth = DepthEstimator.from_file(tmp_path / f"{name}.safetensors", name).estimate(scene)
        np.testing.assert_allclose(
            np.load(tmp_path / f"{name}-depth.npy"), depth, rtol=1e-4, atol=1e-5, err_msg=name
        )
