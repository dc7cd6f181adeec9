"""Quality checks on aligned face crops: raw measures, 0..1 scores and ok/warn/bad verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import cv2
import numpy as np

from curate.records import QualityScores

Verdict = Literal["ok", "warn", "bad"]

# Every image check runs on the crop resampled to this side (area kept, aspect kept). Sharpness
# and motion blur count fine detail per pixel, so their values only mean the same thing across
# crops when the detail is counted at one scale. 128 px is the smallest crop a DFL-style faceset
# uses: at that scale a 128, 256 or 1024 px crop of the same face gives the same numbers (larger
# crops are only area-averaged, never upsampled), whereas working at 256 would upsample a 128 crop
# and read it as ~5x blurrier. Whether the source face had enough pixels is FaceSize's question.
# A fixed small size also bounds the cost per face (~0.5 ms for a 256 px crop on one core).
WORKING_SIZE = 128

SHADOW_LEVEL = 5  # luma at or below this (0..255) counts as a clipped shadow
HIGHLIGHT_LEVEL = 250  # luma at or above this (0..255) counts as a clipped highlight

# Motion blur: scale of the Gaussian second-derivative filters (working-size pixels) and the
# orientations the directional energy is evaluated at (it is steered, so any number is cheap).
_DERIVATIVE_SIGMA = 1.0
_ORIENTATIONS = np.deg2rad(np.arange(0.0, 180.0, 5.0))
_ORIENTATIONS.setflags(write=False)


def _gaussian_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D Gaussian and its first and second derivatives, sampled at integer offsets (float32)."""
    radius = math.ceil(3.0 * sigma)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g0 = np.exp(-(x * x) / (2.0 * sigma * sigma))
    g0 /= g0.sum()
    g1 = -x / sigma**2 * g0
    g2 = (x * x / sigma**4 - 1.0 / sigma**2) * g0
    g2 -= g2.mean()  # sampling leaves a small DC response; a flat image must give exactly zero
    kernels = tuple(k.astype(np.float32) for k in (g0, g1, g2))
    for k in kernels:
        k.setflags(write=False)
    return kernels  # type: ignore[return-value]


_G0, _G1, _G2 = _gaussian_kernels(_DERIVATIVE_SIGMA)
# Steering vectors, one column per orientation θ (c = cos θ, s = sin θ):
# I_θθ = c²·Ixx + 2cs·Ixy + s²·Iyy.
_STEER = np.stack(
    [np.cos(_ORIENTATIONS) ** 2, 2.0 * np.cos(_ORIENTATIONS) * np.sin(_ORIENTATIONS),
     np.sin(_ORIENTATIONS) ** 2]
)
_STEER.setflags(write=False)


@dataclass(frozen=True)
class Band:
    """Raw-value edges of one measure: score 1 inside [ok_low, ok_high], 0 at or beyond bad_low /
    bad_high, linear in between (on a log scale when `log`, for measures that span decades).

    A score of exactly 1 is the verdict 'ok', exactly 0 'bad', anything between 'warn'.
    One-sided measures leave the other side at ±inf.
    """

    bad_low: float = -math.inf
    ok_low: float = -math.inf
    ok_high: float = math.inf
    bad_high: float = math.inf
    log: bool = False

    def __post_init__(self) -> None:
        if not (self.bad_low <= self.ok_low <= self.ok_high <= self.bad_high):
            raise ValueError(f"band edges bad_low <= ok_low <= ok_high <= bad_high: {self}")
        if (math.isfinite(self.ok_low) and not math.isfinite(self.bad_low)) or (
                math.isfinite(self.ok_high) and not math.isfinite(self.bad_high)):
            raise ValueError(f"a finite ok edge needs a finite bad edge beyond it: {self}")
        if self.log and any(e <= 0 for e in (self.bad_low, self.ok_low, self.ok_high, self.bad_high)
                            if math.isfinite(e)):
            raise ValueError(f"a log band needs positive edges: {self}")

    def _position(self, value: float, bad: float, ok: float) -> float:
        """Where value lies from bad (0) to ok (1), on the band's scale."""
        if self.log:  # callers only pass values strictly between two positive edges
            value, bad, ok = math.log(value), math.log(bad), math.log(ok)
        return (value - bad) / (ok - bad)

    def score(self, value: float) -> float:
        value = float(value)
        if math.isnan(value):
            return 0.0
        if self.ok_low <= value <= self.ok_high:
            return 1.0
        if value < self.ok_low:
            if value <= self.bad_low:
                return 0.0
            return min(1.0, max(0.0, self._position(value, self.bad_low, self.ok_low)))
        if value >= self.bad_high:
            return 0.0
        return min(1.0, max(0.0, self._position(value, self.bad_high, self.ok_high)))

    def verdict(self, value: float) -> Verdict:
        return verdict_of_score(self.score(value))


def verdict_of_score(score: float) -> Verdict:
    """The verdict a 0..1 score stands for: 1 is 'ok', 0 is 'bad', anything between 'warn'."""
    if score >= 1.0:
        return "ok"
    if score <= 0.0:
        return "bad"
    return "warn"


@dataclass(frozen=True)
class QualityThresholds:
    """The defaults table: one Band per raw measure (units as in each check's docstring).

    Starting points calibrated on photographs of faces (scikit-image's astronaut, blurred and
    re-exposed); tune them per faceset and store the table used beside the verdicts.
    """

    # Laplacian variance at WORKING_SIZE, grey levels²: a sharp face ~800; a 256 px crop blurred
    # with Gaussian sigma 1 -> ~300, sigma 2 -> ~80, sigma 3 -> ~30.
    sharpness: Band = Band(bad_low=30.0, ok_low=150.0, log=True)
    # Weakest / strongest directional detail: sharp faces ~0.5-0.7; a horizontal motion blur of
    # 9 px on a 256 px crop -> ~0.23, 15 px -> ~0.11.
    motion_blur: Band = Band(bad_low=0.15, ok_low=0.35)
    brightness: Band = Band(bad_low=0.12, ok_low=0.25, ok_high=0.75, bad_high=0.88)
    # Unmasked crops include background, so some clipped black or white is normal.
    shadows_clipped: Band = Band(ok_high=0.10, bad_high=0.30)
    highlights_clipped: Band = Band(ok_high=0.05, bad_high=0.20)
    contrast: Band = Band(bad_low=0.04, ok_low=0.10)
    # Largest of |lighting_lr|, |lighting_tb|; 0.5 means one half three times as bright as the
    # other. Side lighting is wanted for coverage, so only extreme asymmetry is flagged.
    lighting: Band = Band(ok_high=0.25, bad_high=0.50)
    # Skin is not neutral: a face crop's mean chroma is ~0.08-0.15 on this scale by itself.
    color_cast: Band = Band(ok_high=0.20, bad_high=0.35)
    # Source pixels across the face; set ok_low to the training resolution to be strict.
    face_size: Band = Band(bad_low=64.0, ok_low=192.0, log=True)
    # Share of the 68 landmarks outside the source image: a face cut by the frame edge. One point
    # out is a warning (often the chin of a tight crop); 4 or more (≥ 5 %) cut the face. The two
    # partial-face photos of the samples have 5 and 6 points out.
    frame_edge: Band = Band(ok_high=0.0, bad_high=0.05)
    # Landmark fit: RMS distance of the landmarks to a 3-D face at the estimated pose, over the
    # landmarks' width (curate.faces.pose.Pose.fit_error). Real faces of the samples 0.033–0.064;
    # jittered or displaced landmark sets ≥ 0.09.
    alignment: Band = Band(ok_high=0.07, bad_high=0.09)
    # Detector confidence (0..1). Scans keep detections from 0.6; real faces of the samples score
    # 0.85–0.95 with YuNet; below 0.7 a detection is as likely a pattern as a face.
    detection: Band = Band(bad_low=0.7, ok_low=0.8)


DEFAULTS = QualityThresholds()


@dataclass(frozen=True, eq=False)
class PreparedFace:
    """An aligned crop resampled once to the working size, with what every check shares."""

    bgr: np.ndarray  # (h, w, 3) uint8 BGR at working size (h·w ≈ WORKING_SIZE²)
    grey: np.ndarray  # (h, w) float32 luma (Rec. 601), 0..255
    weights: np.ndarray | None  # (h, w) float32 face-region weights in 0..1; None = every pixel
    weight_sum: float  # sum of weights (pixel count when weights is None)

    def mean(self, values: np.ndarray, region: tuple[slice, slice] | None = None) -> float:
        """Weighted mean of a (h, w) array, optionally over a rectangular region; NaN if empty."""
        if region is not None:
            values = values[region]
        if self.weights is None:
            return float(values.mean()) if values.size else math.nan
        weights = self.weights if region is None else self.weights[region]
        total = float(weights.sum(dtype=np.float64))
        if total <= 1e-9:
            return math.nan
        return float((values * weights).sum(dtype=np.float64) / total)

    def variance(self, values: np.ndarray) -> float:
        mean = self.mean(values)
        centred = values - np.float32(mean)
        return self.mean(centred * centred)


def prepare(aligned_bgr: np.ndarray, mask: np.ndarray | None = None) -> PreparedFace:
    """Resample an aligned crop (H, W, 3) uint8 BGR and its optional (H, W) 0..1 face mask to the
    working size (area kept) and compute the shared luma image."""
    image = np.asarray(aligned_bgr)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"aligned crop must be (H, W, 3) uint8 BGR, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    if height < 2 or width < 2:
        raise ValueError(f"aligned crop is too small: {width}x{height}")
    scale = WORKING_SIZE / math.sqrt(height * width)
    size = (max(2, round(width * scale)), max(2, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    bgr = image if size == (width, height) else cv2.resize(image, size, interpolation=interpolation)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    weights = None
    weight_sum = float(grey.size)
    if mask is not None:
        mask = np.asarray(mask, dtype=np.float32)
        if mask.shape != (height, width):
            raise ValueError(f"mask must be (H, W) = {(height, width)}, got {mask.shape}")
        mask = np.clip(mask, 0.0, 1.0)
        if size != (width, height):
            mask = cv2.resize(mask, size, interpolation=interpolation)
        weights = mask
        weight_sum = float(weights.sum(dtype=np.float64))
        if weight_sum <= 1e-6:
            raise ValueError("mask selects no pixels")
        weights.setflags(write=False)
    bgr = np.ascontiguousarray(bgr).view()  # a view, so freezing it leaves the caller's array as is
    for array in (bgr, grey):
        array.setflags(write=False)
    return PreparedFace(bgr=bgr, grey=grey, weights=weights, weight_sum=weight_sum)


@dataclass(frozen=True)
class ExposureValues:
    brightness: float  # mean luma, 0..1
    shadows_clipped: float  # fraction of (weighted) pixels with luma <= SHADOW_LEVEL, 0..1
    highlights_clipped: float  # fraction with luma >= HIGHLIGHT_LEVEL, 0..1


@dataclass(frozen=True)
class LightingValues:
    left_right: float  # mean luma (right − left) / (right + left), −1..1; > 0: right brighter
    top_bottom: float  # mean luma (top − bottom) / (top + bottom), −1..1; > 0: top brighter


@dataclass(frozen=True)
class _ImageCheck:
    """Shared plumbing: measure a raw crop via prepare(), score and judge through the thresholds."""

    name: ClassVar[str]
    thresholds: QualityThresholds = DEFAULTS

    def measure(self, aligned_bgr: np.ndarray, mask: np.ndarray | None = None):
        """Raw value(s) of an aligned (H, W, 3) uint8 BGR crop, inside the optional (H, W) mask."""
        return self.measure_prepared(prepare(aligned_bgr, mask))

    def measure_prepared(self, face: PreparedFace):
        raise NotImplementedError

    def verdict(self, raw) -> Verdict:
        return verdict_of_score(self.score(raw))


class Sharpness(_ImageCheck):
    """Variance of the 4-neighbour Laplacian of the luma (0..255) at WORKING_SIZE; 0..∞, higher is
    sharper. Weighted by the mask when one is given."""

    name: ClassVar[str] = "sharpness"

    def measure_prepared(self, face: PreparedFace) -> float:
        laplacian = cv2.Laplacian(face.grey, cv2.CV_32F, ksize=1)
        return face.variance(laplacian)

    def score(self, raw: float) -> float:
        return self.thresholds.sharpness.score(raw)


class MotionBlur(_ImageCheck):
    """Directional detail balance, 0..1: min over orientations θ of E(θ) divided by its max, where
    E(θ) is the mean squared second derivative of the luma along θ (Gaussian derivative filters,
    sigma 1 px at WORKING_SIZE, steered exactly from Ixx, Ixy, Iyy every 5°).

    1 means the same fine detail in every direction; blur along one direction removes detail along
    it and drives the value towards 0, while isotropic (defocus) blur leaves it near where it was.
    Second rather than first derivatives because a face's large edges are strongly anisotropic
    (brows, eyes and mouth are horizontal) while its fine detail is closer to isotropic. A sharp
    face still reads ~0.6, not 1, so blur shorter than ~2-3 working pixels (5 px on a 256 crop)
    can hide in that natural imbalance; longer blur is caught in any direction.
    A flat crop (no detail at all) reads 1: it has no direction, and Sharpness flags it.
    """

    name: ClassVar[str] = "motion_blur"

    def measure_prepared(self, face: PreparedFace) -> float:
        grey = face.grey
        ixx = cv2.sepFilter2D(grey, cv2.CV_32F, _G2, _G0)
        iyy = cv2.sepFilter2D(grey, cv2.CV_32F, _G0, _G2)
        ixy = cv2.sepFilter2D(grey, cv2.CV_32F, _G1, _G1)
        responses = np.stack([ixx, ixy, iyy]).reshape(3, -1)
        if face.weights is None:
            covariance = responses @ responses.T / responses.shape[1]
        else:
            weighted = responses * face.weights.reshape(1, -1)
            covariance = weighted @ responses.T / face.weight_sum
        energy = np.einsum("in,ij,jn->n", _STEER, covariance.astype(np.float64), _STEER)
        strongest = float(energy.max())
        if strongest <= 1e-9:
            return 1.0
        return max(0.0, float(energy.min()) / strongest)

    def score(self, raw: float) -> float:
        return self.thresholds.motion_blur.score(raw)


class Exposure(_ImageCheck):
    """Mean luma (0..1) and the fractions of clipped shadows (luma <= 5/255) and highlights
    (>= 250/255); the score is the worst of the three."""

    name: ClassVar[str] = "exposure"

    def measure_prepared(self, face: PreparedFace) -> ExposureValues:
        grey = face.grey
        return ExposureValues(
            brightness=face.mean(grey) / 255.0,
            shadows_clipped=face.mean((grey <= SHADOW_LEVEL).astype(np.float32)),
            highlights_clipped=face.mean((grey >= HIGHLIGHT_LEVEL).astype(np.float32)),
        )

    def score(self, raw: ExposureValues) -> float:
        t = self.thresholds
        return min(
            t.brightness.score(raw.brightness),
            t.shadows_clipped.score(raw.shadows_clipped),
            t.highlights_clipped.score(raw.highlights_clipped),
        )


class Contrast(_ImageCheck):
    """RMS contrast: standard deviation of the luma scaled to 0..1 (0..0.5); higher is better."""

    name: ClassVar[str] = "contrast"

    def measure_prepared(self, face: PreparedFace) -> float:
        return math.sqrt(max(face.variance(face.grey), 0.0)) / 255.0

    def score(self, raw: float) -> float:
        return self.thresholds.contrast.score(raw)


def _asymmetry(first: float, second: float) -> float:
    """(first − second) / (first + second), 0 when either side is empty or both are black."""
    if math.isnan(first) or math.isnan(second) or first + second <= 1e-9:
        return 0.0
    return (first - second) / (first + second)


class Lighting(_ImageCheck):
    """Luma asymmetry between the crop's halves (split at its middle column / row), each −1..1:
    left_right = (R − L)/(R + L), positive when the image right is brighter; top_bottom =
    (T − B)/(T + B), positive when the top is brighter. With a mask each half's mean is weighted;
    a half with no weight gives 0. The score judges the larger magnitude of the two."""

    name: ClassVar[str] = "lighting"

    def measure_prepared(self, face: PreparedFace) -> LightingValues:
        grey = face.grey
        height, width = grey.shape
        everything = slice(None)
        left = face.mean(grey, (everything, slice(0, width // 2)))
        right = face.mean(grey, (everything, slice(width - width // 2, width)))
        top = face.mean(grey, (slice(0, height // 2), everything))
        bottom = face.mean(grey, (slice(height - height // 2, height), everything))
        return LightingValues(
            left_right=_asymmetry(right, left), top_bottom=_asymmetry(top, bottom))

    def score(self, raw: LightingValues) -> float:
        return self.thresholds.lighting.score(max(abs(raw.left_right), abs(raw.top_bottom)))


class ColorCast(_ImageCheck):
    """Distance of the mean (a*, b*) from neutral in CIELAB, divided by 128 (the a*/b* half-range):
    0 for a neutral mean, ~0.1 for a plain face crop (skin is warm), up to ~1 for a saturated
    single-colour image; higher is worse."""

    name: ClassVar[str] = "color_cast"

    def measure_prepared(self, face: PreparedFace) -> float:
        # 8-bit Lab stores a* + 128 and b* + 128 in channels 1 and 2.
        lab = cv2.cvtColor(face.bgr, cv2.COLOR_BGR2Lab)
        mean_a = face.mean(lab[:, :, 1].astype(np.float32)) - 128.0
        mean_b = face.mean(lab[:, :, 2].astype(np.float32)) - 128.0
        return math.hypot(mean_a, mean_b) / 128.0

    def score(self, raw: float) -> float:
        return self.thresholds.color_cast.score(raw)


@dataclass(frozen=True)
class FaceSize:
    """Side of the aligned face square mapped back to the source image, in source pixels; no image
    is needed. Higher is better: small faces are upsampled into the crop and train soft."""

    name: ClassVar[str] = "face_size"
    thresholds: QualityThresholds = DEFAULTS

    def measure(self, face_size: float) -> float:
        value = float(face_size)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"face size must be a finite, non-negative pixel count: {face_size}")
        return value

    def score(self, raw: float) -> float:
        return self.thresholds.face_size.score(raw)

    def verdict(self, raw: float) -> Verdict:
        return verdict_of_score(self.score(raw))


@dataclass(frozen=True)
class FaceGeometry:
    """What the landmarks and the detector say about one face, beside the crop's image checks."""

    frame_edge: float  # share of the 68 landmarks outside the source image, 0..1
    alignment: float  # landmark fit error (Pose.fit_error), NaN when no pose was solved
    detection: float  # detector score, 0..1


def frame_edge_share(landmarks68: np.ndarray, width: int, height: int) -> float:
    """Share of (68, 2) source-pixel landmarks outside the width × height image (0..1)."""
    points = np.asarray(landmarks68, dtype=np.float64).reshape(-1, 2)
    outside = (points[:, 0] < 0) | (points[:, 1] < 0) | (points[:, 0] > width) | (points[:, 1] > height)
    return float(outside.mean()) if len(points) else 0.0


def geometry_check_rows(
    face_id: str, geometry: FaceGeometry, thresholds: QualityThresholds = DEFAULTS
) -> list[tuple]:
    """Stored rows (as check_rows) for frame_edge, alignment and detection; a NaN alignment
    (no pose solved: degenerate landmarks) is the worst fit there is."""
    values = {
        "frame_edge": geometry.frame_edge,
        "alignment": geometry.alignment if math.isfinite(geometry.alignment) else 1.0,
        "detection": geometry.detection,
    }
    return [_check_row(face_id, name, value, getattr(thresholds, name)) for name, value in values.items()]


def _check_row(face_id: str, name: str, value: float, band: Band) -> tuple:
    edges = [edge if math.isfinite(edge) else None for edge in (band.bad_low, band.ok_low, band.ok_high, band.bad_high)]
    return (face_id, name, float(value), band.score(value), *edges, band.verdict(value))


def hamming(a: str, b: str) -> int:
    """Number of differing bits between two 16-hex-digit perceptual hashes (0..64)."""
    for value in (a, b):
        if len(value) != 16:
            raise ValueError(f"a perceptual hash has 16 hex digits, got {value!r}")
    return (int(a, 16) ^ int(b, 16)).bit_count()


@dataclass(frozen=True)
class PerceptualHash:
    """64-bit DCT perceptual hash: the 32×32 area-resampled luma, its 8×8 lowest DCT coefficients,
    one bit per coefficient above their median (row-major, first bit most significant), written as
    16 lowercase hex digits. Compare with hamming(); it fingerprints the whole crop, so the mask is
    ignored. It is an identifier, not a quality, so it has no score or verdict."""

    name: ClassVar[str] = "phash"

    def measure(self, aligned_bgr: np.ndarray, mask: np.ndarray | None = None) -> str:
        return self.measure_prepared(prepare(aligned_bgr))

    def measure_prepared(self, face: PreparedFace) -> str:
        small = cv2.resize(face.grey, (32, 32), interpolation=cv2.INTER_AREA)
        low = cv2.dct(small)[:8, :8]
        bits = (low > np.median(low)).ravel()
        return np.packbits(bits).tobytes().hex()


def measure_all(aligned_bgr: np.ndarray, mask: np.ndarray | None = None) -> QualityScores:
    """Every image check on one aligned (H, W, 3) uint8 BGR crop, resampling and converting it once.

    mask: optional (H, W) float face region in 0..1; statistics are weighted by it (the perceptual
    hash always covers the whole crop).
    """
    face = prepare(aligned_bgr, mask)
    exposure = Exposure().measure_prepared(face)
    lighting = Lighting().measure_prepared(face)
    return QualityScores(
        sharpness=Sharpness().measure_prepared(face),
        motion_blur=MotionBlur().measure_prepared(face),
        brightness=exposure.brightness,
        shadows_clipped=exposure.shadows_clipped,
        highlights_clipped=exposure.highlights_clipped,
        contrast=Contrast().measure_prepared(face),
        lighting_lr=lighting.left_right,
        lighting_tb=lighting.top_bottom,
        color_cast=ColorCast().measure_prepared(face),
        phash=PerceptualHash().measure_prepared(face),
    )


def _raw_by_check(scores: QualityScores, face_size: float, thresholds: QualityThresholds) -> list:
    """(check, raw value) for every scored check, in a stable order."""
    return [
        (Sharpness(thresholds), scores.sharpness),
        (MotionBlur(thresholds), scores.motion_blur),
        (Exposure(thresholds), ExposureValues(scores.brightness, scores.shadows_clipped,
                                              scores.highlights_clipped)),
        (Contrast(thresholds), scores.contrast),
        (Lighting(thresholds), LightingValues(scores.lighting_lr, scores.lighting_tb)),
        (ColorCast(thresholds), scores.color_cast),
        (FaceSize(thresholds), FaceSize(thresholds).measure(face_size)),
    ]


def scores01(scores: QualityScores, face_size: float,
             thresholds: QualityThresholds = DEFAULTS) -> dict[str, float]:
    """Check name -> score in 0..1 (lower is worse) from one face's raw scores and source size."""
    checks = _raw_by_check(scores, face_size, thresholds)
    return {check.name: check.score(raw) for check, raw in checks}


def verdicts(scores: QualityScores, face_size: float,
             thresholds: QualityThresholds = DEFAULTS) -> dict[str, Verdict]:
    """Check name -> 'ok' | 'warn' | 'bad' for one face's raw scores and source face size."""
    checks = _raw_by_check(scores, face_size, thresholds)
    return {check.name: check.verdict(raw) for check, raw in checks}


def check_rows(
    face_id: str, scores: QualityScores, face_size: float, thresholds: QualityThresholds = DEFAULTS
) -> list[tuple]:
    """One stored row per measure: (face_id, measure, raw, score, bad_low, ok_low, ok_high,
    bad_high, verdict), with an open band edge as None, so reports never recompute a verdict."""
    measures = {
        "sharpness": scores.sharpness,
        "motion_blur": scores.motion_blur,
        "brightness": scores.brightness,
        "shadows_clipped": scores.shadows_clipped,
        "highlights_clipped": scores.highlights_clipped,
        "contrast": scores.contrast,
        "lighting": max(abs(scores.lighting_lr), abs(scores.lighting_tb)),
        "color_cast": scores.color_cast,
        "face_size": face_size,
    }
    return [_check_row(face_id, name, value, getattr(thresholds, name)) for name, value in measures.items()]
