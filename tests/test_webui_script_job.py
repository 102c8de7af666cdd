"""The Depth2img script in a job: off is A1111's own job, on swaps the depth model in and back,
user errors stop the job with their message, and the depth step replaces A1111's native one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import webui_stub  # noqa: F401  (first: A1111's `modules` for the adapter)
from modules import errors, processing, sd_models, shared
from webui_stub import harness
from webui_stub.harness import gradient

from lib_depth2img.depthmaps.geometry import GeometryRequest
from lib_depth2img.errors import SettingsError, WeightsError
from lib_depth2img.estimators import DepthEstimator
from lib_depth2img.settings import Depth2imgArgs
from lib_depth2img.webui import depth_service

webui, started = harness.webui, harness.started  # pytest fixtures

DEPTH_TITLE_PREFIX = "512-depth-ema.safetensors"


def selected_title() -> str:
    return shared.opts.data["sd_model_checkpoint"]


def image_bytes(processed: processing.Processed) -> list[bytes]:
    return [image.tobytes() for image in processed.images]


@pytest.fixture
def midas_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the images the real (tiny) estimator runs on."""
    calls: list[int] = []
    original = DepthEstimator.estimate

    def counting(self, image, net_size=None, progress=None):
        calls.append(1)
        return original(self, image, net_size, progress)

    monkeypatch.setattr(DepthEstimator, "estimate", counting)
    return calls


# -- off ------------------------------------------------------------------------------------------


def test_enable_off_is_the_job_a1111_runs_without_the_extension(started):
    image = gradient()
    without = started.img2img_p([image])
    without.scripts = None  # the extension absent
    reference = processing.process_images(without)
    base_model = started.model

    off = started.img2img_p([image], depth2img={"enabled": False, "gamma": 2.0})
    processed = processing.process_images(off)

    assert started.model is base_model and sd_models.loads == [selected_title()]  # no swap
    assert image_bytes(processed) == image_bytes(reference)
    assert processed.infotexts == reference.infotexts
    assert set(vars(off)) == set(vars(without))  # no attribute added to p
    assert off.override_settings == {} and not errors.reported


def test_enable_off_on_the_depth_model_keeps_a1111s_native_depth_step(webui):
    webui.start(selected="512-depth-ema.safetensors")
    webui.img2img(gradient(), depth2img={"enabled": False}, batch_size=2)
    assert webui.model.depth_model_calls == 2  # A1111's MiDaS, once per batch item


# -- the checkpoint swap ----------------------------------------------------------------------------


def test_job_runs_on_the_depth_model_and_the_selection_is_restored(started):
    base = selected_title()
    processed = started.img2img(gradient(), depth2img={"enabled": True})

    assert sd_models.loads[-1].startswith(DEPTH_TITLE_PREFIX)
    assert "Model: 512-depth-ema" in processed.infotexts[0]
    assert selected_title() == base
    assert (started.models / "Stable-diffusion" / "512-depth-ema.yaml").is_file()  # renamed config written


def test_the_next_job_without_depth2img_runs_on_the_users_model_again(started):
    started.img2img(gradient(), depth2img={"enabled": True})
    started.img2img(gradient(), depth2img={"enabled": False})
    assert sd_models.loads[-1] == selected_title() and not sd_models.loads[-1].startswith(DEPTH_TITLE_PREFIX)


@pytest.mark.parametrize("restore_afterwards", [True, False])
def test_only_the_checkpoint_is_restored_the_callers_overrides_are_treated_as_they_asked(started, restore_afterwards):
    """An API caller's `override_settings_restore_afterwards: false` keeps their overrides after the
    job; the checkpoint depth2img swapped in goes back either way."""
    base = selected_title()
    p = started.img2img_p([gradient()], depth2img={"enabled": True}, override_settings={"samples_format": "jpg"},
                          override_settings_restore_afterwards=restore_afterwards)
    processing.process_images(p)
    assert sd_models.loads[-1].startswith(DEPTH_TITLE_PREFIX)
    assert selected_title() == base
    assert shared.opts.samples_format == ("png" if restore_afterwards else "jpg")
    assert p.override_settings == {"samples_format": "jpg"}


def test_a_callers_own_checkpoint_override_kept_afterwards_stays_chosen(started):
    p = started.img2img_p([gradient()], depth2img={"enabled": True},
                          override_settings={"sd_model_checkpoint": "sd2-base.safetensors"},
                          override_settings_restore_afterwards=False)
    processing.process_images(p)
    assert sd_models.loads[-1].startswith(DEPTH_TITLE_PREFIX)
    assert selected_title() == "sd2-base.safetensors"


def test_selection_is_restored_when_sampling_fails(started, monkeypatch):
    base = selected_title()
    monkeypatch.setattr(
        processing.FakeSampler, "_unet", lambda self, x, ic: (_ for _ in ()).throw(MemoryError("OOM"))
    )
    p = started.img2img_p([gradient()], depth2img={"enabled": True})
    with pytest.raises(MemoryError):
        processing.process_images(p)
    assert selected_title() == base and sd_models.loads[-1].startswith(DEPTH_TITLE_PREFIX)


def test_selection_is_restored_when_the_job_is_interrupted(started, monkeypatch):
    base = selected_title()
    original = processing.FakeSampler._unet

    def interrupt_then_sample(self, x, ic):
        shared.state.interrupt()
        return original(self, x, ic)

    monkeypatch.setattr(processing.FakeSampler, "_unet", interrupt_then_sample)
    p = started.img2img_p([gradient()], depth2img={"enabled": True}, n_iter=3)
    processing.process_images(p)
    assert len(started.model.unet_calls) == 1  # the loop stopped after the first batch
    assert selected_title() == base
    assert "depth2img_job" not in vars(p) and "img2img_image_conditioning" not in vars(p)


def test_a_selected_depth_model_is_used_without_a_swap(webui):
    webui.start(selected="512-depth-ema.safetensors")
    webui.img2img(gradient(), depth2img={"enabled": True})
    assert len(sd_models.loads) == 1


def test_a_named_depth_checkpoint_that_is_not_a_depth_model_is_refused(started):
    p = started.img2img_p([gradient()], depth2img={"enabled": True, "checkpoint": "sd2-base.safetensors"})
    with pytest.raises(WeightsError, match="not a Stable Diffusion 2 depth model"):
        processing.process_images(p)


def test_without_a_depth_checkpoint_nothing_is_generated_and_the_message_says_what_to_do(webui):
    webui.start(checkpoints=("sd2-base.safetensors",))
    p = webui.img2img_p([gradient()], depth2img={"enabled": True})
    with pytest.raises(WeightsError) as raised:
        processing.process_images(p)
    message = str(raised.value)
    assert message.startswith("Depth2img: no depth checkpoint found")
    assert str(webui.models / "Stable-diffusion") in message and "Install depth model" in message
    assert (raised.value.status_code, raised.value.detail) == (409, message)  # what A1111's API answers
    assert webui.model.unet_calls == [] and webui.model.vae_encodes == 0


# -- the depth step ---------------------------------------------------------------------------------


def test_batch_of_two_for_two_iterations_estimates_once_and_skips_a1111s_depth_step(started, midas_calls):
    started.img2img(gradient(), depth2img={"enabled": True}, batch_size=2, n_iter=2)

    model = started.model
    assert midas_calls == [1]  # one image, one MiDaS run for 4 outputs
    assert model.depth_model_calls == 1  # the loaded model's own MiDaS, once: no second copy, no run per item
    assert model.vae_encodes == 1  # only the init image's own encode
    assert len(model.unet_calls) == 2
    for conditioning in model.unet_calls:
        assert conditioning.shape == (2, 1, 8, 8) and torch.isfinite(conditioning).all()
        assert torch.equal(conditioning[0], conditioning[1])
        assert conditioning.min() == -1.0 and 0.99 < conditioning.max() <= 1.0  # per-sample [-1, 1]


def test_second_job_and_a_preview_reuse_the_estimate(started, midas_calls):
    image = gradient()
    args = Depth2imgArgs(enabled=True)
    depth_service.estimate_depth(image, args, GeometryRequest(64, 64))  # the preview, with the tab's size
    started.img2img(image, depth2img={"enabled": True})
    started.img2img(image.copy(), depth2img={"enabled": True, "gamma": 2.0})
    assert midas_calls == [1]
    assert depth_service.cache_stats()["hits"] == 2


def test_conditioning_is_the_depth_of_the_image_nearer_where_brighter(
    started, counting_estimator, monkeypatch
):
    monkeypatch.setattr(depth_service, "get_estimator", lambda args: counting_estimator)
    started.img2img(gradient(), depth2img={"enabled": True}, width=64, height=48)
    conditioning = started.model.unet_calls[0][0, 0].numpy()
    assert conditioning.shape == (6, 8)
    assert np.all(np.diff(conditioning.mean(axis=0)) > 0)  # dark left = far, bright right = near
    assert counting_estimator.calls == 1


def test_several_init_images_get_one_depth_each(started, counting_estimator, monkeypatch):
    monkeypatch.setattr(depth_service, "get_estimator", lambda args: counting_estimator)
    started.img2img(gradient(), gradient(vertical=True), depth2img={"enabled": True}, batch_size=2)
    conditioning = started.model.unet_calls[0]
    assert conditioning.shape[0] == 2 and not torch.equal(conditioning[0], conditioning[1])
    assert counting_estimator.calls == 2


def test_invalid_args_stop_the_job_with_their_message(started):
    p = started.img2img_p([gradient()], depth2img={"enabled": True, "far_clip": 0.8, "near_clip": 0.2})
    with pytest.raises(SettingsError) as raised:
        processing.process_images(p)
    assert str(raised.value).startswith("Depth2img: far clip (0.8) must be below near clip (0.2)")
    assert raised.value.status_code == 422
    assert sd_models.loads == [selected_title()] and started.model.unet_calls == []


def test_invalid_args_with_enable_off_are_ignored(started):
    processed = started.img2img(gradient(), depth2img={"enabled": False, "far_clip": 0.8, "near_clip": 0.2})
    assert len(processed.images) == 1 and not errors.reported


def test_a_job_leaves_nothing_on_p(started):
    p = started.img2img_p([gradient()], depth2img={"enabled": True})
    processing.process_images(p)
    assert not set(vars(p)) & {
        "depth2img_job",
        "img2img_image_conditioning",
        "txt2img_image_conditioning",
        "init",
    }
    assert p.override_settings == {}


def test_a_bug_while_preparing_stops_the_job_instead_of_generating_without_depth(started, monkeypatch):
    from lib_depth2img.webui import checkpoint_swap

    monkeypatch.setattr(checkpoint_swap, "choose_depth_checkpoint", lambda *args: 1 / 0)
    p = started.img2img_p([gradient()], depth2img={"enabled": True})
    with pytest.raises(ZeroDivisionError):
        processing.process_images(p)
    assert started.model.unet_calls == []
