"""Small geometry helpers shared by the head model, its generator, the renderers and the metrics
(numpy and torch)."""

from __future__ import annotations

import numpy as np
import torch


def vertex_normals_np(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals of one mesh, (V, 3)."""
    tri = vertices[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals, batched: (B, V, 3) -> (B, V, 3)."""
    tri = vertices[:, faces]  # (B, F, 3, 3)
    face_n = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals.index_add_(1, faces[:, k], face_n)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)


def barycentric_points(vertices: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor,
                       bary: torch.Tensor) -> torch.Tensor:
    """Points on a batched mesh given per-point faces and barycentric weights.

    vertices (B, V, 3); face_idx (L,) or (B, L); bary (L, 3) or (B, L, 3) -> (B, L, 3).
    """
    batch = vertices.shape[0]
    if face_idx.dim() == 1:
        face_idx = face_idx.expand(batch, -1)
    if bary.dim() == 2:
        bary = bary.expand(batch, -1, -1)
    corner_ids = faces[face_idx]  # (B, L, 3)
    corners = torch.gather(vertices, 1, corner_ids.reshape(batch, -1, 1).expand(-1, -1, 3))
    corners = corners.reshape(batch, -1, 3, 3)
    return (corners * bary.unsqueeze(-1)).sum(dim=2)


def directed_edges_balanced(faces: np.ndarray) -> bool:
    """True when every edge is used exactly twice, once in each direction.

    That is the test for a closed, consistently oriented (watertight) surface.
    """
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    forward = {tuple(e) for e in edges.tolist()}
    if len(forward) != len(edges):
        return False  # some directed edge is used twice
    return all((b, a) in forward for a, b in forward)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The least-squares similarity (Umeyama, no reflection) taking points (N, D) onto (N, D), D 2
    or 3: (scale s, rotation R (D, D), translation t) with target ~ s * source @ R.T + t."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mu_s, mu_t = source.mean(0), target.mean(0)
    xs, xt = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(xt.T @ xs / len(source))
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    fix = np.diag([1.0] * (source.shape[1] - 1) + [d])
    rotation = u @ fix @ vt
    variance = (xs ** 2).sum() / len(source)
    scale = float((sigma * np.diag(fix)).sum() / variance) if variance > 0 else 1.0
    return scale, rotation, mu_t - scale * mu_s @ rotation.T


def transferred_rotations(driving: np.ndarray, first: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The head rotations (T, 3, axis-angle) a reference takes from a driving head: each driving
    rotation relative to `first`, taken in the head's own frame, R_ref R_first^T R_drv(t). So a nod
    or a tilt towards the shoulder stays one on a turned portrait; taken about the camera's axes
    instead, a tilt of a frontal driver would turn a three-quarter view further towards profile."""
    from scipy.spatial.transform import Rotation

    turn = Rotation.from_rotvec(np.reshape(first, 3)).inv() * Rotation.from_rotvec(np.reshape(driving, (-1, 3)))
    return (Rotation.from_rotvec(np.reshape(reference, 3)) * turn).as_rotvec()
