"""The `onehead` command: user errors are one line on stderr and exit code 2; track and demo write files."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from onehead.cli import main
from onehead.data.samples import astronaut
from onehead.data.tracking_file import load_tracking


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Input files for the command: a portrait, a blank picture, and broken files."""
    root = tmp_path_factory.mktemp("cli-inputs")
    files = {
        "astronaut": root / "astronaut.png",
        "blank": root / "blank.png",
        "text_png": root / "notes.png",
        "empty_mp4": root / "empty.mp4",
        "corrupt_mp4": root / "corrupt.mp4",
    }
    Image.fromarray(astronaut()).save(files["astronaut"])
    Image.fromarray(np.full((240, 320, 3), 90, np.uint8)).save(files["blank"])
    files["text_png"].write_text("this is not a picture\n")
    files["empty_mp4"].write_bytes(b"")
    files["corrupt_mp4"].write_bytes(b"not a video at all, just some bytes\n" * 20)
    return files


def _run_error(capsys, args):
    code = main(args)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    return code, lines


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"),
    ("text_png", "cannot read image"),
    ("blank", "no face"),
    ("empty_mp4", "empty"),
    ("corrupt_mp4", "cannot open video"),
])
def test_track_user_errors_exit_2(capsys, inputs, tmp_path, case, words):
    source = tmp_path / "missing.png" if case == "missing" else inputs[case]
    out = tmp_path / "out.npz"
    code, lines = _run_error(capsys, ["track", str(source), "--out", str(out), "--quiet"])
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("onehead track: error:")
    assert words in lines[0].lower()
    assert str(source) in lines[0]  # says which file
    assert not out.exists()


def test_track_flame_without_directory_exits_2(capsys, inputs, tmp_path, monkeypatch):
    monkeypatch.delenv("ONEHEAD_FLAME_DIR", raising=False)
    out = tmp_path / "out.npz"
    code, lines = _run_error(capsys, ["track", str(inputs["astronaut"]), "--out", str(out), "--head", "flame"])
    assert code == 2
    assert len(lines) == 1 and "--flame-dir" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("case", ["blank", "corrupt_mp4"])
def test_error_is_one_line_without_traceback_in_a_real_process(inputs, tmp_path, case):
    """As a user runs it: a separate interpreter, so C++ libraries' own output counts too."""
    out = tmp_path / "out.npz"
    proc = subprocess.run([sys.executable, "-m", "onehead.cli", "track", str(inputs[case]), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("onehead track: error:")
    assert not out.exists()


def test_track_writes_tracking_and_picture(capsys, inputs, tmp_path, astronaut_tracking):
    out, vis = tmp_path / "x.npz", tmp_path / "x.png"
    code = main(["track", str(inputs["astronaut"]), "--out", str(out), "--vis", str(vis)])
    assert code == 0
    stdout = capsys.readouterr().out
    assert str(out) in stdout and str(vis) in stdout
    tracking = load_tracking(out)
    assert tracking.num_frames == 1 and tracking.valid[0]
    assert tracking.image_size.tolist() == [512, 512]
    # the command runs the same pipeline as the library call on the same pixels
    reference = astronaut_tracking.landmarks68[0]
    iod = np.linalg.norm(reference[45] - reference[36])
    assert np.linalg.norm(tracking.landmarks68[0] - reference, axis=-1).mean() / iod < 0.02
    with Image.open(vis) as picture:
        assert picture.size == (512, 512)
        drawn = np.asarray(picture.convert("RGB"))
    assert not np.array_equal(drawn, astronaut())  # the fit is drawn over the input


def test_track_no_dense_fits_the_68_points_only(capsys, inputs, tmp_path, astronaut_tracking):
    """--no-dense runs the 68-point fit: a different fit from the default, which matches the
    library's TrackOptions(dense=False)."""
    from onehead.head.model import load_head_model
    from onehead.tracking.tracker import TrackOptions, track_image

    out = tmp_path / "sparse.npz"
    assert main(["track", str(inputs["astronaut"]), "--out", str(out), "--no-dense", "--quiet"]) == 0
    sparse = load_tracking(out)
    library = track_image(astronaut(), load_head_model(), TrackOptions(progress=False, dense=False))
    np.testing.assert_allclose(sparse.landmarks68, library.landmarks68, atol=1e-3)
    assert np.abs(sparse.expression - astronaut_tracking.expression).max() > 1e-3  # the dense fit differs


def test_demo_writes_its_files(capsys, tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    npz, png = out / "astronaut_tracking.npz", out / "astronaut_tracking.png"
    assert npz.is_file() and png.is_file()
    assert str(png) in stdout
    tracking = load_tracking(npz)
    assert tracking.valid.all() and tracking.fit_error[0] < 0.06
    with Image.open(png) as picture:
        assert picture.size == (512, 512)
    from onehead.data.video import read_video

    animation, _ = read_video(out / "animation.mp4")
    side_by_side, _ = read_video(out / "side_by_side.mp4")
    assert len(animation) == len(side_by_side) >= 100  # the carphone clip has 120 frames
    assert animation.shape[1:] == (256, 256, 3)
    assert animation.std() > 10 and np.abs(np.diff(animation.astype(int), axis=0)).mean() > 0.5  # moving
    assert side_by_side.shape[2] == 4 * 256  # reference | driving | mesh warp | output
    with Image.open(out / "side_by_side.png") as picture:  # four frames of it, one under the other
        assert picture.size[0] == 4 * 256 and picture.size[1] == 4 * side_by_side.shape[1]


def test_synth_and_render_debug_write_their_files(tmp_path, capsys):
    from onehead.data.sequence import open_sequence, read_pairs

    out = tmp_path / "synth"
    assert main(["synth", str(out), "--identities", "2", "--sequences", "1", "--frames", "2", "--views", "2",
                 "--size", "48", "--cross-pairs", "--quiet"]) == 0
    assert "wrote 4 sequences" in capsys.readouterr().out
    assert len(read_pairs(out)) == 2
    assert open_sequence(out / "id000_s00").views["cam01"].frame(1).shape == (48, 48, 3)

    sheet = tmp_path / "sheet.png"
    assert main(["render-debug", "--out", str(sheet), "--size", "64"]) == 0
    picture = np.asarray(Image.open(sheet))
    assert picture.shape[1] == 8 * 64 and picture.shape[0] > 3 * 64  # 8 buffers x 3 views, plus the UV row
    assert picture[..., 0].std() > 10  # not a blank image


def test_synth_bad_options_exit_2(capsys, tmp_path):
    for args, words in ((["--frames", "0"], "at least 1"), (["--identities", "1", "--cross-pairs"], "2 identities")):
        code, lines = _run_error(capsys, ["synth", str(tmp_path / "out"), *args, "--quiet"])
        assert code == 2 and len(lines) == 1 and words in lines[0], lines


def test_version_names_the_package_version(capsys):
    import onehead

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"onehead {onehead.__version__}"


def test_import_onehead_is_lazy_and_exports_the_public_api():
    code = ("import sys, onehead; assert 'torch' not in sys.modules, 'import onehead loaded torch'; "
            "from onehead import Animator, PersonAvatar, track, load_tracking, load_head_model, CheckpointError; "
            "print(Animator.__module__, PersonAvatar.__module__, track.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["onehead.pipelines.one_shot", "onehead.pipelines.person_avatar", "onehead.tracking.tracker"]


def test_track_takes_the_sample_clip_by_name(tmp_path):
    out = tmp_path / "carphone.npz"
    assert main(["track", "carphone", "--out", str(out), "--max-frames", "4", "--quiet"]) == 0
    tracking = load_tracking(out)
    assert tracking.num_frames == 4 and tracking.valid.all()
    assert tracking.image_size.tolist() == [144, 176]
