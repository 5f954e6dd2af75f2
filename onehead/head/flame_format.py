"""The FLAME file format: one dataclass, one reader, one writer.

A FLAME-format directory holds
  FLAME_NEUTRAL.pkl (or generic_model.pkl)  template, faces, shape/expression/pose bases,
                                            joint regressor, kinematic tree, skinning weights
  flame_static_embedding.pkl                51 iBUG landmarks (17-67) as face + barycentric
  flame_dynamic_embedding.npy               17 jaw-contour landmarks, a table over head yaw
  head_template.obj                         optional: the UV layout (vt, and per-face vt ids)

The licensed FLAME files and onehead's own open head model use exactly this layout, so
`smplx.FLAME(model_path=DIR)` loads either.

Pickle is forced by the format. onehead reads these files with a *restricted* unpickler
that only rebuilds numpy arrays, scipy sparse matrices and chumpy arrays (as plain numpy);
any other class in the file is refused. Even so, only load FLAME files from your own
directory.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onehead.errors import CheckpointError
from onehead.files import atomic_path

MODEL_FILENAMES = ("FLAME_NEUTRAL.pkl", "generic_model.pkl", "FLAME_NEUTRAL.npz")
STATIC_EMBEDDING = "flame_static_embedding.pkl"
DYNAMIC_EMBEDDING = "flame_dynamic_embedding.npy"
UV_TEMPLATES = ("head_template.obj", "head_template_mesh.obj", "FLAME_texture.npz")
SHAPE_SPACE = 300  # columns of shapedirs before the expression basis starts (smplx's layout)
NUM_YAW_BINS = 79  # the dynamic embedding covers yaw -39..39 degrees


@dataclass
class FlameData:
    """Everything a FLAME-format head model holds, as numpy arrays."""

    v_template: np.ndarray  # (V, 3) float
    faces: np.ndarray  # (F, 3) int
    shapedirs: np.ndarray  # (V, 3, S)
    exprdirs: np.ndarray  # (V, 3, E)
    posedirs: np.ndarray  # (V, 3, 36) pose correctives, 4 joints x 9
    j_regressor: np.ndarray  # (5, V)
    parents: np.ndarray  # (5,) int, -1 for the root
    lbs_weights: np.ndarray  # (V, 5)
    static_lmk_faces: np.ndarray  # (51,) int: iBUG 17-67
    static_lmk_bary: np.ndarray  # (51, 3)
    dynamic_lmk_faces: np.ndarray | None = None  # (79, 17) int: iBUG 0-16 per yaw bin
    dynamic_lmk_bary: np.ndarray | None = None  # (79, 17, 3)
    uv_coords: np.ndarray | None = None  # (T, 2) in [0, 1], v up (OBJ convention)
    uv_faces: np.ndarray | None = None  # (F, 3) indices into uv_coords


class _ChumpyStandIn:
    """Takes the place of a chumpy object during unpickling; keeps its state."""

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"x": state}

    def __array__(self, dtype=None, copy=None):
        data = self.state.get("x")
        if data is None:
            raise CheckpointError("a chumpy object in the FLAME file holds no array data ('x'); "
                                  "convert the file with chumpy once, then load the converted copy")
        return np.asarray(data, dtype=dtype)


_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("numpy", "core.multiarray._reconstruct"),
    ("scipy.sparse.csc", "csc_matrix"), ("scipy.sparse._csc", "csc_matrix"),
    ("scipy.sparse.csr", "csr_matrix"), ("scipy.sparse._csr", "csr_matrix"),
    ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
    ("__builtin__", "object"), ("builtins", "object"), ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("chumpy"):
            return _ChumpyStandIn
        if (module, name) in _ALLOWED:
            if module == "__builtin__":
                module = "builtins"
            if module == "copy_reg":
                module = "copyreg"
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a FLAME file")


def load_pickle_restricted(path: Path) -> object:
    """Unpickle a FLAME-format file allowing only array types (see module docstring)."""
    try:
        with open(path, "rb") as handle:
            return _RestrictedUnpickler(io.BytesIO(handle.read()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError) as exc:
        raise CheckpointError(f"{path}: not a readable FLAME-format pickle ({exc})") from exc


def _array(value, dtype=np.float32) -> np.ndarray:
    if hasattr(value, "toarray"):
        value = value.toarray()
    return np.asarray(value, dtype=dtype)


def _read_model_file(directory: Path) -> dict:
    for name in MODEL_FILENAMES:
        path = directory / name
        if path.is_file():
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    return dict(data)
            raw = load_pickle_restricted(path)
            if not isinstance(raw, dict):
                raise CheckpointError(f"{path}: expected a dict of arrays, found {type(raw).__name__}")
            return raw
    raise CheckpointError(
        f"{directory}: no FLAME model file found (looked for {', '.join(MODEL_FILENAMES)}); "
        "put the licensed FLAME file there, renamed to FLAME_NEUTRAL.pkl")


def read_obj_uv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Texture coordinates and per-face texture indices from an OBJ file."""
    uvs, uv_faces = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("vt "):
                uvs.append([float(t) for t in line.split()[1:3]])
            elif line.startswith("f "):
                corners = line.split()[1:]
                if len(corners) != 3 or any(c.count("/") < 1 for c in corners):
                    continue
                uv_faces.append([int(c.split("/")[1]) - 1 for c in corners])
    if not uvs or not uv_faces:
        raise CheckpointError(f"{path}: OBJ file holds no texture coordinates")
    return np.asarray(uvs, np.float32), np.asarray(uv_faces, np.int64)


def _read_uv(directory: Path, num_faces: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    for name in UV_TEMPLATES:
        path = directory / name
        if not path.is_file():
            continue
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "vt" not in data or "ft" not in data:
                    continue
                uv, uv_faces = np.asarray(data["vt"], np.float32), np.asarray(data["ft"], np.int64)
        else:
            uv, uv_faces = read_obj_uv(path)
        if len(uv_faces) == num_faces:
            return uv, uv_faces
    return None, None


def read_flame_dir(directory: str | os.PathLike) -> FlameData:
    """Read a FLAME-format directory (licensed FLAME 2020/2023, or onehead's open model)."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: FLAME directory does not exist")
    raw = _read_model_file(directory)
    missing = [k for k in ("v_template", "f", "shapedirs", "J_regressor", "kintree_table", "weights")
               if k not in raw]
    if missing:
        raise CheckpointError(f"{directory}: FLAME model file lacks {', '.join(missing)}")
    all_dirs = _array(raw["shapedirs"])
    if all_dirs.ndim != 3 or all_dirs.shape[-1] <= SHAPE_SPACE:
        raise CheckpointError(f"{directory}: shapedirs has shape {all_dirs.shape}; expected (V, 3, >300) "
                              "with 300 shape then the expression components")
    num_vertices = all_dirs.shape[0]
    posedirs = _array(raw["posedirs"]) if "posedirs" in raw else np.zeros((num_vertices, 3, 36), np.float32)
    parents = np.asarray(raw["kintree_table"], np.int64)[0].copy()
    parents[0] = -1

    static_path = directory / STATIC_EMBEDDING
    if not static_path.is_file():
        raise CheckpointError(f"{directory}: {STATIC_EMBEDDING} is missing (the 51-landmark embedding)")
    static = load_pickle_restricted(static_path)
    dyn_faces = dyn_bary = None
    dynamic_path = directory / DYNAMIC_EMBEDDING
    if dynamic_path.is_file():
        dynamic = _load_npy_dict(dynamic_path)
        dyn_faces = np.asarray(dynamic["lmk_face_idx"], np.int64)
        dyn_bary = _array(dynamic["lmk_b_coords"])
    faces = np.asarray(raw["f"], np.int64)
    uv, uv_faces = _read_uv(directory, len(faces))
    return FlameData(
        v_template=_array(raw["v_template"]),
        faces=faces,
        shapedirs=all_dirs[:, :, :SHAPE_SPACE],
        exprdirs=all_dirs[:, :, SHAPE_SPACE:],
        posedirs=posedirs.reshape(num_vertices, 3, -1),
        j_regressor=_array(raw["J_regressor"]),
        parents=parents,
        lbs_weights=_array(raw["weights"]),
        static_lmk_faces=np.asarray(static["lmk_face_idx"], np.int64),
        static_lmk_bary=_array(static["lmk_b_coords"]),
        dynamic_lmk_faces=dyn_faces,
        dynamic_lmk_bary=dyn_bary,
        uv_coords=uv,
        uv_faces=uv_faces,
    )


def _load_npy_dict(path: Path) -> dict:
    """The dynamic embedding is a pickled dict inside an .npy file; read it restricted."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(handle)
        if dtype.hasobject:
            data = _RestrictedUnpickler(handle, encoding="latin1").load()
            if isinstance(data, np.ndarray):
                data = data.reshape(-1)[0] if data.size == 1 else data
        else:
            raise CheckpointError(f"{path}: expected a dict with lmk_face_idx and lmk_b_coords")
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict with lmk_face_idx and lmk_b_coords")
    return data


def write_flame_dir(data: FlameData, directory: str | os.PathLike) -> Path:
    """Write `data` as a FLAME-format directory, atomically (a half-written model never appears)."""
    directory = Path(directory)
    num_vertices = len(data.v_template)
    expr = data.exprdirs
    shape = np.zeros((num_vertices, 3, SHAPE_SPACE), np.float32)
    shape[:, :, : data.shapedirs.shape[-1]] = data.shapedirs
    model = {
        "v_template": data.v_template.astype(np.float64),
        "f": data.faces.astype(np.uint32),
        "shapedirs": np.concatenate([shape, expr], axis=-1).astype(np.float32),
        "posedirs": data.posedirs.astype(np.float32),
        "J_regressor": data.j_regressor.astype(np.float64),
        "kintree_table": np.stack([np.where(data.parents < 0, 2**32 - 1, data.parents),
                                   np.arange(len(data.parents))]).astype(np.int64),
        "weights": data.lbs_weights.astype(np.float64),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    with atomic_path(directory) as staging:
        staging.mkdir()
        with open(staging / "FLAME_NEUTRAL.pkl", "wb") as handle:
            pickle.dump(model, handle, protocol=2)
        with open(staging / STATIC_EMBEDDING, "wb") as handle:
            pickle.dump({"lmk_face_idx": data.static_lmk_faces.astype(np.int64),
                         "lmk_b_coords": data.static_lmk_bary.astype(np.float64)}, handle, protocol=2)
        if data.dynamic_lmk_faces is not None:
            np.save(staging / DYNAMIC_EMBEDDING,
                    np.array({"lmk_face_idx": data.dynamic_lmk_faces.astype(np.int64),
                              "lmk_b_coords": data.dynamic_lmk_bary.astype(np.float64)}, dtype=object),
                    allow_pickle=True)
        if data.uv_coords is not None:
            _write_obj_lines(staging / "head_template.obj", data.v_template, data.faces,
                             data.uv_coords, data.uv_faces)
    return directory


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray,
              uv: np.ndarray | None = None, uv_faces: np.ndarray | None = None) -> None:
    """Write a triangle mesh (optionally with UVs) as OBJ, atomically."""
    with atomic_path(path) as tmp:
        _write_obj_lines(tmp, vertices, faces, uv, uv_faces)


def _write_obj_lines(path: Path, vertices: np.ndarray, faces: np.ndarray,
                     uv: np.ndarray | None, uv_faces: np.ndarray | None) -> None:
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    if uv is not None:
        lines += [f"vt {u:.6f} {v:.6f}" for u, v in uv]
        lines += [f"f {a+1}/{ta+1} {b+1}/{tb+1} {c+1}/{tc+1}"
                  for (a, b, c), (ta, tb, tc) in zip(faces, uv_faces)]
    else:
        lines += [f"f {a+1} {b+1} {c+1}" for a, b, c in faces]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
