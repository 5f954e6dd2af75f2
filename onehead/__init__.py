"""onehead: 3D-aware head avatars from one portrait.

    from onehead import Animator, PersonAvatar, track, load_tracking, load_head_model

Names are imported on first use, so `import onehead` stays fast (no torch until needed).
"""

from onehead.errors import (
    CheckpointError,
    ConfigError,
    MediaReadError,
    MetricUnavailable,
    NoFaceError,
    OneheadError,
)

__version__ = "0.1.0"

_LAZY = {
    "Animator": "onehead.pipelines.one_shot",
    "AnimationResult": "onehead.pipelines.one_shot",
    "PersonAvatar": "onehead.pipelines.person_avatar",
    "track": "onehead.tracking.tracker",
    "load_tracking": "onehead.data.tracking_file",
    "Tracking": "onehead.data.tracking_file",
    "load_head_model": "onehead.head.model",
}

__all__ = ["OneheadError", "MediaReadError", "NoFaceError", "CheckpointError", "ConfigError", "MetricUnavailable",
           *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'onehead' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
