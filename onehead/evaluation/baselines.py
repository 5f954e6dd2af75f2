"""The floors every learned model must beat, run in the same evaluation as the models.

Both take what every one-shot method takes (onehead.pipelines.reenactment): a prepared reference
(image and tracking at the output size) and the motion to render (a Tracking at the output size).

- copy the reference: every output frame is the reference image.
- nearest training frame (person-specific avatars): the training frame whose tracked expression,
  jaw and head rotation in camera coordinates are closest to the frame to render.
- mesh warp: the reference warped by the head model's motion (onehead.render.warp). Points
  hidden in the reference, and the background that the head uncovers, are filled by inpainting
  (OpenCV Telea). It lives in onehead.pipelines.reenactment, beside the inputs it takes, so that
  pipelines can show it next to a model's output.
"""

from __future__ import annotations

import torch

from onehead.pipelines.reenactment import Motion, Reference, mesh_warp

__all__ = ["copy_reference", "mesh_warp", "NearestTrainingFrame"]


def copy_reference(reference: Reference, motion: Motion) -> torch.Tensor:
    """(T, 3, S, S) in [0, 1]: the reference, once per frame."""
    image = torch.from_numpy(reference.image).permute(2, 0, 1).float() / 255
    return image[None].expand(motion.tracking.num_frames, -1, -1, -1).clone()


class NearestTrainingFrame:
    """The paper-000 baseline: for each frame to render, the training frame (FrameKeys, e.g. an
    avatar's training record) closest in expression, jaw pose and head rotation as the camera sees
    it, matted onto `background` like the avatar's targets; (T, 3, S, S) in [0, 1]."""

    def __init__(self, keys, size: int, background: float = 0.0):
        from onehead.data.datasets import FrameDataset

        self.frames = FrameDataset(keys, size)
        self.background = background
        rows = []
        for key in keys:
            tracking = self.frames.view(key).tracking
            rows.append(pose_features(tracking, [key.frame])[0])
        self.table = torch.stack(rows)

    def __call__(self, reference: Reference, motion: Motion) -> torch.Tensor:
        wanted = pose_features(motion.tracking, range(motion.tracking.num_frames))
        nearest = torch.cdist(wanted, self.table).argmin(1)
        out = []
        for index in nearest.tolist():
            item = self.frames[index]
            out.append(item["image"] * item["mask"] + self.background * (1 - item["mask"]))
        return torch.stack(out)


def pose_features(tracking, frames) -> torch.Tensor:
    """(T, E + 6): expression, jaw pose and the head's rotation in camera coordinates (axis-angle)."""
    import numpy as np
    from scipy.spatial.transform import Rotation

    frames = list(frames)
    head_in_camera = Rotation.from_matrix(tracking.world_to_cam[frames, :3, :3]) * \
        Rotation.from_rotvec(tracking.global_pose[frames])
    values = np.concatenate([tracking.expression[frames], tracking.jaw_pose[frames], head_in_camera.as_rotvec()], -1)
    return torch.as_tensor(values, dtype=torch.float32)
