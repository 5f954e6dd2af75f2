"""Cross-identity reenactment against exact ground truth (synthetic pairs from `onehead synth
--cross-pairs`), with the copy-the-reference baseline measured in the same run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from onehead.data.sequence import open_sequence, read_pairs
from onehead.metrics.image import l1, psnr, ssim


def _frames(view, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.stack([view.frame(t) for t in range(view.num_frames)])).permute(0, 3, 1, 2).float() / 255
    masks = [view.mask(t) for t in range(view.num_frames)]
    masks = torch.ones(len(images), 1, *images.shape[-2:]) if masks[0] is None else torch.from_numpy(np.stack(masks))[:, None]
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        masks = F.interpolate(masks, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images, masks


def _scores(prediction, target, mask) -> dict:
    return {"psnr": psnr(prediction, target), "ssim": ssim(prediction, target), "l1": l1(prediction, target),
            "psnr_masked": psnr(prediction, target, mask)}


def evaluate_cross_pairs(animator, root: str | Path, num_steps: int | None = None, seed: int = 0,
                         progress: bool = True) -> dict:
    """Mean PSNR / SSIM / L1 (and PSNR inside the head mask) of the Animator and of copying the
    reference, over every frame of every view of every pair. The reference is frame 0 of the
    reference sequence's first view; the Animator renders at the driving cameras."""
    from tqdm import tqdm

    root = Path(root)
    size = animator.config.resolution
    totals = {"model": [], "copy_reference": []}
    pairs = read_pairs(root)
    for pair in tqdm(pairs, desc="cross pairs", disable=not progress):
        ref_view = next(iter(open_sequence(root / pair["reference"]).views.values()))
        driving = open_sequence(root / pair["driving"])
        reference = ref_view.frame(0)
        ref_tensor, _ = _frames(ref_view, size)
        for name, target_view in open_sequence(root / pair["target"]).views.items():
            result = animator.animate(reference, driving.views[name].tracking, num_steps=num_steps, seed=seed,
                                      camera="driving", reference_tracking=ref_view.tracking, progress=False)
            target, mask = _frames(target_view, size)
            totals["model"].append(_scores(result.frames, target, mask))
            copy = ref_tensor[:1].expand_as(target)
            totals["copy_reference"].append(_scores(copy, target, mask))
    report = {"pairs": len(pairs), "frames": int(sum(len(s["psnr"]) for s in totals["model"]))}
    for method, rows in totals.items():
        report[method] = {key: float(torch.cat([r[key] for r in rows]).mean()) for key in rows[0]}
    return report
