"""The `onehead` command. Every OneheadError becomes one line on stderr and exit code 2.

Every command checks its output paths before any work (onehead.outputs): an output that is one of
its inputs, a folder, a path under a file, a place it cannot write or a name with an extension its
writer does not support is refused with one line and exit code 2. Options are checked when they
are parsed, with the allowed range in the message. Existing outputs are replaced atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

from onehead import __version__
from onehead.errors import ConfigError, OneheadError
from onehead.outputs import EXISTING_OUTPUT, Output, allowed, check_outputs

MAX_SEED = 2**32 - 1
MAX_SIZE = 4096
EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent / "checkpoints" / "animator-small"


# ----------------------------------------------------------------------------- parsing
class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: what was wrong and where the help is."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Appends '(default: X)' to an option's help unless the help already says its default or
    there is none to show (None, False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


def _whole(low: int, high: int | None = None):
    """argparse type: a whole number in [low, high]."""
    span = f"at least {low}" if high is None else f"from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number {span}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be a whole number {span}, got {value}")
        return value

    parse.__name__ = f"whole number {span}"
    return parse


def _positive(high: float | None = None):
    """argparse type: a finite number above 0 (and at most high)."""
    span = "above 0" if high is None else f"above 0 and at most {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {span}, got {text!r}") from None
        if not math.isfinite(value) or value <= 0 or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be a number {span}, got {text}")
        return value

    parse.__name__ = f"number {span}"
    return parse


POSITIVE = _whole(1)
SEED = _whole(0, MAX_SEED)
SIZE = _whole(16, MAX_SIZE)
STEPS = _whole(1, 1000)


def _embedded_steps() -> str:
    """The embedded model's denoising steps, for the help text ('?' if its config cannot be read)."""
    try:  # onehead.pipelines.families.DEFAULT_MODEL_DIR, without importing torch for the parser
        config = json.loads((EMBEDDED_MODEL_DIR / "animator.json").read_text())
        return str(config.get("default_steps", config.get("inference", {}).get("steps", "?")))
    except (OSError, ValueError, AttributeError):
        return "?"


# ----------------------------------------------------------------------------- shared pieces
def _lost_frames(valid, what: str) -> str:
    """One line: how many frames had no face and which were filled in, e.g. 'driving video: 41 of
    120 frames had no face; interpolated from the frames around them: 10-20, 50-79'."""
    import numpy as np

    valid = np.asarray(valid, bool)
    total, lost = len(valid), int((~valid).sum())
    if lost == 0:
        return f"{what}: a face in all {total} frame(s)"
    runs, start = [], None
    for t, ok in enumerate(list(valid) + [True]):
        if not ok and start is None:
            start = t
        elif ok and start is not None:
            runs.append((start, t - 1))
            start = None
    inner = [r for r in runs if r[0] > 0 and r[1] < total - 1]
    edges = [r for r in runs if r not in inner]
    text = lambda rs: ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in rs[:8]) + (
        f" and {len(rs) - 8} more" if len(rs) > 8 else "")
    parts = []
    if inner:
        parts.append(f"interpolated from the frames around them: {text(inner)}")
    if edges:
        parts.append(f"held at the nearest frame with a face: {text(edges)}")
    return f"{what}: {lost} of {total} frames had no face (frames counted from 0); " + "; ".join(parts)


def _track_options(args):
    from onehead.tracking.tracker import TrackOptions
    return TrackOptions(focal=args.focal, optimize_focal=args.optimize_focal, progress=not args.quiet,
                        max_frames=args.max_frames, dense=not args.no_dense)


def _write_vis(path: Path, source, tracking, head) -> None:
    from onehead.data.images import is_image_path, load_image, save_image
    from onehead.data.video import read_frames, write_video
    from onehead.outputs import VIDEO_OUT
    from onehead.tracking.visualize import fit_picture, overlay_tracking

    source = Path(source)
    if source.is_file() and is_image_path(source):
        frames = load_image(source)[None]
    else:
        frames, _ = read_frames(source, max_frames=tracking.num_frames)
    drawn = overlay_tracking(frames, tracking, head)
    if path.suffix.lower() in VIDEO_OUT:
        write_video(path, drawn, fps=tracking.fps)
    else:  # a picture (checked before the work): a video's closed-mouth, middle and open-mouth frames
        save_image(path, fit_picture(drawn, tracking))


def _sample_clip(value: str) -> str:
    """'carphone' (when no file of that name is here) is the bundled real clip; anything else as given."""
    if value == "carphone" and not Path(value).exists():
        from onehead.data.samples import carphone_path

        return str(carphone_path())
    return value


def cmd_track(args) -> int:
    args.input = _sample_clip(args.input)
    check_outputs([Output("--out", args.out, "tracking")]
                  + ([Output("--vis", args.vis, "picture or video")] if args.vis else []),
                  [("", args.input), ("--flame-dir", args.flame_dir)])
    from onehead.head.model import load_head_model
    from onehead.tracking.tracker import track

    head = load_head_model(args.head, args.flame_dir)
    start = time.perf_counter()
    tracking = track(args.input, head, _track_options(args))
    seconds = time.perf_counter() - start
    tracking.save(args.out)
    valid = int(tracking.valid.sum())
    print(f"tracked {tracking.num_frames} frame(s) ({valid} with a face) in {seconds:.2f} s; "
          f"mean fit error {float(tracking.fit_error[tracking.valid].mean()):.3f} of the eye distance -> {args.out}")
    if valid < tracking.num_frames:
        print(_lost_frames(tracking.valid, str(args.input)))
    if args.vis:
        _write_vis(Path(args.vis), args.input, tracking, head)
        print(f"visualization -> {args.vis}")
    return 0


def _write_animation(result, head, video_path, side_by_side_path=None, picture_path=None, tile: int = 256):
    """Write an AnimationResult as a video, optionally the side-by-side video (reference | driving
    | mesh warp | output) and a picture of four of its frames; returns the output's uint8 frames
    (T, H, W, 3)."""
    import numpy as np

    from onehead.data.images import save_image
    from onehead.data.video import write_video
    from onehead.pixels import frames_to_uint8
    from onehead.render.visualize import side_by_side

    frames = frames_to_uint8(result.frames)
    fps = float(result.tracking.fps)
    write_video(video_path, frames, fps=fps)
    if side_by_side_path or picture_path:
        columns = [("reference", result.reference)]
        if result.driving_frames is not None:
            columns.append(("driving", result.driving_frames))
        columns += [("mesh warp (baseline)", result.mesh_warp(head)), ("output", result.frames)]
        sheets = side_by_side(columns, tile=tile)
        if side_by_side_path:
            write_video(side_by_side_path, sheets, fps=fps)
        if picture_path:
            rows = np.linspace(0, len(sheets) - 1, min(4, len(sheets))).round().astype(int)
            save_image(picture_path, np.concatenate(sheets[rows], axis=0))
    return frames


DEMO_FILES = {"astronaut_tracking.npz": "tracking", "astronaut_tracking.png": "picture",
              "animation.mp4": "video", "side_by_side.mp4": "video", "side_by_side.png": "picture"}


def cmd_demo(args) -> int:
    """The README's main job: track a real portrait, then reenact it with a real talking-head clip
    (a synthetic driving sequence when the clip cannot be had) using the embedded default Animator."""
    out = Path(args.out)
    check_outputs([Output("--out", out, "folder"), Output("--out", out / "driving", "dataset")]
                  + [Output("--out", out / name, kind) for name, kind in DEMO_FILES.items()])
    _check_synth_folder(out / "driving", overwrite=True)  # replaced only when it is a dataset the demo made
    from onehead.data.images import save_image
    from onehead.data.samples import astronaut, carphone_path
    from onehead.errors import MediaReadError
    from onehead.files import atomic_path
    from onehead.head.model import load_head_model
    from onehead.pipelines import Animator
    from onehead.tracking.dense import dense_embedding
    from onehead.tracking.tracker import TrackOptions, track_image
    from onehead.tracking.visualize import overlay_tracking

    out.mkdir(parents=True, exist_ok=True)
    head = load_head_model("basic")
    image = astronaut()
    start = time.perf_counter()
    dense_embedding(head, progress=not args.quiet)  # where mediapipe's points lie on the head: built on first use
    if (seconds := time.perf_counter() - start) > 1:
        print(f"demo: built the head model's dense landmark embedding in {seconds:.0f} s (once; cached)")
    start = time.perf_counter()
    tracking = track_image(image, head, TrackOptions(progress=False), name="astronaut")
    seconds = time.perf_counter() - start
    tracking.save(out / "astronaut_tracking.npz")
    save_image(out / "astronaut_tracking.png", overlay_tracking(image[None], tracking, head)[0])
    print(f"demo: tracked the astronaut portrait in {seconds:.2f} s (fit error "
          f"{float(tracking.fit_error[0]):.3f} of the eye distance)")
    print(f"  {out / 'astronaut_tracking.png'}  fitted mesh (blue), fitted landmarks (red), mediapipe (green)")

    animator = Animator.from_pretrained(head=head)
    try:
        driving, what = carphone_path(), "the real carphone clip"
    except MediaReadError as exc:
        from onehead.data.synthetic import SynthOptions, synthesize

        with atomic_path(out / "driving") as tmp:  # a whole new folder: never mixed with an old one
            synthesize(head, tmp, SynthOptions(identities=1, sequences=1, frames=48, size=256, progress=False))
        driving, what = out / "driving" / "id000_s00" / "cam00" / "frames", f"a synthetic head ({exc})"
    start = time.perf_counter()
    result = animator.animate(image, driving, progress=not args.quiet)
    seconds = time.perf_counter() - start
    print(_lost_frames(result.tracking.valid, f"driving ({what})"))
    frames = _write_animation(result, head, out / "animation.mp4", out / "side_by_side.mp4", out / "side_by_side.png")
    print(f"demo: animated the astronaut with {what}: {len(frames)} frames in {seconds:.1f} s "
          f"(tracking, control maps, mesh warp, {animator.describe().get('steps', '?')} denoising steps)")
    print(f"  {out / 'animation.mp4'}  the animation ({frames.shape[2]}x{frames.shape[1]}, the embedded default model)")
    print(f"  {out / 'side_by_side.mp4'}  reference | driving | mesh warp (the baseline) | output")
    print(f"  {out / 'side_by_side.png'}  four frames of it")
    return 0


def _check_synth_folder(out: Path, overwrite: bool) -> None:
    """A non-empty dataset folder is replaced only with --overwrite, and only when everything in
    it is what `onehead synth` writes (sequence folders with a meta.json, pairs.json)."""
    from onehead.data.sequence import META_FILE, PAIRS_FILE

    if not out.is_dir():
        return
    entries = sorted(out.iterdir())
    if not entries:
        return
    if not overwrite:
        raise ConfigError(f"{out} is not empty ({len(entries)} entries); pass --overwrite to replace it "
                          f"with the new dataset, or choose another folder")
    foreign = [e for e in entries if not ((e.is_dir() and not e.is_symlink() and (e / META_FILE).is_file())
                                          or (e.name == PAIRS_FILE and e.is_file()))]
    if foreign:
        raise ConfigError(f"{out} holds {foreign[0].name}, which `onehead synth` did not write; --overwrite "
                          f"replaces only onehead datasets, so move it away or choose another folder")


def cmd_synth(args) -> int:
    out = Path(os.path.expanduser(args.out))
    out = out.resolve() if out.is_symlink() else out  # replace the dataset the link points to, keep the link
    check_outputs([Output("dataset folder", out, "dataset")], [("--flame-dir", args.flame_dir)])
    if args.cross_pairs and args.identities < 2:
        raise ConfigError("--cross-pairs needs at least 2 identities (--identities 2 or more)")
    _check_synth_folder(out, args.overwrite)
    from onehead.data.synthetic import SynthOptions, synthesize
    from onehead.files import atomic_path
    from onehead.head.model import load_head_model

    head = load_head_model(args.head, args.flame_dir)
    options = SynthOptions(identities=args.identities, sequences=args.sequences, frames=args.frames,
                           views=args.views, size=args.size, seed=args.seed, fps=args.fps,
                           backgrounds=not args.no_backgrounds, cross_pairs=args.cross_pairs,
                           studio=args.studio, progress=not args.quiet)
    with atomic_path(out) as tmp:  # written beside `out`, swapped in when complete
        summary = synthesize(head, tmp, options)
    print(f"wrote {summary['sequences']} sequences ({summary['frames_rendered']} frames, "
          f"{summary['pairs']} cross pairs) to {args.out}; rendering {summary['render_fps']:.1f} frames/s")
    return 0


def cmd_render_debug(args) -> int:
    check_outputs([Output("--out", args.out, "picture")], [("--flame-dir", args.flame_dir)])
    from onehead.head.model import load_head_model
    from onehead.pipelines.render_debug import render_debug_sheet

    head = load_head_model(args.head, args.flame_dir)
    path = render_debug_sheet(head, args.out, size=args.size, seed=args.seed, splat_backend=args.splat_backend)
    print(f"contact sheet -> {path}")
    return 0


def _model_folder(value: str | None) -> str | None:
    """A --model value: a folder, or `triplane` for the embedded tri-plane model (when no such path exists)."""
    if value == "triplane" and not Path(value).exists():
        from onehead.errors import CheckpointError
        from onehead.pipelines.triplane import default_triplane_dir

        folder = default_triplane_dir()
        if folder is None:
            raise CheckpointError("this install has no embedded tri-plane model; pass a model folder")
        return str(folder)
    return value


def cmd_animate(args) -> int:
    args.model = _model_folder(args.model)
    args.driving = _sample_clip(args.driving)
    check_outputs([Output("--out", args.out, "video")]
                  + ([Output("--side-by-side", args.side_by_side, "video")] if args.side_by_side else []),
                  [("--reference", args.reference), ("--driving", args.driving),
                   ("--reference-tracking", args.reference_tracking), ("--model", args.model)])
    from onehead.pipelines import Animator

    animator = Animator.from_pretrained(args.model)
    settings = {k: v for k, v in (("steps", args.steps), ("seed", args.seed), ("background", args.background))
                if v is not None}
    start = time.perf_counter()
    result = animator.animate(args.reference, args.driving, max_frames=args.max_frames,
                              reference_tracking=args.reference_tracking,
                              camera="driving" if args.driving_camera else None, progress=not args.quiet, **settings)
    seconds = time.perf_counter() - start
    print(_lost_frames(result.tracking.valid, f"driving {args.driving}"))
    frames = _write_animation(result, animator.head, args.out, args.side_by_side, tile=args.tile)
    print(f"animated {len(frames)} frames at {frames.shape[1]}x{frames.shape[2]} in {seconds:.1f} s -> {args.out}")
    if args.side_by_side:
        print(f"side by side (reference | driving | mesh warp | output) -> {args.side_by_side}")
    return 0


def cmd_avatar_train(args) -> int:
    """`onehead avatar train`: a raw video or a dataset folder -> OUT/model (onehead.training.person_avatar)."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder (it gets data/, run/ and model/)")
    if not Path(args.input).exists() and args.input != "carphone":
        raise ConfigError(f"{args.input}: no such video or dataset folder")
    from onehead.training.person_avatar import make_avatar

    source = _sample_clip(args.input)
    start = time.perf_counter()
    model = make_avatar(source, out, preset=args.preset, steps=args.steps, frames=args.frames, views=args.views,
                        size=args.size, max_frames=args.max_frames, overrides=args.overrides, progress=not args.quiet)
    print(f"avatar trained in {(time.perf_counter() - start) / 60:.1f} min -> {model}; its video beside the "
          f"avatar -> {out / 'preview.mp4'} (render it: onehead avatar render {out} --driving VIDEO --out avatar.mp4)")
    return 0


def cmd_avatar_render(args) -> int:
    """`onehead avatar render`: an avatar driven by a tracking or a video, at a chosen camera."""
    check_outputs([Output("--out", args.out, "video")]
                  + ([Output("--side-by-side", args.side_by_side, "video")] if args.side_by_side else []),
                  [("avatar", args.avatar), ("--driving", args.driving)])
    from onehead.data.tracking_file import load_tracking
    from onehead.data.video import write_video
    from onehead.pipelines.diffusion_avatar import interpolate_expressions, orbit_cameras
    from onehead.pipelines.person_avatar import PersonAvatar
    from onehead.pixels import frames_to_uint8

    folder = Path(args.avatar)
    if args.avatar == "embedded" and not folder.exists():
        from onehead.pipelines.diffusion_avatar import EMBEDDED_AVATAR_DIR

        folder = EMBEDDED_AVATAR_DIR
    args.driving = _sample_clip(args.driving)
    if (folder / "model").is_dir() and not (folder / "avatar.json").is_file():
        folder = folder / "model"  # the --out folder of `onehead avatar train`
    avatar = PersonAvatar.from_pretrained(folder)
    settings = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    driving_frames = None
    if str(args.driving).endswith(".npz"):
        tracking = load_tracking(args.driving)
    else:
        from onehead.data.video import read_frames
        from onehead.tracking.tracker import TrackOptions, track_frames

        driving_frames, fps = read_frames(args.driving, max_frames=args.max_frames)
        tracking = track_frames(driving_frames, fps, avatar.head, TrackOptions(progress=not args.quiet),
                                name=str(args.driving))
        print(_lost_frames(tracking.valid, f"driving {args.driving}"))
    if args.max_frames:
        tracking = tracking.select(slice(0, args.max_frames))
    if args.interpolate:
        keys = [int(k) for k in args.interpolate.split(",")]
        tracking = interpolate_expressions(tracking, keys, args.between)
        driving_frames = None
    camera = None
    if args.camera != "driving":  # the avatar's own home view, the driving head motion relative to its first frame
        tracking = avatar.transfer(tracking)
        if args.camera == "orbit":
            camera = orbit_cameras(avatar.home_camera(), tracking.num_frames, degrees=args.orbit_degrees)
        elif args.camera != "home":
            camera = _camera_file(args.camera)
    start = time.perf_counter()
    frames = avatar.render(tracking, camera, progress=not args.quiet, **settings)
    seconds = time.perf_counter() - start
    pixels = frames_to_uint8(frames)
    write_video(args.out, pixels, fps=float(tracking.fps))
    print(f"rendered {len(pixels)} frames at {pixels.shape[1]}x{pixels.shape[2]} in {seconds:.1f} s "
          f"({len(pixels) / seconds:.1f} frames/s) -> {args.out}")
    if args.side_by_side:
        from onehead.render.visualize import side_by_side

        columns = ([("driving", driving_frames[: len(pixels)])] if driving_frames is not None else []) + \
            [("avatar", frames)]
        write_video(args.side_by_side, side_by_side(columns, tile=256), fps=float(tracking.fps))
        print(f"side by side -> {args.side_by_side}")
    return 0


def _camera_file(path: str):
    """--camera FILE.npz: arrays K (3, 3) and world_to_cam (4, 4), one pair or one per frame."""
    import numpy as np

    from onehead.errors import MediaReadError

    if not str(path).endswith(".npz") or not Path(path).is_file():
        raise ConfigError(f"--camera {path}: use home, driving, orbit or an .npz file with K and world_to_cam")
    with np.load(path, allow_pickle=False) as data:
        if "K" not in data.files or "world_to_cam" not in data.files:
            raise MediaReadError(f"{path}: a camera file needs the arrays K and world_to_cam")
        return data["K"], data["world_to_cam"]


def cmd_eval(args) -> int:
    from onehead.errors import ConfigError

    if args.task == "landmarks":
        return _eval_landmarks(args)
    if args.task == "tracking":
        return _eval_tracking(args)
    args.model = None if args.model is None else [_model_folder(m) for m in args.model]
    models = [m for m in (args.model or []) if m != "none"]
    real, views = args.task == "real", args.task == "views"
    if real and args.data is not None:
        raise ConfigError("--task real takes --references and --driving, not --data")
    if views and args.data is not None and args.references:
        raise ConfigError("--task views takes --references (portraits) or --data (a dataset), not both")
    if not (real or views) and args.data is None:
        raise ConfigError(f"--task {args.task} needs --data (a dataset folder)")
    if not real and (args.driving or args.max_frames or (args.references and not views)):
        raise ConfigError("--driving and --max-frames belong to --task real; --references to --task real or views")
    if args.yaws is not None and not views:
        raise ConfigError("--yaws belongs to --task views")
    check_outputs([Output("--out", args.out, "report")]
                  + ([Output("--video", args.video, "video")] if args.video else []),
                  [("--data", args.data), ("--lpips", args.lpips), ("--face-models", args.face_models)]
                  + [("--model", m) for m in models]
                  + [("--references", r) for r in (args.references or []) if Path(r).exists()]
                  + ([("--driving", args.driving)] if args.driving and Path(args.driving).exists() else []))
    from onehead.evaluation.methods import baseline_methods, load_method
    from onehead.evaluation.run import EvalOptions, command_line, evaluate, format_table, write_report
    from onehead.head.model import load_head_model
    from onehead.pipelines.families import default_model_dir

    if args.frames is not None and args.task != "avatar":
        raise ConfigError("--frames belongs to --task avatar")
    models = args.model or [str(default_model_dir())]
    settings = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    methods = [load_method(m, **settings) for m in models if m != "none"]
    person = [m for m in methods if m.protocol == "person"]
    trained_on, matte = None, None
    if args.task == "avatar":
        if not person or len(person) != len(methods):
            raise ConfigError("--task avatar scores person-specific avatars: give their folders with --model "
                              "(onehead avatar train writes them)")
        from onehead.evaluation.methods import nearest_frame_method

        trained_on, matte = person[0].training_data, person[0].identifier.get("background", 0.0)
        if not trained_on:
            raise ConfigError(f"{person[0].identifier['path']}: the avatar does not record what it trained on")
        methods.append(nearest_frame_method(trained_on, person[0].resolution, person[0].head, matte))
    elif person and not real:
        if views:
            raise ConfigError(f"{person[0].name} is a person-specific avatar: --task views turns one-shot models; "
                              "render an avatar's novel views with `onehead avatar render --camera orbit`")
        raise ConfigError(f"{person[0].name} is a person-specific avatar: score it with --task avatar (its held-out "
                          "frames) or --task real (expression transfer: --references a frame of its own training "
                          "video, --driving another video)")
    else:
        methods += baseline_methods(methods[0].head if methods else load_head_model("basic"))
    if real:
        return _eval_real(args, methods)
    if views:
        return _eval_views(args, methods)
    options = EvalOptions(task=args.task, size=args.size, lpips_weights=args.lpips, face_models=args.face_models,
                          motion_metrics=not args.no_motion_metrics, max_items=args.max_items, video=args.video,
                          progress=not args.quiet, command=command_line(), trained_on=trained_on,
                          frames=args.frames, matte=matte)
    report = evaluate(args.data, methods, options)
    write_report(report, args.out)
    data = report["data"]
    print(f"{args.task} reenactment on {data['items']} clips ({data['frames']} frames) at {report['size']}x{report['size']}"
          f"{'' if data['ground_truth'] else ' (no ground truth)'}:")
    print(format_table(report))
    for metric, reason in report["missing"].items():
        print(f"missing {metric}: {reason}")
    print(f"report -> {args.out}" + (f"; grid video -> {args.video}" if args.video else ""))
    return 0


def _check_tracker_task(args, data: str, takes: str, video: bool = False) -> None:
    """The tasks that score the tracker, not a model: --data is `data`; the model tasks' flags are
    refused (--video too, unless the task writes one)."""
    from onehead.errors import ConfigError

    if args.data is None:
        raise ConfigError(f"--task {args.task} needs --data: {data}")
    others = [flag for flag, value in (("--model", args.model), ("--references", args.references),
                                       ("--driving", args.driving), ("--video", None if video else args.video),
                                       ("--frames", args.frames), ("--yaws", args.yaws),
                                       ("--max-frames", args.max_frames)) if value]
    if others:
        raise ConfigError(f"--task {args.task} scores the tracker; it takes {takes}, not {', '.join(others)}")
    check_outputs([Output("--out", args.out, "report")]
                  + ([Output("--video", args.video, "video")] if video and args.video else []), [("--data", args.data)])


def _eval_landmarks(args) -> int:
    """`onehead eval --task landmarks`: the tracker on labelled images (onehead.evaluation.landmarks)."""
    from onehead.evaluation.landmarks import LandmarkOptions, evaluate_landmarks
    from onehead.evaluation.run import command_line, format_table, write_report

    _check_tracker_task(args, "a folder of images, each with its .pts labels beside it", "--data and --out")
    report = evaluate_landmarks(args.data, LandmarkOptions(progress=not args.quiet, command=command_line()))
    write_report(report, args.out)
    print(f"landmarks on {report['data']['items']} labelled images of {args.data} (NME over the outer-eye-corner "
          "distance):")
    print(format_table(report, per_sequence=True))
    print(f"report -> {args.out}")
    return 0


def _eval_tracking(args) -> int:
    """`onehead eval --task tracking`: the tracker against synthetic truth (onehead.evaluation.tracking)."""
    from onehead.evaluation.run import command_line, format_table, write_report
    from onehead.evaluation.tracking import TrackingEvalOptions, evaluate_tracking

    _check_tracker_task(args, "a synthetic dataset (onehead synth), whose tracking is the truth",
                        "--data, --out, --video and --max-items", video=True)
    report = evaluate_tracking(args.data, TrackingEvalOptions(progress=not args.quiet, command=command_line(),
                                                              max_items=args.max_items, video=args.video))
    write_report(report, args.out)
    data = report["data"]
    print(f"tracking on {data['items']} views of {args.data} ({data['frames']} frames) against the exact truth:")
    print(format_table(report))
    for view in report["methods"]["onehead"]["per_view"]:
        methods = report["methods"].items()
        by_view = {**report, "methods": {name: {"mean": entry["per_view"][view],
                                                "seconds_per_frame": entry["seconds_per_frame"]}
                                         for name, entry in methods}}
        print(f"view {view}:")
        print(format_table(by_view))
    print(f"report -> {args.out}" + (f"; grid video -> {args.video}" if args.video else ""))
    return 0


def _eval_real(args, methods) -> int:
    """`onehead eval --task real`: portraits x a driving video (onehead.evaluation.real)."""
    from onehead.evaluation.real import DEFAULT_SIZE, RealOptions, evaluate_real
    from onehead.evaluation.run import command_line, format_table, write_report

    options = RealOptions(references=args.references or ["astronaut", "grace_hopper"],
                          driving=args.driving or "carphone", size=args.size or DEFAULT_SIZE,
                          max_frames=args.max_frames, face_models=args.face_models,
                          motion_metrics=not args.no_motion_metrics, video=args.video, progress=not args.quiet,
                          command=command_line())
    report = evaluate_real(methods, options)
    write_report(report, args.out)
    data = report["data"]
    names = ", ".join(r["name"] for r in data["references"])
    print(f"real reenactment: {names} x {data['driving']['source']} ({data['driving']['frames']} frames, "
          f"{data['driving']['lost_frames']} without a face) at {report['size']}x{report['size']} (no ground truth):")
    print(format_table(report))
    for name, entry in report["methods"].items():
        if entry.get("note"):
            print(f"{name}: {entry['note']}")
        failures = entry["failures"]
        lost = [f"{what} {failures[key]}" for what, key in (("dlib (identity lost)", "identity_no_face"),
                                                             ("mediapipe (left out of mouth r)", "mouth_frames_left_out"),
                                                             ("tracker (AED, APD, AKD)", "aed")) if failures.get(key)]
        if lost:
            print(f"{name}: frames without a face for " + ", ".join(lost))
    for metric, reason in report["missing"].items():
        print(f"missing {metric}: {reason}")
    print(f"report -> {args.out}" + (f"; grid video -> {args.video}" if args.video else ""))
    return 0


def _eval_views(args, methods) -> int:
    """`onehead eval --task views`: yaw sweeps of portraits or dataset references (onehead.evaluation.views)."""
    from onehead.evaluation.run import command_line, format_table, write_report
    from onehead.evaluation.views import DEFAULT_SIZE, DEFAULT_YAWS, ViewsOptions, evaluate_views

    options = ViewsOptions(references=args.references or ["astronaut", "grace_hopper"], data=args.data,
                           yaws=tuple(args.yaws or DEFAULT_YAWS), size=args.size or DEFAULT_SIZE,
                           max_items=args.max_items, face_models=args.face_models, video=args.video,
                           progress=not args.quiet, command=command_line())
    report = evaluate_views(methods, options)
    write_report(report, args.out)
    data = report["data"]
    print(f"multi-view consistency: {data['items']} references x yaws {', '.join(f'{y:g}' for y in data['yaws_deg'])} "
          f"at {report['size']}x{report['size']} (outputs re-tracked; no ground truth):")
    print(format_table(report, per_sequence=True))
    for metric, reason in report["missing"].items():
        print(f"missing {metric}: {reason}")
    print(f"report -> {args.out}" + (f"; grid video (one frame per yaw) -> {args.video}" if args.video else ""))
    return 0


def cmd_fetch(args) -> int:
    from onehead.metrics import identity

    check_outputs([Output("--cache-dir" if args.cache_dir else "cache folder", identity.face_models_dir(args.cache_dir),
                          "folder")])
    folder = identity.fetch_face_models(args.cache_dir)
    print(f"CSIM face models ({', '.join(identity.MODEL_FILES)}) -> {folder}")
    return 0


def cmd_convert_lpips(args) -> int:
    check_outputs([Output("--out", args.out, "weights")], [("--alexnet", args.alexnet), ("--linear", args.linear)])
    from onehead.metrics.lpips import ENV_VAR, convert_lpips_weights

    out = convert_lpips_weights(args.alexnet, args.linear, args.out)
    print(f"LPIPS weights -> {out}; pass it to load_lpips() or set {ENV_VAR}={out}")
    return 0


def cmd_bench(args) -> int:
    from onehead.bench import run_bench
    run_bench(args.what, size=args.size, frames=args.frames)
    return 0


class _Benchmarks:
    """The names of onehead.bench's benchmarks, imported only when `onehead bench` needs them (the
    import loads torch, a few seconds that every other command's checks should not wait for)."""

    def _names(self):
        from onehead.bench import BENCHMARKS
        return sorted(BENCHMARKS)

    def __contains__(self, name):
        return name in self._names()

    def __iter__(self):
        return iter(self._names())


def build_parser() -> argparse.ArgumentParser:
    steps = _embedded_steps()
    parser = _Parser(prog="onehead", formatter_class=_HelpFormatter,
                     description=f"3D-aware head avatars: tracking and animation. {EXISTING_OUTPUT}.")
    parser.add_argument("--version", action="version", version=f"onehead {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, help, description=""):
        return sub.add_parser(name, help=help, formatter_class=_HelpFormatter,
                              description=f"{help[0].upper()}{help[1:]}. {description}{EXISTING_OUTPUT}.")

    def flame(p):
        p.add_argument("--head", choices=("basic", "flame"), default="basic",
                       help="the 3D head model: basic is onehead's open one; flame needs your "
                            "licensed FLAME files")
        p.add_argument("--flame-dir", default=None, help="folder with the FLAME files (or set ONEHEAD_FLAME_DIR)")

    p = command("track", "fit the head model to an image, a video or a folder of frames",
                "Tracking estimates, for every frame, the head's shape, expression, pose and camera. ")
    p.add_argument("input", help="image, video file, folder of frames, or carphone (the real sample clip)")
    p.add_argument("--out", required=True, help=f"tracking file to write ({allowed('tracking')})")
    flame(p)
    p.add_argument("--vis", default=None,
                   help=f"also draw the fit: a picture ({allowed('picture')}; for a video its most closed mouth, middle "
                        f"and most open mouth frames side by side) or a video "
                        f"({allowed('video')})")
    p.add_argument("--focal", type=_positive(), default=None,
                   help="camera focal length in pixels, above 0 (default: 1.8 x the image's long side)")
    p.add_argument("--optimize-focal", action="store_true", help="estimate the focal length too")
    p.add_argument("--no-dense", action="store_true",
                   help="fit mediapipe's 68 iBUG points and irises only, not also its lip, eye and face-oval "
                        "points (faster, looser lips and jaw)")
    p.add_argument("--max-frames", type=POSITIVE, default=None,
                   help="track at most this many frames, at least 1 (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_track)

    p = command("demo", "the main job on the embedded defaults: track and animate a real portrait",
                "Writes astronaut_tracking.npz, astronaut_tracking.png, animation.mp4, side_by_side.mp4 and side_by_side.png into "
                "the output folder; other files there are left alone. ")
    p.add_argument("--out", default="onehead_demo", help="output folder (created if needed)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = command("synth", "render a synthetic multi-identity, multi-view head dataset",
                "A folder that is not empty is replaced only with --overwrite: the new dataset is written "
                "beside it and swapped in when complete, so it is never mixed with the old one and an interrupted "
                "run leaves the old one. ")
    p.add_argument("out", help="dataset folder to write (must be empty or new, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing onehead dataset in that folder (a folder holding other files is "
                        "refused)")
    p.add_argument("--identities", type=POSITIVE, default=4, help="random people (identities), at least 1")
    p.add_argument("--sequences", type=POSITIVE, default=2, help="motion clips per identity, at least 1")
    p.add_argument("--frames", type=POSITIVE, default=24, help="frames per clip, at least 1")
    p.add_argument("--views", type=POSITIVE, default=1, help="cameras per clip, at least 1 (view 0 near-frontal)")
    p.add_argument("--size", type=SIZE, default=256, help=f"frame size in pixels (square), 16 to {MAX_SIZE}")
    p.add_argument("--seed", type=SEED, default=0,
                   help=f"random seed, 0 to {MAX_SEED} (use another one for held-out identities)")
    p.add_argument("--fps", type=_positive(1000), default=25.0, help="frames per second of the motion, above 0")
    p.add_argument("--cross-pairs", action="store_true",
                   help="also render each identity with the next one's motion (the exact answer for "
                        "cross-identity reenactment)")
    p.add_argument("--no-backgrounds", action="store_true", help="black backgrounds")
    p.add_argument("--studio", action="store_true",
                   help="one camera rig, light and backdrop per identity, shared by its sequences (a capture "
                        "studio: the data a person-specific avatar trains on)")
    flame(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = command("render-debug", "write a contact sheet of every render buffer of a synthetic head",
                "The buffers: colour, mask, surface normals, depth, model-space position, texture coordinates "
                "and the splatted Gaussian features the animator is conditioned on. ")
    p.add_argument("--out", default="render_debug.png", help=f"picture to write ({allowed('picture')})")
    p.add_argument("--size", type=SIZE, default=256, help=f"tile size in pixels, 16 to {MAX_SIZE}")
    p.add_argument("--seed", type=SEED, default=0, help=f"random identity, expression and light, 0 to {MAX_SEED}")
    p.add_argument("--splat-backend", default="auto", choices=("auto", "torch", "gsplat"),
                   help="how Gaussians are drawn: gsplat (CUDA), torch (anywhere), auto picks")
    flame(p)
    p.set_defaults(func=cmd_render_debug)

    p = command("animate", "reenact a reference portrait with the motion of a driving video",
                "The driving video's expressions and head motion are transferred onto the reference person. ")
    p.add_argument("--reference", required=True, help="reference portrait (image file)")
    p.add_argument("--driving", required=True,
                   help="driving video, folder of frames, tracking npz, or carphone (the real sample clip)")
    p.add_argument("--out", required=True, help=f"video to write ({allowed('video')})")
    p.add_argument("--reference-tracking", default=None,
                   help="take the reference's parameters from the first frame of this tracking npz")
    p.add_argument("--model", "--checkpoint", dest="model", default=None,
                   help="model folder of any one-shot family, or triplane: the embedded tri-plane model "
                        "(default: the embedded diffusion model)")
    p.add_argument("--steps", type=STEPS, default=None,
                   help=f"denoising steps, 1 to 1000: more is slower and cleaner (default: the model's own; "
                        f"{steps} for the embedded model)")
    p.add_argument("--seed", type=SEED, default=None,
                   help=f"seed of the starting noise, 0 to {MAX_SEED} (default: the model's own, 0)")
    p.add_argument("--max-frames", type=POSITIVE, default=None,
                   help="animate at most this many frames, at least 1 (default: all)")
    p.add_argument("--driving-camera", action="store_true",
                   help="render at the driving frames' cameras with absolute poses (data in onehead's format)")
    p.add_argument("--background", choices=("generated", "reference"), default=None,
                   help="outside the head: the model's output, or the reference pasted back (default: the "
                        "model's setting)")
    p.add_argument("--side-by-side", default=None,
                   help=f"also write a video of reference | driving | mesh warp (the baseline to beat) | "
                        f"output here ({allowed('video')})")
    p.add_argument("--tile", type=SIZE, default=256,
                   help=f"size in pixels of each picture in the side-by-side video, 16 to {MAX_SIZE}")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_animate)

    p = command("eval", "score models and baselines on a dataset in onehead's format, or on real portraits",
                "Self reenactment drives a person with their own video (the answer is known); cross "
                "reenactment drives them with someone else's; real drives portraits with a real video, "
                "without ground truth (identity kept and CSIM against the portrait; mouth r, AED, APD, AKD "
                "against the driving frames; flicker). ")
    p.add_argument("--data", default=None,
                   help="dataset folder for self, cross and avatar, or the references of views (frame 0 of "
                        "each sequence) (onehead synth, datasets/prepare_video.py); labelled images for landmarks; "
                        "a synthetic dataset for tracking")
    p.add_argument("--task", required=True,
                   choices=("self", "cross", "real", "views", "avatar", "landmarks", "tracking"),
                   help="self or cross-identity reenactment on --data, real portraits x a driving video, "
                        "landmarks: the tracker's 68 points against labelled images (--data: IMAGE.png with "
                        "IMAGE.pts in 300-W's format beside it; mediapipe's points as the baseline), "
                        "tracking: the tracker against the exact truth of a synthetic --data (head rotation, "
                        "its gains, expression, jaw, 68 points), "
                        "views: multi-view consistency (portraits or --data references turned on a yaw sweep, "
                        "re-tracked), or avatar: person-specific avatars (--model) on the frames of --data they "
                        "did not train on, against the nearest training frame")
    p.add_argument("--yaws", type=float, nargs="+", default=None,
                   help="views task: the yaw sweep in degrees, each within +-90 (default: -45 -30 -15 0 15 30 45)")
    p.add_argument("--frames", default=None,
                   help="avatar task: only frames in this slice, e.g. 100:120 (default: every frame not trained on)")
    p.add_argument("--references", nargs="+", default=None,
                   help="real and views tasks: portrait image files or the samples astronaut, grace_hopper "
                        "(default: astronaut grace_hopper)")
    p.add_argument("--driving", default=None,
                   help="real task: driving video, folder of frames, or carphone, the bundled real clip "
                        "(default: carphone)")
    p.add_argument("--max-frames", type=POSITIVE, default=None,
                   help="real task: use only the first frames of the driving video, at least 1 (default: all)")
    p.add_argument("--out", required=True, help=f"report to write ({allowed('report')})")
    p.add_argument("--model", "--checkpoint", dest="model", action="append", default=None,
                   help="model folder; repeat for several (default: the embedded model; 'triplane': the embedded "
                        "tri-plane model; 'none': baselines only)")
    p.add_argument("--video", default=None,
                   help=f"also write a grid video: reference | target | each method ({allowed('video')})")
    p.add_argument("--steps", type=STEPS, default=None,
                   help=f"denoising steps, 1 to 1000 (default: each model's own; {steps} for the embedded model)")
    p.add_argument("--seed", type=SEED, default=None,
                   help=f"seed of the starting noise, 0 to {MAX_SEED} (default: each model's own, 0)")
    p.add_argument("--size", type=SIZE, default=None,
                   help=f"size in pixels the outputs are scored at, 16 to {MAX_SIZE} (default: the smallest "
                        f"model resolution; 256 for the real and views tasks, where smaller models are upsampled)")
    p.add_argument("--max-items", type=POSITIVE, default=None,
                   help="evaluate at most this many clips, at least 1 (default: all)")
    p.add_argument("--lpips", default=None,
                   help="LPIPS weights, for the learned perceptual distance (.safetensors; or set "
                        "ONEHEAD_LPIPS_WEIGHTS; `onehead convert-lpips` makes them)")
    p.add_argument("--face-models", default=None,
                   help="folder with dlib's face models for CSIM, the identity similarity (or ONEHEAD_FACE_MODELS; "
                        "`onehead fetch csim`)")
    p.add_argument("--no-motion-metrics", action="store_true",
                   help="skip AKD, AED and APD (keypoint, expression and pose distances; they track every output)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)

    p = command("avatar", "person-specific avatars (DiffusionAvatars): train one from a video, render it",
                "`onehead avatar train VIDEO --out DIR`, then `onehead avatar render DIR --driving VIDEO`. ")
    avatar = p.add_subparsers(dest="avatar_command", required=True)
    q = avatar.add_parser("train", formatter_class=_HelpFormatter,
                          help="train an avatar from a raw video (tracked, cropped, matted) or a dataset folder",
                          description="Train a DiffusionAvatar of one person. A raw video is tracked, cropped and "
                                      "matted into DIR/data first; training writes DIR/run (checkpoints, log, "
                                      "validation pictures; an interrupted run resumes there) and the avatar "
                                      "DIR/model. The carphone sample may be used to train, not to redistribute.")
    q.add_argument("input", help="video file, folder of frames, dataset folder (onehead's format), or carphone")
    q.add_argument("--out", required=True, help="folder to write (data/, run/, model/)")
    q.add_argument("--preset", choices=("tiny", "base"), default="tiny",
                   help="tiny: 128x128 on a CPU; base: 512x512 from a local Stable Diffusion folder "
                        "(--set model.sd_path=DIR)")
    q.add_argument("--steps", type=POSITIVE, default=3000, help="training steps, at least 1")
    q.add_argument("--frames", default=None, help="frames to train on, as a slice, e.g. 0:100 (default: all)")
    q.add_argument("--views", nargs="+", default=None, help="camera views to train on (default: all)")
    q.add_argument("--size", type=SIZE, default=256, help="crop size of a prepared video, in pixels")
    q.add_argument("--max-frames", type=POSITIVE, default=None, help="a video: use only its first frames")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training config value, e.g. --set train.learning_rate=1e-4 (repeatable)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_avatar_train)
    q = avatar.add_parser("render", formatter_class=_HelpFormatter, help="render an avatar driven by a video or tracking",
                          description="Render an avatar with the expressions and head motion of a video or tracking "
                                      "file (any person's: the avatar keeps its own shape). " + EXISTING_OUTPUT + ".")
    q.add_argument("avatar", help="the avatar folder (`onehead avatar train`'s --out, or its model/), or embedded "
                                  "(the shipped synthetic person)")
    q.add_argument("--driving", required=True,
                   help="driving video, folder of frames, tracking file (.npz), or carphone (the real sample clip)")
    q.add_argument("--out", required=True, help=f"video to write ({allowed('video')})")
    q.add_argument("--camera", default="home",
                   help="home: the avatar's own view, head motion relative to the driving's first frame; "
                        "driving: the tracking's own cameras and poses (self-reenactment); orbit: home, the camera "
                        "swinging left and right; or an .npz with K and world_to_cam at the output size")
    q.add_argument("--orbit-degrees", type=_positive(90), default=30.0, help="orbit: the largest yaw, in degrees")
    q.add_argument("--interpolate", default=None, metavar="I,J,...",
                   help="blend the expressions of these driving frames instead of playing the video")
    q.add_argument("--between", type=POSITIVE, default=12, help="--interpolate: frames from one key to the next")
    q.add_argument("--steps", type=_whole(1, 1000), default=None, help="denoising steps (default: the avatar's own)")
    q.add_argument("--seed", type=SEED, default=None, help="seed of the starting noise (default: the avatar's own)")
    q.add_argument("--max-frames", type=POSITIVE, default=None, help="render at most this many frames")
    q.add_argument("--side-by-side", default=None, help=f"also write driving | avatar ({allowed('video')})")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_avatar_render)

    # the only download onehead makes, and only when asked: the CSIM face models
    p = command("fetch", "download optional model files (csim: dlib face models, CC0)")
    p.add_argument("what", choices=("csim",), help="csim: the dlib face-recognition and 5-point models")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $ONEHEAD_CACHE or ~/.cache/onehead)")
    p.set_defaults(func=cmd_fetch)

    p = command("convert-lpips", "make onehead's LPIPS weights file (safetensors)")
    p.add_argument("--alexnet", required=True, help="torchvision AlexNet state dict (alexnet-owt-7be5be79.pth)")
    p.add_argument("--linear", required=True, help="LPIPS v0.1 linear weights (weights/v0.1/alex.pth)")
    p.add_argument("--out", required=True, help=f"weights file to write ({allowed('weights')})")
    p.set_defaults(func=cmd_convert_lpips)

    p = command("bench", "speed benchmarks (figures, not tests)", "Writes no files. ")
    p.add_argument("what", choices=_Benchmarks(), metavar="what",
                   help="what to time: %(choices)s")
    p.add_argument("--size", type=SIZE, default=None,
                   help=f"image size in pixels (square), 16 to {MAX_SIZE} (default: each benchmark's own)")
    p.add_argument("--frames", type=POSITIVE, default=None,
                   help="frames to time, at least 1 (default: each benchmark's own)")
    p.set_defaults(func=cmd_bench)
    return parser


def _interrupt(signum, frame):  # SIGTERM as Ctrl-C: atomic writes remove their temporary files
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error already printed on one line
        return stop.code if isinstance(stop.code, int) else 0
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread
        previous = None
    try:
        return args.func(args)
    except OneheadError as exc:
        print(f"onehead {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"onehead {args.command}: interrupted; existing files were left as they were", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
