"""Training batches as a pure function of (seed, step), prepared ahead of the train step by threads.

Every choice — which faces, flips, affine, warp grid, jitter, colour-transfer partner — is drawn
from generators seeded by (seed, salt, side, step, slot). A resumed run therefore sees exactly the
batches an uninterrupted one would, and threads can build batches in any order.
"""

from __future__ import annotations

import collections
import functools
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from train.augment import draw_sample_transform, hsv_jitter, transform_sample
from train.color_transfer import color_transfer
from train.faceset_data import FaceArrays
from train.masks import eyes_mouth_mask, face_mask, normalise_peak

_SIDE_CODES = {"src": 1, "dst": 2}
FLIP_PROBABILITY = 0.4  # SAEHD's chance of a horizontal flip when flips are on
YAW_BINS = 128
YAW_LIMIT_DEGREES = float(np.degrees(1.2))  # SAEHD bins yaw over ±1.2 rad


@dataclass(frozen=True)
class SamplerSettings:
    """What shapes a batch; built from the training config."""

    batch_size: int
    random_warp: bool
    src_flip: bool
    dst_flip: bool
    hsv_power: float
    ct_mode: str
    uniform_yaw: bool
    blur_out_mask: bool
    seed: int
    salt: int = 0  # bumped after a collapse rollback so the run does not replay the same batches


@dataclass(frozen=True, eq=False)
class Batch:
    """One step's inputs and targets, float32 NHWC; masks (B, R, R, 1) in 0..1."""

    step: int
    src_input: np.ndarray  # warped/augmented src faces the network sees
    src_target: np.ndarray
    src_mask: np.ndarray  # full-face mask of the target
    src_eyes_mouth: np.ndarray
    dst_input: np.ndarray
    dst_target: np.ndarray
    dst_mask: np.ndarray
    dst_eyes_mouth: np.ndarray
    src_indices: np.ndarray  # (B,) int rows of the src FaceArrays
    dst_indices: np.ndarray

    def tensors(self) -> tuple[np.ndarray, ...]:
        """The arrays the train step takes, in its argument order."""
        return (self.src_input, self.src_target, self.src_mask, self.src_eyes_mouth,
                self.dst_input, self.dst_target, self.dst_mask, self.dst_eyes_mouth)


@functools.lru_cache(maxsize=64)
def _permutation(seed: int, salt: int, side: int, stream: int, epoch: int, size: int) -> np.ndarray:
    return np.random.default_rng([seed, salt, side, stream, epoch]).permutation(size)


def shuffled_index(position: int, size: int, seed: int, salt: int, side: int) -> int:
    """The face at `position` of an endless sequence of shuffled epochs without replacement."""
    epoch, offset = divmod(position, size)
    return int(_permutation(seed, salt, side, 0, epoch, size)[offset])


def yaw_bins(yaw_degrees: np.ndarray, bins: int = YAW_BINS) -> list[np.ndarray]:
    """Face rows per non-empty yaw bin over ±1.2 rad (unknown yaw counts as frontal)."""
    yaw = np.nan_to_num(np.asarray(yaw_degrees, dtype=np.float64), nan=0.0)
    scaled = (np.clip(yaw, -YAW_LIMIT_DEGREES, YAW_LIMIT_DEGREES) + YAW_LIMIT_DEGREES) / (2 * YAW_LIMIT_DEGREES)
    index = np.minimum((scaled * bins).astype(np.int64), bins - 1)
    return [np.flatnonzero(index == b) for b in range(bins) if np.any(index == b)]


def uniform_yaw_index(position: int, groups: list[np.ndarray], seed: int, salt: int, side: int) -> int:
    """The face at `position` when each pass visits every non-empty yaw bin once, in shuffled order."""
    cycle, slot = divmod(position, len(groups))
    group_index = int(_permutation(seed, salt, side, 1, cycle, len(groups))[slot])
    members = groups[group_index]
    epoch, offset = divmod(cycle, len(members))
    return int(members[_permutation(seed, salt, side, 2 + group_index, epoch, len(members))[offset]])


def landmark_masks(landmarks: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(face mask, eyes-and-mouth mask), each (R, R, 1) float32, from training-crop landmarks."""
    face = face_mask(landmarks, resolution).reshape(resolution, resolution, 1)
    eyes_mouth = eyes_mouth_mask(landmarks, resolution).reshape(resolution, resolution, 1)
    return face.astype(np.float32), eyes_mouth.astype(np.float32)


def _blur_background(image: np.ndarray, mask: np.ndarray, resolution: int) -> np.ndarray:
    sigma = max(1.0, resolution / 128)
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    return image * mask + blurred * (1.0 - mask)


class SideSampler:
    """One side's faces and the per-sample pipeline (colour transfer, transform, jitter)."""

    def __init__(self, side: str, faces: FaceArrays, flip: bool, uniform_yaw: bool):
        self.side = side
        self.code = _SIDE_CODES[side]
        self.faces = faces
        self.flip = flip
        self.groups = yaw_bins(faces.yaw) if uniform_yaw else None

    def __len__(self) -> int:
        return len(self.faces)

    def index_at(self, position: int, seed: int, salt: int) -> int:
        if self.groups is not None:
            return uniform_yaw_index(position, self.groups, seed, salt, self.code)
        return shuffled_index(position, len(self.faces), seed, salt, self.code)

    def image(self, index: int) -> np.ndarray:
        return self.faces.images[index].astype(np.float32) / 255.0

    def masks(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return landmark_masks(self.faces.landmarks[index], self.faces.resolution)

    def plain(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Un-augmented (images, face masks, eyes-and-mouth masks) for evaluation and previews."""
        images = np.stack([self.image(i) for i in indices])
        masks = [self.masks(i) for i in indices]
        return images, np.stack([m for m, _ in masks]), np.stack([e for _, e in masks])


def _sample(side: SideSampler, index: int, rng: np.random.Generator, settings: SamplerSettings,
            partner: SideSampler | None) -> tuple[np.ndarray, ...]:
    resolution = side.faces.resolution
    image = side.image(index)
    mask, eyes_mouth = side.masks(index)
    if partner is not None and settings.ct_mode != "none":
        other = int(rng.integers(len(partner)))
        other_mask, _ = partner.masks(other)
        image = color_transfer(settings.ct_mode, image, partner.image(other), source_mask=mask,
                               target_mask=other_mask, rng=rng)
    transform = draw_sample_transform(rng, resolution, random_warp=settings.random_warp,
                                      flip_probability=FLIP_PROBABILITY if side.flip else 0.0)
    network_input, target, target_masks = transform_sample(
        image, {"face": mask, "eyes_mouth": eyes_mouth}, transform)
    mask = target_masks["face"].reshape(resolution, resolution, 1)
    # The affine resampling softens the peak; SAEHD re-normalises it to 1 after warping.
    eyes_mouth = normalise_peak(target_masks["eyes_mouth"].reshape(resolution, resolution, 1))
    if side.side == "src" and settings.hsv_power > 0:
        network_input = hsv_jitter(network_input, rng, settings.hsv_power)
    if settings.blur_out_mask:
        target = _blur_background(target, mask, resolution)
    return network_input, target, mask, eyes_mouth


def make_batch(step: int, src: SideSampler, dst: SideSampler, settings: SamplerSettings) -> Batch:
    """The batch for `step` (1-based): a pure function of the faces, the settings and the step."""
    size = settings.batch_size
    parts: dict[str, list] = collections.defaultdict(list)
    indices = {}
    for side, partner in ((src, dst), (dst, None)):
        rows = [side.index_at((step - 1) * size + slot, settings.seed, settings.salt) for slot in range(size)]
        indices[side.side] = np.array(rows)
        for slot, row in enumerate(rows):
            rng = np.random.default_rng([settings.seed, settings.salt, side.code, step, slot])
            for name, array in zip(("input", "target", "mask", "eyes_mouth"),
                                   _sample(side, row, rng, settings, partner)):
                parts[f"{side.side}_{name}"].append(array)
    stacked = {name: np.ascontiguousarray(np.stack(arrays), dtype=np.float32) for name, arrays in parts.items()}
    return Batch(step=step, src_indices=indices["src"], dst_indices=indices["dst"], **stacked)


class BatchStream:
    """Batches for steps start, start+1, … built ahead by a thread pool, delivered in order."""

    def __init__(self, src: SideSampler, dst: SideSampler, settings: SamplerSettings, start_step: int,
                 workers: int = 0, depth: int | None = None):
        self.src, self.dst, self.settings = src, dst, settings
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.depth = depth or 2 * self.workers
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sampler")
        self._pending: collections.deque[Future[Batch]] = collections.deque()
        self._next_step = start_step

    def _fill(self) -> None:
        while len(self._pending) < self.depth:
            self._pending.append(self._pool.submit(make_batch, self._next_step, self.src, self.dst,
                                                   self.settings))
            self._next_step += 1

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        self._fill()
        return self._pending.popleft().result()

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
