"""`onehead eval --task landmarks`: the tracker against labelled images, mediapipe as the baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from onehead.cli import main
from onehead.data.samples import astronaut
from onehead.errors import MediaReadError
from onehead.evaluation.landmarks import (LandmarkOptions, evaluate_landmarks, labelled_images, nme, read_pts,
                                          write_pts)
from onehead.tracking.landmarks import MEDIAPIPE_TO_IBUG68

OFFSET = np.array([3.0, -4.0])  # pixels: the labels sit this far from mediapipe's points


def test_pts_round_trip_and_bad_files(tmp_path):
    points = np.random.default_rng(0).uniform(0, 500, (68, 2))
    write_pts(tmp_path / "a.pts", points)
    np.testing.assert_allclose(read_pts(tmp_path / "a.pts"), points, atol=1e-3)
    (tmp_path / "short.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n3 4\n}\n")
    with pytest.raises(MediaReadError, match="n_points says 68"):
        read_pts(tmp_path / "short.pts")
    (tmp_path / "junk.pts").write_text("hello\n")
    with pytest.raises(MediaReadError, match="not a .pts file"):
        read_pts(tmp_path / "junk.pts")


def test_nme_splits_jaw_and_inner_points():
    labels = np.zeros((68, 2))
    labels[36], labels[45] = (0.0, 0.0), (100.0, 0.0)
    points = labels.copy()
    points[:17] += (10.0, 0.0)  # the jaw 0.1 eye distances off, the rest exact
    scores = nme(points, labels)
    assert scores["nme_jaw"] == pytest.approx(0.1)
    assert scores["nme_inner"] == pytest.approx(0.0)
    assert scores["nme"] == pytest.approx(0.1 * 17 / 68)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, astronaut_tracking):
    """The astronaut labelled with mediapipe's own points moved by OFFSET, a blank image with labels,
    and an image without labels (ignored)."""
    folder = tmp_path_factory.mktemp("labelled")
    Image.fromarray(astronaut()).save(folder / "astronaut.png")
    labels = astronaut_tracking.landmarks_mp[0][list(MEDIAPIPE_TO_IBUG68)] + OFFSET
    write_pts(folder / "astronaut.pts", labels)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "blank.png")
    write_pts(folder / "blank.pts", labels)
    Image.fromarray(astronaut()).save(folder / "unlabelled.png")
    return folder, labels


def test_evaluate_landmarks_scores_the_fit_and_mediapipe(labelled, astronaut_tracking):
    folder, labels = labelled
    assert [image.name for image, _ in labelled_images(folder)] == ["astronaut.png", "blank.png"]
    report = evaluate_landmarks(folder, LandmarkOptions(progress=False))
    iod = np.linalg.norm(labels[45] - labels[36])
    detected = report["methods"]["mediapipe"]["per_sequence"]["astronaut.png"]
    assert detected["nme"] == pytest.approx(np.linalg.norm(OFFSET) / iod, rel=1e-3)
    ours = report["methods"]["onehead"]["per_sequence"]["astronaut.png"]
    expected = np.linalg.norm(astronaut_tracking.landmarks68[0] - labels, axis=-1).mean() / iod
    assert ours["nme"] == pytest.approx(expected, rel=1e-3)
    assert ours["better_than_mediapipe"] == float(ours["nme"] < detected["nme"])
    # the blank image has no face: it counts in `found`, not in the NME
    assert report["methods"]["onehead"]["per_sequence"]["blank.png"] == {"found": 0.0}
    assert report["methods"]["onehead"]["mean"]["found"] == 0.5
    assert report["methods"]["onehead"]["mean"]["nme"] == pytest.approx(ours["nme"])


def test_cli_eval_landmarks(labelled, tmp_path):
    folder, _ = labelled
    out = tmp_path / "report.json"
    assert main(["eval", "--task", "landmarks", "--data", str(folder), "--out", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["task"] == "landmarks" and set(report["methods"]) == {"onehead", "mediapipe"}
    # bad input: one line, exit code 2
    assert main(["eval", "--task", "landmarks", "--data", str(folder), "--out", str(out),
                 "--model", "none"]) == 2
    assert main(["eval", "--task", "landmarks", "--out", str(out)]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", "--task", "landmarks", "--data", str(empty), "--out", str(out)]) == 2
