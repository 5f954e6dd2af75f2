"""`onehead eval --task real`: the measures against hand computations (identity kept, mouth r,
motion AKD, the asked-for pose, flicker) and the task end to end on tiny inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from onehead.cli import main
from onehead.head.geometry import transferred_rotations
from onehead.metrics.identity import identity_kept
from onehead.metrics.motion import (mouth_correlation, mouth_opening, motion_akd, pearson, relative_pose,
                                    similarity_transform)
from onehead.metrics.temporal import flicker, still_regions


# ----------------------------------------------------------------------------- identity kept
def test_identity_kept_counts_lost_frames_as_not_kept():
    reference = np.zeros(4)
    frames = np.array([[0.5, 0, 0, 0], [0, 0.7, 0, 0], [np.nan] * 4, [0.3, 0.4, 0, 0]])
    result = identity_kept(frames, reference)
    assert result["kept"].tolist() == [True, False, False, True]  # 0.5, 0.7, no face, 0.5 (< 0.6)
    assert result["share"] == 0.5 and result["no_face"] == 1
    np.testing.assert_allclose(result["distance"][[0, 1, 3]], [0.5, 0.7, 0.5])
    assert np.isnan(result["distance"][2]) and np.isnan(result["cosine"][2])
    cos = identity_kept(np.array([[1.0, 0, 0, 0], [1.0, 1.0, 0, 0]]), np.array([2.0, 0, 0, 0]))["cosine"]
    np.testing.assert_allclose(cos, [1.0, 1 / np.sqrt(2)])
    with pytest.raises(ValueError, match="reference has no face"):
        identity_kept(frames, np.full(4, np.nan))


def test_identity_kept_rolled_searches_turned_frames_only_where_no_face_is_found():
    from onehead.evaluation.real import RealOptions, _Anchor, _scores

    class Embedder:  # a frame's descriptor is its mean level; a bright frame shows a face only when turned
        def __init__(self):
            self.turned = []

        def embed(self, pixels):
            return np.array([[np.nan] * 2 if p.mean() > 200 else [p.mean() / 255, 0.0] for p in pixels])

        def embed_turned(self, pixel, turns):
            self.turned.append(float(pixel.mean()))
            return np.array([0.0, 0.0]) if pixel.mean() > 250 else None

    frames = torch.tensor([0.0, 1.0, 0.9]).view(3, 1, 1, 1).expand(3, 3, 4, 4).contiguous()
    still = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    embedder = Embedder()
    values, clip = _scores(frames, still, _Anchor(np.zeros(2), None), embedder, None, None, 1.0, 3,
                           RealOptions(motion_metrics=False))
    assert values["identity_kept"].tolist() == [1.0, 0.0, 0.0] and clip["identity_no_face"] == 2
    assert values["identity_kept_rolled"].tolist() == [1.0, 1.0, 0.0]  # found turned; still none
    assert len(embedder.turned) == 2 and embedder.turned[0] == 255  # only the two frames lost upright


# ----------------------------------------------------------------------------- mouth r
def _mesh_points(gaps, eye_distance=40.0):
    """Face-mesh points (T, 478, 2) with a given inner-lip gap (13-14) and eye-corner distance (33-263)."""
    points = np.zeros((len(gaps), 478, 2))
    points[:, 33], points[:, 263] = [10.0, 20.0], [10.0 + eye_distance, 20.0]
    points[:, 13] = [30.0, 50.0]
    points[:, 14, 0], points[:, 14, 1] = 30.0, 50.0 + np.asarray(gaps)
    return points


def test_mouth_opening_is_the_lip_gap_over_the_eye_corners():
    np.testing.assert_allclose(mouth_opening(_mesh_points([0.0, 4.0, 10.0])), [0.0, 0.1, 0.25])
    points = _mesh_points([4.0])
    points[0, 14] = np.nan
    assert np.isnan(mouth_opening(points)[0])


def test_mouth_r_of_a_linear_signal_is_one_and_lost_frames_are_left_out():
    driving = np.array([1.0, 3.0, 2.0, 6.0, 4.0, 5.0])
    # the output's mouth opens as 0.5 * driving + 1 at another face size: r = 1 exactly
    output = _mesh_points(0.5 * driving + 1, eye_distance=80.0)
    output[2] = np.nan  # a frame without a face
    result = mouth_correlation(output, _mesh_points(driving))
    assert result["r"] == pytest.approx(1.0) and result["frames"] == 5 and result["left_out"] == 1
    assert result["gain"] == pytest.approx(0.25)  # half the gap on a face twice as wide: a quarter of the opening
    assert result["output_no_face"] == 1
    assert pearson(driving, -driving)["r"] == pytest.approx(-1.0)
    # hand computation: x = (1, 2, 3), y = (1, 3, 2): r = 0.5
    assert pearson(np.array([1.0, 2, 3]), np.array([1.0, 3, 2]))["r"] == pytest.approx(0.5)
    assert np.isnan(pearson(np.ones(6), driving)["r"])  # a mouth that never moves: r is undefined
    assert np.isnan(pearson(np.array([1.0, 2, np.nan]), np.array([1.0, 2, 3]))["r"])  # under 3 frames


# ----------------------------------------------------------------------------- motion AKD and pose
def test_similarity_transform_recovers_scale_rotation_and_shift():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(20, 2))
    angle = np.radians(25)
    R = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    s, rotation, t = similarity_transform(source, 1.7 * source @ R.T + [3.0, -2.0])
    assert s == pytest.approx(1.7) and np.allclose(rotation, R) and np.allclose(t, [3.0, -2.0])


def test_motion_akd_cancels_the_other_face_shape_and_scores_a_still_output_by_the_motion():
    rng = np.random.default_rng(1)
    neutral = rng.uniform(0, 100, (68, 2))
    neutral[36], neutral[45] = [20.0, 40.0], [80.0, 40.0]  # inter-ocular distance 60
    motion = rng.normal(0, 2, (5, 68, 2))
    motion -= motion.mean(0)  # the driving clip's mean shape is the neutral one
    driving = neutral + motion
    angle = np.radians(10)
    R = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    other_face = rng.normal(0, 3, (68, 2))  # another identity: a constant difference in shape
    output = 2.0 * (driving + other_face) @ R.T + [5.0, 7.0]  # the same motion, twice as large, turned
    result = motion_akd(output, driving)
    assert result["akd"].max() < 0.5  # only what the shape difference changes in the fitted scale
    exact = motion_akd(2.0 * driving @ R.T + [5.0, 7.0], driving)
    np.testing.assert_allclose(exact["akd"], 0.0, atol=1e-9)
    # an output that does not move scores the driving motion's size (displacements from the mean)
    still = motion_akd(np.repeat(neutral[None], 5, 0), driving)
    expected = np.linalg.norm(motion, axis=-1).mean(-1)
    np.testing.assert_allclose(still["akd"], expected, rtol=1e-6)
    np.testing.assert_allclose(still["akd_iod"], expected / 60.0, rtol=1e-6)
    lost = output.copy()
    lost[3] = np.nan
    assert np.isnan(motion_akd(lost, driving)["akd"][3])


def test_relative_pose_applies_the_driving_rotation_to_the_reference():
    reference = np.array([0.0, 0.4, 0.0])
    driving = np.array([[0.1, 0.0, 0.0], [0.1, 0.0, 0.0], [np.nan] * 3, [0.3, 0.0, 0.0]])
    asked = relative_pose(driving, reference)
    np.testing.assert_allclose(asked[0], reference, atol=1e-12)  # no motion yet: the reference's pose
    assert np.isnan(asked[2]).all()
    expected = (Rotation.from_rotvec(reference) * Rotation.from_rotvec([0.2, 0, 0])).as_rotvec()
    np.testing.assert_allclose(asked[3], expected, atol=1e-12)


def test_a_drivers_tilt_does_not_turn_a_three_quarter_portrait_further():
    reference = np.array([0.0, np.radians(45), 0.0])  # turned 45 degrees about the vertical axis
    tilt = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, np.radians(20)]])  # a frontal driver tilts towards his shoulder
    asked = Rotation.from_rotvec(transferred_rotations(tilt, tilt[0], reference))
    forward = asked.apply([0.0, 0.0, 1.0])  # where the face points
    np.testing.assert_allclose(forward[1], Rotation.from_rotvec(reference).apply([0.0, 0.0, 1.0]), atol=1e-12)
    # about the camera's axis instead, the same tilt would move where the face points
    camera_axes = Rotation.from_rotvec(tilt[1]) * Rotation.from_rotvec(reference)
    assert np.abs(camera_axes.apply([0.0, 0.0, 1.0]) - forward[1]).max() > 0.1
    # and the reference turns by what the driver turned, relative to itself
    own_turn = (Rotation.from_rotvec(reference).inv() * asked[1]).magnitude()
    assert own_turn == pytest.approx(np.radians(20))


# ----------------------------------------------------------------------------- flicker
def test_flicker_of_a_constant_video_is_zero_and_counts_only_the_still_pixels():
    frames = torch.rand(1, 3, 8, 8).expand(4, -1, -1, -1).clone()
    still = torch.ones(3, 1, 8, 8, dtype=torch.bool)
    assert flicker(frames, still).tolist() == [0.0, 0.0, 0.0]
    frames[2, :, :4] += 10 / 255  # frame 2 changes by 10 levels in the top half
    frames[2, :, 4:, :4] += 40 / 255  # and by 40 in the bottom-left quarter
    result = flicker(frames, still)
    # transitions 1->2 and 2->3 change: (10 * 32 + 40 * 16) / 64 = 15 levels
    np.testing.assert_allclose(result.numpy(), [0.0, 15.0, 15.0], rtol=1e-5)
    only_bottom = still.clone()
    only_bottom[:, :, :4] = False
    np.testing.assert_allclose(flicker(frames, only_bottom).numpy(), [0.0, 20.0, 20.0], rtol=1e-5)  # 40 * 16 / 32
    none = torch.zeros_like(still)
    assert torch.isnan(flicker(frames, none)).all()


def test_still_regions_leave_out_both_frames_moving_parts_and_the_reference():
    moving = torch.zeros(3, 1, 9, 9)
    moving[0, 0, 1, 1] = moving[1, 0, 7, 7] = 1
    reference = torch.zeros(1, 1, 9, 9)
    reference[0, 0, 4, 4] = 1
    still = still_regions(moving, grow=1, always_moving=reference)
    assert still.shape == (2, 1, 9, 9)
    busy = ~still
    assert busy[0].sum() == 27 and busy[1].sum() == 18  # three (then two) 3x3 blocks
    assert busy[0, 0, 0, 0] and busy[0, 0, 8, 8] and busy[1, 0, 8, 8] and not busy[1, 0, 0, 0]


# ----------------------------------------------------------------------------- end to end
def _small_model(head):
    """A random Gaussian-diffusion model at 32x32 (as in tests/test_families.py)."""
    from onehead.models.gaussian_diffusion import GaussianDiffusionConfig, InferenceSettings
    from onehead.pipelines.gaussian_diffusion import GaussianDiffusionAnimator

    unet = dict(layers_per_block=1, block_out_channels=(16, 32, 32),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    config = GaussianDiffusionConfig.from_preset("tiny", resolution=32, uv_resolution=32, unet=unet,
                                                 guider_channels=(8, 16), warp_guidance=True)
    return GaussianDiffusionAnimator.from_config(config, InferenceSettings(steps=1, window=2, window_overlap=1),
                                                 head)


@pytest.fixture(scope="module")
def tiny_inputs(head, tmp_path_factory):
    """A synthetic head portrait (PNG) and three synthetic driving frames of another identity (a folder)."""
    from PIL import Image

    from onehead.data.sequence import open_sequence
    from onehead.data.synthetic import SynthOptions, synthesize

    out = tmp_path_factory.mktemp("real-inputs")
    synthesize(head, out / "data", SynthOptions(identities=2, sequences=1, frames=3, views=1, size=128,
                                                texture_size=64, progress=False))
    reference = out / "portrait.png"
    Image.fromarray(open_sequence(out / "data" / "id000_s00").views["cam00"].frame(0)).save(reference)
    driving = out / "driving"
    driving.mkdir()
    view = open_sequence(out / "data" / "id001_s00").views["cam00"]
    for t in range(3):
        Image.fromarray(view.frame(t)).save(driving / f"frame_{t}.png")
    return reference, driving


def test_eval_real_end_to_end_on_tiny_inputs(head, tiny_inputs, tmp_path, capsys):
    torch.manual_seed(0)
    _small_model(head).save_pretrained(tmp_path / "model")  # 32x32: upsampled to 64 to score
    reference, driving = tiny_inputs
    out, video = tmp_path / "real.json", tmp_path / "grid.mp4"
    code = main(["eval", "--task", "real", "--references", str(reference), "--driving", str(driving),
                 "--size", "64", "--model", str(tmp_path / "model"), "--out", str(out), "--video", str(video),
                 "--face-models", str(tmp_path / "no-face-models"), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert report["task"] == "real" and report["size"] == 64 and report["command"]
    assert set(report["methods"]) == {"model", "copy_reference", "mesh_warp"}
    data = report["data"]
    assert data["frames"] == 3 and data["driving"]["frames"] == 3 and not data["ground_truth"]
    assert data["references"][0]["name"] == "portrait" and len(data["fingerprint"]) == 16
    assert report["machine"] and all(m["seconds_per_frame"] > 0 for m in report["methods"].values())
    # no dlib files: identity is missing with the reason, never a number
    assert {"identity_kept", "csim"} <= set(report["missing"]) and "no-face-models" in report["missing"]["csim"]
    assert all("identity_kept" not in m["mean"] for m in report["methods"].values())
    model = report["methods"]["model"]
    assert model["resolution"] == 32 and "upsampled" in model["note"]
    copy, warp = report["methods"]["copy_reference"], report["methods"]["mesh_warp"]
    assert copy["mean"]["flicker"] == 0.0  # the copy never changes
    assert copy["mean"]["mouth_r"] is None  # its mouth never moves: r is undefined, not a number
    assert copy["mean"]["mouth_gain"] is None
    assert warp["mean"]["flicker"] is not None and model["mean"]["flicker"] is not None
    assert set(warp["per_sequence"]) == {"portrait"}
    assert "| model (32², upsampled) |" in printed and "| mesh_warp · portrait |" in printed
    assert "missing identity_kept" in printed
    from onehead.data.video import read_frames

    frames, _ = read_frames(video)
    assert len(frames) == 3 and frames.shape[2] == 5 * (frames.shape[1] - 28)  # 5 tiles under a 28-px header


def test_eval_real_refuses_what_does_not_fit(tmp_path, capsys):
    assert main(["eval", "--task", "real", "--data", str(tmp_path), "--out", str(tmp_path / "r.json")]) == 2
    assert main(["eval", "--task", "self", "--out", str(tmp_path / "r.json")]) == 2
    assert main(["eval", "--task", "real", "--references", str(tmp_path / "absent.png"), "--model", "none",
                 "--out", str(tmp_path / "r.json"), "--quiet"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "not --data" in errors[0] and "needs --data" in errors[1]
    assert "absent.png" in errors[2]
    assert not (tmp_path / "r.json").exists()
