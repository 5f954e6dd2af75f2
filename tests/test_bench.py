"""`onehead bench gpu` on CPU (reduced sizes, CUDA-only rows skipped), onehead.machine, and the
public rasterizer piece the benchmarks use. Figures are printed, never asserted."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from onehead import bench
from onehead.errors import ConfigError

# Smaller than the CPU default (128x128, 6 frames) to keep the test short; the same rows.
TEST_SIZES = dict(resolution=64, frames=2, steps=(1, 2), train_batches=(1, 2), gaussians=500, uv_resolution=32,
                  repeats=1)


THREADS = torch.get_num_threads()


@pytest.fixture(scope="module")
def gpu_report():
    sizes = replace(bench.GpuBenchSizes.for_device("cpu"), **TEST_SIZES)
    return bench.bench_gpu(sizes=sizes, device="cpu")


def _row(report, part: str) -> tuple:
    matches = [row for row in report["rows"] if row[0] == part]
    assert len(matches) == 1, (part, [row[0] for row in report["rows"]])
    return matches[0]


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", text.replace(",", ""))]


def test_gpu_bench_is_registered_for_the_cli():
    assert bench.BENCHMARKS["gpu"] is bench.report_gpu


def test_gpu_bench_on_cpu_says_reduced_and_skips_cuda_rows(gpu_report):
    r = gpu_report
    assert r["reduced"] and r["device"] == "cpu"
    assert "reduced sizes on CPU" in r["title"] and "64x64" in r["title"]
    for part in ("splat: gsplat.rasterization (CPU)", "splat: gsplat vs torch, largest abs. difference",
                 "animate (xformers)", "training step, batch 1 (bf16 autocast)",
                 "training step, batch 2 (bf16 autocast)"):
        assert _row(r, part)[2] == "skipped: needs CUDA", part


def test_gpu_bench_on_cpu_times_every_other_row(gpu_report):
    r = gpu_report
    splat = _row(r, "splat: onehead torch splatter (CPU)")
    assert splat[1] == "500 Gaussians x 16 channels, 64x64"
    assert re.fullmatch(r"forward [\d.]+ ms, forward\+backward [\d.]+ ms", splat[2])
    meshes = [row for row in r["rows"] if row[0].startswith("rasterize_mesh (CPU), ")]
    faces = [int(row[0].split(", ")[1].split()[0].replace(",", "")) for row in meshes]
    assert len(faces) == 2 and 9_000 < faces[0] < 11_000 and faces[1] == 4 * faces[0]  # ~10k and ~40k
    for row in meshes:
        assert re.fullmatch(r"forward [\d.]+ ms, forward\+backward [\d.]+ ms", row[2])
    for batch in (1, 2):
        step = _row(r, f"training step, batch {batch} (fp32)")
        assert re.fullmatch(r"[\d.]+ s per step \([\d.]+ samples/s\)", step[2])
    assert _row(r, "animate: control maps (head model + Gaussian splat)")[2].endswith("ms/frame")
    assert _row(r, "animate (SDPA): ReferenceNet pass")[2].endswith("ms per clip")
    for part in ("animate (SDPA): 1 DDIM step", "animate (SDPA): 2 DDIM steps"):
        row = _row(r, part)
        assert row[1] == "2 frames, 64x64, fp32"
        assert re.fullmatch(r"[\d.]+ s/frame \([\d.]+ frames/s\)", row[2])
        assert all(x > 0 for x in _numbers(row[2]))
        assert row[3] == "n/a (CPU)"
    assert not [row for row in r["rows"] if "failed" in row[2] or "out of" in row[2]]


def test_gpu_bench_prints_one_markdown_table_with_the_machine_line(gpu_report, capsys, monkeypatch):
    monkeypatch.setattr(bench, "bench_gpu", lambda size=None, frames=None: gpu_report)
    bench.run_bench("gpu")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"**{gpu_report['title']}**"
    assert any(line.startswith("machine: ") and "no CUDA device" in line for line in lines)
    table = [line for line in lines if line.startswith("|")]
    assert table[:2] == ["| part | setting | result | peak GPU memory |", "|---|---|---|---|"]
    assert len(table) == 2 + len(gpu_report["rows"])
    assert all(line.count("|") == 5 for line in table)  # 4 cells, no stray pipes
    # one table: its lines are contiguous
    first = lines.index(table[0])
    assert lines[first:first + len(table)] == table
    assert re.search(r"wall time [\d.]+ s", out)


def test_gpu_bench_runs_on_one_thread_and_restores_the_setting(gpu_report):
    assert " 1 torch threads" in gpu_report["machine"]  # the reduced run's setting, see GpuBenchSizes.threads
    assert torch.get_num_threads() == THREADS


def test_gpu_bench_rejects_sizes_the_animator_cannot_take():
    sizes = replace(bench.GpuBenchSizes.for_device("cpu"), **TEST_SIZES)
    with pytest.raises(ConfigError, match="multiple of 32"):
        bench.bench_gpu(size=48, sizes=sizes, device="cpu")


def test_gpu_bench_sizes_by_device():
    full, reduced = bench.GpuBenchSizes.for_device("cuda"), bench.GpuBenchSizes.for_device("cpu")
    assert not full.reduced and full.resolution == 512 and full.steps == (1, 4, 10) and full.train_batches == (1, 4)
    assert full.unet["block_out_channels"] == (320, 640, 1280, 1280) and full.unet["cross_attention_dim"] == 768
    assert full.unet["attention_head_dim"] == 8 and full.unet["layers_per_block"] == 2
    assert full.vae["block_out_channels"] == (128, 256, 512, 512)
    assert reduced.reduced and reduced.resolution < full.resolution
    assert reduced.unet["down_block_types"] == full.unet["down_block_types"]


def test_machine_info_and_line():
    from onehead.machine import machine_info, machine_line

    info = machine_info()
    assert {"platform", "processor", "python", "torch", "cpus", "threads"} <= set(info)
    assert info["torch"] == torch.__version__ and info["threads"] == torch.get_num_threads()
    assert ("gpu" in info) == torch.cuda.is_available()
    line = machine_line(info)
    assert f"torch {torch.__version__}" in line and f"{info['threads']} torch threads" in line
    gpu = machine_line({**info, "gpu": "NVIDIA H200", "gpu_count": 2, "cuda": "12.4"})
    assert gpu.endswith("CUDA 12.4: NVIDIA H200 x2")


def test_visible_faces_is_rasterize_mesh_visibility(head):
    from onehead.camera import default_focal, default_world_to_cam, intrinsics
    from onehead.render import rasterize_mesh, visible_faces

    size = 48
    K, world_to_cam = intrinsics(default_focal(size, size), size, size), default_world_to_cam(0.6)
    vertices = head.v_template[None].clone().requires_grad_(True)
    face_index = visible_faces(vertices, head.faces, K, world_to_cam, size, size)
    assert not face_index.requires_grad and face_index.shape == (1, size, size)
    assert (face_index >= 0).any() and (face_index == -1).any()
    assert torch.equal(face_index, rasterize_mesh(vertices, head.faces, K, world_to_cam, size, size).face_index)
    culled = visible_faces(vertices, head.faces, K, world_to_cam, size, size, cull_backfaces=True)
    assert torch.equal(culled, rasterize_mesh(vertices, head.faces, K, world_to_cam, size, size,
                                              cull_backfaces=True).face_index)
    with pytest.raises(ConfigError, match="visible_faces: near"):
        visible_faces(vertices, head.faces, K, world_to_cam, size, size, near=0)


@pytest.mark.parametrize("name", ["avatar", "triplane"])
def test_family_benches_time_every_part(name, capsys):
    """`onehead bench avatar` / `triplane` on 2 frames (figures, never asserted against a speed):
    each part is timed, and the report prints them with the machine."""
    result = bench.BENCHMARKS[name](frames=2)
    parts = (["encode_ms_per_clip", "render_ms_per_frame"] if name == "triplane" else
             ["control_ms_per_frame", "denoise_step_ms_per_frame", "decode_ms_per_frame", "train_step_ms"])
    assert result["frames"] == 2 and all(result[key] > 0 for key in parts + ["seconds_per_frame"])
    assert result["frames_per_s"] == pytest.approx(1 / result["seconds_per_frame"])
    printed = capsys.readouterr().out
    assert f"onehead bench {name}" in printed and result["machine"] in printed


def test_triplane_bench_sizes_are_the_presets():
    """`onehead bench triplane --size S` times the preset of that output size; others are refused."""
    with pytest.raises(ConfigError, match="64, 256, 512"):
        bench.bench_triplane(size=100, frames=2)
