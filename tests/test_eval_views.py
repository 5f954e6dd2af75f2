"""`onehead eval --task views`: the yaw sweep and its measure against hand computations, and the
task end to end on a tiny synthetic dataset (the copy, which never turns, scores the asked yaw)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from onehead.cli import main
from onehead.evaluation.views import camera_rotations, yaw_errors, yaw_sweep


def _tracking(head, camera_yaw: float):
    from onehead.data.synthetic import look_at_camera
    from onehead.data.tracking_file import Tracking
    from onehead.head import MOTION_PARAM_NAMES

    sizes = {"global_pose": 3, "neck_pose": 3, "jaw_pose": 3, "eye_pose": 6, "translation": 3,
             "expression": head.num_expression}
    motion = {name: np.zeros((1, sizes[name]), np.float32) for name in MOTION_PARAM_NAMES}
    motion["global_pose"][0] = [0.1, -0.2, 0.05]
    w2c = np.asarray(look_at_camera(camera_yaw, 0.1, 1.0, np.zeros(3)), np.float32)[None]
    return Tracking(shape=np.zeros(head.num_shape, np.float32), **motion,
                    K=np.eye(3, dtype=np.float32)[None], world_to_cam=w2c,
                    landmarks68=np.zeros((1, 68, 2), np.float32), landmarks_mp=np.zeros((1, 478, 2), np.float32),
                    valid=np.ones(1, bool), fit_error=np.zeros(1, np.float32), image_size=np.array([64, 64]),
                    fps=25.0, head_model=head.kind)


@pytest.mark.parametrize("camera_yaw", [0.0, 35.0])
def test_the_sweep_turns_the_head_about_the_cameras_vertical_axis(head, camera_yaw):
    yaws = (-45.0, -10.0, 0.0, 20.0, 45.0)
    reference = _tracking(head, camera_yaw)
    sweep = yaw_sweep(reference, yaws)
    assert sweep.num_frames == len(yaws)
    assert np.allclose(sweep.world_to_cam, reference.world_to_cam[0]) and np.allclose(sweep.K, reference.K[0])
    rotations = camera_rotations(sweep)
    for i, yaw in enumerate(yaws):  # the camera-space rotation is R_y(yaw) times the reference's
        expected = Rotation.from_euler("y", yaw, degrees=True).as_matrix() @ camera_rotations(reference)[0]
        assert np.allclose(rotations[i], expected, atol=1e-5)
    errors = yaw_errors(rotations, camera_rotations(reference)[0], yaws)
    assert np.allclose(errors["yaw_error_deg"], 0, atol=1e-3) and np.allclose(errors["pose_angle_deg"], 0, atol=1e-3)


def test_yaw_errors_against_hand_computed_rotations():
    reference = Rotation.from_euler("x", 10, degrees=True).as_matrix()
    tracked = np.stack([Rotation.from_euler("y", 25, degrees=True).as_matrix() @ reference,  # 5 short of 30
                        Rotation.from_euler("x", 4, degrees=True).as_matrix() @ reference,  # right yaw, tilted
                        np.full((3, 3), np.nan)])  # no face
    errors = yaw_errors(tracked, reference, (30.0, 0.0, 15.0))
    assert errors["yaw_error_deg"][:2] == pytest.approx([5.0, 0.0], abs=1e-6)
    assert errors["pose_angle_deg"][:2] == pytest.approx([5.0, 4.0], abs=1e-6)
    assert np.isnan(errors["yaw_error_deg"][2]) and np.isnan(errors["pose_angle_deg"][2])
    lost = yaw_errors(tracked, np.full((3, 3), np.nan), (30.0, 0.0, 15.0))  # the reference has no face
    assert np.isnan(lost["yaw_error_deg"]).all()


@pytest.fixture(scope="module")
def tiny_dataset(head, tmp_path_factory):
    from onehead.data.synthetic import SynthOptions, synthesize

    out = tmp_path_factory.mktemp("views") / "data"
    synthesize(head, out, SynthOptions(identities=1, sequences=1, frames=1, views=1, size=128, texture_size=64,
                                       progress=False))
    return out


def test_eval_views_end_to_end_scores_the_copy_by_the_asked_yaw(tiny_dataset, tmp_path, capsys):
    out, video = tmp_path / "views.json", tmp_path / "views.mp4"
    code = main(["eval", "--task", "views", "--data", str(tiny_dataset), "--model", "none", "--yaws", "-30", "0", "30",
                 "--size", "128", "--out", str(out), "--video", str(video),
                 "--face-models", str(tmp_path / "no-face-models"), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert report["task"] == "views" and report["data"]["yaws_deg"] == [-30.0, 0.0, 30.0]
    assert report["data"]["items"] == 1 and "identity_kept" in report["missing"]
    copy, warp = report["methods"]["copy_reference"], report["methods"]["mesh_warp"]
    assert copy["mean"]["tracked"] == 1.0 and warp["mean"]["tracked"] == 1.0
    # the copy never turns: its error is the yaw asked for (within the tracker's noise)
    assert copy["per_sequence"]["yaw -30°"]["yaw_error_deg"] == pytest.approx(30, abs=3)
    assert copy["per_sequence"]["yaw +0°"]["yaw_error_deg"] < 3
    assert warp["mean"]["yaw_error_deg"] < copy["mean"]["yaw_error_deg"] - 5  # the warp turns the head
    assert "| mesh_warp · yaw +30° |" in printed
    from onehead.data.video import read_frames

    frames, _ = read_frames(video)
    assert len(frames) == 3 and frames.shape[2] == 3 * (frames.shape[1] - 28)  # reference | 2 methods


def test_eval_views_refuses_what_does_not_fit(tiny_dataset, tmp_path, capsys):
    report = str(tmp_path / "r.json")
    assert main(["eval", "--task", "views", "--data", str(tiny_dataset), "--references", "astronaut",
                 "--model", "none", "--out", report]) == 2
    assert main(["eval", "--task", "self", "--data", str(tiny_dataset), "--yaws", "10", "--out", report]) == 2
    assert main(["eval", "--task", "views", "--data", str(tiny_dataset), "--model", "none", "--yaws", "120",
                 "--out", report, "--quiet"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "not both" in errors[0] and "--yaws belongs" in errors[1] and "90" in errors[2]
    assert not (tmp_path / "r.json").exists()
