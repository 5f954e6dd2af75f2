"""Training state as plain tensors and JSON: RNG states and optimizer state dicts (no pickle)."""

from __future__ import annotations

import contextlib
import json
import random

import numpy as np
import torch


def rng_state_tensors() -> dict[str, torch.Tensor]:
    """torch (CPU and CUDA), numpy and python RNG states as plain tensors (for safetensors)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_meta": torch.tensor([pos, has_gauss, cached], dtype=torch.float64),
        "python_mt": torch.tensor(mt, dtype=torch.int64),
        "python_meta": torch.tensor([version, gauss is not None, gauss or 0.0], dtype=torch.float64),
    }
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = state
    return tensors


def set_rng_state_tensors(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch"])
    pos, has_gauss, cached = tensors["numpy_meta"].tolist()
    np.random.set_state(("MT19937", tensors["numpy_keys"].numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    version, has_next, gauss = tensors["python_meta"].tolist()
    random.setstate((int(version), tuple(tensors["python_mt"].tolist()), gauss if has_next else None))
    if torch.cuda.is_available():
        cuda = [tensors[f"cuda_{i}"] for i in range(torch.cuda.device_count()) if f"cuda_{i}" in tensors]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def rng_preserved():
    """Run a block (validation) without moving any global RNG of the training run."""
    state = rng_state_tensors()
    try:
        yield
    finally:
        set_rng_state_tensors(state)


def optimizer_to_safetensors(state_dict: dict) -> tuple[dict, dict]:
    """An optimizer state_dict as (tensors, metadata): tensors under `state.<param>.<key>`."""
    tensors, scalars = {}, {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    metadata = {"param_groups": json.dumps(state_dict["param_groups"]), "scalars": json.dumps(scalars)}
    return tensors, metadata


def optimizer_from_safetensors(tensors: dict, metadata: dict) -> dict:
    state: dict = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in json.loads(metadata["scalars"]).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = json.loads(metadata["param_groups"])
    for group in groups:  # JSON turned tuples (betas) into lists
        for key, value in group.items():
            if key != "params" and isinstance(value, list):
                group[key] = tuple(value)
    return {"state": state, "param_groups": groups}
