"""The head models: open-model geometry, agreement with smplx.FLAME, semantics, FLAME-format I/O."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import shutil
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from onehead.errors import CheckpointError, ConfigError
from onehead.head.flame_format import (
    DYNAMIC_EMBEDDING,
    STATIC_EMBEDDING,
    load_pickle_restricted,
    read_flame_dir,
    write_flame_dir,
)
from onehead.head.generate import EXPRESSION_NAMES, generate_basic_head
from onehead.head.geometry import directed_edges_balanced
from onehead.head.model import basic_head_dir, load_head_model

DEG = np.pi / 180


def _random_params(head, batch, seed, yaws_deg=None):
    """Random but plausible parameters for `batch` heads (float32 tensors)."""
    g = torch.Generator().manual_seed(seed)
    params = {
        "shape": torch.randn(batch, head.num_shape, generator=g),
        "expression": torch.randn(batch, head.num_expression, generator=g),
        "global_pose": torch.randn(batch, 3, generator=g) * 0.15,
        "neck_pose": torch.randn(batch, 3, generator=g) * 0.1,
        "jaw_pose": torch.randn(batch, 3, generator=g) * 0.05,
        "eye_pose": torch.randn(batch, 6, generator=g) * 0.1,
        "translation": torch.randn(batch, 3, generator=g) * 0.05,
    }
    params["jaw_pose"][:, 0] = params["jaw_pose"][:, 0].abs() * 3  # open, as a jaw does
    if yaws_deg is not None:
        params["global_pose"][:, 1] = torch.tensor(yaws_deg, dtype=torch.float32) * DEG
    return params


def _expression(head, name, value):
    expr = torch.zeros(1, head.num_expression)
    expr[0, EXPRESSION_NAMES.index(name)] = value
    return expr


def _landmarks(head, **params):
    with torch.no_grad():
        return head(**params).landmarks68[0].numpy()


# ----------------------------------------------------------------------------- smplx agreement

def test_forward_matches_smplx_flame(head_full):
    """smplx.FLAME on the same directory gives the same vertices, joints and 68 landmarks.

    smplx returns joints = 5 joints + 51 static landmarks + 17 dynamic (jaw) landmarks;
    onehead's landmarks68 are the 17 jaw points first, then the 51 static ones (iBUG order).
    The yaws go past the +-39 degree end of the contour table on both sides.
    """
    smplx = pytest.importorskip("smplx")
    yaws = [-70.0, -45.0, -20.0, 0.0, 15.0, 42.0, 65.0]
    batch = len(yaws)
    flame = smplx.FLAME(model_path=str(basic_head_dir()), num_betas=300, num_expression_coeffs=100,
                        use_face_contour=True, batch_size=batch)
    p = _random_params(head_full, batch, seed=0, yaws_deg=yaws)
    with torch.no_grad():
        ours = head_full(**p)
        ref = flame(betas=p["shape"], expression=p["expression"], global_orient=p["global_pose"],
                    neck_pose=p["neck_pose"], jaw_pose=p["jaw_pose"], leye_pose=p["eye_pose"][:, :3],
                    reye_pose=p["eye_pose"][:, 3:], transl=p["translation"])
    assert ref.joints.shape == (batch, 5 + 51 + 17, 3)
    assert ours.vertices.shape == ref.vertices.shape
    tol = 1e-5  # metres
    assert torch.allclose(ours.vertices, ref.vertices, atol=tol, rtol=0)
    assert torch.allclose(ours.joints, ref.joints[:, :5], atol=tol, rtol=0)
    assert torch.allclose(ours.landmarks68[:, 17:], ref.joints[:, 5:56], atol=tol, rtol=0)
    assert torch.allclose(ours.landmarks68[:, :17], ref.joints[:, 56:73], atol=tol, rtol=0)
    # the parameters really moved the model (a trivially zero comparison would prove nothing)
    assert (ours.vertices - head_full.v_template).abs().max() > 0.01


def test_landmarks_only_matches_full_forward(head):
    p = _random_params(head, 5, seed=1, yaws_deg=[-50.0, -25.0, 0.0, 30.0, 45.0])
    for frontal in (False, True):
        with torch.no_grad():
            full = head(**p, frontal_contour=frontal)
            fast = head(**p, frontal_contour=frontal, landmarks_only=True)
        assert fast.vertices is None
        assert torch.allclose(fast.landmarks68, full.landmarks68, atol=1e-6, rtol=0)
        assert torch.allclose(fast.pupils, full.pupils, atol=1e-6, rtol=0)
        assert torch.allclose(fast.joints, full.joints, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- mesh

def test_mesh_is_watertight_and_rigged(head):
    faces = head.faces.numpy()
    assert directed_edges_balanced(faces), "mesh is not closed and consistently oriented"
    assert 4000 <= head.num_vertices <= 6000
    assert faces.min() == 0 and faces.max() == head.num_vertices - 1
    assert len(np.unique(faces)) == head.num_vertices  # no unused vertices
    weights = head.lbs_weights.numpy()
    assert weights.shape == (head.num_vertices, 5)
    assert weights.min() >= -1e-6
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)
    assert head.parents.tolist() == [-1, 0, 1, 1, 1]
    assert head.has_pupils
    # the eyes are on the correct sides: joint 3 is the subject's left eye (+x)
    assert head.j_template[3, 0] > 0.01 and head.j_template[4, 0] < -0.01


def test_directed_edges_balanced_detects_holes_and_flips():
    tetra = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    assert directed_edges_balanced(tetra)
    assert not directed_edges_balanced(tetra[:3])  # a hole
    flipped = tetra.copy()
    flipped[0] = flipped[0, ::-1]
    assert not directed_edges_balanced(flipped)


def test_generation_is_deterministic_and_matches_cache():
    first = generate_basic_head(seed=0)
    second = generate_basic_head(seed=0)
    cached = read_flame_dir(basic_head_dir())
    for field in dataclasses.fields(first):
        a, b, c = (getattr(x, field.name) for x in (first, second, cached))
        assert np.array_equal(a, b), f"{field.name} differs between two generations"
        # the cache is keyed by GENERATOR_VERSION: a stale cache means the version was not bumped
        # (uv is written to OBJ with 6 decimals)
        np.testing.assert_allclose(c, a, atol=1e-6, rtol=0, err_msg=f"cached {field.name} is stale")


def test_uv_layout_is_complete_and_non_overlapping(head):
    uv = head.uv_coords.numpy().astype(np.float64)
    uv_faces = head.uv_faces.numpy()
    assert uv_faces.shape == head.faces.shape, "every face needs a UV face"
    assert uv_faces.min() >= 0 and uv_faces.max() < len(uv)
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    size = 512
    tri = uv[uv_faces] * size - 0.5  # pixel centres at integer coordinates
    twice_area = ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
                  - (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0]))
    assert np.abs(twice_area).min() > 1e-6, "degenerate UV triangle"
    count = np.zeros((size, size), np.int32)
    eps = 1e-6  # strictly inside: pixel centres on a shared edge belong to neither triangle
    for (a, b, c), det in zip(tri, twice_area):
        x0 = max(int(np.ceil(min(a[0], b[0], c[0]))), 0)
        x1 = min(int(np.floor(max(a[0], b[0], c[0]))), size - 1)
        y0 = max(int(np.ceil(min(a[1], b[1], c[1]))), 0)
        y1 = min(int(np.floor(max(a[1], b[1], c[1]))), size - 1)
        if x1 < x0 or y1 < y0:
            continue
        xs, ys = np.meshgrid(np.arange(x0, x1 + 1), np.arange(y0, y1 + 1))
        w0 = ((b[0] - xs) * (c[1] - ys) - (b[1] - ys) * (c[0] - xs)) / det
        w1 = ((c[0] - xs) * (a[1] - ys) - (c[1] - ys) * (a[0] - xs)) / det
        inside = (w0 > eps) & (w1 > eps) & (1 - w0 - w1 > eps)
        count[ys[inside], xs[inside]] += 1
    covered = (count > 0).sum()
    assert covered > 0.3 * size * size, "the UV layout uses too little of the texture"
    assert (count > 1).sum() == 0, f"{(count > 1).sum()} texel centres lie inside two UV triangles"


# ----------------------------------------------------------------------------- semantics

def test_mouth_open_separates_inner_lips(head):
    """Generator v3: the slit row (which sags below the mouth corners) moves with the upper lip."""
    neutral = _landmarks(head)
    opened = _landmarks(head, expression=_expression(head, "mouth_open", 1.0))
    gap = lambda lm: np.linalg.norm(lm[62] - lm[66])  # noqa: E731  inner upper vs lower lip
    assert gap(opened) > gap(neutral) + 0.005, (gap(neutral), gap(opened))
    assert opened[66, 1] < neutral[66, 1]  # the lower lip goes down
    assert opened[62, 1] > neutral[62, 1]  # and the upper one up


def test_blink_left_closes_only_the_left_eye(head):
    def opening(lm, upper, lower):
        return np.linalg.norm(lm[upper] - lm[lower], axis=-1).mean()

    neutral = _landmarks(head)
    blink = _landmarks(head, expression=_expression(head, "blink_left", 0.8))
    assert neutral[42:48, 0].mean() > 0 > neutral[36:42, 0].mean()  # subject's left eye is +x
    left = ([43, 44], [47, 46])
    right = ([37, 38], [41, 40])
    assert opening(neutral, *left) > 0.003
    assert opening(blink, *left) < 0.5 * opening(neutral, *left)
    assert abs(opening(blink, *right) - opening(neutral, *right)) < 1e-4


def test_smile_raises_mouth_corners(head):
    neutral = _landmarks(head)
    smile = _landmarks(head, expression=_expression(head, "smile", 1.0))
    assert (smile[[48, 54], 1] > neutral[[48, 54], 1] + 0.001).all()
    # and widens the mouth
    assert np.linalg.norm(smile[48] - smile[54]) > np.linalg.norm(neutral[48] - neutral[54])


def test_positive_jaw_rotation_opens_the_mouth(head):
    neutral = _landmarks(head)
    opened = _landmarks(head, jaw_pose=torch.tensor([[0.2, 0.0, 0.0]]))
    assert opened[66, 1] < neutral[66, 1] - 0.005  # lower inner lip down
    assert opened[8, 1] < neutral[8, 1] - 0.005  # chin down
    assert abs(opened[62, 1] - neutral[62, 1]) < 0.3 * abs(opened[66, 1] - neutral[66, 1])
    assert np.linalg.norm(opened[62] - opened[66]) > np.linalg.norm(neutral[62] - neutral[66]) + 0.005


def test_jaw_contour_follows_the_silhouette(head):
    def pose(yaw):
        return torch.tensor([[0.0, yaw * DEG, 0.0]], dtype=torch.float32)

    with torch.no_grad():
        frontal0 = head(global_pose=pose(0)).landmarks68[0, :17].numpy()
    # yaw 0: the contour is left-right symmetric (k <-> 16 - k mirrored in x)
    mirrored = frontal0[::-1] * np.array([-1.0, 1.0, 1.0])
    assert np.abs(frontal0 - mirrored).max() < 0.001

    moved = {}
    for yaw in (30.0, -30.0):
        with torch.no_grad():
            dynamic = head(global_pose=pose(yaw)).landmarks68[0, :17].numpy()
            fixed = head(global_pose=pose(yaw), frontal_contour=True).landmarks68[0, :17].numpy()
        # the far side is the one that turned away from the camera (lower z)
        far = range(10, 17) if fixed[10:17, 2].mean() < fixed[0:7, 2].mean() else range(0, 7)
        assert (far.start == 10) == (yaw > 0)  # +yaw turns the face towards +x: its left goes back
        outward = 1.0 if far.start == 10 else -1.0
        distance = np.linalg.norm(dynamic - fixed, axis=-1)
        for k in far:
            assert distance[k] > 0.005, f"yaw {yaw}: jaw point {k} is still the frontal surface point"
            # the visible contour lies outside the (now hidden) frontal contour in the image
            assert outward * (dynamic[k, 0] - fixed[k, 0]) > 0.002
        moved[yaw] = distance
    # mirror symmetry of the table: +30 on point k is -30 on point 16 - k
    np.testing.assert_allclose(moved[30.0], moved[-30.0][::-1], atol=0.001)
    with torch.no_grad():
        fixed0 = head(global_pose=pose(0), frontal_contour=True).landmarks68[0, :17].numpy()
    np.testing.assert_allclose(frontal0, fixed0, atol=1e-7)


# ----------------------------------------------------------------------------- FLAME format I/O

def _assert_same_flame(a, b):
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        assert (x is None) == (y is None), field.name
        if x is not None:
            assert x.shape == y.shape, field.name
            assert np.array_equal(x, y), f"{field.name} changed in the round trip"


def test_flame_dir_round_trip(tmp_path):
    original = read_flame_dir(basic_head_dir())
    target = tmp_path / "copy"
    target.mkdir()
    (target / "stale.txt").write_text("left over")
    write_flame_dir(original, target)
    assert not (target / "stale.txt").exists(), "writing must replace the directory"
    assert sorted(tmp_path.iterdir()) == [target], "staging directory left behind"
    _assert_same_flame(original, read_flame_dir(target))


def test_failed_flame_dir_write_leaves_the_old_one(tmp_path, monkeypatch):
    import onehead.head.flame_format as flame_format

    original = read_flame_dir(basic_head_dir())
    target = tmp_path / "model"
    write_flame_dir(original, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken_save(*args, **kwargs):  # fails after FLAME_NEUTRAL.pkl is written
        raise OSError("disk full")

    monkeypatch.setattr(flame_format.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_flame_dir(original, target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(tmp_path.iterdir()) == [target], "staging directory left behind"


def test_each_load_is_its_own_module(head):
    """Moving, retyping or training one loaded head never changes another caller's head."""
    first = load_head_model("basic")
    second = load_head_model("basic")
    assert first is not second
    reference = {name: b.clone() for name, b in second.named_buffers()}
    first.double().train()
    first.v_template.add_(1.0)  # even in-place edits of one model's buffers stay its own
    if torch.cuda.is_available():
        first.to("cuda")
    again = load_head_model("basic")
    for model in (second, again, head):
        assert not model.training
        assert model.v_template.device.type == "cpu" and model.v_template.dtype == torch.float32
        for name, buffer in model.named_buffers():
            assert buffer.dtype == reference[name].dtype, name
            assert torch.equal(buffer, reference[name]), f"{name} changed"
        p = _random_params(model, 1, seed=3)
        with torch.no_grad():
            out = model(**p)
        assert out.vertices.dtype == torch.float32


class _Evil:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = {"v_template": np.zeros((3, 3)), "f": _Evil(f"touch {marker}")}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))  # never unpickled with pickle.load
    with pytest.raises(CheckpointError, match="system"):
        load_pickle_restricted(path)
    assert not marker.exists()
    # the same file as a FLAME model is refused by the directory reader too
    flame_dir = tmp_path / "flame"
    flame_dir.mkdir()
    shutil.copy(path, flame_dir / "FLAME_NEUTRAL.pkl")
    with pytest.raises(CheckpointError):
        read_flame_dir(flame_dir)
    assert not marker.exists()


@contextlib.contextmanager
def _fake_chumpy():
    """A stand-in `chumpy.ch.Ch` (array in state 'x') present only while pickling."""
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)

        def __getstate__(self):
            return {"x": self.x}

        def __setstate__(self, state):
            self.x = state["x"]

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module.Ch, package.ch = Ch, module
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = package, module
    try:
        yield Ch
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value


@pytest.mark.parametrize("protocol", [0, 2])
def test_chumpy_pickle_is_read_as_numpy(tmp_path, protocol):
    array = np.random.default_rng(0).normal(size=(7, 3))
    with _fake_chumpy() as Ch:
        data = pickle.dumps({"v_template": Ch(array), "bs_style": "lbs"}, protocol=protocol)
    assert b"chumpy.ch" in data
    assert "chumpy.ch" not in sys.modules
    path = tmp_path / "chumpy.pkl"
    path.write_bytes(data)
    loaded = load_pickle_restricted(path)
    assert loaded["bs_style"] == "lbs"
    assert np.array_equal(np.asarray(loaded["v_template"]), array)


def test_missing_model_files_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError):
        read_flame_dir(tmp_path)  # exists, but holds no model file
    with pytest.raises(CheckpointError):
        read_flame_dir(tmp_path / "does-not-exist")
    with pytest.raises(CheckpointError):
        load_head_model("flame", flame_dir=tmp_path)


def test_flame_without_directory_is_a_config_error(monkeypatch):
    monkeypatch.delenv("ONEHEAD_FLAME_DIR", raising=False)
    with pytest.raises(ConfigError, match="ONEHEAD_FLAME_DIR"):
        load_head_model("flame")
    with pytest.raises(ConfigError):
        load_head_model("no-such-model")


def test_licensed_flame_layout_loads_like_basic(head, tmp_path, monkeypatch):
    """A stand-in for the licensed files: generic_model.pkl with chumpy arrays and a sparse
    J_regressor (the FLAME 2020 layout), plus the two landmark embeddings."""
    source = basic_head_dir()
    raw = load_pickle_restricted(source / "FLAME_NEUTRAL.pkl")
    flame_dir = tmp_path / "FLAME2020"
    flame_dir.mkdir()
    with _fake_chumpy() as Ch:
        for key in ("v_template", "shapedirs", "posedirs", "weights"):
            raw[key] = Ch(raw[key])
        raw["J_regressor"] = scipy.sparse.csc_matrix(np.asarray(raw["J_regressor"]))
        (flame_dir / "generic_model.pkl").write_bytes(pickle.dumps(raw, protocol=2))
    for name in (STATIC_EMBEDDING, DYNAMIC_EMBEDDING):
        shutil.copy(source / name, flame_dir / name)

    flame = load_head_model("flame", flame_dir=flame_dir)
    assert flame.kind == "flame"
    assert flame.uv_coords is None  # no template OBJ in this directory
    p = _random_params(head, 3, seed=2, yaws_deg=[-40.0, 0.0, 40.0])
    with torch.no_grad():
        a, b = head(**p), flame(**p)
    assert torch.allclose(a.vertices, b.vertices, atol=1e-6, rtol=0)
    assert torch.allclose(a.landmarks68, b.landmarks68, atol=1e-6, rtol=0)

    monkeypatch.setenv("ONEHEAD_FLAME_DIR", str(flame_dir))
    again = load_head_model("flame")  # the environment variable names the same directory
    assert again is not flame and again.source == flame.source
    assert torch.equal(again.v_template, flame.v_template)


def test_head_layer_imports_nothing_above_it(tmp_path):
    """The head model is the bottom layer: its cache folder comes from onehead.cache (honouring
    ONEHEAD_CACHE), not from onehead.data."""
    import subprocess
    import sys

    code = ("import sys, onehead.cache, onehead.head, onehead.head.generate, onehead.head.model as m; "
            "assert m.default_cache_dir is onehead.cache.default_cache_dir; print(m.default_cache_dir()); "
            "print(sorted({n.split('.')[1] for n in sys.modules if n.startswith('onehead.')}))")
    env = dict(os.environ, ONEHEAD_CACHE=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    directory, loaded = out.strip().splitlines()
    assert directory == str(tmp_path / "cache")
    assert loaded == "['cache', 'errors', 'files', 'head']", loaded

    from onehead.data import samples  # data keeps the same function for its callers
    from onehead.cache import default_cache_dir
    assert samples.default_cache_dir is default_cache_dir


def test_the_head_is_the_same_whatever_torchs_thread_count():
    """A model reloaded in another process (another thread count) must equal the saved one: the
    buffers derived when the head is built may not depend on the order of a parallel sum."""
    before = torch.get_num_threads()
    heads = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            heads.append(load_head_model())
    finally:
        torch.set_num_threads(before)
    one, two = (dict(h.named_buffers()) for h in heads)
    assert one.keys() == two.keys()
    assert all(torch.equal(one[k], two[k]) for k in one), [k for k in one if not torch.equal(one[k], two[k])]
