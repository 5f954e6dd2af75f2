"""`onehead bench ...`: speed figures (printed, never asserted in tests)."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch


def _machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, {'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}")


def _benchmark_video(size: int, frames: int) -> tuple[np.ndarray, str]:
    """A real talking head (the carphone clip) letterboxed to size x size; a moving portrait otherwise."""
    import cv2

    from onehead.data.samples import astronaut, carphone_path
    from onehead.data.video import read_video
    from onehead.errors import MediaReadError

    try:
        clip, _ = read_video(carphone_path())
        source = "carphone clip (real), letterboxed"
    except MediaReadError:
        still = astronaut()
        clip = []
        for t in range(frames):
            m = cv2.getRotationMatrix2D((256, 256), 8 * np.sin(t / 9), 1 + 0.05 * np.sin(t / 13))
            m[:, 2] += (6 * np.sin(t / 7), 4 * np.cos(t / 11))
            clip.append(cv2.warpAffine(still, m, (512, 512), borderMode=cv2.BORDER_REFLECT))
        clip = np.stack(clip)
        source = "astronaut portrait with synthetic motion"
    h, w = clip.shape[1:3]
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    out = np.zeros((len(clip), size, size, 3), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    for t, frame in enumerate(clip):
        out[t, top:top + nh, left:left + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_CUBIC)
    reps = int(np.ceil(frames / len(out)))
    looped = np.concatenate([out, out[::-1]] * reps)[:frames]  # ping-pong keeps the motion continuous
    return looped, source


def bench_track(size: int = 512, frames: int = 120) -> dict:
    from onehead.data.samples import astronaut
    from onehead.head.model import load_head_model
    from onehead.tracking.tracker import TrackOptions, detect_frames, fit_sequence, track_image

    head = load_head_model("basic")
    video, source = _benchmark_video(size, frames)
    options = TrackOptions(progress=False)
    # warm-up: mediapipe graphs, torch kernels
    fit_sequence(head, detect_frames(video[:8], mode="video"), video.shape[1:3], options)
    track_image(astronaut(), head, options)

    detections = detect_frames(video, mode="video")
    start = time.perf_counter()
    tracking = fit_sequence(head, detections, video.shape[1:3], options)
    fit_seconds = time.perf_counter() - start
    total = detections.seconds + fit_seconds

    image = astronaut()
    single = []
    for _ in range(3):
        det = detect_frames(image[None], mode="image")
        start = time.perf_counter()
        fit_sequence(head, det, image.shape[:2], options)
        single.append((det.seconds, time.perf_counter() - start))
    det_s, fit_s = np.median(np.asarray(single), axis=0)
    return {
        "machine": _machine(), "video": f"{frames} frames at {size}x{size}: {source}",
        "faces_found": int(tracking.valid.sum()),
        "landmarks_ms_per_frame": 1000 * detections.seconds / frames,
        "fit_ms_per_frame": 1000 * fit_seconds / frames,
        "video_fps": frames / total,
        "mean_fit_error_iod": float(np.nanmean(tracking.fit_error)),
        "image_detect_ms": 1000 * det_s, "image_fit_ms": 1000 * fit_s,
    }


def report_track(size: int | None = None, frames: int | None = None) -> dict:
    size, frames = size or 512, frames or 120
    r = bench_track(size, frames)
    print(f"onehead bench track  ({r['machine']})")
    print(f"  video: {r['video']}; face found in {r['faces_found']}/{frames}")
    print(f"  landmarks (mediapipe, video mode)  {r['landmarks_ms_per_frame']:7.2f} ms/frame")
    print(f"  head-model fit (batched)           {r['fit_ms_per_frame']:7.2f} ms/frame")
    print(f"  video tracking                     {r['video_fps']:7.1f} frames/s  "
          f"(mean fit error {r['mean_fit_error_iod']:.3f} of the eye distance)")
    print(f"  single image (512x512 astronaut)   detect {r['image_detect_ms']:.1f} ms + fit {r['image_fit_ms']:.1f} ms")
    return r


def _head_shell_scene(n: int = 10_000, channels: int = 16, seed: int = 0, device="cpu") -> dict:
    """n Gaussians on a head-sized ellipsoid shell (radii 9, 12, 10 cm) at the world origin.

    Isotropic scales of 6.5 mm give screen radii of about 10 px at 256 x 256 with onehead's default
    camera (1 m away, default focal); opacities uniform in [0.3, 1], random features.
    """
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    scene = {
        "means": (directions * torch.tensor([0.09, 0.12, 0.10]))[None],
        "scales": torch.full((1, n), 0.0065),
        "opacities": 0.3 + 0.7 * torch.rand(1, n, generator=g),
        "features": torch.randn(1, n, channels, generator=g),
    }
    return {k: v.to(device) for k, v in scene.items()}


def _splat_statistics(scene: dict, K: torch.Tensor, world_to_cam: torch.Tensor, size: int) -> dict:
    """What the splatter faces: visible Gaussians, screen radii (px), tile intersections."""
    from onehead.camera import to_gsplat_intrinsics
    from onehead.render.splat import gaussian_covariances, intersect_tiles, project_gaussians

    n = scene["scales"].shape[1]
    covariances = gaussian_covariances(scene["scales"][..., None].expand(1, n, 3),
                                       scene["means"].new_tensor([1.0, 0, 0, 0]).expand(1, n, 4))
    projected = project_gaussians(scene["means"], covariances, to_gsplat_intrinsics(K), world_to_cam,
                                  size, size, opacities=scene["opacities"])
    tiles = intersect_tiles(projected.means2d, projected.radii, projected.depths, size, size)
    radius = projected.radii.max(-1).values.flatten().float()
    radius = radius[radius > 0]
    return {"gaussians": n, "visible": len(radius), "radius_mean_px": float(radius.mean()),
            "radius_median_px": float(radius.median()), "tile_intersections": len(tiles.gaussian_ids),
            "max_per_tile": int(tiles.counts().max())}


def _time_splat(scene: dict, K, world_to_cam, size: int, backend: str, backward: bool,
                repeats: int) -> tuple[float, float]:
    """Median and best milliseconds of one splat_features call (and its backward)."""
    from onehead.render.splat import splat_features

    def once():
        inputs = {k: v.detach().requires_grad_(backward) for k, v in scene.items()}
        result = splat_features(inputs["means"], inputs["scales"], inputs["opacities"], inputs["features"],
                                K, world_to_cam, size, size, backend=backend)
        if backward:
            (result.features.mean() + result.alpha.mean() + result.depth.mean()).backward()

    def synchronize():
        if scene["means"].is_cuda:
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up
        once()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        once()
        synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times)), 1000 * min(times)


def bench_splat(size: int | None = None, frames: int | None = None) -> dict:
    """Splat 10k 16-channel Gaussians on a head shell: torch backend on CPU at `size` (256); with a
    GPU also gsplat.rasterization (and the torch backend) on CUDA at 512 x 512. frames: timed repeats."""
    from onehead.camera import default_focal, default_world_to_cam, intrinsics

    size, repeats = size or 256, frames or 20
    K, world_to_cam = intrinsics(default_focal(size, size), size, size)[None], default_world_to_cam(batch=1)
    scene = _head_shell_scene()
    result = {"machine": _machine(), "size": size, **_splat_statistics(scene, K, world_to_cam, size)}
    for backward in (False, True):
        key = f"torch_cpu_{'forward_backward' if backward else 'forward'}"
        result[f"{key}_ms"], result[f"{key}_best_ms"] = _time_splat(scene, K, world_to_cam, size, "torch",
                                                                    backward, repeats)
    if torch.cuda.is_available():
        gpu_size = 512
        K_gpu = intrinsics(default_focal(gpu_size, gpu_size), gpu_size, gpu_size)[None].cuda()
        scene_gpu = {k: v.cuda() for k, v in scene.items()}
        result["gpu"] = {"size": gpu_size, **_splat_statistics(scene_gpu, K_gpu, world_to_cam.cuda(), gpu_size)}
        for backend in ("gsplat", "torch"):
            for backward in (False, True):
                key = f"{backend}_cuda_{'forward_backward' if backward else 'forward'}"
                try:
                    result["gpu"][f"{key}_ms"], result["gpu"][f"{key}_best_ms"] = _time_splat(
                        scene_gpu, K_gpu, world_to_cam.cuda(), gpu_size, backend, backward, repeats)
                except Exception as exc:  # e.g. gsplat missing or its CUDA build failing: report, go on
                    result["gpu"][f"{key}_ms"] = result["gpu"][f"{key}_best_ms"] = f"failed: {exc}".splitlines()[0]
    return result


def report_splat(size: int | None = None, frames: int | None = None) -> dict:
    r = bench_splat(size, frames)

    def scene_line(s):
        return (f"{s['gaussians']} Gaussians x 16 channels, {s['visible']} visible, screen radius "
                f"mean {s['radius_mean_px']:.1f} / median {s['radius_median_px']:.0f} px, "
                f"{s['tile_intersections']} tile intersections (max {s['max_per_tile']} per 16x16 tile)")

    def ms(figures, key):
        median, best = figures[f"{key}_ms"], figures[f"{key}_best_ms"]
        return f"{median:8.1f} ms (best {best:.1f})" if isinstance(median, float) else median

    print(f"onehead bench splat  ({r['machine']})")
    print(f"  scene at {r['size']}x{r['size']}: {scene_line(r)}")
    print(f"  torch backend, CPU   forward           {ms(r, 'torch_cpu_forward')}")
    print(f"  torch backend, CPU   forward+backward  {ms(r, 'torch_cpu_forward_backward')}")
    if "gpu" in r:
        g = r["gpu"]
        print(f"  scene at {g['size']}x{g['size']}: {scene_line(g)}")
        for backend in ("gsplat", "torch"):
            print(f"  {backend:6s} backend, CUDA  forward           {ms(g, f'{backend}_cuda_forward')}")
            print(f"  {backend:6s} backend, CUDA  forward+backward  {ms(g, f'{backend}_cuda_forward_backward')}")
    return r


def bench_synth(size: int | None = None, frames: int | None = None) -> dict:
    """Synthetic heads: render-only frames/s (head model, rasterizer, G-buffers, texture, shading)
    and end to end with PNG writing, for 2 identities x 1 view at `size` (256)."""
    import tempfile

    from onehead.data.synthetic import SynthOptions, synthesize
    from onehead.head.model import load_head_model

    size, frames = size or 256, frames or 48
    head = load_head_model("basic")
    options = SynthOptions(identities=2, sequences=1, frames=frames, views=1, size=size, seed=0, progress=False)
    with tempfile.TemporaryDirectory() as out:
        synthesize(head, out, SynthOptions(identities=1, sequences=1, frames=4, size=size, progress=False))
        start = time.perf_counter()
        summary = synthesize(head, out, options)
        total = time.perf_counter() - start
    return {"machine": _machine(), "size": size, "frames": summary["frames_rendered"],
            "render_fps": summary["render_fps"], "end_to_end_fps": summary["frames_rendered"] / total}


def report_synth(size: int | None = None, frames: int | None = None) -> dict:
    r = bench_synth(size, frames)
    print(f"onehead bench synth  ({r['machine']})")
    print(f"  {r['frames']} frames at {r['size']}x{r['size']}: rendering {r['render_fps']:.1f} frames/s; "
          f"end to end (texture painting, PNG and npz writing) {r['end_to_end_fps']:.1f} frames/s")
    return r


def _subdivide(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoint subdivision, each triangle -> 4; vertices (V, 3), faces (F, 3); shared edges share a midpoint."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(1).values  # (3F, 2)
    unique, edge_id = torch.unique(edges, dim=0, return_inverse=True)
    midpoints = vertices[unique].mean(1)
    m01, m12, m20 = (edge_id.view(3, -1) + len(vertices)).unbind(0)
    a, b, c = faces.unbind(1)
    new_faces = torch.cat([torch.stack(f, 1) for f in ((a, m01, m20), (m01, b, m12), (m20, m12, c), (m01, m12, m20))])
    return torch.cat([vertices, midpoints]), new_faces


def _time_ms(fn, runs: int, warmup: int = 3) -> tuple[float, float]:
    """Mean and median wall time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - start))
    return float(np.mean(times)), float(np.median(times))


def bench_raster(size: int | None = None, frames: int | None = None) -> dict:
    """rasterize_mesh on the open head model (~10k faces) and its midpoint subdivision (~40k) on CPU."""
    from onehead.camera import default_focal, default_world_to_cam, intrinsics, project, world_to_camera
    from onehead.head.model import load_head_model
    from onehead.render import rasterize as raster

    size, runs = size or 512, frames or 20
    head = load_head_model("basic")
    K = intrinsics(default_focal(size, size), size, size)
    world_to_cam = default_world_to_cam(0.6)
    world_to_cam[1, 3] -= 0.03  # frames the head so that it covers about 40% of the image
    meshes = {"head": (head.v_template, head.faces)}
    meshes["head, subdivided"] = _subdivide(*meshes["head"])
    results = []
    for name, (vertices, faces) in meshes.items():
        vertices = vertices[None]
        fragments = raster.rasterize_mesh(vertices, faces, K, world_to_cam, size, size)

        def visibility_only():  # the no-grad visibility pass alone, without barycentrics and depth
            drawable = raster._drawable_faces(world_to_camera(vertices, world_to_cam[None]), faces, 1e-3, False)
            pixels, depth = project(vertices, K[None], world_to_cam[None])
            raster._visible_faces(pixels, depth, faces, drawable, size, size)

        tracked = vertices.clone().requires_grad_(True)

        def forward_backward():
            fragments = raster.rasterize_mesh(tracked, faces, K, world_to_cam, size, size)
            (fragments.depth.sum() + fragments.bary[..., 0].sum()).backward()

        results.append({
            "mesh": name, "faces": len(faces), "coverage": float(fragments.mask.float().mean()),
            "visibility_ms": _time_ms(visibility_only, runs),
            "rasterize_ms": _time_ms(lambda: raster.rasterize_mesh(vertices, faces, K, world_to_cam, size, size), runs),
            "rasterize_grad_ms": _time_ms(
                lambda: raster.rasterize_mesh(tracked, faces, K, world_to_cam, size, size), runs),
            "forward_backward_ms": _time_ms(forward_backward, runs),
        })
    return {"machine": _machine(), "size": size, "runs": runs, "meshes": results}


def report_raster(size: int | None = None, frames: int | None = None) -> dict:
    r = bench_raster(size, frames)
    print(f"onehead bench raster  ({r['machine']})")
    print(f"  {r['size']}x{r['size']} image, backend torch, mean / median of {r['runs']} runs after warm-up")
    for m in r["meshes"]:
        print(f"  {m['mesh']}: {m['faces']} faces, {100 * m['coverage']:.1f}% of the pixels covered")
        for key, label in [("visibility_ms", "visibility only (face index)"),
                           ("rasterize_ms", "rasterize_mesh (+ barycentrics, depth)"),
                           ("rasterize_grad_ms", "rasterize_mesh, vertices requiring grad"),
                           ("forward_backward_ms", "  ... plus backward")]:
            mean, median = m[key]
            print(f"    {label:<42s} {mean:7.1f} / {median:7.1f} ms")
    return r


def bench_animate(size: int | None = None, frames: int | None = None) -> dict:
    """Animator speed: the embedded tiny model (an untrained tiny one when absent) at its default
    steps on a synthetic driving sequence: control maps, one denoising step, and the whole frame
    (control maps, ReferenceNet, every step, decoding and paste-back), per frame."""
    import tempfile

    from onehead.data.sequence import open_sequence
    from onehead.data.synthetic import SynthOptions, synthesize
    from onehead.head.model import load_head_model
    from onehead.pipelines.animator import DEFAULT_CHECKPOINT, Animator, AnimatorConfig, load_animator
    from onehead.pipelines.reenactment import Motion, driving_motion, prepare_reference

    frames = frames or 32
    head = load_head_model("basic")
    embedded = (DEFAULT_CHECKPOINT / "animator.json").is_file()
    animator = load_animator(None, head) if embedded else Animator.from_config(AnimatorConfig.from_preset("tiny"), head)
    animator.eval()
    resolution = animator.config.resolution
    with tempfile.TemporaryDirectory() as out:
        synthesize(head, out, SynthOptions(identities=1, sequences=1, frames=frames, size=resolution, progress=False))
        view = open_sequence(Path(out) / "id000_s00").views["cam00"]
        reference, tracking = view.frame(0), view.tracking
    ref = prepare_reference(reference, head, resolution, tracking)
    motion = driving_motion(tracking, ref, head, resolution, camera="driving")
    animator.reenact(ref, Motion(motion.tracking.select(slice(0, 4)), None), progress=False)  # warm-up
    start = time.perf_counter()
    _, control = animator.reenact(ref, motion, progress=False)
    seconds = time.perf_counter() - start

    params, K, w2c = animator.motion_inputs(motion)
    reference_inputs = animator.reference_inputs(ref)
    image = reference_inputs[0]
    with torch.no_grad():
        start = time.perf_counter()
        guide = animator.control_maps(params, K, w2c, reference_inputs)
        control_seconds = time.perf_counter() - start
        window = min(frames, animator.config.window)
        latents = torch.zeros(window, animator.codec.latent_channels, resolution // animator.codec.factor,
                              resolution // animator.codec.factor)
        context = animator.domain_tokens(torch.ones(window, dtype=torch.long))
        animator.run_reference(animator.codec.encode(image * 2 - 1), context[:1])
        step_times = []
        for _ in range(5):
            start = time.perf_counter()
            animator.denoise(latents, torch.full((window,), 999), context, guide[:window], window)
            step_times.append(time.perf_counter() - start)
        animator.bank.clear()
    return {"machine": _machine(), "model": "embedded tiny" if embedded else "untrained tiny",
            "resolution": resolution, "steps": animator.config.default_steps, "frames": frames,
            "warp_guidance": animator.config.warp_guidance,
            "control_ms_per_frame": 1000 * control_seconds / frames,
            "denoise_step_ms_per_frame": 1000 * float(np.median(step_times)) / window,
            "seconds_per_frame": seconds / frames, "frames_per_s": frames / seconds}


def report_animate(size: int | None = None, frames: int | None = None) -> dict:
    r = bench_animate(size, frames)
    print(f"onehead bench animate  ({r['machine']})")
    print(f"  {r['model']} Animator at {r['resolution']}x{r['resolution']}, {r['steps']} DDIM step(s), {r['frames']} frames"
          f"{', warp guidance' if r['warp_guidance'] else ''}:")
    print(f"    control maps (splatting{' and warp' if r['warp_guidance'] else ''})  {r['control_ms_per_frame']:7.2f} ms/frame")
    print(f"    one denoising step (UNet with shared attention)  {r['denoise_step_ms_per_frame']:7.2f} ms/frame")
    print(f"    whole frame  {r['seconds_per_frame']:.3f} s ({r['frames_per_s']:.1f} frames/s)")
    if not torch.cuda.is_available():
        print("  base at 512x512 on a GPU: no GPU on this machine")
    return r


def report_all(size: int | None = None, frames: int | None = None) -> dict:
    """Every benchmark at its defaults, then one table of the per-part figures."""
    results = {name: BENCHMARKS[name]() for name in ("track", "raster", "splat", "synth", "animate")}
    rows = summary_rows(results)
    print()
    print(f"machine: {_machine()}")
    print("| part | setting | time | rate |")
    print("|---|---|---|---|")
    for part, setting, figure, rate in rows:
        print(f"| {part} | {setting} | {figure} | {rate} |")
    return {"machine": _machine(), "rows": rows, "results": results}


def summary_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(part, setting, time, rate) rows of the `onehead bench all` table."""
    rows = []
    t = results["track"]
    rows += [("tracking: mediapipe landmarks", t["video"].split(":")[0], f"{t['landmarks_ms_per_frame']:.1f} ms/frame", ""),
             ("tracking: head-model fit", "batched, warm-started", f"{t['fit_ms_per_frame']:.1f} ms/frame", ""),
             ("tracking: whole video", "", f"{1000 / t['video_fps']:.1f} ms/frame", f"{t['video_fps']:.1f} frames/s")]
    r = results["raster"]
    for mesh in r["meshes"]:
        rows.append((f"rasterize ({mesh['faces']:,} faces)", f"{r['size']}x{r['size']}",
                     f"{mesh['rasterize_ms'][1]:.1f} ms", ""))
    s = results["splat"]
    rows += [("splat 10k Gaussians x 16 channels", f"{s['size']}x{s['size']}, forward",
              f"{s['torch_cpu_forward_ms']:.1f} ms", ""),
             ("splat 10k Gaussians x 16 channels", "forward + backward", f"{s['torch_cpu_forward_backward_ms']:.1f} ms", "")]
    y = results["synth"]
    rows.append(("synthetic heads", f"{y['size']}x{y['size']}, rendering", f"{1000 / y['render_fps']:.1f} ms/frame",
                 f"{y['render_fps']:.1f} frames/s"))
    a = results["animate"]
    setting = f"{a['model']}, {a['resolution']}x{a['resolution']}"
    rows += [("animate: control maps", setting, f"{a['control_ms_per_frame']:.1f} ms/frame", ""),
             ("animate: one denoising step", setting, f"{a['denoise_step_ms_per_frame']:.1f} ms/frame", ""),
             ("animate: whole frame", f"{setting}, {a['steps']} step(s)", f"{1000 * a['seconds_per_frame']:.1f} ms/frame",
              f"{a['frames_per_s']:.1f} frames/s")]
    return rows


# name -> function(size=None, frames=None) that prints its figures and returns them as a dict.
# Each part of onehead registers its benchmark here; `onehead bench NAME` runs one.
BENCHMARKS = {
    "track": report_track,
    "raster": report_raster,
    "synth": report_synth,
    "animate": report_animate,
    "splat": report_splat,
    "all": report_all,
}


def run_bench(what: str, size: int | None = None, frames: int | None = None) -> dict:
    if what not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {what!r}; choose from {sorted(BENCHMARKS)}")
    return BENCHMARKS[what](size=size, frames=frames)
