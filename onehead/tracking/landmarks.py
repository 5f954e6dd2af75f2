"""Face landmarks from MediaPipe Face Mesh, and their iBUG-68 subset.

This is the only module of onehead that imports mediapipe. It gives

* `LandmarkDetector`: 478 face-mesh points (468 + 10 iris) in the pixels of
  the input image, for single images (robust to small faces in large images)
  or for video frames (MediaPipe's own tracking between frames);
* `MEDIAPIPE_TO_IBUG68`: the 68 mesh vertices that play the iBUG-68 (300-W)
  landmarks, with `IBUG68_FLIP` and `interocular_distance` for metrics.

mediapipe is imported lazily, when the first detector is made.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from onehead.quiet import quiet_stderr
from onehead.errors import NoFaceError

# Quiet MediaPipe's C++ logging; must be set before mediapipe loads its library.
os.environ.setdefault("GLOG_minloglevel", "2")
# protobuf 4 warns on every mediapipe call made through the solutions API.
warnings.filterwarnings(
    "ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated", category=UserWarning
)

__all__ = [
    "MEDIAPIPE_TO_IBUG68",
    "IBUG68_FLIP",
    "IBUG_RIGHT_EYE",
    "IBUG_LEFT_EYE",
    "interocular_distance",
    "FaceLandmarks",
    "LandmarkDetector",
]

# fmt: off
#: Face-mesh vertex for each iBUG-68 landmark, in iBUG order. "Right" is the
#: subject's right (image left in a frontal photo). The jaw follows the lower
#: face oval (127 ... 152 ... 356) at about even spacing from ear level to the
#: chin; brows follow the upper brow edge; 30 is the nose tip (vertex 4, the
#: most protruding one).
MEDIAPIPE_TO_IBUG68: tuple[int, ...] = (
    # 0-16 jaw: subject's right ear -> chin (8) -> left ear
    127, 234, 132, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 361, 454, 356,
    # 17-21 right brow (outer -> inner), 22-26 left brow (inner -> outer), upper edge
    70, 63, 105, 66, 107,
    336, 296, 334, 293, 300,
    # 27-30 nose bridge (between the eyes -> tip), 31-35 nose base (right -> left)
    168, 197, 5, 4,
    75, 97, 2, 326, 305,
    # 36-41 right eye: outer corner, upper lid x2, inner corner, lower lid x2
    33, 160, 158, 133, 153, 144,
    # 42-47 left eye: inner corner, upper lid x2, outer corner, lower lid x2
    362, 385, 387, 263, 373, 380,
    # 48-59 outer lip: right corner, upper lip, left corner (54), lower lip
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    # 60-67 inner lip: right corner, upper, left corner (64), lower
    78, 82, 13, 312, 308, 317, 14, 87,
)

#: iBUG-68 left-right mirror permutation: the landmarks of a horizontally
#: flipped face are ``flipped[IBUG68_FLIP]`` (with x -> W - 1 - x).
IBUG68_FLIP: tuple[int, ...] = (
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,   # jaw
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,                     # brows
    27, 28, 29, 30,                                             # nose bridge
    35, 34, 33, 32, 31,                                         # nose base
    45, 44, 43, 42, 47, 46,                                     # right eye <- left eye
    39, 38, 37, 36, 41, 40,                                     # left eye <- right eye
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,             # outer lip
    64, 63, 62, 61, 60, 67, 66, 65,                             # inner lip
)
# fmt: on

#: iBUG-68 indices of the subject's right eye (image left) and left eye.
IBUG_RIGHT_EYE = range(36, 42)
IBUG_LEFT_EYE = range(42, 48)

_DETECT_PX = 640  # image mode: face detection runs on images (or tiles) this large
_MIN_TILE = 256  # image mode: smallest tile (input pixels) searched for faces
_MESH_LONG_SIDE = 1024  # image mode: whole-image face mesh fallback size
_CROP_SIZE = 512  # image mode: face crop size fed to the face mesh
_CROP_MARGIN = 2.0  # image mode: crop side / face box side
_VIDEO_LONG_SIDE = 1280  # video mode: larger frames are downscaled first


def interocular_distance(lm68: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners (iBUG 36 and 45) of `(..., 68, 2)` points.

    This is the outer-corner "inter-ocular" distance that 300-W uses to
    normalise landmark errors (NME).
    """
    lm68 = np.asarray(lm68)
    return np.linalg.norm(lm68[..., 36, :] - lm68[..., 45, :], axis=-1)


@dataclass
class FaceLandmarks:
    """One face's mesh landmarks, in the pixels of the original input image.

    Attributes:
        points: `(478, 3)` float32 (468 without irises): x, y in pixels, with
            (0, 0) the centre of the top-left pixel (so a mirror image has
            x -> W - 1 - x); z in pixels too (MediaPipe's relative depth times
            the width it saw, so scaled like x; smaller is nearer the camera).
        box: `(4,)` float32 face box x0, y0, x1, y1 (bounds of the points).
        score: face detection confidence, or 1.0 when not known.
    """

    points: np.ndarray
    box: np.ndarray
    score: float = 1.0

    def ibug68(self) -> np.ndarray:
        """The 68 iBUG landmarks, `(68, 2)` float32 pixels."""
        return self.points[MEDIAPIPE_TO_IBUG68, :2]


def _mediapipe():
    """Import mediapipe (lazily) with its Python logging quietened."""
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with mediapipe
        pass
    import mediapipe as mp

    return mp


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """Check a uint8 RGB `(H, W, 3)` image (or stack a `(H, W)` gray one); contiguous."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to `(width, height)`: area averaging when shrinking, linear otherwise."""
    if size == (image.shape[1], image.shape[0]):
        return image
    shrink = size[0] < image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@dataclass
class _View:
    """What MediaPipe saw: `image`, whose pixel edge coordinate u maps to
    input edge coordinate `origin + u / scale` (per axis)."""

    image: np.ndarray
    origin: tuple[float, float] = (0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)

    def to_input(self, pts: np.ndarray) -> np.ndarray:
        """Points in this view's pixels (edge coordinates) -> input pixel centres."""
        (ox, oy), (sx, sy) = self.origin, self.scale
        out = pts.copy()
        out[:, 0] = ox + pts[:, 0] / sx - 0.5
        out[:, 1] = oy + pts[:, 1] / sy - 0.5
        out[:, 2] = pts[:, 2] / sx
        return out


def _downscaled(image: np.ndarray, long_side: int) -> _View:
    """A view whose long side is at most `long_side`."""
    h, w = image.shape[:2]
    if max(h, w) <= long_side:
        return _View(image)
    s = long_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return _View(_resize(image, size), scale=(size[0] / w, size[1] / h))


def _square_view(image: np.ndarray, box: np.ndarray, margin: float, size: int) -> _View:
    """A `size`-pixel square view around `box` (x0, y0, x1, y1), `margin` times its
    long side, zero-padded past the image borders."""
    h, w = image.shape[:2]
    side = max(1, int(round(margin * max(box[2] - box[0], box[3] - box[1]))))
    x0 = int(round((box[0] + box[2]) / 2 - side / 2))
    y0 = int(round((box[1] + box[3]) / 2 - side / 2))
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, w), min(y0 + side, h)
    canvas = np.zeros((size, size, 3), np.uint8)
    if sx1 <= sx0 or sy1 <= sy0:
        return _View(canvas, (float(x0), float(y0)), (size / side, size / side))
    s = size / side
    # Resize only the part inside the image (bounded memory), then paste it.
    px, py = min(round((sx0 - x0) * s), size - 1), min(round((sy0 - y0) * s), size - 1)
    rw = min(max(1, round((sx1 - sx0) * s)), size - px)
    rh = min(max(1, round((sy1 - sy0) * s)), size - py)
    canvas[py : py + rh, px : px + rw] = _resize(image[sy0:sy1, sx0:sx1], (rw, rh))
    scale = (rw / (sx1 - sx0), rh / (sy1 - sy0))
    return _View(canvas, (sx0 - px / scale[0], sy0 - py / scale[1]), scale)


def _mesh_points(mesh, view: _View) -> np.ndarray | None:
    """Face mesh on a view; the first face's points in input pixels, or None."""
    faces = mesh.process(view.image).multi_face_landmarks
    if not faces:
        return None
    h, w = view.image.shape[:2]
    pts = np.array([(p.x, p.y, p.z) for p in faces[0].landmark], np.float32)
    pts *= np.array([w, h, w], np.float32)
    return view.to_input(pts)


def _make_landmarks(points: np.ndarray, score: float) -> FaceLandmarks:
    """Wrap input-pixel points into `FaceLandmarks`, with the box from their bounds."""
    points = points.astype(np.float32, copy=False)
    box = np.concatenate([points[:, :2].min(0), points[:, :2].max(0)])
    return FaceLandmarks(points=points, box=box, score=float(score))


def mediapipe_regions() -> dict[str, np.ndarray]:
    """The face-mesh point indices of each region ("lips", "eyes", "brows", "nose", "oval",
    "iris"), from mediapipe's own contour lists."""
    connections = _mediapipe().solutions.face_mesh_connections

    def points(*names):
        return np.array(sorted({i for n in names for edge in getattr(connections, n) for i in edge}))

    return {"lips": points("FACEMESH_LIPS"), "eyes": points("FACEMESH_LEFT_EYE", "FACEMESH_RIGHT_EYE"),
            "brows": points("FACEMESH_LEFT_EYEBROW", "FACEMESH_RIGHT_EYEBROW"),
            "nose": points("FACEMESH_NOSE"), "oval": points("FACEMESH_FACE_OVAL"),
            "iris": np.arange(468, 478)}


class LandmarkDetector:
    """MediaPipe face-mesh landmarks, in the pixels of the input image.

    Args:
        mode: "image" for independent photos: the largest face is found
            anywhere in the image, however large (face detection on a
            downscaled copy, then on tiles if needed), and the face mesh runs
            on a square crop around it. "video" for consecutive frames of one
            clip: MediaPipe tracks the face between frames (fast; frames with
            a long side over 1280 px are downscaled first).
        refine_landmarks: 478 points with irises (else 468).
        min_detection_confidence: face detection threshold.

    Use it as a context manager, or call `close()` when done.
    """

    def __init__(
        self,
        mode: Literal["image", "video"] = "image",
        refine_landmarks: bool = True,
        min_detection_confidence: float = 0.5,
    ) -> None:
        if mode not in ("image", "video"):
            raise ValueError(f"mode must be 'image' or 'video', got {mode!r}")
        self.mode = mode
        self.refine_landmarks = refine_landmarks
        self.min_detection_confidence = min_detection_confidence
        mp = _mediapipe()
        blank = np.zeros((64, 64, 3), np.uint8)
        with quiet_stderr():  # graphs print start-up messages on their first run
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=(mode == "image"),
                max_num_faces=1,
                refine_landmarks=refine_landmarks,
                min_detection_confidence=min_detection_confidence,
            )
            self._mesh.process(blank)
            self._detector = None
            if mode == "image":
                self._detector = mp.solutions.face_detection.FaceDetection(
                    model_selection=1, min_detection_confidence=min_detection_confidence
                )
                self._detector.process(blank)

    # -- public -----------------------------------------------------------

    def detect(self, image: np.ndarray, name: str | None = None) -> FaceLandmarks | None:
        """Landmarks of the main face in a uint8 RGB `(H, W, 3)` image, or None.

        `name` (e.g. the file name) is only used in error messages.
        """
        if self._mesh is None:
            raise RuntimeError("LandmarkDetector is closed")
        image = _as_rgb(image)
        if self.mode == "video":
            return self._detect_frame(image)
        return self._detect_image(image)

    def detect_or_raise(self, image: np.ndarray, name: str | None = None) -> FaceLandmarks:
        """Like `detect`, but raise `NoFaceError` when no face is found."""
        face = self.detect(image, name=name)
        if face is None:
            where = f"'{name}'" if name else "the image"
            raise NoFaceError(
                f"No face found in {where}. Use an image where one face is clearly "
                "visible, roughly frontal and at least about 100 pixels across."
            )
        return face

    def close(self) -> None:
        """Release the MediaPipe graphs."""
        for graph in (self._mesh, self._detector):
            if graph is not None:
                graph.close()
        self._mesh = self._detector = None

    def __enter__(self) -> LandmarkDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- video mode ---------------------------------------------------------

    def _detect_frame(self, frame: np.ndarray) -> FaceLandmarks | None:
        """Face mesh in tracking mode on a (downscaled if large) frame."""
        pts = _mesh_points(self._mesh, _downscaled(frame, _VIDEO_LONG_SIDE))
        return None if pts is None else _make_landmarks(pts, 1.0)

    # -- image mode ---------------------------------------------------------

    def _detect_image(self, image: np.ndarray) -> FaceLandmarks | None:
        """Face detection, then the face mesh on a crop of each face found, largest first."""
        for box, score in self._face_boxes(image):
            pts = _mesh_points(self._mesh, _square_view(image, box, _CROP_MARGIN, _CROP_SIZE))
            if pts is not None:
                return _make_landmarks(pts, score)
        # The detector can miss faces the mesh still finds: whole image, downscaled.
        pts = _mesh_points(self._mesh, _downscaled(image, _MESH_LONG_SIDE))
        return None if pts is None else _make_landmarks(pts, 1.0)

    def _face_boxes(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Face boxes (x0, y0, x1, y1 in input pixels) and scores, largest first.

        The whole image is searched first; when nothing is found, overlapping
        tiles half as large, and so on, so that small faces in large images
        are found too (the detector sees a 192-pixel copy of what it is given).
        """
        side = float(max(image.shape[:2]))
        while True:
            boxes = self._boxes_in_tiles(image, int(round(side)))
            if boxes:
                boxes.sort(key=lambda b: (b[0][2] - b[0][0]) * (b[0][3] - b[0][1]), reverse=True)
                return boxes
            side /= 2
            if side < _MIN_TILE:
                return []

    def _boxes_in_tiles(self, image: np.ndarray, side: int) -> list[tuple[np.ndarray, float]]:
        """Face detection on square tiles of `side` input pixels (25% overlap)."""
        h, w = image.shape[:2]
        view = _downscaled(image, round(_DETECT_PX * max(h, w) / side))
        sx, sy = view.scale
        tile = max(1, round(side * max(sx, sy)))
        boxes = []
        for ty in _tile_starts(view.image.shape[0], tile):
            for tx in _tile_starts(view.image.shape[1], tile):
                part = np.ascontiguousarray(view.image[ty : ty + tile, tx : tx + tile])
                ph, pw = part.shape[:2]
                for det in self._detector.process(part).detections or []:
                    rb = det.location_data.relative_bounding_box
                    if rb.width <= 0 or rb.height <= 0:
                        continue
                    x0, y0 = tx + rb.xmin * pw, ty + rb.ymin * ph
                    x1, y1 = x0 + rb.width * pw, y0 + rb.height * ph
                    box = np.array([x0 / sx, y0 / sy, x1 / sx, y1 / sy])
                    boxes.append((box, float(det.score[0]) if det.score else 1.0))
        return boxes


def _tile_starts(n: int, tile: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering `n` pixels with >= 25% overlap."""
    if n <= tile:
        return [0]
    stride = max(1, (3 * tile) // 4)
    return list(range(0, n - tile, stride)) + [n - tile]
