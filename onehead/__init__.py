"""onehead: 3D-aware head avatars from one portrait."""

from onehead.errors import CheckpointError, ConfigError, MediaReadError, NoFaceError, OneheadError

__version__ = "0.1.0"

__all__ = [
    "OneheadError",
    "MediaReadError",
    "NoFaceError",
    "CheckpointError",
    "ConfigError",
]
