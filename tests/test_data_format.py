"""onehead's data format: sequence folders, the datasets over them, and real-video preparation."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from onehead.camera import intrinsics, project
from onehead.data.datasets import ReenactmentDataset
from onehead.data.prepare import crop_affine, crop_boxes, crop_tracking
from onehead.pipelines.prepare_video import prepare_video
from onehead.data.sequence import SequenceMeta, copy_frames, open_sequence, read_meta, write_view
from onehead.data.tracking_file import Tracking
from onehead.errors import MediaReadError


def _tracking(frames, size=(40, 48), seed=0, shape_dim=5, expr_dim=4):
    rng = np.random.default_rng(seed)
    h, w = size
    K = np.repeat(intrinsics(60.0, h, w).numpy()[None], frames, 0)
    w2c = np.repeat(np.eye(4, dtype=np.float32)[None], frames, 0)
    w2c[:, 2, 3] = 1.0
    return Tracking(
        shape=rng.normal(size=shape_dim).astype(np.float32),
        expression=rng.normal(size=(frames, expr_dim)).astype(np.float32),
        global_pose=rng.normal(size=(frames, 3)).astype(np.float32) * 0.1,
        neck_pose=np.zeros((frames, 3), np.float32), jaw_pose=np.zeros((frames, 3), np.float32),
        eye_pose=np.zeros((frames, 6), np.float32), translation=np.zeros((frames, 3), np.float32),
        K=K.astype(np.float32), world_to_cam=w2c,
        landmarks68=rng.uniform(0, 40, (frames, 68, 2)).astype(np.float32),
        landmarks_mp=np.full((frames, 478, 2), np.nan, np.float32), valid=np.ones(frames, bool),
        fit_error=np.zeros(frames, np.float32), image_size=np.array(size), fps=25.0)


def _write_sequence(directory, frames=4, views=("cam00",), size=(40, 48), seed=0, domain="synthetic"):
    rng = np.random.default_rng(seed)
    images = {}
    for v, view in enumerate(views):
        images[view] = rng.integers(0, 256, (frames, *size, 3), dtype=np.uint8)
        masks = rng.uniform(size=(frames, *size)) > 0.5
        write_view(directory, view, images[view], _tracking(frames, size, seed), masks=masks.astype(np.uint8) * 255)
    SequenceMeta(fps=25.0, size=size, num_frames=frames, domain=domain, views=list(views)).save(directory)
    return images


def test_sequence_round_trip(tmp_path):
    images = _write_sequence(tmp_path / "seq", views=("cam00", "cam01"))
    seq = open_sequence(tmp_path / "seq")
    assert seq.meta.views == ["cam00", "cam01"] and seq.meta.size == (40, 48)
    for name, view in seq.views.items():
        assert view.num_frames == 4
        np.testing.assert_array_equal(view.frame(2), images[name][2])  # PNG is lossless
        assert set(np.unique(view.mask(1))) <= {0.0, 1.0}
    np.testing.assert_array_equal(seq.views["cam00"].tracking.shape, _tracking(4, seed=0).shape)


def test_copy_frames_copies_a_range_and_leaves_the_source(tmp_path):
    images = _write_sequence(tmp_path / "seq", frames=6, views=("cam00", "cam01"), domain="real")
    before = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "seq").rglob("*"))
    copy_frames(tmp_path / "seq", tmp_path / "part", 2, 5)
    part, whole = open_sequence(tmp_path / "part"), open_sequence(tmp_path / "seq")
    assert part.meta.num_frames == 3 and part.meta.domain == "real" and part.meta.extra["copied_frames"] == [2, 5]
    for name, view in part.views.items():
        assert view.num_frames == 3
        np.testing.assert_array_equal(view.frame(0), images[name][2])
        np.testing.assert_array_equal(view.mask(2), whole.views[name].mask(4))
        np.testing.assert_array_equal(view.tracking.expression, whole.views[name].tracking.expression[2:5])
        np.testing.assert_array_equal(view.tracking.shape, whole.views[name].tracking.shape)
    assert sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "seq").rglob("*")) == before
    with pytest.raises(MediaReadError, match="already exists"):
        copy_frames(tmp_path / "seq", tmp_path / "seq", 0, 2)
    with pytest.raises(MediaReadError, match="not a non-empty range of its 6 frames"):
        copy_frames(tmp_path / "seq", tmp_path / "bad", 4, 9)


def test_tracking_and_meta_writes_are_atomic(tmp_path, monkeypatch):
    import onehead.data.tracking_file as tracking_file
    from onehead.data.tracking_file import load_tracking

    path = tmp_path / "tracking.npz"
    assert _tracking(3, seed=1).save(path) == path
    before = path.read_bytes()
    real = tracking_file.np.savez_compressed

    def broken(file, **arrays):  # half an archive, then the disk fills up
        real(file, **dict(list(arrays.items())[:3]))
        raise OSError("disk full")

    monkeypatch.setattr(tracking_file.np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        _tracking(5, seed=2).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracking.npz"]
    _tracking(5, seed=2).save(path)  # a whole write replaces the file
    assert load_tracking(path).num_frames == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracking.npz"]

    meta = SequenceMeta(fps=25.0, size=(40, 48), num_frames=4, domain="real")
    meta.save(tmp_path / "seq")
    monkeypatch.setattr("onehead.files.os.replace", lambda *a: (_ for _ in ()).throw(OSError("no space")))
    with pytest.raises(OSError, match="no space"):
        SequenceMeta(fps=30.0, size=(40, 48), num_frames=9, domain="real").save(tmp_path / "seq")
    monkeypatch.undo()
    assert read_meta(tmp_path / "seq").num_frames == 4
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == ["meta.json"]


def test_domains_are_defined_once():
    from onehead.data.datasets import DOMAIN_IDS
    from onehead.data.sequence import DOMAINS
    from onehead.models import conditioning

    assert conditioning.DOMAINS is DOMAINS
    assert [DOMAIN_IDS[name] for name in DOMAINS] == list(range(len(DOMAINS)))


def test_bad_sequences_name_the_file(tmp_path):
    with pytest.raises(MediaReadError, match="meta.json"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(MediaReadError, match="not a valid meta.json"):
        read_meta(tmp_path)
    _write_sequence(tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    (tmp_path / "a" / "meta.json").write_text(json.dumps(dict(meta, domain="cartoon")))
    with pytest.raises(MediaReadError, match="domain"):
        read_meta(tmp_path / "a")
    _write_sequence(tmp_path / "b")
    (tmp_path / "b" / "cam00" / "frames" / "000003.png").unlink()
    with pytest.raises(MediaReadError, match="3 files but the tracking has 4"):
        open_sequence(tmp_path / "b")


def test_dataset_skips_broken_sequences_with_a_counted_warning(tmp_path):
    _write_sequence(tmp_path / "good1", frames=5, seed=1)
    _write_sequence(tmp_path / "good2", frames=3, views=("cam00", "cam01"), seed=2, domain="real")
    _write_sequence(tmp_path / "broken", frames=3, seed=3)
    (tmp_path / "broken" / "cam00" / "tracking.npz").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="skipped 1 of 3 sequences"):
        data = ReenactmentDataset(tmp_path, clip_length=2)
    assert [s.name for s in data.sequences] == ["good1", "good2"]
    assert len(data.skipped) == 1 and "broken" in data.skipped[0][0]
    assert len(data) == 4 + 2 * 2  # clips of 2 frames: 4 in good1, 2 per view in good2
    item = data[0]
    assert item["target"].shape == (2, 3, 40, 48) and item["reference"].shape == (3, 40, 48)
    assert item["target_params"]["expression"].shape == (2, 4)
    assert item["reference_params"]["shape"].shape == (5,)
    assert item["K"].shape == (2, 3, 3) and item["world_to_cam"].shape == (2, 4, 4)
    assert int(item["domain"]) == 1 and int(data[5]["domain"]) == 0
    batch = torch.utils.data.default_collate([data[0], data[1]])
    assert batch["target"].shape == (2, 2, 3, 40, 48)


def test_dataset_replaces_an_unreadable_frame_and_counts_it(tmp_path):
    _write_sequence(tmp_path / "s", frames=3)
    (tmp_path / "s" / "cam00" / "frames" / "000000.png").write_bytes(b"not a png")
    data = ReenactmentDataset(tmp_path, clip_length=1, cross_view=False)
    items = []
    with pytest.warns(UserWarning, match="read failure"):
        for i in range(len(data)):
            items.append(data[i])
    assert data.read_failures >= 1
    assert all(int(item["frames"][0]) != 0 for item in items)  # frame 0 never came back


def test_dataset_resize_keeps_projection_consistent(tmp_path):
    _write_sequence(tmp_path / "s", frames=2, size=(40, 48))
    data = ReenactmentDataset(tmp_path, size=32)
    item = data[0]
    assert item["target"].shape[-2:] == (32, 32)
    original = open_sequence(tmp_path / "s").views["cam00"].tracking
    point = torch.tensor([[[0.05, -0.02, 0.1]]])
    w2c = torch.as_tensor(original.world_to_cam[:1])
    before, _ = project(point, torch.as_tensor(original.K[:1]), w2c)
    after, _ = project(point, item["K"][:1], w2c)
    # pixel-edge coordinates scale exactly: (x + 0.5) * 32 / 48
    expected = (before + 0.5) * torch.tensor([32 / 48, 32 / 40]) - 0.5
    torch.testing.assert_close(after, expected)


def test_crop_is_an_exact_camera_change(head):
    params = {"global_pose": torch.tensor([[0.1, 0.3, 0.0]])}
    lm3d = head(**params).landmarks68
    K = intrinsics(500.0, 300, 400)[None]
    w2c = torch.eye(4)[None]
    w2c[0, 1, 1] = w2c[0, 2, 2] = -1
    w2c[0, 2, 3] = 0.9
    lm2d, _ = project(lm3d, K, w2c)
    tracking = _tracking(1, size=(300, 400))
    tracking.K, tracking.world_to_cam = K.numpy(), w2c.numpy()
    tracking.landmarks68 = lm2d.numpy()
    boxes = crop_boxes(tracking.landmarks68, tracking.valid, smooth_frames=0)
    affine = crop_affine(boxes[0], 128)
    cropped = crop_tracking(tracking, affine[None], 128)
    reprojected, _ = project(lm3d, torch.as_tensor(cropped.K), w2c)
    np.testing.assert_allclose(reprojected[0].numpy(), cropped.landmarks68[0], atol=1e-3)
    assert (cropped.landmarks68 > 0).all() and (cropped.landmarks68 < 128).all()
    # cv2.warpAffine moves a bright pixel exactly where the affine says
    image = np.zeros((300, 400), np.float32)
    image[140, 210] = 1.0
    warped = cv2.warpAffine(image, affine, (128, 128), flags=cv2.INTER_LINEAR)
    peak = np.unravel_index(np.argmax(warped), warped.shape)
    expected = affine @ np.array([210, 140, 1.0])
    assert abs(peak[1] - expected[0]) <= 1 and abs(peak[0] - expected[1]) <= 1


def test_prepare_video_on_the_real_clip(tmp_path, carphone, head):
    from onehead.tracking.tracker import TrackOptions

    out = prepare_video(carphone, tmp_path / "carphone", size=128, head=head, max_frames=12,
                        options=TrackOptions(progress=False))
    seq = open_sequence(out)
    assert seq.meta.domain == "real" and seq.meta.num_frames == 12 and seq.meta.size == (128, 128)
    view = seq.views["cam00"]
    assert view.frame(0).shape == (128, 128, 3)
    coverage = np.mean([view.mask(t).mean() for t in range(12)])
    assert 0.2 < coverage < 0.95, coverage  # a person, not the whole frame
    lm = view.tracking.landmarks68
    assert (lm > 0).all() and (lm < 128).all()
    # the face is centred and fills a stable part of the crop
    extent = lm.max(1) - lm.min(1)
    assert np.all(extent.max(-1) > 128 / 2.5) and np.all(extent.max(-1) < 128 / 1.5)


def test_a_video_given_as_tracking_is_named_as_not_a_tracking_file(tmp_path):
    from onehead.data.tracking_file import load_tracking
    from onehead.data.video import write_video
    from onehead.errors import MediaReadError

    clip = write_video(tmp_path / "clip.mp4", np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(MediaReadError, match="clip.mp4: not a tracking file"):
        load_tracking(clip)
