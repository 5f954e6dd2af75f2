"""Synthetic heads: the written dataset, exact ground truth (also for cross pairs), cameras, shading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from onehead.camera import intrinsics, project
from onehead.data.sequence import open_sequence, read_pairs
from onehead.data.synthetic import (PITCH_RANGE, YAW_RANGE, Light, SynthOptions, TextureAtlas, look_at_camera,
                                    paint_albedo, random_cameras, random_identity, random_motion, render_head,
                                    synthesize)
from onehead.head import MOTION_PARAM_NAMES


@pytest.fixture(scope="module")
def dataset(head, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    options = SynthOptions(identities=2, sequences=1, frames=3, views=2, size=64, seed=5, cross_pairs=True,
                           texture_size=128, progress=False)
    summary = synthesize(head, out, options)
    return out, summary


def test_synth_writes_the_documented_format(dataset):
    out, summary = dataset
    assert summary["sequences"] == 4 and summary["pairs"] == 2 and summary["frames_rendered"] == 4 * 2 * 3
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == ["cross_id000_by_id001_s00", "cross_id001_by_id000_s00", "id000_s00", "id001_s00"]
    for name in names:
        seq = open_sequence(out / name)
        assert seq.meta.domain == "synthetic" and seq.meta.views == ["cam00", "cam01"]
        for view in seq.views.values():
            frame, mask = view.frame(0), view.mask(0)
            assert frame.shape == (64, 64, 3) and mask.shape == (64, 64)
            assert 0.05 < mask.mean() < 0.8  # a head, not an empty or full frame
            assert view.tracking.valid.all()
        # one backdrop per sequence: where no view sees the head, the views agree
        cams = list(seq.views.values())
        background = (cams[0].mask(0) == 0) & (cams[1].mask(0) == 0)
        assert background.mean() > 0.2
        np.testing.assert_array_equal(cams[0].frame(0)[background], cams[1].frame(0)[background])


def test_cross_pair_is_identity_a_with_b_motion_and_cameras(dataset):
    out, _ = dataset
    pairs = read_pairs(out)
    assert pairs[0] == {"reference": "id000_s00", "driving": "id001_s00", "target": "cross_id000_by_id001_s00"}
    for pair in pairs:
        ref = open_sequence(out / pair["reference"]).views["cam00"].tracking
        drv = open_sequence(out / pair["driving"]).views["cam01"].tracking
        tgt_seq = open_sequence(out / pair["target"])
        tgt = tgt_seq.views["cam01"].tracking
        np.testing.assert_array_equal(tgt.shape, ref.shape)
        for key in MOTION_PARAM_NAMES + ("K", "world_to_cam"):
            np.testing.assert_array_equal(getattr(tgt, key), getattr(drv, key))
        assert not np.allclose(ref.shape, drv.shape)
        assert tgt_seq.meta.identity == open_sequence(out / pair["reference"]).meta.identity


def test_ground_truth_landmarks_are_the_projected_model(dataset, head):
    out, _ = dataset
    view = open_sequence(out / "id001_s00").views["cam01"]
    t = view.tracking
    params = {k: torch.as_tensor(v) for k, v in t.head_params().items()}
    landmarks, depth = project(head(**params).landmarks68, torch.as_tensor(t.K), torch.as_tensor(t.world_to_cam))
    np.testing.assert_allclose(t.landmarks68, landmarks.numpy(), atol=1e-3)
    # and the rendered head is where the landmarks say: the centre of the eyes and mouth is on the mask
    inner = np.rint(t.landmarks68[:, 36:].mean(1)).astype(int)
    for frame, (x, y) in enumerate(inner):
        assert view.mask(frame)[y, x] > 0.5


def test_synthesis_is_deterministic(head, tmp_path):
    options = SynthOptions(identities=1, sequences=1, frames=2, views=1, size=48, seed=3, texture_size=64,
                           progress=False)
    synthesize(head, tmp_path / "a", options)
    synthesize(head, tmp_path / "b", options)
    synthesize(head, tmp_path / "c", SynthOptions(**{**options.__dict__, "seed": 4}))
    frame = lambda root: open_sequence(root / "id000_s00").views["cam00"].frame(1)  # noqa: E731
    np.testing.assert_array_equal(frame(tmp_path / "a"), frame(tmp_path / "b"))
    assert np.abs(frame(tmp_path / "a").astype(int) - frame(tmp_path / "c")).mean() > 5


def test_look_at_camera_centres_the_target():
    target = np.array([0.01, 0.02, -0.03])
    for yaw, pitch in ((0, 0), (50, -20), (-60, 45)):
        w2c = torch.as_tensor(look_at_camera(yaw, pitch, 0.9, target))[None]
        K = intrinsics(300.0, 101, 121)[None]
        pixel, depth = project(torch.as_tensor(target, dtype=torch.float32)[None, None], K, w2c)
        torch.testing.assert_close(pixel[0, 0], torch.tensor([60.0, 50.0]), atol=1e-4, rtol=0)
        assert abs(float(depth) - 0.9) < 1e-5
        rotation = w2c[0, :3, :3]
        torch.testing.assert_close(rotation @ rotation.T, torch.eye(3), atol=1e-6, rtol=0)
        assert torch.linalg.det(rotation) > 0.99
        # world up (+y) points up in the image (-y in OpenCV camera coordinates)
        assert float((rotation @ torch.tensor([0.0, 1.0, 0.0]))[1]) < 0


def test_cameras_cover_the_front_hemisphere():
    rng = np.random.default_rng(0)
    _, w2c = random_cameras(rng, 400, 64, np.zeros(3))
    centres = -np.einsum("vji,vj->vi", w2c[:, :3, :3], w2c[:, :3, 3])  # camera positions
    yaw = np.degrees(np.arctan2(centres[:, 0], centres[:, 2]))
    pitch = np.degrees(np.arcsin(centres[:, 1] / np.linalg.norm(centres, axis=1)))
    assert YAW_RANGE[0] - 1e-3 <= yaw.min() and yaw.max() <= YAW_RANGE[1] + 1e-3
    assert PITCH_RANGE[0] - 1e-3 <= pitch.min() and pitch.max() <= PITCH_RANGE[1] + 1e-3
    assert yaw.max() - yaw.min() > 100 and pitch.max() - pitch.min() > 60  # the range is used
    assert abs(yaw[0]) <= 15 and abs(pitch[0]) <= 15  # view 0 is near-frontal


def test_shading_is_lambert_plus_ambient(head):
    rng = np.random.default_rng(1)
    identity = random_identity(rng, head.num_shape, "x")
    motion = {k: v[:1] for k, v in random_motion(rng, 4, 25.0, head.num_expression).items()}
    white = torch.ones(3, 16, 16)
    K = intrinsics(220.0, 96, 96).numpy()
    w2c = look_at_camera(20, 10, 1.0, head.v_template.mean(0).numpy())
    light = Light(direction=[0.6, 0.3, 0.74], colour=[1.0, 1.0, 1.0], ambient=0.2, diffuse=0.7)
    view = render_head(head, identity.shape, motion, white, K, w2c, 96, light)
    g = view.gbuffers
    to_light = torch.as_tensor(w2c[:3, :3]) @ torch.tensor(light.direction)
    expected = (0.2 + 0.7 * (g.normals * to_light.view(1, 3, 1, 1)).sum(1).clamp(min=0)) * g.mask[:, 0]
    torch.testing.assert_close(view.rgb[:, 0], expected.clamp(0, 1), atol=1e-5, rtol=0)
    lit = view.rgb[:, 0][g.mask[:, 0] > 0]
    assert lit.max() > 0.8 and lit.min() < 0.3  # the light really varies over the head


def test_albedo_regions(head):
    atlas = TextureAtlas(head, 128)
    rng = np.random.default_rng(2)
    identity = random_identity(rng, head.num_shape, "x")
    look = identity.appearance
    look.bald, look.beard, look.glasses, look.headband = False, "none", None, None
    albedo = paint_albedo(atlas, look)
    assert albedo.shape == (3, 128, 128) and 0 <= albedo.min() and albedo.max() <= 1

    def colour_at(point):
        d = (atlas.position - torch.as_tensor(point)).norm(dim=-1)
        d[~atlas.valid] = float("inf")
        r, c = divmod(int(torch.argmin(d)), 128)
        return albedo[:, r, c]

    lm = atlas.landmarks
    top = head.v_template[torch.argmax(head.v_template[:, 1])]
    assert torch.allclose(colour_at(top), torch.tensor(look.hair), atol=0.2)  # hair on top
    cheek = (lm[3] + lm[31]) / 2
    assert torch.allclose(colour_at(cheek), torch.tensor(look.skin), atol=0.15)
    pupil = head.v_template[head.pupil_ids[0]]
    assert colour_at(pupil).max() < 0.15  # pupils are black
    lip = lm[51]
    assert torch.dist(colour_at(lip), torch.tensor(look.lips)) < torch.dist(colour_at(lip), torch.tensor(look.skin))


def test_motion_is_smooth_and_blinks(head):
    rng = np.random.default_rng(0)
    motion = random_motion(rng, 250, 25.0, head.num_expression)
    assert motion["expression"].shape == (250, head.num_expression)
    for key, bound in (("global_pose", 0.05), ("translation", 0.005), ("jaw_pose", 0.12)):
        step = np.abs(np.diff(motion[key], axis=0)).max()
        assert step < bound, (key, step)  # no jumps between frames at 25 fps (syllables are fast)
    assert motion["expression"][:, 6].max() > 0.9  # at least one full blink in 10 s
    assert math.isclose(float(motion["jaw_pose"][:, 1:].max()), 0.0)
    assert motion["jaw_pose"][:, 0].min() >= 0  # the jaw never opens backwards


def test_bad_synth_options(head, tmp_path):
    from onehead.errors import ConfigError

    with pytest.raises(ConfigError):
        synthesize(head, tmp_path, SynthOptions(frames=0, progress=False))
    with pytest.raises(ConfigError, match="cross-pairs"):
        synthesize(head, tmp_path, SynthOptions(identities=1, cross_pairs=True, progress=False))
