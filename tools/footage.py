"""Realistic footage from still sample faces: shots with slow head turns, speech, blinks, pans, zooms, cuts and several people.

A faceset usually comes from video frames, not photo folders, and what goes wrong there (near
duplicates that chain through a whole shot, one face kept of a 40° head turn) never shows on
photo variants. This module turns the sample photos into clips at 25–30 fps for the tests, the
benchmarks and the README's footage table:

- **head turns** — a rough depth map of the head (an ellipsoid with the nose standing out) is
  rotated by the requested yaw and pitch and re-projected, blended into the unchanged background;
- **speech and blinks** — the lower lip and jaw are pushed down and the mouth's inside drawn dark
  (the mouth opens), the eyelids are drawn shut with skin tone (a blink);
- **camera** — frames are cut from a larger canvas with slow pans and zooms, then given a little
  sensor noise and JPEG compression, as frames extracted from a video are;
- **several people and cuts** — a shot may hold two people side by side; a clip is a list of shots.

Everything is deterministic for a given seed. The landmarks that drive the warps come from the
face analyser the caller passes (the one a scan uses), found once per source photo.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Actor:
    """A person in a shot: a photo and the landmarks of the face to animate in it."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8 BGR
    landmarks68: np.ndarray  # (68, 2) float64, image px


@dataclass(frozen=True)
class Motion:
    """What one actor does over a shot; each value is a function of t in [0, 1]."""

    yaw: Callable[[float], float] = lambda t: 0.0  # degrees added to the photo's own pose
    pitch: Callable[[float], float] = lambda t: 0.0
    mouth: Callable[[float], float] = lambda t: 0.0  # 0 closed .. 1 wide open (a spoken vowel)
    eyes_closed: Callable[[float], bool] = lambda t: False


@dataclass(frozen=True)
class Shot:
    """A run of frames between two cuts."""

    name: str
    actors: tuple[tuple[Actor, Motion], ...]
    frames: int
    zoom: tuple[float, float] = (1.0, 1.0)  # camera zoom at the start and end
    pan: tuple[float, float] = (0.0, 0.0)  # horizontal camera travel, as a share of the frame width
    jitter: float = 0.6  # hand-held shake, output px (random walk)


@dataclass(frozen=True)
class ClipFrame:
    """What was rendered into one written frame (the truth the tests compare against)."""

    path: Path
    shot: str
    index: int  # frame number in the clip
    actors: tuple[str, ...]
    yaw: tuple[float, ...]  # per actor, degrees added
    pitch: tuple[float, ...]
    mouth: tuple[float, ...]
    eyes_closed: tuple[bool, ...]


@dataclass(frozen=True)
class Clip:
    folder: Path
    fps: float
    frames: list[ClipFrame] = field(default_factory=list)

    def of_shot(self, shot: str) -> list[ClipFrame]:
        return [frame for frame in self.frames if frame.shot == shot]


def speech(rate: float, seconds: float, seed: int = 0) -> Callable[[float], float]:
    """A mouth opening and closing `rate` times a second over a shot of `seconds`, with uneven syllables."""
    rng = np.random.default_rng(seed)
    amplitudes = rng.uniform(0.35, 1.0, size=int(rate * seconds) + 2)

    def mouth(t: float) -> float:
        phase = t * seconds * rate
        syllable = amplitudes[min(int(phase), len(amplitudes) - 1)]
        return float(max(0.0, math.sin(math.pi * (phase % 1.0))) * syllable)

    return mouth


def blinks(at: Sequence[float], length: float) -> Callable[[float], bool]:
    """Eyes closed for `length` (share of the shot) from each start in `at`."""
    return lambda t: any(start <= t < start + length for start in at)


# -- warps ------------------------------------------------------------------------------------------


def _depth(shape: tuple[int, int], points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """A rough depth map of the head (px towards the camera, float32 H×W): an ellipsoid through
    the jaw and brows with the nose standing out of it; and the rotation centre (x, y)."""
    height, width = shape
    jaw = float(np.linalg.norm(points[16] - points[0]))
    centre_x = float((points[0, 0] + points[16, 0]) / 2)
    centre_y = float(points[27:31, 1].mean())
    top, chin = float(points[17:27, 1].min()) - 0.25 * jaw, float(points[8, 1])
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    across = 1 - ((xs - centre_x) / (0.58 * jaw)) ** 2 - ((ys - (top + chin) / 2) / ((chin - top) * 0.62)) ** 2
    head = 0.55 * jaw * np.sqrt(np.clip(across, 0, None))
    nose_tip, bridge = points[30], points[27]
    along = np.clip(((xs - bridge[0]) * (nose_tip[0] - bridge[0]) + (ys - bridge[1]) * (nose_tip[1] - bridge[1]))
                    / max(1e-6, float(np.sum((nose_tip - bridge) ** 2))), 0, 1)
    line_x = bridge[0] + along * (nose_tip[0] - bridge[0])
    line_y = bridge[1] + along * (nose_tip[1] - bridge[1])
    off_line = ((xs - line_x) ** 2 + (ys - line_y) ** 2) / (2 * (0.09 * jaw) ** 2)
    nose = 0.3 * jaw * (0.35 + 0.65 * along) * np.exp(-off_line)
    return (head + nose).astype(np.float32), centre_x, centre_y


def head_maps(shape: tuple[int, int], landmarks68: np.ndarray, yaw: float, pitch: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2.remap maps (float32 H×W each) that turn the head by yaw/pitch degrees, and the (68, 2)
    landmarks moved the same way (yaw > 0 turns the face towards image right, pitch > 0 up).

    Each point of the depth map (_depth) is rotated about the head's vertical and horizontal axes
    and projected orthographically; the inverse is found by a few fixed-point steps. Occlusion
    (the nose hiding a cheek) is ignored, which holds for turns of a few tens of degrees.
    """
    height, width = shape
    points = np.asarray(landmarks68, np.float64)
    depth, centre_x, centre_y = _depth(shape, points)
    sin_y, cos_y = math.sin(math.radians(yaw)), math.cos(math.radians(yaw))
    sin_p, cos_p = math.sin(math.radians(pitch)), math.cos(math.radians(pitch))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    source_x, source_y = xs.copy(), ys.copy()
    for _ in range(4):  # x' = cx + (x − cx)·cos + d(x, y)·sin, solved for x (and y alike)
        d = cv2.remap(depth, source_x, source_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        source_x = centre_x + (xs - centre_x - d * sin_y) / cos_y
        source_y = centre_y + (ys - centre_y + d * sin_p) / cos_p
    # Blend into the untouched frame where the head ends.
    inside = cv2.GaussianBlur((depth > 0).astype(np.float32), (0, 0), 0.08 * float(np.linalg.norm(points[16] - points[0])))
    weight = np.clip(inside * 1.6, 0.0, 1.0)
    map_x = (weight * source_x + (1 - weight) * xs).astype(np.float32)
    map_y = (weight * source_y + (1 - weight) * ys).astype(np.float32)
    rows = np.clip(np.round(points[:, 1]).astype(int), 0, height - 1)
    cols = np.clip(np.round(points[:, 0]).astype(int), 0, width - 1)
    d = depth[rows, cols]
    moved = np.stack([centre_x + (points[:, 0] - centre_x) * cos_y + d * sin_y,
                      centre_y + (points[:, 1] - centre_y) * cos_p - d * sin_p], axis=1)
    return map_x, map_y, moved


def open_mouth(image: np.ndarray, landmarks68: np.ndarray, amount: float) -> np.ndarray:
    """The face with its mouth opened by `amount` (0..1, 1 ≈ a third of the mouth's width): the
    lower lip and jaw pushed down, the gap between the inner lips drawn as the mouth's dark inside."""
    if amount <= 0.01:
        return image
    points = np.asarray(landmarks68, np.float64)
    width = float(np.linalg.norm(points[54] - points[48]))
    drop = amount * width * 0.33
    lip_line = float(points[60:68, 1].mean())
    chin = float(points[8, 1])
    height, frame_width = image.shape[:2]
    xs, ys = np.meshgrid(np.arange(frame_width, dtype=np.float32), np.arange(height, dtype=np.float32))
    centre_x = float(points[48:68, 0].mean())
    across = np.exp(-(((xs - centre_x) / (width * 0.9)) ** 2))
    # pixels between the lip line and below the chin move down, fading out below the chin
    below = np.clip((ys - lip_line + 2) / 4.0, 0.0, 1.0) * np.clip((chin + width * 0.6 - ys) / (width * 0.6), 0.0, 1.0)
    shift = (drop * across * below).astype(np.float32)
    warped = cv2.remap(image, xs, ys - shift, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    upper = points[[60, 61, 62, 63, 64]]
    lower = points[[64, 65, 66, 67, 60]].copy()
    lower[1:4, 1] += drop  # the inner lower lip went down with the jaw
    inside = np.round(np.vstack([upper, lower])).astype(np.int32)
    mask = np.zeros(image.shape[:2], np.float32)
    cv2.fillPoly(mask, [inside], 1.0)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, width * 0.02))[..., None]
    dark = np.array([30, 25, 45], np.float32)  # the mouth's inside: dark, a little red (BGR)
    return np.clip(warped * (1 - mask) + dark * mask, 0, 255).astype(np.uint8)


def close_eyes(image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """The face with both eyes shut: each eye filled with the skin tone just below it and a dark
    lash line along its lower lid."""
    points = np.asarray(landmarks68, np.float64)
    result = image.copy()
    for eye in (points[36:42], points[42:48]):
        width = float(np.linalg.norm(eye[3] - eye[0]))
        below = eye.mean(axis=0) + np.array([0.0, width * 0.6])
        x, y = int(round(below[0])), int(round(below[1]))
        patch = image[max(0, y - 2):y + 3, max(0, x - 3):x + 4].reshape(-1, 3)
        skin = patch.mean(axis=0) if len(patch) else np.array([120, 140, 170], np.float64)
        hull = cv2.convexHull(np.round(eye * [1.0, 1.0] + [0, 0]).astype(np.int32))
        mask = np.zeros(image.shape[:2], np.float32)
        grown = (eye - eye.mean(axis=0)) * np.array([1.15, 1.6]) + eye.mean(axis=0)
        cv2.fillConvexPoly(mask, np.round(grown).astype(np.int32), 1.0)
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, width * 0.08))[..., None]
        result = np.clip(result * (1 - mask) + skin * mask, 0, 255).astype(np.uint8)
        lid = np.round(np.vstack([eye[[0]], eye[[5, 4]], eye[[3]]])).astype(np.int32)
        cv2.polylines(result, [lid], False, (40, 35, 35), max(1, int(round(width * 0.06))), cv2.LINE_AA)
        del hull
    return result


def pose_actor(actor: Actor, motion: Motion, t: float) -> tuple[np.ndarray, np.ndarray]:
    """The actor's photo at time t: head turned, mouth and eyes as the motion says; and its landmarks."""
    image, points = actor.image, actor.landmarks68
    mouth = motion.mouth(t)
    if mouth > 0.01:
        image = open_mouth(image, points, mouth)
    if motion.eyes_closed(t):
        image = close_eyes(image, points)
    yaw, pitch = motion.yaw(t), motion.pitch(t)
    if abs(yaw) > 0.05 or abs(pitch) > 0.05:
        map_x, map_y, points = head_maps(image.shape[:2], points, yaw, pitch)
        image = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return image, points


# -- shots and clips ----------------------------------------------------------------------------


def prepared(actor: Actor, face_px: float) -> Actor:
    """The actor's photo scaled so the face (jaw width) is `face_px` wide and cut to the head and
    shoulders around it (every later warp works on this small image)."""
    points = np.asarray(actor.landmarks68, np.float64)
    jaw = float(np.linalg.norm(points[16] - points[0])) or 1.0
    scale = face_px / jaw
    image = cv2.resize(actor.image, None, fx=scale, fy=scale,
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    points = points * scale
    centre = points[27:36].mean(axis=0)
    half_w, up, down = 1.7 * face_px, 1.7 * face_px, 2.0 * face_px
    height, width = image.shape[:2]
    x0, x1 = int(max(0, centre[0] - half_w)), int(min(width, centre[0] + half_w))
    y0, y1 = int(max(0, centre[1] - up)), int(min(height, centre[1] + down))
    return Actor(actor.name, np.ascontiguousarray(image[y0:y1, x0:x1]), points - [x0, y0])


def _feather(shape: tuple[int, int], margin: float) -> np.ndarray:
    """(H, W, 1) float32 alpha: 1 inside, fading to 0 over `margin` px at the edges."""
    height, width = shape
    ys = np.minimum(np.arange(height), np.arange(height)[::-1])[:, None]
    xs = np.minimum(np.arange(width), np.arange(width)[::-1])[None, :]
    alpha = np.clip(np.minimum(xs, ys) / max(1.0, margin), 0.0, 1.0).astype(np.float32)
    return alpha[..., None]


def _background(actors: Sequence[Actor], shape: tuple[int, int]) -> np.ndarray:
    """A canvas filled with the actors' photos blurred beyond recognition (no face to detect),
    so the set around a person looks like the photo's own surroundings."""
    height, width = shape
    parts = [cv2.resize(actor.image, (max(1, width // len(actors)), height), interpolation=cv2.INTER_AREA)
             for actor in actors]
    canvas = np.hstack(parts)
    canvas = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(canvas, (0, 0), 25)


def render_frame(shot: Shot, t: float, size: tuple[int, int], offset: np.ndarray,
                 background: np.ndarray) -> np.ndarray:
    """One frame of `shot` at time t (0..1): the (prepared) actors side by side on `background`,
    seen through the camera (zoom, pan, shake `offset` px)."""
    width, height = size
    canvas = background.astype(np.float32)
    canvas_h, canvas_w = canvas.shape[:2]
    slots = len(shot.actors)
    for slot, (actor, motion) in enumerate(shot.actors):
        posed, points = pose_actor(actor, motion, t)
        centre = actor.landmarks68[27:36].mean(axis=0)
        target = np.array([canvas_w * (slot + 1) / (slots + 1), canvas_h * 0.48])
        x0, y0 = np.round(target - centre).astype(int)
        h, w = posed.shape[:2]
        alpha = _feather((h, w), 0.12 * min(h, w))
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(canvas_w, x0 + w), min(canvas_h, y0 + h)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        part = posed[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0].astype(np.float32)
        weight = alpha[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        canvas[cy0:cy1, cx0:cx1] = canvas[cy0:cy1, cx0:cx1] * (1 - weight) + part * weight
    zoom = shot.zoom[0] + (shot.zoom[1] - shot.zoom[0]) * t
    pan = (shot.pan[0] + (shot.pan[1] - shot.pan[0]) * t) * width
    centre = np.array([canvas_w / 2 + pan, canvas_h / 2]) + offset
    matrix = np.array([[zoom, 0, width / 2 - zoom * centre[0]], [0, zoom, height / 2 - zoom * centre[1]]])
    return cv2.warpAffine(canvas, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def write_clip(shots: Sequence[Shot], folder: Path, fps: float = 30.0, size: tuple[int, int] = (960, 540),
               face_px: float = 200.0, jpeg_quality: int = 88, noise: float = 2.0, seed: int = 0) -> Clip:
    """Render `shots` one after another (hard cuts) into `folder` as `<shot>_<frame:05d>.jpg`,
    the way `curate extract` leaves a video's frames; returns what each frame shows. Faces are
    about `face_px` wide (jaw to jaw) at zoom 1."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    clip = Clip(folder, fps)
    index = 0
    ready: dict[int, Actor] = {}
    for shot in shots:
        cast = tuple((ready.setdefault(id(actor), prepared(actor, face_px)), motion) for actor, motion in shot.actors)
        staged = Shot(shot.name, cast, shot.frames, shot.zoom, shot.pan, shot.jitter)
        background = _background([actor for actor, _ in cast], (int(size[1] * 1.4), int(size[0] * 1.4)))
        offset = np.zeros(2)
        for frame in range(shot.frames):
            t = frame / max(1, shot.frames - 1)
            offset = offset * 0.9 + rng.normal(0.0, shot.jitter, 2)
            image = render_frame(staged, t, size, offset, background)
            image += rng.normal(0.0, noise, image.shape).astype(np.float32)
            path = folder / f"{shot.name}_{index:05d}.jpg"
            cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            clip.frames.append(ClipFrame(
                path=path, shot=shot.name, index=index,
                actors=tuple(actor.name for actor, _ in shot.actors),
                yaw=tuple(motion.yaw(t) for _, motion in shot.actors),
                pitch=tuple(motion.pitch(t) for _, motion in shot.actors),
                mouth=tuple(motion.mouth(t) for _, motion in shot.actors),
                eyes_closed=tuple(motion.eyes_closed(t) for _, motion in shot.actors)))
            index += 1
    return clip


def actor_from_photo(name: str, image: np.ndarray, locate: Callable[[np.ndarray], list]) -> Actor:
    """An Actor of the largest face `locate` (a FaceAnalyzer's locate) finds in `image`."""
    faces = locate(image)
    if not faces:
        raise ValueError(f"no face in the photo for {name}")
    face = max(faces, key=lambda f: float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])))
    return Actor(name, image, np.asarray(face.landmarks68, np.float64).reshape(68, 2))


def interview(actors: dict[str, Actor], folder: Path, fps: float = 30.0, scale: float = 1.0, seed: int = 0) -> Clip:
    """The standard test clip (about 9 s at 30 fps): a talking head that speaks and blinks, a slow
    head turn from −22° to +22° (the pose estimator reads about −16° to +18°), a two-shot with
    another person, a cut to that person alone, and a slow zoom with a nod. `actors` needs 'main'
    (a frontal photo of the main person), 'main2' (another photo of them) and 'other'; `scale`
    shortens or lengthens every shot."""
    def frames(seconds: float) -> int:
        return max(2, int(round(seconds * fps * scale)))

    main, main2, other = actors["main"], actors["main2"], actors["other"]
    talk_seconds = 2.5
    shots = [
        Shot("talk", ((main2, Motion(yaw=lambda t: 3 * math.sin(2 * math.pi * t), mouth=speech(3.0, talk_seconds, seed),
                                     eyes_closed=blinks([0.3, 0.8], 0.05))),), frames(talk_seconds)),
        Shot("turn", ((main, Motion(yaw=lambda t: -22 + 44 * t)),), frames(3.0), zoom=(1.0, 1.05)),
        Shot("twoshot", ((main, Motion(yaw=lambda t: 8 * t, mouth=speech(2.0, 1.5, seed + 1))),
                         (other, Motion(yaw=lambda t: -5 * t))), frames(1.5), zoom=(0.75, 0.75), pan=(-0.05, 0.05)),
        Shot("other", ((other, Motion(mouth=speech(2.5, 1.0, seed + 2))),), frames(1.0)),
        Shot("zoom", ((main, Motion(pitch=lambda t: 12 * math.sin(2 * math.pi * t))),), frames(1.5), zoom=(0.9, 1.2)),
    ]
    return write_clip(shots, folder, fps=fps, seed=seed)


def main() -> None:
    """Write the interview clip of the sample photos (tools/fetch_samples.py) to a folder."""
    import argparse
    import sys

    repo = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo))
    from PIL import Image

    from curate.faces.backends.embedded import EmbeddedFaceAnalyzer

    parser = argparse.ArgumentParser(description="Render the interview clip of the sample faces as JPEG frames.")
    parser.add_argument("--samples", type=Path, default=repo / "samples", help="fetched sample photos")
    parser.add_argument("--out", type=Path, required=True, help="folder for the frames")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--scale", type=float, default=1.0, help="shot lengths × this (0.5: half as long)")
    args = parser.parse_args()

    def load(name: str) -> np.ndarray:
        path = args.samples / "face_recognition" / name
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run python tools/fetch_samples.py --dest {args.samples}")
        return cv2.cvtColor(np.asarray(Image.open(path).convert("RGB")), cv2.COLOR_RGB2BGR)

    analyzer = EmbeddedFaceAnalyzer()
    actors = {"main": actor_from_photo("obama", load("obama.jpg"), analyzer.locate),
              "main2": actor_from_photo("obama", load("obama2.jpg"), analyzer.locate),
              "other": actor_from_photo("biden", load("biden.jpg"), analyzer.locate)}
    clip = interview(actors, args.out, fps=args.fps, scale=args.scale)
    shots = ", ".join(f"{shot} {len(clip.of_shot(shot))}" for shot in dict.fromkeys(f.shot for f in clip.frames))
    print(f"{len(clip.frames)} frames at {args.fps:g} fps in {args.out} ({shots})")


if __name__ == "__main__":
    main()
