"""`onehead eval --task tracking`: the tracker against the exact truth of synthetic heads."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from onehead.cli import main
from onehead.data.sequence import list_sequences, open_sequence
from onehead.errors import MediaReadError
from onehead.evaluation.tracking import (compare, detected_turns, head_in_camera, motion_scores, neutral_like,
                                        summarise, truth_views)


@pytest.fixture(scope="module")
def truth_set(head, tmp_path_factory):
    from onehead.data.synthetic import SynthOptions, synthesize

    out = tmp_path_factory.mktemp("tracking-truth")
    synthesize(head, out, SynthOptions(identities=2, sequences=1, frames=6, views=1, size=256, texture_size=128,
                                       seed=7000, progress=False))
    return out


def _truth(truth_set):
    return open_sequence(list_sequences(truth_set)[0]).views["cam00"].tracking


def _with_camera_rotations(truth, rotations: Rotation, camera: Rotation):
    """The truth re-posed so its camera (rotation `camera`) sees the head at `rotations`."""
    w2c = truth.world_to_cam.copy()
    w2c[:, :3, :3] = camera.as_matrix()
    global_pose = (camera.inv() * rotations).as_rotvec().astype(np.float32)
    return replace(truth, world_to_cam=w2c, global_pose=global_pose)


def test_the_same_head_seen_by_another_camera_has_no_error(truth_set, head):
    truth = _truth(truth_set)
    moved = _with_camera_rotations(truth, head_in_camera(truth), Rotation.from_euler("y", 30, degrees=True))
    scores = summarise([compare(moved, truth, head)])
    assert scores["rotation_deg"] == pytest.approx(0.0, abs=1e-4)
    assert scores["motion_deg"] == pytest.approx(0.0, abs=1e-4)
    assert scores["expression_l1"] == 0.0 and scores["jaw_deg"] == 0.0 and scores["expression_mm"] == 0.0


def test_the_expression_distance_is_what_the_expression_moves(truth_set, head):
    truth = _truth(truth_set)
    neutral = summarise([compare(neutral_like(truth), truth, head)])
    assert neutral["expression_l1"] == pytest.approx(np.abs(truth.expression).mean())
    assert 0.5 < neutral["expression_mm"] < 10  # a talking face moves its points by millimetres
    opened = truth.jaw_pose.copy()
    opened[:, 0] += np.radians(10)
    wider = summarise([compare(replace(truth, jaw_pose=opened), truth, head)])
    assert wider["jaw_deg"] == pytest.approx(10.0, abs=1e-3) and wider["expression_mm"] > 1


def test_the_mouth_opening_is_scored_by_r_and_gain(truth_set, head):
    truth = _truth(truth_set)
    jaw = np.zeros_like(truth.jaw_pose)
    jaw[:, 0] = np.linspace(0.0, 0.25, len(jaw))  # the mouth opens over the clip
    talking = replace(truth, jaw_pose=jaw)
    same = summarise([compare(talking, talking, head)])
    assert same["mouth_r"] == pytest.approx(1.0) and same["mouth_gain"] == pytest.approx(1.0)
    half = replace(truth, jaw_pose=jaw * 0.5)
    scores = summarise([compare(half, talking, head)])
    assert scores["mouth_r"] > 0.99 and 0.3 < scores["mouth_gain"] < 0.7  # read at about half


def test_a_fixed_offset_is_a_rotation_error_and_not_a_motion_error(truth_set, head):
    truth = _truth(truth_set)
    offset = Rotation.from_euler("x", 5, degrees=True)
    moved = _with_camera_rotations(truth, offset * head_in_camera(truth), Rotation.identity())
    scores = summarise([compare(moved, truth, head)])
    assert scores["rotation_deg"] == pytest.approx(5.0, abs=1e-3)
    assert scores["motion_deg"] < 0.05  # an offset in front of the turn changes it only to second order


def test_a_turn_read_at_half_is_a_turn_gain_of_a_half(truth_set, head):
    truth = _truth(truth_set)
    seen = head_in_camera(truth)
    turns = np.zeros((len(seen), 3))
    turns[:, 1] = np.radians(np.linspace(0, 20, len(seen)))  # a 20-degree turn about the vertical axis
    true = _with_camera_rotations(truth, Rotation.from_rotvec(turns) * seen[0], Rotation.identity())
    half = _with_camera_rotations(truth, Rotation.from_rotvec(turns / 2) * seen[0], Rotation.identity())
    scores = summarise([compare(half, true, head)])
    assert scores["turn_gain"] == pytest.approx(0.5, abs=1e-6)
    assert scores["motion_deg"] == pytest.approx(np.median(np.linspace(0, 10, len(seen))), abs=1e-4)


def test_detected_turns_read_the_rigid_turn_of_the_detectors_points():
    rng = np.random.default_rng(0)
    face = rng.normal(size=(468, 3)) * [40.0, 50.0, 20.0]
    turns = Rotation.from_euler("yxz", np.stack([np.linspace(0, 30, 5), np.linspace(0, -8, 5),
                                                 np.linspace(0, 4, 5)], 1), degrees=True)
    points = np.stack([1.3 * face @ turn.as_matrix().T + [200.0, 180.0, 5.0] for turn in turns])
    points[3] = np.nan  # a frame without a face
    read = detected_turns(points)
    expected = turns.as_rotvec()
    np.testing.assert_allclose(read[[0, 1, 2, 4]], expected[[0, 1, 2, 4]], atol=1e-9)
    assert np.isnan(read[3]).all()
    assert np.isnan(detected_turns(points[[3, 0, 1]])).all()  # the first frame lost: no turn from it
    scores = motion_scores(read, expected)
    assert scores["motion_deg"] < 1e-6 and scores["turn_gain"] == pytest.approx(1.0)
    assert motion_scores(read / 2, expected)["nod_gain"] == pytest.approx(0.5, abs=0.02)


def test_eval_tracking_end_to_end(truth_set, tmp_path, capsys):
    out, video = tmp_path / "tracking.json", tmp_path / "tracking.mp4"
    assert main(["eval", "--task", "tracking", "--data", str(truth_set), "--out", str(out), "--video", str(video),
                 "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["data"]["items"] == 2 and report["data"]["frames"] == 12
    ours, mediapipe = report["methods"]["onehead"], report["methods"]["mediapipe"]
    assert ours["mean"]["found"] == 1.0 and set(ours["per_view"]) == {"cam00"}
    assert len(ours["per_sequence"]) == 2
    # the fit reads the head within a few degrees and its reported points beat mediapipe's own
    assert ours["mean"]["rotation_deg"] < 10
    assert ours["mean"]["nme"] < mediapipe["mean"]["nme"]
    neutral = report["methods"]["neutral"]["mean"]
    assert neutral["expression_l1"] == pytest.approx(np.mean(
        [np.abs(open_sequence(d).views["cam00"].tracking.expression).mean() for d in list_sequences(truth_set)]))
    assert np.isfinite(ours["mean"]["expression_mm"]) and np.isfinite(ours["mean"]["turn_gain"])
    assert mediapipe["mean"]["motion_deg"] < 10 and np.isfinite(mediapipe["mean"]["turn_gain"])  # its own turn
    printed = capsys.readouterr().out
    assert "rotation_deg" in printed and "view cam00:" in printed
    from onehead.data.video import read_video

    frames, _ = read_video(video)  # every frame of both views: the truth | the tracked head, side by side
    assert len(frames) == 12 and frames.shape[2] == 2 * (frames.shape[1] - 28)


def test_eval_tracking_refuses_data_without_truth_and_models(truth_set, tmp_path, capsys):
    with pytest.raises(MediaReadError, match="no synthetic sequence"):
        truth_views(tmp_path)
    code = main(["eval", "--task", "tracking", "--data", str(truth_set), "--model", "none",
                 "--out", str(tmp_path / "r.json")])
    assert code == 2 and "--model" in capsys.readouterr().err
