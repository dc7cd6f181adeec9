"""Per-face models and measurements: detector/landmark/embedder backends and their runtimes, alignment, pose, quality checks."""
