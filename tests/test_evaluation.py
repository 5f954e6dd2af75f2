"""Evaluation: face-motion metrics against hand computations, the mesh warp, the task's frames,
and `onehead eval` end to end on a tiny synthetic set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from onehead.cli import main
from onehead.errors import CheckpointError
from onehead.metrics.motion import akd, aed, apd


def test_akd_of_a_known_landmark_shift():
    rng = np.random.default_rng(0)
    target = rng.uniform(10, 50, (3, 68, 2))
    target[:, 36], target[:, 45] = [10.0, 20.0], [30.0, 20.0]  # inter-ocular distance 20 px
    prediction = target + np.array([3.0, 4.0])  # every point 5 px away
    prediction[1] = np.nan  # a frame without a face stays NaN
    scores = akd(prediction, target)
    np.testing.assert_allclose(scores["akd"][[0, 2]], 5.0)
    np.testing.assert_allclose(scores["akd_iod"][[0, 2]], 0.25)
    assert np.isnan(scores["akd"][1])


def test_apd_of_a_known_rotation_and_aed_of_a_known_offset():
    target = np.zeros((2, 3))
    prediction = np.array([[0.0, 0.3, 0.0], [0.1, 0.0, 0.0]])
    scores = apd(prediction, target)
    np.testing.assert_allclose(scores["apd"], [0.1, 0.1 / 3])
    np.testing.assert_allclose(scores["pose_angle_deg"], np.degrees([0.3, 0.1]))
    # two rotations about the same axis: the angle between them is the difference of the angles
    scores = apd(np.array([[0.0, 0.5, 0.0]]), np.array([[0.0, 0.2, 0.0]]))
    np.testing.assert_allclose(scores["pose_angle_deg"], np.degrees([0.3]))
    expression = np.arange(12.0).reshape(2, 6)
    np.testing.assert_allclose(aed(expression + [0.5, -0.5, 0, 0, 0, 0], expression), [1 / 6, 1 / 6])


@pytest.fixture(scope="module")
def tiny_set(head, tmp_path_factory):
    from onehead.data.synthetic import SynthOptions, synthesize

    out = tmp_path_factory.mktemp("eval-data")
    synthesize(head, out, SynthOptions(identities=2, sequences=1, frames=3, views=1, size=64, texture_size=64,
                                       cross_pairs=True, progress=False))
    return out


def test_mesh_warp_of_the_same_pose_returns_the_reference(head, tiny_set):
    """Warping a frame to its own pose samples every visible pixel at its own centre."""
    from onehead.data.sequence import open_sequence
    from onehead.evaluation.baselines import mesh_warp
    from onehead.pipelines.reenactment import driving_motion, prepare_reference

    view = open_sequence(tiny_set / "id000_s00").views["cam00"]
    reference = prepare_reference(view.frame(0), head, 64, view.tracking)
    motion = driving_motion(view.tracking.select([0, 0]), reference, head, 64, camera="driving")
    warped = mesh_warp(reference, motion, head)
    image = torch.from_numpy(reference.image).permute(2, 0, 1).float() / 255
    mask = torch.from_numpy(view.mask(0)) > 0.5
    error = (warped - image).abs().amax(1)  # (T, H, W)
    assert float(error[:, mask].mean()) < 1 / 255  # uint8 rounding
    assert float((error[:, mask] < 2 / 255).float().mean()) > 0.97  # silhouette pixels may be inpainted


def test_tasks_pick_the_right_frames(tiny_set):
    from onehead.evaluation.tasks import evaluation_items

    items = evaluation_items(tiny_set, "self")
    assert [i.name for i in items] == ["id000_s00", "id001_s00"]  # the cross targets are not sequences
    assert all(i.frames == [1, 2] and i.target is i.driving and i.camera == "driving" for i in items)
    cross = evaluation_items(tiny_set, "cross")
    assert [i.name for i in cross] == ["cross_id000_by_id001_s00", "cross_id001_by_id000_s00"]
    assert cross[0].reference.directory.parent.name == "id000_s00"
    assert cross[0].driving.directory.parent.name == "id001_s00" and cross[0].frames == [0, 1, 2]
    (tiny_set / "pairs.json").rename(tiny_set / "pairs.bak")
    try:
        no_truth = evaluation_items(tiny_set, "cross")  # every sequence driven by the next one
        assert all(i.target is None and i.camera is None for i in no_truth)
        assert len(no_truth) == 4  # the two identities and the two cross renders
    finally:
        (tiny_set / "pairs.bak").rename(tiny_set / "pairs.json")


def test_a_real_reference_frame_brings_its_person_mask(head, tiny_set, tmp_path):
    """A real sequence's mask is the person's matte: the reference gets it as its foreground (so a
    model may carry the hair); a synthetic frame's mask is render coverage and is not used."""
    import json

    from onehead.data.sequence import copy_frames, open_sequence
    from onehead.evaluation.tasks import evaluation_items
    from onehead.pipelines.reenactment import prepare_reference

    assert all(i.reference_foreground is None for i in evaluation_items(tiny_set, "self"))
    real = copy_frames(tiny_set / "id000_s00", tmp_path / "real" / "clip", 0, 3)
    meta = json.loads((real / "meta.json").read_text())
    (real / "meta.json").write_text(json.dumps({**meta, "domain": "real"}))
    item = evaluation_items(tmp_path / "real", "self")[0]
    mask = open_sequence(real).views["cam00"].mask(0)
    np.testing.assert_array_equal(item.reference_foreground, mask)
    reference = prepare_reference(item.reference_image, head, 32, item.reference.tracking,
                                  foreground=item.reference_foreground)
    assert reference.foreground.shape == (32, 32) and reference.image.shape == (32, 32, 3)
    assert abs(float(reference.foreground.mean()) - float(mask.mean())) < 0.05
    assert prepare_reference(item.reference_image, head, 32, item.reference.tracking).foreground is None


def test_eval_end_to_end_reports_models_and_baselines(head, tiny_set, tmp_path, capsys):
    from onehead.data.sequence import open_sequence, read_pairs
    from onehead.metrics.image import psnr
    from onehead.models.gaussian_diffusion import GaussianDiffusionConfig, InferenceSettings
    from onehead.pipelines.gaussian_diffusion import GaussianDiffusionAnimator

    torch.manual_seed(0)
    unet = dict(layers_per_block=1, block_out_channels=(16, 32, 32),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    config = GaussianDiffusionConfig.from_preset("tiny", unet=unet, uv_resolution=32, guider_channels=(8, 16),
                                                 warp_guidance=True)
    settings = InferenceSettings(steps=1, background="reference")
    GaussianDiffusionAnimator.from_config(config, settings, head).save_pretrained(tmp_path / "model")
    report_path = tmp_path / "report.json"
    code = main(["eval", "--data", str(tiny_set), "--task", "cross", "--out", str(report_path),
                 "--model", str(tmp_path / "model"), "--video", str(tmp_path / "grid.mp4"), "--quiet",
                 "--lpips", str(tmp_path / "absent.safetensors")])
    assert code == 2  # a named LPIPS file that does not exist is an error, not a silent omission
    code = main(["eval", "--data", str(tiny_set), "--task", "cross", "--out", str(report_path),
                 "--model", str(tmp_path / "model"), "--video", str(tmp_path / "grid.mp4"), "--quiet"])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert set(report["methods"]) == {"model", "copy_reference", "mesh_warp"}
    assert report["data"]["frames"] == 6 and report["data"]["ground_truth"] and report["size"] == 64
    assert "lpips" in report["missing"] and "lpips" not in report["metrics"]
    assert report["methods"]["model"]["identifier"]["weights_sha256"]

    # the copy baseline's PSNR, recomputed here from the files
    from onehead.metrics.temporal import change_error

    values, changes = [], []
    for pair in read_pairs(tiny_set):
        reference, _ = open_sequence(tiny_set / pair["reference"]).views["cam00"].tensors([0])
        target, mask = open_sequence(tiny_set / pair["target"]).views["cam00"].tensors(range(3))
        values.append(psnr(reference.expand_as(target), target))
        changes.append(change_error(reference.expand_as(target), target, mask))
    copy = report["methods"]["copy_reference"]
    assert copy["mean"]["psnr"] == pytest.approx(float(torch.cat(values).mean()), abs=1e-4)
    # a still picture's flicker against the truth is the truth's own change in the head
    assert copy["mean"]["flicker_head"] == pytest.approx(float(torch.cat(changes).mean()), abs=1e-3)
    assert copy["mean"]["flicker_head"] > 0
    # the warp is the stronger floor on synthetic heads; both are scored on every frame
    assert report["methods"]["mesh_warp"]["mean"]["psnr"] > copy["mean"]["psnr"]
    for entry in report["methods"].values():
        assert set(entry["per_sequence"]) == {"cross_id000_by_id001_s00", "cross_id001_by_id000_s00"}
        assert entry["failures"]["akd"] <= 6 and entry["seconds"] >= 0
        for key in ("psnr", "ssim", "l1", "psnr_head", "ssim_head", "l1_head", "psnr_unseen", "l1_unseen"):
            assert np.isfinite(entry["mean"][key])

    from onehead.data.video import read_video

    frames, _ = read_video(tmp_path / "grid.mp4")
    assert len(frames) == 6 and frames.shape[2] >= 5 * 64  # reference, truth and three methods
    printed = capsys.readouterr().out
    assert "| copy_reference |" in printed and "missing lpips" in printed


def test_eval_rejects_folders_that_are_not_models(tiny_set, tmp_path, capsys):
    from onehead.evaluation.methods import load_method

    with pytest.raises(CheckpointError, match="not an onehead model folder"):
        load_method(tmp_path)
    (tmp_path / "animator.json").write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(CheckpointError, match="kind 'something-else' is not a onehead model family .known: onehead-animator"):
        load_method(tmp_path)
    assert main(["eval", "--data", str(tiny_set), "--task", "self", "--out", str(tmp_path / "r.json"),
                 "--model", str(tmp_path / "missing")]) == 2
    assert "model folder does not exist" in capsys.readouterr().err


def test_motion_metrics_on_a_real_face_and_its_shifted_copy(head):
    """mediapipe and the tracker on the astronaut at 128 px: the same frames agree exactly; a copy
    shifted right by 4 px moves the keypoints by about 4 px, and barely changes expression and pose."""
    import cv2

    from onehead.data.samples import astronaut
    from onehead.metrics.motion import motion_metrics, track_for_metrics

    face = cv2.resize(astronaut()[20:276, 110:366], (128, 128), interpolation=cv2.INTER_AREA)
    frames = np.stack([face, face])
    shifted = np.stack([np.roll(face, 4, axis=1)] * 2)
    truth, scale = track_for_metrics(frames, head)
    same = motion_metrics(*track_for_metrics(frames, head)[:1], truth, 2, scale, scale)
    np.testing.assert_allclose(same["akd"], 0, atol=1e-6)
    np.testing.assert_allclose(same["apd"], 0, atol=1e-6)
    moved_tracking, moved_scale = track_for_metrics(shifted, head)
    moved = motion_metrics(moved_tracking, truth, 2, moved_scale, scale)
    assert np.all((moved["akd"] > 3.0) & (moved["akd"] < 5.0)), moved["akd"]
    assert np.all(moved["pose_angle_deg"] < 3.0) and np.all(moved["aed"] < 0.2)
    blank = motion_metrics(None, truth, 2)  # no face in the output: NaN, counted as failures
    assert np.isnan(blank["akd"]).all() and np.isnan(blank["apd"]).all()


def test_eval_on_a_file_instead_of_a_dataset_folder_says_so(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a dataset")
    assert main(["eval", "--data", str(notes), "--task", "self", "--out", str(tmp_path / "r.json"),
                 "--model", "none", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.txt: is a file; a dataset is a folder" in err[0]


def test_unseen_mask_is_what_the_reference_hides(head, tiny_set):
    """The head pixels a warp cannot show: none when the target is the reference frame itself; in a
    cross pair, exactly the covered pixels the warp does not see, and only inside the target's head."""
    from onehead.evaluation.run import unseen_mask
    from onehead.evaluation.tasks import evaluation_items
    from onehead.pipelines.reenactment import head_masks

    item = next(i for i in evaluation_items(tiny_set, "self"))
    item.frames = [0]  # the reference frame itself
    assert unseen_mask(item, 64, head).sum() == 0
    cross = evaluation_items(tiny_set, "cross")[0]
    unseen = unseen_mask(cross, 64, head)
    assert unseen.shape == (3, 1, 64, 64) and unseen.sum() > 0
    covered = head_masks(head, cross.target.tracking.select(cross.frames), 64)
    assert bool((unseen <= covered).all())
