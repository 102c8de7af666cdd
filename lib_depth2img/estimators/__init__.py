"""Monocular depth estimation: MiDaS DPT models on timm backbones, their weights and preprocessing.

`DepthEstimator.from_file("512-depth-ema.safetensors").estimate(image)` gives a float32 HxW map,
larger = nearer, non-negative; standalone MiDaS files (`dpt_hybrid-midas-501f0c75.pt`) load too.
"""

from lib_depth2img.estimators.estimator import DepthEstimator
from lib_depth2img.estimators.preprocess import net_input_size
from lib_depth2img.estimators.registry import ESTIMATORS, EstimatorSpec, build_dpt
from lib_depth2img.estimators.weights import load_depth_state_dict, weights_id, write_tiny_depth_weights

__all__ = [
    "ESTIMATORS",
    "DepthEstimator",
    "EstimatorSpec",
    "build_dpt",
    "load_depth_state_dict",
    "net_input_size",
    "weights_id",
    "write_tiny_depth_weights",
]
