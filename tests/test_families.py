"""The family contract: every registered one-shot family saves, loads, reenacts and runs through
`onehead animate` and `onehead eval` the same way (as diffusers' tester mixins do for its models)."""

from __future__ import annotations

import json

import pytest
import torch

from onehead.cli import main
from onehead.errors import CheckpointError
from onehead.pipelines import Animator
from onehead.pipelines.families import families

SIZE = 32


def _small_gaussian_diffusion(head):
    from onehead.models.gaussian_diffusion import GaussianDiffusionConfig, InferenceSettings
    from onehead.pipelines.gaussian_diffusion import GaussianDiffusionAnimator

    unet = dict(layers_per_block=1, block_out_channels=(16, 32, 32),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    config = GaussianDiffusionConfig.from_preset("tiny", resolution=SIZE, uv_resolution=32, unet=unet,
                                                 guider_channels=(8, 16), warp_guidance=True)
    animator = GaussianDiffusionAnimator.from_config(config, InferenceSettings(steps=2, window=2, window_overlap=1),
                                                     head)
    with torch.no_grad():  # as after some training: the zero-initialised outputs act
        animator.model.pose_guider.out.weight.normal_(0, 0.05)
    return animator


def _small_triplane(head):
    from onehead.models.triplane import TriplaneConfig, TriplaneSettings
    from onehead.pipelines.triplane import TriplaneAnimator

    config = TriplaneConfig.from_preset("tiny", resolution=SIZE, render_resolution=16, plane_resolution=16,
                                        plane_channels=8, feature_channels=8, lift_resolution=16,
                                        canonical_down=(16, 32), canonical_up=(32,), appearance_down=(16,),
                                        appearance_up=(16,), expression_resolution=16, expression_down=(16,),
                                        expression_up=(16,), latent_channels=16, sr_channels=16)
    return TriplaneAnimator.from_config(config, TriplaneSettings(coarse=8, fine=8), head)


# a small random model of every registered one-shot family
SMALL_MODELS = {"onehead-animator": _small_gaussian_diffusion, "onehead-triplane": _small_triplane}
ONE_SHOT = [family.kind for family in families("one-shot")]


def test_every_registered_family_has_a_contract_entry():
    assert set(ONE_SHOT) <= set(SMALL_MODELS), "add a small model of the new family to SMALL_MODELS"


@pytest.fixture(scope="module")
def dataset(head, tmp_path_factory):
    from onehead.data.synthetic import SynthOptions, synthesize

    out = tmp_path_factory.mktemp("family-data")
    synthesize(head, out, SynthOptions(identities=2, sequences=1, frames=3, views=1, size=SIZE, texture_size=64,
                                       cross_pairs=True, progress=False))
    return out


@pytest.fixture(scope="module", params=ONE_SHOT)
def saved(request, head, tmp_path_factory):
    """(the model, its saved folder)."""
    torch.manual_seed(0)
    model = SMALL_MODELS[request.param](head)
    folder = tmp_path_factory.mktemp(request.param) / "model"
    assert model.save_pretrained(folder) == folder
    return model, folder


@pytest.fixture(scope="module")
def inputs(head, dataset):
    from onehead.data.sequence import open_sequence
    from onehead.pipelines.reenactment import driving_motion, prepare_reference

    reference_view = open_sequence(dataset / "id000_s00").views["cam00"]
    driving_view = open_sequence(dataset / "id001_s00").views["cam00"]
    reference = prepare_reference(reference_view.frame(0), head, SIZE, reference_view.tracking)
    motion = driving_motion(driving_view.tracking, reference, head, SIZE, camera="driving")
    return reference, motion


def test_round_trip_is_bit_exact(saved, inputs):
    model, folder = saved
    loaded = Animator.from_pretrained(folder)
    assert type(loaded) is type(model) and loaded.kind == model.kind
    original, restored = model.model.state_dict(), loaded.model.state_dict()
    assert original.keys() == restored.keys()
    for key, value in original.items():
        assert torch.equal(value, restored[key]), key
    assert loaded.describe() == model.describe()
    a, b = model.reenact(*inputs).frames, loaded.reenact(*inputs).frames
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_reenact_gives_one_frame_per_motion_frame(saved, inputs):
    model, _ = saved
    reference, motion = inputs
    out = model.reenact(reference, motion)
    frames = motion.tracking.num_frames
    assert out.frames.shape == (frames, 3, model.resolution, model.resolution)
    assert out.frames.min() >= 0 and out.frames.max() <= 1 and out.frames.device.type == "cpu"
    if out.control_maps is not None:
        assert out.control_maps.shape[0] == frames and out.control_maps.shape[-2:] == out.frames.shape[-2:]


def test_a_wrong_kind_is_a_checkpoint_error(saved, tmp_path):
    import shutil

    _, folder = saved
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    for family in families():
        config = broken / family.config_file
        if config.is_file():
            config.write_text(json.dumps({**json.loads(config.read_text()), "kind": "no-such-family"}))
    with pytest.raises(CheckpointError, match="no-such-family"):
        Animator.from_pretrained(broken)
    with pytest.raises(CheckpointError, match="does not exist"):
        Animator.from_pretrained(tmp_path / "absent")


def test_animate_cli_end_to_end(saved, dataset, tmp_path):
    from onehead.data.video import read_video

    _, folder = saved
    reference_view = dataset / "id000_s00" / "cam00"
    out = tmp_path / "out.mp4"
    assert main(["animate", "--model", str(folder), "--reference", str(reference_view / "frames" / "000000.png"),
                 "--reference-tracking", str(reference_view / "tracking.npz"), "--driving-camera",
                 "--driving", str(dataset / "id001_s00" / "cam00" / "tracking.npz"), "--out", str(out),
                 "--quiet"]) == 0
    frames, _ = read_video(out)
    assert frames.shape == (3, SIZE, SIZE, 3)


def test_eval_cli_end_to_end(saved, dataset, tmp_path):
    _, folder = saved
    report = tmp_path / "report.json"
    assert main(["eval", "--data", str(dataset), "--task", "cross", "--model", str(folder), "--out", str(report),
                 "--no-motion-metrics", "--quiet"]) == 0
    entry = json.loads(report.read_text())["methods"]["model"]
    assert entry["identifier"]["kind"] in ONE_SHOT and entry["identifier"]["weights_sha256"]
    assert entry["mean"]["psnr"] > 5


def test_a_given_tracking_of_a_wide_photo_crops_it_like_tracking_does(head):
    """--reference-tracking on a photo that is not a square frame in onehead's framing: the face is
    cropped around its tracked landmarks (not the whole photo squashed to the model's size)."""
    import numpy as np

    from onehead.data.samples import astronaut
    from onehead.pipelines.reenactment import prepare_reference
    from onehead.tracking.tracker import TrackOptions, track_image

    wide = np.pad(astronaut(), ((0, 0), (256, 256), (0, 0)), mode="edge")  # 512 x 1024, the face in the middle
    tracking = track_image(wide, head, TrackOptions(progress=False))
    given = prepare_reference(wide, head, 64, tracking)
    tracked = prepare_reference(wide, head, 64)
    assert given.image.shape == (64, 64, 3)
    np.testing.assert_allclose(given.tracking.landmarks68, tracked.tracking.landmarks68, atol=0.5)
    extent = given.tracking.landmarks68[0].max(0) - given.tracking.landmarks68[0].min(0)
    assert extent.max() > 64 / 2.3 * 0.9  # the face fills the crop's framing, not a squashed sliver
    # a known person mask of the photo is framed with it (here a blurred channel of the photo itself)
    import cv2

    known = cv2.GaussianBlur(wide[..., 1].astype(np.float32) / 255, (0, 0), 8)
    masked = prepare_reference(wide, head, 64, tracking, foreground=known)
    own = cv2.GaussianBlur(masked.image[..., 1].astype(np.float32) / 255, (0, 0), 1)
    assert masked.foreground.shape == (64, 64) and np.abs(masked.foreground - own).mean() < 0.08  # flipped: 0.26


def test_model_name_triplane_is_the_embedded_tri_plane_model(head, tmp_path, monkeypatch, capsys):
    """`--model triplane` (no such path) names the embedded tri-plane folder; an install without one
    says so in one line (exit code 2)."""
    import onehead.pipelines.triplane as triplane
    from onehead.cli import _model_folder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(triplane, "EMBEDDED_TRIPLANE_DIR", tmp_path / "absent")
    assert main(["animate", "--reference", "astronaut", "--driving", "carphone", "--model", "triplane",
                 "--out", str(tmp_path / "a.mp4")]) == 2
    assert "no embedded tri-plane model" in capsys.readouterr().err
    _small_triplane(head).save_pretrained(tmp_path / "shipped")
    monkeypatch.setattr(triplane, "EMBEDDED_TRIPLANE_DIR", tmp_path / "shipped")
    assert _model_folder("triplane") == str(tmp_path / "shipped") and _model_folder("other") == "other"
    assert Animator.from_pretrained(_model_folder("triplane")).kind == "onehead-triplane"
