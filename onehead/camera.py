"""onehead's one camera convention: OpenCV.

x right, y down, z forward (into the scene); intrinsics `K` (3, 3) in pixels with the principal
point in pixel coordinates (pixel centres at integers); extrinsics as a 4x4 world-to-camera
matrix. The head model's world has +y up and +z out of the face (FLAME), so the default camera
looks at the face from +z: it flips y and z.
"""

from __future__ import annotations

import torch

DEFAULT_DISTANCE = 1.0  # metres from the camera to the world origin


def default_world_to_cam(distance: float = DEFAULT_DISTANCE, batch: int | None = None,
                         dtype=torch.float32) -> torch.Tensor:
    """A camera on the +z axis looking at the origin, y down: (4, 4) or (batch, 4, 4)."""
    m = torch.tensor([[1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, -1.0, distance], [0, 0, 0, 1.0]], dtype=dtype)
    return m if batch is None else m.expand(batch, 4, 4).clone()


def intrinsics(focal: float | torch.Tensor, height: int, width: int, dtype=torch.float32) -> torch.Tensor:
    """Pinhole K with square pixels and the principal point at the image centre."""
    focal = torch.as_tensor(focal, dtype=dtype)
    zero, one = torch.zeros_like(focal), torch.ones_like(focal)
    cx = torch.full_like(focal, (width - 1) / 2)
    cy = torch.full_like(focal, (height - 1) / 2)
    rows = [torch.stack([focal, zero, cx], -1), torch.stack([zero, focal, cy], -1),
            torch.stack([zero, zero, one], -1)]
    return torch.stack(rows, -2)


def default_focal(height: int, width: int) -> float:
    """Focal length used when none is known: a ~31 degree field of view over the long side."""
    return 1.8 * max(height, width)


def world_to_camera(points: torch.Tensor, world_to_cam: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) world points -> (B, N, 3) camera coordinates."""
    return points @ world_to_cam[..., :3, :3].transpose(-1, -2) + world_to_cam[..., None, :3, 3]


def project(points: torch.Tensor, K: torch.Tensor, world_to_cam: torch.Tensor,
            eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Perspective projection: (B, N, 3) world -> pixels (B, N, 2) and camera depth (B, N)."""
    cam = world_to_camera(points, world_to_cam)
    depth = cam[..., 2]
    uv = cam[..., :2] / depth.clamp(min=eps).unsqueeze(-1)
    pixels = uv * torch.stack([K[..., 0, 0], K[..., 1, 1]], -1).unsqueeze(-2) + K[..., None, :2, 2]
    return pixels, depth
