"""Imports of third-party packages that need care.

timm and open_clip import torchvision for their image transforms only. When torchvision was
built for another torch variant (a CUDA torchvision next to a CPU torch, a common mismatch), its
C++ operators fail to load and `import torchvision` dies while registering fake kernels for
`torchvision::nms` / `torchvision::qnms`. Nothing here uses those operators, so when (and only
when) that exact failure happens we declare the two operator schemas and import again.
"""

import importlib
import sys
from types import ModuleType

import torch

_MISSING_OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_schema_library = None


def _import_torchvision() -> None:
    global _schema_library
    try:
        importlib.import_module("torchvision")
        return
    except RuntimeError as error:
        if "torchvision::" not in str(error) or _schema_library is not None:
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    _schema_library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _MISSING_OP_SCHEMAS:
        _schema_library.define(schema)
    importlib.import_module("torchvision")


def import_timm() -> ModuleType:
    """`import timm`, surviving a torchvision whose C++ operators do not load."""
    _import_torchvision()
    return importlib.import_module("timm")


def import_open_clip() -> ModuleType:
    """`import open_clip`, surviving a torchvision whose C++ operators do not load."""
    _import_torchvision()
    return importlib.import_module("open_clip")
