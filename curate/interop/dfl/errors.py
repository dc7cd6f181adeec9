"""The errors of DFL interop: each says which file and why, and carries a stable reason code."""

from __future__ import annotations

from pathlib import Path

from curate.errors import FacesmithError



class DflError(FacesmithError):
    """A DFL aligned file that cannot be read as asked; `reason` is the short form stored per file."""

    code = "dfl-error"

    def __init__(self, detail: str, path: Path | None = None) -> None:
        self.detail = detail
        self.path = path
        super().__init__(f"{path}: {self._message()}" if path is not None else self._message())

    def _message(self) -> str:
        return self.detail

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"

    def at(self, path: Path) -> DflError:
        """The same error, naming the file it came from."""
        return type(self)(self.detail, path)


class JpegStructureError(DflError):
    """The bytes are not a JPEG, or its marker segments are truncated or corrupt."""

    code = "bad-jpeg"


class PayloadTooLargeError(DflError):
    """A metadata payload does not fit one JPEG segment (16-bit length)."""

    code = "too-large"


class BadMetadataError(DflError):
    """The APP15 payload is not a valid pickle of a DFL metadata dict (wrong keys, types, shapes)."""

    code = "bad-metadata"

    def _message(self) -> str:
        return f"bad DFL metadata: {self.detail}"


class UnsafeMetadataError(DflError):
    """The APP15 payload asks for a global (a function or class) outside the allowed few:
    loading it with plain pickle could run code. Nothing in it was run."""

    code = "unsafe-metadata"

    def _message(self) -> str:
        return (
            f"unsafe DFL metadata, {self.detail}: DFL metadata may hold only plain values and numpy "
            "arrays; nothing in it was run"
        )

    @classmethod
    def refused_global(cls, module: str, name: str) -> UnsafeMetadataError:
        return cls(f"refused global {module}.{name}")
