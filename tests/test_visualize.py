"""onehead.render.visualize: contact sheets and the side-by-side video frames (explicit columns)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from onehead.pixels import frames_to_uint8
from onehead.render.visualize import LABEL_HEIGHT, contact_sheet, control_rgb, side_by_side


def test_contact_sheet_places_each_tile_exactly():
    red = torch.zeros(3, 4, 5)
    red[0] = 1.0
    grey = torch.full((3, 4, 5), 0.5)
    sheet = contact_sheet([[("a", red), ("b", grey)]])
    assert sheet.shape == (4 + LABEL_HEIGHT, 10, 3) and sheet.dtype == np.uint8
    np.testing.assert_array_equal(sheet[LABEL_HEIGHT:, :5], frames_to_uint8(red[None])[0])
    np.testing.assert_array_equal(sheet[LABEL_HEIGHT:, 5:], frames_to_uint8(grey[None])[0])


def test_side_by_side_takes_explicit_columns():
    frames = 3
    reference = torch.full((3, 16, 16), 0.25)  # one image: shown beside every frame
    driving = np.zeros((frames, 8, 16, 3), np.uint8)  # not square: letterboxed
    driving[:, :, :, 1] = 255
    output = torch.stack([torch.full((3, 16, 16), v) for v in (0.0, 0.5, 1.0)])
    sheets = side_by_side([("reference", reference), ("driving", driving), ("output", output)], tile=16)
    assert sheets.shape == (frames, 16 + LABEL_HEIGHT, 3 * 16, 3) and sheets.dtype == np.uint8
    body = sheets[:, LABEL_HEIGHT:]
    assert (body[:, :, :16] == 64).all()  # 0.25 * 255, every frame
    assert (body[:, 4:12, 16:32, 1] == 255).all() and (body[:, :3, 16:32] == 0).all()  # green, black bars
    for t, v in enumerate((0, 128, 255)):
        assert (body[t, :, 32:] == v).all()


def test_side_by_side_checks_its_columns():
    with pytest.raises(ValueError, match="different frame counts"):
        side_by_side([("a", torch.zeros(2, 3, 8, 8)), ("b", torch.zeros(3, 3, 8, 8))], tile=8)
    with pytest.raises(ValueError, match="uint8"):
        side_by_side([("a", np.zeros((2, 8, 8, 3), np.float32))], tile=8)
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        side_by_side([("a", torch.zeros(2, 8, 8, 8))], tile=8)
    with pytest.raises(ValueError, match="no columns"):
        side_by_side([], tile=8)


def test_control_rgb_shows_only_covered_pixels():
    control = torch.zeros(2, 8, 6, 6)
    control[:, :, 1:4, 1:4] = torch.randn(2, 8, 3, 3)
    rgb = control_rgb(control)
    assert rgb.shape == (2, 3, 6, 6)
    assert (rgb[:, :, 0] == 0).all() and (rgb[:, :, 4:] == 0).all()
    assert rgb.min() >= 0 and rgb.max() <= 1


def test_render_imports_no_higher_layer():
    """A renderer takes tensors: importing onehead.render (and its visualize helpers) loads no
    model, pipeline, evaluation or CLI code."""
    code = ("import sys, onehead.render, onehead.render.visualize, onehead.render.overlay; "
            "print(sorted({n.split('.')[1] for n in sys.modules if n.startswith('onehead.')}))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for higher in ("models", "pipelines", "evaluation", "cli", "training", "tracking", "metrics"):
        assert f"'{higher}'" not in loaded, loaded
