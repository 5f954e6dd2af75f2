"""The tri-plane feed-forward model (paper 004, GOHA-style), one nn.Module.

    model = TriplaneModel(TriplaneConfig.from_preset("tiny"))
    cache = model.encode_source(image, params, K, world_to_cam)     # once per source portrait
    out = model.render(cache, motion_params, K, world_to_cam)       # per frame: TriplaneOutput
    out = model(image, params, K, world_to_cam, motion_params, K, world_to_cam)   # both at once

Branches, each a tri-plane (B, 3, C, R, R) in the head frame; they are SUMMED:
- canonical: PlaneEncoder (diffusers VAE Encoder -> Decoder) on the source image.
- appearance: the head model's mesh is rasterized at the source camera (source shape,
  expression and pose); each covered pixel of a lift_resolution grid is the exact head-frame
  point of the surface it sees (the mesh's depth); its RGB and E_p features are splatted onto the
  three planes (parts.splat_triplane) and a PlaneEncoder turns them (and their weights) into planes.
  Only pixels the head model covers are lifted (not hair beyond it, not the background).
- expression: the head model with the source shape and the target expression, jaw and eyes, no
  head pose, rasterized by a fixed frontal camera; its G-buffers (normals, template point, depth,
  mask) go through a PlaneEncoder.
Decoder: EG3D's MLP on triplane_features(reduce="sum") -> density (softplus) and features, whose
first 3 channels are the low-resolution RGB; volume rendering at the target camera at
render_resolution (stratified + importance samples) over a backdrop, then SuperResolution to the
output resolution.

Backdrop (config.backdrop; onehead's addition, the paper trains on backgrounds it removes): what
rays see behind the cube is the source picture at render resolution, a static 2D backdrop, with the
head model's silhouette at the source camera (grown by backdrop_grow) filled by Telea inpainting
(OpenCV, no gradient) and encoded by BackdropEncoder. The person's own background stays; hair
beyond the head model stays where the source had it. Without it, one learned feature vector.

Frames: the tri-planes live in the HEAD FRAME: the world with the head's rigid pose from the
tracking (global rotation about the root joint, then translation) undone, i.e. the frame where
the head model with global_pose = 0 and translation = 0 sits. A world point p maps to the head
frame as head_to_world^-1 p. Rather than transforming every sample, the camera is moved into the
head frame (world_to_cam @ head_to_world): the same rays, distances and depths. The cube
[centre - bounds, centre + bounds]^3, centre the middle of the template's bounding box, is what the
planes cover; rays are sampled only where they cross it. Expression (and jaw, eyes) deform
nothing geometrically: the expression branch's planes carry them. neck_pose is not undone (onehead's
tracker keeps it at 0).

Pretrained weights: `TriplaneConfig.canonical_init` (or `load_canonical_init(path)`) takes a
local diffusers AutoencoderKL folder, or a Stable Diffusion folder with vae/, and copies every
tensor whose name and shape match into the canonical encoder (e.g. the SD VAE encoder's blocks
when the widths agree). Nothing is downloaded. Whole models load with
TriplaneAnimator.from_pretrained (onehead.pipelines.triplane).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from smplx.lbs import batch_rodrigues
from torch import nn

from onehead.camera import intrinsics, scale_intrinsics
from onehead.errors import CheckpointError
from onehead.models.triplane.config import TriplaneConfig
from onehead.models.triplane.parts import (BackdropEncoder, LiftFeatures, PlaneEncoder, SuperResolution,
                                           TriplaneDecoder, halvings, splat_triplane)
from onehead.render.gbuffers import render_gbuffers
from onehead.render.rasterize import interpolate, rasterize_mesh
from onehead.render.volume import camera_rays, render_volume, triplane_features

EXPRESSION_CHANNELS = 8  # normals (3), template point (3), depth (1), mask (1)
FRONT_DISTANCE = 1.0  # metres from the frontal camera of the expression branch to the cube's centre


@dataclass
class SourceCache:
    """What a source portrait gives every frame: its canonical and appearance planes and its shape."""

    canonical: torch.Tensor  # (B, 3, C, R, R)
    appearance: torch.Tensor  # (B, 3, C, R, R)
    shape: torch.Tensor  # (B, S) the head model's shape of the source
    backdrop: torch.Tensor | None = None  # (B, F, r, r) background features (config.backdrop), else None

    def repeat(self, times: int) -> "SourceCache":
        """Each row repeated `times` times (one per frame of its clip)."""
        backdrop = None if self.backdrop is None else self.backdrop.repeat_interleave(times, 0)
        return SourceCache(*(t.repeat_interleave(times, 0) for t in (self.canonical, self.appearance, self.shape)),
                           backdrop)


@dataclass
class TriplaneOutput:
    """Frames rendered by TriplaneModel.render (N frames)."""

    image: torch.Tensor  # (N, 3, S, S) in [0, 1]: the super-resolved output
    low_res: torch.Tensor  # (N, 3, r, r): the rendered RGB (first 3 feature channels), background included
    features: torch.Tensor  # (N, F, r, r): the rendered features, background included
    opacity: torch.Tensor  # (N, 1, r, r)
    depth: torch.Tensor  # (N, 1, r, r) ray distance (0 on empty rays)


class TriplaneModel(nn.Module):
    """Every network of the family. `head` (default: load_head_model(config.head_model)) is copied,
    so the model owns its head-model instance."""

    def __init__(self, config: TriplaneConfig, head=None):
        super().__init__()
        from onehead.head import load_head_model

        c = config
        self.config = config
        self.head = copy.deepcopy(head) if head is not None else load_head_model(c.head_model)
        encoder = dict(latent_channels=c.latent_channels, norm_groups=c.norm_groups, attention=c.attention)
        self.canonical_encoder = PlaneEncoder(3, c.plane_channels, c.canonical_down, c.canonical_up, **encoder)
        self.lift_features = LiftFeatures(c.lift_channels, c.lift_hidden, halvings(c.resolution, c.lift_resolution))
        self.appearance_encoder = PlaneEncoder(3 * (3 + c.lift_channels + 1), c.plane_channels, c.appearance_down,
                                               c.appearance_up, **encoder)
        self.expression_encoder = PlaneEncoder(EXPRESSION_CHANNELS, c.plane_channels, c.expression_down,
                                               c.expression_up, **encoder)
        self.decoder = TriplaneDecoder(c.plane_channels, c.decoder_hidden, c.feature_channels)
        if c.backdrop:
            self.backdrop_encoder = BackdropEncoder(c.feature_channels, c.lift_hidden)
        else:
            self.background = nn.Parameter(torch.zeros(c.feature_channels))
        self.super_resolution = SuperResolution(c.feature_channels, c.sr_channels,
                                                halvings(c.resolution, c.render_resolution))
        template = self.head.v_template
        self.register_buffer("centre", (template.amin(0) + template.amax(0)) / 2, persistent=False)
        size = c.expression_resolution
        self.register_buffer("front_K", intrinsics(FRONT_DISTANCE * size / (2 * c.bounds), size, size),
                             persistent=False)
        cx, cy, cz = self.centre.tolist()
        self.register_buffer("front_world_to_cam", torch.tensor(
            [[1.0, 0, 0, -cx], [0, -1.0, 0, cy], [0, 0, -1.0, cz + FRONT_DISTANCE], [0, 0, 0, 1.0]]),
            persistent=False)
        if c.canonical_init:
            self.load_canonical_init(c.canonical_init)

    @property
    def device(self) -> torch.device:
        return self.decoder.net[0].weight.device

    def trainable_parts(self) -> dict[str, nn.Module]:
        parts = {"canonical_encoder": self.canonical_encoder, "lift_features": self.lift_features,
                 "appearance_encoder": self.appearance_encoder, "expression_encoder": self.expression_encoder,
                 "decoder": self.decoder, "super_resolution": self.super_resolution}
        if self.config.backdrop:
            parts["backdrop_encoder"] = self.backdrop_encoder
        return parts

    def weights(self) -> dict[str, torch.Tensor]:
        """Every tensor a model folder stores: the state_dict without the head model (rebuilt on load)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("head.")}

    def load_weights(self, state: dict[str, torch.Tensor], where: str) -> None:
        expected = self.weights()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            name = (missing or unexpected)[0]
            raise CheckpointError(f"{where}: does not fit this config ({len(missing)} tensors missing, "
                                  f"{len(unexpected)} unexpected, e.g. {name})")
        wrong = [k for k, v in state.items() if v.shape != expected[k].shape]
        if wrong:
            raise CheckpointError(f"{where}: {wrong[0]} is {tuple(state[wrong[0]].shape)}, this config needs "
                                  f"{tuple(expected[wrong[0]].shape)}")
        self.load_state_dict(state, strict=False)

    def load_canonical_init(self, path: str | Path) -> int:
        """Copy the tensors of a local diffusers AutoencoderKL folder (or a Stable Diffusion folder's
        vae/) whose names and shapes match into the canonical encoder; returns how many matched."""
        from diffusers import AutoencoderKL

        root = Path(path)
        folder = root / "vae" if (root / "vae" / "config.json").is_file() else root
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"{root}: not a diffusers AutoencoderKL folder (no config.json, no vae/config.json)")
        try:
            vae = AutoencoderKL.from_pretrained(folder)
        except (OSError, ValueError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0][:200]
            raise CheckpointError(f"{folder}: corrupt AutoencoderKL folder ({reason})") from None
        own = self.canonical_encoder.state_dict()
        matched = {k: v for k, v in vae.state_dict().items() if k in own and own[k].shape == v.shape}
        if not matched:
            raise CheckpointError(f"{folder}: no tensor fits the canonical encoder (check canonical_down/up, "
                                  "latent_channels and norm_groups against the VAE's config)")
        self.canonical_encoder.load_state_dict(matched, strict=False)
        return len(matched)

    # ------------------------------------------------------------------ frames
    def head_frame(self, params: dict, landmarks_only: bool = False):
        """The head model with the rigid pose removed (global_pose = translation = 0) and the 4x4
        head_to_world (N, 4, 4) that puts it back: p_world = R (p - J0) + J0 + t, R from global_pose,
        J0 the root joint. Returns (HeadOutput in the head frame, head_to_world)."""
        global_pose, translation = params["global_pose"], params["translation"]
        rest = {k: v for k, v in params.items() if k not in ("global_pose", "translation")}
        out = self.head(**rest, landmarks_only=landmarks_only)
        root = out.joints[:, 0]  # (N, 3)
        rotation = batch_rodrigues(global_pose.to(root).reshape(-1, 3)).expand(root.shape[0], 3, 3)
        head_to_world = torch.eye(4, dtype=root.dtype, device=root.device).repeat(root.shape[0], 1, 1)
        head_to_world[:, :3, :3] = rotation
        head_to_world[:, :3, 3] = root + translation.to(root) - (rotation @ root[..., None])[..., 0]
        return out, head_to_world

    def head_cameras(self, params: dict, world_to_cam: torch.Tensor) -> torch.Tensor:
        """World cameras (N, 4, 4) -> the same cameras in each frame's head frame."""
        _, head_to_world = self.head_frame(params, landmarks_only=True)
        return world_to_cam.to(head_to_world) @ head_to_world

    # ------------------------------------------------------------------ the branches
    def encode_source(self, image: torch.Tensor, params: dict, K: torch.Tensor,
                      world_to_cam: torch.Tensor) -> SourceCache:
        """Source images (B, 3, S, S) in [0, 1] with their head-model parameters (B, ...) and cameras
        (K (B, 3, 3) at S px, world_to_cam (B, 4, 4)) -> the canonical and appearance planes."""
        image = image.to(self.device)
        canonical = self.canonical_encoder(image * 2 - 1)
        appearance = self.appearance_planes(image, params, K, world_to_cam)
        backdrop = self.backdrop(image, params, K, world_to_cam) if self.config.backdrop else None
        return SourceCache(canonical, appearance, params["shape"].to(self.device), backdrop)

    def backdrop(self, image, params, K, world_to_cam) -> torch.Tensor:
        """(B, F, r, r): the source at render resolution, the head model's grown silhouette filled in
        (Telea), encoded (module docstring, "Backdrop")."""
        import cv2
        import numpy as np

        c, size = self.config, self.config.render_resolution
        picture = F.interpolate(image, size=(size, size), mode="area") if image.shape[-1] != size else image
        with torch.no_grad():
            vertices = self.head(**{k: v.to(self.device) for k, v in params.items()}).vertices
            K_small = scale_intrinsics(K.to(vertices), (c.resolution, c.resolution), (size, size))
            mask = rasterize_mesh(vertices, self.head.faces, K_small, world_to_cam.to(vertices), size, size).mask
            grow = max(1, round(c.backdrop_grow * size))
            mask = F.max_pool2d(mask.float()[:, None], 2 * grow + 1, stride=1, padding=grow)
            pixels = (picture.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            holes = (mask[:, 0] > 0).byte().cpu().numpy()
            filled = np.stack([cv2.inpaint(np.ascontiguousarray(p), h, 3, cv2.INPAINT_TELEA) for p, h in zip(pixels, holes)])
            filled = torch.from_numpy(filled).to(picture).permute(0, 3, 1, 2) / 255
        picture = torch.where(mask > 0, filled, picture)
        return self.backdrop_encoder(picture, mask)

    def appearance_planes(self, image, params, K, world_to_cam) -> torch.Tensor:
        """The appearance branch: lift the source pixels the mesh covers, splat, encode."""
        splatted, weight = self.lift(image, params, K, world_to_cam)
        inputs = torch.cat([splatted, weight.clamp(max=1)], 2)  # (B, 3, D + 1, R, R)
        return self.appearance_encoder(inputs.flatten(1, 2))

    def lift(self, image, params, K, world_to_cam) -> tuple[torch.Tensor, torch.Tensor]:
        """Source pixels -> head-frame points -> splatted planes (B, 3, 3 + lift_channels, R, R) and
        weights (B, 3, 1, R, R): the RGB (first 3) and E_p features of every covered pixel."""
        c, size = self.config, self.config.lift_resolution
        out, head_to_world = self.head_frame(params)
        with torch.no_grad():
            cameras = world_to_cam.to(head_to_world) @ head_to_world
            K_lift = scale_intrinsics(K.to(head_to_world), (c.resolution, c.resolution), (size, size))
            fragments = rasterize_mesh(out.vertices, self.head.faces, K_lift, cameras, size, size)
            points = interpolate(fragments, self.head.faces, out.vertices - self.centre)  # (B, L, L, 3)
        rgb = F.interpolate(image, size=(size, size), mode="area") if image.shape[-1] != size else image
        values = torch.cat([rgb, self.lift_features(image * 2 - 1)], 1)  # (B, D, L, L)
        return splat_triplane(points.flatten(1, 2), values.flatten(2).transpose(1, 2), fragments.mask.flatten(1),
                              c.plane_resolution, c.bounds)

    def expression_planes(self, shape: torch.Tensor, params: dict) -> torch.Tensor:
        """The expression branch: the source shape (B or N, S) with each frame's expression, jaw and
        eyes (N, ...), no head pose, seen by the frontal camera -> planes (N, 3, C, R, R)."""
        return self.expression_encoder(self.expression_gbuffers(shape, params))

    def expression_gbuffers(self, shape: torch.Tensor, params: dict) -> torch.Tensor:
        """(N, 8, E, E): normals, template point and depth (both in units of bounds around the
        cube's centre), mask; zeros off the head."""
        size, bounds = self.config.expression_resolution, self.config.bounds
        motion = {k: params[k].to(self.device) for k in ("expression", "jaw_pose", "eye_pose")}
        count = motion["expression"].shape[0]
        with torch.no_grad():
            vertices = self.head(shape=shape.to(self.device).expand(count, -1), **motion).vertices
            g = render_gbuffers(self.head, vertices, self.front_K, self.front_world_to_cam.expand(count, 4, 4),
                                size, size)
        canonical = (g.canonical - self.centre.view(1, 3, 1, 1)) / bounds * g.mask
        depth = (g.depth - FRONT_DISTANCE) / bounds * g.mask
        return torch.cat([g.normals, canonical, depth, g.mask], 1)

    # ------------------------------------------------------------------ rendering
    def field(self, planes: torch.Tensor):
        """The radiance field of planes (N, 3, C, R, R) in the head frame, for render_volume."""
        bounds, scale = self.config.bounds, self.config.density_scale

        def evaluate(points, directions):
            features = triplane_features(planes, points - self.centre, bounds, reduce="sum")
            raw, values = self.decoder(features)
            return scale * F.softplus(raw - 1) / bounds, values

        return evaluate

    def render_planes(self, planes: torch.Tensor, head_cameras: torch.Tensor, K: torch.Tensor,
                      backdrop: torch.Tensor | None = None, *, coarse: int, fine: int, jitter: bool = False,
                      generator: torch.Generator | None = None, chunk: int | None = None) -> TriplaneOutput:
        """Volume-render planes (N, 3, C, R, R) by cameras already in the head frame (N, 4, 4), K
        (N, 3, 3) at the output resolution, over the backdrop (N, F, r, r) (SourceCache.backdrop;
        None without config.backdrop); the output's `image` is left empty (see super_resolve)."""
        c, size = self.config, self.config.render_resolution
        if c.backdrop == (backdrop is None):
            raise ValueError("render_planes: give the source's backdrop exactly when config.backdrop is set")
        K_render = scale_intrinsics(K.to(planes), (c.resolution, c.resolution), (size, size))
        near, far = self.cube_interval(K_render, head_cameras)
        out = render_volume(self.field(planes), K_render, head_cameras, size, size, near, far, coarse=coarse,
                            fine=fine, generator=generator, jitter=jitter, chunk=chunk)
        behind = backdrop if backdrop is not None else self.background.view(1, -1, 1, 1)
        features = out.features + (1 - out.opacity) * behind
        return TriplaneOutput(image=features.new_zeros(0), low_res=features[:, :3], features=features,
                              opacity=out.opacity, depth=out.depth)

    def cube_interval(self, K: torch.Tensor, head_cameras: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each ray of the render crosses the planes' cube (slab test): near, far (N, r, r).
        Rays that miss it get a short interval just before the camera (zero features there)."""
        size = self.config.render_resolution
        origins, directions = camera_rays(K, head_cameras, size, size)
        low, high = self.centre - self.config.bounds, self.centre + self.config.bounds
        safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
        t0, t1 = (low - origins) / safe, (high - origins) / safe
        near = torch.minimum(t0, t1).amax(-1).clamp(min=0)
        far = torch.maximum(t0, t1).amin(-1)
        hit = far > near + 1e-6
        near, far = torch.where(hit, near, torch.zeros_like(near)), torch.where(hit, far, torch.full_like(far, 1e-3))
        return near.view(-1, size, size), far.view(-1, size, size)

    def super_resolve(self, rendered: TriplaneOutput) -> TriplaneOutput:
        rendered.image = self.super_resolution(rendered.features)
        return rendered

    def render(self, cache: SourceCache, params: dict, K: torch.Tensor, world_to_cam: torch.Tensor, *,
               coarse: int = 16, fine: int = 16, jitter: bool = False, generator: torch.Generator | None = None,
               chunk: int | None = None) -> TriplaneOutput:
        """The per-frame work: expression planes, sum, volume render, super-resolution. params (N, ...),
        K (N, 3, 3) at the output resolution, world_to_cam (N, 4, 4); cache rows 1 (shared) or N."""
        params = {k: v.to(self.device) for k, v in params.items()}
        planes = cache.canonical + cache.appearance + self.expression_planes(cache.shape, params)
        cameras = self.head_cameras(params, world_to_cam.to(self.device))
        out = self.render_planes(planes, cameras, K.to(self.device), cache.backdrop, coarse=coarse, fine=fine,
                                 jitter=jitter, generator=generator, chunk=chunk)
        return self.super_resolve(out)

    def forward(self, image, source_params, source_K, source_world_to_cam, params, K, world_to_cam,
                **render) -> TriplaneOutput:
        """The uncached path: encode_source then render (the same numbers as calling them apart)."""
        cache = self.encode_source(image, {k: v.to(self.device) for k, v in source_params.items()},
                                   source_K.to(self.device), source_world_to_cam.to(self.device))
        return self.render(cache, params, K, world_to_cam, **render)
