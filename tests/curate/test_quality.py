"""Quality checks respond to blur, exposure, lighting, colour and re-encoding the way they claim."""

from __future__ import annotations

import dataclasses
import math
import re

import cv2
import numpy as np
import pytest

from curate.faces import quality
from curate.faces.quality import (
    DEFAULTS,
    Band,
    ColorCast,
    Contrast,
    Exposure,
    ExposureValues,
    FaceSize,
    Lighting,
    LightingValues,
    MotionBlur,
    QualityThresholds,
    Sharpness,
    hamming,
    measure_all,
    scores01,
    verdicts,
)

skimage_data = pytest.importorskip("skimage.data")

CHECK_NAMES = {
    "sharpness", "motion_blur", "exposure", "contrast", "lighting", "color_cast", "face_size",
}


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The astronaut's face, 256×256 uint8 BGR."""
    bgr = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    return cv2.resize(bgr[0:220, 140:330], (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """A grey isotropic random texture, 256×256 uint8 BGR, unclipped mid-range values."""
    rng = np.random.default_rng(7)
    noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, (256, 256)).astype(np.float32), (0, 0), 1.0)
    grey = np.clip(128 + 40 * noise / noise.std(), 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    return image if sigma == 0 else cv2.GaussianBlur(image, (0, 0), sigma)


def motion(image: np.ndarray, length: int, angle_degrees: float = 0.0) -> np.ndarray:
    """Linear motion blur: a line kernel of the given length along the given image direction."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    if angle_degrees:
        centre = ((length - 1) / 2, (length - 1) / 2)
        rotation = cv2.getRotationMatrix2D(centre, angle_degrees, 1.0)
        kernel = cv2.warpAffine(kernel, rotation, (length, length))
    return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def scaled(image: np.ndarray, factor: float | np.ndarray) -> np.ndarray:
    return np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)


def luma(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)


# --- sharpness ---------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["face", "texture"])
def test_sharpness_falls_strictly_as_gaussian_blur_grows(which, request):
    image = request.getfixturevalue(which)
    values = [Sharpness().measure(gaussian(image, sigma)) for sigma in (0, 0.5, 1, 2, 3, 4)]
    assert all(a > b for a, b in zip(values, values[1:])), values


def test_sharpness_does_not_depend_on_crop_resolution(face):
    small = cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA)
    large = cv2.resize(face, (512, 512), interpolation=cv2.INTER_CUBIC)
    small_value, large_value = Sharpness().measure(small), Sharpness().measure(large)
    assert 0.5 <= small_value / large_value <= 2.0, (small_value, large_value)


# --- motion blur -------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["face", "texture"])
@pytest.mark.parametrize("angle", [0, 90])
def test_motion_blur_reads_worse_than_isotropic_blur_and_worsens_with_length(which, angle, request):
    image = request.getfixturevalue(which)
    check = MotionBlur()
    sharp = check.measure(image)
    by_length = {}
    for length in (9, 15):
        blurred = check.measure(motion(image, length, angle))
        # A box of length L has the standard deviation of a Gaussian with sigma L / sqrt(12).
        isotropic = check.measure(gaussian(image, length / math.sqrt(12)))
        assert blurred < isotropic, (length, blurred, isotropic)
        assert blurred < sharp
        by_length[length] = blurred
    assert by_length[15] < by_length[9]
    assert check.score(by_length[15]) < check.score(sharp)


def test_motion_blur_is_near_one_for_isotropic_texture_and_one_for_a_flat_crop(texture):
    assert MotionBlur().measure(texture) > 0.8
    assert MotionBlur().measure(np.full((64, 64, 3), 90, np.uint8)) == 1.0


# --- exposure and contrast ---------------------------------------------------------------------

def test_brightness_falls_as_the_image_is_darkened_and_shadows_clip(face):
    factors = (1.0, 0.8, 0.6, 0.4, 0.2)
    values = [Exposure().measure(scaled(face, f)) for f in factors]
    brightness = [v.brightness for v in values]
    assert all(a > b for a, b in zip(brightness, brightness[1:])), brightness
    assert values[-1].shadows_clipped > values[0].shadows_clipped + 0.05
    assert all(0.0 <= v.shadows_clipped <= 1.0 and 0.0 <= v.brightness <= 1.0 for v in values)


def test_highlights_clip_when_overexposed(face):
    normal = Exposure().measure(face)
    overexposed = Exposure().measure(scaled(face, 2.0))
    assert overexposed.highlights_clipped > normal.highlights_clipped + 0.05
    assert overexposed.brightness > normal.brightness
    assert Exposure().score(overexposed) < Exposure().score(normal)


def test_contrast_is_zero_for_a_flat_image_and_halves_with_half_the_contrast(face):
    assert Contrast().measure(np.full((256, 256, 3), 117, np.uint8)) < 1e-6
    mean = luma(face).mean()
    halved = np.rint(mean + 0.5 * (face.astype(np.float64) - mean)).astype(np.uint8)
    ratio = Contrast().measure(halved) / Contrast().measure(face)
    assert ratio == pytest.approx(0.5, rel=0.05)


# --- lighting ----------------------------------------------------------------------------------

def test_lighting_left_right_sign_follows_the_bright_side(face):
    ramp = np.linspace(0.3, 1.0, face.shape[1], dtype=np.float32)[None, :, None]  # brighter right
    lit = scaled(face, ramp)
    value = Lighting().measure(lit)
    mirrored = Lighting().measure(lit[:, ::-1])
    assert value.left_right > 0.1
    assert mirrored.left_right == pytest.approx(-value.left_right, abs=1e-3)


def test_lighting_top_bottom_sign_follows_the_bright_side(face):
    ramp = np.linspace(1.0, 0.3, face.shape[0], dtype=np.float32)[:, None, None]  # brighter top
    lit = scaled(face, ramp)
    value = Lighting().measure(lit)
    mirrored = Lighting().measure(lit[::-1])
    assert value.top_bottom > 0.1
    assert mirrored.top_bottom == pytest.approx(-value.top_bottom, abs=1e-3)


# --- colour cast -------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["grey", "texture"])
def test_blue_tint_raises_color_cast_above_neutral(which, texture):
    neutral = np.full((256, 256, 3), 128, np.uint8) if which == "grey" else texture
    tinted = np.clip(neutral.astype(np.int16) + np.array([45, 0, -15]), 0, 255).astype(np.uint8)
    neutral_value, tinted_value = ColorCast().measure(neutral), ColorCast().measure(tinted)
    assert neutral_value < 0.02
    assert tinted_value > neutral_value + 0.1
    assert ColorCast().score(tinted_value) < ColorCast().score(neutral_value)


# --- perceptual hash ---------------------------------------------------------------------------

def test_phash_is_stable_under_reencoding_and_resizing_and_tells_images_apart(face):
    reference = quality.PerceptualHash().measure(face)
    assert re.fullmatch(r"[0-9a-f]{16}", reference)
    assert hamming(reference, quality.PerceptualHash().measure(face.copy())) == 0

    ok, encoded = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    recompressed = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    assert hamming(reference, quality.PerceptualHash().measure(recompressed)) <= 8

    smaller = cv2.resize(face, None, fx=0.9, fy=0.9, interpolation=cv2.INTER_AREA)
    assert hamming(reference, quality.PerceptualHash().measure(smaller)) <= 8

    camera = cv2.cvtColor(cv2.resize(skimage_data.camera(), (256, 256)), cv2.COLOR_GRAY2BGR)
    coffee = cv2.cvtColor(cv2.resize(skimage_data.coffee(), (256, 256)), cv2.COLOR_RGB2BGR)
    for other in (camera, coffee):
        assert hamming(reference, quality.PerceptualHash().measure(other)) >= 20


def test_hamming_counts_differing_bits():
    assert hamming("0" * 16, "f" * 16) == 64
    assert hamming("0123456789abcdef", "0123456789abcdee") == 1
    with pytest.raises(ValueError):
        hamming("abc", "0" * 16)


# --- masks and the shared entry point ----------------------------------------------------------

def test_mask_restricts_statistics_to_the_face_region(face):
    image = face.copy()
    image[:, 128:] = 255  # a white right half that the mask must ignore
    mask = np.zeros(image.shape[:2], np.float32)
    mask[:, :128] = 1.0
    masked = measure_all(image, mask)
    assert masked.brightness == pytest.approx(luma(face)[:, :128].mean() / 255.0, abs=2e-3)
    assert masked.highlights_clipped < 0.01
    assert measure_all(image).highlights_clipped > 0.4
    assert masked.lighting_lr == 0.0  # the right half carries no weight: no evidence of asymmetry


def test_mask_must_match_the_crop_and_select_something(face):
    with pytest.raises(ValueError):
        measure_all(face, np.ones((10, 10), np.float32))
    with pytest.raises(ValueError):
        measure_all(face, np.zeros(face.shape[:2], np.float32))
    with pytest.raises(ValueError):
        measure_all(face[:, :, 0])


def test_measuring_leaves_the_inputs_untouched():
    crop = np.random.default_rng(3).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    mask = np.ones((128, 128), np.float32)
    before = crop.copy()
    measure_all(crop, mask)
    assert crop.flags.writeable and mask.flags.writeable
    assert np.array_equal(crop, before)


def test_measure_all_agrees_with_each_check(face):
    scores = measure_all(face)
    exposure = Exposure().measure(face)
    lighting = Lighting().measure(face)
    assert scores.sharpness == pytest.approx(Sharpness().measure(face))
    assert scores.motion_blur == pytest.approx(MotionBlur().measure(face))
    assert (scores.brightness, scores.shadows_clipped, scores.highlights_clipped) == pytest.approx(
        (exposure.brightness, exposure.shadows_clipped, exposure.highlights_clipped))
    assert scores.contrast == pytest.approx(Contrast().measure(face))
    assert (scores.lighting_lr, scores.lighting_tb) == pytest.approx(
        (lighting.left_right, lighting.top_bottom))
    assert scores.color_cast == pytest.approx(ColorCast().measure(face))
    assert scores.phash == quality.PerceptualHash().measure(face)


# --- scores, verdicts and the thresholds table -------------------------------------------------

def _raw_sweep(check_name: str, value: float):
    """A raw value for a check, built from one float that runs from worst to best."""
    if check_name == "exposure":
        return ExposureValues(brightness=0.5, shadows_clipped=value, highlights_clipped=0.0)
    if check_name == "lighting":
        return LightingValues(left_right=value, top_bottom=0.0)
    return value


@pytest.mark.parametrize(
    ("check", "values", "higher_is_better"),
    [
        (Sharpness(), np.geomspace(1, 5000, 60), True),
        (MotionBlur(), np.linspace(0, 1, 60), True),
        (Contrast(), np.linspace(0, 0.5, 60), True),
        (FaceSize(), np.geomspace(8, 2000, 60), True),
        (ColorCast(), np.linspace(0, 1.2, 60), False),
        (Exposure(), np.linspace(0, 1, 60), False),
        (Lighting(), np.linspace(0, 1, 60), False),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_score_is_in_unit_range_and_monotone_in_the_raw_value(check, values, higher_is_better):
    scores = [check.score(_raw_sweep(check.name, float(v))) for v in values]
    assert all(0.0 <= s <= 1.0 for s in scores)
    ordered = scores if higher_is_better else scores[::-1]
    assert all(a <= b for a, b in zip(ordered, ordered[1:]))
    assert ordered[0] == 0.0 and ordered[-1] == 1.0  # the sweep crosses both edges
    verdict_seen = {check.verdict(_raw_sweep(check.name, float(v))) for v in values}
    assert verdict_seen == {"ok", "warn", "bad"}


def test_brightness_score_is_best_in_the_middle():
    band = DEFAULTS.brightness
    scores = [band.score(v) for v in np.linspace(0, 1, 101)]
    peak = scores.index(1.0)
    assert all(a <= b for a, b in zip(scores[:peak], scores[1:peak + 1]))
    assert all(a >= b for a, b in zip(scores[peak:], scores[peak + 1:]))
    assert scores[0] == 0.0 and scores[-1] == 0.0


def test_verdicts_and_scores01_cover_every_check(face):
    sharp = measure_all(face)
    judged = verdicts(sharp, face_size=300.0)
    assert set(judged) == CHECK_NAMES
    assert set(judged.values()) <= {"ok", "warn", "bad"}
    assert judged["sharpness"] == "ok"
    assert judged["motion_blur"] == "ok"

    blurred = verdicts(measure_all(gaussian(face, 4)), face_size=300.0)
    assert blurred["sharpness"] == "bad"

    scores = scores01(measure_all(scaled(face, 0.15)), face_size=300.0)
    assert set(scores) == CHECK_NAMES
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert scores["exposure"] < scores01(sharp, face_size=300.0)["exposure"]

    sizes = [verdicts(sharp, face_size=s)["face_size"] for s in (32.0, 100.0, 400.0)]
    assert sizes == ["bad", "warn", "ok"]


def test_thresholds_are_one_immutable_table_that_callers_can_replace(face):
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULTS.sharpness = Band()  # type: ignore[misc]
    scores = measure_all(face)
    strict = dataclasses.replace(DEFAULTS, sharpness=Band(bad_low=1e5, ok_low=1e6, log=True))
    assert verdicts(scores, 300.0)["sharpness"] == "ok"
    assert verdicts(scores, 300.0, thresholds=strict)["sharpness"] == "bad"
    assert Sharpness(strict).verdict(scores.sharpness) == "bad"
    assert isinstance(DEFAULTS, QualityThresholds)


@pytest.mark.parametrize(
    "edges",
    [dict(bad_low=0.5, ok_low=0.2), dict(ok_high=0.2, bad_high=0.1), dict(ok_low=1.0),
     dict(bad_low=-1.0, ok_low=1.0, log=True)],
)
def test_band_rejects_inconsistent_edges(edges):
    with pytest.raises(ValueError):
        Band(**edges)
