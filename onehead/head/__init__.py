"""Parametric head models in FLAME format: onehead's open model ("basic") and FLAME itself.

    from onehead.head import load_head_model, HEAD_PARAM_NAMES
    head = load_head_model("basic")            # or ("flame", flame_dir=DIR) with the licensed files
    out = head(shape=..., expression=..., jaw_pose=...)   # HeadOutput: vertices, landmarks68, ...
"""

from onehead.head.model import (
    HEAD_KINDS,
    HEAD_PARAM_NAMES,
    MOTION_PARAM_NAMES,
    HeadModel,
    HeadOutput,
    load_head_model,
)

__all__ = ["HEAD_KINDS", "HEAD_PARAM_NAMES", "MOTION_PARAM_NAMES", "HeadModel", "HeadOutput", "load_head_model"]
