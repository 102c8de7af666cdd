"""Stand-in for `modules.img2img.process_batch`: one job per input file, on the same `p`.

As in A1111, the loop variable `image` holds the input file's path while its job runs.
"""

import os

import modules.scripts
from modules import images, shared
from modules.processing import Processed, process_images


def process_batch(
    p,
    input,
    output_dir,
    inpaint_mask_dir,
    args,
    to_scale=False,
    scale_by=1.0,
    use_png_info=False,
    png_info_props=None,
    png_info_dir=None,
):
    batch_images = sorted(os.path.join(input, name) for name in os.listdir(input))
    batch_results = None
    for image in batch_images:
        if shared.state.interrupted or shared.state.stopping_generation:
            break
        img = images.read(image)
        p.init_images = [img] * p.batch_size
        if output_dir:
            p.outpath_samples = output_dir
        proc = modules.scripts.scripts_img2img.run(p, *args)
        if proc is None:
            proc = process_images(p)
        if batch_results:
            batch_results.images.extend(proc.images)
            batch_results.infotexts.extend(proc.infotexts)
        else:
            batch_results = proc
    return batch_results if batch_results is not None else Processed(p, [], p.seed, "")
