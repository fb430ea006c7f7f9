import numpy as np
import pytest
import zmesh

from pumice.storage import meshes


def _open_edges(faces: np.ndarray) -> int:
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return int((counts != 2).sum())


def _area(vertices: np.ndarray, faces: np.ndarray) -> float:
    t = vertices[faces]
    return float(np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum() / 2)


@pytest.mark.parametrize("grid", [(40.0, 40.0, 40.0), (17.0, 23.0, 31.0), (8.0, 8.0, 12.0)])
def test_cut_into_cells_keeps_the_surface_closed_and_every_piece_in_its_cell(grid):
    """Big simplified triangles crossing several planes each (the coarse levels of detail), and
    planes through vertices and along edges (an axis-aligned box's faces lie on the grid)."""
    x, y, z = np.meshgrid(*[np.arange(40)] * 3, indexing="ij")
    ball = (((x - 20) ** 2 + (y - 19) ** 2 + (z - 21) ** 2) < 15**2).astype(np.uint8)
    ball[2:10, 2:10, 2:12] = 1
    mesher = zmesh.Mesher((4, 4, 4))
    mesher.mesh(np.asfortranarray(ball), close=True)
    mesh = mesher.get(1, normals=False, reduction_factor=50, max_error=8, voxel_centered=True)
    assert _open_edges(mesh.faces) == 0
    origin, grid = np.array([3.0, -5.0, 0.0]), np.array(grid)
    cells = meshes.cut_into_cells(mesh.vertices, mesh.faces, origin, grid)
    assert len(cells) > 8
    offset, vertices, faces = 0, [], []
    for cell, (v, f) in cells.items():
        low = origin + np.array(cell) * grid
        assert (v >= low - 1e-6).all() and (v <= low + grid + 1e-6).all(), cell
        vertices.append(v)
        faces.append(f + offset)
        offset += len(v)
    vertices, faces = np.concatenate(vertices), np.concatenate(faces)
    _, inverse = np.unique(vertices + 0.0, axis=0, return_inverse=True)  # exact: shared cuts are bit-identical
    welded = inverse.reshape(-1)[faces]
    assert _open_edges(welded) == 0
    assert _area(vertices, faces) == pytest.approx(_area(mesh.vertices.astype(np.float64), mesh.faces), rel=1e-6)  # snapping moves vertices a hair
