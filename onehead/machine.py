"""What machine a figure was taken on: one description for eval reports and benchmarks.

    machine_info()  -> {"platform": ..., "python": ..., "torch": ..., "cpus": 2, "threads": 2, ...}
    machine_line()  -> "x86_64, 2 CPUs, 2 torch threads, Linux-..., Python 3.11.9, torch 2.13.0, no CUDA device"
"""

from __future__ import annotations

import os
import platform

import torch


def machine_info() -> dict:
    """Platform, processor, Python and torch versions, CPU count, torch threads; with CUDA also
    the first device's name ("gpu"), the device count ("gpu_count") and torch's CUDA version."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    return info


def machine_line(info: dict | None = None) -> str:
    """machine_info() (or the given dict) as one line for a benchmark's heading."""
    info = info or machine_info()
    if "gpu" in info:
        count = info.get("gpu_count", 1)
        device = f"CUDA {info.get('cuda') or '?'}: {info['gpu']}" + (f" x{count}" if count > 1 else "")
    else:
        device = "no CUDA device"
    return (f"{info['processor']}, {info['cpus']} CPUs, {info['threads']} torch threads, {info['platform']}, "
            f"Python {info['python']}, torch {info['torch']}, {device}")
