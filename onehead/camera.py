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


def to_gsplat_intrinsics(K: torch.Tensor) -> torch.Tensor:
    """onehead K (pixel centres at integers) -> gsplat K (pixel (i, j) centred at (j + 0.5, i + 0.5)).

    Only the principal point moves, by +0.5 pixel in x and y; works on (..., 3, 3).
    """
    shift = torch.zeros(3, 3, dtype=K.dtype, device=K.device)
    shift[0, 2] = shift[1, 2] = 0.5
    return K + shift


def pytorch3d_camera_params(K: torch.Tensor, world_to_cam: torch.Tensor, height: int,
                            width: int) -> dict[str, torch.Tensor]:
    """onehead camera -> keyword arguments of pytorch3d `PerspectiveCameras(..., in_ndc=True)`.

    pytorch3d (from its documentation): view = world @ R + T (row vectors), view axes +X left,
    +Y up, +Z forward; NDC = (fx X / Z + px, fy Y / Z + py) with the shorter image side spanning
    [-1, 1]; its output pixel (row i, col j) is centred at NDC (-(j + 0.5 - W/2) / s,
    -(i + 0.5 - H/2) / s), s = min(H, W) / 2. So x and y flip, and the principal point moves by
    half a pixel (which pytorch3d's own cameras_from_opencv_projection leaves out).
    K (3, 3) or (B, 3, 3), world_to_cam (4, 4) or (B, 4, 4) -> R (B, 3, 3), T (B, 3),
    focal_length (B, 2), principal_point (B, 2).
    """
    K, world_to_cam = K.reshape(-1, 3, 3), world_to_cam.reshape(-1, 4, 4)
    batch = max(K.shape[0], world_to_cam.shape[0])
    K, world_to_cam = K.expand(batch, 3, 3), world_to_cam.expand(batch, 4, 4)
    flip = torch.tensor([-1.0, -1.0, 1.0], dtype=world_to_cam.dtype, device=world_to_cam.device)
    scale = min(height, width) / 2
    image_centre = torch.tensor([width / 2, height / 2], dtype=K.dtype, device=K.device)
    return {
        "R": world_to_cam[:, :3, :3].transpose(1, 2) * flip,  # R_cv^T diag(-1, -1, 1)
        "T": world_to_cam[:, :3, 3] * flip,
        "focal_length": torch.stack([K[:, 0, 0], K[:, 1, 1]], -1) / scale,
        "principal_point": -(K[:, :2, 2] + 0.5 - image_centre) / scale,
    }


def nvdiffrast_projection(K: torch.Tensor, height: int, width: int, near: float, far: float) -> torch.Tensor:
    """OpenCV camera coordinates -> nvdiffrast (OpenGL) clip space: (B, 4, 4), clip = P @ [x, y, z, 1].

    nvdiffrast (from its documentation) centres output pixel (row i, col j) at NDC
    ((2j + 1) / W - 1, (2i + 1) / H - 1) (its images are stored bottom-up, row 0 at y = -1) and keeps
    the smallest z/w. Mapping pixel (x, y) to NDC ((2x + 1) / W - 1, (2y + 1) / H - 1) therefore
    makes its row i onehead's row i, with no flip; w is the camera z and z/w runs from -1 at `near`
    to 1 at `far`. K (3, 3) or (B, 3, 3).
    """
    K = K.reshape(-1, 3, 3)
    P = K.new_zeros(K.shape[0], 4, 4)
    P[:, 0, 0] = 2 * K[:, 0, 0] / width
    P[:, 0, 2] = (2 * K[:, 0, 2] + 1) / width - 1
    P[:, 1, 1] = 2 * K[:, 1, 1] / height
    P[:, 1, 2] = (2 * K[:, 1, 2] + 1) / height - 1
    P[:, 2, 2] = (far + near) / (far - near)
    P[:, 2, 3] = -2 * far * near / (far - near)
    P[:, 3, 2] = 1.0
    return P


def scale_intrinsics(K: torch.Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> torch.Tensor:
    """K for the same camera after resizing its image from (H, W) to (H', W'): pixel edges scale,
    so a pixel centre x maps to (x + 0.5) * W' / W - 0.5."""
    sy, sx = to_size[0] / from_size[0], to_size[1] / from_size[1]
    K = K.clone()
    K[..., 0, 0] *= sx
    K[..., 1, 1] *= sy
    K[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    K[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return K
