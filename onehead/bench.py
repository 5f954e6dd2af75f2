"""`onehead bench ...`: speed figures (printed, never asserted in tests)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from onehead.machine import machine_line


def _benchmark_video(size: int, frames: int) -> tuple[np.ndarray, str]:
    """A real talking head (the carphone clip) letterboxed to size x size; a moving portrait otherwise."""
    import cv2

    from onehead.data.images import letterbox
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
    out = letterbox(clip, size)
    reps = int(np.ceil(frames / len(out)))
    looped = np.concatenate([out, out[::-1]] * reps)[:frames]  # ping-pong keeps the motion continuous
    return looped, source


def bench_track(size: int = 512, frames: int = 120) -> dict:
    from onehead.data.samples import astronaut
    from onehead.head.model import load_head_model
    from onehead.tracking.stability import stability
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
        "machine": machine_line(), "video": f"{frames} frames at {size}x{size}: {source}",
        "faces_found": int(tracking.valid.sum()),
        "landmarks_ms_per_frame": 1000 * detections.seconds / frames,
        "fit_ms_per_frame": 1000 * fit_seconds / frames,
        "video_fps": frames / total,
        "mean_fit_error_iod": float(np.nanmean(tracking.fit_error)),
        "image_detect_ms": 1000 * det_s, "image_fit_ms": 1000 * fit_s,
        **stability(tracking, head),
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
    print(f"  jitter (mean 2nd difference / eye distance): reported 68 points {r['jitter_fit']:.4f}, "
          f"mediapipe's 68 {r['jitter_mediapipe']:.4f}; mesh vertices {r['jitter_vertices_mm']:.2f} mm")
    print(f"  mouth opening vs mediapipe's: r {r['mouth_r']:.3f}, lag {r['mouth_lag_frames']} frames "
          f"(r {r['mouth_r_at_lag']:.3f} there)")
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

    times = _run_times(once, scene["means"].device, repeats, warmup=2)
    return 1000 * float(np.median(times)), 1000 * min(times)


def bench_splat(size: int | None = None, frames: int | None = None) -> dict:
    """Splat 10k 16-channel Gaussians on a head shell: torch backend on CPU at `size` (256); with a
    GPU also gsplat.rasterization (and the torch backend) on CUDA at 512 x 512. frames: timed repeats."""
    from onehead.camera import default_focal, default_world_to_cam, intrinsics

    size, repeats = size or 256, frames or 20
    K, world_to_cam = intrinsics(default_focal(size, size), size, size)[None], default_world_to_cam(batch=1)
    scene = _head_shell_scene()
    result = {"machine": machine_line(), "size": size, **_splat_statistics(scene, K, world_to_cam, size)}
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
    return {"machine": machine_line(), "size": size, "frames": summary["frames_rendered"],
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


def _raster_scene(size: int, device="cpu", subdivided: bool = True):
    """The open head model (~10k faces) and, if asked, its midpoint subdivision (~40k) on `device`,
    with K and world_to_cam framing the head over about 40% of a size x size image."""
    from onehead.camera import default_focal, default_world_to_cam, intrinsics
    from onehead.head.model import load_head_model

    head = load_head_model("basic")
    K = intrinsics(default_focal(size, size), size, size)
    world_to_cam = default_world_to_cam(0.6)
    world_to_cam[1, 3] -= 0.03  # frames the head so that it covers about 40% of the image
    meshes = {"head": (head.v_template, head.faces)}
    if subdivided:
        meshes["head, subdivided"] = _subdivide(*meshes["head"])
    meshes = {name: (v.to(device), f.to(device)) for name, (v, f) in meshes.items()}
    return meshes, K.to(device), world_to_cam.to(device)


def bench_raster(size: int | None = None, frames: int | None = None) -> dict:
    """rasterize_mesh on the open head model (~10k faces) and its midpoint subdivision (~40k) on CPU."""
    from onehead.render import rasterize_mesh, visible_faces

    size, runs = size or 512, frames or 20
    meshes, K, world_to_cam = _raster_scene(size)
    results = []
    for name, (vertices, faces) in meshes.items():
        vertices = vertices[None]
        fragments = rasterize_mesh(vertices, faces, K, world_to_cam, size, size)
        tracked = vertices.clone().requires_grad_(True)

        def forward_backward():
            fragments = rasterize_mesh(tracked, faces, K, world_to_cam, size, size)
            (fragments.depth.sum() + fragments.bary[..., 0].sum()).backward()

        results.append({
            "mesh": name, "faces": len(faces), "coverage": float(fragments.mask.float().mean()),
            # the no-grad visibility pass alone, without barycentrics and depth
            "visibility_ms": _time_ms(lambda: visible_faces(vertices, faces, K, world_to_cam, size, size), runs),
            "rasterize_ms": _time_ms(lambda: rasterize_mesh(vertices, faces, K, world_to_cam, size, size), runs),
            "rasterize_grad_ms": _time_ms(lambda: rasterize_mesh(tracked, faces, K, world_to_cam, size, size), runs),
            "forward_backward_ms": _time_ms(forward_backward, runs),
        })
    return {"machine": machine_line(), "size": size, "runs": runs, "meshes": results}


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


def _synthetic_self_reenactment(head, frames: int, size: int):
    """(Reference, Motion) of a synthetic head driven by its own motion: frame 0 and every frame at
    their cameras (what bench animate and bench triplane time a one-shot family on)."""
    import tempfile

    from onehead.data.sequence import open_sequence
    from onehead.data.synthetic import SynthOptions, synthesize
    from onehead.pipelines.reenactment import driving_motion, prepare_reference

    with tempfile.TemporaryDirectory() as out:
        synthesize(head, out, SynthOptions(identities=1, sequences=1, frames=frames, size=size, progress=False))
        view = open_sequence(Path(out) / "id000_s00").views["cam00"]
        reference, tracking = view.frame(0), view.tracking
    ref = prepare_reference(reference, head, size, tracking)
    return ref, driving_motion(tracking, ref, head, size, camera="driving")


def bench_animate(size: int | None = None, frames: int | None = None) -> dict:
    """Animator speed: the embedded default model at its default steps on a synthetic driving
    sequence. The whole frame (control maps, warp, ReferenceNet, every step, decoding and
    paste-back) per frame, and each part on its own."""
    from onehead.head.model import load_head_model
    from onehead.pipelines import Animator
    from onehead.pipelines.reenactment import Motion, paste_back

    frames = frames or 32
    head = load_head_model("basic")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    animator = Animator.from_pretrained(head=head).to(device)
    model, settings = animator.model, animator.inference
    resolution = animator.resolution
    ref, motion = _synthetic_self_reenactment(head, frames, resolution)
    animator.reenact(ref, Motion(motion.tracking.select(slice(0, 4)), None))  # warm-up
    start = time.perf_counter()
    animator.reenact(ref, motion)
    seconds = time.perf_counter() - start

    params, K, w2c = animator.motion_inputs(motion)
    reference_inputs = animator.reference_inputs(ref)
    parts = {}

    def timed(name, fn):
        start = time.perf_counter()
        value = fn()
        parts[name] = time.perf_counter() - start
        return value

    with torch.no_grad():
        guide = timed("control", lambda: model.control_maps(params, K, w2c, reference_inputs))
        warp = base = None
        if model.config.correct_warp:
            base = timed("warp", lambda: model.warp_base(reference_inputs, params, K, w2c,
                                                         mouth_interior=settings.mouth_interior,
                                                         pin_neck=settings.pin_neck))
            warp = model.warp_condition(base)[1]
        window = min(frames, settings.window)
        latent = resolution // model.codec.factor
        latents = torch.zeros(window, model.codec.latent_channels, latent, latent, device=device)
        context = model.context(settings.domain)
        timed("reference", lambda: model.run_reference(model.codec.encode(reference_inputs.image * 2 - 1), context))
        step_times = []
        for _ in range(5):
            start = time.perf_counter()
            model.denoise(latents, torch.full((window,), 999, device=device), context.expand(window, -1, -1),
                          guide[:window], None if warp is None else warp[:window])
            if device.type == "cuda":
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - start)
        model.bank.clear()
        all_latents = torch.zeros(frames, model.codec.latent_channels, latent, latent, device=device)
        decoded = timed("decode", lambda: model.codec.decode(all_latents))
        if settings.background == "reference":  # the region as reenact makes it
            timed("paste", lambda: paste_back(decoded, reference_inputs.image[0], animator.background_region(
                ref, motion, base, settings.background_margin).to(device)))
    per_frame = {f"{name}_ms_per_frame": 1000 * value / frames for name, value in parts.items() if name != "reference"}
    return {"machine": machine_line(), "model": f"embedded default on {device.type}",
            "resolution": resolution, "steps": settings.steps, "frames": frames,
            "warp_guidance": model.config.warp_guidance, "correct_warp": model.config.correct_warp,
            **per_frame, "reference_ms_per_clip": 1000 * parts["reference"],
            "denoise_step_ms_per_frame": 1000 * float(np.median(step_times)) / window,
            "seconds_per_frame": seconds / frames, "frames_per_s": frames / seconds}


def report_animate(size: int | None = None, frames: int | None = None) -> dict:
    r = bench_animate(size, frames)
    print(f"onehead bench animate  ({r['machine']})")
    print(f"  {r['model']} Animator at {r['resolution']}x{r['resolution']}, {r['steps']} DDIM step(s), {r['frames']} frames"
          f"{', warp guidance' if r['warp_guidance'] else ''}{', correcting the mesh warp' if r['correct_warp'] else ''}:")
    rows = [("control maps (Gaussian splatting)", "control_ms_per_frame", "ms/frame"),
            ("mesh warp (rasterize, fill)", "warp_ms_per_frame", "ms/frame"),
            ("ReferenceNet (once per clip)", "reference_ms_per_clip", "ms/clip"),
            ("one denoising step (UNet with shared attention)", "denoise_step_ms_per_frame", "ms/frame"),
            ("decoding", "decode_ms_per_frame", "ms/frame"),
            ("paste-back (head region, blend)", "paste_ms_per_frame", "ms/frame")]
    for label, key, unit in rows:
        if key in r:
            print(f"    {label:<50s} {r[key]:8.2f} {unit}")
    print(f"    whole frame  {r['seconds_per_frame']:.3f} s ({r['frames_per_s']:.1f} frames/s)")
    if not torch.cuda.is_available():
        print("  base at 512x512 on a GPU: no GPU on this machine")
    return r


def bench_avatar(size: int | None = None, frames: int | None = None) -> dict:
    """DiffusionAvatars speed: the embedded avatar (or a random tiny one of the same shape) rendering
    a synthetic motion at its default steps: the whole frame, each part, and one training step."""
    import tempfile

    from onehead.data.datasets import FrameDataset, select_frames
    from onehead.data.synthetic import SynthOptions, synthesize
    from onehead.head.model import load_head_model
    from onehead.pipelines.diffusion_avatar import DiffusionAvatar, default_avatar_dir
    from torch.utils.data import default_collate

    from onehead.training.person_avatar import avatar_loss

    frames = frames or 16
    head = load_head_model("basic")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    embedded = default_avatar_dir()
    if embedded is not None and size is None:
        avatar, what = DiffusionAvatar.from_pretrained(embedded, head=head), "embedded avatar"
    else:
        overrides = {"resolution": size} if size else {}
        avatar, what = DiffusionAvatar.from_preset("tiny", head, **overrides), "tiny (random weights)"
    avatar.to(device)
    model, resolution = avatar.model, avatar.resolution
    with tempfile.TemporaryDirectory() as out:
        synthesize(head, out, SynthOptions(identities=1, sequences=1, frames=frames, size=resolution, progress=False))
        keys = select_frames(out)
        batch = default_collate([FrameDataset(keys, resolution)[i] for i in range(min(4, len(keys)))])
        tracking = FrameDataset(keys, resolution).view(keys[0]).tracking
    avatar.render(tracking.select(slice(0, 2)))  # warm-up
    start = time.perf_counter()
    avatar.render(tracking)
    seconds = time.perf_counter() - start
    params, K, w2c = avatar.frame_inputs(tracking)
    window = min(frames, avatar.settings.batch)
    part = {k: v[:window] for k, v in params.items()}
    with torch.no_grad():
        control_s = _seconds(lambda: model.control(part, K[:window], w2c[:window]), device, repeats=3)
        control, code = model.control(part, K[:window], w2c[:window]), model.expression_code(part)
        latent = resolution // model.codec.factor
        latents = torch.zeros(window, model.codec.latent_channels, latent, latent, device=device)
        t = torch.full((window,), 999, device=device)
        step_s = _seconds(lambda: model.predict(latents, t, control, code), device, repeats=3)
        decode_s = _seconds(lambda: model.codec.decode(latents), device, repeats=3)
    model.train()
    model.set_trainable()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])

    def train_step():
        optimizer.zero_grad()
        avatar_loss(model, _on(batch, device), torch.Generator(device="cpu").manual_seed(0)).backward()
        optimizer.step()

    train_s = _seconds(train_step, device, repeats=3)
    model.eval()
    return {"machine": machine_line(), "model": f"{what} on {device.type}", "resolution": resolution,
            "steps": avatar.settings.steps, "frames": frames, "control_ms_per_frame": 1000 * control_s / window,
            "denoise_step_ms_per_frame": 1000 * step_s / window, "decode_ms_per_frame": 1000 * decode_s / window,
            "train_step_ms": 1000 * train_s, "train_batch": len(batch["image"]),
            "seconds_per_frame": seconds / frames, "frames_per_s": frames / seconds}


def report_avatar(size: int | None = None, frames: int | None = None) -> dict:
    r = bench_avatar(size, frames)
    print(f"onehead bench avatar  ({r['machine']})")
    print(f"  {r['model']} DiffusionAvatar at {r['resolution']}x{r['resolution']}, {r['steps']} DDIM step(s), "
          f"{r['frames']} frames:")
    rows = [("mesh buffers + TriPlane + ambient features", "control_ms_per_frame", "ms/frame"),
            ("one denoising step (ControlNet + UNet + expression attention)", "denoise_step_ms_per_frame", "ms/frame"),
            ("decoding", "decode_ms_per_frame", "ms/frame")]
    for label, key, unit in rows:
        print(f"    {label:<62s} {r[key]:8.2f} {unit}")
    print(f"    whole frame  {r['seconds_per_frame']:.3f} s ({r['frames_per_s']:.1f} frames/s)")
    print(f"    one training step (batch {r['train_batch']}, loss + backward + AdamW)  {r['train_step_ms']:.0f} ms")
    return r


def bench_triplane(size: int | None = None, frames: int | None = None) -> dict:
    """Tri-plane mode speed: the source encoding once per clip, then per frame the expression branch,
    the volume rendering and the super-resolution. Without `size`: the embedded model (random tiny
    weights when this install has none). With `size`: the preset of that output size with random
    weights (speed does not depend on the weights): 64 tiny, 256 small, 512 base."""
    from onehead.errors import ConfigError
    from onehead.head.model import load_head_model
    from onehead.models.triplane import PRESETS
    from onehead.pipelines.triplane import TriplaneAnimator, default_triplane_dir

    frames = frames or 16
    head = load_head_model("basic")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    by_size = {config.resolution: name for name, (config, _) in PRESETS.items()}
    if size is not None and size not in by_size:
        raise ConfigError(f"bench triplane --size: one of the presets' sizes {sorted(by_size)}, got {size}")
    if size is None and default_triplane_dir() is not None:
        animator, what = TriplaneAnimator.from_pretrained(default_triplane_dir(), head=head), "embedded triplane-tiny"
    else:
        name = by_size.get(size, "tiny")
        animator, what = TriplaneAnimator.from_preset(name, head), f"{name} (random weights)"
    animator.to(device)
    model, settings, resolution = animator.model, animator.inference, animator.resolution
    ref, motion = _synthetic_self_reenactment(head, frames, resolution)
    animator.reenact(ref, motion)  # warm-up
    start = time.perf_counter()
    animator.reenact(ref, motion)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        source = animator.reference_inputs(ref)
        encode_s = _seconds(lambda: model.encode_source(*source), device, repeats=3)
        cache = model.encode_source(*source)
        params, K, w2c = animator.motion_inputs(motion)
        batch = min(frames, settings.frames_per_batch)
        part = {k: v[:batch] for k, v in params.items()}
        render_s = _seconds(lambda: model.render(cache, part, K[:batch], w2c[:batch], coarse=settings.coarse,
                                                 fine=settings.fine, chunk=settings.chunk), device, repeats=3)
    return {"machine": machine_line(), "model": f"{what} on {device.type}", "resolution": resolution,
            "render_resolution": model.config.render_resolution, "samples": f"{settings.coarse}+{settings.fine}",
            "frames": frames, "encode_ms_per_clip": 1000 * encode_s, "render_ms_per_frame": 1000 * render_s / batch,
            "seconds_per_frame": seconds / frames, "frames_per_s": frames / seconds}


def report_triplane(size: int | None = None, frames: int | None = None) -> dict:
    r = bench_triplane(size, frames)
    print(f"onehead bench triplane  ({r['machine']})")
    print(f"  {r['model']} tri-plane Animator at {r['resolution']}x{r['resolution']} (volume rendering at "
          f"{r['render_resolution']}x{r['render_resolution']}, {r['samples']} samples per ray), {r['frames']} frames:")
    print(f"    source encoding (canonical, appearance planes, backdrop; once per clip)  {r['encode_ms_per_clip']:8.1f} ms")
    print(f"    per frame: expression planes, volume rendering, super-resolution  {r['render_ms_per_frame']:8.1f} ms")
    print(f"    whole clip per frame (encoding included)  {r['seconds_per_frame']:.3f} s ({r['frames_per_s']:.1f} frames/s)")
    return r


# =============================================================================== onehead bench gpu
# One prepared run for a machine with one GPU (H100/H200; a few minutes), printing one markdown
# table. On CPU it runs the same rows at reduced sizes and skips the CUDA-only ones, saying so.

# Stable Diffusion 1.5's UNet and VAE configs (random weights: nothing is downloaded).
SD15_UNET = dict(
    in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, mid_block_scale_factor=1, center_input_sample=False)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    act_fn="silu", norm_num_groups=32, scaling_factor=0.18215)
# The same block layout (4 levels, cross-attention in the first three, VAE factor 8) at toy widths.
TINY_SD_UNET = {**SD15_UNET, "layers_per_block": 1, "block_out_channels": (32, 32, 64, 64), "cross_attention_dim": 64}
TINY_SD_VAE = {**SD_VAE, "layers_per_block": 1, "block_out_channels": (16, 16, 32, 32), "norm_num_groups": 8}


@dataclass(frozen=True)
class GpuBenchSizes:
    """What `onehead bench gpu` runs. `for_device` picks the full (CUDA) or the reduced (CPU) set."""

    resolution: int = 512  # splat, rasterizer and Animator image size (a multiple of 32)
    frames: int = 14  # frames of the animated clip (the base preset's temporal window)
    steps: tuple = (1, 4, 10)  # DDIM steps of the timed sampling runs
    train_batches: tuple = (1, 4)  # batch sizes of the timed training steps
    gaussians: int = 10_000  # Gaussians of the gsplat-vs-torch scene (16 feature channels)
    uv_resolution: int = 256  # the Animator's UV Gaussian field
    unet: dict = field(default_factory=lambda: dict(SD15_UNET))
    vae: dict = field(default_factory=lambda: dict(SD_VAE))
    unet_label: str = "SD-1.5-shaped UNets"
    subdivided: bool = True  # also rasterize the ~40k-face subdivided head
    repeats: int = 10  # timed runs of the short rows (splat, rasterizer), after warm-up
    sample_repeats: int = 2  # timed runs of each sampling row
    train_repeats: int = 2  # timed training steps, after one warm-up step
    reduced: bool = False  # smaller than the full GPU run (said in the table's title)
    threads: int | None = None  # torch CPU threads during the run (None: leave as set). The reduced
    # CPU run uses 1: its toy-sized ops gain nothing from more, and on a busy machine every op of a
    # multi-threaded run waits for its slowest thread (60x slower on a loaded 2-core machine)

    @classmethod
    def for_device(cls, device) -> "GpuBenchSizes":
        if torch.device(device).type == "cuda":
            return cls()
        return cls(resolution=128, frames=6, gaussians=2_000, uv_resolution=64, unet=dict(TINY_SD_UNET),
                   vae=dict(TINY_SD_VAE), unet_label="tiny SD-shaped UNets", repeats=3, sample_repeats=1,
                   train_repeats=1, reduced=True, threads=1)


class _PeakMemory:
    """`with _PeakMemory(device) as peak:` ... `peak.text`: torch.cuda.max_memory_allocated over the block."""

    def __init__(self, device: torch.device):
        self.device, self.bytes = device, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device)
        return False

    @property
    def text(self) -> str:
        return "n/a (CPU)" if self.bytes is None else f"{self.bytes / 2**30:.2f} GiB"


def _run_times(fn, device: torch.device, repeats: int = 1, warmup: int = 1) -> list[float]:
    """Wall seconds of each of `repeats` runs of fn() after `warmup` runs, synchronising CUDA."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _seconds(fn, device: torch.device, repeats: int = 1, warmup: int = 1) -> float:
    """Median wall seconds of fn() over `repeats` runs after `warmup` runs."""
    return float(np.median(_run_times(fn, device, repeats, warmup)))


def _failure(exc: BaseException) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "out of GPU memory"
    first = (str(exc).splitlines() or [""])[0][:160]
    return f"failed: {type(exc).__name__}: {first}".replace("|", "/")


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _autocast(device: torch.device, dtype):
    """bf16 autocast on CUDA; a no-op context for dtype None."""
    import contextlib

    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _gpu_splat_rows(sizes: GpuBenchSizes, device: torch.device) -> list[tuple]:
    """gsplat.rasterization against onehead's torch splatter on one scene: times and differences."""
    from onehead.camera import default_focal, default_world_to_cam, intrinsics
    from onehead.render import splat_features

    size, where = sizes.resolution, device.type.upper()
    K = intrinsics(default_focal(size, size), size, size)[None].to(device)
    world_to_cam = default_world_to_cam(batch=1).to(device)
    scene = _head_shell_scene(sizes.gaussians, device=device)
    setting = f"{sizes.gaussians:,} Gaussians x 16 channels, {size}x{size}"
    rows, renders = [], {}
    for backend, label in (("gsplat", "gsplat.rasterization"), ("torch", "onehead torch splatter")):
        part = f"splat: {label} ({where})"
        if backend == "gsplat" and device.type != "cuda":
            rows.append((part, setting, "skipped: needs CUDA", ""))
            continue
        try:
            with _PeakMemory(device) as peak:
                forward = _time_splat(scene, K, world_to_cam, size, backend, False, sizes.repeats)[0]
                both = _time_splat(scene, K, world_to_cam, size, backend, True, sizes.repeats)[0]
            with torch.no_grad():
                renders[backend] = splat_features(scene["means"], scene["scales"], scene["opacities"],
                                                  scene["features"], K, world_to_cam, size, size, backend=backend)
            rows.append((part, setting, f"forward {forward:.2f} ms, forward+backward {both:.2f} ms", peak.text))
        except Exception as exc:  # gsplat missing or its CUDA build failing: report, go on
            rows.append((part, setting, _failure(exc), ""))
    part = "splat: gsplat vs torch, largest abs. difference"
    if len(renders) == 2:
        a, b = renders["gsplat"], renders["torch"]
        features = float((a.features - b.features).abs().max())
        alpha = float((a.alpha - b.alpha).abs().max())
        rows.append((part, setting, f"features {features:.2e}, alpha {alpha:.2e} (feature range "
                                    f"{float(b.features.abs().max()):.2f})", ""))
    else:
        reason = "skipped: needs CUDA" if device.type != "cuda" else "skipped: a backend failed"
        rows.append((part, setting, reason, ""))
    return rows


def _gpu_raster_rows(sizes: GpuBenchSizes, device: torch.device) -> list[tuple]:
    """rasterize_mesh (torch backend) forward and forward+backward on the head meshes."""
    from onehead.render import rasterize_mesh

    size, where = sizes.resolution, device.type.upper()
    meshes, K, world_to_cam = _raster_scene(size, device, sizes.subdivided)
    rows = []
    for vertices, faces in meshes.values():
        vertices = vertices[None]
        tracked = vertices.clone().requires_grad_(True)

        def forward_backward():
            fragments = rasterize_mesh(tracked, faces, K, world_to_cam, size, size)
            (fragments.depth.sum() + fragments.bary[..., 0].sum()).backward()

        part = f"rasterize_mesh ({where}), {len(faces):,} faces"
        try:
            with _PeakMemory(device) as peak:
                forward = _seconds(lambda: rasterize_mesh(vertices, faces, K, world_to_cam, size, size),
                                   device, sizes.repeats, warmup=2)
                both = _seconds(forward_backward, device, sizes.repeats, warmup=2)
            rows.append((part, f"{size}x{size}, torch backend",
                         f"forward {1000 * forward:.2f} ms, forward+backward {1000 * both:.2f} ms", peak.text))
        except Exception as exc:
            rows.append((part, f"{size}x{size}, torch backend", _failure(exc), ""))
    return rows


def _stand_in_stable_diffusion(directory: Path, sizes: GpuBenchSizes) -> Path:
    """A diffusers-format SD folder (unet/, vae/, scheduler/) with random weights of the given shapes."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=sizes.resolution // 8, **sizes.unet).save_pretrained(directory / "unet")
    AutoencoderKL(sample_size=sizes.resolution, **sizes.vae).save_pretrained(directory / "vae")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(
        directory / "scheduler")
    return directory


def _on(batch, device):
    """A collated batch (nested dicts of tensors) on `device`; other values as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _on(v, device) for k, v in batch.items()}
    return batch


def _sample(animator, reference: torch.Tensor, control: torch.Tensor, steps: int) -> torch.Tensor:
    """reference (1, 3, S, S), control maps (1, T, C, S, S) -> frames, with `steps` DDIM steps."""
    from onehead.config import replace

    return animator.sample(reference, control, replace(animator.inference, steps=steps))


def _training_rows(animator, dataset, sizes: GpuBenchSizes, device: torch.device) -> list[tuple]:
    """loss + backward + AdamW step (stage 1) at each batch size, bf16 autocast and fp32 on CUDA."""
    from torch.utils.data import default_collate

    from onehead.training.gaussian_diffusion_loss import gaussian_diffusion_loss

    size = sizes.resolution
    precisions = [("bf16 autocast", torch.bfloat16), ("fp32", None)] if device.type == "cuda" else [("fp32", None)]
    rows = []
    net = animator.model
    net.set_stage(1)
    net.train()
    for batch_size in sizes.train_batches:
        batch = _on(default_collate([dataset[i % len(dataset)] for i in range(batch_size)]), device)
        setting = f"{size}x{size}, stage 1 (both UNets train), AdamW"
        if device.type != "cuda":
            rows.append((f"training step, batch {batch_size} (bf16 autocast)", setting, "skipped: needs CUDA", ""))
        for label, dtype in precisions:
            part = f"training step, batch {batch_size} ({label})"
            optimizer = torch.optim.AdamW(net.trainable_parameters(), lr=1e-5)
            generator = torch.Generator(device).manual_seed(0)

            def step():
                with _autocast(device, dtype):
                    loss = gaussian_diffusion_loss(net, batch, generator)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            try:
                with _PeakMemory(device) as peak:
                    seconds = _seconds(step, device, sizes.train_repeats, warmup=1)
                rows.append((part, setting, f"{seconds:.3f} s per step ({batch_size / seconds:.1f} samples/s)",
                             peak.text))
            except Exception as exc:
                rows.append((part, setting, _failure(exc), ""))
            finally:
                del optimizer
                net.zero_grad(set_to_none=True)
                net.bank.clear()
                _free(device)
    net.eval()
    return rows


def _use_xformers(net) -> None:
    """xformers for every attention diffusers owns (cross-attention, the VAE); onehead's shared
    self-attention processors (ReferenceNet bank, SDPA) stay as they are. Raises when xformers
    does not import or does not run."""
    import xformers.ops  # noqa: F401
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0, XFormersAttnProcessor

    for unet in (net.denoising_unet, net.reference_unet):
        unet.set_attn_processor({name: XFormersAttnProcessor() if isinstance(p, (AttnProcessor, AttnProcessor2_0))
                                 else p for name, p in unet.attn_processors.items()})
    vae = getattr(net.codec, "vae", None)
    if vae is not None:
        vae.enable_xformers_memory_efficient_attention()


def _sampling_rows(animator, dataset, sizes: GpuBenchSizes, device: torch.device) -> list[tuple]:
    """Control maps, the ReferenceNet pass and whole-clip sampling at each step count, per attention."""
    from torch.utils.data import default_collate

    cuda = device.type == "cuda"
    net = animator.model
    size, frames = sizes.resolution, sizes.frames
    net.eval()
    net.temporal.enabled = True  # as in a stage-2 model
    dtype = torch.bfloat16 if cuda else None
    precision = "bf16" if cuda else "fp32"
    if cuda:  # the networks in bf16 (run under bf16 autocast); head model and Gaussian field stay fp32
        for part in (net.denoising_unet, net.reference_unet, net.codec, net.pose_guider, net.temporal,
                     net.domain_tokens):
            part.to(torch.bfloat16)
    batch = _on(default_collate([dataset[0]]), device)
    reference = batch["reference"]  # (1, 3, H, W)
    setting = f"{frames} frames, {size}x{size}, {precision}"
    rows = []
    with torch.no_grad():
        with _PeakMemory(device) as peak:
            seconds = _seconds(lambda: net.batch_control(batch), device, sizes.repeats, warmup=1)
        rows.append(("animate: control maps (head model + Gaussian splat)",
                     f"{frames} frames, {size}x{size}, fp32, {net.gaussian_field.num_gaussians:,} Gaussians",
                     f"{1000 * seconds / frames:.2f} ms/frame", peak.text))
        control = net.batch_control(batch)[None]  # (1, T, C, H, W)
    modes = [("SDPA", None)]
    if cuda:
        modes.append(("xformers", _use_xformers))
    else:
        rows.append(("animate (xformers)", setting, "skipped: needs CUDA", ""))
    for name, switch in modes:
        if switch is not None:
            try:
                switch(net)
            except Exception as exc:
                rows.append((f"animate ({name})", setting, f"skipped: {name} unavailable ({_failure(exc)})", ""))
                continue
        try:
            with torch.no_grad(), _autocast(device, dtype):
                latents = net.codec.encode(reference * 2 - 1)
                context = net.context(animator.inference.domain, 1)
                with _PeakMemory(device) as peak:
                    seconds = _seconds(lambda: net.run_reference(latents, context), device, sizes.repeats)
                net.bank.clear()
            rows.append((f"animate ({name}): ReferenceNet pass", f"{size}x{size}, {precision}, once per clip",
                         f"{1000 * seconds:.1f} ms per clip", peak.text))
            with _autocast(device, dtype):
                _sample(animator, reference, control[:, :2], 1)  # warm-up
                for steps in sizes.steps:
                    with _PeakMemory(device) as peak:
                        seconds = _seconds(lambda: _sample(animator, reference, control, steps), device,
                                           sizes.sample_repeats, warmup=0)
                    rows.append((f"animate ({name}): {steps} DDIM step{'s' if steps > 1 else ''}", setting,
                                 f"{seconds / frames:.3f} s/frame ({frames / seconds:.2f} frames/s)", peak.text))
        except Exception as exc:
            rows.append((f"animate ({name})", setting, _failure(exc), ""))
        finally:
            net.bank.clear()
            _free(device)
    return rows


def _gpu_animator_rows(sizes: GpuBenchSizes, device: torch.device) -> list[tuple]:
    """The `base` Animator built through its sd_path route from a stand-in SD folder: training
    steps, then sampling (the networks cast to bf16 on CUDA)."""
    import tempfile

    from onehead.data.datasets import ReenactmentDataset
    from onehead.data.synthetic import SynthOptions, synthesize
    from onehead.head.model import load_head_model
    from onehead.pipelines.gaussian_diffusion import GaussianDiffusionAnimator

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames = max(sizes.frames, max(sizes.train_batches))
        synthesize(load_head_model("basic"), tmp / "data",
                   SynthOptions(identities=1, sequences=1, frames=frames, size=sizes.resolution, seed=0,
                                progress=False))
        clips = ReenactmentDataset(tmp / "data", clip_length=sizes.frames, size=sizes.resolution)
        singles = ReenactmentDataset(tmp / "data", clip_length=1, size=sizes.resolution)
        sd = _stand_in_stable_diffusion(tmp / "sd", sizes)
        animator = GaussianDiffusionAnimator.from_preset("base", head=load_head_model("basic"), sd_path=str(sd),
                                                         resolution=sizes.resolution, uv_resolution=sizes.uv_resolution)
        animator.to(device)
        rows = _training_rows(animator, singles, sizes, device)
        rows += _sampling_rows(animator, clips, sizes, device)
    del animator
    _free(device)
    return rows


def bench_gpu(size: int | None = None, frames: int | None = None, *, sizes: GpuBenchSizes | None = None,
              device: str | torch.device | None = None) -> dict:
    """The figures of `onehead bench gpu` as rows (part, setting, result, peak GPU memory) and the
    markdown table. size / frames override the resolution / clip length of `sizes` (by default
    GpuBenchSizes.for_device: full on CUDA, reduced on CPU)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    sizes = sizes or GpuBenchSizes.for_device(device)
    sizes = replace(sizes, resolution=size or sizes.resolution, frames=frames or sizes.frames)
    if sizes.resolution % 32 or sizes.frames < 1:
        from onehead.errors import ConfigError

        raise ConfigError(f"bench gpu: --size must be a multiple of 32 (the VAE's factor 8 x 4) and --frames "
                          f"at least 1, got {sizes.resolution} and {sizes.frames}")
    threads = torch.get_num_threads()
    if sizes.threads:
        torch.set_num_threads(sizes.threads)
    try:
        machine = machine_line()
        start = time.perf_counter()
        rows = _gpu_splat_rows(sizes, device) + _gpu_raster_rows(sizes, device) + _gpu_animator_rows(sizes, device)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        where = f"on {torch.cuda.get_device_name(device)}" + (", reduced sizes" if sizes.reduced else "")
        precision = "bf16"
    else:
        where = "reduced sizes on CPU (no CUDA device: CUDA-only rows skipped)" if sizes.reduced else "on CPU"
        precision = "fp32"
    title = (f"onehead bench gpu, {where}: {sizes.resolution}x{sizes.resolution}, {sizes.unet_label} "
             f"(random weights), {precision}")
    lines = [f"**{title}**", "", f"machine: {machine}", "",
             "| part | setting | result | peak GPU memory |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    lines += ["", f"wall time {seconds:.1f} s"]
    return {"machine": machine, "device": str(device), "reduced": sizes.reduced, "title": title,
            "rows": rows, "table": "\n".join(lines), "seconds": seconds}


def report_gpu(size: int | None = None, frames: int | None = None) -> dict:
    r = bench_gpu(size, frames)
    print(r["table"])
    return r


def report_all(size: int | None = None, frames: int | None = None) -> dict:
    """Every benchmark at its defaults, then one table of the per-part figures."""
    results = {name: BENCHMARKS[name]() for name in ("track", "raster", "splat", "synth", "animate", "avatar",
                                                        "triplane")}
    rows = summary_rows(results)
    print()
    print(f"machine: {machine_line()}")
    print("| part | setting | time | rate |")
    print("|---|---|---|---|")
    for part, setting, figure, rate in rows:
        print(f"| {part} | {setting} | {figure} | {rate} |")
    return {"machine": machine_line(), "rows": rows, "results": results}


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
    rows += [("animate: control maps", setting, f"{a['control_ms_per_frame']:.1f} ms/frame", "")]
    if "warp_ms_per_frame" in a:
        rows.append(("animate: mesh warp", setting, f"{a['warp_ms_per_frame']:.1f} ms/frame", ""))
    rows += [("animate: ReferenceNet", f"{setting}, once per clip", f"{a['reference_ms_per_clip']:.1f} ms", ""),
             ("animate: one denoising step", setting, f"{a['denoise_step_ms_per_frame']:.1f} ms/frame", ""),
             ("animate: whole frame", f"{setting}, {a['steps']} step(s)", f"{1000 * a['seconds_per_frame']:.1f} ms/frame",
              f"{a['frames_per_s']:.1f} frames/s")]
    v = results["avatar"]
    setting = f"{v['model']}, {v['resolution']}x{v['resolution']}"
    rows += [("avatar: buffers and features", setting, f"{v['control_ms_per_frame']:.1f} ms/frame", ""),
             ("avatar: one denoising step", setting, f"{v['denoise_step_ms_per_frame']:.1f} ms/frame", ""),
             ("avatar: whole frame", f"{setting}, {v['steps']} step(s)", f"{1000 * v['seconds_per_frame']:.1f} ms/frame",
              f"{v['frames_per_s']:.1f} frames/s"),
             ("avatar: training step", f"{setting}, batch {v['train_batch']}", f"{v['train_step_ms']:.0f} ms", "")]
    p = results["triplane"]
    setting = f"{p['model']}, {p['resolution']}x{p['resolution']}"
    rows += [("tri-plane: source encoding", f"{setting}, once per clip", f"{p['encode_ms_per_clip']:.1f} ms", ""),
             ("tri-plane: per frame", f"{setting}, {p['samples']} samples", f"{p['render_ms_per_frame']:.1f} ms/frame",
              f"{1000 / p['render_ms_per_frame']:.1f} frames/s")]
    return rows


# name -> function(size=None, frames=None) that prints its figures and returns them as a dict.
# Each part of onehead registers its benchmark here; `onehead bench NAME` runs one.
BENCHMARKS = {
    "track": report_track,
    "raster": report_raster,
    "synth": report_synth,
    "animate": report_animate,
    "avatar": report_avatar,
    "triplane": report_triplane,
    "splat": report_splat,
    "gpu": report_gpu,
    "all": report_all,
}


def run_bench(what: str, size: int | None = None, frames: int | None = None) -> dict:
    if what not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {what!r}; choose from {sorted(BENCHMARKS)}")
    return BENCHMARKS[what](size=size, frames=frames)
