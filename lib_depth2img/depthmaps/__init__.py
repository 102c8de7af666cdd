"""From raw depth to conditioning: the pixels the model sees, the one depth source, the cache,
normalisation and adjustments, preview images and the conditioning tensor.

`geometry` (the job's pixels) -> `source` (estimate, own map or cache hit) -> `values` (normalise,
adjust, preview, condition); `cache` keeps raw depths so Generate reuses what the preview computed.
"""
