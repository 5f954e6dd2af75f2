"""Perceptual metrics: LPIPS (against a hand computation from the state dict) and dlib CSIM
(logic with a stand-in embedder, error messages, and the real model on real portraits)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from onehead import cli
from onehead.errors import CheckpointError, MetricUnavailable
from onehead.metrics import identity
from onehead.metrics.identity import csim, fetch_face_models, load_face_embedder
from onehead.metrics.lpips import LPIPS, convert_lpips_weights, load_lpips, lpips

CHANNELS = (64, 192, 384, 256, 256)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LPIPS().eval().requires_grad_(False)


def _images(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _reference_lpips(state, x, y):
    """LPIPS v0.1 written out from the state dict: scaling layer, AlexNet taps after each ReLU,
    channel-unit normalisation, squared difference, 1x1 linear layers, spatial mean, sum."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(image):
        h = (image * 2 - 1 - shift) / scale
        out = []
        h = F.relu(F.conv2d(h, state["features.0.weight"], state["features.0.bias"], stride=4, padding=2))
        out.append(h)
        h = F.max_pool2d(h, 3, 2)
        h = F.relu(F.conv2d(h, state["features.3.weight"], state["features.3.bias"], padding=2))
        out.append(h)
        h = F.max_pool2d(h, 3, 2)
        for index in (6, 8, 10):
            h = F.relu(F.conv2d(h, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1))
            out.append(h)
        return out

    total = torch.zeros(len(x))
    for i, (a, b) in enumerate(zip(taps(x), taps(y))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        weighted = ((a - b) ** 2 * state[f"lin{i}.weight"].view(1, -1, 1, 1)).sum(1)
        total += weighted.mean((1, 2))
    return total


def test_lpips_of_identical_images_is_zero(model):
    x = _images(3, 3, 64, 64)
    torch.testing.assert_close(lpips(x, x, model), torch.zeros(3))


def test_lpips_equals_a_hand_computation(model):
    x = F.interpolate(_images(3, 3, 18, 24, seed=1), scale_factor=4, mode="bilinear")  # smooth images
    noise = _images(3, 3, 72, 96, seed=2) - 0.5
    y = (x + torch.tensor([0.05, 0.2, 0.6]).view(3, 1, 1, 1) * noise).clamp(0, 1)
    ours = lpips(x, y, model)
    reference = _reference_lpips(model.state_dict(), x, y)
    assert ours.shape == (3,) and bool((ours[1:] > 1.5 * ours[:-1]).all())  # more noise, further
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(x, y), ours)


def test_lpips_state_dict_matches_torchvision_alexnet_layout(model):
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["features.0.weight"] == (64, 3, 11, 11) and shapes["features.3.weight"] == (192, 64, 5, 5)
    assert shapes["features.6.weight"] == (384, 192, 3, 3) and shapes["features.10.bias"] == (256,)
    assert [shapes[f"lin{i}.weight"] for i in range(5)] == [(1, c, 1, 1) for c in CHANNELS]
    assert len(shapes) == 15  # five convs (weight, bias) and five linear layers, no buffers


def test_lpips_linear_weights_are_non_negative(model, tmp_path):
    assert all(bool((model.state_dict()[f"lin{i}.weight"] >= 0).all()) for i in range(5))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["lin2.weight"][0, 0] = -0.1
    save_file(state, str(tmp_path / "negative.safetensors"))
    with pytest.raises(CheckpointError, match="non-negative.*lin2.weight"):
        LPIPS.from_file(tmp_path / "negative.safetensors")


def test_lpips_safetensors_round_trip(model, tmp_path):
    path = tmp_path / "lpips.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = LPIPS.from_file(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    x, y = _images(2, 3, 64, 64, seed=3), _images(2, 3, 64, 64, seed=4)
    torch.testing.assert_close(lpips(x, y, loaded), lpips(x, y, model))


def _fake_official_files(tmp_path, seed=0):
    """torchvision-style AlexNet state dict (with a classifier to ignore) and LPIPS's alex.pth."""
    g = torch.Generator().manual_seed(seed)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    alexnet = {}
    for index, shape in shapes.items():
        alexnet[f"features.{index}.weight"] = torch.randn(shape, generator=g) * 0.05
        alexnet[f"features.{index}.bias"] = torch.randn(shape[0], generator=g) * 0.05
    alexnet["classifier.1.weight"] = torch.randn(8, 4, generator=g)
    alexnet["classifier.1.bias"] = torch.randn(8, generator=g)
    linear = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(CHANNELS)}
    torch.save(alexnet, tmp_path / "alexnet.pth")
    torch.save(linear, tmp_path / "alex.pth")
    return alexnet, linear


def test_convert_official_weights_round_trip(tmp_path):
    alexnet, linear = _fake_official_files(tmp_path)
    out = convert_lpips_weights(tmp_path / "alexnet.pth", tmp_path / "alex.pth", tmp_path / "out" / "l.safetensors")
    loaded = LPIPS.from_file(out)
    state = loaded.state_dict()
    for key, value in alexnet.items():
        if key.startswith("features."):
            torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    for i in range(5):
        torch.testing.assert_close(state[f"lin{i}.weight"], linear[f"lin{i}.model.1.weight"], rtol=0, atol=0)
    x, y = _images(1, 3, 64, 64, seed=5), _images(1, 3, 64, 64, seed=6)
    torch.testing.assert_close(lpips(x, y, loaded), _reference_lpips(state, x, y), rtol=1e-5, atol=1e-6)


def test_convert_command_helper(tmp_path, capsys):
    _fake_official_files(tmp_path)
    out = tmp_path / "cli.safetensors"
    assert cli.main(["convert-lpips", "--alexnet", str(tmp_path / "alexnet.pth"),
                     "--linear", str(tmp_path / "alex.pth"), "--out", str(out)]) == 0
    assert out.is_file()
    assert "ONEHEAD_LPIPS_WEIGHTS" in capsys.readouterr().out
    # a wrong input file is one error line and exit code 2, and writes nothing
    assert cli.main(["convert-lpips", "--alexnet", str(tmp_path / "nope.pth"),
                     "--linear", str(tmp_path / "alex.pth"), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()


def test_convert_rejects_wrong_files(tmp_path):
    alexnet, linear = _fake_official_files(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        convert_lpips_weights(tmp_path / "nope.pth", tmp_path / "alex.pth", tmp_path / "o.safetensors")
    del linear["lin4.model.1.weight"]
    torch.save(linear, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="lin4.model.1.weight"):
        convert_lpips_weights(tmp_path / "alexnet.pth", tmp_path / "short.pth", tmp_path / "o.safetensors")
    alexnet["features.3.weight"] = alexnet["features.3.weight"][:, :32]
    torch.save(alexnet, tmp_path / "narrow.pth")
    with pytest.raises(CheckpointError, match=r"wrong shape: features.3.weight \(192, 32, 5, 5\)"):
        convert_lpips_weights(tmp_path / "narrow.pth", tmp_path / "alex.pth", tmp_path / "o.safetensors")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read AlexNet weights file"):
        convert_lpips_weights(tmp_path / "text.pth", tmp_path / "alex.pth", tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


def test_lpips_mask(model):
    x = _images(2, 3, 96, 256, seed=7)
    y = x.clone()
    y[..., 224:] = _images(2, 3, 96, 32, seed=8)  # changed only at the far right
    ones = torch.ones(2, 1, 96, 256)
    torch.testing.assert_close(lpips(x, y, model, ones), lpips(x, y, model))
    left = torch.zeros(2, 1, 96, 256)
    left[..., :64] = 1  # every layer's masked cells see only the unchanged left part
    assert bool((lpips(x, y, model) > 0).all())
    torch.testing.assert_close(lpips(x, y, model, left), torch.zeros(2))
    # the per-layer maps averaged over the area-resized mask, image by image
    other = _images(2, 3, 96, 256, seed=9)
    mask = (_images(2, 1, 96, 256, seed=10) > 0.5).float()
    masked = lpips(x, other, model, mask)
    for i in range(2):
        expected = sum(float((d[i] * F.adaptive_avg_pool2d(mask[i:i + 1], d.shape[-2:])[0]).sum()
                             / F.adaptive_avg_pool2d(mask[i:i + 1], d.shape[-2:]).sum())
                       for d in model.layer_distances(x, other))
        assert abs(float(masked[i]) - expected) < 1e-5
    assert not torch.allclose(masked, lpips(x, other, model))


def test_lpips_input_checks(model):
    with pytest.raises(ValueError, match="at least 31"):
        lpips(_images(1, 3, 16, 64), _images(1, 3, 16, 64), model)
    with pytest.raises(ValueError, match="one shape"):
        lpips(_images(1, 3, 64, 64), _images(2, 3, 64, 64), model)


def test_lpips_missing_weights_messages(model, tmp_path, monkeypatch):
    monkeypatch.delenv("ONEHEAD_LPIPS_WEIGHTS", raising=False)
    with pytest.raises(MetricUnavailable, match="LPIPS weights absent.*ONEHEAD_LPIPS_WEIGHTS.*convert-lpips"):
        load_lpips()
    with pytest.raises(CheckpointError, match=r"nope.safetensors does not exist; make one with `onehead convert-lpips"):
        load_lpips(tmp_path / "nope.safetensors")
    monkeypatch.setenv("ONEHEAD_LPIPS_WEIGHTS", str(tmp_path / "env.safetensors"))
    with pytest.raises(CheckpointError, match="env.safetensors does not exist"):
        load_lpips()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lin4.weight"}
    state["extra"] = torch.zeros(1)
    save_file(state, str(tmp_path / "env.safetensors"))
    with pytest.raises(CheckpointError, match="missing: lin4.weight; unexpected: extra"):
        load_lpips()
    (tmp_path / "env.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_lpips()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "env.safetensors"))
    assert isinstance(load_lpips(), LPIPS)


# ---------------------------------------------------------------- CSIM


class VectorEmbedder:
    """Stand-in: the 'images' are the descriptors themselves (NaN rows: no face)."""

    def embed(self, vectors):
        return np.asarray(vectors, dtype=np.float64)


def test_csim_with_known_vectors():
    nan = float("nan")
    prediction = [[1, 0], [0, 1], [nan, nan], [3, 4]]
    reference = [[1, 0], [2, 0], [1, 0], [0, 5]]
    result = csim(prediction, reference, VectorEmbedder())
    assert result["frames"] == 3 and result["failures"] == 1 and result["reference_failures"] == 0
    assert result["csim"] == pytest.approx((1 + 0 + 0.8) / 3)
    assert result["distance"] == pytest.approx((0 + np.sqrt(5) + np.sqrt(10)) / 3)
    assert result["match_rate"] == pytest.approx(1 / 3) and result["threshold"] == 0.6


def test_csim_single_reference_and_failures():
    nan = float("nan")
    result = csim([[1, 0], [1, 1], [nan, nan]], [[2, 0]], VectorEmbedder())
    assert result["frames"] == 2 and result["failures"] == 1
    assert result["csim"] == pytest.approx((1 + np.sqrt(0.5)) / 2)
    # a reference without a face: nothing compared, counted, means undefined (not filled)
    result = csim([[1, 0], [0, 1]], [[nan, nan]], VectorEmbedder())
    assert result["frames"] == 0 and result["failures"] == 0 and result["reference_failures"] == 1
    assert np.isnan(result["csim"]) and np.isnan(result["distance"])
    with pytest.raises(ValueError, match="3 predicted frames against 2 references"):
        csim([[1, 0]] * 3, [[1, 0]] * 2, VectorEmbedder())


def test_image_conversion():
    frames = _images(2, 3, 8, 10, seed=11)
    converted = identity._as_uint8_images(frames)
    assert len(converted) == 2 and converted[0].shape == (8, 10, 3) and converted[0].dtype == np.uint8
    np.testing.assert_array_equal(converted[1], (frames[1].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    single = np.zeros((8, 10, 3), np.uint8)
    assert len(identity._as_uint8_images(single)) == 1
    with pytest.raises(ValueError, match="uint8"):
        identity._as_uint8_images(np.zeros((1, 8, 10, 3), np.float32))


def test_face_embedder_missing_files_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEHEAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ONEHEAD_FACE_MODELS", raising=False)
    with pytest.raises(MetricUnavailable, match=r"missing in .*cache/face_models \(the onehead cache\).*"
                                                r"dlib_face_recognition_resnet_model_v1.dat.*onehead fetch csim"):
        load_face_embedder()
    (tmp_path / "given").mkdir()
    (tmp_path / "given" / "shape_predictor_5_face_landmarks.dat").write_bytes(b"")
    with pytest.raises(MetricUnavailable, match=r"\(the given folder\): dlib_face_recognition_resnet_model_v1.dat;"):
        load_face_embedder(tmp_path / "given")
    (tmp_path / "given" / "dlib_face_recognition_resnet_model_v1.dat").write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot load the dlib face models"):
        load_face_embedder(tmp_path / "given")  # both there, but empty
    monkeypatch.setenv("ONEHEAD_FACE_MODELS", str(tmp_path / "env"))
    with pytest.raises(MetricUnavailable, match=r"env \(\$ONEHEAD_FACE_MODELS\)"):
        load_face_embedder()
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    with pytest.raises(MetricUnavailable, match="CSIM needs dlib.*dlib-bin"):
        load_face_embedder()


def test_fetch_command_helper(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(identity, "fetch_face_models", lambda cache_dir=None: calls.append(cache_dir) or tmp_path)
    assert cli.main(["fetch", "csim", "--cache-dir", str(tmp_path)]) == 0 and calls == [str(tmp_path)]
    assert "dlib_face_recognition_resnet_model_v1.dat" in capsys.readouterr().out


@pytest.fixture(scope="module")
def embedder():
    """dlib with the real model files, fetched into the cache if they are not there yet."""
    return load_face_embedder(fetch_face_models())


def test_csim_real_model_on_portraits(embedder):
    from onehead.data.samples import astronaut, grace_hopper

    a, g = astronaut(), grace_hopper()
    same = csim(a, a, embedder)
    assert same["frames"] == 1 and same["failures"] == 0
    assert same["csim"] > 0.999 and same["distance"] < 1e-6
    different = csim(a, g, embedder)
    assert different["frames"] == 1 and different["distance"] > 0.6 and different["match_rate"] == 0
    vectors = embedder.embed(np.stack([a, np.zeros_like(a)]))
    assert vectors.shape == (2, 128) and vectors.dtype == np.float64
    assert np.isfinite(vectors[0]).all() and np.isnan(vectors[1]).all()
    black = csim(np.stack([a, np.zeros_like(a)]), a, embedder)
    assert black["frames"] == 1 and black["failures"] == 1 and black["csim"] > 0.999


def test_embed_turned_finds_a_face_rolled_beyond_the_detector(embedder):
    from PIL import Image

    from onehead.data.samples import astronaut

    upright = embedder.embed_one(astronaut())
    rolled = np.asarray(Image.fromarray(astronaut()).rotate(70, resample=Image.BICUBIC))
    assert embedder.embed_one(rolled) is None  # HOG looks for upright faces
    assert embedder.embed_turned(rolled, turns=()) is None
    found = embedder.embed_turned(rolled)  # turned back by 30 degrees, 40 from upright: found
    assert found is not None and np.linalg.norm(found - upright) < 0.6
    assert np.array_equal(embedder.embed_turned(astronaut()), upright)  # upright: no search


def test_csim_real_model_on_small_torch_frames(embedder):
    from onehead.data.samples import astronaut

    a = torch.from_numpy(astronaut()).permute(2, 0, 1)[None].float() / 255
    small = F.interpolate(a, size=(128, 128), mode="bilinear", antialias=True, align_corners=False)
    result = csim(small, a, embedder)  # upsampled before detection; same person within dlib's threshold
    assert result["frames"] == 1 and result["failures"] == 0 and result["distance"] < 0.6
