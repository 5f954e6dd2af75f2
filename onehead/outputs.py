"""The output policy of every `onehead` command, checked before any work is done.

    check_outputs(outputs=[Output("--out", path, "video")], inputs=[("--reference", ref), ...])

raises ConfigError (the CLI: exit code 2 and one line) when an output path
- has an extension the writer of that kind does not support (the message lists the allowed ones);
- is one of the command's inputs (the same path, a symlink or a hard link to it), lies inside an
  input folder, or holds an input (a folder output that would replace an input's folder);
- is named twice (two outputs of one command onto one path);
- is a folder where a file is written (or a file where a folder is written), or lies under a file;
- cannot be written: the nearest existing folder on its path refuses a new file (checked by
  creating and removing a probe file, so read-only file systems and ACLs count too), or the
  existing file is read-only.

What happens to an existing output: it is replaced atomically (onehead.files: the new file is
written beside it and moved into place when complete), so a failed or interrupted run leaves it
as it was. An input is never overwritten.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from onehead.errors import ConfigError

PathLike = Union[str, os.PathLike]

# what each writer supports (videos: the containers PyAV muxes H.264 and MPEG-4 into; webm and
# gif take neither codec)
VIDEO_OUT: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".avi", ".m4v")
PICTURE_OUT: tuple[str, ...] = (".png", ".jpg", ".jpeg")
KINDS: dict[str, tuple[str, Optional[tuple[str, ...]]]] = {
    "video": ("a video", VIDEO_OUT),
    "picture": ("a picture", PICTURE_OUT),
    "picture or video": ("a picture or a video", PICTURE_OUT + VIDEO_OUT),
    "tracking": ("a tracking file", (".npz",)),
    "report": ("a JSON report", (".json",)),
    "weights": ("a safetensors file", (".safetensors",)),
    "folder": ("a folder", None),  # written inside (demo, fetch): the folder is kept, files in it replaced
    "dataset": ("a dataset folder", None),  # replaced as a whole (synth --overwrite)
}

# said in each command's --help
EXISTING_OUTPUT = ("An existing output file is replaced atomically (a failed or interrupted run leaves it as "
                   "it was); an input is never overwritten")


@dataclass(frozen=True)
class Output:
    option: str  # as the user typed it: "--out", "--vis", "out"
    path: Path
    kind: str  # a key of KINDS

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown output kind {self.kind!r}; one of {', '.join(KINDS)}")
        object.__setattr__(self, "path", Path(os.path.expanduser(str(self.path))))

    @property
    def is_folder(self) -> bool:
        return KINDS[self.kind][1] is None


def check_outputs(outputs: Iterable[Output], inputs: Sequence[tuple[str, Optional[PathLike]]] = ()) -> None:
    """Refuse (ConfigError, one line) any output that breaks the policy in this module's docstring.
    inputs: (option, path) pairs ("" for a positional input); a None path (an option not given) is
    skipped."""
    outputs = list(outputs)
    inputs = [(option, Path(os.path.expanduser(str(path)))) for option, path in inputs if path is not None]
    for out in outputs:
        for option, path in inputs:
            _check_not_input(out, option, path)
        _check_extension(out)
    for i, out in enumerate(outputs):
        for other in outputs[:i]:
            if _same(out.path, other.path):
                raise ConfigError(f"{out.option} {out.path} is also {other.option}; give each output its own name")
    for out in outputs:
        _check_writable(out)


def allowed(kind: str) -> str:
    """'.mp4, .mov, ...' for a kind of output (for help texts)."""
    extensions = KINDS[kind][1]
    return "a folder" if extensions is None else ", ".join(extensions)


# ----------------------------------------------------------------------------- the checks
def _check_extension(out: Output) -> None:
    what, extensions = KINDS[out.kind]
    if extensions is None or out.path.suffix.lower() in extensions:
        return
    got = f"'{out.path.suffix}'" if out.path.suffix else "no extension"
    raise ConfigError(f"{out.option} {out.path}: writes {what}, so the name must end in "
                      f"{', '.join(extensions)} (got {got})")


def _check_not_input(out: Output, option: str, path: Path) -> None:
    named = f"{option} {path}" if option else str(path)
    if _same(out.path, path):
        raise ConfigError(f"{out.option} {out.path} is the input {named}; writing there would destroy the input, "
                          f"so choose another output name")
    if path.is_dir() and _inside(out.path, path):
        raise ConfigError(f"{out.option} {out.path} is inside the input folder {named}; write it elsewhere so "
                          f"the input stays as it was")
    if out.is_folder and _inside(path, out.path):
        raise ConfigError(f"{out.option} {out.path} holds the input {named}; choose an output folder that "
                          f"holds no input")


def _check_writable(out: Output) -> None:
    path = out.path
    if path.exists() or path.is_symlink():
        if out.is_folder and not path.is_dir():
            raise ConfigError(f"{out.option} {path} is a file; give a folder name (it is created if needed)")
        if not out.is_folder and path.is_dir():
            example = path / f"out{KINDS[out.kind][1][0]}"
            raise ConfigError(f"{out.option} {path} is a folder; give a file name such as {example}")
        if path.is_file() and not os.access(path, os.W_OK):
            raise ConfigError(f"{out.option} {path} is read-only; make it writable or choose another name")
    existing = _nearest_existing(path if out.kind == "folder" else path.parent)
    if not existing.is_dir():
        raise ConfigError(f"{out.option} {path}: {existing} is a file, not a folder; choose a path under a folder")
    reason = _cannot_create_in(existing)
    if reason:
        raise ConfigError(f"{out.option} {path}: cannot write in {existing} ({reason}); "
                          f"choose a folder you can write to")


# ----------------------------------------------------------------------------- paths
def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return path.absolute()


def _same(a: Path, b: Path) -> bool:
    """The same file: equal once resolved (symlinks), or os.path.samefile (hard links, case)."""
    if _resolve(a) == _resolve(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    path, folder = _resolve(path), _resolve(folder)
    return path != folder and folder in path.parents


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not (path.exists() or path.is_symlink()) and path != path.parent:
        path = path.parent
    return path


def _cannot_create_in(folder: Path) -> Optional[str]:
    """None when a new file can be made in `folder` (tried for real, then removed); else why not."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".onehead-probe-", dir=folder)
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__
    os.close(handle)
    try:
        os.unlink(probe)
    except OSError:
        pass
    return None
