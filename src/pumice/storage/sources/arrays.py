"""Array sources: NumPy .npy, HDF5, Zarr v2/v3 and N5 (the last three through TensorStore)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from ...errors import SourceError
from ..kv import context
from .base import ArraySource


class NpySource(ArraySource):
    """Maps the file anew for each read: a map kept open would hold every page it ever touched
    resident, so a worker's memory would grow with the source instead of the block."""

    def _get(self, index: tuple) -> np.ndarray:
        array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return np.array(array[index])


def open_npy(path: str, axes: str | None) -> ArraySource:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e.strerror or e}") from None
    if magic != b"\x93NUMPY":  # else numpy blames "pickled (object) data" for any foreign file
        raise SourceError(f"{path} is not a NumPy .npy file (no .npy header); save the array with numpy.save")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"cannot read {path} as a NumPy .npy file: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(array, np.ndarray):
        raise SourceError(f"{path} is not a single NumPy array; save one array with numpy.save")
    source = NpySource("NumPy", path, _Shape(array.shape, array.dtype), axes,
                       fingerprint={"bytes": Path(path).stat().st_size, "shape": list(array.shape)})
    del array
    return source


class HDF5Source(ArraySource):
    """Reopens the file in each process that reads: h5py handles do not survive pickling or fork."""

    def _get(self, index: tuple) -> np.ndarray:
        import h5py

        with h5py.File(self.file, "r") as f:
            return f[self.dataset][index]


def open_hdf5(path: str, dataset: str | None, axes: str | None) -> ArraySource:
    import h5py

    try:
        f = h5py.File(path, "r")
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"cannot open {path} as HDF5: {str(e).splitlines()[0][:200]}") from None
    with f:
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        if dataset is None:
            if len(names) != 1:
                listing = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "") if names else "none"
                raise SourceError(f"{path} holds several datasets ({listing}); name one as {path}:/NAME or with --dataset")
            dataset = names[0]
        dataset = dataset.strip("/")
        node = f.get(dataset)
        if not isinstance(node, h5py.Dataset):
            listing = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
            raise SourceError(f"no dataset {dataset!r} in {path}; it has: {listing or 'no datasets'}")
        shape, dtype = node.shape, node.dtype
    source = HDF5Source.__new__(HDF5Source)
    source.file, source.dataset = path, dataset
    ArraySource.__init__(source, "HDF5", f"{path}:/{dataset}", _Shape(shape, dtype), axes,
                         fingerprint={"bytes": Path(path).stat().st_size, "dataset": dataset, "shape": list(shape)})
    return source


class _Shape:
    """Shape and dtype of an array that is opened again for each read."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        self.shape, self.dtype = shape, dtype


class TensorStoreSource(ArraySource):
    def __init__(self, kind: str, path: str, spec: dict, axes: str | None, **meta: Any):
        self.spec = spec
        try:
            store = ts.open(spec, open=True, read=True, context=context()).result()
        except ValueError as e:
            raise SourceError(f"cannot open {path} as {kind}: {str(e).splitlines()[0][:200]}") from None
        super().__init__(kind, path, store, axes, **meta)

    def _get(self, index: tuple) -> np.ndarray:
        return self.array[index].read().result()


def _file_kvstore(path: Path) -> dict:
    return {"driver": "file", "path": str(path.absolute()) + "/"}


def open_chunked(path: str, dataset: str | None, axes: str | None) -> ArraySource:
    """Zarr v2, Zarr v3 (OME-Zarr multiscales: the first scale) or N5, array or group + dataset."""
    root = Path(path)
    node = root / dataset.strip("/") if dataset else root
    if not node.is_dir():
        raise SourceError(f"no array {dataset!r} in {path}; name an array inside the group with {path}:/NAME or --dataset")
    resolution = None
    if (node / ".zgroup").is_file() and (node / ".zattrs").is_file() and "multiscales" in _read_json(node / ".zattrs"):
        node, resolution, axes = _ome_first_scale(node, _read_json(node / ".zattrs"), path, axes)
    if (node / ".zarray").is_file():
        driver, kind = "zarr", "Zarr v2"
    elif (node / "zarr.json").is_file():
        meta = _read_json(node / "zarr.json")
        if meta.get("node_type") == "group":
            node, resolution, axes = _ome_first_scale(node, meta.get("attributes", {}), path, axes)
        driver, kind = "zarr3", "Zarr v3"
    elif (node / "attributes.json").is_file() and "dimensions" in _read_json(node / "attributes.json"):
        driver, kind = "n5", "N5"
        resolution = _n5_resolution(_read_json(node / "attributes.json"))
    elif (node / ".zgroup").is_file() or (node / "attributes.json").is_file():
        children = sorted(p.name for p in node.iterdir() if p.is_dir())
        raise SourceError(f"{path} is a group, not an array; name an array with {path}:/NAME or --dataset (it has: {', '.join(children) or 'nothing'})")
    else:
        raise SourceError(f"{node} is not a Zarr or N5 array (no .zarray, zarr.json or attributes.json)")
    return TensorStoreSource(kind, str(node), {"driver": driver, "kvstore": _file_kvstore(node)}, axes,
                             resolution=resolution, fingerprint={"path": str(node)})


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SourceError(f"cannot read {path}: {e}") from None


_UNIT_NM = {"nanometer": 1.0, "nm": 1.0, "micrometer": 1000.0, "um": 1000.0, "µm": 1000.0, "micron": 1000.0,
            "millimeter": 1e6, "mm": 1e6, "angstrom": 0.1}


def _ome_first_scale(group: Path, attrs: dict, path: str, axes: str | None
                     ) -> tuple[Path, tuple[float, float, float] | None, str | None]:
    """OME-Zarr (0.4 on Zarr v2, 0.5 on v3): the full-resolution array, its voxel size in nm and
    its axis order, all from the multiscales metadata."""
    multiscales = attrs.get("ome", attrs).get("multiscales")
    if not multiscales:
        children = sorted(p.name for p in group.iterdir() if p.is_dir())
        raise SourceError(f"{path} is a Zarr group; name an array with {path}:/NAME or --dataset (it has: {', '.join(children) or 'nothing'})")
    ms = multiscales[0]
    first = ms["datasets"][0]
    names = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])]
    units = [a.get("unit", "") if isinstance(a, dict) else "" for a in ms.get("axes", [])]
    if axes is None and names and set(names) <= set("xyzc") and set("xy") <= set(names):
        axes = "".join(names)
    resolution = None
    for t in first.get("coordinateTransformations", []):
        if t.get("type") == "scale" and set("xyz") <= set(names):
            scale, unit = dict(zip(names, t["scale"])), dict(zip(names, units))
            resolution = tuple(float(scale[a]) * _UNIT_NM.get(unit[a], 1.0) for a in "xyz")
    return group / first["path"], resolution, axes  # type: ignore[return-value]


def _n5_resolution(attrs: dict) -> tuple[float, float, float] | None:
    res = attrs.get("resolution") or attrs.get("pixelResolution")
    unit = 1.0
    if isinstance(res, dict):
        unit = _UNIT_NM.get(str(res.get("unit", "nm")), 1.0)
        res = res.get("dimensions")
    if isinstance(res, list) and len(res) >= 3:
        return tuple(float(r) * unit for r in res[:3])  # type: ignore[return-value]
    return None
