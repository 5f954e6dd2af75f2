"""The tracking file: one npz per sequence (or per view), shared by every model family.

Keys (T frames, S shape and E expression coefficients):
  shape (S,)  expression (T, E)  global_pose (T, 3)  neck_pose (T, 3)  jaw_pose (T, 3)
  eye_pose (T, 6)  translation (T, 3)            head-model parameters (axis-angle poses)
  K (T, 3, 3)  world_to_cam (T, 4, 4)            OpenCV camera (see onehead.camera)
  landmarks68 (T, 68, 2)                         iBUG-68 points, pixels: the fitted model's, moved
                                                 part way to mediapipe's (tracker.fuse_landmarks)
  landmarks_mp (T, 478, 2)                       mediapipe's detections, pixels (NaN when lost)
  valid (T,) bool  fit_error (T,)                face found; mean 68-point distance between the
                                                 fitted model and mediapipe, over the eye distance
  image_size (2,)                                (height, width) of the input frames
  fps ()  head_model ()                          frames per second; which head model was fitted
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from onehead.errors import MediaReadError
from onehead.files import atomic_path
from onehead.head import MOTION_PARAM_NAMES


@dataclass
class Tracking:
    shape: np.ndarray
    expression: np.ndarray
    global_pose: np.ndarray
    neck_pose: np.ndarray
    jaw_pose: np.ndarray
    eye_pose: np.ndarray
    translation: np.ndarray
    K: np.ndarray
    world_to_cam: np.ndarray
    landmarks68: np.ndarray
    landmarks_mp: np.ndarray
    valid: np.ndarray
    fit_error: np.ndarray
    image_size: np.ndarray
    fps: float = 25.0
    head_model: str = "basic"

    @property
    def num_frames(self) -> int:
        return int(self.expression.shape[0])

    def head_params(self, frames=slice(None)) -> dict:
        """Head-model inputs for the given frames, as float32 numpy arrays."""
        count = len(range(self.num_frames)[frames]) if isinstance(frames, slice) else len(frames)
        params = {"shape": np.broadcast_to(self.shape, (count, self.shape.shape[-1])).astype(np.float32)}
        params.update({name: getattr(self, name)[frames].astype(np.float32) for name in MOTION_PARAM_NAMES})
        return params

    def select(self, frames) -> "Tracking":
        """The same tracking restricted to some frames (a slice, a range or a list of indices)."""
        index = np.arange(self.num_frames)[frames]
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in _PER_FRAME:
            values[key] = np.asarray(values[key])[index]
        return Tracking(**values)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:  # a file object: numpy adds no ".npz" to the name
                np.savez_compressed(handle, **arrays)
        return path


_PER_FRAME = {**{name: 2 for name in MOTION_PARAM_NAMES},
              "K": 3, "world_to_cam": 3, "landmarks68": 3, "landmarks_mp": 3, "valid": 1, "fit_error": 1}


def load_tracking(path: str | os.PathLike) -> Tracking:
    """Read and check a tracking npz (never unpickles: allow_pickle=False)."""
    path = Path(path)
    if not path.is_file():
        raise MediaReadError(f"{path}: tracking file does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception:  # zip or format errors from numpy, e.g. a video given as tracking
        raise MediaReadError(f"{path}: not a tracking file (an .npz written by `onehead track`)") from None
    required = [f.name for f in fields(Tracking) if f.name not in ("fps", "head_model")]
    missing = [k for k in required if k not in arrays]
    if missing:
        raise MediaReadError(f"{path}: tracking file lacks {', '.join(missing)}; "
                             "make it with `onehead track`")
    frames = arrays["expression"].shape[0]
    for key, ndim in _PER_FRAME.items():
        if arrays[key].ndim != ndim or arrays[key].shape[0] != frames:
            raise MediaReadError(f"{path}: '{key}' has shape {arrays[key].shape}, expected {frames} frames")
    values = {k: arrays[k] for k in required}
    values["fps"] = float(arrays["fps"]) if "fps" in arrays else 25.0
    values["head_model"] = str(arrays["head_model"]) if "head_model" in arrays else "basic"
    values["valid"] = values["valid"].astype(bool)
    return Tracking(**values)
