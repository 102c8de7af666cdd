"""Show depth map in A1111 is the job's own depth computation: the tab's geometry, the job's cache
entry, the loaded model's MiDaS, A1111's queue, progress bar and Interrupt (through the stand-in)."""

from __future__ import annotations

import threading
import time

import gradio as gr
import numpy as np
import pytest
import webui_stub  # noqa: F401  (first: A1111's `modules` for the adapter)
from modules import call_queue, processing, progress, shared
from PIL import Image
from support.gradio_events import choice_labels, event_of
from webui_stub import harness
from webui_stub.harness import gradient

from lib_depth2img.depthmaps.geometry import GeometryRequest
from lib_depth2img.errors import Interrupted
from lib_depth2img.estimators import DepthEstimator
from lib_depth2img.settings import Depth2imgArgs
from lib_depth2img.webui import depth_service

webui, started = harness.webui, harness.started  # pytest fixtures
IMG2IMG, INPAINT, INPAINT_UPLOAD, BATCH = 0, 2, 4, 5


def photo(width: int = 200, height: int = 150) -> Image.Image:
    """A large, non-square photo stand-in with detail everywhere."""
    rng = np.random.default_rng(width + height)
    smooth = np.linspace(0, 200, width, dtype=np.float32)[None, :, None] + rng.normal(0, 25, (height, width, 3))
    return Image.fromarray(np.clip(smooth, 0, 255).astype(np.uint8))


def click_preview(webui: harness.WebUI, tab: int, sources: dict[int, object], task_id: str = "",
                  resize_tab: int = 0, **controls: object) -> tuple[Image.Image | None, str | None, str]:
    """Press Show depth map in img2img's sub-tab `tab`, the page's controls at A1111's defaults
    except `controls` (by elem_id), as the browser sends them."""
    wiring = webui.script(True).preview_wiring
    panel = wiring.panel
    event = event_of(webui.demo, panel.preview_button)
    values = [as_sent(component) for component in event.inputs]
    values[0], values[1], values[2] = task_id, tab, resize_tab
    for position, source in enumerate(harness.INIT_IMAGE_ELEM_IDS):
        values[3 + position] = sources.get(position)
    by_elem_id = {component.elem_id: position for position, component in enumerate(event.inputs)}
    for elem_id, value in controls.items():
        values[by_elem_id[elem_id]] = value
    return event.fn(*values)


def as_sent(block: object) -> object:
    """A control's default as the handler gets it: a radio of type "index" gives the choice's number."""
    if isinstance(block, gr.Radio) and block.type == "index":
        return choice_labels(block).index(block.value)
    return block.value


def appended_depth(processed: processing.Processed) -> np.ndarray:
    return np.asarray(processed.images[-1])


@pytest.mark.parametrize("resize_mode", [0, 1, 2, 3])
def test_preview_of_a_large_photo_is_the_map_the_job_uses_and_a_cache_hit(started, resize_mode):
    image = photo()
    shown, _, status = click_preview(started, IMG2IMG, {IMG2IMG: image}, img2img_width=64, img2img_height=48,
                                     resize_mode=resize_mode)
    assert shown is not None and shown.size == (64, 48), status
    misses = depth_service.cache_stats()["misses"]
    processed = started.img2img(image, depth2img={"enabled": True, "append_depth": True}, width=64, height=48,
                                resize_mode=resize_mode)
    assert np.array_equal(appended_depth(processed), np.asarray(shown))
    assert depth_service.cache_stats()["misses"] == misses  # Generate estimated nothing


def test_preview_of_only_masked_inpaint_is_the_crop_the_job_uses(started):
    image = photo()
    mask = Image.new("RGBA", image.size, (0, 0, 0, 0))
    mask.paste((255, 255, 255, 255), (120, 80, 160, 120))
    shown, _, status = click_preview(
        started, INPAINT, {INPAINT: {"image": image, "mask": mask}}, img2img_width=64, img2img_height=64,
        img2img_inpaint_full_res=1, img2img_inpaint_full_res_padding=8, img2img_mask_blur=4,
    )
    assert shown.size == (64, 64), status
    misses = depth_service.cache_stats()["misses"]
    p = started.img2img_p([image], mask=processing.create_binary_mask(mask), inpaint_full_res=True,
                          inpaint_full_res_padding=8, mask_blur=4, width=64, height=64,
                          depth2img={"enabled": True, "append_depth": True})
    processed = processing.process_images(p)
    assert p.paste_to is not None and p.paste_to[2] < image.width  # really cropped
    assert np.array_equal(appended_depth(processed), np.asarray(shown))
    assert depth_service.cache_stats()["misses"] == misses


def test_preview_of_inpaint_upload_with_an_inverted_mask(started):
    image = photo()
    mask = Image.new("L", image.size, 255)
    mask.paste(0, (20, 20, 60, 50))  # "inpaint not masked": the black rectangle is repainted
    shown, _, _ = click_preview(
        started, INPAINT_UPLOAD, {INPAINT_UPLOAD: image}, img_inpaint_mask=mask, img2img_width=64,
        img2img_height=64, img2img_inpaint_full_res=1, img2img_mask_mode=1, img2img_mask_blur=0,
    )
    p = started.img2img_p([image], mask=mask, inpainting_mask_invert=1, inpaint_full_res=True, mask_blur=0,
                          inpaint_full_res_padding=32, width=64, height=64,  # the tab's padding default
                          depth2img={"enabled": True, "append_depth": True})
    assert np.array_equal(appended_depth(processing.process_images(p)), np.asarray(shown))
    x, y, w, _ = p.paste_to
    assert x <= 20 and y <= 20 and x + w >= 60 and w < image.width  # around the repainted rectangle


def test_preview_with_resize_by_takes_the_size_from_the_image(started):
    shown, _, _ = click_preview(started, IMG2IMG, {IMG2IMG: photo()}, resize_tab=1, img2img_scale=0.4)
    assert shown.size == (80, 60)


def test_preview_in_the_batch_tab_shows_your_own_depth_map_at_the_tab_size(started):
    own = Image.fromarray(np.tile(np.arange(50, dtype=np.uint8) * 5, (40, 1)))
    settings = {"depth2img_img2img_depth_image": own}
    shown, _, status = click_preview(started, BATCH, {}, img2img_width=64, img2img_height=32, **settings)
    assert shown.size == (64, 32) and "your depth map" in status


# -- one MiDaS in memory ------------------------------------------------------------------------------


def test_the_loaded_depth_model_lends_its_midas_and_a_preview_copy_is_released(started):
    image = photo()
    click_preview(started, IMG2IMG, {IMG2IMG: image}, img2img_width=64, img2img_height=64)
    assert depth_service._estimator is not None  # SD2 base is loaded: a copy from the depth file
    started.img2img(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), depth2img={"enabled": True},
                    width=64, height=64)
    assert started.model.depth_model_calls == 1  # the job ran the model's own MiDaS
    assert depth_service._estimator is None  # and the preview's copy is gone


def test_the_borrowed_midas_gives_the_same_map_and_shares_the_cache(started):
    image = photo()
    args = Depth2imgArgs(enabled=True)
    geometry = GeometryRequest(64, 64)
    from_file = depth_service.estimate_depth(image, args, geometry)  # SD2 base loaded: the file's MiDaS
    depth_service._cache.clear()
    started.img2img(photo(10, 10), depth2img={"enabled": True}, width=64, height=64)  # loads the depth model
    borrowed = depth_service.estimate_depth(image, args, geometry)
    assert borrowed.origin.value == "estimator" and started.model.depth_model_calls == 2
    np.testing.assert_allclose(borrowed.depth, from_file.depth, atol=1e-5)
    assert depth_service.estimate_depth(image, args, geometry).origin.value == "cache"


def test_with_medvram_a_separately_loaded_estimator_leaves_the_gpu_after_use(started, monkeypatch):
    moves = []
    original = DepthEstimator.to
    monkeypatch.setattr(DepthEstimator, "to", lambda self, device: moves.append(str(device)) or original(self, device))
    shared.cmd_opts.medvram = True
    depth_service.estimate_depth(photo(), Depth2imgArgs(enabled=True), GeometryRequest(64, 64))
    assert moves[-1] == "cpu"


# -- A1111's queue, progress and Interrupt ---------------------------------------------------------


def test_preview_waits_for_the_running_job_and_reports_progress_under_its_task(started):
    done = threading.Event()
    answers = []

    def press() -> None:
        answers.append(click_preview(started, IMG2IMG, {IMG2IMG: photo()}, task_id="task(preview1)",
                                     img2img_width=64, img2img_height=64))
        done.set()

    with call_queue.queue_lock:  # a generation is running
        thread = threading.Thread(target=press)
        thread.start()
        time.sleep(0.3)
        assert not done.is_set() and "task(preview1)" in progress.pending_tasks
    thread.join(60)
    shown, _, status = answers[0]
    assert shown is not None, status
    assert "task(preview1)" in progress.finished_tasks and progress.current_task is None
    blocks = len(depth_service._estimator[1].model.pretrained.model.blocks)
    assert (shared.state.sampling_step, shared.state.sampling_steps) == (blocks, blocks)
    assert shared.state.job == "" and not shared.state.interrupted


def test_interrupt_stops_the_preview_with_a_message_and_the_next_one_works(started, monkeypatch):
    image = photo()
    estimator = depth_service.get_estimator(Depth2imgArgs(enabled=True))
    handle = estimator.model.pretrained.model.blocks[0].register_forward_hook(
        lambda *_: setattr(shared.state, "interrupted", True)  # the user presses Interrupt meanwhile
    )
    shown, _, status = click_preview(started, IMG2IMG, {IMG2IMG: image}, img2img_width=64, img2img_height=64)
    assert shown is None and "interrupted" in status
    with pytest.raises(Interrupted):
        depth_service.estimate_depth(image, Depth2imgArgs(enabled=True), GeometryRequest(64, 64))
    handle.remove()
    assert depth_service.cache_stats()["entries"] == 0  # nothing half-done was kept
    shown, _, status = click_preview(started, IMG2IMG, {IMG2IMG: image}, img2img_width=64, img2img_height=64)
    assert shown is not None and not shared.state.interrupted


# -- results ----------------------------------------------------------------------------------------


def test_txt2img_with_batch_count_and_hires_appends_each_distinct_map_once(started):
    own = gradient(64, 64).convert("L")
    processed = started.txt2img(depth2img={"enabled": True, "depth_image": own, "append_depth": True}, n_iter=3)
    depth_maps = [image for image in processed.images if image.mode == "L"]
    assert len(depth_maps) == 1
    processed = started.txt2img(depth2img={"enabled": True, "depth_image": own, "append_depth": True},
                                enable_hr=True, hr_scale=2, hr_upscaler="Latent")
    assert sorted(image.size for image in processed.images if image.mode == "L") == [(64, 64), (128, 128)]
