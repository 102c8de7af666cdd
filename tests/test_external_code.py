"""`lib_depth2img.external_code`, the API other extensions import, used as they would inside the stub WebUI."""

from __future__ import annotations

import numpy as np
import pytest
import webui_stub  # noqa: F401  (first: A1111's `modules` for the adapter)
from modules import processing, scripts, sd_models
from PIL import Image
from webui_stub import harness
from webui_stub.harness import gradient

from lib_depth2img import external_code as depth2img
from lib_depth2img.depthmaps.values import load_depth_map
from lib_depth2img.errors import SettingsError

webui, started = harness.webui, harness.started  # pytest fixtures


def test_find_script_and_its_args_slice(started):
    runner = scripts.scripts_img2img
    script = depth2img.find_script(runner)
    assert script is started.script() and script.title() == depth2img.SCRIPT_TITLE
    assert depth2img.args_slice(runner) == slice(script.args_from, script.args_to)
    assert script.args_to - script.args_from == len(depth2img.Depth2imgArgs().values())
    assert depth2img.find_script(scripts.ScriptRunner()) is None


def test_set_args_makes_a_job_run_depth2img_and_get_args_reads_them_back(started):
    p = started.img2img_p([gradient()], depth2img={"enabled": False})
    before = list(p.script_args)
    depth2img.set_args(p, {"enabled": True, "gamma": 0.8, "append_depth": True})
    where = depth2img.args_slice(p.scripts)
    assert list(p.script_args[: where.start]) == before[: where.start]  # other scripts' args untouched
    assert depth2img.get_args(p) == depth2img.Depth2imgArgs(enabled=True, gamma=0.8, append_depth=True)
    processed = processing.process_images(p)
    assert sd_models.loads[-1].startswith("512-depth-ema")
    assert "Depth2img gamma: 0.8" in processed.infotexts[0] and len(processed.images) == 2


def test_set_args_refuses_invalid_settings_with_the_message(started):
    p = started.img2img_p([gradient()])
    with pytest.raises(SettingsError, match=r"'gamma' \(Gamma\) must be a number between 0\.1 and 10, got 99"):
        depth2img.set_args(p, {"gamma": 99})


def test_depth_map_is_the_map_the_job_uses_for_that_geometry(started):
    image = gradient(96, 64)
    geometry = depth2img.GeometryRequest(width=64, height=48, resize_mode=1)
    depth = depth2img.depth_map(image, {"net_size": 64, "blur": 1.0}, geometry)
    assert depth.shape == (48, 64) and depth.dtype == np.float32 and 0 <= depth.min() < depth.max() <= 1
    p = started.img2img_p([image], depth2img={"enabled": True, "net_size": 64, "blur": 1.0, "append_depth": True},
                          width=64, height=48, resize_mode=1)
    appended = processing.process_images(p).images[-1]
    assert np.array_equal(np.asarray(appended), np.asarray(depth2img.depth_map_image(depth)))


def test_depth_map_of_your_own_map_and_as_16_bit(started):
    own = Image.fromarray((np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16), mode="I;16")
    depth = depth2img.depth_map(None, depth2img.Depth2imgArgs(depth_image=own))
    sixteen = depth2img.depth_map_image(depth, bits=16)
    assert sixteen.mode == "I;16" and np.array_equal(load_depth_map(sixteen), load_depth_map(own))
