"""The UV-anchored Gaussian field: anchoring, motion with the mesh, gradients, FLAME-format models."""

from __future__ import annotations

import numpy as np
import torch

from onehead.camera import default_focal, default_world_to_cam, intrinsics
from onehead.models.gaussian_field import UVGaussianField


def _rotation(angle):
    c, s = np.cos(angle), np.sin(angle)
    return torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float32)


def test_texels_are_anchored_where_their_uv_is(head):
    field = UVGaussianField.from_head(head, resolution=64, channels=4)
    assert 0.3 * 64 * 64 < field.num_gaussians < 64 * 64
    # the anchor's barycentrics, applied to the face's UV corners, give the texel centre back
    uv_corners = head.uv_coords[head.uv_faces[field.texel_face]]  # (N, 3, 2)
    uv = (uv_corners * field.texel_bary[..., None]).sum(1)
    centre = torch.stack([(field.texel_cols + 0.5) / 64, 1 - (field.texel_rows + 0.5) / 64], -1)
    torch.testing.assert_close(uv, centre, atol=1e-4, rtol=0)
    assert (field.texel_bary >= -1e-5).all() and torch.allclose(field.texel_bary.sum(-1), torch.ones(1))


def test_field_moves_rigidly_with_the_mesh(head):
    field = UVGaussianField.from_head(head, resolution=48, channels=3, normal_offset=True)
    with torch.no_grad():
        field.normal_offset.uniform_(-0.003, 0.003)
    vertices = head().vertices
    rotation, shift = _rotation(0.4), torch.tensor([0.01, -0.02, 0.03])
    moved = vertices @ rotation.T + shift
    a, b = field(vertices), field(moved)
    torch.testing.assert_close(b.means, a.means @ rotation.T + shift, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.features, b.features)
    assert a.scales.shape == a.opacities.shape == (1, field.num_gaussians)


def test_normal_offset_moves_along_the_outward_normal(head):
    field = UVGaussianField.from_head(head, resolution=48, channels=3, normal_offset=True)
    vertices = head().vertices
    base = field(vertices).means
    with torch.no_grad():
        field.normal_offset.fill_(0.002)
    pushed = field(vertices).means
    step = (pushed - base)[0]
    torch.testing.assert_close(step.norm(dim=-1), torch.full((field.num_gaussians,), 0.002), atol=1e-6, rtol=0)
    # outward: the head's centre gets farther away for almost every texel of the head surface
    centre = vertices[0].mean(0)
    farther = ((pushed[0] - centre).norm(dim=-1) > (base[0] - centre).norm(dim=-1)).float().mean()
    assert farther > 0.8


def test_gradients_reach_every_attribute_and_the_mesh(head):
    field = UVGaussianField.from_head(head, resolution=32, channels=4, normal_offset=True)
    size = 48
    K = intrinsics(default_focal(size, size), size, size)[None]
    w2c = default_world_to_cam(1.0, batch=1)
    expression = torch.zeros(1, head.num_expression, requires_grad=True)
    vertices = head(expression=expression).vertices
    result = field.splat(vertices, K, w2c, size, size, backend="torch")
    assert result.features.shape == (1, 4, size, size) and result.alpha.max() > 0.9
    (result.features.square().sum() + result.alpha.sum()).backward()
    for name, parameter in field.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert expression.grad.abs().sum() > 0  # the control signal follows the expression


def test_field_on_a_flame_format_model(tmp_path):
    from onehead.head.flame_format import read_flame_dir, write_flame_dir
    from onehead.head.model import basic_head_dir, load_head_model

    write_flame_dir(read_flame_dir(basic_head_dir()), tmp_path / "flame")
    flame = load_head_model("flame", tmp_path / "flame")
    field = UVGaussianField.from_head(flame, resolution=32, channels=2)
    means = field(flame(jaw_pose=torch.tensor([[0.2, 0.0, 0.0]])).vertices).means
    assert means.shape == (1, field.num_gaussians, 3) and torch.isfinite(means).all()


def test_feature_image_lays_features_out_in_uv(head):
    field = UVGaussianField.from_head(head, resolution=32, channels=3)
    image = field.feature_image()
    assert image.shape == (3, 32, 32)
    r, c = int(field.texel_rows[7]), int(field.texel_cols[7])
    torch.testing.assert_close(image[:, r, c], torch.tanh(field.features[7]).detach())
    empty = torch.ones(32, 32, dtype=torch.bool)
    empty[field.texel_rows, field.texel_cols] = False
    assert image[:, empty].abs().max() == 0
