"""The script's UI side in A1111: its args, PNG-info paste and "Send to", X/Y/Z axes, the
Settings section, the HTTP routes, and the depth maps added to or saved beside the results."""

from __future__ import annotations

from copy import copy

import numpy as np
import pytest
import webui_stub  # noqa: F401  (first: A1111's `modules` for the adapter)
from modules import images, infotext_utils, processing, script_callbacks, shared
from PIL import Image
from support.gradio_events import event_of
from webui_stub import harness
from webui_stub.harness import FIELDS, gradient

from lib_depth2img.errors import SettingsError
from lib_depth2img.settings import Depth2imgArgs
from lib_depth2img.webui import depth_service, infotext_xyz, settings

webui, started = harness.webui, harness.started  # pytest fixtures


def test_ui_returns_the_settings_controls_in_args_order(started):
    for is_img2img in (True, False):
        script = started.script(is_img2img)
        assert script.args_to - script.args_from == len(FIELDS)
        assert [c.value for c in script.controls] == [Depth2imgArgs.defaults()[name] for name in FIELDS]


def test_the_settings_hints_are_a1111_tooltips(started):
    """A1111 pops `tooltip=` into the component's config; its hints.js makes it the title."""
    for is_img2img in (True, False):
        script = started.script(is_img2img)
        for name, control in zip(FIELDS, script.controls):
            assert getattr(control, "webui_tooltip", None) == (Depth2imgArgs.spec(name).hint or None), name
        preview_button = script.preview_wiring.panel.preview_button
        assert "Estimate the depth map" in preview_button.webui_tooltip


@pytest.mark.parametrize("controls_first", [True, False])
def test_preview_reads_every_control_of_the_tab_in_either_page_order(webui, controls_first):
    """A1111's default page creates the size and inpaint controls before the scripts; a reordered
    page after them: the preview is wired once both the panel and the controls exist."""
    webui.controls_before_scripts = controls_first
    webui.start()
    for is_img2img, tab in ((True, "img2img"), (False, "txt2img")):
        wiring = webui.script(is_img2img).preview_wiring
        assert wiring.wired
        wired = {component.elem_id for component in event_of(webui.demo, wiring.panel.preview_button).inputs}
        assert set(harness.A1111_CONTROLS[tab]) <= wired


def test_ui_takes_its_defaults_from_the_settings(webui):
    shared.opts.data[settings.SAVE_DEPTH.key] = True
    webui.start()
    controls = dict(zip(FIELDS, webui.script(True).controls))
    assert controls["save_depth"].value is True


# -- PNG info ---------------------------------------------------------------------------------------


def test_infotext_round_trip_through_paste(started):
    chosen = {
        "enabled": True,
        "estimator": "embedded",
        "net_size": 512,
        "invert": True,
        "far_clip": 0.1,
        "near_clip": 0.9,
        "gamma": 1.5,
        "blur": 2.0,
        "checkpoint": "512-depth-ema.safetensors",
    }
    processed = started.img2img(gradient(), depth2img=chosen)
    info = processed.infotexts[0]
    assert "Depth2img: True" in info and "Depth2img gamma: 1.5" in info

    script = started.script(True)
    pasted = infotext_utils.paste_values(script.infotext_fields, info)
    by_name = {
        name: value
        for (component, _), value in zip(script.infotext_fields, pasted)
        for name, control in zip(FIELDS, script.controls)
        if control is component
    }
    assert Depth2imgArgs.from_values(by_name) == Depth2imgArgs.from_values(chosen)


def test_pasting_the_info_of_an_image_made_without_depth2img_unticks_enable(started):
    info = started.img2img(gradient(), depth2img={"enabled": False}).infotexts[0]
    script = started.script(True)
    pasted = dict(
        zip(
            (key for _, key in script.infotext_fields),
            infotext_utils.paste_values(script.infotext_fields, info),
        )
    )
    assert pasted["Depth2img"] is False and pasted["Depth2img gamma"] is None  # others stay as they are


def test_send_to_carries_every_infotext_key(started):
    script = started.script(True)
    assert script.paste_field_names == [key for _, key in script.infotext_fields]
    assert "Depth2img" in script.paste_field_names


# -- X/Y/Z plot -------------------------------------------------------------------------------------


def xyz_axis(label_end: str):
    xyz = infotext_xyz.find_xyz_module()
    return next(option for option in xyz.axis_options if option.label.endswith(label_end))


def test_xyz_axes_are_added_once(started):
    script_callbacks.before_ui_callback()  # the UI rebuilt
    labels = [option.label for option in infotext_xyz.find_xyz_module().axis_options]
    expected = {f"Depth2img: {Depth2imgArgs.spec(name).label}" for name in infotext_xyz.XYZ_FIELDS}
    assert expected <= set(labels) and len(labels) == len(set(labels))


def test_xyz_axis_changes_the_cell_only(started):
    p = started.img2img_p([gradient()], depth2img={"enabled": True})
    axis = xyz_axis("Gamma")
    axis.confirm(p, [0.5, 2.0])
    cell = copy(p)  # XYZ runs each cell on a shallow copy
    axis.apply(cell, 2.0, [0.5, 2.0])
    processed = processing.process_images(cell)
    assert "Depth2img gamma: 2" in processed.infotexts[0]
    assert infotext_xyz.script_values(p)["gamma"] == 1.0 and p.override_settings == {}


def test_xyz_values_are_checked_against_the_bounds(started):
    p = started.img2img_p([gradient()], depth2img={"enabled": True, "near_clip": 0.5})
    with pytest.raises(SettingsError, match="gamma"):
        xyz_axis("Gamma").confirm(p, [1.0, 50.0])
    with pytest.raises(SettingsError, match="far clip"):
        xyz_axis("Far clip").confirm(p, [0.1, 0.6])  # above this job's near clip
    assert xyz_axis("Invert").choices() == ["False", "True"]
    assert xyz_axis("Depth checkpoint").choices() == depth_service.depth_checkpoint_titles()


def test_xyz_axis_on_api_style_dict_args(started):
    p = started.img2img_p([gradient()], values=[{"enabled": True}])
    xyz_axis("Blur radius").apply(p, 3.0, [3.0])
    assert infotext_xyz.script_values(p) == {"enabled": True, "blur": 3.0}


# -- API args ---------------------------------------------------------------------------------------


def test_api_args_as_a_positional_list(started):
    processed = started.img2img(gradient(), values=[True, "", "embedded", 0, None, "", True])
    assert "Depth2img invert: True" in processed.infotexts[0]


def test_api_args_as_one_dict_followed_by_the_ui_defaults(started):
    defaults = [Depth2imgArgs.defaults()[name] for name in FIELDS]
    processed = started.img2img(gradient(), values=[{"enabled": True, "gamma": 2}, *defaults[1:]])
    assert "Depth2img gamma: 2" in processed.infotexts[0]


def test_api_unknown_setting_is_a_422_with_the_message_first(started):
    p = started.img2img_p([gradient()], values=[{"enabled": True, "gama": 2}])
    with pytest.raises(SettingsError) as raised:
        processing.process_images(p)
    assert str(raised.value).startswith("Depth2img: unknown setting(s) gama")
    assert vars(raised.value)["status_code"] == 422 and vars(raised.value)["detail"] == str(raised.value)


# -- results ----------------------------------------------------------------------------------------


def test_depth_map_is_appended_to_the_results_with_an_infotext(started):
    processed = started.img2img(gradient(), depth2img={"enabled": True, "append_depth": True}, batch_size=2)
    assert len(processed.images) == 4 and len(processed.infotexts) == 4  # grid, 2 images, the depth map
    assert processed.images[-1].mode == "L" and processed.images[-1].size == (64, 64)
    assert processed.infotexts[-1] == processed.infotexts[processed.index_of_first_image]


def test_depth_map_is_saved_beside_the_results_as_16_bit_png(started):
    started.img2img(gradient(), depth2img={"enabled": True, "save_depth": True})
    depth_files = [path for path in images.saved if path.endswith("-depth.png")]
    assert len(depth_files) == 1 and len(images.saved) == 2
    with Image.open(depth_files[0]) as saved:
        assert saved.mode.startswith("I") and "Depth2img: True" in saved.info["parameters"]
        assert np.asarray(saved).max() > 255


def test_nothing_is_saved_when_the_job_does_not_save_samples(started):
    started.img2img(gradient(), depth2img={"enabled": True, "save_depth": True}, do_not_save_samples=True)
    assert images.saved == []


# -- settings and routes ----------------------------------------------------------------------------


def test_settings_section_is_declared(started):
    script_callbacks.ui_settings_callback()
    for setting in (
        settings.ESTIMATOR,
        settings.KEEP_ESTIMATOR_ON_GPU,
        settings.CACHE_MB,
        settings.SAVE_DEPTH,
    ):
        option = shared.opts.data_labels[setting.key]
        assert option.section == settings.SECTION and option.default == setting.default
    assert shared.opts.data_labels[settings.ESTIMATOR.key].component_args()["choices"][0] == "embedded"
