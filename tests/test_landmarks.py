"""Tests for onehead.tracking.landmarks on the two public-domain portraits."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from onehead.errors import NoFaceError
from onehead.tracking.landmarks import (
    IBUG68_FLIP,
    IBUG_LEFT_EYE,
    IBUG_RIGHT_EYE,
    MEDIAPIPE_TO_IBUG68,
    FaceLandmarks,
    LandmarkDetector,
    interocular_distance,
)

PORTRAITS = ("astronaut", "grace_hopper")


def _load_portrait(name: str) -> np.ndarray:
    if name == "astronaut":
        skimage_data = pytest.importorskip("skimage.data")
        return np.ascontiguousarray(skimage_data.astronaut())
    matplotlib = pytest.importorskip("matplotlib")
    from PIL import Image

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    if not os.path.exists(path):
        pytest.skip(f"matplotlib sample image missing: {path}")
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def portraits() -> dict[str, np.ndarray]:
    return {name: _load_portrait(name) for name in PORTRAITS}


@pytest.fixture(scope="module")
def detector():
    with LandmarkDetector("image") as det:
        yield det


@pytest.fixture(scope="module")
def faces(portraits, detector) -> dict[str, FaceLandmarks]:
    return {name: detector.detect(img, name=name) for name, img in portraits.items()}


def _nme(a: np.ndarray, b: np.ndarray) -> float:
    """Mean point distance between two (68, 2) sets over the inter-ocular distance of `b`."""
    return float(np.linalg.norm(a - b, axis=-1).mean() / interocular_distance(b))


# -- mapping tables ------------------------------------------------------------


def test_mapping_tables():
    m = MEDIAPIPE_TO_IBUG68
    assert len(m) == 68 and len(set(m)) == 68
    assert all(0 <= i < 468 for i in m)
    assert m[8] == 152  # chin
    flip = np.array(IBUG68_FLIP)
    assert sorted(flip) == list(range(68))
    np.testing.assert_array_equal(flip[flip], np.arange(68))  # an involution
    assert list(flip[:17]) == list(range(16, -1, -1))
    assert (flip[36], flip[39], flip[48], flip[60], flip[30]) == (45, 42, 54, 64, 30)
    assert list(IBUG_RIGHT_EYE) == list(range(36, 42))
    assert list(IBUG_LEFT_EYE) == list(range(42, 48))


def test_mapping_follows_mediapipe_contours():
    """Each iBUG group is drawn from the matching MediaPipe face-mesh contour."""
    conn = pytest.importorskip("mediapipe").solutions.face_mesh_connections

    def vertices(edges):
        return {i for edge in edges for i in edge}

    m = MEDIAPIPE_TO_IBUG68
    assert set(m[0:17]) <= vertices(conn.FACEMESH_FACE_OVAL)
    assert set(m[17:22]) <= vertices(conn.FACEMESH_RIGHT_EYEBROW)
    assert set(m[22:27]) <= vertices(conn.FACEMESH_LEFT_EYEBROW)
    assert set(m[36:42]) <= vertices(conn.FACEMESH_RIGHT_EYE)
    assert set(m[42:48]) <= vertices(conn.FACEMESH_LEFT_EYE)
    assert set(m[48:68]) <= vertices(conn.FACEMESH_LIPS)


def test_interocular_distance_shapes():
    lm = np.zeros((2, 3, 68, 2))
    lm[..., 45, 0] = 3.0
    lm[..., 45, 1] = 4.0
    d = interocular_distance(lm)
    assert d.shape == (2, 3)
    np.testing.assert_allclose(d, 5.0)


# -- image mode ----------------------------------------------------------------


@pytest.mark.parametrize("name", PORTRAITS)
def test_portrait_points_inside_image(name, portraits, faces):
    img, face = portraits[name], faces[name]
    assert face is not None
    h, w = img.shape[:2]
    assert face.points.shape == (478, 3) and face.points.dtype == np.float32
    assert np.isfinite(face.points).all()
    x, y = face.points[:, 0], face.points[:, 1]
    assert (x >= 0).all() and (x <= w - 1).all() and (y >= 0).all() and (y <= h - 1).all()
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert 0.5 <= face.score <= 1.0
    # z is in pixels, scaled like x: the face is about as deep as wide, not 1/W of it.
    assert 0.1 < np.ptp(face.points[:, 2]) / (x1 - x0) < 2.0


@pytest.mark.parametrize("name", PORTRAITS)
def test_ibug68_layout(name, faces):
    lm = faces[name].ibug68()
    assert lm.shape == (68, 2)
    x, y = lm[:, 0], lm[:, 1]
    right_eye, left_eye = lm[list(IBUG_RIGHT_EYE)], lm[list(IBUG_LEFT_EYE)]
    # the subject's right eye is on the image left
    assert right_eye[:, 0].max() < left_eye[:, 0].min()
    assert x[36] < x[39] < x[42] < x[45]  # outer, inner, inner, outer corners
    # nose tip between the eyes horizontally and below them; bridge goes down
    assert x[39] < x[30] < x[42]
    assert y[30] > max(y[36:48])
    assert y[27] < y[28] < y[29] < y[30] < y[33]
    # brows above the eyes, mouth below the nose, chin lowest
    assert max(y[17:27]) < min(y[36:48])
    assert min(y[48:68]) > y[33]
    assert y[8] == y[:17].max()
    assert x[0] < x[8] < x[16]
    assert x[48] < x[30] < x[54] and x[60] < x[64]
    iod = interocular_distance(lm)
    assert y[51] < y[62] < y[66] + 0.05 * iod and y[66] < y[57]  # lips, top to bottom
    # jaw 0 and 16 near the height of the eye corners (within half an eye distance)
    assert abs(y[0] - y[36]) < 0.5 * iod and abs(y[16] - y[45]) < 0.5 * iod
    assert 0.25 < iod / (x[16] - x[0]) < 0.9


@pytest.mark.parametrize("name", PORTRAITS)
def test_horizontal_flip_consistency(name, portraits, faces, detector):
    img = portraits[name]
    mirrored = detector.detect(np.ascontiguousarray(img[:, ::-1]))
    assert mirrored is not None
    back = mirrored.ibug68()[list(IBUG68_FLIP)]
    back[:, 0] = img.shape[1] - 1 - back[:, 0]
    assert _nme(back, faces[name].ibug68()) < 0.1


@pytest.mark.parametrize("name", PORTRAITS)
def test_small_gray_face_in_large_canvas(name, portraits, faces, detector):
    """A 180 px gray face region off-centre in a 3000x2000 canvas maps back to the right place."""
    img = portraits[name]
    x0, y0, x1, y1 = faces[name].box
    side = int(1.6 * max(x1 - x0, y1 - y0))
    cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
    left, top = max(cx - side // 2, 0), max(cy - side // 2, 0)
    region = img[top : top + side, left : left + side]
    s = 180.0 / max(region.shape[:2])
    small = cv2.resize(region, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    small = np.ascontiguousarray(np.repeat(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)[..., None], 3, 2))
    canvas = np.full((2000, 3000, 3), 128, np.uint8)
    ox, oy = 2150, 1250
    canvas[oy : oy + small.shape[0], ox : ox + small.shape[1]] = small

    ref = detector.detect_or_raise(small, name=name)  # the same face at its own scale
    found = detector.detect_or_raise(canvas, name=f"{name} in canvas")
    assert _nme(found.ibug68() - [ox, oy], ref.ibug68()) < 0.05
    # and back in the portrait's pixels, close to the colour full-size detection
    back = (found.ibug68() - [ox, oy] + 0.5) / s - 0.5 + [left, top]
    assert _nme(back, faces[name].ibug68()) < 0.1


def test_gray_2d_input_is_accepted(portraits, detector):
    gray = cv2.cvtColor(portraits["astronaut"], cv2.COLOR_RGB2GRAY)
    face = detector.detect(gray)
    assert face is not None and face.points.shape == (478, 3)


def test_bad_input_raises(detector):
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64, 4), np.uint8))


def test_blank_image_has_no_face(detector):
    blank = np.zeros((480, 640, 3), np.uint8)
    assert detector.detect(blank) is None
    with pytest.raises(NoFaceError, match="blank.png"):
        detector.detect_or_raise(blank, name="blank.png")
    with pytest.raises(NoFaceError, match="the image"):
        detector.detect_or_raise(blank)


def test_closed_detector_refuses(portraits):
    det = LandmarkDetector("image")
    det.close()
    det.close()  # idempotent
    with pytest.raises(RuntimeError):
        det.detect(portraits["astronaut"])


# -- video mode ----------------------------------------------------------------


def test_video_mode_identical_frames(portraits, faces):
    img = portraits["astronaut"]
    with LandmarkDetector("video") as det:
        tracked = [det.detect(img) for _ in range(6)]
    assert all(f is not None for f in tracked)
    first = tracked[0].ibug68()
    for f in tracked[1:]:
        assert f.points.shape == (478, 3)
        assert _nme(f.ibug68(), first) < 0.03
    assert _nme(first, faces["astronaut"].ibug68()) < 0.1


def test_video_mode_large_frame_scales_back(portraits, faces):
    """Frames larger than 1280 px are downscaled inside, points come back in frame pixels."""
    img, k = portraits["astronaut"], 3
    big = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_LINEAR)
    with LandmarkDetector("video") as det:
        face = det.detect(big)
    assert face is not None
    assert _nme((face.ibug68() + 0.5) / k - 0.5, faces["astronaut"].ibug68()) < 0.1


def test_video_mode_blank_frame(portraits):
    with LandmarkDetector("video", refine_landmarks=False) as det:
        assert det.detect(np.zeros((240, 320, 3), np.uint8)) is None
        face = det.detect(portraits["grace_hopper"])
        assert face is not None and face.points.shape == (468, 3)
        with pytest.raises(NoFaceError):
            det.detect_or_raise(np.zeros((240, 320, 3), np.uint8), name="frame 3")
