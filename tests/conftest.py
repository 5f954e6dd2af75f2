"""Shared, session-scoped fixtures: head models, the carphone clip and two portrait trackings.

The open head model is generated once into onehead's normal cache (about 3 s the first
time) and reused; the portrait trackings are computed once and shared by every test file.
"""

from __future__ import annotations

import pytest

from onehead.errors import MediaReadError


@pytest.fixture(scope="session")
def head():
    """onehead's open head model with the default 100 shape / 50 expression components."""
    from onehead.head.model import load_head_model

    return load_head_model("basic")


@pytest.fixture(scope="session")
def head_full():
    """The open head model with every component (300 shape, 100 expression)."""
    from onehead.head.model import load_head_model

    return load_head_model("basic", num_shape=300, num_expression=100)


@pytest.fixture(scope="session")
def carphone():
    """Path to the real 120-frame carphone clip; skipped (with the reason) when unavailable."""
    from onehead.data.samples import carphone_path

    try:
        return carphone_path()
    except MediaReadError as exc:
        pytest.skip(str(exc))


def _track_sample(name, head):
    from onehead.data.samples import sample_image
    from onehead.tracking.tracker import TrackOptions, track_image

    try:
        image = sample_image(name)
    except MediaReadError as exc:
        pytest.skip(str(exc))
    return track_image(image, head, TrackOptions(progress=False), name=name)


@pytest.fixture(scope="session")
def astronaut_tracking(head):
    return _track_sample("astronaut", head)


@pytest.fixture(scope="session")
def grace_tracking(head):
    return _track_sample("grace_hopper", head)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module of tiny models: they gain nothing from two, and on a busy
    2-core machine the thread pool's waiting made such files up to 15 times slower. Use it with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
