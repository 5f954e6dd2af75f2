"""The dense landmark embedding (mediapipe's 478 points on the head) and the fit that uses it."""

import numpy as np
import pytest
import torch

from onehead.camera import default_focal, default_world_to_cam, intrinsics, project
from onehead.head.model import SurfacePoints
from onehead.tracking.dense import NUM_POINTS, build_dense_embedding, dense_embedding
from onehead.tracking.fit import DenseTargets, FitSettings, fit_frames
from onehead.tracking.landmarks import mediapipe_regions


def _random_points(head, count=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    faces = torch.randint(0, len(head.faces), (count,), generator=g)
    bary = torch.rand(count, 3, generator=g)
    return SurfacePoints.on(head, faces, bary / bary.sum(-1, keepdim=True))


def _motion(head, frames=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(expression=torch.randn(frames, head.num_expression, generator=g) * 0.5,
                global_pose=torch.randn(frames, 3, generator=g) * 0.2,
                jaw_pose=torch.rand(frames, 3, generator=g) * torch.tensor([0.15, 0.02, 0.02]),
                translation=torch.randn(frames, 3, generator=g) * 0.01)


def test_surface_points_are_the_same_with_and_without_landmarks_only(head):
    points = _random_points(head)
    params = _motion(head)
    for frontal in (True, False):
        fast = head(**params, points=points, landmarks_only=True, frontal_contour=frontal)
        full = head(**params, points=points, frontal_contour=frontal)
        torch.testing.assert_close(fast.points, full.points)
        torch.testing.assert_close(fast.landmarks68, full.landmarks68)
        torch.testing.assert_close(fast.pupils, full.pupils)
    assert head(**params).points is None


def test_surface_points_at_a_vertex_pose_only_that_vertex(head):
    faces = torch.tensor([10, 200, 3000])
    bary = torch.tensor([[0.0, 1.0, 0.0], [0.2, 0.0, 0.8], [0.3, 0.3, 0.4]])
    points = SurfacePoints.on(head, faces, bary)
    assert len(points.vertex_ids) == 1 + 2 + 3  # zero-weight corners are not posed
    params = _motion(head)
    fast = head(**params, points=points, landmarks_only=True)
    full = head(**params)
    corners = full.vertices[:, head.faces[faces]]  # (T, 3, 3, 3)
    torch.testing.assert_close(fast.points, (corners * bary[None, :, :, None]).sum(2))
    torch.testing.assert_close(fast.points[:, 0], full.vertices[:, head.faces[10, 1]])


def test_surface_points_reject_bad_input(head):
    from onehead.errors import ConfigError

    with pytest.raises(ConfigError, match="faces outside"):
        SurfacePoints.on(head, [len(head.faces)], [[1.0, 0, 0]])
    with pytest.raises(ConfigError, match=r"bary \(P, 3\)"):
        SurfacePoints.on(head, [0, 1], [[1.0, 0, 0]])


def test_with_shape_poses_like_the_shape_parameter(head):
    shape = torch.randn(head.num_shape, generator=torch.Generator().manual_seed(3)) * 0.5
    params = _motion(head)
    fixed = head.with_shape(shape)
    for landmarks_only in (True, False):
        a = head(shape=shape[None], **params, landmarks_only=landmarks_only)
        b = fixed(**params, landmarks_only=landmarks_only)
        torch.testing.assert_close(a.landmarks68, b.landmarks68, atol=1e-6, rtol=0)
        torch.testing.assert_close(a.joints, b.joints, atol=1e-6, rtol=0)
    assert fixed.num_shape == 0 and head.num_shape > 0  # the original is untouched
    assert head.dirs.shape[-1] == head.num_shape + head.num_expression


@pytest.fixture(scope="module")
def small_embedding(head):
    """Built from 2 identities x 3 yaws (the shipped default uses more)."""
    return build_dense_embedding(head, identities=2, yaws=(-20.0, 0.0, 20.0), size=384, seed=5)


def test_the_embedding_puts_every_face_point_on_the_surface(head, small_embedding):
    e = small_embedding
    assert e.faces.shape == (NUM_POINTS,) and e.bary.shape == (NUM_POINTS, 3)
    face_points = np.arange(468)
    assert (e.samples[face_points] >= 4).all()  # seen on the surface in most of the 6 renders
    assert ((e.faces >= 0) & (e.faces < len(head.faces))).all()
    np.testing.assert_allclose(e.bary.sum(-1), 1, atol=1e-4)
    assert (e.bary >= -1e-4).all()
    weights = e.weights()
    assert np.isclose(weights.sum(), 68) and (weights[mediapipe_regions()["iris"]] == 0).all()
    lips = mediapipe_regions()["lips"]
    assert weights[lips].mean() > weights[weights > 0].mean() * 0.9  # lips weigh at least average


def _new_head_seen(head, yaw: float, jaw: float = 0.0):
    """A head no embedding here was built from (the first identity of seed 99), rendered as the
    embedding renders them: mediapipe's points on it (478, 2), its shape (1, S), K and world_to_cam."""
    from onehead.data import synthetic
    from onehead.tracking.dense import _renders
    from onehead.tracking.landmarks import LandmarkDetector

    image, _ = next(_renders(head, 1, (yaw,), 384, seed=99, jaws=(jaw,)))
    with LandmarkDetector(mode="image") as detector:
        found = detector.detect(image)
    assert found is not None
    identity = synthetic.random_identity(np.random.default_rng(99), head.num_shape, "dense")
    target, field = synthetic.head_framing(head)
    K = intrinsics(384 / (0.8 * field), 384, 384)
    w2c = torch.as_tensor(synthetic.look_at_camera(yaw, 0.0, 1.0, target))
    return torch.as_tensor(found.points[:, :2]), torch.as_tensor(identity.shape * 0.7)[None], K, w2c


def test_the_embedding_lands_where_mediapipe_sees_a_new_head(head, small_embedding):
    """A head the embedding never saw (another identity, seed): the embedded points, posed and
    projected, lie close to mediapipe's detections on its render."""
    detected, shape, K, w2c = _new_head_seen(head, yaw=10.0)
    out = head(shape=shape, points=small_embedding.points(head))
    pixels, _ = project(out.points, K, w2c)
    iod = (detected[263] - detected[33]).norm()
    error = ((pixels[0] - detected).norm(dim=-1) / iod)[:468]
    assert error.median() < 0.04, float(error.median())
    # closer to mediapipe than the model's hand-placed 68 points are, on the same 68 points
    from onehead.tracking.landmarks import MEDIAPIPE_TO_IBUG68

    hand, _ = project(out.landmarks68, K, w2c)
    mapped = list(MEDIAPIPE_TO_IBUG68)
    hand_error = ((hand[0] - detected[mapped]).norm(dim=-1) / iod)[17:]  # inner 51 (the jaw follows the silhouette)
    assert error[mapped][17:].mean() < hand_error.mean(), (float(error[mapped][17:].mean()), float(hand_error.mean()))


def test_open_mouth_renders_put_the_inner_lips_where_mediapipe_sees_an_open_mouth(head):
    """Embedded from closed mouths alone, the inner-lip points sit on the closed lips' seam; an open
    mouth shows its inner lip edges further in. Renders with the jaw open too bring the embedded
    gap (points 13, 14) nearer mediapipe's on a new head with its mouth open."""
    closed = build_dense_embedding(head, identities=1, yaws=(0.0,), size=384, seed=5, jaws=(0.0,))
    opened = build_dense_embedding(head, identities=1, yaws=(0.0,), size=384, seed=5, jaws=(0.0, 8.0, 16.0))
    assert opened.samples[13] == 3 and closed.samples[13] == 1  # every render is lifted
    detected, shape, K, w2c = _new_head_seen(head, yaw=0.0, jaw=14.0)
    jaw = torch.tensor([[np.radians(14.0), 0.0, 0.0]], dtype=torch.float32)
    detected_gap = (detected[14] - detected[13]).norm()
    gaps = {}
    for name, embedding in (("closed", closed), ("opened", opened)):
        out = head(shape=shape, jaw_pose=jaw, points=embedding.points(head))
        pixels, _ = project(out.points, K, w2c)
        gaps[name] = float((pixels[0, 14] - pixels[0, 13]).norm())
    assert abs(gaps["opened"] - detected_gap) < abs(gaps["closed"] - detected_gap), (gaps, float(detected_gap))


def test_the_dense_term_recovers_a_known_pose(head):
    """Dense targets made by the model itself: the fit finds pose and expression again."""
    embedding = dense_embedding(head)
    used = np.flatnonzero(embedding.weights() > 0)
    points = embedding.points(head, used)
    frames = 3
    params = _motion(head, frames, seed=4)
    K = intrinsics(default_focal(512, 512), 512, 512).expand(frames, 3, 3).clone()
    w2c = default_world_to_cam(batch=frames)
    with torch.no_grad():
        truth = head(**params, points=points, landmarks_only=True, frontal_contour=True)
        targets, _ = project(truth.landmarks68, K, w2c)
        dense_pixels, _ = project(truth.points, K, w2c)
        iris, _ = project(truth.pupils, K, w2c)
    dense = DenseTargets(points, dense_pixels, torch.from_numpy(embedding.weights()[used]))
    fit = fit_frames(head, targets, K, w2c, torch.ones(frames, dtype=torch.bool), iris=iris,
                     shape=torch.zeros(head.num_shape), optimize_shape=False,
                     settings=FitSettings(smooth_weight=0.0, asymmetry_prior=0.0), dense=dense)  # the random
    # expressions are lopsided too: without the prior that leans against those, the fit is exact
    with torch.no_grad():
        again = head(**{k: fit[k] for k in ("expression", "global_pose", "jaw_pose", "eye_pose", "translation")},
                     points=points, landmarks_only=True, frontal_contour=True)
        pixels, _ = project(again.points, K, w2c)
    iod = (targets[:, 45] - targets[:, 36]).norm(dim=-1)
    assert ((pixels - dense_pixels).norm(dim=-1).mean(-1) / iod).max() < 0.01


def test_a_head_without_uvs_is_embedded_from_untextured_renders():
    """FLAME files often come without a UV layout: the renders are then plain shaded skin, which
    mediapipe still reads; the embedding must agree with the textured one."""
    from onehead.head.model import load_head_model

    head = load_head_model("basic")  # its own instance: the shared fixture keeps its UVs
    textured = build_dense_embedding(head, identities=1, yaws=(-20.0, 0.0, 20.0), size=384, seed=3)
    head.uv_coords = None
    plain = build_dense_embedding(head, identities=1, yaws=(-20.0, 0.0, 20.0), size=384, seed=3)
    assert (plain.samples[:468] >= 2).all()
    template = head.v_template.numpy()
    corners = head.faces.numpy()

    def positions(e):
        return (template[corners[e.faces]] * e.bary[..., None]).sum(1)

    gap = np.linalg.norm(positions(plain) - positions(textured), axis=-1)[:468]
    assert np.median(gap) < 0.006  # metres: the two agree to a few millimetres on most points
