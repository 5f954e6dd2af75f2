"""Image metrics against hand-computed values and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from onehead.metrics.image import l1, psnr, ssim


def test_psnr_and_l1_of_a_known_offset():
    target = torch.full((2, 3, 16, 20), 0.5)
    prediction = target + 0.1  # MSE 0.01 -> 20 dB
    torch.testing.assert_close(psnr(prediction, target), torch.full((2,), 20.0))
    torch.testing.assert_close(l1(prediction, target), torch.full((2,), 0.1))
    mask = torch.zeros(2, 1, 16, 20)
    mask[..., :8, :] = 1
    prediction[..., 8:, :] += 0.4  # outside the mask: ignored
    torch.testing.assert_close(psnr(prediction, target, mask), torch.full((2,), 20.0))
    torch.testing.assert_close(l1(prediction, target, mask), torch.full((2,), 0.1))


def test_ssim_is_one_for_identical_images_and_matches_scikit_image():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 40, 48, generator=generator)
    torch.testing.assert_close(ssim(a, a), torch.ones(2))
    b = (a + 0.1 * torch.randn(a.shape, generator=generator)).clamp(0, 1)
    ours = ssim(a, b)
    for i in range(2):
        reference = structural_similarity(a[i].permute(1, 2, 0).numpy(), b[i].permute(1, 2, 0).numpy(),
                                          gaussian_weights=True, sigma=1.5, use_sample_covariance=True,
                                          data_range=1.0, channel_axis=2)
        assert abs(float(ours[i]) - reference) < 1e-5
    assert float(ours.max()) < 0.99


# ----------------------------------------------------------------------------- flicker against truth
def test_change_error_is_zero_for_a_constant_offset_and_counts_only_the_region():
    from onehead.metrics.temporal import change_error

    target = torch.rand(4, 3, 8, 8) * 0.5
    assert change_error(target + 0.2, target).abs().max() < 1e-4  # wrong in every frame, but steady
    frames = target.clone()
    frames[2, :, :4] += 10 / 255  # a flash in frame 2, top half: transitions 1->2 and 2->3 are wrong by 10
    np.testing.assert_allclose(change_error(frames, target).numpy(), [0.0, 5.0, 5.0], atol=1e-4)
    region = torch.zeros(4, 1, 8, 8)
    region[1:3, :, :4] = 1  # the top half of frames 1 and 2: every transition touching them counts those pixels
    np.testing.assert_allclose(change_error(frames, target, region).numpy(), [0.0, 10.0, 10.0], atol=1e-4)
    region[:] = 0
    assert torch.isnan(change_error(frames, target, region)).all()
    with pytest.raises(ValueError):
        change_error(frames[:1], target[:1])
