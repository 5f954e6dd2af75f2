"""`onehead render-debug`: one contact sheet of every buffer onehead renders for a synthetic head.

Rows are camera views (near-frontal, left, right from above); columns are the shaded RGB, the
mask, normals, depth, canonical coordinates, UVs, the splatted UV-Gaussian features (first three
principal components) and the splat's alpha. Look at it after touching any renderer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from onehead.data.images import save_image
from onehead.data.synthetic import (TextureAtlas, head_framing, look_at_camera, paint_albedo, random_identity, random_light,
                                    random_motion, render_head)
from onehead.camera import intrinsics
from onehead.render.visualize import contact_sheet, depth_rgb, feature_rgb, normals_rgb, range_rgb

VIEWS = ((0.0, 5.0), (-45.0, 0.0), (35.0, 30.0))  # (yaw, pitch) degrees


def render_debug_sheet(head, out: str | Path, size: int = 256, seed: int = 0, channels: int = 8,
                       splat_backend: str = "auto") -> Path:
    from onehead.models.gaussian_field import UVGaussianField

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    identity = random_identity(rng, head.num_shape, "debug")
    motion = random_motion(rng, 12, 25.0, head.num_expression)
    frame = {k: v[-1:] for k, v in motion.items()}  # one frame, mid-expression
    atlas = TextureAtlas(head, 256)
    albedo = paint_albedo(atlas, identity.appearance)
    field = UVGaussianField.from_head(head, resolution=128, channels=channels)
    light = random_light(rng)
    target, field_of_view = head_framing(head)
    K = intrinsics(size / field_of_view, size, size).numpy()
    rows = []
    for yaw, pitch in VIEWS:
        w2c = look_at_camera(yaw, pitch, 1.0, target)
        view = render_head(head, identity.shape, frame, albedo, K, w2c, size, light)
        g = view.gbuffers
        with torch.no_grad():
            vertices = head(shape=torch.as_tensor(identity.shape)[None],
                            **{k: torch.as_tensor(v) for k, v in frame.items()}).vertices
            splat = field.splat(vertices, torch.as_tensor(K)[None], torch.as_tensor(w2c)[None], size, size,
                                backend=splat_backend)
        uv = torch.cat([g.uv, torch.zeros_like(g.uv[:, :1])], 1)
        rows.append([
            (f"RGB yaw {yaw:+.0f} pitch {pitch:+.0f}", view.rgb[0]), ("mask", view.mask[0].expand(3, -1, -1)),
            ("normals (camera)", normals_rgb(g.normals, g.mask)[0]), ("depth", depth_rgb(g.depth, g.mask)[0]),
            ("canonical xyz", range_rgb(g.canonical, g.mask)[0]), ("uv", range_rgb(uv, g.mask)[0]),
            ("splatted features (PCA)", feature_rgb(splat.features, splat.alpha)[0]),
            ("splat alpha", splat.alpha[0].expand(3, -1, -1)),
        ])
    texture = torch.nn.functional.interpolate(albedo[None], size=(size, size), mode="area")[0]
    rows.append([("albedo (UV)", texture), ("field features (UV)", _uv_features(field, size))])
    out = Path(out)
    save_image(out, contact_sheet(rows))
    return out


def _uv_features(field, size: int) -> torch.Tensor:
    image = field.feature_image()[None]
    valid = torch.zeros(1, 1, field.resolution, field.resolution)
    valid[0, 0, field.texel_rows, field.texel_cols] = 1
    rgb = feature_rgb(image, valid)
    return torch.nn.functional.interpolate(rgb, size=(size, size), mode="nearest")[0]
