"""The warp-correcting Animator (GaussianDiffusionConfig.correct_warp) and the warp it corrects:
fill_warp, the foreground carried with the head, the smooth plate fill, the small preset."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from onehead.errors import ConfigError
from onehead.models.gaussian_diffusion import GaussianDiffusionConfig, InferenceSettings
from onehead.pipelines.gaussian_diffusion import GaussianDiffusionAnimator
from onehead.render.warp import (MOUTH_INTERIOR, Warp, _fill_smooth, _identity_grid, antialiased, carry_foreground,
                                 fill_mirrored, fill_warp, mouth_mask, seams_between, soft_edge, without_specks)
from test_animator import SMALL_UNET as UNET  # the same small UNet as the other Animator tests


def _correcting(head, **settings) -> GaussianDiffusionAnimator:
    torch.manual_seed(0)
    config = GaussianDiffusionConfig.from_preset("small", resolution=64, pixel_factor=4, control_resolution=32,
                                                 uv_resolution=32, unet=UNET, guider_channels=(8, 16))
    inference = InferenceSettings(window=3, window_overlap=1, **{"steps": 2, "initial_latent": "zeros",
                                                                 "background": "generated", **settings})
    return GaussianDiffusionAnimator.from_config(config, inference, head)


@pytest.fixture(scope="module")
def pair(head, tmp_path_factory):
    """A synthetic reference and a 4-frame motion of the same head, at 64 px."""
    from onehead.data.sequence import open_sequence
    from onehead.data.synthetic import SynthOptions, synthesize
    from onehead.pipelines.reenactment import Motion, driving_motion, prepare_reference

    out = tmp_path_factory.mktemp("warp-correction")
    synthesize(head, out, SynthOptions(identities=1, sequences=1, frames=4, views=1, size=64, texture_size=64,
                                       progress=False))
    view = open_sequence(out / "id000_s00").views["cam00"]
    reference = prepare_reference(view.frame(0), head, 64, view.tracking)
    motion = driving_motion(view.tracking, reference, head, 64, camera="driving")
    return reference, Motion(motion.tracking, None)


def test_a_new_correcting_model_is_exactly_the_mesh_warp(head, pair):
    """Zero-initialised UNet output and warp encoder: the sampled correction is zero, so the frames
    are the filled warp, which without a foreground or the dark mouth is the mesh-warp baseline."""
    from onehead.evaluation.baselines import mesh_warp

    animator = _correcting(head)
    reference, motion = pair
    frames = animator.reenact(reference, motion, mouth_interior=False).frames
    torch.testing.assert_close(frames, mesh_warp(reference, motion, head), atol=1e-5, rtol=0)
    assert frames.shape == (4, 3, 64, 64)


def test_the_correction_is_added_to_the_warp(head, pair):
    """A trained-like model changes the frames, by a correction decoded from latent space."""
    animator = _correcting(head)
    with torch.no_grad():
        animator.model.denoising_unet.conv_out.weight.normal_(0, 0.02)
        animator.model.warp_encoder.weight.normal_(0, 0.02)
    reference, motion = pair
    frames = animator.reenact(reference, motion).frames
    ref = animator.reference_inputs(reference)
    params, K, w2c = animator.motion_inputs(motion)
    base = animator.model.warp_base(ref, params, K, w2c).image
    assert (frames - base).abs().max() > 1e-3
    assert frames.min() >= 0 and frames.max() <= 1


def test_correction_blur_and_strength_shape_the_correction(head, pair):
    """correction_blur: the frames are the warp plus the blurred correction of the same model;
    correction_strength: plus a share of it."""
    from onehead.render.warp import gaussian_blur

    animator = _correcting(head, correction_margin=1.0, mouth_interior=False)
    with torch.no_grad():
        animator.model.denoising_unet.conv_out.weight.normal_(0, 0.02)
        animator.model.warp_encoder.weight.normal_(0, 0.02)
    reference, motion = pair
    sharp = animator.reenact(reference, motion).frames
    blurred = animator.reenact(reference, motion, correction_blur=2.0).frames
    ref = animator.reference_inputs(reference)
    base = animator.model.warp_base(ref, *animator.motion_inputs(motion)).image
    torch.testing.assert_close(blurred, (base + gaussian_blur(sharp - base, 2.0)).clamp(0, 1), atol=1e-5, rtol=0)
    high = lambda x: (x - gaussian_blur(x, 2.0))[..., 8:-8, 8:-8].abs().mean()  # noqa: E731
    assert high(blurred - base) < 0.5 * high(sharp - base)
    with pytest.raises(ValueError, match="correction_blur"):
        InferenceSettings(correction_blur=-1)
    # correction_strength scales the correction: 0 is the warp itself
    half = animator.reenact(reference, motion, correction_strength=0.5).frames
    torch.testing.assert_close(half, (base + 0.5 * (sharp - base)).clamp(0, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(animator.reenact(reference, motion, correction_strength=0.0).frames, base,
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="correction_strength"):
        InferenceSettings(correction_strength=1.5)


def test_denoise_and_sample_need_the_warp(head, pair):
    animator = _correcting(head)
    model = animator.model
    latents = torch.zeros(2, model.codec.latent_channels, 16, 16)
    context = model.context("synthetic").expand(2, -1, -1)
    with pytest.raises(ConfigError, match="warp"):
        model.denoise(latents, torch.tensor([999, 999]), context, torch.zeros(2, 8, 32, 32))
    with pytest.raises(ConfigError, match="warp"):
        animator.sample(torch.rand(1, 3, 64, 64), torch.zeros(1, 2, 8, 32, 32))


def test_control_maps_are_splatted_at_the_control_resolution(head, pair):
    animator = _correcting(head)
    params, K, w2c = animator.motion_inputs(pair[1])
    with torch.no_grad():
        control = animator.model.control_maps(params, K, w2c)
    assert control.shape == (4, 8, 32, 32)
    # the same camera: the head lands where a full-resolution splat puts it, at half the scale
    animator.model.config.control_resolution = None
    with torch.no_grad():
        full = animator.model.control_maps(params, K, w2c)
    animator.model.config.control_resolution = 32
    covered_low = control.abs().sum(1) > 0.05
    covered_full = torch.nn.functional.avg_pool2d((full.abs().sum(1, keepdim=True) > 0.05).float(), 2)[:, 0] > 0.5
    overlap = (covered_low & covered_full).sum() / (covered_low | covered_full).sum()
    assert overlap > 0.8
    with pytest.raises(ConfigError, match="warp_guidance"):
        GaussianDiffusionConfig.from_preset("small", warp_guidance=True)


def test_the_small_preset_is_256_pixels_with_32x32_latents():
    config = GaussianDiffusionConfig.from_preset("small")
    assert config.resolution == 256 and config.pixel_factor == 8 and config.correct_warp
    assert config.control_size == 64 and config.min_train_timestep == 900


def test_save_and_load_keep_the_warp_encoder(head, pair, tmp_path):
    animator = _correcting(head)
    with torch.no_grad():
        animator.model.warp_encoder.weight.normal_(0, 0.02)
    animator.save_pretrained(tmp_path / "model")
    loaded = GaussianDiffusionAnimator.from_pretrained(tmp_path / "model", head=head)
    assert torch.equal(loaded.model.warp_encoder.weight, animator.model.warp_encoder.weight)
    reference, motion = pair
    torch.testing.assert_close(loaded.reenact(reference, motion).frames, animator.reenact(reference, motion).frames)


def test_half_precision_folders_load_as_float32(head, tmp_path):
    animator = _correcting(head)
    animator.save_pretrained(tmp_path / "full")
    animator.save_pretrained(tmp_path / "half", torch.float16)
    size = lambda folder: sum(f.stat().st_size for f in folder.rglob("*.safetensors"))  # noqa: E731
    assert size(tmp_path / "half") < 0.6 * size(tmp_path / "full")
    loaded = GaussianDiffusionAnimator.from_pretrained(tmp_path / "half", head=head)
    weight = loaded.model.denoising_unet.conv_in.weight
    assert weight.dtype == torch.float32
    assert torch.equal(weight, animator.model.denoising_unet.conv_in.weight.half().float())


def test_untrained_temporal_layers_are_skipped_and_change_nothing(head, pair, tmp_path):
    animator = _correcting(head)
    animator.save_pretrained(tmp_path / "model")
    loaded = GaussianDiffusionAnimator.from_pretrained(tmp_path / "model", head=head)
    assert loaded.model.temporal.untrained() and not loaded.model.temporal.enabled
    reference, motion = pair
    skipped = loaded.reenact(reference, motion).frames
    loaded.model.temporal.enabled = True
    torch.testing.assert_close(loaded.reenact(reference, motion).frames, skipped, atol=1e-6, rtol=0)
    with torch.no_grad():
        animator.model.temporal.layers[0].proj_out.bias.fill_(0.1)
    animator.save_pretrained(tmp_path / "trained")
    assert GaussianDiffusionAnimator.from_pretrained(tmp_path / "trained", head=head).model.temporal.enabled


# ----------------------------------------------------------------------------- the warp itself
def _disk(size: int, centre_x: float, radius: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return (((xs - centre_x) ** 2 + (ys - size / 2) ** 2) < radius ** 2).float()[None, None]


def _translated_head(size=64, shift=6):
    """A 'head' disk that moved `shift` pixels to the right, a hair ring around it in the
    reference, and the Warp a mesh warp would give for that motion."""
    reference_head = _disk(size, size / 2, 12)
    hair = _disk(size, size / 2, 18) - reference_head
    image = torch.zeros(1, 3, size, size)
    image[:, 0] = 0.8 * reference_head[0, 0]  # red head
    image[:, 1] = 0.7 * hair[0, 0]  # green hair
    image[:, 2] = 0.5  # blue backdrop everywhere
    return image, _shifted_warp(image, reference_head, shift), reference_head + hair, hair


def _shifted_warp(image: torch.Tensor, reference_head: torch.Tensor, shift: int) -> Warp:
    """The Warp a mesh warp would give when the head (mask (1, 1, S, S)) moved `shift` pixels right."""
    size = image.shape[-1]
    covered = torch.roll(reference_head, shift, dims=-1)
    identity = _identity_grid(size, size, "cpu", torch.float32)
    grid = identity.clone()
    grid[..., 0] -= 2 * shift / size  # each covered pixel samples `shift` pixels to its left
    grid = torch.where(covered[0, 0, :, :, None] > 0, grid, identity)[None]
    warped = torch.nn.functional.grid_sample(image, grid, align_corners=False) * covered
    forward = identity.clone()
    forward[..., 0] += 2 * shift / size  # each reference head pixel lands `shift` pixels to its right
    forward = torch.where(reference_head[0, 0, :, :, None] > 0, forward, identity)[None]
    return Warp(warped, covered, covered, reference_head, grid, forward)


def test_the_torso_goes_on_behind_a_moved_neck():
    """Below the carried hair (the chin line) the plate behind the moved head and neck is filled
    from its sides (the torso), not smoothed with the backdrop above."""
    size, shift = 64, 6
    head = torch.zeros(1, 1, size, size)
    head[..., 26:, 27:37] = 1  # the neck, down to the bottom
    head = torch.maximum(head, _disk(size, size / 2, 10))  # the head around row 32
    image = torch.full((1, 3, size, size), 0.9)  # pale backdrop
    image[..., 48:, :] = 0.1  # a dark torso below row 48
    image[:, 0] = torch.where(head[0, 0] > 0, torch.tensor(0.8), image[0, 0])
    hair = _disk(size, size / 2, 15) * (1 - head)
    hair[..., 38:, :] = 0  # carried down to the chin line only
    frames = fill_warp(image, _shifted_warp(image, head, shift), foreground=hair)
    vacated_neck = frames[0, :, 52:, 27:27 + shift]
    assert vacated_neck.max() < 0.2  # torso, where a smooth fill would mix in the pale backdrop
    assert frames[0, 1, 20, 5] > 0.85  # the backdrop itself stays




def test_the_foreground_beside_the_head_moves_with_it():
    image, warp, person, hair = _translated_head()
    frames = fill_warp(image, warp, foreground=person)
    moved_hair = torch.roll(hair, 6, dims=-1)[0, 0] > 0
    near = moved_hair & (_disk(64, 38, 15)[0, 0] > 0)  # the hair ring's inner part, where the motion is whole
    assert frames[0, 1][near].mean() > 0.6  # green hair where the moved ring is
    far = _disk(64, 32, 28)[0, 0] == 0
    torch.testing.assert_close(frames[0][:, far], image[0][:, far], atol=1 / 255, rtol=0)  # backdrop stays
    plain = fill_warp(image, warp)  # without the foreground the hair stays where it was
    left_behind = (hair[0, 0] > 0) & (warp.covered[0, 0] == 0)
    assert plain[0, 1][left_behind].mean() > 0.6 and plain[0, 1][near].mean() < frames[0, 1][near].mean()


def test_hair_that_moved_is_not_also_left_behind():
    """A move larger than the motion's reach: the hair ring goes with the head, and where the
    ring's far side was, the backdrop shows (no ghost of the hair)."""
    shift = 10
    image, warp, person, hair = _translated_head(shift=shift)
    frames = fill_warp(image, warp, foreground=person)
    ring = (hair[0, 0] > 0)
    vacated = ring & ~torch.roll(ring, shift, dims=-1) & (warp.covered[0, 0] == 0)
    assert vacated.sum() > 20
    assert frames[0, 1][vacated].mean() < 0.15  # no green left where the hair was
    moved = torch.roll(ring, shift, dims=-1) & (warp.covered[0, 0] == 0) & (_disk(64, 32 + shift, 15)[0, 0] > 0)
    assert frames[0, 1][moved].mean() > 0.5  # and the hair's inner part is where it went


def test_wide_hair_moves_whole_and_keeps_its_shape():
    """A hair ring reaching far beyond the motion's reach (8% of the size) still moves by the
    head's whole shift at its outer edge, so it is not stretched."""
    size, shift = 128, 8
    image, warp, person, hair = _translated_head(size=size, shift=shift)
    wide = _disk(size, size / 2, 40) - _disk(size, size / 2, 12)  # out to 28 px beyond the head (22% of the size)
    image[:, 1] = 0.7 * wide[0, 0]
    person = _disk(size, size / 2, 40)
    frames = fill_warp(image, warp, foreground=person)
    outer_edge = (_disk(size, size / 2 + shift, 39) - _disk(size, size / 2 + shift, 34))[0, 0] > 0
    right = outer_edge & (torch.arange(size)[None, :] > size / 2 + shift + 20)
    assert frames[0, 1][right].mean() > 0.6  # the ring's far right edge arrived in full
    beyond = (_disk(size, size / 2 + shift, 47) - _disk(size, size / 2 + shift, 42))[0, 0] > 0
    assert frames[0, 1][beyond].mean() < 0.1  # and did not smear past it


def test_split_foreground_moves_down_to_the_chin_and_leaves_the_collar():
    from onehead.pipelines.reenactment import split_foreground

    def moving_foreground(reference, **kw):
        return split_foreground(reference, **kw)[0]

    landmarks = np.full((1, 68, 2), 60.0)  # chin (8) at row 60, nose tip (30) at (50, 40)
    landmarks[0, 30] = (50, 40)
    landmarks[0, 3:14, 0] = np.linspace(35, 65, 11)  # the lower jaw spans columns 35-65
    reference = SimpleNamespace(foreground=np.ones((100, 100), np.float32),
                                tracking=SimpleNamespace(landmarks68=landmarks))
    mask = moving_foreground(reference, fade=0.1)  # fading over the 10 rows above the chin
    assert mask[:50].min() == 1 and mask[60:].max() == 0
    assert 0 < mask[55, 50] < 1  # under the jaw: the neck fades out
    assert mask[52:, :30].max() == 0  # beside the chin: the collar stays
    # a collar touching the face by a thin rim, away from the nose: it stays as well
    person = np.zeros((100, 100), np.float32)
    person[10:50, 30:70] = 1  # the head
    person[48:50, 0:30] = 1  # a collar's rim rising beside it, 2 rows thick (1.2% of the size cuts it)
    mask = moving_foreground(SimpleNamespace(foreground=person, tracking=SimpleNamespace(landmarks68=landmarks)))
    assert mask[20:40, 35:65].min() == 1 and mask[48:50, :25].max() == 0
    # a mask that misses the face moves whole
    missing = SimpleNamespace(foreground=person * (np.arange(100)[None, :] < 20), tracking=reference.tracking)
    np.testing.assert_array_equal(moving_foreground(missing, fade=0.1) > 0, (missing.foreground > 0)
                                  & (np.arange(100)[:, None] < 60))


def _face_landmarks(cx: float, cy: float, eyes: float) -> np.ndarray:
    """68 iBUG-like points of a frontal face centred at (cx, cy) with outer eye corners `eyes` apart."""
    points = np.zeros((68, 2), np.float32)
    angles = np.linspace(np.pi, 0, 17)  # the jaw: the lower half of an ellipse, right to left in the image
    points[:17] = np.stack([cx - 0.9 * eyes * np.cos(angles), cy + 1.1 * eyes * np.sin(angles)], -1)
    points[17:27] = np.stack([np.linspace(cx - 0.8 * eyes, cx + 0.8 * eyes, 10), np.full(10, cy - 0.5 * eyes)], -1)
    points[27:68] = (cx, cy)
    points[36], points[45] = (cx - eyes / 2, cy - 0.3 * eyes), (cx + eyes / 2, cy - 0.3 * eyes)
    points[27] = (cx, cy - 0.3 * eyes)
    return points


def test_beside_the_head_splits_off_another_face_but_keeps_wide_hair():
    from onehead.pipelines.reenactment import beside_the_head

    size, eyes = 200, 40.0
    landmarks = _face_landmarks(80, 100, eyes)
    rows, columns = np.mgrid[:size, :size]
    head = (columns - 80) ** 2 + (rows - 95) ** 2 < 55 ** 2  # face, scalp and wide hair (up to ~0.6 eye distances out)
    other = (columns - 165) ** 2 + (rows - 90) ** 2 < 28 ** 2  # another face beside it, 2 eye distances away
    bridge = (np.abs(rows - 90) < 6) & (columns > 120) & (columns < 145)  # joined to the hair by a neck of 12 px
    claimed = beside_the_head(head | other | bridge, landmarks)
    assert claimed[other].mean() > 0.95  # the other face is split off
    assert not claimed[head].any()  # none of the head and its hair
    assert not beside_the_head(head, landmarks).any()  # a head alone keeps everything


def test_the_plate_behind_a_moved_head_takes_nothing_from_a_person_who_stays():
    """A neighbour (white) stands left of the head and its hair, which move 6 pixels right: what
    they leave is filled with the backdrop (blue), not with the neighbour mirrored in; the
    neighbour stays where it was."""
    image, warp, person, _ = _translated_head()
    neighbour = torch.zeros(1, 1, 64, 64)
    neighbour[..., 24:41, 6:14] = 1  # touching the hair's left edge (column 14)
    image = torch.where(neighbour > 0, torch.tensor(0.9), image)
    vacated = (person > 0) & (torch.roll(person, 6, dims=-1) == 0) & (neighbour == 0)
    without = fill_warp(image, warp, foreground=person)
    with_staying = fill_warp(image, warp, foreground=person, staying=neighbour)
    assert float(without[:, 0:1][vacated].max()) > 0.5  # mirrored in, the neighbour shows twice
    assert float(with_staying[:, 0:1][vacated].max()) < 0.2  # the backdrop only
    # the neighbour stays (but for the 2-pixel margin that goes with the hair's soft edge)
    torch.testing.assert_close(with_staying[:, :, 24:41, 6:11], image[:, :, 24:41, 6:11], atol=1 / 255, rtol=0)


def test_split_foreground_leaves_another_person_beside_the_head_and_the_torso_below():
    from onehead.pipelines.reenactment import split_foreground

    size, eyes = 200, 40.0
    landmarks = _face_landmarks(80, 100, eyes)  # the chin (point 8) at row 144
    rows, columns = np.mgrid[:size, :size]
    head = (columns - 80) ** 2 + (rows - 95) ** 2 < 55 ** 2
    other = (columns - 165) ** 2 + (rows - 90) ** 2 < 28 ** 2  # another face, joined by a 12-pixel neck
    bridge = (np.abs(rows - 90) < 6) & (columns > 120) & (columns < 145)
    apart = (columns - 25) ** 2 + (rows - 25) ** 2 < 12 ** 2  # a third, not touching the head
    torso = rows >= 150
    person = (head | other | bridge | apart | torso).astype(np.float32)
    reference = SimpleNamespace(foreground=person, tracking=SimpleNamespace(landmarks68=landmarks[None]))
    moving, staying = split_foreground(reference)
    assert staying.dtype == bool and moving.shape == staying.shape == (size, size)
    assert staying[other].mean() > 0.95 and staying[apart].all()  # the others stay
    assert not staying[head & (rows < 120)].any() and moving[head & (rows < 120)].min() == 1  # the head moves
    assert not staying[torso].any() and moving[torso].max() == 0  # the torso stays, and is mirrored as ever
    assert not (staying & (moving > 0)).any()


def test_fill_mirrored_never_mirrors_in_what_it_avoids():
    """A hole beside another person's face (red): reflected about the edge they share, the face
    would show in the hole; avoided, the hole takes the backdrop and the face stays as it was."""
    image = np.full((64, 64, 3), 200, np.uint8)
    image[20:44, 40:56] = (220, 40, 40)  # the neighbour, right of the hole
    rows, cols = np.mgrid[:64, :64]
    hole = (rows - 32) ** 2 + (cols - 28) ** 2 < 12 ** 2  # columns 17 to 39
    neighbour = np.zeros((64, 64), bool)
    neighbour[20:44, 40:56] = True
    plain = fill_mirrored(image, hole, soften=0)
    assert (plain[hole][:, 1] < 100).any()  # without `avoid` some of the face is mirrored in
    filled = fill_mirrored(image, hole, soften=0, avoid=neighbour)
    assert filled[hole].min() == 200 and filled[hole].max() == 200  # the backdrop only
    assert np.array_equal(filled[~hole], image[~hole])  # the face itself is not touched


def test_carry_foreground_marks_what_moved():
    image, warp, person, _ = _translated_head()
    (colours, alpha), moving = carry_foreground(image, warp, person)
    assert colours.shape == (1, 3, 64, 64) and alpha.shape == (1, 1, 64, 64)
    assert float(alpha[warp.covered > 0].max()) == 0  # the head itself comes from the mesh warp
    assert bool((moving >= warp.reference_covered).all())  # the head always counts as moving
    near_person = torch.nn.functional.max_pool2d(person.float(), 5, stride=1, padding=2)
    assert float(moving[near_person == 0].max()) == 0  # the backdrop never does (beyond the soft edge)
    faded = person.clone()
    faded[..., 52:60, 24:40] = 0.3  # a neck fading out below the head: neither carried nor a hole
    _, moving = carry_foreground(image, warp, faded)
    assert float(moving[..., 54:60, 24:40].max()) == 0 and float(moving[..., 20:40, 20:40].min()) == 1


def test_a_faded_strip_beside_the_head_moves_with_it_and_leaves_no_speck():
    """The faded neck just outside the head mesh (within `fringe` of the size) moves whole with the
    head; left behind, it would stay as a speck of skin beside the moved head."""
    size, shift = 128, -8  # the head moves left, away from the strip
    image, warp, _, _ = _translated_head(size=size, shift=shift)
    head = warp.reference_covered[0, 0] > 0  # a disk of radius 12 about (64, 64)
    strip = torch.zeros(size, size, dtype=torch.bool)
    strip[58:70, 76:79] = True  # up to 3 px right of the head (fringe: 0.025 of 128 px)
    strip &= ~head
    faded = warp.reference_covered.clone()
    faded[0, 0][strip] = 0.3
    image[:, 2][:, strip] = 0.9  # a blue skin strip on the blue-0.5 backdrop
    (_, alpha), moving = carry_foreground(image, warp, faded)
    assert bool(moving[0, 0][strip].all())  # it leaves its place
    frames = fill_warp(image, warp, foreground=faded)
    left_behind = strip & ~torch.roll(strip, shift, dims=-1) & (warp.covered[0, 0] == 0)
    assert left_behind.sum() > 10 and frames[0, 2][left_behind].max() < 0.7  # no skin stays there
    far = faded.clone()
    far[0, 0, 100:110, 60:70] = 0.3  # the rest of a faded part, far from the head: neither carried nor a hole
    _, moving = carry_foreground(image, warp, far)
    assert float(moving[0, 0, 100:110, 60:70].max()) == 0


def test_antialiased_softens_the_silhouette_but_not_against_carried_hair():
    covered = np.zeros((20, 20), bool)
    covered[5:15, 5:15] = True
    alpha = antialiased(covered)
    assert alpha[10, 10] == 1 and alpha[0, 0] == 0  # inside whole, outside nothing
    assert 0.5 < alpha[10, 5] < 1 and alpha[5, 5] < alpha[10, 5]  # an edge part-covered, a corner less
    hair = np.zeros((20, 20), bool)
    hair[5:15, 15:18] = True  # carried hair goes on beyond the right edge
    assert antialiased(covered, hair)[10, 14] == 1 and antialiased(covered, hair)[10, 5] == alpha[10, 5]
    still = np.zeros((20, 20))
    still[:, 10:] = 0.5  # the right half moved half a pixel: half the softening; the left, none
    np.testing.assert_array_equal(antialiased(covered, moved=still)[:, :10], covered[:, :10])
    assert antialiased(covered, moved=still)[10, 14] == 1 - 0.25 * (1 - alpha[10, 14]) / 0.5


def test_soft_edge_blends_the_rim_but_hides_a_faded_part_and_dropped_pieces():
    alpha = np.array([[0.0, 0.3, 0.5, 0.6, 1.0, 0.2, 0.2, 0.2, 0.0, 0.9]])
    kept = alpha > 0.5
    kept[0, 9] = False  # a speck without_specks dropped
    soft = soft_edge(alpha, kept)
    assert soft[0, 4] == 1 and soft[0, 2] == 0.5 and 0.5 < soft[0, 3] < 1  # the rim ramps up
    assert soft[0, 1] < 0.1 and soft[0, 7] == 0  # a faded part shows little or nothing
    assert soft[0, 9] == 0 and soft[0, 0] == 0


def test_mouth_mask_is_the_inner_lip_polygon():
    landmarks = torch.zeros(1, 68, 2)
    square = torch.tensor([[20, 30], [30, 25], [40, 30], [40, 40], [30, 45], [20, 40], [20, 35], [20, 32]],
                          dtype=torch.float32)  # 60-67 around (30, 35)
    landmarks[0, 60:68] = square
    mask = mouth_mask(landmarks, 64, 64, soften=0)
    assert mask.shape == (1, 1, 64, 64)
    assert mask[0, 0, 35, 30] == 1 and mask[0, 0, 35, 10] == 0 and mask[0, 0, 50, 30] == 0
    assert 150 < float(mask.sum()) < 400  # about the polygon's area (~325 px)


def test_the_unseen_inside_of_the_mouth_is_dark():
    """Pixels in the mouth that the reference does not show turn MOUTH_INTERIOR; the ones it shows,
    and everything outside the mouth, are as without the mouth."""
    image, warp, person, _ = _translated_head()
    hole = torch.zeros_like(warp.visible)
    hole[..., 30:34, 36:46] = 1  # a slit of the moved head the reference did not see
    warp.visible = warp.visible * (1 - hole)
    warp.image = warp.image * (1 - hole)
    mouth = torch.zeros_like(hole)
    mouth[..., 28:36, 34:44] = 1
    plain = fill_warp(image, warp)
    dark = fill_warp(image, warp, mouth=mouth)
    inside = (hole * mouth)[0, 0] > 0
    expected = torch.tensor(MOUTH_INTERIOR, dtype=torch.float32) / 255
    torch.testing.assert_close(dark[0][:, inside], expected[:, None].expand(-1, int(inside.sum())), atol=1 / 255, rtol=0)
    untouched = ~inside
    torch.testing.assert_close(dark[0][:, untouched], plain[0][:, untouched])


def test_an_open_reference_mouth_lends_its_own_interior():
    """The reference shows white teeth inside its inner lips: an output mouth moved by (6, 4) px
    gets them, moved with it; a closed reference mouth gives the dark MOUTH_INTERIOR."""
    from onehead.render.warp import mouth_interior_colours

    lips = torch.zeros(1, 68, 2)
    lips[0, 60:68] = torch.tensor([[20, 34], [25, 30], [30, 28], [35, 30], [40, 34], [35, 39], [30, 41], [25, 39]],
                                  dtype=torch.float32)  # iBUG 60-67: left corner, upper lip, right corner, lower lip
    reference = torch.zeros(1, 3, 64, 64)
    reference[..., 28:40, 22:38] = 1.0  # white teeth inside the inner lips
    moved = lips + torch.tensor([6.0, 4.0])
    colours = mouth_interior_colours(reference, lips, moved)
    assert colours.shape == (1, 3, 64, 64)
    assert colours[0, :, 38, 36].min() > 0.95  # (30, 34) in the reference, moved by (6, 4): teeth
    dark = torch.tensor(MOUTH_INTERIOR, dtype=torch.float32) / 255
    torch.testing.assert_close(colours[0, :, 5, 5], dark)  # far from the mouth: dark
    closed = lips.clone()
    closed[0, 60:68, 1] = 34.0  # a closed mouth: the inner lips on one line
    torch.testing.assert_close(mouth_interior_colours(reference, closed, moved)[0, :, 38, 36], dark)


def test_upper_teeth_stay_under_the_upper_lip_and_lower_teeth_drop_with_the_jaw():
    """The reference's mouth is open with white upper and grey lower teeth; the output opens 8 px
    wider by its lower lip: the white stays under the upper lip, the grey moves down with the lower
    lip, and the new gap between them is the dark MOUTH_INTERIOR. A mouth that opens less than the
    reference's moves in one piece."""
    from onehead.render.warp import mouth_interior_colours

    lips = torch.zeros(1, 68, 2)
    lips[0, 60:68] = torch.tensor([[20, 34], [25, 30], [30, 29], [35, 30], [40, 34], [35, 39], [30, 40], [25, 39]],
                                  dtype=torch.float32)
    reference = torch.zeros(1, 3, 64, 64)
    reference[..., 28:34, 18:42] = 1.0  # upper teeth
    reference[..., 35:42, 18:42] = 0.5  # lower teeth
    opened = lips.clone()
    opened[0, 65:68, 1] += 8  # the lower lip drops
    colours = mouth_interior_colours(reference, lips, opened)[0]
    assert colours[:, 29:34, 30].min() > 0.95  # upper teeth where they were
    torch.testing.assert_close(colours[:, 40:46, 30], torch.full((3, 6), 0.5))  # lower teeth lower down
    dark = torch.tensor(MOUTH_INTERIOR, dtype=torch.float32) / 255
    gap = (colours[:, 35:40, 30] - dark[:, None]).abs().amax(0)
    assert float(gap.min()) < 0.02  # between them: the dark gap
    in_one_piece = mouth_interior_colours(reference, lips, opened, split_from=10.0)[0]
    assert float((in_one_piece[:, 35:46, 30] - colours[:, 35:46, 30]).abs().max()) > 0.3  # the parting opens it
    whole = mouth_interior_colours(reference, lips, lips)[0]  # at rest: the reference's own, no seam
    torch.testing.assert_close(whole[:, 30:40, 30], reference[0, :, 30:40, 30], atol=0.02, rtol=0)
    narrower = lips.clone()
    narrower[0, 65:68, 1] -= 2  # opened less than the reference: one move, as without the parting
    torch.testing.assert_close(mouth_interior_colours(reference, lips, narrower),
                               mouth_interior_colours(reference, lips, narrower, split_from=10.0))


def test_fill_smooth_fills_from_the_surroundings():
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, :20] = 50
    image[:, 20:] = 150
    hole = np.zeros((40, 40), bool)
    hole[10:30, 10:30] = True
    filled = _fill_smooth(image, hole)
    assert np.array_equal(filled[~hole], image[~hole])  # the rest untouched
    inside = filled[hole].astype(int)
    assert inside.min() >= 50 and inside.max() <= 150  # within the surrounding colours
    assert filled[20, 11].mean() < filled[20, 28].mean()  # darker near the dark side


def test_fill_mirrored_carries_the_backdrops_texture_into_the_hole():
    """Vertical stripes 4 pixels wide behind a round hole (where a head was): the mirrored fill keeps
    them (a 2-pixel shift of the pattern would swap every stripe); the smooth fill leaves grey."""
    columns = np.arange(64)
    image = np.repeat(np.where((columns // 4) % 2 == 0, 40, 200).astype(np.uint8)[None, :, None], 64, 0)
    image = np.repeat(image, 3, 2)
    rows, cols = np.mgrid[:64, :64]
    hole = (rows - 32) ** 2 + (cols - 32) ** 2 < 14 ** 2
    mirrored, smooth = fill_mirrored(image, hole, soften=0), _fill_smooth(image, hole)
    assert np.array_equal(mirrored[~hole], image[~hole])  # the rest untouched
    assert mirrored[hole].std() > 0.6 * image.std()  # texture, not a blob
    assert smooth[hole].std() < 0.3 * image.std()
    # the stripes' phase holds across the hole's left and right edges (mirrored about a column edge)
    edge_rows = slice(28, 37)
    left_edge = int(np.flatnonzero(hole[32])[0])
    assert np.abs(mirrored[edge_rows, left_edge:left_edge + 2].astype(int)
                  - image[edge_rows, left_edge - 2:left_edge][:, ::-1].astype(int)).max() <= 1


def test_fill_mirrored_takes_each_row_from_beside_the_hole_not_from_below():
    """A head-sized hole in a pale backdrop whose bottom dips into a dark torso: above the torso's
    top the hole takes the backdrop beside it (a nearest-edge mirror reflects the torso up from the
    hole's bottom edge); below it, the torso beside it."""
    image = np.full((64, 64, 3), 210, np.uint8)
    image[50:] = 20  # the torso from row 50 down
    rows, cols = np.mgrid[:64, :64]
    hole = (rows - 38) ** 2 + (cols - 32) ** 2 < 15 ** 2  # rows 24 to 52
    filled = fill_mirrored(image, hole, soften=0)
    assert np.array_equal(filled[~hole], image[~hole])
    assert filled[:48][hole[:48]].min() == 210  # above the torso: the backdrop beside, every pixel
    assert filled[50:][hole[50:]].max() == 20  # beside the torso: the torso


def test_seams_between_finds_thin_gaps_between_the_head_and_the_carried_hair_only():
    rows, cols = np.mgrid[:96, :96]
    radius = np.hypot(rows - 48, cols - 48)
    head = radius < 20
    thin_ring = (radius >= 23) & (radius < 30)  # hair 3 pixels off the head's edge
    far_ring = (radius >= 32) & (radius < 40)  # 12 pixels off: the backdrop between, not a seam
    seams = seams_between(head, thin_ring)
    assert seams[48, 48 + 21] and seams[48 - 22, 48]  # the gap, all round
    assert not (seams & (head | thin_ring)).any()
    assert not seams_between(head, far_ring)[(radius > 21) & (radius < 31)].any()
    assert not seams_between(head, np.zeros_like(head)).any()  # the head alone: its outline is no seam


def test_without_specks_drops_loose_wisps_only():
    head = np.zeros((64, 64), bool)
    head[20:40, 20:40] = True
    carried = np.zeros_like(head)
    carried[18:42, 40:44] = True  # hair against the head
    carried[5, 5] = carried[6, 6] = True  # a wisp on its own
    carried[8:17, 50:52] = True  # a strand torn off beside the head (18 pixels, under 0.5% of the image)
    carried[50:60, 50:60] = True  # a large piece on its own (a hat brim): kept
    kept = without_specks(carried, head)
    assert kept[30, 41] and kept[55, 55]
    assert not kept[5, 5] and not kept[6, 6] and not kept[8:17, 50:52].any()
    assert not (kept & ~carried).any()


def test_fill_mirrored_falls_back_where_the_reflection_leaves_the_image():
    image = np.full((32, 32, 3), 90, np.uint8)
    hole = np.zeros((32, 32), bool)
    hole[:, :20] = True  # from the left border: most reflections land in the hole or outside
    filled = fill_mirrored(image, hole)
    assert np.array_equal(filled, image)  # a plain backdrop stays plain, smooth fallback included
    assert fill_mirrored(image, np.zeros((32, 32), bool)) is not image


def test_training_draws_timesteps_from_min_train_timestep(head, pair):
    from onehead.training.gaussian_diffusion_loss import gaussian_diffusion_loss

    with pytest.raises(ConfigError, match="min_train_timestep"):
        GaussianDiffusionConfig.from_preset("small", min_train_timestep=1000)
    torch.manual_seed(0)
    config = GaussianDiffusionConfig.from_preset("small", resolution=64, pixel_factor=4, control_resolution=32,
                                                 uv_resolution=32, unet=UNET, guider_channels=(8, 16),
                                                 min_train_timestep=990)
    model = GaussianDiffusionAnimator.from_config(config, head=head).model
    reference, motion = pair
    image = torch.from_numpy(reference.image).permute(2, 0, 1).float() / 255
    params = {k: torch.as_tensor(v) for k, v in motion.tracking.head_params().items()}
    ref_params = {k: torch.as_tensor(v)[0] for k, v in reference.tracking.head_params().items()}
    batch = {"reference": image[None], "reference_params": {k: v[None] for k, v in ref_params.items()},
             "reference_K": torch.as_tensor(reference.tracking.K[:1]),
             "reference_world_to_cam": torch.as_tensor(reference.tracking.world_to_cam[:1]),
             "target": image[None, None].expand(1, 4, -1, -1, -1), "target_params": {k: v[None] for k, v in params.items()},
             "K": torch.as_tensor(motion.tracking.K)[None], "world_to_cam": torch.as_tensor(motion.tracking.world_to_cam)[None],
             "domain": torch.tensor([1])}
    seen = []
    model.denoising_unet.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    for seed in range(3):
        loss = gaussian_diffusion_loss(model, batch, torch.Generator().manual_seed(seed))
        assert torch.isfinite(loss)
    assert all(int(t.min()) >= 990 for t in seen) and len(seen) == 3


def test_export_with_zero_correction_renders_the_warp_alone(head, pair, tmp_path):
    from onehead.evaluation.baselines import mesh_warp
    from onehead.training.gaussian_diffusion import export_model_folder

    animator = _correcting(head)
    with torch.no_grad():
        animator.model.denoising_unet.conv_out.weight.normal_(0, 0.02)
    animator.save_pretrained(tmp_path / "trained")
    exported = export_model_folder(tmp_path / "trained", tmp_path / "warp-only", {}, zero_correction=True)
    reference, motion = pair
    assert not exported.model.denoising_unet.conv_out.weight.any()
    loaded = GaussianDiffusionAnimator.from_pretrained(tmp_path / "warp-only", head=head)
    torch.testing.assert_close(loaded.reenact(reference, motion, background="generated", mouth_interior=False).frames,
                               mesh_warp(reference, motion, head), atol=1e-5, rtol=0)


def test_grown_region_equals_square_windows():
    """The separable max and mean passes give exactly the square-window result."""
    import torch.nn.functional as F

    from onehead.pipelines.reenactment import grown_region

    masks = (torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0)) > 0.97).float()
    grow = round(0.1 * 64)
    square = F.max_pool2d(masks, 2 * grow + 1, stride=1, padding=grow)
    square = F.avg_pool2d(square, 2 * (grow // 2) + 1, stride=1, padding=grow // 2, count_include_pad=False)
    torch.testing.assert_close(grown_region([masks], 0.1), square, atol=1e-6, rtol=0)


def test_the_pasted_back_reference_leaves_room_for_the_carried_hair(head):
    """background="reference": the region kept from the model takes in where the warp's carried
    hair left and landed (WarpBase.moved), so the reference's old hair is not pasted back beside it."""
    from dataclasses import replace

    from onehead.models.gaussian_diffusion.model import WarpBase

    animator = _correcting(head)
    covered = torch.zeros(2, 1, 64, 64)
    covered[..., 20:40, 20:40] = 1
    moved = torch.zeros(2, 1, 64, 64)
    moved[..., 5:15, 45:60] = 1  # hair beside the head, off both head masks
    base = WarpBase(torch.rand(2, 3, 64, 64), covered, covered, covered[:1], moved)
    region = animator.background_region(None, None, base, margin=0.0)
    assert float(region[moved > 0].min()) == 1 and float(region[covered > 0].min()) == 1
    assert float(region[..., 50:, :10].max()) == 0  # the backdrop far away is the reference's
    without = animator.background_region(None, None, replace(base, moved=None), margin=0.0)
    assert float(without[moved > 0].max()) == 0


def test_neck_base_weights_pin_the_bottom_of_the_neck_only(head):
    weights = head.neck_base_weights()
    height = head.v_template[:, 1]
    assert weights.shape == (head.num_vertices,) and float(weights.min()) >= 0 and float(weights.max()) <= 1
    assert float(weights[height == height.min()].min()) == 1  # the neck's lowest ring stays with the torso
    chin = float(head().landmarks68[0, 8, 1])
    assert float(weights[height > chin].max()) == 0  # the whole head above the chin moves rigidly
    order = torch.argsort(height)
    assert bool((weights[order].diff() <= 1e-6).all())  # easing off with height


def test_a_pinned_neck_keeps_its_base_where_the_reference_has_it(head, pair):
    """pin_neck: with a person mask (a photo), the neck's base stays where the reference has it when
    the head moves, so the torso below it does not tear; without a mask (a synthetic frame) or with
    pin_neck off, the whole head model moves."""
    animator = _correcting(head)
    reference, _ = pair
    ref = animator.reference_inputs(reference)
    ref.foreground = torch.ones(1, 1, 64, 64)
    params = {k: v.clone() for k, v in ref.params.items()}
    params["translation"] = params["translation"] + torch.tensor([[0.04, 0.0, 0.0]])  # a step sideways
    ref.K = ref.K.clone()
    ref.K[:, :2, :2] *= 0.5  # zoomed out: the whole neck in view
    moved = {pin: animator.model.warp_base(ref, params, ref.K, ref.world_to_cam, pin_neck=pin) for pin in (True, False)}

    def centre(mask, rows):  # the mask's mean column over those rows
        mask = mask[0, 0, rows]
        return float((mask * torch.arange(64.0)).sum() / mask.sum())

    rows = torch.nonzero(moved[False].reference_covered[0, 0].sum(1)).flatten()
    neck, face = slice(int(rows.max()) - 1, int(rows.max()) + 1), slice(int(rows.min()) + 2, int(rows.min()) + 10)
    shift = {pin: [centre(moved[pin].covered, part) - centre(moved[pin].reference_covered, part)
                   for part in (neck, face)] for pin in (True, False)}
    assert shift[False][0] > 2 and shift[False][1] > 2  # unpinned, the whole head model steps sideways
    assert abs(shift[True][0]) < 0.25 * shift[False][0]  # pinned, the neck's base stays
    assert shift[True][1] == pytest.approx(shift[False][1], abs=0.05)  # and the head above moves as before
    ref.foreground = None
    unpinned = animator.model.warp_base(ref, params, ref.K, ref.world_to_cam, pin_neck=True)
    torch.testing.assert_close(unpinned.covered, moved[False].covered)
