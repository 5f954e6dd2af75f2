"""Atomic writes: every file or folder onehead writes appears whole or not at all.

    with atomic_path("out.mp4") as tmp:     # tmp: a fresh path beside the target, same suffix
        write_something(tmp)                 # on success tmp replaces the target; on any error
                                             # (or Ctrl-C) tmp is removed and the target is untouched
    write_text_atomic(path, text); write_json_atomic(path, data)

A folder target works the same way (write the folder at tmp); an existing folder is replaced
only after the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path beside `target` (same suffix); move it onto `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.tmp{target.suffix}")
    try:
        yield tmp
        _move_into_place(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data, indent: int = 2) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=indent))


def _move_into_place(tmp: Path, target: Path) -> None:
    if tmp.is_dir() and target.exists():
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(target, old)
        os.replace(tmp, target)
        _remove(old)
    else:
        os.replace(tmp, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
