"""``pumice align SOURCE DEST``: a stack of sections aligned into a volume, with a report of its quality.

Two jobs, each of planned, resumable tasks:

1. **solve** (``plan``): features, match, solve.
   - **features** (per section): the section at the working scale (``--match-scale``, default so
     that its longer side is at most ``WORKING_SIDE`` pixels, area-averaged), its statistics, and
     OpenCV SIFT keypoints and descriptors (positions in full-resolution pixels).
   - **match** (per pair of a section and each of its next ``--depth`` neighbours): descriptors
     matched both ways with Lowe's ratio test, then RANSAC (OpenCV, a fixed seed) for an affine;
     phase correlation for a shift. OpenCV's ECC (affine, every pixel) refines the features'
     affine, or the shift where features are too few (small or smooth sections), and the better
     correlation wins: pairs agree to about 0.05 px where features alone agreed to 0.5. The pair
     keeps the transform, the method, the inliers, ECC's correlation, a grid of correspondences
     over its overlap for the solve, and whether features and phase correlation disagree (then it
     is flagged).
   - **solve** (one task): one least-squares solve over every pair at once (not a chain), for one
     transform per section, section pixels -> global pixels, with the first good section fixed:
     ``translation``; ``rigid`` (a similarity, then rotations kept and translations solved again);
     ``affine`` (linear parts from the pairs' own linear parts, pulled weakly toward the rigid
     rotations, then translations from the points; a solve on the points alone shrinks the stack,
     see ``_solve_linear``), dropped for rigid when it does not lower the residuals by
     ``AFFINE_GAIN`` and ``AFFINE_MIN_PX``. Pairs whose residual stands out are rejected and the
     solve repeated. Bad sections (blank, damaged, duplicated, jumping) are found from the
     sections' statistics and the pairs, reported by index with the reason, and handled by
     ``--bad-sections fail|skip|bridge``. Output: ``DEST/align/transforms.json`` and
     ``DEST/align/report.json`` (per pair inliers, residuals, the drift of the transforms along z,
     adjacent sections' normalized cross-correlation before and after) and ``report.png``.
2. **render** (``plan_render``, from a transforms file: ``--transforms FILE`` reuses one): every block
   of the output (tiles of whole z chunks) warps its sections' parts with OpenCV (bilinear), reading
   only the part of each section its tile needs, so a task holds its tile, never a whole section.

Determinism: every step is a pure function of the input (OpenCV's RANSAC is seeded), so the same
input gives the same transforms and bytes.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import PumiceError
from ..geometry import Bbox, format_vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import inputs, urls
from ..storage.info import LayerInfo, Scale, scale_key
from ..storage.blobs import pack, unpack
from ..storage.kv import open_kv
from ..storage.layer import Layer
from ..storage.sources import open_source

WORKING_SIDE = 1024  # px: the working scale's longer side, by default
MODELS = ("translation", "rigid", "affine")
BAD_SECTIONS = ("fail", "skip", "bridge")
MIN_INLIERS = 20
ECC_LEVELS = 2  # ECC coarse to fine: at most this many halvings
ECC_COARSEST = 96  # px: the shorter side of ECC's coarsest level at least this
ECC_CENTRAL_BELOW = 0.7  # sections whose ECC correlation is under this are fitted again ...
ECC_MARGIN = 0.12  # and then over a's centre: this share of each side off every edge (see refine_ecc)
ECC_SMOOTHING = 5  # px: ECC's Gaussian at its finest level
ECC_WANDER = 0.1  # ECC may change the start's linear part by this much (2 degrees, 2% scale and shear from an identity start: 0.07)
NO_DATA_AREA = 400  # px: a zero patch this large inside a section is no data (see no_data)
PHASE_COARSEST = 32  # px: phase correlation is tried on sections shrunk 4x if their shorter side stays this long
WEAK_INLIERS = 6  # fewer RANSAC inliers than MIN_INLIERS, but this many: a start for ECC, kept if it correlates
# ECC's correlation coefficient a pair must reach, by its start: from too few features, 0.8 (FIB-SEM
# neighbours correlate at 0.8-0.99); from phase correlation alone, 0.3 (ssTEM neighbours, 50 nm apart,
# share no SIFT features and correlate at about 0.4 once aligned).
MIN_CORRELATION = {"weak features": 0.8, "correlation": 0.3}
TYPICAL_SHARE = 0.9  # and, found without enough features, this share of the stack's median correlation (see drop_weak)
RANSAC_PX = 2.0  # inlier threshold at the working scale
RATIO = 0.75  # Lowe's ratio test
SIFT_FEATURES = 1500  # per section: a start for ECC, which does the fine work (4000 matched 5x slower, no better)
SAMPLES = 400  # inlier correspondences per pair kept for the solve
AFFINE_GAIN = 0.97  # affine is kept only if it brings the residuals below this fraction of rigid's
AFFINE_MIN_PX = 0.1  # and by this much (full-resolution px): pairs refined densely fit rigid data within hundredths
REGULARIZE = 0.005  # affine: weight of a section's "stay rigid" beside one pair's equations (see _solve_linear)
JUMP_PX = 60.0  # a section this far (full-resolution px) from where its neighbours put it is a jump
FLAG_PX = 2.0  # a pair whose residual after the solve exceeds this is flagged
FEW_MATCHES = 0.25  # a section whose pairs with both neighbours hold under this share of the usual inliers is damaged
DISAGREE_PX = 8.0  # features vs phase correlation: more apart than this (working px) is a disagreement


# -- sections ---------------------------------------------------------------------------------------
def read_section(source_path: str, z: int, box: tuple[int, int, int, int] | None = None, pad: bool = False) -> np.ndarray:
    """Section ``z`` (rows y, columns x) or its part ``box`` = (x0, y0, x1, y1)."""
    source = open_source(source_path, pad=pad)
    x0, y0, x1, y1 = box if box is not None else (0, 0, source.shape[0], source.shape[1])
    data = source.read(Bbox((x0, y0, z), (x1, y1, z + 1)))
    return np.ascontiguousarray(data[:, :, 0, 0].T)


def working_image(section: np.ndarray, scale: float) -> np.ndarray:
    """The section at the working scale as uint8 (1st to 99th percentile stretched to 1..255; 0 where
    the section is 0, as padding and no data are): what SIFT, ECC and the reports see."""
    import cv2

    if scale != 1:  # shrunk in the section's own type: a float copy of a 4096^2 section was 64 MiB
        size = (max(1, round(section.shape[1] * scale)), max(1, round(section.shape[0] * scale)))
        image = cv2.resize(section, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    else:
        image = section.astype(np.float32)
    empty = no_data(image)  # kept 0, and only it
    seen = image[~empty]
    lo, hi = np.percentile(seen, [1, 99]) if seen.size else (0, 1)
    stretched = 1 + (image - lo) * (254.0 / max(hi - lo, 1e-6))
    out = np.clip(stretched, 1, 255).astype(np.uint8)
    out[empty] = 0
    return out


def no_data(image: np.ndarray) -> np.ndarray:
    """Zeros that are padding or outside a section: zero patches that touch the image's edge or cover
    at least NO_DATA_AREA pixels, not the odd dark pixel of real tissue."""
    import cv2

    zeros = (image == 0).astype(np.uint8)
    if not zeros.any():
        return zeros.astype(bool)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(zeros, connectivity=8)
    x, y, w, h, area = (stats[:, k] for k in range(5))
    height, width = image.shape[:2]
    keep = (x == 0) | (y == 0) | (x + w == width) | (y + h == height) | (area >= NO_DATA_AREA)
    keep[0] = False  # label 0: the non-zero pixels
    return keep[labels]


def section_stats(section: np.ndarray) -> np.ndarray:
    """Mean, standard deviation and the commonest value's share of a section; from a histogram for
    integer sections (no float copy of the section: memory stays a section's own size)."""
    if section.dtype.kind == "u":
        counts = np.bincount(section.ravel()).astype(np.float64)
        values = np.arange(len(counts), dtype=np.float64)
        total = counts.sum()
        mean = float((counts * values).sum() / total)
        std = float(np.sqrt(max((counts * (values - mean) ** 2).sum() / total, 0.0)))
        return np.array([mean, std, float(counts.max() / total)])
    _, counts = np.unique(section, return_counts=True)
    return np.array([float(section.mean(dtype=np.float64)), float(section.std(dtype=np.float64)),
                     float(counts.max() / section.size)])


def to_full(points: np.ndarray, scale: float) -> np.ndarray:
    """Working-scale pixel positions (centres) to full-resolution ones."""
    return (points + 0.5) / scale - 0.5


@register("align.features")
@dataclass(frozen=True)
class FeaturesTask(Task):
    source: str
    z: int
    scale: float
    work: str
    pad: bool = False

    def run(self) -> dict[str, Any]:
        import cv2

        section = read_section(self.source, self.z, pad=self.pad)
        image = working_image(section, self.scale)
        stats = section_stats(section)
        sift = cv2.SIFT_create(nfeatures=SIFT_FEATURES)
        keypoints, descriptors = sift.detectAndCompute(image, None)
        points = np.array([k.pt for k in keypoints], np.float64).reshape(-1, 2)
        descriptors = descriptors if descriptors is not None else np.zeros((0, 128), np.float32)
        kv = open_kv(self.work)
        kv.put(f"features/{self.z}", pack(points=to_full(points, self.scale), descriptors=descriptors, image=image))
        kv.put(f"stats/{self.z}", json.dumps({"mean": stats[0], "std": stats[1], "one_value": stats[2],
                                             "keypoints": len(points)}).encode())
        return {"keypoints": len(points)}


def match_pair(a: dict[str, np.ndarray], b: dict[str, np.ndarray], scale: float) -> dict[str, Any]:
    """Section b's points mapped onto section a's (full-resolution px).

    Two estimates, then a dense refinement: SIFT matches (ratio test both ways) with RANSAC give an
    affine and its inliers; phase correlation gives a shift. ECC (OpenCV's enhanced correlation,
    affine, on every pixel the sections share) refines the features' affine, or the shift where
    the features are too few (small or smooth sections); the refinement with the higher correlation
    is kept. A sample of correspondences (a grid over the part of a that b covers) goes to the
    solve. The features and phase correlation must agree where both apply (else: flagged)."""
    import cv2

    out: dict[str, Any] = {"ok": False, "matches": 0, "inliers": 0}
    shift = phase_shift(a["image"], b["image"])
    phase, response = shift[:2] / scale, float(shift[2])
    out["phase_shift"], out["phase_response"] = phase.tolist(), response
    features = weak = None
    if len(a["descriptors"]) < MIN_INLIERS or len(b["descriptors"]) < MIN_INLIERS:
        out["reason"] = "too few features"
    else:
        matcher = cv2.BFMatcher(cv2.NORM_L2)
        forward = matcher.knnMatch(b["descriptors"], a["descriptors"], k=2)
        backward = {m[0].queryIdx: m[0].trainIdx for m in matcher.knnMatch(a["descriptors"], b["descriptors"], k=2)
                    if len(m) == 2 and m[0].distance < RATIO * m[1].distance}
        pairs = [(m[0].queryIdx, m[0].trainIdx) for m in forward
                 if len(m) == 2 and m[0].distance < RATIO * m[1].distance and backward.get(m[0].trainIdx) == m[0].queryIdx]
        out["matches"] = len(pairs)
        if len(pairs) < WEAK_INLIERS:
            out["reason"] = f"{len(pairs)} matches"
        else:
            index = np.array(pairs)
            pb, pa = b["points"][index[:, 0]], a["points"][index[:, 1]]
            cv2.setRNGSeed(0)
            model, mask = cv2.estimateAffine2D(pb.astype(np.float32), pa.astype(np.float32), method=cv2.RANSAC,
                                               ransacReprojThreshold=RANSAC_PX / scale, maxIters=5000,
                                               confidence=0.999, refineIters=10)
            keep = mask.ravel().astype(bool) if model is not None else np.zeros(len(pairs), bool)
            out["inliers"] = int(keep.sum())
            if model is None:
                out["reason"] = "RANSAC found no model"
            elif out["inliers"] < MIN_INLIERS:
                out["reason"] = f"{out['inliers']} inliers"
                if out["inliers"] >= WEAK_INLIERS:
                    weak = model  # too few to trust alone; a start for ECC, which must then correlate well
            else:
                features = model
                residual = np.linalg.norm(pb[keep] @ model[:, :2].T + model[:, 2] - pa[keep], axis=1)
                out.update(feature_rms=float(np.sqrt((residual ** 2).mean())), feature_max=float(residual.max()))
    starts = [("features", features)] if features is not None else []
    starts += [("weak features", weak)] if weak is not None else []
    starts.append(("correlation", np.array([[1.0, 0, phase[0]], [0, 1.0, phase[1]]])))
    if min(a["image"].shape[:2]) >= 4 * PHASE_COARSEST:  # and on the images shrunk 4x: sections that differ much (ssTEM)
        for coarse in (phase_shift(a["image"], b["image"], 4)[:2] / scale, template_shift(a["image"], b["image"], 4) / scale):
            if all(np.abs(coarse - np.asarray(m)[:, 2]).max() * scale > 2 for _, m in starts):
                starts.append(("correlation", np.array([[1.0, 0, coarse[0]], [0, 1.0, coarse[1]]])))
    best = None
    for method, start in starts:
        refined = refine_ecc(a["image"], b["image"], start, scale)
        if refined is None or refined[1] < MIN_CORRELATION.get(method, 0.0):
            continue
        if best is None or refined[1] > best[2] + 0.02:
            best = (method, *refined)
        if best is not None and best[0] == "features" and best[2] > 0.5:
            break  # the features' answer refined well: no need for the second start
    if best is None and features is None:
        out["reason"] = out.get("reason", "no match") + f"; ECC from {' and '.join(m for m, _ in starts)} did not converge"
        return out
    if best is None:  # ECC failed from the features' answer: keep it as RANSAC fitted it
        method, model, correlation = "features", features, 0.0
    else:
        method, model, correlation = best
    grid = _overlap_grid(a["image"].shape, b["image"].shape, model, scale)
    if len(grid) < 3:
        out["reason"] = "the sections do not overlap"
        return out
    sample_a, sample_b = grid, (grid - model[:, 2]) @ np.linalg.inv(model[:, :2]).T
    centre = np.array([a["image"].shape[1], a["image"].shape[0]]) / scale / 2
    content_shift = (centre @ model[:, :2].T + model[:, 2]) - centre  # where b's centre content sits in a
    out.pop("reason", None)
    out.update(ok=True, method=method, model=model.tolist(), correlation=float(correlation),
               feature_shift=content_shift.tolist(),
               disagree=features is not None and (
                   bool(np.abs(features - model)[:, 2].max() * scale > DISAGREE_PX) or
                   comparable(model, response) and bool(np.linalg.norm(content_shift - phase) * scale > DISAGREE_PX)),
               sample_a=sample_a.tolist(), sample_b=sample_b.tolist())
    return out


def comparable(model: np.ndarray, response: float) -> bool:
    """Whether phase correlation can check the features' answer: a clear peak, and a model close to a
    translation (phase correlation sees no rotation or scale)."""
    linear = np.asarray(model)[:, :2]
    return response > 0.05 and bool(np.abs(linear - np.eye(2)).max() < 0.005)


def refine_ecc(a: np.ndarray, b: np.ndarray, model: np.ndarray, scale: float) -> tuple[np.ndarray, float] | None:
    """An affine (b -> a, full-resolution px) refined by OpenCV's ECC on the working images, coarse to
    fine (halved while the shorter side stays at least ECC_COARSEST px, up to ECC_LEVELS halvings:
    a start several pixels off, or a rotation phase correlation cannot see, still converges): the
    refined affine and its correlation coefficient at full working resolution; None if ECC does not
    converge there or wanders far from the start.

    Sections that differ much (ECC's correlation under ECC_CENTRAL_BELOW: ssTEM neighbours correlate
    at about 0.4, FIB-SEM neighbours at 0.95) are fitted once more over a's centre only (ECC_MARGIN
    of each side off every edge), so that the pixels compared do not depend on where b lies: over
    "every pixel of a that b covers", such a pair's answer moved with the overlap (ISBI pairs with
    one section perturbed by a known affine: 0.61 px median, against 0.04 px over a's centre). Near-
    identical sections keep the larger area, which averages better (FIB-SEM stacks warped by known
    affines agreed to 0.044 px per pair over everything, 0.09 over the centre). The correlation
    returned, which decides whether a pair is trusted, is the first fit's."""
    import cv2

    # At the working scale, pixel centres: p_work = (p_full + 0.5) * scale - 0.5.
    to_work = _centres(scale)
    full = np.vstack([model, [0, 0, 1]])
    a_to_b = to_work @ np.linalg.inv(full) @ np.linalg.inv(to_work)  # ECC warps the template (a) into b
    levels = 0
    while levels < ECC_LEVELS and min(a.shape[:2] + b.shape[:2]) / 2 ** (levels + 1) >= ECC_COARSEST:
        levels += 1
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6)
    correlation = 0.0
    for level in range(levels, -1, -1):
        factor = 2 ** level
        to_level = _centres(1 / factor)
        ak, bk = (_shrunk(image, factor).astype(np.float32) for image in (a, b))
        a_mask, b_mask = _with_data(a, factor), _with_data(b, factor)  # 0 is padding: it would pull the fit
        warp = (to_level @ a_to_b @ np.linalg.inv(to_level))[:2].astype(np.float32)
        try:
            correlation, warp = cv2.findTransformECCWithMask(ak, bk, a_mask, b_mask, warp, cv2.MOTION_AFFINE, criteria,
                                                             ECC_SMOOTHING if level == 0 else 3)
        except cv2.error:
            if level == 0:
                return None
            continue  # a coarse level that does not converge: the finer ones start where this one started
        a_to_b = np.linalg.inv(to_level) @ np.vstack([warp.astype(np.float64), [0, 0, 1]]) @ to_level
    if correlation < ECC_CENTRAL_BELOW:  # sections that differ: fit again over a's centre only
        try:
            _, warp = cv2.findTransformECCWithMask(ak, bk, _central(a_mask, ECC_MARGIN), b_mask, warp, cv2.MOTION_AFFINE,
                                                   criteria, ECC_SMOOTHING)
            a_to_b = np.vstack([warp.astype(np.float64), [0, 0, 1]])
        except cv2.error:
            pass  # the fit over everything they share stands
    refined = np.linalg.inv(to_work) @ np.linalg.inv(a_to_b) @ to_work
    if np.abs(refined[:2, :2] - model[:, :2]).max() > ECC_WANDER or np.abs(refined[:2, 2] - model[:, 2]).max() > 20 / scale:
        return None  # ECC wandered off: keep the start
    return refined[:2], float(correlation)


def _with_data(image: np.ndarray, factor: int) -> np.ndarray:
    """The mask (uint8) of an image's pixels with data at ``factor`` times coarser: not 0 (padding)."""
    if image.min() > 0:
        width, height = _shrunk_size(image, factor)
        return np.ones((height, width), np.uint8)
    return (_shrunk((image > 0).astype(np.float32), factor) > 0.99).astype(np.uint8)


def _central(mask: np.ndarray, margin: float) -> np.ndarray:
    """``mask`` without a band of ``margin`` times each side's length along every edge."""
    height, width = mask.shape
    dy, dx = round(height * margin), round(width * margin)
    out = np.zeros_like(mask)
    out[dy:height - dy, dx:width - dx] = mask[dy:height - dy, dx:width - dx]
    return out


def _centres(scale: float) -> np.ndarray:
    """Pixel positions (centres) at one scale to another ``scale`` times finer/coarser: p' = (p + 0.5) s - 0.5."""
    return np.array([[scale, 0, 0.5 * scale - 0.5], [0, scale, 0.5 * scale - 0.5], [0, 0, 1]])


def _shrunk(image: np.ndarray, factor: int) -> np.ndarray:
    import cv2

    if factor == 1:
        return image
    return cv2.resize(image.astype(np.float32), _shrunk_size(image, factor), interpolation=cv2.INTER_AREA)


def _shrunk_size(image: np.ndarray, factor: int) -> tuple[int, int]:
    """(width, height) of ``image`` shrunk ``factor`` times, as _shrunk makes it."""
    return max(1, round(image.shape[1] / factor)), max(1, round(image.shape[0] / factor))


def _overlap_grid(shape_a: tuple, shape_b: tuple, model: np.ndarray, scale: float, step: int = 16) -> np.ndarray:
    """Full-resolution points of a, on a grid, whose place in b (through the model's inverse) is inside b."""
    height, width = (s / scale for s in shape_a[:2])
    xs, ys = np.meshgrid(np.linspace(0, width - 1, step), np.linspace(0, height - 1, step))
    grid = np.stack([xs.ravel(), ys.ravel()], 1)
    inside_b = (grid - model[:, 2]) @ np.linalg.inv(model[:, :2]).T
    hb, wb = (s / scale for s in shape_b[:2])
    keep = (inside_b[:, 0] >= 0) & (inside_b[:, 0] <= wb - 1) & (inside_b[:, 1] >= 0) & (inside_b[:, 1] <= hb - 1)
    return grid[keep]


def phase_shift(a: np.ndarray, b: np.ndarray, factor: int = 1) -> np.ndarray:
    """(dx, dy) that moves b's content onto a's, by phase correlation (working px), on the images
    shrunk by ``factor`` (coarser: blind to small rotations and to fine differences between sections)."""
    import cv2

    a, b = _shrunk(a, factor).astype(np.float32), _shrunk(b, factor).astype(np.float32)
    window = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(b, a, window)
    return np.array([dx * factor, dy * factor, response])


def template_shift(a: np.ndarray, b: np.ndarray, factor: int) -> np.ndarray:
    """(dx, dy) that moves b's content onto a's (working px): b's central half found in a by normalized
    cross-correlation, on both shrunk by ``factor`` (where phase correlation's peak drowns: sections
    that share only their larger shapes)."""
    import cv2

    a, b = _shrunk(a, factor).astype(np.float32), _shrunk(b, factor).astype(np.float32)
    height, width = b.shape[:2]
    y0, x0 = height // 4, width // 4
    template = b[y0:y0 + height // 2, x0:x0 + width // 2]
    scores = cv2.matchTemplate(a, template, cv2.TM_CCOEFF_NORMED)
    _, _, _, (x, y) = cv2.minMaxLoc(scores)
    return np.array([(x - x0) * factor, (y - y0) * factor], np.float64)


@register("align.match")
@dataclass(frozen=True)
class MatchTask(Task):
    a: int
    b: int
    scale: float
    work: str

    def run(self) -> dict[str, Any]:
        kv = open_kv(self.work)
        first, second = (unpack(kv.get(f"features/{z}")) for z in (self.a, self.b))
        result = match_pair(first, second, self.scale)
        result["ncc"] = ncc(first["image"], second["image"])
        kv.put(f"pairs/{self.a}-{self.b}", json.dumps(result).encode())
        return {"pairs_matched": int(result["ok"])}


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalized cross-correlation of two images (over ``mask``)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


# -- the solve --------------------------------------------------------------------------------------
def drop_weak(pairs: dict[tuple[int, int], dict]) -> int:
    """Pairs found without enough features (weak features, phase correlation) that correlate under
    TYPICAL_SHARE of the stack's median after ECC are dropped: the absolute floor has to admit
    ssTEM's 0.4, where a FIB-SEM pair at 0.8 is wrong. Returns how many were dropped."""
    found = [p["correlation"] for p in pairs.values() if p.get("ok")]
    if not found:
        return 0
    floor = TYPICAL_SHARE * float(np.median(found))
    dropped = 0
    for key, pair in pairs.items():
        if pair.get("ok") and pair.get("method") != "features" and pair["correlation"] < floor:
            pairs[key] = {**pair, "ok": False, "reason": f"found by {pair['method']}, correlates at {pair['correlation']:.2f} "
                                                        f"(the stack's pairs: {floor / TYPICAL_SHARE:.2f})"}
            dropped += 1
    return dropped


def solve_transforms(n: int, pairs: dict[tuple[int, int], dict], model: str, fixed: int,
                     exclude: set[int]) -> tuple[np.ndarray, dict[tuple[int, int], float], str]:
    """One affine (2 x 3, section px -> global px) per section from every pair's correspondences,
    section ``fixed`` the identity; sections in ``exclude`` get none (NaN). Returns the transforms,
    each used pair's residual RMS, and the model used."""
    used = {k: v for k, v in pairs.items() if v.get("ok") and k[0] not in exclude and k[1] not in exclude}
    rigid = _solve(n, used, "similarity", fixed)
    rigid = _rigidify(n, used, rigid, fixed)
    chosen, name = (rigid, "rigid") if model == "rigid" else (None, model)
    if model == "translation":
        chosen = _solve(n, used, "translation", fixed)
    elif model == "affine":
        affine = _with_linear(n, used, _solve_linear(n, used, fixed, rigid[:, :, :2]), fixed)
        rigid_rms, affine_rms = _rms(rigid, used), _rms(affine, used)
        if affine_rms < AFFINE_GAIN * rigid_rms and rigid_rms - affine_rms > AFFINE_MIN_PX:
            chosen = affine
        else:
            chosen, name = rigid, "rigid (affine not supported by the data)"
    residuals = {k: _pair_rms(chosen, k, v) for k, v in used.items()}
    for z in exclude:
        chosen[z] = np.nan
    return chosen, residuals, name


def _equations(n: int, pairs: dict, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Sparse rows (row, column, value) and right-hand sides of T_a(p_a) - T_b(p_b) = 0, two rows
    (x, y) per correspondence of every pair."""
    per = {"translation": 2, "similarity": 4}[kind]
    rows, cols, vals, rhs = [], [], [], []
    r = 0
    for (a, b), pair in sorted(pairs.items()):
        pa, pb = np.asarray(pair["sample_a"], np.float64), np.asarray(pair["sample_b"], np.float64)
        m = len(pa)
        ex, ey = r + 2 * np.arange(m), r + 2 * np.arange(m) + 1  # the x and the y equation of each point
        for z, p, sign in ((a, pa, 1.0), (b, pb, -1.0)):
            x, y, one = p[:, 0], p[:, 1], np.ones(m)
            base = z * per
            if kind == "translation":
                terms = [(ex, base, sign * one), (ey, base + 1, sign * one)]
            else:  # similarity: [s -r; r s] p + t
                terms = [(ex, base, sign * x), (ex, base + 1, -sign * y), (ex, base + 2, sign * one),
                         (ey, base, sign * y), (ey, base + 1, sign * x), (ey, base + 3, sign * one)]
            for row, col, value in terms:
                rows.append(row)
                cols.append(np.full(m, col))
                vals.append(value)
        right = np.zeros(2 * m)
        if kind == "translation":  # t_a - t_b = p_b - p_a
            right[0::2], right[1::2] = pb[:, 0] - pa[:, 0], pb[:, 1] - pa[:, 1]
        rhs.append(right)
        r += 2 * m
    join = (lambda parts: np.concatenate(parts) if parts else np.zeros(0))
    return join(rows).astype(np.int64), join(cols).astype(np.int64), join(vals), join(rhs), r


def _solve(n: int, pairs: dict, kind: str, fixed: int) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    per = {"translation": 2, "similarity": 4}[kind]
    rows, cols, vals, rhs, r = _equations(n, pairs, kind)
    rows, cols, vals, rhs = rows.tolist(), cols.tolist(), vals.tolist(), rhs.tolist()
    # The gauge: section ``fixed`` is the identity, as strong equations.
    identity = {"translation": [0, 0], "similarity": [1, 0, 0, 0]}[kind]
    weight = 1e6
    for k, value in enumerate(identity):
        rows.append(r)
        cols.append(fixed * per + k)
        vals.append(weight)
        rhs.append(weight * value)
        r += 1
    # Sections no pair reaches would leave the system singular: hold them at the identity, weakly.
    reached = {z for pair in pairs for z in pair} | {fixed}
    weak = 1e-6
    for z in range(n):
        weights = weak if z in reached else 1.0
        for k, value in enumerate(identity):
            rows.append(r)
            cols.append(z * per + k)
            vals.append(weights)
            rhs.append(weights * value)
            r += 1
    a = coo_matrix((vals, (rows, cols)), shape=(r, n * per)).tocsr()
    x = spsolve((a.T @ a).tocsc(), a.T @ np.asarray(rhs, np.float64))
    x = np.asarray(x).reshape(n, per)
    out = np.zeros((n, 2, 3))
    if kind == "translation":
        out[:, 0, 0] = out[:, 1, 1] = 1
        out[:, :, 2] = x
    else:  # similarity
        out[:, 0, 0], out[:, 0, 1], out[:, 0, 2] = x[:, 0], -x[:, 1], x[:, 2]
        out[:, 1, 0], out[:, 1, 1], out[:, 1, 2] = x[:, 1], x[:, 0], x[:, 3]
    return out


def _rigidify(n: int, pairs: dict, similarity: np.ndarray, fixed: int) -> np.ndarray:
    """Rotations from the similarity solve (scale dropped), then translations solved again."""
    angle = np.arctan2(similarity[:, 1, 0], similarity[:, 0, 0])
    rotation = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], 1)
    return _with_linear(n, pairs, rotation, fixed)


def _solve_linear(n: int, pairs: dict, fixed: int, rigid: np.ndarray) -> np.ndarray:
    """Affine linear parts (n x 2 x 2) from the pairs' own models: L_a M = L_b for the pair (a, b)
    whose model maps b onto a with linear part M; section ``fixed`` the identity; each section pulled
    toward its rigid rotation with weight REGULARIZE (one pair's equations weigh 1).

    Not from the points, as the translations are: residuals between points in the global frame
    shrink with the transforms, so a point solve buys smaller residuals downstream by shrinking
    every section a little (a chain of pairs came out 13% smaller after 120 sections). Here a chain
    of pairs is met exactly; only the small disagreements around loops of pairs are left to spread.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    rhs: list[float] = []

    def equation(terms: list[tuple[int, float]], value: float) -> None:
        for col, val in terms:
            rows.append(len(rhs))
            cols.append(col)
            vals.append(val)
        rhs.append(value)

    # Unknowns: section z's L as 4 values (l00, l01, l10, l11) at 4z. Row i of L_a M: l_i0 M00 + l_i1 M10, ...
    for (a, b), pair in sorted(pairs.items()):
        m = np.asarray(pair["model"], np.float64)[:, :2]
        for i in range(2):
            for j in range(2):
                equation([(4 * b + 2 * i + j, 1.0), (4 * a + 2 * i, -m[0, j]), (4 * a + 2 * i + 1, -m[1, j])], 0.0)
    reached = {z for pair in pairs for z in pair} | {fixed}
    for z in range(n):
        weight = 1e3 if z == fixed else REGULARIZE if z in reached else 1.0
        target = np.eye(2) if z == fixed else rigid[z]
        for k in range(4):
            equation([(4 * z + k, weight)], weight * float(target.flat[k]))
    a = coo_matrix((vals, (rows, cols)), shape=(len(rhs), 4 * n)).tocsr()
    x = spsolve((a.T @ a).tocsc(), a.T @ np.asarray(rhs))
    return np.asarray(x).reshape(n, 2, 2)


def _with_linear(n: int, pairs: dict, linear: np.ndarray, fixed: int) -> np.ndarray:
    """Transforms with the given linear parts and the translations that then best join the pairs'
    points (a linear problem in the translations alone)."""
    moved = {k: {**v, "sample_a": (np.asarray(v["sample_a"]) @ linear[k[0]].T).tolist(),
                 "sample_b": (np.asarray(v["sample_b"]) @ linear[k[1]].T).tolist()} for k, v in pairs.items()}
    shifts = _solve(n, moved, "translation", fixed)
    out = np.zeros((n, 2, 3))
    out[:, :, :2] = linear
    out[:, :, 2] = shifts[:, :, 2]
    return out


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points) @ transform[:, :2].T + transform[:, 2]


def _pair_rms(transforms: np.ndarray, key: tuple[int, int], pair: dict) -> float:
    a, b = key
    gap = apply(transforms[a], pair["sample_a"]) - apply(transforms[b], pair["sample_b"])
    return float(np.sqrt((gap ** 2).sum(axis=1).mean()))


def _rms(transforms: np.ndarray, pairs: dict) -> float:
    return float(np.sqrt(np.mean([_pair_rms(transforms, k, v) ** 2 for k, v in pairs.items()]))) if pairs else 0.0


# -- defects ----------------------------------------------------------------------------------------
def find_defects(n: int, stats: list[dict], pairs: dict[tuple[int, int], dict]) -> dict[int, str]:
    """Sections that should not be aligned as they are, with the reason: blank, damaged (much of it
    one value, or too few matches with both neighbours), duplicated (equal to the one before), or
    jumping (its content moved far more than the stack's sections usually do)."""
    bad: dict[int, str] = {}
    for z, st in enumerate(stats):
        if st["keypoints"] < MIN_INLIERS or st["one_value"] > 0.95:
            bad[z] = "blank (no features)" if st["keypoints"] < MIN_INLIERS else "blank (one value)"
        elif st["one_value"] > 0.2:
            bad[z] = f"damaged ({st['one_value']:.0%} of it is one value)"
    adjacent = {z: pairs.get((z, z + 1), {}) for z in range(n - 1)}
    # features' pairs are judged by their inliers; pairs found by correlation (no features to count)
    # passed ECC's correlation and the stack's (drop_weak) and stand as found
    inliers = [p["inliers"] for p in adjacent.values() if p.get("ok") and p.get("method") == "features"]
    typical = float(np.median(inliers)) if inliers else 0.0
    shifts = [np.hypot(*p["feature_shift"]) for p in adjacent.values() if p.get("ok")]
    usual = float(np.median(shifts)) if shifts else 0.0
    for z in range(n):
        if z in bad:
            continue
        before, after = adjacent.get(z - 1, {}), adjacent.get(z, {})
        if before.get("ok") and before.get("ncc", 0) > 0.999:
            bad[z] = f"duplicate of section {z - 1}"
            continue
        near = [p for p in (before, after) if p]
        if near and all(not p.get("ok") or (p.get("method") == "features" and p["inliers"] < FEW_MATCHES * typical)
                        for p in near):
            bad[z] = "damaged (few matches with its neighbours)"
            continue
        if before.get("ok") and after.get("ok"):
            jump_in, jump_out = np.hypot(*before["feature_shift"]), np.hypot(*after["feature_shift"])
            if min(jump_in, jump_out) > usual + JUMP_PX:
                bad[z] = f"jumps {min(jump_in, jump_out):.0f} px from its neighbours"
    return bad


@register("align.solve")
@dataclass(frozen=True)
class SolveTask(Task):
    work: str
    sections: int
    depth: int
    model: str
    bad_sections: str
    scale: float
    shape: tuple  # X, Y of a section

    def run(self) -> dict[str, Any]:
        kv = open_kv(self.work)
        n = self.sections
        stats = [json.loads(blob) for blob in kv.get_many([f"stats/{z}" for z in range(n)])]
        pairs = {}
        for a in range(n):
            for b in range(a + 1, min(n, a + self.depth + 1)):
                pairs[(a, b)] = json.loads(kv.get(f"pairs/{a}-{b}"))
        drop_weak(pairs)
        bad = find_defects(n, stats, pairs)
        if bad and self.bad_sections == "fail":
            listed = "; ".join(f"{z}: {why}" for z, why in sorted(bad.items()))
            raise PumiceError(f"bad sections: {listed}. Rerun with --bad-sections skip (left blank) or bridge (placed "
                              f"from their neighbours)")
        good = [z for z in range(n) if z not in bad]
        if not good:
            raise PumiceError("no section can be aligned: every one is blank or damaged")
        transforms, residuals, used_model = solve_transforms(n, pairs, self.model, good[0], set(bad))
        rejected: list[tuple[int, int]] = []
        for _ in range(3):  # robust: pairs whose residual stands out are dropped and the solve repeated
            values = np.array(list(residuals.values()))
            if not len(values):
                break
            limit = max(5 * float(np.median(values)), FLAG_PX)
            worst = [k for k, v in residuals.items() if v > limit]
            if not worst:
                break
            rejected += worst
            for k in worst:
                pairs[k] = {**pairs[k], "ok": False, "reason": f"rejected by the solve (residual {residuals[k]:.1f} px)"}
            transforms, residuals, used_model = solve_transforms(n, pairs, self.model, good[0], set(bad))
        if self.bad_sections == "bridge":
            transforms = bridged(transforms, bad)
        record = {"model": used_model, "requested_model": self.model, "sections": n, "section_shape": list(self.shape),
                  "transforms": [None if np.isnan(t).any() else t.tolist() for t in transforms],
                  "bad_sections": {str(z): why for z, why in sorted(bad.items())}, "bad_sections_handling": self.bad_sections}
        record["bounds"] = output_bounds(record)
        kv.put("solved", json.dumps(record).encode())
        kv.put("pair_results", json.dumps({f"{a}-{b}": {k: v for k, v in p.items() if not k.startswith("sample")}
                                           | ({"residual_after": residuals[(a, b)]} if (a, b) in residuals else {})
                                           for (a, b), p in pairs.items()}).encode())
        return {"pairs_used": len(residuals), "pairs_rejected": len(rejected), "bad_sections": len(bad)}


def bridged(transforms: np.ndarray, bad: dict[int, str]) -> np.ndarray:
    """Bad sections placed between their nearest good neighbours (their transforms interpolated)."""
    out = transforms.copy()
    good = [z for z in range(len(transforms)) if z not in bad]
    for z in bad:
        lower = max((g for g in good if g < z), default=None)
        upper = min((g for g in good if g > z), default=None)
        if lower is None or upper is None:
            out[z] = transforms[upper if lower is None else lower]
        else:
            w = (z - lower) / (upper - lower)
            out[z] = (1 - w) * transforms[lower] + w * transforms[upper]
    return out


def output_bounds(record: dict) -> list[int]:
    """The global box (x0, y0, x1, y1, whole pixels) holding every placed section."""
    width, height = record["section_shape"]
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64) - 0.5
    placed = [apply(np.asarray(t), corners) for t in record["transforms"] if t is not None]
    points = np.concatenate(placed)
    lo, hi = np.floor(points.min(0) + 0.5), np.ceil(points.max(0) + 0.5)
    return [int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])]


# -- the report -------------------------------------------------------------------------------------
@register("align.quality")
@dataclass(frozen=True)
class QualityTask(Task):
    """Adjacent sections' normalized cross-correlation before and after, at the working scale."""

    work: str
    a: int
    scale: float
    source: str = ""  # --report-only: the sections read from here (else the features stage's images)
    transforms: str = ""  # --report-only: the transforms file (else the solve's)
    pad: bool = False

    def run(self) -> dict[str, Any]:
        import cv2

        kv = open_kv(self.work)
        solved = read_transforms(self.transforms) if self.transforms else json.loads(kv.get("solved"))
        b = self.a + 1
        if self.source:
            images = [working_image(read_section(self.source, z, pad=self.pad), self.scale) for z in (self.a, b)]
        else:
            images = [unpack(kv.get(f"features/{z}"))["image"] for z in (self.a, b)]
        before = ncc(*images)
        ta, tb = solved["transforms"][self.a], solved["transforms"][b]
        after = None
        if ta is not None and tb is not None:
            # b's working image placed into a's working frame: a^-1 . b, in working pixels
            to_work = _centres(self.scale)
            full = np.linalg.inv(_h(ta)) @ _h(tb)
            warp = (to_work @ full @ np.linalg.inv(to_work))[:2]
            moved = cv2.warpAffine(images[1].astype(np.float32), warp, (images[0].shape[1], images[0].shape[0]),
                                   flags=cv2.INTER_LINEAR, borderValue=-1)
            covered = moved >= 0
            after = ncc(images[0], moved, covered) if covered.mean() > 0.25 else None
        kv.put(f"quality/{self.a}", json.dumps({"before": before, "after": after}).encode())
        return {}


def _h(transform) -> np.ndarray:
    """2 x 3 affine(s) as 3 x 3 (a stack of them too)."""
    transform = np.asarray(transform, np.float64)
    out = np.broadcast_to(np.eye(3), (*transform.shape[:-2], 3, 3)).copy()
    out[..., :2, :] = transform
    return out


def drift(transforms: list) -> dict[str, list]:
    """Each placed section's translation, rotation (degrees), scale and shear, against z."""
    out: dict[str, list] = {"z": [], "tx": [], "ty": [], "rotation": [], "scale": [], "shear": []}
    for z, t in enumerate(transforms):
        if t is None:
            continue
        m = np.asarray(t)[:, :2]
        sx = float(np.hypot(m[0, 0], m[1, 0]))
        rotation = float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))
        shear = float((m[0, 0] * m[0, 1] + m[1, 0] * m[1, 1]) / max(sx * sx, 1e-12))
        sy = float(np.linalg.det(m) / max(sx, 1e-12))
        out["z"].append(z)
        out["tx"].append(float(t[0][2]))
        out["ty"].append(float(t[1][2]))
        out["rotation"].append(rotation)
        out["scale"].append((sx + sy) / 2)
        out["shear"].append(shear)
    return out


def write_report(dest_kv, solved: dict, pair_results: dict, quality: list[dict]) -> dict:
    """``align/report.json`` and ``align/report.png`` (NCC before/after, residuals, drift)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flagged = {k: v for k, v in pair_results.items()
               if not v.get("ok") or v.get("residual_after", 0) > FLAG_PX or v.get("disagree")}
    before = [q["before"] for q in quality]
    after = [q["after"] for q in quality if q["after"] is not None]
    report = {
        "model": solved["model"], "sections": solved["sections"], "bounds": solved["bounds"],
        "bad_sections": solved["bad_sections"], "bad_sections_handling": solved["bad_sections_handling"],
        "pairs": pair_results,
        "flagged_pairs": {k: (v.get("reason") or ("methods disagree" if v.get("disagree") else
                                                  f"residual {v.get('residual_after', 0):.2f} px"))
                          for k, v in flagged.items()},
        "ncc": {"before": before, "after": [q["after"] for q in quality],
                "mean_before": float(np.mean(before)) if before else None,
                "mean_after": float(np.mean(after)) if after else None},
        "drift": drift(solved["transforms"]),
    }
    dest_kv.put("align/report.json", json.dumps(report, indent=1).encode())
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    axes[0, 0].plot(before, label="before")
    axes[0, 0].plot([q["after"] if q["after"] is not None else np.nan for q in quality], label="after")
    axes[0, 0].set(title="adjacent sections: normalized cross-correlation", xlabel="section z (pair z, z+1)")
    axes[0, 0].legend()
    keys = sorted(pair_results, key=lambda k: tuple(map(int, k.split("-"))))
    axes[0, 1].plot([int(k.split("-")[0]) for k in keys], [pair_results[k].get("residual_after", np.nan) for k in keys],
                    ".", label="residual after the solve (px)")
    axes[0, 1].axhline(FLAG_PX, color="r", lw=0.8, label=f"flagged above {FLAG_PX:g} px")
    axes[0, 1].set(title="pairs", xlabel="first section of the pair")
    axes[0, 1].legend()
    d = report["drift"]
    axes[1, 0].plot(d["z"], d["tx"], label="x")
    axes[1, 0].plot(d["z"], d["ty"], label="y")
    axes[1, 0].set(title="translation (px)", xlabel="section z")
    axes[1, 0].legend()
    axes[1, 1].plot(d["z"], d["rotation"], label="rotation (degrees)")
    axes[1, 1].plot(d["z"], (np.asarray(d["scale"]) - 1) * 100, label="scale - 1 (%)")
    axes[1, 1].plot(d["z"], np.asarray(d["shear"]) * 100, label="shear (%)")
    axes[1, 1].set(title="drift along z", xlabel="section z")
    axes[1, 1].legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    dest_kv.put("align/report.png", buffer.getvalue())
    return report


# -- planning: the solve job ------------------------------------------------------------------------
DEFAULT_MEMORY = 512 * 2**20


def open_stack(source: str, pad: bool = False):
    """The section stack (any source ingest reads; ``pad``: sections of different sizes centred in the
    largest): one channel, at least two sections."""
    stack = open_source(source, pad=pad)
    if stack.channels != 1:
        raise PumiceError(f"{source} has {stack.channels} channels; align takes one-channel images")
    if stack.shape[2] < 2:
        raise PumiceError(f"{source} holds {stack.shape[2]} section; alignment needs at least two")
    if np.dtype(stack.dtype).name not in ("uint8", "uint16", "float32"):
        raise PumiceError(f"{source} holds {np.dtype(stack.dtype).name}; align takes uint8, uint16 or float32 images")
    return stack


def task_path(src: str) -> str:
    """The stack's path as tasks see it (from any working directory)."""
    import os

    text = str(src)
    return text if "://" in text else os.path.abspath(text) if ":" not in text else \
        os.path.abspath(text.split(":", 1)[0]) + ":" + text.split(":", 1)[1]


def check_options(depth: int, model: str, bad_sections: str, match_scale: float | None) -> None:
    if model not in MODELS:
        raise PumiceError(f"--model {model!r}: choose one of {', '.join(MODELS)}")
    if depth < 1:
        raise PumiceError(f"--depth must be 1 or more (sections matched with each section), got {depth}")
    if bad_sections not in BAD_SECTIONS:
        raise PumiceError(f"--bad-sections {bad_sections!r}: choose one of {', '.join(BAD_SECTIONS)}")
    if match_scale is not None and not 0 < match_scale <= 1:
        raise PumiceError(f"--match-scale is a fraction in (0, 1], got {match_scale}")


@planner
def plan(src: str, dest: str, *, depth: int = 2, model: str = "rigid", match_scale: float | None = None,
         bad_sections: str = "fail", pad: bool = False, memory: int = DEFAULT_MEMORY) -> tuple[Plan, list[str]]:
    """Features, matches and the global solve for the stack ``src``; transforms and the report go to
    ``dest/align/``."""
    check_options(depth, model, bad_sections, match_scale)
    stack = open_stack(src, pad)
    width, height, n = (int(v) for v in stack.shape)
    scale = float(match_scale) if match_scale is not None else min(1.0, WORKING_SIDE / max(width, height))
    dest_url = urls.normalize(dest)
    if not urls.is_writable(dest_url):
        raise PumiceError(f"{urls.display(dest_url)} is read-only (http); align writes there")
    source = task_path(src)
    params = {"source": str(src), "fingerprint": stack.fingerprint, "scale": scale, "sections": n}
    result = Plan("align", dest_url, params, provenance=None)
    pairs = [(a, b) for a in range(n) for b in range(a + 1, min(n, a + depth + 1))]

    def work() -> str:
        return urls.join(dest_url, f".pumice/jobs/{result.job_id}/work")

    result.stages = [
        Stage.each("features", range(n), lambda z: FeaturesTask(source, z, scale, work(), pad)),
        Stage.each("match", pairs, lambda p: MatchTask(p[0], p[1], scale, work())),
        Stage.each("solve", [0], lambda _: SolveTask(work(), n, depth, model, bad_sections, scale, (width, height))),
        Stage.each("quality", range(n - 1), lambda z: QualityTask(work(), z, scale)),
    ]
    result.description = {
        "sections": f"{n} of {width} x {height} ({urls.display(str(src))}, {np.dtype(stack.dtype).name})",
        "working scale": f"{scale:g} ({round(width * scale)} x {round(height * scale)} px for matching)",
        "pairs": f"{len(pairs)} (each section with its next {depth})",
        "model": model,
        "bad sections": bad_sections,
        "output": f"{urls.display(dest_url)}/align/transforms.json, report.json, report.png",
    }

    def finish() -> list[str]:
        kv = open_kv(work())
        solved = json.loads(kv.get("solved"))
        pair_results = json.loads(kv.get("pair_results"))
        quality = [json.loads(blob) for blob in kv.get_many([f"quality/{z}" for z in range(n - 1)])]
        out = open_kv(dest_url)
        # Only what the input determines (no paths, no times): the same sections give the same bytes.
        out.put("align/transforms.json", json.dumps(solved, indent=1).encode())
        report = write_report(out, solved, pair_results, quality)
        notes = [f"transforms: {urls.display(urls.join(dest_url, 'align/transforms.json'))} (model {solved['model']})"]
        if report["bad_sections"]:
            notes.append("bad sections (" + solved["bad_sections_handling"] + "): " +
                         "; ".join(f"{z}: {why}" for z, why in report["bad_sections"].items()))
        if report["flagged_pairs"]:
            notes.append(f"{len(report['flagged_pairs'])} pair(s) flagged (see report.json): " +
                         ", ".join(list(report["flagged_pairs"])[:10]))
        return notes

    def outcome(totals: dict[str, dict[str, float]]) -> str:
        solved = totals.get("solve", {})
        return (f"{int(solved.get('pairs_used', 0))} pair(s) in the solve, {int(solved.get('pairs_rejected', 0))} "
                f"rejected, {int(solved.get('bad_sections', 0))} bad section(s)")

    result.finish, result.outcome = finish, outcome
    result.cleanup = lambda: open_kv(work()).delete_prefix("")
    return result, []


@planner
def plan_report(src: str, dest: str, *, transforms: str | None = None, match_scale: float | None = None,
                pad: bool = False, memory: int = DEFAULT_MEMORY) -> tuple[Plan, list[str]]:
    """``--report-only``: the report recomputed from the sections and a transforms file (default
    ``DEST/align/transforms.json``): adjacent sections' correlation before and after, the drift; the
    pairs' results are kept from the report already there (they need the matching, which is not
    redone)."""
    check_options(1, "rigid", "fail", match_scale)
    stack = open_stack(src, pad)
    width, height, n = (int(v) for v in stack.shape)
    dest_url = urls.normalize(dest)
    transforms = transforms or urls.join(dest_url, "align/transforms.json")
    record = read_transforms(transforms)
    if record.get("sections", n) != n or list(record["section_shape"]) != [width, height]:
        raise PumiceError(f"the transforms are for {record.get('sections')} sections of "
                          f"{format_vec(record['section_shape'])}, the stack has {n} of {width} x {height}")
    scale = float(match_scale) if match_scale is not None else min(1.0, WORKING_SIDE / max(width, height))
    staged = inputs.SideInput.of(transforms, dest_url, "transforms file")
    source = task_path(src)
    result = Plan("align-report", dest_url, {"source": str(src), "fingerprint": stack.fingerprint, "scale": scale,
                                             "transforms": staged.digest}, provenance=None)
    result.inputs = {"transforms": staged.url}

    def work() -> str:
        return urls.join(dest_url, f".pumice/jobs/{result.job_id}/work")

    result.stages = [Stage.each("quality", range(n - 1),
                                lambda z: QualityTask(work(), z, scale, source, staged.url, pad))]
    result.description = {"sections": f"{n} of {width} x {height}", "transforms": urls.display(str(transforms)),
                          "output": f"{urls.display(dest_url)}/align/report.json, report.png"}

    def prepare() -> None:
        staged.put()

    def finish() -> list[str]:
        kv = open_kv(work())
        quality = [json.loads(blob) for blob in kv.get_many([f"quality/{z}" for z in range(n - 1)])]
        out = open_kv(dest_url)
        previous = out.get("align/report.json")
        pairs = json.loads(previous).get("pairs", {}) if previous else {}
        report = write_report(out, read_transforms(staged.url), pairs, quality)
        mean = report["ncc"]
        return [f"report: {urls.display(urls.join(dest_url, 'align/report.json'))}; adjacent sections' mean correlation "
                f"{mean['mean_before']:.3f} before, " + (f"{mean['mean_after']:.3f} after" if mean["mean_after"] is not None
                                                          else "none after (no two aligned neighbours)")]

    result.prepare, result.finish = prepare, finish
    result.cleanup = lambda: open_kv(work()).delete_prefix("")
    return result, []


# -- planning: the render job -----------------------------------------------------------------------
@register("align.render")
@dataclass(frozen=True)
class RenderTask(Task):
    source: str
    dest: str
    bbox: tuple  # output voxels
    transforms: str  # the staged transforms file
    pad: bool = False

    def run(self) -> dict[str, Any]:
        import cv2

        record = read_transforms(self.transforms)
        box = Bbox.from_list(self.bbox)
        x0, y0 = record["bounds"][:2]
        width, height = record["section_shape"]
        layer = Layer.open(self.dest)
        out = np.zeros(tuple(box.shape) + (1,), dtype=layer.info.dtype, order="F")
        tile_w, tile_h = box.shape[0], box.shape[1]
        for k, z in enumerate(range(box.minpt[2], box.maxpt[2])):
            transform = record["transforms"][z]
            if transform is None:
                continue  # skipped: left blank
            inverse = np.linalg.inv(_h(transform))
            # tile pixel (u, v) -> global (u + box.x0 + x0, v + box.y0 + y0) -> section pixel
            to_global = np.array([[1, 0, box.minpt[0] + x0], [0, 1, box.minpt[1] + y0], [0, 0, 1]], np.float64)
            tile_to_section = inverse @ to_global
            corners = np.array([[-1, -1], [tile_w, -1], [-1, tile_h], [tile_w, tile_h]], np.float64)
            seen = apply(tile_to_section[:2], corners)
            rx0, ry0 = (max(0, int(np.floor(v)) - 2) for v in seen.min(0))
            rx1, ry1 = min(width, int(np.ceil(seen[:, 0].max())) + 3), min(height, int(np.ceil(seen[:, 1].max())) + 3)
            if rx1 <= rx0 or ry1 <= ry0:
                continue
            part = read_section(self.source, z, (rx0, ry0, rx1, ry1), self.pad)
            to_part = np.array([[1, 0, -rx0], [0, 1, -ry0], [0, 0, 1]], np.float64) @ tile_to_section
            warped = cv2.warpAffine(part, to_part[:2], (tile_w, tile_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            out[:, :, k, 0] = warped.T
        layer.write(box, out)
        return {"voxels": box.size}


def read_transforms(path: str) -> dict:
    where = urls.display(urls.normalize(str(path)))
    try:
        record = json.loads(inputs.read(path, "transforms file"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PumiceError(f"{where} is not a transforms file (JSON written by pumice align)") from None
    if not isinstance(record, dict) or not {"transforms", "bounds", "section_shape"} <= set(record):
        raise PumiceError(f"{where} is not a transforms file: it lacks transforms, bounds or section_shape")
    return record


@planner
def plan_render(src: str, dest: str, *, transforms: str, resolution: Sequence[float] | None = None,
                chunk_size: Sequence[int] | None = None, encoding: str | None = None, pad: bool = False,
                memory: int = DEFAULT_MEMORY) -> tuple[Plan, list[str]]:
    """Every section warped into the global box of ``transforms`` and written as the image layer ``dest``."""
    from ..geometry import choose_block

    from .ingest import default_chunk_size

    stack = open_stack(src, pad)
    record = read_transforms(transforms)
    width, height, n = (int(v) for v in stack.shape)
    if record.get("sections", n) != n or list(record["section_shape"]) != [width, height]:
        raise PumiceError(f"the transforms are for {record.get('sections')} sections of "
                          f"{format_vec(record['section_shape'])}, the stack has {n} of {width} x {height}")
    res = tuple(float(r) for r in (resolution or stack.resolution or ()))
    if len(res) != 3:
        raise PumiceError(f"{src} does not say its resolution: give --resolution X,Y,Z (nm)")
    x0, y0, x1, y1 = record["bounds"]
    size = (x1 - x0, y1 - y0, n)
    dtype = np.dtype(stack.dtype).name
    chunk = tuple(int(c) for c in (chunk_size or default_chunk_size("image", res)))
    chunk = (min(chunk[0], size[0]), min(chunk[1], size[1]), min(chunk[2], size[2]))
    scale = Scale(key=scale_key(res), size=size, resolution=res, voxel_offset=(0, 0, 0), chunk_size=chunk,
                  encoding=encoding or "raw")
    info = LayerInfo("image", dtype, 1, (scale,), {})
    dest_url = urls.normalize(dest)
    fresh = Layer.check_destination(dest_url, info)
    staged = inputs.SideInput.of(transforms, dest_url, "transforms file")
    block = choose_block(scale.bounds, chunk, 3 * np.dtype(dtype).itemsize, memory)
    result = Plan("align-render", dest_url, {"source": str(src), "fingerprint": stack.fingerprint,
                                             "transforms": staged.digest, "info": info.to_json(), "block": list(block)},
                  provenance="align", sources=[str(src)], fresh_destination=fresh)
    result.inputs = {"transforms": staged.url}
    source = task_path(src)
    result.stages = [Stage.grid("render", scale.bounds, block,
                                lambda box: RenderTask(source, dest_url, tuple(box.to_list()), staged.url, pad))]
    result.description = {"sections": f"{n} of {width} x {height}", "output": f"{urls.display(dest_url)}: image "
                          f"{dtype}, size {format_vec(size)}, chunk {format_vec(chunk)}", "block": format_vec(block)}

    def prepare() -> None:
        staged.put()
        Layer.create(dest_url, info)

    result.prepare = prepare
    return result, []
