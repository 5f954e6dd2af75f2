"""The one error hierarchy of onehead.

Every error a user can cause (bad file, no face, wrong checkpoint) is a
`OneheadError`. The CLI prints its message on one line and exits with code 2.
Messages say what was wrong, with which file, and what to do.
"""


class OneheadError(Exception):
    """Base class for every error onehead raises on purpose."""


class MediaReadError(OneheadError):
    """An image or video is missing, unreadable or empty."""


class NoFaceError(OneheadError):
    """No face was found where one was needed."""


class CheckpointError(OneheadError):
    """A checkpoint or model file is missing, of the wrong kind, or corrupt."""


class ConfigError(OneheadError):
    """A configuration value or command-line option is invalid."""


class MetricUnavailable(OneheadError):
    """A metric cannot be computed here (its weights or package are absent); the message says why.
    Reports list such a metric as missing with this reason, never as a number."""
