"""The person-specific DiffusionAvatars family (paper 000, `onehead-avatar`) on CPU.

Its pieces against hand computations (the canonical-coordinate buffer, the TriPlane lookup, the
crop that keeps the camera aligned), the expression attention's identity at initialisation, which
parameters train, the model folder (bit-exact round trip, clear errors), exact resume through the
training loop, and the person protocol (render, transfer, orbit, interpolation).

A smaller-than-tiny avatar (32 px, 8x8 latents, a narrow UNet) on a synthetic studio person
(1 identity x 2 sequences x 3 frames x 2 views at 32 px). The whole file runs in well under a minute.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from onehead.camera import default_world_to_cam, intrinsics, project
from onehead.errors import CheckpointError, ConfigError

SIZE = 32
UNET = {"layers_per_block": 1, "block_out_channels": [16, 32, 32],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "cross_attention_dim": 32, "attention_head_dim": 8, "norm_num_groups": 8}
# smaller than the tiny preset: 32 px frames (pixel_factor 4: 8x8 latents), 8x8 TriPlanes of 4 channels
ARCHITECTURE = {"resolution": SIZE, "triplane_resolution": 8, "triplane_channels": 4,
                "conditioning_channels": (8, 8, 8), "unet": UNET}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def person(head, tmp_path_factory) -> Path:
    """A synthetic studio capture of one person: 2 sequences x 2 views x 3 frames at 32 px."""
    from onehead.data.synthetic import SynthOptions, synthesize

    out = tmp_path_factory.mktemp("person") / "synthetic"
    synthesize(head, out, SynthOptions(identities=1, sequences=2, frames=3, views=2, size=SIZE, texture_size=64,
                                       studio=True, backgrounds=False, progress=False))
    return out


def small_config(**overrides):
    from onehead.models.person_avatar import PersonAvatarConfig

    return PersonAvatarConfig.from_preset("tiny", **{**ARCHITECTURE, **overrides})


def wake(model) -> None:
    """Give the zero-initialised outputs (ControlNet's zero convolutions, the expression layers'
    to_out) small random weights, as after some training, so that every input acts."""
    controlnet = model.controlnet
    outputs = [controlnet.controlnet_cond_embedding.conv_out, *controlnet.controlnet_down_blocks,
               controlnet.controlnet_mid_block, *(layer.to_out for layer in model.expression_layers.values())]
    with torch.no_grad():
        for module in outputs:
            module.weight.normal_(0, 0.05)


def frames_of(person: Path, views=("cam00",), frames: slice | None = None):
    from onehead.data.datasets import FrameDataset, select_frames

    return FrameDataset(select_frames(person, list(views), frames), SIZE)


def avatar_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder, by name."""
    from safetensors.torch import load_file

    return dict(load_file(folder / "avatar.safetensors"))


@pytest.fixture(scope="module")
def avatar(head, person):
    """A small DiffusionAvatar of the synthetic person (its shape and home view), woken up."""
    from onehead.models.person_avatar import AvatarSettings
    from onehead.pipelines.diffusion_avatar import DiffusionAvatar, build_model
    from onehead.data.datasets import training_record
    from onehead.training.person_avatar import set_person

    torch.manual_seed(0)
    model = build_model(small_config(), head)
    dataset = frames_of(person)
    set_person(model, dataset)
    wake(model)
    return DiffusionAvatar(model.eval(), AvatarSettings(steps=2, batch=2), training_record(dataset.keys))


@pytest.fixture(scope="module")
def saved(avatar, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("avatar") / "model"
    assert avatar.save_pretrained(folder) == folder
    return folder


@pytest.fixture(scope="module")
def tracking(person):
    """The person's own tracking: 3 frames of cam00 at 32 px."""
    from onehead.data.tracking_file import load_tracking

    return load_tracking(person / "id000_s00" / "cam00" / "tracking.npz")


@pytest.fixture(scope="module")
def batch(person):
    """Two training items (FrameDataset), collated: frame 0 of cam00 and frame 1 of cam01."""
    dataset = frames_of(person, views=("cam00", "cam01"))
    return torch.utils.data.default_collate([dataset[0], dataset[4]])


# =========================================================================== the G-buffer and the TriPlanes

def posed_head(head, global_pose, seed=0):
    """Head-model parameters (1, ...) with a random identity, a non-neutral expression and an open jaw."""
    g = torch.Generator().manual_seed(seed)
    return {"shape": torch.randn(1, head.num_shape, generator=g),
            "expression": torch.randn(1, head.num_expression, generator=g),
            "jaw_pose": torch.tensor([[0.25, 0.0, 0.0]]), "global_pose": torch.tensor([global_pose]),
            "translation": torch.tensor([[0.0, 0.01, 0.0]])}


def close_camera(size=48):
    """A frontal camera at 1 m that the head fills."""
    return intrinsics(3.2 * size, size, size)[None], default_world_to_cam(1.0)[None]


def test_canonical_buffer_is_the_template_point_of_the_visible_surface(head):
    from onehead.head.model import SurfacePoints
    from onehead.render.gbuffers import render_gbuffers

    size = 48
    K, world_to_cam = close_camera(size)
    with torch.no_grad():
        vertices = head(**posed_head(head, [0.15, 0.5, -0.1])).vertices
        g = render_gbuffers(head, vertices, K, world_to_cam, size, size)
    covered = g.fragments.mask[0]
    assert 0.2 < covered.float().mean() < 0.95, "the head covers part of the frame"
    face, bary = g.fragments.face_index[0][covered], g.fragments.bary[0][covered]  # (P,), (P, 3)
    canonical = g.canonical[0].permute(1, 2, 0)[covered]  # (P, 3)

    # the barycentric interpolation of the template over the visible face
    expected = (head.v_template[head.faces[face]] * bary[..., None]).sum(-2)
    torch.testing.assert_close(canonical, expected, atol=1e-6, rtol=0)
    low, high = head.v_template.min(0).values, head.v_template.max(0).values
    assert ((canonical >= low - 1e-6) & (canonical <= high + 1e-6)).all()
    assert (g.canonical[0][:, ~covered] == 0).all(), "zeros on the background"
    assert not torch.allclose(canonical, (vertices[0][head.faces[face]] * bary[..., None]).sum(-2), atol=1e-3), \
        "the buffer holds template points, not posed ones"

    # independently, through the head model's own surface points: that face and those weights are
    # the surface the pixel sees once posed (it projects onto the pixel centre, at the pixel's depth),
    # and the same surface point of the unposed mean head is the canonical value
    points = SurfacePoints.on(head, face, bary)
    with torch.no_grad():
        seen = head(**posed_head(head, [0.15, 0.5, -0.1]), points=points).points
        rest = head(points=points).points
    pixels, depth = project(seen, K, world_to_cam)
    rows, cols = torch.nonzero(covered, as_tuple=True)
    torch.testing.assert_close(pixels[0], torch.stack([cols, rows], -1).float(), atol=2e-3, rtol=0)
    torch.testing.assert_close(depth[0], g.depth[0, 0][covered], atol=1e-5, rtol=0)
    torch.testing.assert_close(canonical, rest[0], atol=1e-6, rtol=0)


def test_canonical_buffer_does_not_move_with_the_pose(head):
    """Turning the head and the camera with it gives the same picture: the same canonical buffer,
    though every posed vertex moved."""
    from onehead.render.gbuffers import render_gbuffers

    size = 48
    K, world_to_cam = close_camera(size)
    with torch.no_grad():
        a = head(**posed_head(head, [0.0, 0.0, 0.0])).vertices[0]
        b = head(**posed_head(head, [0.3, -0.6, 0.2])).vertices[0]
    # the rigid motion a -> b (Kabsch), and the camera that follows it
    a64, b64 = a.double(), b.double()
    ca, cb = a64.mean(0), b64.mean(0)
    u, _, vt = torch.linalg.svd((b64 - cb).T @ (a64 - ca))
    rotation = u @ torch.diag(torch.tensor([1.0, 1.0, torch.linalg.det(u @ vt).item()], dtype=torch.float64)) @ vt
    motion = torch.eye(4, dtype=torch.float64)
    motion[:3, :3], motion[:3, 3] = rotation, cb - rotation @ ca
    assert (a64 @ rotation.T + motion[:3, 3] - b64).abs().max() < 1e-5, "the global pose is a rigid motion"
    assert (a - b).abs().max() > 0.02
    follow = (world_to_cam[0].double() @ torch.linalg.inv(motion)).float()[None]

    first = render_gbuffers(head, a[None], K, world_to_cam, size, size)
    second = render_gbuffers(head, b[None], K, follow, size, size)
    both = first.fragments.mask & second.fragments.mask
    assert both.sum() >= 0.99 * first.fragments.mask.sum()
    torch.testing.assert_close(first.canonical.permute(0, 2, 3, 1)[both], second.canonical.permute(0, 2, 3, 1)[both],
                               atol=1e-4, rtol=0)


def test_template_fits_inside_the_triplanes(head):
    assert head.v_template.abs().max() < small_config().triplane_bounds


def bilinear(plane: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """A (C, R, R) plane at continuous texel coordinates (x: column, y: row; texel centres at
    integers), zero outside, by hand."""
    C, rows, cols = plane.shape
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    out = torch.zeros(C, dtype=plane.dtype)
    for j, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for i, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= i < cols and 0 <= j < rows:
                out += wx * wy * plane[:, j, i]
    return out


def test_triplane_lookup_by_hand():
    from onehead.render.volume import triplane_features

    C, R, bounds = 2, 4, 0.5
    planes = torch.arange(3 * C * R * R, dtype=torch.float64).reshape(1, 3, C, R, R) ** 1.5  # no plane is linear
    to_world = lambda texel: ((2 * texel + 1) / R - 1) * bounds  # noqa: E731  texel centre -> world coordinate

    # a point at the centre of texel (x 1, y 2, z 3): xy reads [row 2, col 1], xz [row 3, col 1], yz [row 3, col 2]
    centre = torch.tensor([[[to_world(1), to_world(2), to_world(3)]]], dtype=torch.float64)
    out = triplane_features(planes, centre, bounds, reduce="concat")
    assert out.shape == (1, 1, 3 * C)
    p = planes[0]
    torch.testing.assert_close(out[0, 0], torch.cat([p[0, :, 2, 1], p[1, :, 3, 1], p[2, :, 3, 2]]))

    # a point between texels: x at texel 1.25, y at 0.5, z at 2.75 (inside every plane)
    between = torch.tensor([[[to_world(1.25), to_world(0.5), to_world(2.75)]]], dtype=torch.float64)
    out = triplane_features(planes, between, bounds, reduce="concat")
    expected = torch.cat([bilinear(p[0], 1.25, 0.5), bilinear(p[1], 1.25, 2.75), bilinear(p[2], 0.5, 2.75)])
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(triplane_features(planes, between, bounds), expected.view(3, C).sum(0)[None, None])

    # half a texel beyond the edge: half of the edge texel (zero padding); far outside: nothing
    edge = torch.tensor([[[to_world(-0.5), to_world(0), to_world(0)], [3 * bounds, 0, 0]]], dtype=torch.float64)
    out = triplane_features(planes, edge, bounds, reduce="concat")
    torch.testing.assert_close(out[0, 0, :C], 0.5 * p[0, :, 0, 0])
    assert (out[0, 1, : 2 * C] == 0).all()


# =========================================================================== expression attention

def test_expression_attention_is_the_identity_at_initialisation():
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import Attention

    from onehead.models.expression_attention import (ExpressionAttention, ExpressionTokens,
                                                     attach_expression_attention)

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, **UNET).eval()
    plain = copy.deepcopy(unet)
    tokens = ExpressionTokens()
    layers = attach_expression_attention(unet, tokens)

    cross = [name for name, module in unet.named_modules() if isinstance(module, Attention) and name.endswith("attn2")]
    in_blocks = [name for name in cross if name.startswith(("down_blocks", "up_blocks"))]
    assert any(name.startswith("mid_block") for name in cross), "the UNet has a mid-block cross-attention"
    assert len(layers) == len(in_blocks) == 6
    attached = [name for name, p in unet.attn_processors.items() if isinstance(p, ExpressionAttention)]
    assert sorted(attached) == sorted(f"{name}.processor" for name in in_blocks), "down and up blocks only"
    assert unet.state_dict().keys() == plain.state_dict().keys(), "the UNet's own weights stay its own"

    g = torch.Generator().manual_seed(1)
    latents, context = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 1, 32, generator=g)
    timesteps = torch.tensor([10, 700])
    tokens.value = torch.randn(2, 4, 32, generator=g)

    def output(model):
        with torch.no_grad():
            return model(latents, timesteps, encoder_hidden_states=context).sample

    reference = output(plain)
    torch.testing.assert_close(output(unet), reference, atol=1e-6, rtol=0)
    with torch.no_grad():
        for layer in layers.values():
            layer.to_out.weight.normal_(0, 0.1)
    assert (output(unet) - reference).abs().max() > 1e-3, "trained expression layers change the output"
    tokens.value = None
    torch.testing.assert_close(output(unet), reference, atol=1e-6, rtol=0)  # no tokens: switched off


# =========================================================================== what trains

def test_set_trainable_selects_the_trainable_parts(head):
    from onehead.pipelines.diffusion_avatar import build_model

    for train_unet in (True, False):
        model = build_model(small_config(train_unet=train_unet), head)
        model.set_trainable()
        parts = model.trainable_parts()
        assert set(parts) == ({"controlnet", "features", "unet"} if train_unet else {"controlnet", "features"})
        chosen = {id(p) for params in parts.values() for p in params}
        assert chosen == {id(p) for p in model.parameters() if p.requires_grad}
        assert sum(len(params) for params in parts.values()) == len(chosen), "no parameter in two parts"
        assert all(p.requires_grad == train_unet for p in model.unet.parameters())
        assert not any(b.requires_grad for b in model.head.buffers())
        assert all(p.requires_grad for p in (model.triplanes, model.ambient, model.context))
        assert all(p.requires_grad for p in model.expression_layers.parameters())


@pytest.mark.parametrize("train_unet", [True, False])
def test_one_backward_reaches_exactly_the_trainable_parts(head, batch, train_unet):
    from onehead.pipelines.diffusion_avatar import build_model
    from onehead.training.person_avatar import avatar_loss

    torch.manual_seed(0)
    model = build_model(small_config(train_unet=train_unet), head)
    wake(model)
    model.set_trainable()
    loss = avatar_loss(model, batch, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()

    def reached(p):
        return p.grad is not None and p.grad.abs().sum() > 0

    assert reached(model.triplanes) and reached(model.ambient)
    assert reached(model.controlnet.controlnet_cond_embedding.conv_in.weight)
    assert reached(model.expression_encoder.weight)
    for layer in model.expression_layers.values():
        assert reached(layer.to_out.weight) and reached(layer.to_k.weight) and reached(layer.to_v.weight)
    assert all(b.grad is None for b in model.head.buffers()) and not list(model.head.parameters())
    unet = list(model.unet.parameters())
    if train_unet:
        assert reached(model.unet.conv_in.weight) and reached(model.unet.conv_out.weight)
    else:
        assert all(p.grad is None for p in unet)


def test_features_learn_a_hundred_times_faster(avatar):
    from onehead.training.config import TrainConfig
    from onehead.training.loop import build_optimizer
    from onehead.training.person_avatar import FEATURE_LR_RATIO, PersonAvatarFamily

    train = TrainConfig(learning_rate=2e-4)
    model = avatar.model
    groups = PersonAvatarFamily().parameter_groups(model, train)
    rates = {group["name"]: group["lr"] for group in build_optimizer(groups, train).param_groups}
    assert FEATURE_LR_RATIO == 100
    assert rates == pytest.approx({"controlnet": 2e-4, "unet": 2e-4, "features": 2e-2})
    features = next(g for g in groups if g.name == "features")
    assert set(features.params) == {"triplanes", "ambient"} and features.weight_decay == 0.0
    named = dict(model.named_parameters())
    assert all(named[name] is p for g in groups for name, p in g.params.items()), "groups name their parameters"


# =========================================================================== crops keep the camera aligned

def test_crop_and_resize_moves_the_camera_with_the_pixels(head, tracking):
    from onehead.camera import scale_intrinsics
    from onehead.training.person_avatar import crop_and_resize

    K = scale_intrinsics(torch.as_tensor(tracking.K[:2]), tuple(int(v) for v in tracking.image_size), (SIZE, SIZE))
    world_to_cam = torch.as_tensor(tracking.world_to_cam[:2])
    zoom = torch.tensor([2.0, 1.6])
    corner = torch.tensor([[4.25, 6.75], [3.1, 0.4]])  # (x, y) of each crop's top-left edge, in pixels
    image = torch.zeros(2, 1, SIZE, SIZE)
    image[0, 0, 12, 9] = 1.0  # row 12, column 9
    cropped, new_K = crop_and_resize(image, K, zoom, corner)
    assert cropped.shape == image.shape

    # the bright pixel lands where the crop sends its centre: x = 2 (9 + 0.5 - 4.25) - 0.5 = 10, y = 11
    assert torch.nonzero(cropped[0, 0] == cropped[0, 0].max()).tolist() == [[11, 10]]
    assert cropped[0, 0, 11, 10] == pytest.approx(1.0, abs=1e-5)

    with torch.no_grad():
        params = {k: torch.as_tensor(v) for k, v in tracking.head_params(slice(0, 2)).items()}
        vertices = head(**params).vertices[:, ::97]
    before, _ = project(vertices, K, world_to_cam)
    after, _ = project(vertices, new_K, world_to_cam)
    expected = zoom[:, None, None] * (before + 0.5 - corner[:, None]) - 0.5
    torch.testing.assert_close(after, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(new_K[:, 2], K[:, 2])


# =========================================================================== the model folder

def test_round_trip_is_bit_exact(avatar, saved, tracking):
    from onehead.pipelines.diffusion_avatar import DiffusionAvatar

    loaded = DiffusionAvatar.from_pretrained(saved)
    original, restored = avatar.model.state_dict(), loaded.model.state_dict()
    assert original.keys() == restored.keys()
    for key, value in original.items():
        assert torch.equal(value, restored[key]), key
    assert loaded.settings == avatar.settings and loaded.model.config == avatar.model.config
    assert loaded.training_data == json.loads(json.dumps(avatar.training_data))
    assert loaded.describe() == avatar.describe()
    assert torch.equal(loaded.render(tracking), avatar.render(tracking))
    assert DiffusionAvatar.from_pretrained(saved, steps=1, seed=5).settings.steps == 1
    home, restored_home = avatar.home_tracking(), loaded.home_tracking()
    assert np.abs(home.global_pose).sum() > 0 and np.abs(home.shape).sum() > 0, "the person's own pose and shape"
    for name in ("shape", "global_pose", "translation", "K", "world_to_cam"):
        np.testing.assert_array_equal(getattr(restored_home, name), getattr(home, name), err_msg=name)
    record = json.loads((saved / "avatar.json").read_text())
    assert record["kind"] == "onehead-avatar" and record["model"]["sd_path"] is None
    assert not [name for name in avatar_weights(saved) if name.startswith("head.")], "the head model is rebuilt"
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")], "no temporary folder is left"


def test_broken_folders_are_checkpoint_errors(saved, tmp_path):
    from onehead.pipelines.diffusion_avatar import DiffusionAvatar

    with pytest.raises(CheckpointError, match="does not exist"):
        DiffusionAvatar.from_pretrained(tmp_path / "absent")

    truncated = tmp_path / "truncated"
    shutil.copytree(saved, truncated)
    weights = truncated / "avatar.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        DiffusionAvatar.from_pretrained(truncated)

    weights.unlink()
    with pytest.raises(CheckpointError, match="avatar.safetensors is missing"):
        DiffusionAvatar.from_pretrained(truncated)

    garbled = tmp_path / "garbled"
    shutil.copytree(saved, garbled)
    (garbled / "avatar.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        DiffusionAvatar.from_pretrained(garbled)

    other = tmp_path / "other"
    shutil.copytree(saved, other)
    record = json.loads((other / "avatar.json").read_text())
    (other / "avatar.json").write_text(json.dumps({**record, "model": {**record["model"], "triplane_channels": 8}}))
    with pytest.raises(CheckpointError, match="does not fit"):
        DiffusionAvatar.from_pretrained(other)


def test_an_animator_folder_is_not_an_avatar(head, tmp_path):
    from onehead.models.gaussian_diffusion import GaussianDiffusionConfig
    from onehead.pipelines import Animator, PersonAvatar
    from onehead.pipelines.diffusion_avatar import DiffusionAvatar
    from onehead.pipelines.gaussian_diffusion import GaussianDiffusionAnimator

    config = GaussianDiffusionConfig.from_preset("tiny", resolution=SIZE, uv_resolution=32, unet=UNET,
                                                 guider_channels=(8, 16))
    folder = GaussianDiffusionAnimator.from_config(config, head=head).save_pretrained(tmp_path / "animator")
    assert isinstance(Animator.from_pretrained(folder), GaussianDiffusionAnimator)
    for loader in (DiffusionAvatar, PersonAvatar):
        with pytest.raises(CheckpointError, match="a one-shot model .animator.json., not a person model; "
                                                  "load it with Animator.from_pretrained") as error:
            loader.from_pretrained(folder)
        assert str(folder) in str(error.value) and "\n" not in str(error.value)


# =========================================================================== the person protocol

def test_person_protocol(saved, avatar, tracking, person):
    from onehead.data.tracking_file import load_tracking
    from onehead.pipelines import PersonAvatar
    from onehead.pipelines.diffusion_avatar import DiffusionAvatar

    loaded = PersonAvatar.from_pretrained(saved)
    assert type(loaded) is DiffusionAvatar and loaded.kind == "onehead-avatar"
    frames = loaded.render(tracking)
    assert frames.shape == (3, 3, SIZE, SIZE) and frames.dtype == torch.float32 and frames.device.type == "cpu"
    assert frames.min() >= 0 and frames.max() <= 1 and frames.std() > 0
    assert torch.equal(loaded.render(tracking, seed=0), frames), "the same seed, the same frames"
    assert not torch.equal(loaded.render(tracking, seed=1), frames)

    K, world_to_cam = loaded.home_camera()
    single = loaded.render(tracking, camera=(K, world_to_cam))
    per_frame = loaded.render(tracking, camera=(np.repeat(K[None], 3, 0), np.repeat(world_to_cam[None], 3, 0)))
    assert single.shape == frames.shape and torch.equal(single, per_frame)
    with pytest.raises(ConfigError, match="2 cameras for 3 frames"):
        loaded.render(tracking, camera=(np.repeat(K[None], 2, 0), np.repeat(world_to_cam[None], 2, 0)))

    # another sequence's expressions on the avatar's own shape, at its home view
    driving = load_tracking(person / "id000_s01" / "cam01" / "tracking.npz")
    driving = dataclasses.replace(driving, shape=np.random.default_rng(0).normal(size=driving.shape.shape))
    moved = loaded.transfer(driving)
    assert moved.num_frames == driving.num_frames and moved.head_model == "basic"
    np.testing.assert_allclose(moved.shape, avatar.model.shape.numpy(), atol=0)
    np.testing.assert_allclose(moved.expression, driving.expression[:, : avatar.head.num_expression], atol=0)
    np.testing.assert_allclose(moved.K, np.repeat(K[None], 3, 0), atol=0)
    np.testing.assert_allclose(moved.world_to_cam, np.repeat(world_to_cam[None], 3, 0), atol=0)
    assert loaded.render(moved).shape == (3, 3, SIZE, SIZE)

    with pytest.raises(ConfigError, match="'flame' head model"):
        loaded.render(dataclasses.replace(tracking, head_model="flame"))


def test_orbit_cameras_circle_the_center(avatar):
    from onehead.pipelines.diffusion_avatar import orbit_cameras

    home = avatar.home_camera()
    center = np.array([0.0, 0.02, 0.01])
    K, world_to_cam = orbit_cameras(home, count=8, degrees=30, center=center)
    assert K.shape == (8, 3, 3) and world_to_cam.shape == (8, 4, 4)
    np.testing.assert_allclose(K, np.repeat(home[0][None], 8, 0))
    np.testing.assert_allclose(world_to_cam[0], home[1], atol=1e-6)  # angle 0 first: the home view
    centres = np.stack([np.linalg.inv(m.astype(np.float64))[:3, 3] for m in world_to_cam])
    distances = np.linalg.norm(centres - center, axis=1)
    np.testing.assert_allclose(distances, distances[0], rtol=1e-5)
    assert np.ptp(centres[:, 0]) > 0.1 * distances[0], "the cameras move"
    seen = world_to_cam[:, :3, :3] @ center + world_to_cam[:, :3, 3]
    np.testing.assert_allclose(seen, np.repeat(seen[:1], 8, 0), atol=1e-5)  # the center stays in view
    assert avatar.render(avatar.home_tracking().select([0] * 8), camera=(K, world_to_cam)).shape[0] == 8


def test_interpolate_expressions_hits_the_key_frames(tracking):
    from onehead.pipelines.diffusion_avatar import interpolate_expressions

    keys, between = [2, 0, 1], 4
    out = interpolate_expressions(tracking, keys, between)
    assert out.num_frames == (len(keys) - 1) * between + 1
    for index, key in enumerate(keys):
        for name in ("expression", "jaw_pose", "eye_pose"):
            np.testing.assert_array_equal(getattr(out, name)[index * between], getattr(tracking, name)[key])
    halfway = (tracking.expression[2] + tracking.expression[0]) / 2
    np.testing.assert_allclose(out.expression[2], halfway, atol=1e-6)
    np.testing.assert_array_equal(out.global_pose, np.repeat(tracking.global_pose[2:3], out.num_frames, 0))
    with pytest.raises(ConfigError):
        interpolate_expressions(tracking, [0, 3], between)


# =========================================================================== training

def test_training_record_round_trip(tmp_path):
    from onehead.data.datasets import FrameKey, record_keys, training_record

    first, second = str((tmp_path / "s00").resolve()), str((tmp_path / "s01").resolve())
    keys = ([FrameKey(first, "cam00", t) for t in (0, 1, 2, 5, 7, 8)] + [FrameKey(first, "cam01", 4)]
            + [FrameKey(second, "cam00", t) for t in (9, 3, 4)])
    record = json.loads(json.dumps(training_record(keys)))  # as avatar.json keeps it
    assert record["count"] == len(keys)
    assert record["frames"][first]["cam00"] == [[0, 2], [5, 5], [7, 8]]
    assert record["frames"][second]["cam00"] == [[3, 4], [9, 9]]
    assert sorted(record_keys(record), key=str) == sorted(keys, key=str)
    assert record_keys({}) == []


def write_config(folder: Path, person: Path) -> Path:
    config = {
        "model": {"kind": "onehead-avatar", "preset": "tiny", **ARCHITECTURE,
                  "conditioning_channels": list(ARCHITECTURE["conditioning_channels"]), "steps": 2},
        "data": {"train": [{"path": str(person)}], "validation": str(person), "views": ["cam00"], "frames": "0:2"},
        "train": {"output_dir": str(folder / "run"), "seed": 3, "max_steps": 4, "batch_size": 2,
                  "learning_rate": 1e-3, "warmup_steps": 1, "weight_decay": 0.0,
                  "ema": {"enabled": True, "decay": 0.9}, "log_every": 1, "validate_every": 4,
                  "validation_items": 1, "validation_sampling_steps": 1, "save_every": 2, "keep_checkpoints": 0},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_training_resumes_exactly(person, tmp_path):
    from onehead.pipelines import PersonAvatar
    from onehead.training import load_config, train

    config = write_config(tmp_path, person)
    original, resumed = tmp_path / "run", tmp_path / "resumed"
    assert train(load_config(config))["step"] == 4
    train(load_config(config, [f"train.output_dir={resumed}"]),
          str(original / "checkpoints" / "step_000002"))

    def losses(run):
        lines = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in lines if "loss" in r}

    first, second = losses(original), losses(resumed)
    assert sorted(first) == [1, 2, 3, 4] and sorted(second) == [3, 4]
    for step in (3, 4):
        assert first[step] == pytest.approx(second[step], abs=1e-6, rel=0)
    for sub in ("", "ema"):
        a = avatar_weights(original / "checkpoints" / "step_000004" / sub)
        b = avatar_weights(resumed / "checkpoints" / "step_000004" / sub)
        assert a.keys() == b.keys()
        assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a), sub

    # the steps trained the features and the networks; the folder is a DiffusionAvatar of the selection
    start = avatar_weights(original / "checkpoints" / "step_000002")
    end = avatar_weights(original / "checkpoints" / "step_000004")
    for name in ("triplanes", "ambient", "controlnet.controlnet_mid_block.weight", "unet.conv_out.weight"):
        assert not torch.equal(start[name], end[name]), name
    loaded = PersonAvatar.from_pretrained(original / "checkpoints" / "step_000004")
    first_frame = frames_of(person)[0]  # the person's shape and home view: the first selected frame
    model = loaded.model
    torch.testing.assert_close(model.shape, first_frame["params"]["shape"], atol=0, rtol=0)
    torch.testing.assert_close(model.home_K, first_frame["K"], atol=0, rtol=0)
    torch.testing.assert_close(model.home_world_to_cam, first_frame["world_to_cam"], atol=0, rtol=0)
    frames = loaded.training_data["frames"]
    assert loaded.training_data["count"] == 4  # 2 sequences x cam00 x frames 0:2
    assert sorted(Path(s).name for s in frames) == ["id000_s00", "id000_s01"]
    assert all(views == {"cam00": [[0, 1]]} for views in frames.values())
    assert loaded.settings.steps == 2 and loaded.resolution == SIZE
    assert (original / "validation" / "step_000004.png").is_file()


# =========================================================================== the commands
def architecture_overrides() -> list[str]:
    return [f"--set=model.{key}={json.dumps(list(value) if isinstance(value, tuple) else value)}"
            for key, value in ARCHITECTURE.items()]


def test_cli_trains_renders_and_evaluates_an_avatar(person, tmp_path, capsys):
    """One command from a dataset to an avatar, one to a video of it, one to its eval table."""
    from onehead.cli import main
    from onehead.data.video import read_video

    out = tmp_path / "avatar"
    assert main(["avatar", "train", str(person), "--out", str(out), "--steps", "2", "--views", "cam00",
                 "--frames", "0:2", "--quiet", *architecture_overrides()]) == 0
    assert (out / "model" / "avatar.json").is_file() and (out / "run" / "latest.txt").is_file()
    preview, _ = read_video(out / "preview.mp4")  # the first view's 3 frames beside the avatar's
    assert preview.shape[0] == 3 and preview.shape[2] > preview.shape[1]  # two columns, wider than tall
    record = json.loads((out / "model" / "avatar.json").read_text())["training_data"]
    assert record["count"] == 4  # 2 sequences x cam00 x frames 0-1

    tracking = person / "id000_s01" / "cam01" / "tracking.npz"
    video = tmp_path / "render.mp4"
    assert main(["avatar", "render", str(out), "--driving", str(tracking), "--camera", "orbit", "--steps", "1",
                 "--out", str(video), "--quiet"]) == 0
    frames, _ = read_video(video)
    assert frames.shape == (3, SIZE, SIZE, 3)

    report = tmp_path / "report.json"
    capsys.readouterr()
    assert main(["eval", "--task", "avatar", "--data", str(person), "--model", str(out / "model"), "--steps", "1",
                 "--out", str(report), "--no-motion-metrics", "--quiet"]) == 0
    scores = json.loads(report.read_text())
    assert set(scores["methods"]) == {"model", "nearest_training_frame"}
    assert scores["data"]["frames"] == 2 * 2 * 3 - 4  # every frame it did not train on
    groups = set(scores["methods"]["model"]["per_sequence"])
    assert groups == {"new view", "new frames"}
    assert "| nearest_training_frame |" in capsys.readouterr().out


def test_cli_bad_input_is_one_line(person, saved, tmp_path, capsys):
    from onehead.cli import main

    cases = [
        (["avatar", "render", str(tmp_path / "nowhere"), "--driving", "x.npz", "--out", str(tmp_path / "a.mp4")],
         "does not exist"),
        (["avatar", "render", str(saved), "--driving", str(person / "id000_s00" / "meta.json"),
          "--out", str(tmp_path / "a.mp4")], "meta.json"),
        (["avatar", "train", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "x")], "no such video"),
        (["eval", "--task", "avatar", "--data", str(person), "--model", "none", "--out", str(tmp_path / "r.json")],
         "person-specific avatars"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_dataset_without_tracking_is_refused(person, tmp_path, capsys):
    from onehead.cli import main

    broken = tmp_path / "untracked"
    shutil.copytree(person / "id000_s00", broken)
    for view in ("cam00", "cam01"):
        (broken / view / "tracking.npz").unlink()
    assert main(["avatar", "train", str(broken), "--out", str(tmp_path / "x"), "--steps", "1", "--quiet"]) == 2
    assert "tracking" in capsys.readouterr().err


def test_a_video_that_loses_the_face_is_refused(person, tmp_path, capsys):
    """More than a fifth of the frames without a face: refused, saying how many and the longest stretch."""
    from onehead.data.tracking_file import load_tracking
    from onehead.errors import MediaReadError
    from onehead.training.person_avatar import _check_tracked

    sequence = tmp_path / "lost"
    shutil.copytree(person / "id000_s00", sequence)
    for view, lost in (("cam00", [1, 2]), ("cam01", [])):
        path = sequence / view / "tracking.npz"
        tracking = load_tracking(path)
        tracking.valid[lost] = False
        tracking.save(path)
    with pytest.raises(MediaReadError, match="lost in 2 of 3 frames .longest stretch 2 frames."):
        _check_tracked(sequence, Path("clip.mp4"))
    shutil.copy(sequence / "cam01" / "tracking.npz", sequence / "cam00" / "tracking.npz")
    _check_tracked(sequence, Path("clip.mp4"))  # every face found: no complaint


def test_x0_parameterization_gives_the_schedulers_velocity(head):
    """An x0 model's v is exact: for x_t = add_noise(x0, eps, t) it equals get_velocity(x0, eps, t), so
    DDIM's clean estimate is the UNet's own output."""
    from diffusers import DDPMScheduler

    from onehead.models.person_avatar import PersonAvatarModel

    model = PersonAvatarModel(small_config(parameterization="x0"), head)
    scheduler = DDPMScheduler(**model.scheduler_config())
    generator = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(4, 48, 8, 8, generator=generator), torch.randn(4, 48, 8, 8, generator=generator)
    timesteps = torch.tensor([0, 250, 700, 999])
    noisy = scheduler.add_noise(clean, noise, timesteps)
    velocity = model.velocity_from_clean(noisy, clean, timesteps)
    torch.testing.assert_close(velocity, scheduler.get_velocity(clean, noise, timesteps), atol=2e-4, rtol=1e-4)


def test_cli_makes_an_avatar_from_a_raw_video(carphone, tmp_path, capsys):
    """A real clip: tracked, cropped and matted into OUT/data, trained (one step), written to OUT/model."""
    from onehead.cli import main
    from onehead.data.sequence import open_sequence

    out = tmp_path / "avatar"
    assert main(["avatar", "train", str(carphone), "--out", str(out), "--max-frames", "6", "--size", "64",
                 "--steps", "1", "--quiet", *architecture_overrides()]) == 0
    view = open_sequence(out / "data" / carphone.stem).views["cam00"]
    assert view.num_frames == 6 and view.mask_files is not None and view.tracking.valid.all()
    assert (out / "model" / "avatar.json").is_file()
    assert "avatar trained" in capsys.readouterr().out


def test_the_embedded_avatar_loads_and_renders(tracking):
    """The shipped avatar (onehead/checkpoints/avatar-person) is a complete folder: it loads, says what
    trained it (relative paths), and renders a motion in its own shape."""
    from onehead.pipelines.diffusion_avatar import default_avatar_dir
    from onehead.pipelines.person_avatar import PersonAvatar

    folder = default_avatar_dir()
    assert folder is not None and (folder / "README.md").is_file()
    avatar = PersonAvatar.from_pretrained(folder, steps=1)
    record = avatar.training_data
    assert record["count"] == 720 and not any(Path(p).is_absolute() for p in record["frames"])
    frames = avatar.render(avatar.transfer(tracking.select([0, 1])))
    assert frames.shape == (2, 3, 128, 128) and 0 <= frames.min() and frames.max() <= 1
    assert frames.std() > 0.02  # a picture, not a constant
