"""The tri-plane family (paper 004) on CPU: the splatter by hand, the head frame, shapes and range,
cached == uncached, gradients into every branch, bit-exact save/load, bad folders, a pretrained
canonical encoder from a local VAE folder, short training runs of both stages that resume exactly,
and the perceptual and adversarial terms.
The family contract (animate / eval CLIs) runs in tests/test_families.py."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from onehead.errors import CheckpointError, ConfigError
from onehead.models.triplane import TriplaneConfig, TriplaneModel, TriplaneSettings, splat_triplane
from onehead.pipelines import Animator
from onehead.pipelines.triplane import TriplaneAnimator
from onehead.render.volume import triplane_features

SIZE = 64  # the tiny preset
TRAIN_SIZE = 32
# smaller than tiny, for the training run: 32 px frames, 16 px renders and planes
TRAIN_MODEL = {"kind": "onehead-triplane", "preset": "tiny", "resolution": 32, "render_resolution": 16,
               "plane_resolution": 16, "plane_channels": 8, "feature_channels": 8, "lift_resolution": 16,
               "canonical_down": [16, 32], "canonical_up": [32], "appearance_down": [16], "appearance_up": [16],
               "expression_resolution": 16, "expression_down": [16], "expression_up": [16], "latent_channels": 16,
               "sr_channels": 16, "coarse": 6, "fine": 6, "loss": {"tv_points": 64}}
# stage 2 starts from a checkpoint: its architecture; only inference settings and loss weights here
STAGE2_MODEL = {"kind": "onehead-triplane", "coarse": 6, "fine": 6, "loss": {"discriminator_channels": 8}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def animator(head):
    torch.manual_seed(0)
    return TriplaneAnimator.from_preset("tiny", head=head)


def _dataset(head, out, size):
    from onehead.data.synthetic import SynthOptions, synthesize

    synthesize(head, out, SynthOptions(identities=2, sequences=1, frames=4, views=1, size=size, seed=0,
                                       texture_size=64, progress=False))
    return out


@pytest.fixture(scope="module")
def dataset(head, tmp_path_factory):
    return _dataset(head, tmp_path_factory.mktemp("triplane") / "synthetic", SIZE)


@pytest.fixture(scope="module")
def inputs(head, dataset):
    """(reference of identity 0, motion of identity 1's frames at their own cameras)."""
    from onehead.data.sequence import open_sequence
    from onehead.pipelines.reenactment import driving_motion, prepare_reference

    reference_view = open_sequence(dataset / "id000_s00").views["cam00"]
    driving_view = open_sequence(dataset / "id001_s00").views["cam00"]
    reference = prepare_reference(reference_view.frame(0), head, SIZE, reference_view.tracking)
    return reference, driving_motion(driving_view.tracking, reference, head, SIZE, camera="driving")


def _params(head, count, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = {k: torch.zeros(count, n) for k, n in head.parameter_sizes.items()}
    params["shape"] = torch.randn(1, head.num_shape, generator=g).expand(count, -1) * 0.5
    params["expression"] = torch.randn(count, head.num_expression, generator=g) * 0.5
    params["global_pose"] = torch.randn(count, 3, generator=g) * 0.2
    params["jaw_pose"][:, 0] = 0.1
    params["translation"] = torch.randn(count, 3, generator=g) * 0.01
    return params


# =========================================================================== pieces by hand

def test_splat_puts_a_colour_on_its_texels():
    """A point on a texel centre of each plane leaves its colour there (weight 1) and nowhere else;
    triplane_features reads it back (summed over the 3 planes)."""
    R = 4
    centre = lambda k: (2 * k + 1) / R - 1  # noqa: E731  texel k's centre, cube [-1, 1]
    point = torch.tensor([[[centre(1), centre(2), centre(3)]]])  # x at column 1, y row/col 2, z row 3
    colour = torch.tensor([[[0.2, 0.5, 0.9]]])
    planes, weight = splat_triplane(point, colour, torch.ones(1, 1, dtype=torch.bool), R, bounds=1.0)
    assert planes.shape == (1, 3, 3, R, R) and weight.shape == (1, 3, 1, R, R)
    for plane, (row, col) in enumerate([(2, 1), (3, 1), (3, 2)]):  # xy: (y, x); xz: (z, x); yz: (z, y)
        assert weight[0, plane, 0, row, col] == pytest.approx(1.0)
        assert weight[0, plane].sum() == pytest.approx(1.0)
        torch.testing.assert_close(planes[0, plane, :, row, col], colour[0, 0])
        others = planes[0, plane].clone()
        others[:, row, col] = 0
        assert others.abs().max() == 0
    torch.testing.assert_close(triplane_features(planes, point, 1.0)[0, 0], 3 * colour[0, 0])


def test_splat_shares_weights_bilinearly_and_normalises():
    R = 4
    point = torch.tensor([[[0.0, -0.25, -0.75]]])  # x between columns 1 and 2; y on row 1; z on row 0
    planes, weight = splat_triplane(point, torch.tensor([[[2.0]]]), torch.ones(1, 1, dtype=torch.bool), R, 1.0)
    assert weight[0, 0, 0, 1, 1] == pytest.approx(0.5) and weight[0, 0, 0, 1, 2] == pytest.approx(0.5)
    assert planes[0, 0, 0, 1, 1] == pytest.approx(2.0) and planes[0, 0, 0, 1, 2] == pytest.approx(2.0)
    # two points on one texel average; an invalid point adds nothing
    points = torch.tensor([[[-0.75, -0.75, -0.75]] * 3])
    values = torch.tensor([[[1.0], [3.0], [100.0]]])
    planes, weight = splat_triplane(points, values, torch.tensor([[True, True, False]]), R, 1.0)
    assert planes[0, 0, 0, 0, 0] == pytest.approx(2.0) and weight[0, 0, 0, 0, 0] == pytest.approx(2.0)


def test_head_frame_puts_the_head_back(animator):
    """head_to_world maps the head model without rigid pose onto the posed head model exactly."""
    model = animator.model
    params = _params(model.head, 3)
    frame, head_to_world = model.head_frame(params)
    posed = model.head(**params).vertices
    moved = frame.vertices @ head_to_world[:, :3, :3].transpose(1, 2) + head_to_world[:, None, :3, 3]
    torch.testing.assert_close(moved, posed, atol=1e-5, rtol=0)


def test_rays_are_sampled_where_they_cross_the_cube(animator):
    """cube_interval: near and far lie on the planes' cube, and rays that miss it never enter it."""
    from onehead.camera import scale_intrinsics
    from onehead.render.volume import camera_rays

    model = animator.model
    r, bounds = model.config.render_resolution, model.config.bounds
    K, w2c = _camera(model.head, 1)
    K = scale_intrinsics(K, (SIZE, SIZE), (r, r)) * torch.tensor([[[0.5], [0.5], [1.0]]])  # wide: some rays miss
    near, far = model.cube_interval(K, w2c)
    origins, directions = camera_rays(K, w2c, r, r)
    near, far = near.view(1, -1, 1), far.view(1, -1, 1)
    hit = (far > 1e-2)[..., 0]
    assert 0 < hit.sum() < hit.numel()
    inf_norm = lambda t: (origins + t * directions - model.centre).abs().amax(-1)  # noqa: E731
    torch.testing.assert_close(inf_norm(near)[hit], torch.full_like(inf_norm(near)[hit], bounds), atol=1e-5, rtol=0)
    torch.testing.assert_close(inf_norm(far)[hit], torch.full_like(inf_norm(far)[hit], bounds), atol=1e-5, rtol=0)
    assert (inf_norm((near + far) / 2)[hit] < bounds).all()
    depths = torch.linspace(0, 3, 200).view(1, 1, -1, 1)
    along = (origins[:, :, None] + depths * directions[:, :, None] - model.centre).abs().amax(-1)  # (1, rays, 200)
    assert (along[~hit] > bounds).all()


def test_lift_splats_the_source_colour_inside_the_head(animator):
    """A one-colour source: every texel the mesh's pixels reach holds exactly that colour (the
    splat is normalised), and they lie where the head model is in the head frame."""
    model = animator.model
    params = _params(model.head, 1)
    colour = torch.tensor([0.1, 0.6, 0.3])
    image = colour.view(1, 3, 1, 1).expand(1, 3, SIZE, SIZE)
    K, w2c = _camera(model.head, 1)
    with torch.no_grad():
        planes, weight = model.lift(image, params, K, w2c)
    reached = weight[0, :, 0] > 0.5  # (3, R, R)
    assert reached.sum() > 20
    rgb = planes[0, :, :3].permute(0, 2, 3, 1)[reached]  # (hits, 3)
    torch.testing.assert_close(rgb, colour.expand_as(rgb), atol=1e-5, rtol=0)
    # the xy plane's reached texels fall inside the head-frame mesh's x, y extent
    R, bounds = model.config.plane_resolution, model.config.bounds
    rows, cols = torch.nonzero(reached[0], as_tuple=True)
    x = ((2 * cols + 1) / R - 1) * bounds + model.centre[0]
    y = ((2 * rows + 1) / R - 1) * bounds + model.centre[1]
    vertices = model.head_frame(params)[0].vertices[0]
    step = 2 * bounds / R
    assert x.min() >= vertices[:, 0].min() - step and x.max() <= vertices[:, 0].max() + step
    assert y.min() >= vertices[:, 1].min() - step and y.max() <= vertices[:, 1].max() + step


def _camera(head, count):
    """A camera 15 degrees to the side of the head, framed like onehead's data."""
    from onehead.camera import intrinsics
    from onehead.data.synthetic import head_framing, look_at_camera

    target, field = head_framing(head)
    K = intrinsics(SIZE * 1.0 / field, SIZE, SIZE).expand(count, 3, 3)
    w2c = torch.as_tensor(look_at_camera(15, 5, 1.0, target), dtype=torch.float32).expand(count, 4, 4)
    return K, w2c


# =========================================================================== the model

def test_frames_have_the_right_shape_and_range(animator, inputs):
    reference, motion = inputs
    frames = animator.reenact(reference, motion).frames
    assert frames.shape == (motion.tracking.num_frames, 3, SIZE, SIZE) and frames.device.type == "cpu"
    assert frames.min() >= 0 and frames.max() <= 1
    model = animator.model
    params, K, w2c = animator.motion_inputs(motion)
    with torch.no_grad():
        out = model.render(model.encode_source(*animator.reference_inputs(reference)), params, K, w2c)
    r, n = model.config.render_resolution, len(K)
    assert out.low_res.shape == (n, 3, r, r) and out.features.shape == (n, model.config.feature_channels, r, r)
    assert out.opacity.shape == (n, 1, r, r) and 0 <= out.opacity.min() and out.opacity.max() <= 1
    torch.testing.assert_close(out.image, frames, atol=1e-6, rtol=0)


def test_novel_views_follow_the_motion_cameras(animator, inputs, head):
    """animate(camera=(K, world_to_cam)) renders through the given camera: another view, other frames."""
    from onehead.pipelines.reenactment import driving_motion

    reference, motion = inputs
    K = reference.tracking.K[0]
    w2c = _camera(head, 1)[1][0].numpy()
    novel = driving_motion(motion.tracking, reference, head, SIZE, camera=(K, w2c))
    same = driving_motion(motion.tracking, reference, head, SIZE, camera=(K, reference.tracking.world_to_cam[0]))
    a, b = animator.reenact(reference, novel).frames, animator.reenact(reference, same).frames
    assert (a - b).abs().mean() > 1e-4


def test_cached_source_gives_the_same_frames_as_the_uncached_path(animator, inputs):
    reference, motion = inputs
    model = animator.model
    source = animator.reference_inputs(reference)
    params, K, w2c = animator.motion_inputs(motion)
    with torch.no_grad():
        uncached = model(*source, params, K, w2c).image
        one_by_one = torch.cat([animator.reenact(reference, motion, frames_per_batch=1).frames])
    torch.testing.assert_close(animator.reenact(reference, motion).frames, uncached, atol=1e-6, rtol=0)
    torch.testing.assert_close(one_by_one, uncached, atol=1e-5, rtol=0)


def test_gradients_reach_every_branch(animator, inputs):
    reference, motion = inputs
    model = animator.model
    model.zero_grad()
    params, K, w2c = animator.motion_inputs(motion)
    out = model(*animator.reference_inputs(reference), params, K, w2c)
    (out.image.mean() + out.low_res.mean()).backward()
    try:
        for name, part in model.trainable_parts().items():
            tensors = list(part.parameters())
            total = sum(float(p.grad.abs().sum()) for p in tensors if p.grad is not None)
            assert total > 0, f"no gradient reaches {name}"
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, missing[:5]
    finally:
        model.zero_grad(set_to_none=True)


def test_the_backdrop_is_the_source_with_its_head_filled_in(head, animator, inputs):
    """At initialisation the backdrop's RGB is the source at render resolution outside the head
    model's grown silhouette, and inpainted inside it; without config.backdrop one learned vector
    stands behind the cube."""
    import torch.nn.functional as F

    reference, _ = inputs
    model = animator.model
    image, params, K, w2c = animator.reference_inputs(reference)
    with torch.no_grad():
        backdrop = model.backdrop(image, params, K, w2c)
    size = model.config.render_resolution
    assert backdrop.shape == (1, model.config.feature_channels, size, size)
    small = F.interpolate(image, size=(size, size), mode="area")
    changed = (backdrop[:, :3] - small).abs().amax(1) > 1e-6
    assert 0.05 < float(changed.float().mean()) < 0.8  # the head region only
    assert not backdrop[:, 3:].any()  # the residual starts at zero
    plain = TriplaneModel(TriplaneConfig.from_preset("tiny", backdrop=False), head)
    assert plain.background.shape == (model.config.feature_channels,) and not hasattr(plain, "backdrop_encoder")
    with torch.no_grad():
        cache = plain.encode_source(image, params, K, w2c)
        assert cache.backdrop is None and plain.render(cache, params, K, w2c, coarse=4, fine=0).image.shape == image.shape


def test_reenact_is_fast(animator, inputs):
    """4 frames at 64 px in well under a second on one CPU thread (generous bound: busy machines)."""
    import time

    reference, motion = inputs
    animator.reenact(reference, motion)  # warm-up
    start = time.perf_counter()
    animator.reenact(reference, motion)
    assert time.perf_counter() - start < 2.0


# =========================================================================== files

def test_save_and_load_are_bit_exact(animator, inputs, tmp_path):
    folder = animator.save_pretrained(tmp_path / "model")
    saved = json.loads((folder / "triplane.json").read_text())
    assert saved["kind"] == "onehead-triplane" and saved["model"]["preset"] == "tiny"
    loaded = Animator.from_pretrained(folder)
    assert type(loaded) is TriplaneAnimator and loaded.describe() == animator.describe()
    a, b = animator.model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(animator.reenact(*inputs).frames, loaded.reenact(*inputs).frames)
    faster = TriplaneAnimator.from_pretrained(folder, coarse=4, fine=0)
    assert (faster.inference.coarse, faster.inference.fine) == (4, 0)


def test_bad_folders_are_checkpoint_errors(animator, tmp_path):
    folder = animator.save_pretrained(tmp_path / "model")
    config = json.loads((folder / "triplane.json").read_text())

    def broken(name, change):
        copy = tmp_path / name
        import shutil
        shutil.copytree(folder, copy)
        change(copy)
        return copy

    no_weights = broken("no_weights", lambda d: (d / "triplane.safetensors").unlink())
    with pytest.raises(CheckpointError, match="triplane.safetensors is missing"):
        Animator.from_pretrained(no_weights)
    truncated = broken("truncated", lambda d: (d / "triplane.safetensors").write_bytes(b"\x00" * 20))
    with pytest.raises(CheckpointError, match="corrupt"):
        Animator.from_pretrained(truncated)
    wider = broken("wider", lambda d: (d / "triplane.json").write_text(
        json.dumps({**config, "model": {**config["model"], "decoder_hidden": 32}})))
    with pytest.raises(CheckpointError, match="decoder"):
        Animator.from_pretrained(wider)
    unknown = broken("unknown", lambda d: (d / "triplane.json").write_text(
        json.dumps({**config, "model": {**config["model"], "planes": 3}})))
    with pytest.raises(CheckpointError, match="unknown key"):
        Animator.from_pretrained(unknown)
    bad_size = broken("bad_size", lambda d: (d / "triplane.json").write_text(
        json.dumps({**config, "model": {**config["model"], "render_resolution": 24}})))
    with pytest.raises(CheckpointError, match="power of two"):
        Animator.from_pretrained(bad_size)


def test_canonical_encoder_loads_a_local_vae_folder(tmp_path, head):
    """canonical_init: the tensors of a diffusers AutoencoderKL folder that fit are copied in."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        block_out_channels=(32, 64, 64), layers_per_block=1, latent_channels=4, norm_num_groups=16)
    vae.save_pretrained(tmp_path / "sd" / "vae")
    model = TriplaneModel(TriplaneConfig(canonical_init=str(tmp_path / "sd")), head)
    theirs = vae.state_dict()
    ours = model.canonical_encoder.state_dict()
    assert torch.equal(ours["encoder.conv_in.weight"], theirs["encoder.conv_in.weight"])
    assert torch.equal(ours["encoder.down_blocks.1.resnets.0.conv1.weight"],
                       theirs["encoder.down_blocks.1.resnets.0.conv1.weight"])
    with pytest.raises(CheckpointError, match="not a diffusers AutoencoderKL"):
        model.load_canonical_init(tmp_path)


def test_configs_check_their_sizes():
    assert TriplaneConfig.from_preset("base").plane_resolution == 256
    with pytest.raises(ConfigError, match="plane_resolution"):
        TriplaneConfig.from_preset("tiny", canonical_up=[64])
    with pytest.raises(ConfigError, match="unknown preset"):
        TriplaneConfig.from_preset("huge")
    with pytest.raises(ValueError):
        TriplaneSettings(coarse=0)


# =========================================================================== training

@pytest.fixture(scope="module")
def train_dataset(head, tmp_path_factory):
    return _dataset(head, tmp_path_factory.mktemp("triplane_train") / "synthetic", TRAIN_SIZE)


def _config(folder, dataset, model=None, **train):
    raw = {"model": model or TRAIN_MODEL, "data": {"train": [{"path": str(dataset)}], "validation": str(dataset)},
           "train": {"output_dir": str(folder / "run"), "seed": 3, "max_steps": 4, "batch_size": 2,
                     "learning_rate": 1e-3, "warmup_steps": 1, "weight_decay": 0.0, "log_every": 1,
                     "ema": {"enabled": True, "decay": 0.9}, "validate_every": 4, "validation_items": 1,
                     "save_every": 2, "keep_checkpoints": 0, **train}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _weights(checkpoint):
    from safetensors.torch import load_file

    return load_file(checkpoint / "triplane.safetensors")


def test_training_runs_and_resumes_exactly(train_dataset, tmp_path):
    from onehead.training import load_config, train

    config = _config(tmp_path, train_dataset)
    result = train(load_config(config))
    run_dir = tmp_path / "run"
    first = _losses(run_dir)
    assert result["step"] == 4 and sorted(first) == [1, 2, 3, 4]
    assert all(math.isfinite(v) and v > 0 for v in first.values())
    assert (run_dir / "validation" / "step_000004.png").is_file()
    a, b = _weights(run_dir / "checkpoints" / "step_000002"), _weights(run_dir / "checkpoints" / "step_000004")
    for part in ("canonical_encoder.", "lift_features.", "appearance_encoder.", "expression_encoder.", "decoder.",
                 "super_resolution.", "backdrop_encoder."):
        assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith(part)), f"{part} did not train"
    loaded = Animator.from_pretrained(run_dir / "checkpoints" / "step_000004" / "ema")
    assert loaded.kind == "onehead-triplane" and loaded.resolution == TRAIN_SIZE

    out = tmp_path / "resumed"
    train(load_config(config, [f"train.output_dir={out}"]), str(run_dir / "checkpoints" / "step_000002"))
    second = _losses(out)
    assert sorted(second) == [3, 4]
    for step in (3, 4):
        assert abs(first[step] - second[step]) <= 1e-6, (step, first[step], second[step])
    for name in ("", "ema"):
        x = _weights(run_dir / "checkpoints" / "step_000004" / name)
        y = _weights(out / "checkpoints" / "step_000004" / name)
        assert x.keys() == y.keys() and all(torch.allclose(x[k], y[k], atol=1e-6, rtol=0) for k in x)


def test_training_loss_parts_with_the_perceptual_terms(train_dataset, tmp_path):
    """Each stage-1 term is finite and the neutral target covers the head; LPIPS (a stand-in weights
    file of the real format) adds the perceptual part and its gradient; a missing file is a ConfigError."""
    from onehead.data.datasets import ReenactmentDataset
    from onehead.metrics.lpips import LPIPS
    from onehead.training import load_config
    from onehead.training.triplane import TriplaneFamily, TriplaneLoss, triplane_loss

    family = TriplaneFamily()
    config = load_config(_config(tmp_path, train_dataset))
    model = family.build(dict(config.model), config.train, None)
    items = ReenactmentDataset(train_dataset, size=TRAIN_SIZE)
    batch = torch.utils.data.default_collate([items[0], items[3]])
    result = triplane_loss(model, batch, torch.Generator().manual_seed(0), TriplaneLoss(), 6, 6)
    assert set(result.parts) == {"canonical", "canonical_expression", "full", "super_resolution", "neutral", "tv"}
    assert all(math.isfinite(float(v.detach())) for v in result.parts.values())
    assert result.images["output"].shape == (2, 3, TRAIN_SIZE, TRAIN_SIZE)
    assert result.images["neutral"].abs().sum() > 0  # the warped source covers part of the render

    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(LPIPS().state_dict(), tmp_path / "lpips.safetensors")
    perceptual = TriplaneLoss(perceptual=1.0)
    lpips_model = LPIPS.from_file(tmp_path / "lpips.safetensors")
    with_lpips = triplane_loss(model, batch, torch.Generator().manual_seed(0), perceptual, 6, 6, lpips_model=lpips_model)
    assert float(with_lpips.parts["perceptual"].detach()) > 0
    assert float((with_lpips.total - result.total).detach()) == pytest.approx(float(with_lpips.parts["perceptual"].detach()), rel=1e-4)
    model.zero_grad()
    with_lpips.parts["perceptual"].backward()
    assert model.super_resolution.out[1].weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="LPIPS"):
        load_config(_config(tmp_path, train_dataset), ["model.loss.perceptual=1"])
    with pytest.raises(ConfigError, match="model.loss"):
        load_config(_config(tmp_path, train_dataset), ["model.loss.l2=1"])


def test_stage_2_trains_only_the_super_resolution_with_a_discriminator_and_resumes_exactly(train_dataset, tmp_path):
    from onehead.data.datasets import ReenactmentDataset
    from onehead.training import load_config, train
    from onehead.training.triplane import DISCRIMINATOR_FILE, TriplaneFamily, stage2_loss

    with pytest.raises(ConfigError, match="train.init_from"):
        load_config(_config(tmp_path, train_dataset), ["train.stage=2"])
    stage1 = tmp_path / "stage1"
    stage1.mkdir()
    train(load_config(_config(stage1, train_dataset, max_steps=2)))
    start = stage1 / "run" / "checkpoints" / "step_000002"

    # the generator term moves only the super-resolution, the discriminator terms only the discriminator
    family = TriplaneFamily()
    config = load_config(_config(tmp_path, train_dataset, STAGE2_MODEL, stage=2, init_from=str(start)))
    model = family.build(dict(config.model), config.train, None)
    groups = {g.name: g.params for g in family.parameter_groups(model, config.train)}
    assert set(groups) == {"super_resolution", "discriminator"}
    assert all(n.startswith("triplane.super_resolution.") for n in groups["super_resolution"])
    items = ReenactmentDataset(train_dataset, size=TRAIN_SIZE)
    batch = torch.utils.data.default_collate([items[0], items[3]])
    parts = stage2_loss(model, batch, torch.Generator().manual_seed(0), family.weights, 6, 6).parts
    assert {"super_resolution", "adversarial", "discriminator", "r1"} <= set(parts)
    parts["adversarial"].backward(retain_graph=True)
    assert all(p.grad is None or not p.grad.any() for p in groups["discriminator"].values())
    assert any(p.grad is not None and p.grad.any() for p in groups["super_resolution"].values())
    model.zero_grad()
    parts["discriminator"].backward()
    assert all(p.grad is None or not p.grad.any() for p in groups["super_resolution"].values())
    assert any(p.grad is not None and p.grad.any() for p in groups["discriminator"].values())

    # a run: frozen parts stay, the super-resolution moves; the checkpoint loads for inference
    stage2 = _config(tmp_path, train_dataset, STAGE2_MODEL, stage=2, init_from=str(start), max_steps=4)
    train(load_config(stage2))
    run = tmp_path / "run" / "checkpoints"
    before, after = _weights(start), _weights(run / "step_000004")
    assert before.keys() == after.keys()
    for name in before:
        moved = not torch.equal(before[name], after[name])
        assert moved == name.startswith("super_resolution."), name
    assert (run / "step_000004" / DISCRIMINATOR_FILE).is_file()
    assert Animator.from_pretrained(run / "step_000004" / "ema").kind == "onehead-triplane"
    first = _losses(tmp_path / "run")
    out = tmp_path / "resumed"
    train(load_config(stage2, [f"train.output_dir={out}"]), str(run / "step_000002"))
    second = _losses(out)
    for step in (3, 4):
        assert abs(first[step] - second[step]) <= 1e-5, (step, first[step], second[step])
    x, y = _weights(run / "step_000004"), _weights(out / "checkpoints" / "step_000004")
    assert all(torch.allclose(x[k], y[k], atol=1e-6, rtol=0) for k in x)


def test_shipped_config_and_script(tmp_path, capsys):
    """training/configs/triplane_tiny.yaml parses as this family; train_triplane.py (the shared entry
    point) refuses stage 2 without a stage-1 model to start from, with one line and exit code 2."""
    import importlib.util
    from pathlib import Path

    from onehead.training import ExperimentConfig

    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "training" / "configs" / "triplane_tiny.yaml").read_text())
    assert ExperimentConfig.from_dict(raw).family == "onehead-triplane"
    spec = importlib.util.spec_from_file_location("train_triplane", root / "training" / "train_triplane.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    dataset = tmp_path / "data"
    dataset.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"kind": "onehead-triplane", "preset": "tiny"},
                                      "data": {"train": [str(dataset)]}, "train": {"stage": 2}}))
    assert script.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.init_from" in err[0], err
