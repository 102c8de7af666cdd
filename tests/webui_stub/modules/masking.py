"""Stand-in for `modules.masking`: the crop region of "Inpaint area: Only masked" (own implementation)."""

import numpy as np


def get_crop_region_v2(mask, pad=0):
    """(x1, y1, x2, y2) around the non-zero pixels of an L mask, padded; None for a blank mask."""
    values = np.asarray(mask)
    ys, xs = np.nonzero(values)
    if len(xs) == 0:
        return None
    height, width = values.shape
    return (
        max(int(xs.min()) - pad, 0),
        max(int(ys.min()) - pad, 0),
        min(int(xs.max()) + 1 + pad, width),
        min(int(ys.max()) + 1 + pad, height),
    )


def expand_crop_region(crop_region, processing_width, processing_height, image_width, image_height):
    """Grow the region (inside the image) until its aspect ratio is the processing size's."""
    x1, y1, x2, y2 = crop_region
    ratio_processing = processing_width / processing_height
    if (x2 - x1) / (y2 - y1) > ratio_processing:
        desired = round((x2 - x1) / ratio_processing)
        grow = desired - (y2 - y1)
        y1, y2 = y1 - grow // 2, y2 + grow - grow // 2
        if y2 > image_height:
            y1, y2 = y1 - (y2 - image_height), image_height
        if y1 < 0:
            y2, y1 = min(y2 - y1, image_height), 0
    else:
        desired = round((y2 - y1) * ratio_processing)
        grow = desired - (x2 - x1)
        x1, x2 = x1 - grow // 2, x2 + grow - grow // 2
        if x2 > image_width:
            x1, x2 = x1 - (x2 - image_width), image_width
        if x1 < 0:
            x2, x1 = min(x2 - x1, image_width), 0
    return x1, y1, x2, y2
