"""The real Neuroglancer client, in headless Chromium, shows our layers voxel for voxel.

How the screenshots are made pixel-exact (found by experiment with Neuroglancer 2.41.2 on
SwiftShader; keep these when changing the test):

* One 'xy' panel, ``crossSectionScale = 1`` with the display dimensions equal to the voxel size
  (4, 4, 40 nm): one screen pixel per voxel.
* The canvas size must be EVEN and the x/y position an integer (a voxel edge): the panel centre
  lies on a pixel edge, so voxel edges fall on pixel edges and every pixel centre samples a voxel
  centre. An odd canvas size, or x/y at a voxel centre (n + 0.5), puts pixel centres exactly on
  voxel edges and the picture comes out shifted by one voxel in places (~95% of pixels differ).
  A quarter-voxel offset is still exact, so the rule is "not on a half".
* z = offset + k + 0.5 picks array slice k. Neuroglancer positions are in the layer's global
  voxel coordinates, i.e. they include ``voxel_offset``.
* The default image shader normalises by a data range guessed from a histogram; a shader that
  emits ``toNormalized(getDataValue())`` gives back the stored uint8 exactly. Image layers
  default to opacity 0.5: set 1.
* ``viewer.screenshot(size=...)`` hides the UI controls and panel borders; axis lines, the
  scale bar, default annotations, the layer side panel and statistics are switched off in the
  state. A magenta cross-section background (never a grey value) marks where no data is drawn, so
  the slice is found as the bounding box of non-magenta pixels.
* Segmentation: ``selectedAlpha = 1`` and fixed ``segmentColors`` give exactly those colours
  on the selected segments; unselected segments (``notSelectedAlpha`` 0) and segment 0 show the
  background. TensorStore does not write all-zero chunks, so the client gets some 404s (fine:
  missing chunks read as zero).
* Under those rules no interpolation appears at the borders either: the whole slice is compared.
* ``viewer.screenshot`` blocks until a client renders with all chunks loaded, and forever if
  none does: it runs in a daemon thread while the Playwright page is pumped, with a deadline.

Higher mips (a layer downsampled by ``pumice downsample --factor 2,2,1``):

* Neuroglancer multiplies the screen pixel size by 1.1 and then takes the coarsest scale whose
  voxels are not larger than that (``filterVisibleSources``), so ``crossSectionScale = 2**k`` shows
  mip k (and 1.7 or 2.2 still mip 1, 3.5 mip 2). It draws the coarser scales underneath, so their
  chunks are fetched too.
* Mip k's voxel j covers global (mip-0 voxel) coordinates ``[(offset_k + j) * 2**k, ... + 2**k)``:
  mip-k voxel edges are multiples of 2**k, wherever the mip-0 ``voxel_offset`` lies. The mip-0 rule
  carries over in those units: with an even canvas, a pixel centre lies at
  ``position + 2**(k-1)`` modulo 2**k, so x/y must not be an odd multiple of 2**(k-1) (a mip-k
  voxel centre), or pixel centres land on voxel edges and some pixels show the neighbour (seen:
  364 of 7680 at mip 1, 133 of 1920 at mip 2). A multiple of 2**k, or a quarter voxel off it,
  is exact.
* Every scale is clipped to the bounds of mip 0 (``lowerClipBound`` in the precomputed
  frontend), not to its own. A pixel is drawn where its centre lies inside the mip-0 bounds, and
  then shows the mip-k voxel under its centre. Keep pixel centres off the mip-0 bounds too: a
  centre exactly on one is a tie (the lower one came out excluded).
* With an offset not divisible by 2**k (here y: 6 at mip 0 -> 6 // 4 = 1 at mip 2, i.e. 4 in
  mip-0 units), Neuroglancer shows mip-2 row j at mip-0 rows 4 + 4j .. 7 + 4j, so that is what it
  must hold: Pumice groups voxels on that global grid (row 1 of mip 2 is the average of the mip-0
  rows 6 and 7 that exist). CloudVolume's and Igneous's convention (windows starting at the mip-0
  offset, ``size = ceil(size / 2**k)``) stored the average of rows 6 + 4j .. 9 + 4j there: half a
  mip-2 voxel off. The first test compares the screen with the stored mip, placed as its info
  says; the second shows an offset layer (3, 7) and an offset-0 layer of the same data drawing the
  same pixels at mip 1 and 2 wherever the offset layer's groups are whole.

Meshes (``pumice mesh``, legacy and multi-resolution sharded Draco, one layer each because the
info's "mesh" names one directory), in a 3D panel of their own viewer:

* Neuroglancer finds a segmentation's meshes through the info's "mesh" key: ``pumice view``
  needs nothing more. It fetches meshes only for selected segments.
* An orthographic 3D panel (``DataPanelLayout("3d", orthographic_projection=True)``) makes the
  canvas height exactly ``projectionScale`` display units; with the default orientation screen x
  is +x and screen down is +y, looking along z. ``showSlices = False`` leaves only the meshes on
  the (fixed) projection background.
* Meshes are lit: a pixel is the segment colour times a lighting factor (exact, e.g. 243,0,0 for
  255,0,0), with no anti-aliasing on the silhouette, so every pixel is either background or a
  scaled segment colour. The silhouette matches the labels projected along z (IoU ~0.97 for a
  ball 20 voxels across at 2 pixels per voxel); both formats gave identical pictures.

Skeletons (``pumice skeleton``, one file per object and sharded, one layer each because the info's
"skeletons" names one directory), in the same kind of 3D panel, on layers without meshes:

* Neuroglancer finds them through the info's "skeletons" key and fetches them only for selected
  segments (``skeletons/<id>``, or Range requests on ``*.shard``).
* It draws lines in the flat segment colour: no lighting and no anti-aliasing, every pixel is
  exactly the colour or background. ``skeleton_rendering.line_width3d`` (default 1) is the width
  in pixels; at 3 a line covers 3 rows or columns, plus 1 pixel beyond the end vertices. Both
  formats gave identical pictures. Vertices are in nm of the global voxel space (voxel centres
  ``(voxel_offset + i + 0.5) * resolution``) and land on the voxels they were traced from.
* Skeleton vertex attributes must be float32 (2.41.2; later clients add int32 and uint32):
  another type, e.g. a uint8 ``vertex_types`` as CloudVolume declares it, fails the whole data
  source ("Data type not supported by WebGL: UINT8"): the layer draws nothing and loads no
  data at all, and ``viewer.screenshot`` never returns.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import neuroglancer
import numpy as np
import pytest

from pumice.cli.view import serve
from pumice.serve.viewer import precomputed_source, select_segments, start_viewer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

SIZE = (96, 80, 12)  # x, y, z: non-cubic, not a multiple of the chunk size in y
OFFSET = (3, 5, 2)
RESOLUTION = (4, 4, 40)
CHUNK = (32, 32, 4)
CANVAS = (128, 112)  # even (see above) and larger than the slice, leaving a background margin
BACKGROUND = (255, 0, 255)
SHOWN = {1: (255, 0, 0), 2: (0, 255, 0), 300000: (0, 0, 255)}  # selected segments and colours
HIDDEN = 7  # labelled but not selected
SCREENSHOT_TIMEOUT = 30.0
# The same image three ways: plain chunk files, sharded (Range requests), chunk files as .gz.
IMAGE_LAYERS = ("image", "image_sharded", "image_gz")
# Another image with `pumice downsample` mips (factor 2,2,1), larger so zoomed out it still fills
# much of the canvas. Offset: y = 6 is divisible by 2 but not by 4 (see the module docstring).
PYRAMID = "image_pyramid"
PYRAMID_SIZE = (192, 160, 12)
PYRAMID_OFFSET = (4, 6, 2)
PYRAMID_MIPS = 2
# The same voxels twice: a layer at offset 0 and one starting at (3, 7) (not a multiple of 2 or 4),
# both downsampled 2,2,1 twice; on the global grid they must agree wherever groups are whole.
ALIGNED = ("aligned_base", "aligned_part")
ALIGNED_SIZE = (195, 167, 4)
ALIGNED_START = (3, 7, 0)


def make_layers(root: Path) -> dict[str, Any]:
    """Ingest the image (plain and sharded) and the segmentation with ``pumice ingest``.

    The sources are Z, Y, X .npy files, as a user would bring them.
    """
    from pumice.cli.main import main

    rng = np.random.default_rng(1234)
    # Random grey values: any shift, flip or transposition of the rendering shows up.
    image = rng.integers(0, 256, size=SIZE, dtype=np.uint8)
    labels = np.zeros(SIZE, dtype=np.uint32)
    labels[10:30, 10:40, :] = 1
    labels[50:80, 20:60, :] = 2
    labels[40:48, 60:75, :] = HIDDEN
    labels[5:20, 50:70, 6:] = 300000  # only in the upper z slices
    np.save(root / "image.npy", image.transpose(2, 1, 0))
    np.save(root / "labels.npy", labels.transpose(2, 1, 0))
    common = ["--resolution", ",".join(map(str, RESOLUTION)), "--offset", ",".join(map(str, OFFSET)),
              "--chunk-size", ",".join(map(str, CHUNK)), "--no-progress", "--workers", "1"]
    assert main(["ingest", str(root / "image.npy"), str(root / "image"), *common]) == 0
    # Sharded: the client then reads chunks with HTTP Range requests.
    assert main(["ingest", str(root / "image.npy"), str(root / "image_sharded"), "--sharded", *common]) == 0
    assert main(["ingest", str(root / "labels.npy"), str(root / "labels"), *common]) == 0  # compressed_segmentation
    return {
        "dirs": {name: root / name for name in ("image", "image_sharded", "labels", PYRAMID, *ALIGNED)},
        "image": image,
        "labels": labels,
        PYRAMID: make_pyramid(root, rng),
        **make_aligned_pair(root, rng),
    }


def make_pyramid(root: Path, rng: np.random.Generator, name: str = PYRAMID, image: np.ndarray | None = None,
                 offset: tuple[int, int, int] = PYRAMID_OFFSET) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """Ingest a (random) image and add mips with ``pumice downsample``.

    Returns each mip as (voxel_offset, X, Y, Z array), read back with TensorStore.
    """
    import tensorstore as ts

    from pumice.cli.main import main

    if image is None:
        image = rng.integers(0, 256, size=PYRAMID_SIZE, dtype=np.uint8)
    np.save(root / f"{name}.npy", image.transpose(2, 1, 0))
    path = str(root / name)
    assert main(["ingest", str(root / f"{name}.npy"), path, "--resolution", ",".join(map(str, RESOLUTION)),
                 "--offset", ",".join(map(str, offset)), "--chunk-size", ",".join(map(str, CHUNK)),
                 "--no-progress", "--workers", "1"]) == 0
    assert main(["downsample", path, "--num-mips", str(PYRAMID_MIPS), "--factor", "2,2,1", "--memory", "256KB",
                 "--workers", "1", "--no-progress"]) == 0
    mips = []
    for k in range(PYRAMID_MIPS + 1):
        store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{root / name}/",
                         "scale_index": k}).result()
        origin = tuple(int(v) for v in store.domain.origin[:3])
        mips.append((origin, np.asarray(store.read().result())[..., 0]))
    assert np.array_equal(mips[0][1], image)
    return mips


def make_aligned_pair(root: Path, rng: np.random.Generator) -> dict[str, Any]:
    """The same random voxels as an offset-0 layer and as a layer starting at ALIGNED_START."""
    whole = rng.integers(0, 256, size=ALIGNED_SIZE, dtype=np.uint8)
    part = np.ascontiguousarray(whole[tuple(slice(a, None) for a in ALIGNED_START)])
    return {"aligned_base": make_pyramid(root, rng, "aligned_base", whole, (0, 0, 0)),
            "aligned_part": make_pyramid(root, rng, "aligned_part", part, ALIGNED_START)}


def gzip_copy(src: Path, dst: Path) -> Path:
    """Copy a layer with every chunk file stored as ``<name>.gz``, as CloudVolume may write it."""
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.name == "info":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.with_name(target.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
    return dst


# --------------------------------------------------------------------------------------------
# start_viewer's state (no browser needed)


def test_precomputed_source() -> None:
    assert precomputed_source("http://h:1/a/") == "precomputed://http://h:1/a"
    assert precomputed_source("precomputed://gs://b/l") == "precomputed://gs://b/l"


def test_start_viewer_state() -> None:
    viewer, url = start_viewer(
        [("em", "http://127.0.0.1:9/em", "image"), ("seg", "s3://bucket/seg/", "segmentation")],
        segments={"seg": [3, 5]},
    )
    assert url.startswith("http://127.0.0.1:") and "/v/" in url
    state = viewer.state
    assert state.layout.type == "xy-3d"
    assert [layer.name for layer in state.layers] == ["em", "seg"]
    assert state.layers["em"].type == "image"
    assert state.layers["em"].source[0].url == "precomputed://http://127.0.0.1:9/em"
    assert state.layers["seg"].type == "segmentation"
    assert state.layers["seg"].source[0].url == "precomputed://s3://bucket/seg"
    assert sorted(int(s) for s in state.layers["seg"].segments) == [3, 5]
    select_segments(viewer, "seg", [9])
    assert [int(s) for s in viewer.state.layers["seg"].segments] == [9]
    with pytest.raises(ValueError):
        select_segments(viewer, "em", [1])


def test_start_viewer_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        start_viewer([("a", "http://x/a", "mesh")])
    with pytest.raises(ValueError):
        start_viewer([("a", "http://x/a", "image"), ("a", "http://x/b", "image")])
    with pytest.raises(ValueError):
        start_viewer([("a", "http://x/a", "image")], segments={"a": [1]})


# --------------------------------------------------------------------------------------------
# The browser


@dataclass
class Session:
    viewer: neuroglancer.Viewer
    page: Any  # playwright.sync_api.Page (playwright may be absent)
    responses: list[tuple[str, int, dict[str, str], dict[str, str]]]  # url, status, headers


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    made = make_layers(tmp_path_factory.mktemp("layers"))
    made["dirs"]["image_gz"] = gzip_copy(made["dirs"]["image"], tmp_path_factory.mktemp("gz") / "image_gz")
    return made


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Playwright, shared by the viewers of this module."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright not importable: {exc}")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, viewer: neuroglancer.Viewer, url: str, files_url: str) -> Session:
    """A new page on the viewer's URL, recording what it fetches from our file server."""
    page = browser.new_page(viewport={"width": 800, "height": 600})
    session = Session(viewer, page, [])

    def record(response: Any) -> None:
        # What the client fetched from our file server, for the tests to check.
        if response.url.startswith(files_url):
            session.responses.append((response.url, response.status, response.request.headers, response.headers))

    page.on("response", record)
    page.goto(url, timeout=30_000)
    return session


@pytest.fixture(scope="module")
def browser_viewer(chromium: Any, layers: dict[str, Any]) -> Iterator[Session]:
    """A viewer over the served layers with a headless Chromium page connected to it."""
    try:
        # What `pumice view IMAGE... LABELS` sets up, with the test's initial segments and layout.
        served = serve([str(layers["dirs"][name]) for name in (*IMAGE_LAYERS, PYRAMID, *ALIGNED, "labels")],
                       segments={"labels": list(SHOWN)}, layout="xy")
        with served.server as files:
            viewer, url = served.viewer, served.url
            assert [t for _, _, t in served.sources] == ["image"] * 6 + ["segmentation"]
            with viewer.txn() as s:
                s.dimensions = neuroglancer.CoordinateSpace(
                    names=["x", "y", "z"], units="nm", scales=list(RESOLUTION)
                )
                s.cross_section_scale = 1  # one screen pixel per display unit = per voxel
                s.show_axis_lines = False
                s.show_scale_bar = False
                s.show_default_annotations = False
                s.cross_section_background_color = "#%02x%02x%02x" % BACKGROUND
                s.selected_layer.visible = False
                s.statistics.visible = False
                for name in (*IMAGE_LAYERS, PYRAMID, *ALIGNED):
                    image = s.layers[name]
                    image.opacity = 1.0
                    image.shader = "void main() { emitGrayscale(toNormalized(getDataValue())); }"
                seg = s.layers["labels"]
                seg.selected_alpha = 1.0
                seg.not_selected_alpha = 0.0
            session = open_page(chromium, viewer, url, files.base_url)
            try:
                yield session
            finally:
                session.page.close()
    finally:
        # Neuroglancer's server is per process; do not leave it to later test modules.
        neuroglancer.stop()


def screenshot(viewer: neuroglancer.Viewer, page: Any) -> np.ndarray:
    """Screenshot of the canvas as an (h, w, 4) uint8 array, with a deadline."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(viewer.screenshot(size=list(CANVAS)))
        except BaseException as exc:  # noqa: BLE001 - reported in the test thread
            errors.append(exc)

    # A daemon thread: viewer.screenshot can block forever, and must not hold up exit.
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SCREENSHOT_TIMEOUT
    while thread.is_alive() and time.monotonic() < deadline:
        page.wait_for_timeout(50)  # keeps Playwright's event loop turning meanwhile
    if errors:
        raise errors[0]
    if not result:
        pytest.fail(f"no screenshot from Neuroglancer within {SCREENSHOT_TIMEOUT} s")
    pixels = result[0].screenshot.image_pixels
    assert pixels.shape == (CANVAS[1], CANVAS[0], 4)
    return pixels


def show_slice(viewer: neuroglancer.Viewer, z_index: int, visible: str) -> None:
    """Show array slice ``z_index`` of one layer, the volume's x/y centre at the panel centre."""
    with viewer.txn() as s:
        # Integer x/y (voxel edges) and z at a voxel centre: see the module docstring.
        s.position = [OFFSET[0] + SIZE[0] // 2, OFFSET[1] + SIZE[1] // 2, OFFSET[2] + z_index + 0.5]
        for layer in s.layers:
            layer.visible = layer.name == visible


def find_slice(pixels: np.ndarray) -> tuple[slice, slice]:
    """Bounding box of everything that is not background, as (rows, columns)."""
    drawn = np.any(pixels[..., :3] != BACKGROUND, axis=-1)
    assert drawn.any(), "nothing but background on screen"
    rows, cols = np.nonzero(drawn)
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


def expected_box() -> tuple[slice, slice]:
    top = CANVAS[1] // 2 - SIZE[1] // 2
    left = CANVAS[0] // 2 - SIZE[0] // 2
    return slice(top, top + SIZE[1]), slice(left, left + SIZE[0])


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize(
    ("layer", "z_index"),
    # first slice, mid-chunk, last slice; the other storage forms on one slice each
    [("image", 0), ("image", 5), ("image", 11), ("image_sharded", 6), ("image_gz", 9)],
)
def test_image_slice_pixel_exact(
    browser_viewer: Session, layers: dict[str, Any], layer: str, z_index: int
) -> None:
    viewer, page = browser_viewer.viewer, browser_viewer.page
    show_slice(viewer, z_index, layer)
    pixels = screenshot(viewer, page)
    rows, cols = find_slice(pixels)
    assert (rows, cols) == expected_box()
    shown = pixels[rows, cols]
    assert np.all(shown[..., 3] == 255)
    assert np.array_equal(shown[..., 0], shown[..., 1]) and np.array_equal(shown[..., 1], shown[..., 2])
    want = layers["image"][:, :, z_index].T  # screen rows are y, columns are x
    diff = shown[..., 0] != want
    assert not diff.any(), f"{diff.sum()} of {diff.size} pixels differ from slice {z_index}"
    # The data really came through the path under test.
    chunk_responses = [r for r in browser_viewer.responses if f"/{layer}/4_4_40/" in r[0]]
    assert chunk_responses
    if layer == "image_sharded":
        assert any(status == 206 and "range" in req for _, status, req, _ in chunk_responses)
    if layer == "image_gz":
        assert any(resp.get("content-encoding") == "gzip" for _, _, _, resp in chunk_responses)


def colour_map(labels_slice: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> np.ndarray:
    out = np.empty(labels_slice.shape + (3,), dtype=np.uint8)
    out[:] = BACKGROUND
    for segment, colour in colours.items():
        out[labels_slice == segment] = colour
    return out


@pytest.mark.slow
@pytest.mark.browser
def test_segmentation_fixed_colours_exact(browser_viewer: Session, layers: dict[str, Any]) -> None:
    viewer, page = browser_viewer.viewer, browser_viewer.page
    with viewer.txn() as s:
        s.layers["labels"].segment_colors = {k: "#%02x%02x%02x" % v for k, v in SHOWN.items()}
    try:
        z_index = 8  # segment 300000 exists only from slice 6 on
        show_slice(viewer, z_index, "labels")
        pixels = screenshot(viewer, page)
        rows, cols = expected_box()
        want = colour_map(layers["labels"][:, :, z_index].T, SHOWN)
        diff = np.any(pixels[rows, cols, :3] != want, axis=-1)
        assert not diff.any(), f"{diff.sum()} pixels differ"
        # Nothing drawn outside the volume either.
        outside = np.ones(pixels.shape[:2], dtype=bool)
        outside[rows, cols] = False
        assert np.all(pixels[outside][:, :3] == BACKGROUND)
    finally:
        with viewer.txn() as s:
            s.layers["labels"].segment_colors = {}


@pytest.mark.slow
@pytest.mark.browser
def test_segmentation_default_colours(browser_viewer: Session, layers: dict[str, Any]) -> None:
    viewer, page = browser_viewer.viewer, browser_viewer.page
    z_index = 2  # segment 300000 absent: only 1 and 2 of the selected ones are on screen
    show_slice(viewer, z_index, "labels")
    pixels = screenshot(viewer, page)[expected_box()][..., :3]
    labels = layers["labels"][:, :, z_index].T
    colours = {}
    for segment in (1, 2):
        region = pixels[labels == segment]
        assert len(region) > 0
        unique = np.unique(region, axis=0)
        assert len(unique) == 1, f"segment {segment} is not one flat colour: {unique[:5]}"
        colours[segment] = tuple(unique[0])
        assert colours[segment] != BACKGROUND
    assert colours[1] != colours[2]
    # Unselected segment and segment 0 are not drawn.
    assert np.all(pixels[labels == HIDDEN] == BACKGROUND)
    assert np.all(pixels[labels == 0] == BACKGROUND)
    # Selecting the hidden segment makes it appear.
    select_segments(viewer, "labels", [1, 2, HIDDEN])
    try:
        pixels = screenshot(viewer, page)[expected_box()][..., :3]
        region = pixels[labels == HIDDEN]
        assert len(np.unique(region, axis=0)) == 1
        assert tuple(region[0]) not in (BACKGROUND, colours[1], colours[2])
    finally:
        select_segments(viewer, "labels", list(SHOWN))


# --------------------------------------------------------------------------------------------
# Higher mips


def expected_view(mips: list[tuple[tuple[int, ...], np.ndarray]], k: int, z_index: int,
                  position: tuple[float, float], scale: float, *, check_ties: bool = True) -> np.ndarray:
    """The canvas (rows, columns, RGB) if the client drew slice ``z_index`` of mip ``k``.

    Screen x/y are global coordinates in mip-0 voxels (the display dimensions are the mip-0
    voxel size). A pixel shows the mip-k voxel under its centre where that centre lies inside
    the mip-0 bounds (Neuroglancer clips every scale to them), and background elsewhere.
    ``check_ties=False`` for the wrong-mip pictures, which may take either side of a tie.
    """
    (origin0, level0), (origin, level) = mips[0], mips[k]
    f = 2**k  # x/y factor of mip k (2,2,1 per mip)
    indices = []
    for axis, n in ((0, CANVAS[0]), (1, CANVAS[1])):
        centres = position[axis] + (np.arange(n) + 0.5 - n / 2) * scale
        # The exactness rules: no pixel centre on a mip-k voxel edge or on the mip-0 bounds.
        lo, hi = origin0[axis], origin0[axis] + level0.shape[axis]
        if check_ties:
            assert not np.any(centres % f == 0), f"pixel centres on mip-{k} voxel edges along axis {axis}"
            assert not np.any((centres == lo) | (centres == hi)), f"pixel centres on the mip-0 bounds, axis {axis}"
        index = np.floor(centres / f).astype(int) - origin[axis]
        index[(centres < lo) | (centres > hi) | (index < 0) | (index >= level.shape[axis])] = -1
        indices.append(index)
    ix, iy = indices
    out = np.empty((CANVAS[1], CANVAS[0], 3), dtype=np.uint8)
    out[:] = BACKGROUND
    rows, cols = np.nonzero(iy >= 0)[0], np.nonzero(ix >= 0)[0]
    grey = level[:, :, z_index][np.ix_(ix[cols], iy[rows])].T  # screen rows are y
    out[np.ix_(rows, cols)] = grey[..., None]
    return out


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize(
    ("mip", "position", "z_index"),
    [
        # The volume's centre, (100, 86): a mip-1 voxel edge, so pixel centres sample voxel centres.
        (1, (100, 86), 5),
        # y = 86 is a mip-2 voxel centre and 84 puts a pixel centre on the mip-0 lower bound
        # (y = 6); 85 is a quarter mip-2 voxel off an edge (see the module docstring).
        (2, (100, 85), 9),
    ],
)
def test_downsampled_slice_pixel_exact(
    browser_viewer: Session, layers: dict[str, Any], mip: int, position: tuple[float, float], z_index: int
) -> None:
    """Zoomed out, the client shows the slice of a ``pumice downsample`` mip, voxel for voxel."""
    viewer, page = browser_viewer.viewer, browser_viewer.page
    mips = layers[PYRAMID]
    # The global grid: mip 2 starts at y = 1 * 4, before the data (6), and ends at 42 * 4 >= 166.
    assert [origin for origin, _ in mips] == [(4, 6, 2), (2, 3, 2), (1, 1, 2)]
    assert [level.shape for _, level in mips] == [(192, 160, 12), (96, 80, 12), (48, 41, 12)]
    scale = 2.0**mip  # one screen pixel per mip-k voxel
    with viewer.txn() as s:
        s.cross_section_scale = scale
        s.position = [*position, PYRAMID_OFFSET[2] + z_index + 0.5]  # z is not downsampled
        for layer in s.layers:
            layer.visible = layer.name == PYRAMID
    try:
        pixels = screenshot(viewer, page)
    finally:
        with viewer.txn() as s:
            s.cross_section_scale = 1  # what the other tests expect
    want = expected_view(mips, mip, z_index, position, scale)
    drawn = np.any(want != BACKGROUND, axis=-1)
    assert drawn.sum() >= 0.9 * mips[mip][1][:, :, 0].size  # (nearly) the whole slice is on screen
    assert np.all(pixels[..., 3] == 255)
    diff = np.any(pixels[..., :3] != want, axis=-1)
    assert not diff.any(), f"{diff.sum()} of {diff.size} pixels differ from mip {mip}, slice {z_index}"
    # It is really mip `mip` on screen: every other mip, sampled the same way (mip 0 subsampled,
    # coarser mips blown up), is far off.
    for other in range(PYRAMID_MIPS + 1):
        if other != mip:
            wrong = np.any(expected_view(mips, other, z_index, position, scale, check_ties=False) != want, axis=-1)
            assert wrong[drawn].mean() > 0.9, f"mip {other} looks like mip {mip}: the check proves nothing"
    key = "_".join(str(r * f) for r, f in zip(RESOLUTION, (2**mip, 2**mip, 1)))
    assert any(f"/{PYRAMID}/{key}/" in r[0] and r[1] == 200 for r in browser_viewer.responses)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize(
    ("mip", "position"),
    # Pixel centres off mip-k voxel edges and off both layers' mip-0 bounds (x: 0, 3, 195; y: 0, 7,
    # 167): a quarter mip-1 voxel off an edge for mip 1, mip-2 voxel centres (even) for mip 2.
    [(1, (98.5, 84.5)), (2, (96, 84))],
)
def test_offset_layer_lines_up_with_an_offset_0_layer_at_every_mip(
    browser_viewer: Session, layers: dict[str, Any], mip: int, position: tuple[float, float]
) -> None:
    """The same voxels stored at offset (3, 7) and at offset 0 draw the same pixels zoomed out."""
    viewer, page = browser_viewer.viewer, browser_viewer.page
    scale, z_index = 2.0**mip, 2
    shots = {}
    for name in ALIGNED:
        with viewer.txn() as s:
            s.cross_section_scale = scale
            s.position = [*position, z_index + 0.5]  # both layers start at z = 0
            for layer in s.layers:
                layer.visible = layer.name == name
        try:
            shots[name] = screenshot(viewer, page)[..., :3]
        finally:
            with viewer.txn() as s:
                s.cross_section_scale = 1
        want = expected_view(layers[name], mip, z_index, position, scale)
        diff = np.any(shots[name] != want, axis=-1)
        assert not diff.any(), f"{name}: {diff.sum()} pixels differ from its stored mip {mip}"
    # Where the offset layer's mip-k voxel is a whole group of its own voxels, both show the same grey.
    f = 2**mip
    whole = []
    for axis, n in ((0, CANVAS[0]), (1, CANVAS[1])):
        centres = position[axis] + (np.arange(n) + 0.5 - n / 2) * scale
        first = np.floor(centres / f) * f
        lo, hi = ALIGNED_START[axis], ALIGNED_SIZE[axis]
        whole.append((first >= lo) & (first + f <= hi))
    whole = whole[1][:, None] & whole[0][None, :]  # rows are y
    assert whole.sum() > 0.8 * (ALIGNED_SIZE[0] // f) * (ALIGNED_SIZE[1] // f)
    same = np.all(shots["aligned_part"] == shots["aligned_base"], axis=-1)
    assert same[whole].all(), f"{(~same[whole]).sum()} of {whole.sum()} whole-group pixels differ between the layers"
    # ... and the check can fail: at mip 1 the client draws groups the offset layer's low faces cut
    # (pixel centres at x = 3.5, y = 7.5), which hold fewer voxels there (at mip 2 they are clipped).
    if mip == 1:
        assert not same[~whole & np.any(shots["aligned_part"] != BACKGROUND, axis=-1)].all()
    assert any("/aligned_part/" in r[0] and r[1] == 200 for r in browser_viewer.responses)


# --------------------------------------------------------------------------------------------
# Meshes in the 3D panel

MESH_SIZE = (64, 56, 48)  # x, y, z
MESH_OFFSET = (10, 20, 30)
MESH_RESOLUTION = (8, 8, 8)
# Balls: centre (x, y, z, in array voxels), radius (voxels) and the fixed colour of the segment.
# Ball 5 crosses the 32^3 forge blocks, so its mesh is merged from fragments.
BALLS = {5: ((24, 28, 24), 10, (255, 0, 0)), 9: ((48, 40, 24), 7, (0, 128, 255))}
CENTRED = 5  # the view is centred on this ball
# One layer per format: `pumice mesh` points the info's "mesh" at the directory it last wrote.
MESH_FORMATS = {"meshes_legacy": ("mesh", []), "meshes_multires": ("mesh_sharded", ["--sharded"]),
                "meshes_bodies": ("mesh_bodies", ["--mapping"])}
# meshes_bodies: ball CENTRED is two supervoxels (its halves, ids 51 and 52) and a mapping joins them;
# `pumice mesh --mapping` writes one mesh per body, and the layer is pointed at them as a user would.
HALVES = {51: CENTRED, 52: CENTRED}
PROJECTION_SCALE = 56  # display units (voxels) per canvas height: 2 pixels per voxel
PROJECTION_BACKGROUND = (0, 0, 0)


@pytest.fixture(scope="module")
def mesh_layers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same labelled balls, ingested twice and meshed in each format with ``pumice mesh``."""
    import json

    from pumice.cli.main import main

    root = tmp_path_factory.mktemp("meshes")
    x, y, z = np.meshgrid(*(np.arange(n) + 0.5 for n in MESH_SIZE), indexing="ij")  # voxel centres
    labels = np.zeros(MESH_SIZE, dtype=np.uint32)
    for segment, ((cx, cy, cz), radius, _) in BALLS.items():
        labels[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 < radius**2] = segment
    np.save(root / "balls.npy", labels.transpose(2, 1, 0))
    halves = np.where((labels == CENTRED) & (x < BALLS[CENTRED][0][0]), 51, np.where(labels == CENTRED, 52, labels))
    np.save(root / "supervoxels.npy", halves.astype(np.uint32).transpose(2, 1, 0))
    (root / "bodies.csv").write_text("".join(f"{sv},{body}\n" for sv, body in HALVES.items()))
    for name, (mesh_dir, options) in MESH_FORMATS.items():
        path = str(root / name)
        source = root / ("supervoxels.npy" if name == "meshes_bodies" else "balls.npy")
        assert main(["ingest", str(source), path, "--resolution", ",".join(map(str, MESH_RESOLUTION)),
                     "--offset", ",".join(map(str, MESH_OFFSET)), "--chunk-size", "32,32,32", "--type", "segmentation",
                     "--no-progress", "--workers", "1"]) == 0
        options = ["--mapping", str(root / "bodies.csv")] if options == ["--mapping"] else options
        assert main(["mesh", path, "--dir", mesh_dir, *options, "--shape", "32,32,32",
                     "--no-progress", "--workers", "1"]) == 0
        info = json.loads((root / name / "info").read_text())
        if name == "meshes_bodies":
            assert info.get("mesh") != mesh_dir  # body meshes are not the layer's own
            (root / name / "info").write_text(json.dumps({**info, "mesh": mesh_dir}))
        else:
            assert info["mesh"] == mesh_dir
    return {"dirs": {name: root / name for name in MESH_FORMATS}, "labels": labels}


@contextlib.contextmanager
def projection_viewer(browser: Any, dirs: dict[str, Path], selected: list[int],
                      colours: dict[int, tuple[int, int, int]], position: list[float],
                      resolution: tuple[int, ...], scale: float) -> Iterator[Session]:
    """`pumice view` of segmentation layers in an orthographic 3D panel of its own page.

    ``selected`` segments are selected in every layer, with fixed ``colours``; the panel shows
    ``scale`` display units (voxels of ``resolution``) per canvas height around ``position``.
    """
    try:
        served = serve([str(path) for path in dirs.values()],
                       segments={name: selected for name in dirs}, layout="3d")
        with served.server as files:
            viewer = served.viewer
            with viewer.txn() as s:
                # Orthographic: the canvas height is exactly `scale` display units.
                s.layout = neuroglancer.DataPanelLayout("3d", orthographic_projection=True)
                s.dimensions = neuroglancer.CoordinateSpace(
                    names=["x", "y", "z"], units="nm", scales=list(resolution)
                )
                s.position = position
                s.projection_scale = scale
                s.projection_background_color = "#%02x%02x%02x" % PROJECTION_BACKGROUND
                s.show_slices = False  # only meshes and skeletons may draw in the 3D panel
                s.show_axis_lines = False
                s.show_scale_bar = False
                s.show_default_annotations = False
                s.selected_layer.visible = False
                s.statistics.visible = False
                for name in dirs:
                    seg = s.layers[name]
                    seg.segment_colors = {k: "#%02x%02x%02x" % colour for k, colour in colours.items()}
                    seg.selected_alpha = 1.0
                    seg.not_selected_alpha = 0.0
            session = open_page(browser, viewer, served.url, files.base_url)
            try:
                yield session
            finally:
                session.page.close()
    finally:
        neuroglancer.stop()


@pytest.fixture(scope="module")
def mesh_viewer(chromium: Any, mesh_layers: dict[str, Any]) -> Iterator[Session]:
    """`pumice view` of the meshed layers in a 3D panel, ball CENTRED selected, in its own page."""
    with projection_viewer(
        chromium, mesh_layers["dirs"], [CENTRED], {k: colour for k, (_, _, colour) in BALLS.items()},
        [o + c for o, c in zip(MESH_OFFSET, BALLS[CENTRED][0])], MESH_RESOLUTION, PROJECTION_SCALE,
    ) as session:
        yield session


def shaded(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: float = 12) -> np.ndarray:
    """Pixels showing ``colour`` lit: the colour times a lighting factor (at least 0.1).

    Neuroglancer shades meshes by multiplying the segment colour with a lighting factor, so a
    lit mesh shows scaled copies of its colour (seen: exactly, e.g. 243,0,0 for 255,0,0).
    """
    rgb = pixels[..., :3].astype(float)
    c = np.asarray(colour, dtype=float)
    factor = rgb @ c / (c @ c)
    off = np.abs(rgb - factor[..., None] * c).max(axis=-1)
    return (factor >= 0.1) & (off <= tolerance)


def projected_ball(labels: np.ndarray, segment: int) -> np.ndarray:
    """Canvas pixels (rows, columns) whose centre looks, along z, through a voxel of ``segment``.

    Orthographic, with the default orientation: screen x is +x, screen down is +y.
    """
    scale = PROJECTION_SCALE / CANVAS[1]  # voxels per pixel
    centre = BALLS[CENTRED][0]
    out = np.zeros((CANVAS[1], CANVAS[0]), dtype=bool)
    column = (labels == segment).any(axis=2)  # x, y
    index = []
    for axis in (0, 1):
        n = CANVAS[axis]
        index.append(np.floor(centre[axis] + (np.arange(n) + 0.5 - n / 2) * scale).astype(int))
    ix, iy = index
    cols = np.nonzero((ix >= 0) & (ix < labels.shape[0]))[0]
    rows = np.nonzero((iy >= 0) & (iy < labels.shape[1]))[0]
    out[np.ix_(rows, cols)] = column[np.ix_(ix[cols], iy[rows])].T
    return out


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("layer", list(MESH_FORMATS))
def test_mesh_rendered_in_3d_panel(
    mesh_viewer: Session, mesh_layers: dict[str, Any], layer: str
) -> None:
    """The client draws each selected segment's mesh in its colour where the object is, and nothing else."""
    viewer, page = mesh_viewer.viewer, mesh_viewer.page
    with viewer.txn() as s:
        for managed in s.layers:
            managed.visible = managed.name == layer
    try:
        # The last selection, none, is the negative control: no colour at all.
        for selected in ([CENTRED], [9], []):
            select_segments(viewer, layer, selected)
            pixels = screenshot(viewer, page)
            assert np.all(pixels[..., 3] == 255)
            drawn = np.zeros(pixels.shape[:2], dtype=bool)
            for segment, (_, _, colour) in BALLS.items():
                lit = shaded(pixels, colour)
                if segment not in selected:
                    assert not lit.any(), f"{lit.sum()} pixels in the colour of unselected segment {segment}"
                    continue
                want = projected_ball(mesh_layers["labels"], segment)
                overlap = (lit & want).sum() / (lit | want).sum()
                assert lit.sum() > 0.01 * lit.size, f"segment {segment}: only {lit.sum()} pixels in its colour"
                assert overlap > 0.9, f"segment {segment}: its mesh covers the wrong pixels (IoU {overlap:.2f})"
                drawn |= lit
            assert np.all(pixels[~drawn][:, :3] == PROJECTION_BACKGROUND), "something besides the meshes is drawn"
    finally:
        select_segments(viewer, layer, [CENTRED])
    # The meshes came from the format under test.
    fetched = [(url, status, req) for url, status, req, _ in mesh_viewer.responses if f"/{layer}/" in url]
    if layer in ("meshes_legacy", "meshes_bodies"):
        directory = MESH_FORMATS[layer][0]
        for name in (f"{directory}/{CENTRED}:0", f"{directory}/9:0"):  # the manifests, then their fragments
            assert any(url.endswith(f"/{layer}/{name}") and status == 200 for url, status, _ in fetched), name
    else:
        shards = [(status, req) for url, status, req in fetched if f"/{layer}/mesh_sharded/" in url
                  and url.endswith(".shard")]
        assert any(status == 206 and "range" in req for status, req in shards)
        assert not any(":0" in url for url, _, _ in fetched)


# --------------------------------------------------------------------------------------------
# Skeletons in the 3D panel

SKELETON_SIZE = (112, 48, 40)  # x, y, z
SKELETON_OFFSET = (10, 20, 30)
SKELETON_RESOLUTION = (8, 8, 8)
# Tubes: axis (0 = x, 1 = y), start and stop along it, centre on the other two axes (array voxel
# edges), radius (voxels) and the segment's fixed colour. Tube 5 crosses three 32^3 forge blocks
# along x, tube 9 one block face along y; seen along z, 9 crosses 5 (8 voxels further up in z).
TUBES = {5: (0, (6, 106), (20, 20), 4, (255, 0, 0)), 9: (1, (4, 44), (80, 12), 3, (0, 128, 255))}
# One layer per format, as for meshes: the info's "skeletons" names one directory.
SKELETON_FORMATS = {"skeletons_plain": ("skeletons", []), "skeletons_sharded": ("skeletons_sharded", ["--sharded"])}
SKELETON_CENTRE = (56, 24, 20)  # the view's centre (array voxels): the middle of tube 5 in x
SKELETON_SCALE = CANVAS[1]  # 1 pixel per voxel: tube 5 (100 voxels) fits the 128-pixel width
LINE_WIDTH = 3  # pixels: skeleton lines are 1 pixel wide by default
# Skeleton vertex attribute types Neuroglancer 2.41.2 can draw (newer clients add int32, uint32).
WEBGL_ATTRIBUTE_TYPES = ("float32",)


@pytest.fixture(scope="module")
def skeleton_layers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two labelled tubes, ingested twice and skeletonized in each format with ``pumice skeleton``.

    No ``pumice mesh``: the layers have no meshes, so whatever the client draws in the segments'
    colours in the 3D panel is the skeletons.
    """
    import json

    from pumice.cli.main import main

    root = tmp_path_factory.mktemp("skeletons")
    centres = np.meshgrid(*(np.arange(n) + 0.5 for n in SKELETON_SIZE), indexing="ij")  # voxel centres
    labels = np.zeros(SKELETON_SIZE, dtype=np.uint32)
    for segment, (axis, (start, stop), centre, radius, _) in TUBES.items():
        along = centres[axis]
        across = [c for i, c in enumerate(centres) if i != axis]
        inside = (along >= start) & (along < stop)
        inside &= (across[0] - centre[0]) ** 2 + (across[1] - centre[1]) ** 2 < radius**2
        labels[inside] = segment
    np.save(root / "tubes.npy", labels.transpose(2, 1, 0))
    for name, (skeleton_dir, options) in SKELETON_FORMATS.items():
        path = str(root / name)
        assert main(["ingest", str(root / "tubes.npy"), path, "--resolution", ",".join(map(str, SKELETON_RESOLUTION)),
                     "--offset", ",".join(map(str, SKELETON_OFFSET)), "--chunk-size", "32,32,32",
                     "--no-progress", "--workers", "1"]) == 0
        # Small objects: keep them, and their short end pieces within a block.
        assert main(["skeleton", path, "--dir", skeleton_dir, *options, "--shape", "32,32,32",
                     "--tick-threshold", "100", "--min-cable", "100", "--dust-threshold", "100",
                     "--no-progress", "--workers", "1"]) == 0
        info = json.loads((root / name / "info").read_text())
        assert info["skeletons"] == skeleton_dir and "mesh" not in info
    return {"dirs": {name: root / name for name in SKELETON_FORMATS}, "labels": labels}


@pytest.fixture(scope="module")
def skeleton_viewer(chromium: Any, skeleton_layers: dict[str, Any]) -> Iterator[Session]:
    """`pumice view` of the skeletonized layers in a 3D panel, tube 5 selected, lines widened."""
    with projection_viewer(
        chromium, skeleton_layers["dirs"], [5], {k: tube[-1] for k, tube in TUBES.items()},
        [o + c for o, c in zip(SKELETON_OFFSET, SKELETON_CENTRE)], SKELETON_RESOLUTION, SKELETON_SCALE,
    ) as session:
        with session.viewer.txn() as s:
            for name in SKELETON_FORMATS:
                s.layers[name].skeleton_rendering.line_width3d = LINE_WIDTH
        yield session


def load_errors(page: Any, layer: str, timeout: float = 10.0) -> list[str]:
    """Wait until the client has loaded, or failed to load, the data sources of ``layer``; the errors.

    Reads the client's state (``window.viewer``): a source that failed has ``loadState.error``.
    """
    # The layer may not be in the page yet (the state reaches it from Python a moment later): wait for it
    # too, instead of failing on an undefined layer (seen once in a full parallel run).
    sources = f"(viewer.layerManager.getLayerByName({layer!r})?.layer?.dataSources)"
    page.wait_for_function(f"() => {{ const s = {sources}; return !!s && s.length > 0 && "
                           f"s.every(d => d.loadState !== undefined); }}", timeout=timeout * 1000)
    return page.evaluate(f"() => {sources}.filter(d => d.loadState.error).map(d => String(d.loadState.error))")


def to_screen(point: float, axis: int) -> float:
    """Screen column (axis 0, x) or row (axis 1, y) whose pixel centre shows array coordinate ``point``.

    Pixel i's centre is at i; with the default orientation screen x is +x, screen down is +y.
    """
    scale = SKELETON_SCALE / CANVAS[1]  # voxels per pixel
    return (point - SKELETON_CENTRE[axis]) / scale + CANVAS[axis] / 2 - 0.5


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("layer", list(SKELETON_FORMATS))
def test_skeleton_rendered_in_3d_panel(skeleton_viewer: Session, skeleton_layers: dict[str, Any], layer: str) -> None:
    """The client draws each selected segment's skeleton, a line along its tube's axis, and nothing else."""
    import json

    skeleton_dir = SKELETON_FORMATS[layer][0]
    info = json.loads((skeleton_layers["dirs"][layer] / skeleton_dir / "info").read_text())
    unsupported = [a["id"] for a in info["vertex_attributes"] if a["data_type"] not in WEBGL_ATTRIBUTE_TYPES]
    assert not unsupported, f"Neuroglancer rejects a skeleton layer with non-float32 vertex attributes: {unsupported}"
    viewer, page = skeleton_viewer.viewer, skeleton_viewer.page
    with viewer.txn() as s:
        for managed in s.layers:
            managed.visible = managed.name == layer
    # A layer the client cannot load never lets viewer.screenshot return: fail fast and say why.
    assert not (errors := load_errors(page, layer)), f"Neuroglancer did not load {layer}: {errors}"
    try:
        # The last selection, none, is the negative control: no colour at all.
        for selected in ([5], [9], []):
            select_segments(viewer, layer, selected)
            pixels = screenshot(viewer, page)
            assert np.all(pixels[..., 3] == 255)
            drawn = np.zeros(pixels.shape[:2], dtype=bool)
            for segment, (axis, (start, stop), centre, radius, colour) in TUBES.items():
                lit = shaded(pixels, colour)
                if segment not in selected:
                    assert not lit.any(), f"{lit.sum()} pixels in the colour of unselected segment {segment}"
                    continue
                rows, cols = np.nonzero(lit)
                along, across = (cols, rows) if axis == 0 else (rows, cols)
                axis_at = to_screen(centre[0], 1 - axis)  # the tube's axis on screen
                first, last = to_screen(start + 0.5, axis), to_screen(stop - 0.5, axis)  # end voxels
                assert len(along) >= 0.9 * (last - first) * LINE_WIDTH, f"segment {segment}: only {len(along)} pixels"
                mean = across.mean()
                assert abs(mean - axis_at) < 1, f"segment {segment}: drawn at {mean:.1f}, not {axis_at}"
                # Every pixel within the tube (widened by the line) and the line along nearly all of it.
                assert np.all(np.abs(across - axis_at) <= radius + LINE_WIDTH), f"segment {segment} drawn off its tube"
                assert along.min() >= first - LINE_WIDTH and along.max() <= last + LINE_WIDTH
                assert along.max() - along.min() >= 0.9 * (last - first), f"segment {segment}: line too short"
                drawn |= lit
            assert np.all(pixels[~drawn][:, :3] == PROJECTION_BACKGROUND), "something besides the skeletons is drawn"
    finally:
        select_segments(viewer, layer, [5])
    # The skeletons came from the format under test.
    fetched = [(url, status, req) for url, status, req, _ in skeleton_viewer.responses if f"/{layer}/" in url]
    if layer == "skeletons_plain":
        for segment in TUBES:
            assert any(url.endswith(f"/{layer}/{skeleton_dir}/{segment}") and status == 200
                       for url, status, _ in fetched), segment
    else:
        shards = [(status, req) for url, status, req in fetched if f"/{layer}/{skeleton_dir}/" in url
                  and url.endswith(".shard")]
        assert any(status == 206 and "range" in req for status, req in shards)
        assert not any(url.endswith(f"/{skeleton_dir}/{segment}") for url, _, _ in fetched for segment in TUBES)


# --------------------------------------------------------------------------------------------
# Real data: the ISBI 2012 stack after `pumice contrast normalize` and `clahe`, as the client shows it

ISBI = Path(__file__).resolve().parents[3] / "shared" / "data" / "isbi2012_train_volume.tif"
ISBI_LAYERS = ("raw", "normalized", "clahe")
ISBI_CENTRE = (256, 256)  # voxel edges at the canvas centre


@pytest.fixture(scope="module")
def isbi_viewer(chromium: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Session, dict[str, Path]]]:
    from pumice.cli.main import main

    if not ISBI.exists():
        pytest.skip(f"{ISBI} is absent (real sample data lives in ../shared/data)")
    root = tmp_path_factory.mktemp("isbi")
    dirs = {name: root / name for name in ISBI_LAYERS}
    quiet = ["--no-progress", "--workers", "1"]
    assert main(["ingest", str(ISBI), str(dirs["raw"]), "--resolution", "4,4,50", "--chunk-size", "128,128,16", *quiet]) == 0
    assert main(["contrast", "levels", str(dirs["raw"]), *quiet]) == 0
    assert main(["contrast", "normalize", str(dirs["raw"]), str(dirs["normalized"]), *quiet]) == 0
    assert main(["contrast", "clahe", str(dirs["normalized"]), str(dirs["clahe"]), "--tile-size", "64", "--memory", "1MiB",
                 *quiet]) == 0
    try:
        served = serve([str(dirs[name]) for name in ISBI_LAYERS], layout="xy")
        with served.server as files:
            viewer = served.viewer
            with viewer.txn() as s:
                s.dimensions = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[4, 4, 50])
                s.cross_section_scale = 1
                s.show_axis_lines = False
                s.show_scale_bar = False
                s.show_default_annotations = False
                s.selected_layer.visible = False
                s.statistics.visible = False
                for name in ISBI_LAYERS:
                    s.layers[name].opacity = 1.0
                    s.layers[name].shader = "void main() { emitGrayscale(toNormalized(getDataValue())); }"
            session = open_page(chromium, viewer, served.url, files.base_url)
            try:
                yield session, dirs
            finally:
                session.page.close()
    finally:
        neuroglancer.stop()


@pytest.mark.slow
@pytest.mark.browser
def test_isbi_contrast_layers_shown_pixel_exact(isbi_viewer: tuple[Session, dict[str, Path]]) -> None:
    """Neuroglancer shows the normalized and CLAHE layers' voxels exactly, and they have more contrast."""
    from cloudvolume import CloudVolume

    session, dirs = isbi_viewer
    viewer, page = session.viewer, session.page
    z = 7
    spread = {}
    for name in ISBI_LAYERS:
        with viewer.txn() as s:
            s.position = [ISBI_CENTRE[0], ISBI_CENTRE[1], z + 0.5]
            for layer in s.layers:
                layer.visible = layer.name == name
        pixels = screenshot(viewer, page)
        x0, y0 = ISBI_CENTRE[0] - CANVAS[0] // 2, ISBI_CENTRE[1] - CANVAS[1] // 2
        want = np.asarray(CloudVolume(f"file://{dirs[name]}")[x0 : x0 + CANVAS[0], y0 : y0 + CANVAS[1], z])[:, :, 0, 0].T
        shown = pixels[..., 0]
        assert np.array_equal(shown, pixels[..., 1]) and np.array_equal(shown, pixels[..., 2])
        diff = shown != want
        assert not diff.any(), f"{name}: {diff.sum()} of {diff.size} pixels differ from the layer"
        assert any(f"/{name}/4_4_50/" in r[0] for r in session.responses)
        spread[name] = float(np.percentile(shown, 99) - np.percentile(shown, 1))
    assert spread["normalized"] > spread["raw"] and spread["clahe"] >= 0.9 * spread["normalized"], spread


@pytest.mark.slow
@pytest.mark.browser
def test_segment_properties_listed_with_their_values(chromium: Any, tmp_path: Path, cli: Any) -> None:
    """`pumice stats` writes segment properties; the real client lists every object in the layer's
    Seg. tab and, sorted by the voxels property, shows each object's count as the array has it."""
    data = np.zeros((40, 36, 6), np.uint64, order="F")  # x, y, z
    data[:10] = 5
    data[10:30, :20] = 77
    data[30:, :] = 2**40 + 3  # beyond 32 bits: ids travel as strings
    data[12:14, 25:27, 1:3] = 9  # a small one
    np.save(tmp_path / "seg.npy", data.transpose(2, 1, 0))
    code, _, err = cli("ingest", tmp_path / "seg.npy", tmp_path / "seg", "--type", "segmentation", "--resolution", "4,4,40",
                       "--no-progress")
    assert code == 0, err
    code, _, err = cli("stats", tmp_path / "seg", "--no-progress")
    assert code == 0, err
    ids, counts = np.unique(data[data > 0], return_counts=True)
    want = {str(int(i)): str(int(c)) for i, c in zip(ids, counts)}
    try:
        served = serve([str(tmp_path / "seg")], layout="xy")
        with served.server as files:
            name = served.sources[0][0]
            with served.viewer.txn() as s:
                s.selected_layer.layer = name
                s.selected_layer.visible = True
                s.layers[name].tab = "segments"
            session = open_page(chromium, served.viewer, served.url, files.base_url)
            try:
                page = session.page
                entries = ("() => Array.from(document.querySelectorAll('.neuroglancer-segment-list-entry'))"
                           ".map(e => e.innerText)")
                rows: list[str] = []
                deadline = time.monotonic() + SCREENSHOT_TIMEOUT
                while time.monotonic() < deadline and len(rows) <= len(want):  # the properties have loaded
                    rows = page.evaluate(entries)
                    time.sleep(0.2)
                query = page.locator("input[placeholder^='Enter ID']")
                while time.monotonic() < deadline and "voxels" not in rows[0]:
                    query.fill(">voxels")  # sort by the property: its column shows
                    time.sleep(0.5)
                    rows = page.evaluate(entries)
                assert "voxels" in rows[0], rows  # the header names the property
                shown = dict(row.split("\n") for row in rows[1:])
                assert shown == want
                assert [r.split("\n")[0] for r in rows[1:]] == sorted(want, key=lambda i: -int(want[i]))
            finally:
                session.page.close()
    finally:
        neuroglancer.stop()
