"""What every operation's tests share: making and reading layers, and the cases an operation
declares for the tests that run every operation the same way.

An operation's test module (``tests/ops/test_<operation>.py``) may declare

- ``RUNNER_CASES = {name: setup}``: ``setup(cli, root)`` builds the input under ``root`` and returns
  the command (without runner options) and the folder whose files are compared.
  ``tests/execution/test_runners_agree.py`` runs each on the local runner, a Dask cluster, fq://
  and SQS, and requires the same bytes everywhere. A setup with a ``files`` attribute (a function of the
  folder returning ``{name: bytes}``) says what its output is where the files' own bytes may differ
  (a database).
- ``RESUME_CASES = {name: Resume(setup, stage)}``: ``tests/execution/test_resume.py`` kills the
  command once a quarter of ``stage``'s tasks are done, runs it again, and requires that only the
  unfinished tasks ran and that the bytes equal an uninterrupted run's.

Nothing else lists operations: a new module's cases are found by ``declared``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

TESTS = Path(__file__).parent
Setup = Callable[[Callable[..., tuple[int, str, str]], Path], tuple[list[str], Path]]


@dataclass(frozen=True)
class Resume:
    setup: Setup
    stage: str  # the stage in which the run is killed
    slow: bool = False  # only in the full suite


_MODULES: dict[Path, Any] = {}


def declared(attribute: str) -> dict[str, Any]:
    """Every operation test module's ``attribute`` (a dict of cases), merged; names must be unique."""
    out: dict[str, Any] = {}
    for path in sorted((TESTS / "ops").glob("test_*.py")):
        if path not in _MODULES:
            spec = importlib.util.spec_from_file_location(f"declared_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _MODULES[path] = module
        for name, case in getattr(_MODULES[path], attribute, {}).items():
            assert name not in out, f"case {name!r} is declared twice"
            out[name] = case
    return out


# -- making and reading layers ---------------------------------------------------------------------

def ingest_array(cli, path: Path, data_xyz: np.ndarray, *options: str) -> Path:
    """``pumice ingest`` of an X, Y, Z[, C] array (saved as a Z, Y, X .npy beside ``path``), required to succeed."""
    source = path.with_name(path.name + ".npy")
    channels = data_xyz.ndim == 4
    np.save(source, data_xyz.transpose(2, 1, 0, 3) if channels else data_xyz.transpose(2, 1, 0))
    code, _, err = cli("ingest", source, path, *(["--axes", "zyxc"] if channels else []), "--no-progress", *options)
    assert code == 0, err
    return path


def read_tensorstore(path: Path, mip: int = 0) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A mip as TensorStore reads it (X, Y, Z, C) and its first voxel."""
    import tensorstore as ts

    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{path}/", "scale_index": mip}).result()
    return store.read().result(), tuple(int(v) for v in store.domain.inclusive_min[:3])


def read_cloudvolume(path: Path, mip: int = 0) -> np.ndarray:
    """A whole mip as CloudVolume reads it (X, Y, Z, C)."""
    from cloudvolume import CloudVolume

    cv = CloudVolume(f"file://{path}", mip=mip, progress=False)
    return np.asarray(cv[cv.bounds])


def run_json(cli, *argv: str) -> dict[str, Any]:
    """Run a command with ``--json`` and return its summary (or --dry-run plan), requiring success."""
    code, out, err = cli(*argv, "--json")
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


# -- the small inputs of the runner-agreement cases ---------------------------------------------------

IMAGE = ["--resolution", "4,4,40", "--chunk-size", "32,32,8"]
LABELS = ["--resolution", "8,8,8", "--chunk-size", "16,16,16"]


def runner_image(root: Path) -> Path:
    """A 96 x 64 x 32 random uint8 image as a Z, Y, X .npy."""
    data = np.random.default_rng(3).integers(0, 255, (32, 64, 96), dtype=np.uint8)  # z, y, x
    np.save(root / "img.npy", data)
    return root / "img.npy"


def runner_labels(root: Path) -> Path:
    """Three objects (a tube along z, a ball, a tube along x) in 48 x 48 x 32, as a Z, Y, X .npy."""
    shape = (48, 48, 32)  # x, y, z
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    lab = np.zeros(shape, np.uint32)
    lab[(x - 24) ** 2 + (y - 24) ** 2 < 36] = 1
    lab[(x - 10) ** 2 + (y - 30) ** 2 + (z - 16) ** 2 < 60] = 2
    lab[(y - 8) ** 2 + (z - 16) ** 2 < 16] = 3
    np.save(root / "lab.npy", lab.transpose(2, 1, 0))
    return root / "lab.npy"


def ingested(cli, root: Path, source: Path, name: str, options: list[str]) -> Path:
    """``pumice ingest SOURCE root/name OPTIONS``, required to succeed."""
    code, _, err = cli("ingest", source, root / name, *options, "--no-progress")
    assert code == 0, err
    return root / name
