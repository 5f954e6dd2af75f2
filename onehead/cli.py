"""The `onehead` command. Every OneheadError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from onehead import __version__
from onehead.errors import ConfigError, OneheadError


def _track_options(args):
    from onehead.tracking.tracker import TrackOptions
    return TrackOptions(focal=args.focal, optimize_focal=args.optimize_focal, progress=not args.quiet,
                        max_frames=args.max_frames)


def _write_vis(path: Path, source, tracking, head) -> None:
    from onehead.data.images import is_image_path, load_image, save_image
    from onehead.data.video import read_frames, write_video
    from onehead.tracking.visualize import overlay_tracking

    source = Path(source)
    if source.is_file() and is_image_path(source):
        frames = load_image(source)[None]
    else:
        frames, _ = read_frames(source, max_frames=tracking.num_frames)
    drawn = overlay_tracking(frames, tracking, head)
    if path.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm"):
        write_video(path, drawn, fps=tracking.fps)
    elif len(drawn) == 1 or path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        save_image(path, drawn[len(drawn) // 2] if len(drawn) > 1 else drawn[0])
    else:
        raise ConfigError(f"--vis {path}: use a .png/.jpg (one picture) or .mp4 (video) file name")


def cmd_track(args) -> int:
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
    if args.vis:
        _write_vis(Path(args.vis), args.input, tracking, head)
        print(f"visualization -> {args.vis}")
    return 0


def _write_animation(result, video_path, side_by_side_path=None, tile: int = 256):
    """Write an AnimationResult as a video (and optionally the side-by-side one); returns its
    uint8 frames (T, H, W, 3)."""
    from onehead.pixels import frames_to_uint8
    from onehead.data.video import write_video
    from onehead.render.visualize import control_rgb, side_by_side

    frames = frames_to_uint8(result.frames)
    fps = float(result.tracking.fps)
    write_video(video_path, frames, fps=fps)
    if side_by_side_path:
        columns = [("reference", result.reference)]
        if result.driving_frames is not None:
            columns.append(("driving", result.driving_frames))
        if result.control_maps is not None:
            columns.append(("control signal", control_rgb(result.control_maps)))
        columns.append(("output", result.frames))
        write_video(side_by_side_path, side_by_side(columns, tile=tile), fps=fps)
    return frames


def cmd_demo(args) -> int:
    """The README's main job: track a real portrait, then reenact it with a real talking-head clip
    (a synthetic driving sequence when the clip cannot be had) using the embedded default Animator."""
    from onehead.data.images import save_image
    from onehead.data.samples import astronaut, carphone_path
    from onehead.errors import MediaReadError
    from onehead.head.model import load_head_model
    from onehead.pipelines import Animator
    from onehead.tracking.tracker import TrackOptions, track_image
    from onehead.tracking.visualize import overlay_tracking

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    head = load_head_model("basic")
    image = astronaut()
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

        synthesize(head, out / "driving", SynthOptions(identities=1, sequences=1, frames=48, size=256, progress=False))
        driving, what = out / "driving" / "id000_s00" / "cam00" / "frames", f"a synthetic head ({exc})"
    start = time.perf_counter()
    result = animator.animate(image, driving, progress=not args.quiet)
    seconds = time.perf_counter() - start
    frames = _write_animation(result, out / "animation.mp4", out / "side_by_side.mp4")
    print(f"demo: animated the astronaut with {what}: {len(frames)} frames in {seconds:.1f} s "
          f"(tracking, control maps, {animator.describe().get('steps', '?')} denoising steps)")
    print(f"  {out / 'animation.mp4'}  the animation ({frames.shape[2]}x{frames.shape[1]}, embedded tiny model)")
    print(f"  {out / 'side_by_side.mp4'}  reference | driving | control signal | output")
    return 0


def cmd_synth(args) -> int:
    from onehead.data.synthetic import SynthOptions, synthesize
    from onehead.head.model import load_head_model

    head = load_head_model(args.head, args.flame_dir)
    options = SynthOptions(identities=args.identities, sequences=args.sequences, frames=args.frames,
                           views=args.views, size=args.size, seed=args.seed, fps=args.fps,
                           backgrounds=not args.no_backgrounds, cross_pairs=args.cross_pairs,
                           progress=not args.quiet)
    summary = synthesize(head, args.out, options)
    print(f"wrote {summary['sequences']} sequences ({summary['frames_rendered']} frames, "
          f"{summary['pairs']} cross pairs) to {args.out}; rendering {summary['render_fps']:.1f} frames/s")
    return 0


def cmd_render_debug(args) -> int:
    from onehead.head.model import load_head_model
    from onehead.pipelines.render_debug import render_debug_sheet

    head = load_head_model(args.head, args.flame_dir)
    path = render_debug_sheet(head, args.out, size=args.size, seed=args.seed, splat_backend=args.splat_backend)
    print(f"contact sheet -> {path}")
    return 0


def cmd_animate(args) -> int:
    from onehead.pipelines import Animator

    animator = Animator.from_pretrained(args.model)
    settings = {k: v for k, v in (("steps", args.steps), ("seed", args.seed), ("background", args.background))
                if v is not None}
    start = time.perf_counter()
    result = animator.animate(args.reference, args.driving, max_frames=args.max_frames,
                              reference_tracking=args.reference_tracking,
                              camera="driving" if args.driving_camera else None, progress=not args.quiet, **settings)
    seconds = time.perf_counter() - start
    frames = _write_animation(result, args.out, args.side_by_side, tile=args.tile)
    print(f"animated {len(frames)} frames at {frames.shape[1]}x{frames.shape[2]} in {seconds:.1f} s -> {args.out}")
    if args.side_by_side:
        print(f"side by side (reference | driving | control | output) -> {args.side_by_side}")
    return 0


def cmd_eval(args) -> int:
    from onehead.evaluation.methods import baseline_methods, load_method
    from onehead.evaluation.run import EvalOptions, command_line, evaluate, format_table, write_report
    from onehead.head.model import load_head_model
    from onehead.pipelines.one_shot import default_model_dir

    models = args.model or [str(default_model_dir())]
    settings = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    methods = [load_method(m, **settings) for m in models if m != "none"]
    methods += baseline_methods(methods[0].head if methods else load_head_model("basic"))
    options = EvalOptions(task=args.task, size=args.size, lpips_weights=args.lpips, face_models=args.face_models,
                          motion_metrics=not args.no_motion_metrics, max_items=args.max_items, video=args.video,
                          progress=not args.quiet, command=command_line())
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


def cmd_fetch(args) -> int:
    from onehead.metrics import identity

    folder = identity.fetch_face_models(args.cache_dir)
    print(f"CSIM face models ({', '.join(identity.MODEL_FILES)}) -> {folder}")
    return 0


def cmd_convert_lpips(args) -> int:
    from onehead.metrics.lpips import ENV_VAR, convert_lpips_weights

    out = convert_lpips_weights(args.alexnet, args.linear, args.out)
    print(f"LPIPS weights -> {out}; pass it to load_lpips() or set {ENV_VAR}={out}")
    return 0


def cmd_bench(args) -> int:
    from onehead.bench import run_bench
    run_bench(args.what, size=args.size, frames=args.frames)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from onehead.bench import BENCHMARKS

    parser = argparse.ArgumentParser(prog="onehead", description="3D-aware head avatars: tracking and animation")
    parser.add_argument("--version", action="version", version=f"onehead {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("track", help="fit the head model to an image, a video or a folder of frames")
    p.add_argument("input", help="image, video file, or folder of frames")
    p.add_argument("--out", required=True, help="output tracking file (.npz)")
    p.add_argument("--head", choices=("basic", "flame"), default="basic",
                   help="basic: onehead's open head model; flame: your licensed FLAME files")
    p.add_argument("--flame-dir", default=None, help="FLAME directory (or set ONEHEAD_FLAME_DIR)")
    p.add_argument("--vis", default=None, help="write a picture (.png) or video (.mp4) of the fit")
    p.add_argument("--focal", type=float, default=None, help="focal length in pixels (default 1.8 x long side)")
    p.add_argument("--optimize-focal", action="store_true", help="fit the focal length too")
    p.add_argument("--max-frames", type=int, default=None, help="track at most this many frames")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("demo", help="the main job on the embedded defaults: track and animate a real portrait")
    p.add_argument("--out", default="onehead_demo", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("synth", help="render a synthetic multi-identity, multi-view head dataset")
    p.add_argument("out", help="dataset folder to write")
    p.add_argument("--identities", type=int, default=4, help="random identities")
    p.add_argument("--sequences", type=int, default=2, help="motion sequences per identity")
    p.add_argument("--frames", type=int, default=24, help="frames per sequence")
    p.add_argument("--views", type=int, default=1, help="cameras per sequence (view 0 near-frontal)")
    p.add_argument("--size", type=int, default=256, help="frame size in pixels (square)")
    p.add_argument("--seed", type=int, default=0, help="random seed (use another one for held-out identities)")
    p.add_argument("--fps", type=float, default=25.0, help="frames per second of the motion")
    p.add_argument("--cross-pairs", action="store_true",
                   help="also render each identity with the next one's motion (exact cross-reenactment truth)")
    p.add_argument("--no-backgrounds", action="store_true", help="black backgrounds")
    p.add_argument("--head", default="basic", choices=("basic", "flame"), help="head model")
    p.add_argument("--flame-dir", default=None, help="FLAME directory (or set ONEHEAD_FLAME_DIR)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("render-debug", help="write a contact sheet of every render buffer of a synthetic head")
    p.add_argument("--out", default="render_debug.png", help="PNG to write")
    p.add_argument("--size", type=int, default=256, help="tile size in pixels")
    p.add_argument("--seed", type=int, default=0, help="random identity, expression and light")
    p.add_argument("--splat-backend", default="auto", choices=("auto", "torch", "gsplat"), help="splatter")
    p.add_argument("--head", default="basic", choices=("basic", "flame"), help="head model")
    p.add_argument("--flame-dir", default=None, help="FLAME directory (or set ONEHEAD_FLAME_DIR)")
    p.set_defaults(func=cmd_render_debug)

    p = sub.add_parser("animate", help="reenact a reference portrait with the motion of a driving video")
    p.add_argument("--reference", required=True, help="reference portrait (image file)")
    p.add_argument("--driving", required=True, help="driving video, folder of frames, or tracking npz")
    p.add_argument("--out", required=True, help="output video (.mp4)")
    p.add_argument("--reference-tracking", default=None,
                   help="take the reference's parameters from the first frame of this tracking npz")
    p.add_argument("--model", "--checkpoint", dest="model", default=None,
                   help="model folder of any one-shot family (default: the embedded model)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--seed", type=int, default=None, help="noise seed (default: the model's, 0)")
    p.add_argument("--max-frames", type=int, default=None, help="animate at most this many frames")
    p.add_argument("--driving-camera", action="store_true",
                   help="render at the driving frames' cameras with absolute poses (data in onehead's format)")
    p.add_argument("--background", choices=("generated", "reference"), default=None,
                   help="outside the head: the model's output, or the reference pasted back (default: the model's setting)")
    p.add_argument("--side-by-side", default=None, help="also write reference | driving | control | output here")
    p.add_argument("--tile", type=int, default=256, help="tile size of the side-by-side video")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_animate)

    p = sub.add_parser("eval", help="score models and baselines on a dataset in onehead's format")
    p.add_argument("--data", required=True, help="dataset folder (onehead synth, datasets/prepare_video.py)")
    p.add_argument("--task", required=True, choices=("self", "cross"), help="self or cross-identity reenactment")
    p.add_argument("--out", required=True, help="report to write (.json)")
    p.add_argument("--model", "--checkpoint", dest="model", action="append", default=None,
                   help="model folder; repeat for several (default: the embedded model; 'none': baselines only)")
    p.add_argument("--video", default=None, help="also write a grid video: reference | target | each method")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: each model's)")
    p.add_argument("--seed", type=int, default=None, help="noise seed (default: each model's, 0)")
    p.add_argument("--size", type=int, default=None, help="evaluation size (default: the smallest model resolution)")
    p.add_argument("--max-items", type=int, default=None, help="evaluate at most this many clips")
    p.add_argument("--lpips", default=None, help="LPIPS weights (.safetensors; or set ONEHEAD_LPIPS_WEIGHTS)")
    p.add_argument("--face-models", default=None,
                   help="folder with dlib's face models for CSIM (or ONEHEAD_FACE_MODELS; `onehead fetch csim`)")
    p.add_argument("--no-motion-metrics", action="store_true", help="skip AKD, AED and APD (no tracking of outputs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)

    # the only download onehead makes, and only when asked: the CSIM face models
    p = sub.add_parser("fetch", help="download optional model files (csim: dlib face models, CC0)")
    p.add_argument("what", choices=("csim",), help="csim: the dlib face-recognition and 5-point models")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $ONEHEAD_CACHE or ~/.cache/onehead)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("convert-lpips", help="make onehead's LPIPS weights file (safetensors)")
    p.add_argument("--alexnet", required=True, help="torchvision AlexNet state dict (alexnet-owt-7be5be79.pth)")
    p.add_argument("--linear", required=True, help="LPIPS v0.1 linear weights (weights/v0.1/alex.pth)")
    p.add_argument("--out", required=True, help="safetensors file to write")
    p.set_defaults(func=cmd_convert_lpips)

    p = sub.add_parser("bench", help="speed benchmarks (figures, not tests)")
    p.add_argument("what", choices=sorted(BENCHMARKS), help="what to time")
    p.add_argument("--size", type=int, default=None, help="image size in pixels (square; each benchmark has a default)")
    p.add_argument("--frames", type=int, default=None, help="frames to time (each benchmark has a default)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OneheadError as exc:
        print(f"onehead {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
