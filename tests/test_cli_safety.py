"""Nothing a user owns is ever lost, and every mistake gets one clear line.

Each refused command must exit with code 2, print exactly one line on stderr (no traceback) and
leave every file under the test folder byte for byte as it was, with nothing added. Most cases are
refused before any model, head or video is loaded, so they take milliseconds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onehead.cli import _lost_frames, main
from onehead.data.video import write_video


@pytest.fixture()
def files(tmp_path):
    """A user's folder: a photo, a reference portrait, a driving clip, an earlier grid and report."""
    rng = np.random.default_rng(0)
    paths = {
        "photo": tmp_path / "photo.png",
        "ref": tmp_path / "ref.jpg",
        "talking": tmp_path / "talking.mp4",
        "grid_gif": tmp_path / "grid.gif",
        "report": tmp_path / "report.json",
        "frames": tmp_path / "frames",
        "notes": tmp_path / "notes.txt",
    }
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), np.uint8)).save(paths["photo"])
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), np.uint8)).save(paths["ref"])
    write_video(paths["talking"], rng.integers(0, 255, (6, 32, 32, 3), np.uint8), fps=10)
    paths["grid_gif"].write_bytes(b"GIF89a an earlier grid the user keeps")
    paths["report"].write_text(json.dumps({"earlier": "report"}))
    paths["frames"].mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(paths["frames"] / f"{i:03d}.png")
    paths["notes"].write_text("a file, not a folder\n")
    return {k: str(v) for k, v in paths.items()}


def _snapshot(root: Path) -> dict:
    """Every path under root (hidden temporary files included) with its bytes."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _refused(capsys, root: Path, args: list[str], *words: str) -> str:
    before = _snapshot(root)
    code = main(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, (args, err)
    assert len(lines) == 1, lines
    assert "Traceback" not in err
    assert lines[0].startswith(f"onehead {args[0]}: error:"), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert _snapshot(root) == before, "a refused command changed, removed or added a file"
    return lines[0]


def _animate(files, **options):
    args = {"--reference": files["ref"], "--driving": files["talking"], "--out": "out.mp4", **options}
    return ["animate", *[x for k, v in args.items() for x in (k, v)], "--quiet"]


# ----------------------------------------------------------------------------- the cases
def test_animate_onto_an_existing_photo_is_refused_by_its_extension(capsys, tmp_path, files):
    _refused(capsys, tmp_path, _animate(files, **{"--out": files["photo"]}), "--out", ".mp4", "'.png'")


def test_side_by_side_onto_the_reference_is_refused(capsys, tmp_path, files):
    line = _refused(capsys, tmp_path, _animate(files, **{"--out": str(tmp_path / "o.mp4"),
                                                         "--side-by-side": files["ref"]}), "--side-by-side")
    assert "is the input --reference" in line


def test_side_by_side_onto_the_reference_with_a_video_name_is_refused(capsys, tmp_path, files):
    link = tmp_path / "ref_link.mp4"  # a video name that points at the reference: still the reference
    link.symlink_to(files["ref"])
    _refused(capsys, tmp_path, _animate(files, **{"--out": str(tmp_path / "o.mp4"), "--side-by-side": str(link)}),
             "is the input --reference")


def test_eval_video_onto_an_existing_gif_is_refused(capsys, tmp_path, files):
    _refused(capsys, tmp_path, ["eval", "--data", files["frames"], "--task", "self",
                                "--out", str(tmp_path / "new.json"), "--video", files["grid_gif"]],
             "--video", ".mp4", "'.gif'")


def test_animate_driving_onto_itself_is_refused(capsys, tmp_path, files):
    _refused(capsys, tmp_path, _animate(files, **{"--out": files["talking"]}), "is the input --driving")


@pytest.mark.parametrize("how", ["symlink", "hardlink", "relative"])
def test_an_input_reached_another_way_is_still_an_input(capsys, tmp_path, files, how, monkeypatch):
    other = tmp_path / "other.mp4"
    if how == "symlink":
        other.symlink_to(files["talking"])
    elif how == "hardlink":
        os.link(files["talking"], other)
    else:
        monkeypatch.chdir(files["frames"])
        other = Path("..") / "talking.mp4"
    _refused(capsys, tmp_path, _animate(files, **{"--out": str(other)}), "is the input --driving")


def test_track_video_onto_itself_is_refused(capsys, tmp_path, files):
    _refused(capsys, tmp_path, ["track", files["talking"], "--out", files["talking"]], "is the input")


def test_track_vis_onto_the_photo_is_refused(capsys, tmp_path, files):
    _refused(capsys, tmp_path, ["track", files["photo"], "--out", str(tmp_path / "t.npz"), "--vis", files["photo"]],
             "--vis", "is the input")


def test_track_out_json_is_refused(capsys, tmp_path, files):
    _refused(capsys, tmp_path, ["track", files["photo"], "--out", str(tmp_path / "t.json")], ".npz", "'.json'")


def test_a_picture_inside_the_input_frames_folder_is_refused(capsys, tmp_path, files):
    # it would be read as one more frame next time
    _refused(capsys, tmp_path, ["track", files["frames"], "--out", str(tmp_path / "t.npz"),
                                "--vis", str(Path(files["frames"]) / "vis.png")], "inside the input folder")


def test_two_outputs_on_one_path_are_refused(capsys, tmp_path, files):
    out = str(tmp_path / "o.mp4")
    _refused(capsys, tmp_path, _animate(files, **{"--out": out, "--side-by-side": out}), "also --out")


@pytest.mark.parametrize("args, option, words", [
    (["track", "{photo}", "--out", "t.npz", "--max-frames", "0"], "--max-frames", "at least 1"),
    (["track", "{photo}", "--out", "t.npz", "--max-frames", "-3"], "--max-frames", "at least 1"),
    (["track", "{photo}", "--out", "t.npz", "--focal", "-5"], "--focal", "above 0"),
    (["track", "{photo}", "--out", "t.npz", "--focal", "inf"], "--focal", "above 0"),
    (["animate", "--reference", "{ref}", "--driving", "{talking}", "--out", "o.mp4", "--tile", "0"], "--tile", "16"),
    (["animate", "--reference", "{ref}", "--driving", "{talking}", "--out", "o.mp4", "--tile", "-8"], "--tile", "16"),
    (["animate", "--reference", "{ref}", "--driving", "{talking}", "--out", "o.mp4", "--steps", "0"], "--steps",
     "from 1 to 1000"),
    (["animate", "--reference", "{ref}", "--driving", "{talking}", "--out", "o.mp4", "--steps", "-1"], "--steps",
     "from 1 to 1000"),
    (["animate", "--reference", "{ref}", "--driving", "{talking}", "--out", "o.mp4", "--steps", "two"], "--steps",
     "whole number"),
    (["animate", "--reference", "{ref}", "--driving", "{talking}", "--out", "o.mp4", "--seed", "-1"], "--seed",
     "from 0 to"),
    (["animate", "--reference", "{ref}", "--driving", "{talking}", "--out", "o.mp4", "--max-frames", "0"],
     "--max-frames", "at least 1"),
    (["eval", "--data", "{frames}", "--task", "self", "--out", "r.json", "--size", "0"], "--size", "16 to"),
    (["eval", "--data", "{frames}", "--task", "self", "--out", "r.json", "--max-items", "0"], "--max-items",
     "at least 1"),
    (["eval", "--data", "{frames}", "--task", "both", "--out", "r.json"], "--task", "self"),
    (["synth", "ds", "--frames", "0"], "--frames", "at least 1"),
    (["synth", "ds", "--identities", "-2"], "--identities", "at least 1"),
    (["synth", "ds", "--views", "0"], "--views", "at least 1"),
    (["synth", "ds", "--fps", "0"], "--fps", "above 0"),
    (["synth", "ds", "--fps", "nan"], "--fps", "above 0"),
    (["synth", "ds", "--size", "8"], "--size", "16 to"),
    (["render-debug", "--size", "0"], "--size", "16 to"),
    (["bench", "track", "--frames", "0"], "--frames", "at least 1"),
    (["bench", "track", "--size", "-1"], "--size", "16 to"),
])
def test_bad_options_are_one_line_naming_the_option_and_range(capsys, tmp_path, files, monkeypatch, args, option,
                                                              words):
    monkeypatch.chdir(tmp_path)
    line = _refused(capsys, tmp_path, [a.format(**files) for a in args], option, words)
    assert "usage:" not in line


@pytest.mark.parametrize("command", ["track", "animate", "eval", "render-debug", "convert-lpips"])
def test_a_folder_as_out_is_refused(capsys, tmp_path, files, command):
    folder = tmp_path / ("o.mp4" if command == "animate" else "o.npz" if command == "track" else
                         "o.json" if command == "eval" else "o.png" if command == "render-debug" else "o.safetensors")
    folder.mkdir()
    args = {"track": ["track", files["photo"]],
            "animate": _animate(files)[:-3],  # without --out out.mp4 --quiet
            "eval": ["eval", "--data", files["frames"], "--task", "self"],
            "render-debug": ["render-debug"],
            "convert-lpips": ["convert-lpips", "--alexnet", files["notes"], "--linear", files["notes"]]}[command]
    _refused(capsys, tmp_path, [*args, "--out", str(folder)], "is a folder")


@pytest.mark.parametrize("where", ["under a file", "unwritable"])
def test_an_output_nobody_can_write_is_refused(capsys, tmp_path, files, where):
    # /proc takes no new files, not even from root (a chmod'ed folder would not stop root)
    out = Path(files["notes"]) / "o.mp4" if where == "under a file" else Path("/proc/onehead-test/o.mp4")
    line = _refused(capsys, tmp_path, _animate(files, **{"--out": str(out)}), "--out")
    assert ("is a file, not a folder" if where == "under a file" else "cannot write in /proc") in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the /proc case covers it")
def test_a_read_only_folder_is_refused(capsys, tmp_path, files):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _refused(capsys, tmp_path, _animate(files, **{"--out": str(locked / "o.mp4")}), "cannot write in")
    finally:
        locked.chmod(0o700)


def test_demo_refuses_a_file_or_a_folder_where_its_outputs_go(capsys, tmp_path, files):
    _refused(capsys, tmp_path, ["demo", "--out", files["notes"]], "is a file")
    demo = tmp_path / "demo"
    (demo / "animation.mp4").mkdir(parents=True)
    _refused(capsys, tmp_path, ["demo", "--out", str(demo)], "animation.mp4", "is a folder")


def test_fetch_refuses_a_cache_under_a_file(capsys, tmp_path, files):
    _refused(capsys, tmp_path, ["fetch", "csim", "--cache-dir", files["notes"]], "is a file, not a folder")


def test_convert_lpips_refuses_writing_onto_its_input(capsys, tmp_path, files):
    weights = tmp_path / "alex.safetensors"
    weights.write_bytes(b"user's weights")
    _refused(capsys, tmp_path, ["convert-lpips", "--alexnet", str(weights), "--linear", files["notes"],
                                "--out", str(weights)], "is the input --alexnet")


# ----------------------------------------------------------------------------- synth
def _synth(out, *extra):
    return ["synth", str(out), "--identities", "1", "--sequences", "1", "--frames", "2", "--size", "16",
            "--quiet", *extra]


def test_synth_into_a_non_empty_folder_needs_overwrite_and_then_replaces_it_whole(capsys, tmp_path):
    from onehead.data.sequence import open_sequence

    data = tmp_path / "data"
    assert main(["synth", str(data), "--identities", "2", "--sequences", "1", "--frames", "3", "--size", "16",
                 "--quiet"]) == 0
    assert sorted(p.name for p in data.iterdir()) == ["id000_s00", "id001_s00"]
    capsys.readouterr()
    _refused(capsys, tmp_path, _synth(data), "not empty", "--overwrite")

    assert main(_synth(data, "--overwrite")) == 0
    assert "wrote 1 sequences" in capsys.readouterr().out
    # the new dataset only: no stale sequence, no stale frames, nothing left beside it
    assert sorted(p.name for p in data.iterdir()) == ["id000_s00"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    frames = sorted((data / "id000_s00" / "cam00" / "frames").iterdir())
    assert len(frames) == 2 and open_sequence(data / "id000_s00").meta.num_frames == 2


def test_synth_overwrite_refuses_a_folder_that_is_not_a_dataset(capsys, tmp_path):
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    (home / "photos" / "me.jpg").write_bytes(b"precious")
    (home / "todo.txt").write_text("keep me")
    _refused(capsys, tmp_path, _synth(home, "--overwrite"), "did not write", "photos")


def test_synth_refuses_a_folder_holding_the_flame_files(capsys, tmp_path):
    flame = tmp_path / "data" / "flame"
    flame.mkdir(parents=True)
    (flame / "generic_model.pkl").write_bytes(b"licensed")
    _refused(capsys, tmp_path, _synth(tmp_path / "data", "--overwrite", "--flame-dir", str(flame)),
             "holds the input --flame-dir")


def test_synth_cross_pairs_with_one_identity_is_refused_before_work(capsys, tmp_path):
    _refused(capsys, tmp_path, _synth(tmp_path / "d", "--cross-pairs"), "2 identities")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_synth_overwrite_leaves_the_old_dataset(tmp_path, sig):
    """Interrupt `onehead synth --overwrite` while it writes the new dataset: the old one is intact
    and no temporary folder is left."""
    data = tmp_path / "data"
    assert main(_synth(data)) == 0
    before = _snapshot(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "onehead.cli", "synth", str(data), "--overwrite", "--quiet",
                             "--identities", "4", "--sequences", "4", "--frames", "24", "--size", "64"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a run started in the background by a shell inherits SIGINT ignored; a user's
                            # Ctrl-C reaches a foreground run, so the child gets the default disposition
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".data.") for p in tmp_path.iterdir()):  # the new dataset has begun
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("onehead synth: interrupted")
    assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- one line for what a user can cause
def test_an_image_over_the_pixel_limit_is_one_line_naming_it(capsys, tmp_path, monkeypatch):
    picture = tmp_path / "huge.png"
    Image.new("RGB", (100, 100)).save(picture)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses over twice the limit: 2000 pixels
    line = _refused(capsys, tmp_path, ["track", str(picture), "--out", str(tmp_path / "t.npz"), "--quiet"],
                    str(picture), "10,000 pixels", "2,000", "downscale")
    assert "DecompressionBomb" not in line


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    from onehead.pipelines.families import default_model_dir

    folder = tmp_path_factory.mktemp("models") / "embedded"
    shutil.copytree(default_model_dir(), folder)
    return folder


@pytest.mark.parametrize("damage, words", [
    ("json list", "expected a JSON object"),
    ("not json", "not valid JSON"),
    ("background sky", "background"),
    ("steps zero", "steps must be at least 1"),
    ("truncated weights", "animator.safetensors: corrupt or truncated"),
    ("no reference_unet", "reference_unet"),
])
def test_a_broken_model_folder_is_one_line(capsys, tmp_path, files, model_folder, damage, words):
    broken = tmp_path / "model"
    shutil.copytree(model_folder, broken)
    config = broken / "animator.json"
    data = json.loads(config.read_text())
    if damage == "json list":
        config.write_text(json.dumps([data]))
    elif damage == "not json":
        config.write_text("{\"kind\": ")
    elif damage == "background sky":  # the embedded folder keeps {"model": ..., "inference": ...}
        config.write_text(json.dumps({**data, "inference": {**data["inference"], "background": "sky"}}))
    elif damage == "steps zero":
        config.write_text(json.dumps({**data, "inference": {**data["inference"], "steps": 0}}))
    elif damage == "truncated weights":
        weights = broken / "animator.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        shutil.rmtree(broken / "reference_unet")
    _refused(capsys, tmp_path, _animate(files, **{"--out": str(tmp_path / "o.mp4"), "--model": str(broken)}), words)


# ----------------------------------------------------------------------------- lost frames
def test_lost_frames_line_names_the_count_and_the_ranges():
    valid = np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0], bool)
    line = _lost_frames(valid, "driving clip.mp4")
    assert line.startswith("driving clip.mp4: 6 of 11 frames had no face")
    assert "interpolated from the frames around them: 3-4, 6" in line
    assert "held at the nearest frame with a face: 0, 9-10" in line
    assert _lost_frames(np.ones(5, bool), "x") == "x: a face in all 5 frame(s)"


def _small_model(head, folder):
    import torch

    from onehead.models.gaussian_diffusion import GaussianDiffusionConfig, InferenceSettings
    from onehead.pipelines.gaussian_diffusion import GaussianDiffusionAnimator

    unet = dict(layers_per_block=1, block_out_channels=(16, 32, 32),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    config = GaussianDiffusionConfig.from_preset("tiny", resolution=32, uv_resolution=32, unet=unet,
                                                 guider_channels=(8, 16))
    torch.manual_seed(0)
    GaussianDiffusionAnimator.from_config(config, InferenceSettings(steps=1, window=4, window_overlap=1),
                                          head).save_pretrained(folder)
    return folder


def test_animate_reports_lost_driving_frames_and_keeps_earlier_outputs_on_refusal(capsys, head, tmp_path):
    """A driving tracking with frames 1-2 lost: animate says so; a second run refused for a bad
    --side-by-side name leaves the first run's video byte for byte."""
    from onehead.data.synthetic import SynthOptions, synthesize
    from onehead.data.tracking_file import load_tracking
    from onehead.data.video import read_video

    data = tmp_path / "data"
    synthesize(head, data, SynthOptions(identities=1, sequences=1, frames=5, size=32, texture_size=64,
                                        progress=False))
    view = data / "id000_s00" / "cam00"
    tracking = load_tracking(view / "tracking.npz")
    tracking.valid[1:3] = False
    driving = tracking.save(tmp_path / "driving.npz")
    model = _small_model(head, tmp_path / "model")
    out = tmp_path / "out.mp4"
    args = ["animate", "--model", str(model), "--reference", str(view / "frames" / "000000.png"),
            "--reference-tracking", str(view / "tracking.npz"), "--driving-camera", "--driving", str(driving),
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "2 of 5 frames had no face" in stdout and "interpolated from the frames around them: 1-2" in stdout
    assert read_video(out)[0].shape == (5, 32, 32, 3)
    _refused(capsys, tmp_path, args + ["--side-by-side", str(tmp_path / "sbs.gif")], "--side-by-side", ".mp4")


def test_track_reports_lost_frames(capsys, tmp_path):
    from onehead.data.samples import astronaut

    face = np.asarray(Image.fromarray(astronaut()).resize((192, 192)))
    blank = np.full_like(face, 90)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate([face, blank, face, blank]):
        Image.fromarray(frame).save(frames / f"{i:03d}.png")
    assert main(["track", str(frames), "--out", str(tmp_path / "t.npz"), "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert "2 of 4 frames had no face" in stdout
    assert "interpolated from the frames around them: 1" in stdout and "held at the nearest frame with a face: 3" in stdout


# ----------------------------------------------------------------------------- help
def test_help_shows_defaults_and_what_happens_to_existing_outputs(capsys):
    import textwrap

    from onehead.pipelines.families import DEFAULT_MODEL_DIR

    steps = json.loads((DEFAULT_MODEL_DIR / "animator.json").read_text())["inference"]["steps"]
    for command, expected in [
        ("animate", [f"{steps} for the embedded model", "(default: 256)", "replaced atomically", "never overwritten",
                     ".mp4, .mov"]),
        ("synth", ["(default: 4)", "(default: 2)", "(default: 24)", "(default: 0)", "--overwrite", "swapped in"]),
        ("eval", [f"{steps} for the embedded model", "identity similarity", "replaced atomically"]),
        ("track", [".npz", "(default: basic)", "replaced atomically"]),
    ]:
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        for words in expected:
            assert words in text, (command, words, textwrap.shorten(text, 300))


def test_the_parser_reads_the_embedded_models_steps_from_its_folder():
    from onehead.cli import EMBEDDED_MODEL_DIR
    from onehead.pipelines.families import DEFAULT_MODEL_DIR

    assert EMBEDDED_MODEL_DIR == DEFAULT_MODEL_DIR


def test_refusals_need_no_torch():
    """The output and option checks come before any heavy import: a refusal is instant."""
    code = ("import sys; from onehead.cli import main; "
            "code = main(['track', 'x.jpg', '--out', 'x.json']); "
            "assert code == 2 and 'torch' not in sys.modules, (code, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
