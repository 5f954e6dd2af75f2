"""The Animator: shared attention, temporal layers, the diffusion arithmetic, files, animate and its CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from onehead.cli import main
from onehead.config import replace
from onehead.errors import CheckpointError
from onehead.models.gaussian_diffusion import GaussianDiffusionConfig, InferenceSettings
from onehead.pipelines.gaussian_diffusion import GaussianDiffusionAnimator
from onehead.pipelines.sampler import temporal_windows, window_weights
from onehead.training.gaussian_diffusion_loss import gaussian_diffusion_loss

SMALL_UNET = dict(
    layers_per_block=1, block_out_channels=(16, 32, 32),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
)


def _small(head, **settings) -> GaussianDiffusionAnimator:
    """A small random model; settings: InferenceSettings fields."""
    torch.manual_seed(0)
    config = GaussianDiffusionConfig.from_preset("tiny", resolution=32, uv_resolution=32, unet=SMALL_UNET,
                                                 guider_channels=(8, 16))
    return GaussianDiffusionAnimator.from_config(config, InferenceSettings(window=3, window_overlap=1, **settings), head)


def _sample(animator, reference, control, **settings):
    return animator.sample(reference, control, replace(animator.inference, **settings))


@pytest.fixture(scope="module")
def synthetic(head, tmp_path_factory):
    from onehead.data.synthetic import SynthOptions, synthesize

    out = tmp_path_factory.mktemp("animator-data")
    synthesize(head, out, SynthOptions(identities=2, sequences=1, frames=4, views=2, size=32, texture_size=64,
                                       cross_pairs=True, progress=False))
    return out


@pytest.fixture(scope="module")
def batch(synthetic):
    from onehead.data.datasets import ReenactmentDataset

    data = ReenactmentDataset(synthetic, clip_length=2, size=32)
    return torch.utils.data.default_collate([data[0], data[4]])


def _randomise_zero_layers(animator):
    """Give the zero-initialised output layers small weights, as after some training."""
    model = animator.model
    with torch.no_grad():
        for module in (model.pose_guider.out, *[layer.proj_out for layer in model.temporal.layers]):
            module.weight.normal_(0, 0.05)


def test_gradients_reach_every_trainable_part(head, batch):
    animator = _small(head).model
    animator.set_stage(1)
    optimizer = torch.optim.SGD(animator.trainable_parameters(), lr=0.1)
    for _ in range(2):  # the pose guider's zero output layer blocks gradients only at step 0
        optimizer.zero_grad()
        gaussian_diffusion_loss(animator, batch, torch.Generator().manual_seed(1)).backward()
        optimizer.step()
    for name, part in animator.trainable_parts().items():
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        if name == "temporal":
            assert not grads  # frozen and off in stage 1
            continue
        assert grads and sum(float(g.abs().sum()) for g in grads if g is not None) > 0, name
    assert animator.gaussian_field.features.grad.abs().sum() > 0

    animator.set_stage(2)
    animator.zero_grad(set_to_none=True)
    gaussian_diffusion_loss(animator, batch, torch.Generator().manual_seed(2)).backward()
    trained = {name for name, p in animator.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained and all(name.startswith("temporal.") for name in trained)


def test_reference_bank_changes_the_output_and_runs_once_per_clip(head, batch):
    pipeline = _small(head)
    animator = pipeline.model.eval()
    calls = []
    animator.reference_unet.register_forward_pre_hook(lambda *args: calls.append(1))
    control = torch.randn(1, 5, 8, 32, 32)
    reference = batch["reference"][:1]
    out = _sample(pipeline, reference, control, steps=3, seed=0)
    assert out.shape == (1, 5, 3, 32, 32)
    assert len(calls) == 1  # 3 steps x 2 windows, one reference pass
    assert animator.bank.empty  # cleared after sampling
    animator.temporal.enabled = False  # the temporal layers split the batch by the bank's clips

    latents = torch.randn(2, 12, 16, 16)
    t = torch.tensor([500, 500])
    context = animator.domain_tokens(torch.zeros(2, dtype=torch.long))
    with torch.no_grad():
        animator.run_reference(animator.codec.encode(reference * 2 - 1), context[:1])
        with_bank = animator.denoise(latents, t, context, control[0, :2])
        animator.run_reference(animator.codec.encode(reference.flip(-1) * 2 - 1), context[:1])
        other_reference = animator.denoise(latents, t, context, control[0, :2])
        animator.bank.clear()
        without = animator.denoise(latents, t, context, control[0, :2])
    assert (with_bank - without).abs().max() > 1e-3
    assert (with_bank - other_reference).abs().max() > 1e-4


def test_temporal_layers_start_as_identity(head, batch):
    pipeline = _small(head)
    animator = pipeline.model.eval()
    latents = torch.randn(3, 12, 16, 16)
    t = torch.full((3,), 300)
    context = animator.domain_tokens(torch.zeros(3, dtype=torch.long))
    control = torch.randn(3, 8, 32, 32)

    def run(enabled):
        animator.temporal.enabled = enabled
        with torch.no_grad():
            animator.run_reference(animator.codec.encode(batch["reference"][:1] * 2 - 1), context[:1])
            return animator.denoise(latents, t, context, control)

    stage1, added = run(False), run(True)
    torch.testing.assert_close(added, stage1, atol=0, rtol=0)
    _randomise_zero_layers(pipeline)
    assert (run(True) - stage1).abs().max() > 1e-4  # once trained they do act over frames


def test_schedule_and_velocity_match_diffusers(head):
    from diffusers import DDIMScheduler, DDPMScheduler

    animator = _small(head).model
    ddpm = DDPMScheduler(**animator.scheduler_config())
    assert float(ddpm.alphas_cumprod[-1]) == 0.0  # zero terminal SNR
    ddim = DDIMScheduler(**animator.scheduler_config())
    ddim.set_timesteps(4)
    assert ddim.timesteps.tolist() == [999, 749, 499, 249]  # trailing spacing starts at the last step
    x0, noise = torch.randn(3, 12, 8, 8), torch.randn(3, 12, 8, 8)
    t = torch.tensor([10, 500, 999])
    a = ddpm.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    s = (1 - ddpm.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(ddpm.get_velocity(x0, noise, t), a * noise - s * x0)
    torch.testing.assert_close(ddpm.add_noise(x0, noise, t), a * x0 + s * noise)


def test_sampler_recovers_the_clean_frames_from_an_oracle(head, monkeypatch):
    """With a network that predicts the exact velocity of known clean latents, DDIM with trailing
    steps, shared noise and blended windows must land exactly on those latents."""
    pipeline = _small(head)
    animator = pipeline.model.eval()
    frames = 5
    clean = torch.rand(frames, 3, 32, 32)
    x0 = animator.codec.encode(clean * 2 - 1)
    from diffusers import DDPMScheduler

    alphas = DDPMScheduler(**animator.scheduler_config()).alphas_cumprod
    seen = []

    def oracle(latents, timesteps, context, control, warp=None):
        index = control[:, 0, 0, 0].long()  # the test's control maps carry their frame number
        seen.append(latents.shape[0])
        ab = alphas[timesteps].view(-1, 1, 1, 1)
        return (ab.sqrt() * latents - x0[index]) / (1 - ab).sqrt()

    monkeypatch.setattr(animator, "denoise", oracle)
    control = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1, 1).expand(1, frames, 8, 32, 32)
    out = _sample(pipeline, torch.rand(1, 3, 32, 32), control, steps=4, seed=3)
    torch.testing.assert_close(out[0], clean, atol=1e-5, rtol=0)
    assert seen == [3, 3] * 4  # two windows of 3 frames per step


def test_temporal_windows_cover_every_frame():
    for frames, window, overlap in ((5, 3, 1), (16, 16, 4), (40, 16, 4), (17, 8, 3)):
        windows = temporal_windows(frames, window, overlap)
        covered = torch.zeros(frames)
        for start, end in windows:
            assert end - start == min(window, frames)
            covered[start:end] += window_weights(end - start, start, end, frames, overlap)
        assert windows[0][0] == 0 and windows[-1][1] == frames
        assert (covered > 0).all()


def test_save_and_load_round_trip(head, batch, tmp_path):
    animator = _small(head, steps=3, background="reference")
    animator.model.eval()
    _randomise_zero_layers(animator)
    animator.save_pretrained(tmp_path / "model")
    loaded = GaussianDiffusionAnimator.from_pretrained(tmp_path / "model", head=head)
    assert loaded.inference == animator.inference and loaded.model.config == animator.model.config
    original_state, loaded_state = animator.model.state_dict(), loaded.model.state_dict()
    assert original_state.keys() == loaded_state.keys()
    for key, value in original_state.items():
        assert torch.equal(value, loaded_state[key]), key
    control = torch.randn(1, 2, 8, 32, 32)
    a = _sample(animator, batch["reference"][:1], control, steps=2, seed=5)
    b = _sample(loaded, batch["reference"][:1], control, steps=2, seed=5)
    # weights are bit-exact (above); outputs agree to float rounding (BLAS paths may differ by layout)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)

    config = json.loads((tmp_path / "model" / "animator.json").read_text())
    (tmp_path / "model" / "animator.json").write_text(json.dumps(dict(config, kind="onehead-triplane")))
    with pytest.raises(CheckpointError, match="not a one-shot model family"):
        GaussianDiffusionAnimator.from_pretrained(tmp_path / "model", head=head)
    with pytest.raises(CheckpointError, match="not an onehead model folder"):
        GaussianDiffusionAnimator.from_pretrained(tmp_path, head=head)


def test_base_preset_initialises_from_a_stable_diffusion_folder(head, tmp_path):
    """A stand-in SD folder in the diffusers layout (tiny UNet and VAE) is read like the real one."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    sd = tmp_path / "sd"
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, **SMALL_UNET).save_pretrained(sd / "unet")
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                  sample_size=32).save_pretrained(sd / "vae")
    DDPMScheduler().save_pretrained(sd / "scheduler")
    config = GaussianDiffusionConfig.from_preset("base", sd_path=str(sd), resolution=32, uv_resolution=32,
                                                 guider_channels=(8, 16))
    animator = GaussianDiffusionAnimator.from_config(config, head=head)
    assert animator.inference.steps == 10  # the base preset's settings
    reference_unet = UNet2DConditionModel.from_pretrained(sd / "unet")
    for key, value in reference_unet.state_dict().items():
        assert torch.equal(animator.model.denoising_unet.state_dict()[key], value), key
    assert animator.model.codec.factor == 2 and animator.model.codec.latent_channels == 4
    out = _sample(animator, torch.rand(1, 3, 32, 32), torch.randn(1, 2, 8, 32, 32), steps=2)
    assert out.shape == (1, 2, 3, 32, 32) and torch.isfinite(out).all()
    animator.save_pretrained(tmp_path / "saved")  # a self-contained folder with the VAE
    assert (tmp_path / "saved" / "vae" / "config.json").is_file()
    assert GaussianDiffusionAnimator.from_pretrained(tmp_path / "saved", head=head).model.config.sd_path is None
    with pytest.raises(CheckpointError, match="Stable Diffusion"):
        GaussianDiffusionAnimator.from_config(
            GaussianDiffusionConfig.from_preset("base", sd_path=str(tmp_path / "nothing")), head=head)


def test_animate_end_to_end(head, synthetic):
    animator = _small(head)
    reference_view = synthetic / "id000_s00" / "cam00"
    reference = reference_view / "frames" / "000000.png"
    driving = synthetic / "id001_s00" / "cam01" / "tracking.npz"
    result = animator.animate(reference, driving, steps=2, max_frames=3, progress=False,
                              reference_tracking=reference_view / "tracking.npz", camera="driving")
    assert result.frames.shape == (3, 3, 32, 32) and result.control_maps.shape == (3, 8, 32, 32)
    assert result.control_maps.abs().sum() > 0
    from onehead.data.tracking_file import load_tracking

    drv, ref = load_tracking(driving), load_tracking(reference_view / "tracking.npz")
    np.testing.assert_array_equal(result.tracking.expression, drv.expression[:3, : head.num_expression])
    np.testing.assert_array_equal(result.tracking.shape, ref.shape[: head.num_shape])  # cross-identity


def test_animate_cli_writes_videos_and_rejects_bad_input(head, synthetic, tmp_path, capsys):
    from onehead.data.samples import astronaut
    from onehead.data.images import save_image
    from onehead.data.video import read_video

    model = tmp_path / "model"
    _small(head).save_pretrained(model)
    save_image(tmp_path / "astronaut.png", astronaut())
    driving = synthetic / "id001_s00" / "cam00" / "tracking.npz"
    out = tmp_path / "out.mp4"
    assert main(["animate", "--reference", str(tmp_path / "astronaut.png"), "--driving", str(driving), "--out",
                 str(out), "--model", str(model), "--steps", "2", "--max-frames", "3",
                 "--side-by-side", str(tmp_path / "sbs.mp4"), "--tile", "64", "--quiet"]) == 0
    video, _ = read_video(out)
    assert video.shape == (3, 32, 32, 3)
    assert read_video(tmp_path / "sbs.mp4")[0].shape[0] == 3
    # carphone, the bundled real clip, drives by name as in `onehead eval`
    assert main(["animate", "--reference", str(tmp_path / "astronaut.png"), "--driving", "carphone", "--out",
                 str(out), "--model", str(model), "--steps", "1", "--max-frames", "2", "--quiet"]) == 0
    assert read_video(out)[0].shape == (2, 32, 32, 3)
    capsys.readouterr()

    save_image(tmp_path / "blank.png", np.full((96, 96, 3), 128, np.uint8))
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 50)
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "animator.json").write_text(json.dumps({"kind": "something-else"}))
    cases = [
        (["--reference", str(tmp_path / "blank.png"), "--driving", str(driving), "--checkpoint", str(model)], "no face"),
        (["--reference", str(tmp_path / "astronaut.png"), "--driving", str(tmp_path / "broken.mp4"),
          "--checkpoint", str(model)], "broken.mp4"),
        (["--reference", str(tmp_path / "astronaut.png"), "--driving", str(driving),
          "--checkpoint", str(tmp_path / "wrong")], "not a one-shot model family"),
        (["--reference", str(tmp_path / "astronaut.png"), "--driving", str(driving),
          "--model", str(tmp_path / "missing")], "does not exist"),
        (["--reference", str(tmp_path / "astronaut.png"), "--driving", str(driving),
          "--model", str(model), "--steps", "0"], "steps"),
    ]
    for args, words in cases:
        code = main(["animate", *args, "--out", str(tmp_path / "x.mp4"), "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and words in err[0].lower(), err


def test_zero_initial_latent_is_the_seed_free_posterior_mean(head, batch):
    animator = _small(head, initial_latent="zeros")
    control = torch.randn(1, 2, 8, 32, 32)
    a = _sample(animator, batch["reference"][:1], control, steps=1, seed=1)
    b = _sample(animator, batch["reference"][:1], control, steps=1, seed=2)
    torch.testing.assert_close(a, b, atol=0, rtol=0)  # no noise enters a one-step zero start
    c = _sample(animator, batch["reference"][:1], control, steps=1, seed=1, initial_latent="noise")
    assert (a - c).abs().max() > 1e-3


def test_warp_guidance_grows_a_checkpoint_without_changing_it(head, batch, synthetic, tmp_path):
    """Turning warp guidance on for a trained model zero-pads the pose guider's new inputs: the
    outputs stay the same, and the new inputs get gradients when training goes on."""
    animator = _small(head)
    _randomise_zero_layers(animator)
    animator.save_pretrained(tmp_path / "model")
    grown = GaussianDiffusionAnimator.from_pretrained(tmp_path / "model", head=head,
                                                      model_overrides={"warp_guidance": True})
    assert grown.model.pose_guider.body[0].weight.shape[1] == 8 + 4
    reference_view = synthetic / "id000_s00" / "cam00"
    kwargs = dict(steps=2, max_frames=3, progress=False, camera="driving",
                  reference_tracking=reference_view / "tracking.npz")
    driving = synthetic / "id001_s00" / "cam01" / "tracking.npz"
    before = animator.animate(reference_view / "frames" / "000000.png", driving, **kwargs)
    after = grown.animate(reference_view / "frames" / "000000.png", driving, **kwargs)
    torch.testing.assert_close(before.frames, after.frames, atol=1e-5, rtol=0)
    assert after.control_maps.shape == before.control_maps.shape  # the features, for display

    model = grown.model.train()
    model.set_stage(1)
    gaussian_diffusion_loss(model, batch, torch.Generator().manual_seed(0)).backward()
    assert model.pose_guider.body[0].weight.grad[:, 8:].abs().sum() > 0
    with pytest.raises(Exception, match="needs the reference"):
        model.control_maps({k: v[:, 0] for k, v in batch["target_params"].items()}, batch["K"][:, 0],
                           batch["world_to_cam"][:, 0])


def test_reference_background_is_pasted_outside_the_head(head, synthetic):
    """background='reference': far from the head (the reference's and every frame's) the output is
    the reference, pixel for pixel; on the head it is the generated frame."""
    from onehead.pipelines.reenactment import driving_motion, head_masks, prepare_reference

    animator = _small(head, background="reference", background_margin=0.1)
    generated = _small(head)
    reference_view = synthetic / "id000_s00" / "cam00"
    image = reference_view / "frames" / "000000.png"
    driving = synthetic / "id001_s00" / "cam01" / "tracking.npz"
    kwargs = dict(steps=2, max_frames=3, progress=False, camera="driving",
                  reference_tracking=reference_view / "tracking.npz")
    pasted = animator.animate(image, driving, **kwargs)
    plain = generated.animate(image, driving, **kwargs)
    ref = prepare_reference(image, head, 32, reference_view / "tracking.npz")
    motion = driving_motion(driving, ref, head, 32, camera="driving", max_frames=3)
    heads = torch.maximum(head_masks(head, ref.tracking, 32), head_masks(head, motion.tracking, 32))
    far = torch.nn.functional.max_pool2d(heads, 9, stride=1, padding=4) == 0  # beyond the 3-pixel growth
    assert far.sum() > 100
    reference = pasted.reference[None].expand_as(pasted.frames)
    assert torch.equal(pasted.frames.masked_select(far.expand_as(reference)), reference.masked_select(far.expand_as(reference)))
    inside = heads.bool().expand_as(reference)
    torch.testing.assert_close(pasted.frames.masked_select(inside), plain.frames.masked_select(inside))


def test_the_model_owns_its_head_model(head):
    """Moving or training an Animator never changes the head model the caller (tracker, metrics) holds."""
    animator = _small(head)
    assert animator.head is not head
    animator.model.double().train()
    assert head.v_template.dtype == torch.float32 and not head.training
    assert animator.head.v_template.dtype == torch.float64
    torch.testing.assert_close(animator.head.v_template.float(), head.v_template, atol=0, rtol=0)
