"""Reading and writing single images.

These I/O functions work on uint8 numpy arrays of shape (H, W, 3), RGB.
Elsewhere in onehead, images at API boundaries are float32 torch tensors
(B, 3, H, W) in [0, 1]; `load_image` also accepts those and converts them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from onehead.errors import MediaReadError
from onehead.files import atomic_path

PathLike = Union[str, Path]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def is_image_path(path: PathLike) -> bool:
    """True when `path` has an image file extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_path(path: PathLike) -> bool:
    """True when `path` has a video file extension (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def load_image(source: Any) -> np.ndarray:
    """Load an image as uint8 (H, W, 3) RGB.

    `source` may be a path, a PIL image, a numpy array (HW, HW1, HW3, HW4;
    uint8, uint16 or float in [0, 1]) or a torch tensor ((3, H, W) or
    (1, 3, H, W) float in [0, 1]; a 3-D tensor whose first dim is not 1, 3
    or 4 is read as HWC).
    Grayscale becomes RGB, alpha is dropped, 16-bit is scaled by 1/257.
    """
    if isinstance(source, (str, Path)):
        return _read_image_file(Path(source))
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source)
    if _is_torch_tensor(source):
        return _tensor_to_rgb(source)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    raise TypeError(f"load_image: unsupported source type {type(source).__name__}")


def save_image(path: PathLike, image: np.ndarray) -> None:
    """Save a uint8 (H, W, 3) image; the format follows the extension. Creates parent dirs.

    Atomic: the image is written beside `path` (same suffix, so the same format) and moved
    onto it when complete; a failed write leaves an existing `path` untouched.
    """
    picture = Image.fromarray(load_image(image))
    with atomic_path(path) as tmp:
        picture.save(tmp, quality=95)  # quality: JPEG/WebP only


def _read_image_file(path: Path) -> np.ndarray:
    if not path.exists():
        raise MediaReadError(f"image not found: {path} (check the path)")
    if path.is_dir():
        raise MediaReadError(f"expected an image file but {path} is a directory")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _pil_to_rgb(img)
    except Image.DecompressionBombError as exc:
        raise MediaReadError(_bomb_message(path, exc)) from None
    except MemoryError:
        raise MediaReadError(f"cannot read image {path}: not enough memory to decode it; downscale it") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise MediaReadError(
            f"cannot read image {path}: not a valid or supported image file "
            f"({exc.__class__.__name__}); re-export it as PNG or JPEG"
        ) from None


def _bomb_message(path: Path, exc: Exception) -> str:
    numbers = [int(n) for n in re.findall(r"\d+", str(exc))]  # "Image size (N pixels) exceeds limit of M pixels"
    size = f"{numbers[0]:,} pixels, " if numbers else ""
    limit = numbers[1] if len(numbers) > 1 else 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return (f"cannot read image {path}: {size}over PIL's limit of {limit:,} pixels (a guard against "
            f"decompression bombs); downscale it, e.g. to 2048 pixels on the long side")


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode.startswith("I"):  # 16-bit ("I;16*") or 32-bit int ("I", used for 16-bit PNGs)
        return _array_to_rgb(_sixteen_to_eight(np.asarray(img)))
    if img.mode == "F":
        return _array_to_rgb(np.asarray(img))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _is_torch_tensor(obj: Any) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(obj, torch.Tensor)


def _tensor_to_rgb(tensor: Any) -> np.ndarray:
    arr = tensor.detach().cpu()
    if arr.is_floating_point():
        arr = arr.float()
    arr = arr.numpy()
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"load_image: expected a batch of one image, got shape {tuple(arr.shape)}")
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4):
        arr = np.transpose(arr, (1, 2, 0))  # tensors are CHW (onehead's convention)
    return _array_to_rgb(arr)


def letterbox(frames: np.ndarray, size: int) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 -> (T, size, size, 3): scaled to fit (cubic), centred on black bars."""
    import cv2

    h, w = frames.shape[1:3]
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    out = np.zeros((len(frames), size, size, 3), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    for t, frame in enumerate(frames):
        out[t, top:top + nh, left:left + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_CUBIC)
    return out


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """uint8 as is; uint16 (and wider ints above 255) / 257; floats in [0, 1] * 255."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        return (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.dtype == np.uint16 or arr.max(initial=0) > 255:
        return _sixteen_to_eight(arr)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _sixteen_to_eight(arr: np.ndarray) -> np.ndarray:
    wide = np.clip(arr, 0, 65535).astype(np.uint32)
    return ((wide + 128) // 257).astype(np.uint8)


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"load_image: expected an (H, W), (H, W, 1|3|4) image, got shape {arr.shape}")
    arr = arr[..., :3]
    return np.ascontiguousarray(_to_uint8(arr).astype(np.uint8, copy=False))
