"""Jitter and lag measures of a video tracking (onehead.tracking.stability)."""

import numpy as np

from onehead.tracking.stability import jitter, mouth_lag, opening, vertex_jitter


def _eyes_apart(count: int, points: int = 68) -> np.ndarray:
    """(T, N, 2) points with the outer eye corners 100 px apart."""
    p = np.zeros((count, points, 2))
    p[:, 36] = (0, 0)
    p[:, 45] = (100, 0)
    return p


def test_steady_motion_has_no_jitter_and_shake_has_some():
    t = np.arange(20, dtype=float)
    steady = _eyes_apart(20) + (3 * t)[:, None, None]  # every point moves 3 px a frame
    assert jitter(steady) < 1e-9
    rng = np.random.default_rng(0)
    shaky = steady.copy()
    shaky[:, :30] += rng.normal(0, 2, (20, 30, 2))
    assert jitter(shaky) > 0.005


def test_jitter_leaves_out_lost_frames():
    points = _eyes_apart(10)
    points[5, :10] += 50  # one bad frame
    valid = np.ones(10, bool)
    assert jitter(points, valid) > 0
    valid[5] = False
    assert jitter(points, valid) == 0
    points[5] = np.nan  # NaN counts as lost too
    assert jitter(points) == 0


def test_vertex_jitter_is_in_the_vertices_units():
    v = np.zeros((4, 2, 3))
    v[2, :, 0] = 0.001  # one frame 1 mm off: second differences 1 mm (frames 0-2) and 2 mm (1-3)
    assert np.isclose(vertex_jitter(v), 0.0015)


def test_mouth_lag_finds_a_delay():
    t = np.arange(120)
    detected = np.sin(t / 5.0) + 0.3 * np.sin(t / 1.7)
    delayed = np.roll(detected, 2)
    delayed[:2] = np.nan
    result = mouth_lag(delayed, detected)
    assert result["lag_frames"] == 2 and result["r_at_lag"] > 0.999 > result["r"]
    assert mouth_lag(detected, detected)["lag_frames"] == 0


def test_opening_is_the_lip_gap_over_the_eye_distance():
    p = _eyes_apart(1)
    p[0, 62], p[0, 66] = (50, 40), (50, 60)
    assert np.isclose(opening(p, (62, 66), (36, 45))[0], 0.2)


def test_the_fit_picture_shows_the_closed_and_open_mouth():
    from types import SimpleNamespace

    from onehead.tracking.visualize import fit_picture, mouth_extremes

    frames = 7
    landmarks = _eyes_apart(frames)
    gaps = np.array([5, 3, 9, 1, 4, 6, 2], float)  # inner-lip gap per frame: closed at 3, open at 2
    landmarks[:, 62] = (50, 40)
    landmarks[:, 66, 0], landmarks[:, 66, 1] = 50, 40 + gaps
    valid = np.ones(frames, bool)
    tracking = SimpleNamespace(landmarks68=landmarks, valid=valid, num_frames=frames)
    assert [t for _, t in mouth_extremes(tracking)] == [3, 3, 2]  # closed, middle (7 // 2), open
    valid[2] = False  # a lost frame is never picked
    assert mouth_extremes(tracking)[2][1] == 5
    drawn = np.zeros((frames, 100, 120, 3), np.uint8)
    picture = fit_picture(drawn, tracking)
    assert picture.shape[1] == 3 * 120 * 4 and picture.shape[0] > 400  # three tiles, enlarged 4x to be seen
    assert fit_picture(drawn[:1], tracking).shape == (100, 120, 3)  # an image: its overlay as it is
