"""A restricted unpickler for DFL metadata: plain values and numeric numpy arrays, nothing that runs code."""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
from typing import Any

import numpy as np

from curate.interop.dfl.errors import BadMetadataError, DflError, UnsafeMetadataError

# The globals numpy's pickles name, in numpy 1.x ('numpy.core') and 2.x ('numpy._core'):
#   ndarray  -> _reconstruct(numpy.ndarray, (0,), b'b') then BUILD with
#               (version, shape, dtype, is_fortran, raw bytes)
#   ndarray, protocol 5 -> numeric._frombuffer(buffer, dtype, shape, order)
#   dtype    -> numpy.dtype('f8', False, True) then BUILD with (3, '<', None, None, None, -1, -1, 0)
#   scalar   -> multiarray.scalar(dtype, raw bytes)
# Protocols 0-2 spell bytes as _codecs.encode(text, 'latin1') (b'' as bytes()), and sets,
# bytearrays and complex numbers through builtins, which Python 3's pickler writes
# '__builtin__' at protocols < 3.
#
# None of these resolve to numpy itself: each resolves to a stand-in below that only records
# its arguments. The tree is then walked and each array built with np.frombuffer from raw bytes
# whose length matches a plain numeric dtype, so no numpy code ever sees attacker-chosen state
# (numpy's own __setstate__ trusts its input, e.g. the dtype flags).

_NUMPY_CORE = ("numpy.core", "numpy._core")
_MAX_DEPTH = 64  # containers nested deeper than any DFL dict: refused
_MAX_VALUES = 1_000_000  # values in one payload (a DFL dict holds a few hundred)
# Values once shared references are expanded, as np.asarray, repr or == walk them: a 283-byte
# pickle of a shared binary tree names 2**27 leaves, and np.asarray would build every one.
_MAX_EXPANDED = 1_000_000
# Memo slots: the unpickler grows its memo table to the highest index a PUT names before storing
# anything, so one LONG_BINPUT of 2**30 asks for 8 GiB. A real pickler numbers slots from 0, one
# per stored object, so an index can never exceed the payload's length in bytes.
_MAX_MEMO = 1 << 16
_MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})
_MAX_ARRAY_BYTES = 64 * 2**20  # numpy array bytes built from one payload (a DFL dict: ~3 KiB)
_DTYPE_SPEC = re.compile(r"[biufc]\d{1,2}")  # bool, ints, floats, complex: all a face needs


class _Stand:
    """A value the unpickler hands out for an allowed global: no attributes can be set on it."""

    __slots__ = ()


class _NdarrayClass(_Stand):
    """Stands for numpy.ndarray; only valid as the first argument of _reconstruct."""

    __slots__ = ()


class _Pending:
    """Base of the records the stand-ins return; BUILD may give each its state once."""

    __slots__ = ("has_state", "state")

    def __init__(self) -> None:
        self.state: Any = None
        self.has_state = False

    def __setstate__(self, state: Any) -> None:
        if self.has_state:
            raise BadMetadataError("an object's state is set twice")
        self.state = state
        self.has_state = True


class _PendingDtype(_Pending):
    __slots__ = ("spec",)

    def __init__(self, spec: str) -> None:
        super().__init__()
        self.spec = spec

    def build(self) -> np.dtype:
        if not isinstance(self.spec, str) or not _DTYPE_SPEC.fullmatch(self.spec):
            raise BadMetadataError(f"unsupported numpy dtype {self.spec!r} (only plain numbers)")
        byte_order = "="
        if self.has_state:
            state = self.state
            if (
                not isinstance(state, tuple) or len(state) < 8 or state[0] not in (3, 4)
                or state[1] not in ("<", ">", "|", "=") or any(item is not None for item in state[2:5])
            ):
                raise BadMetadataError(f"unsupported numpy dtype state for {self.spec!r}")
            byte_order = "=" if state[1] == "|" else state[1]
        try:
            return np.dtype(byte_order + self.spec)
        except TypeError as error:
            raise BadMetadataError(f"unsupported numpy dtype {self.spec!r}") from error


class _PendingArray(_Pending):
    """_reconstruct's empty array, waiting for BUILD's (version, shape, dtype, fortran, bytes)."""

    __slots__ = ()

    def build(self) -> np.ndarray:
        if not self.has_state:
            raise BadMetadataError("a numpy array without data")
        state = self.state
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
            raise BadMetadataError("unsupported numpy array state")
        _, shape, dtype, fortran, raw = state
        if not isinstance(fortran, (bool, int)):
            raise BadMetadataError("unsupported numpy array state")
        return _array_from_bytes(raw, dtype, shape, "F" if fortran else "C")


class _PendingFromBuffer(_Pending):
    __slots__ = ("arguments",)

    def __init__(self, arguments: tuple) -> None:
        super().__init__()
        self.arguments = arguments

    def build(self) -> np.ndarray:
        if self.has_state or len(self.arguments) != 4:
            raise BadMetadataError("unsupported numpy buffer array")
        raw, dtype, shape, order = self.arguments
        if order not in ("C", "F"):
            raise BadMetadataError(f"unsupported array order {order!r}")
        return _array_from_bytes(raw, dtype, shape, order)


class _PendingScalar(_Pending):
    __slots__ = ("dtype", "raw")

    def __init__(self, dtype: Any, raw: Any) -> None:
        super().__init__()
        self.dtype = dtype
        self.raw = raw

    def build(self) -> np.generic:
        if self.has_state:
            raise BadMetadataError("unsupported numpy scalar state")
        return _array_from_bytes(self.raw, self.dtype, (), "C")[()]


def _array_from_bytes(raw: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    if not isinstance(dtype, _PendingDtype):
        raise BadMetadataError("a numpy array without a numpy dtype")
    resolved = dtype.build()
    if not isinstance(raw, (bytes, bytearray)):
        raise BadMetadataError("numpy array data is not raw bytes")
    if not isinstance(shape, tuple) or not all(
        isinstance(side, int) and not isinstance(side, bool) and side >= 0 for side in shape
    ):
        raise BadMetadataError(f"bad numpy array shape {shape!r}")
    count = math.prod(shape)
    if count * resolved.itemsize != len(raw):
        raise BadMetadataError(
            f"numpy array data holds {len(raw)} bytes, its shape {shape} and dtype {resolved} need "
            f"{count * resolved.itemsize}"
        )
    return np.frombuffer(bytes(raw), dtype=resolved).reshape(shape, order=order).copy(order="C")


class _Reconstruct(_Stand):
    """numpy's multiarray._reconstruct: the empty array an ndarray pickle starts from."""

    __slots__ = ()

    def __call__(self, subtype: Any, shape: Any, typecode: Any) -> _PendingArray:
        if not isinstance(subtype, _NdarrayClass):
            raise UnsafeMetadataError("refused an array of a type other than numpy.ndarray")
        return _PendingArray()


class _FromBuffer(_Stand):
    __slots__ = ()

    def __call__(self, *arguments: Any) -> _PendingFromBuffer:
        return _PendingFromBuffer(arguments)


class _Scalar(_Stand):
    __slots__ = ()

    def __call__(self, dtype: Any, raw: Any = None) -> _PendingScalar:
        return _PendingScalar(dtype, raw)


class _Dtype(_Stand):
    __slots__ = ()

    def __call__(self, spec: Any, align: Any = False, copy: Any = False) -> _PendingDtype:
        return _PendingDtype(spec)


class _Latin1Encode(_Stand):
    """_codecs.encode as protocols 0-2 use it: text to bytes, one byte per code point."""

    __slots__ = ()

    def __call__(self, text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise UnsafeMetadataError(f"refused _codecs.encode to {encoding!r}")
        return text.encode("latin-1")


class _Bytearray(_Stand):
    """builtins.bytearray from bytes or latin-1 text only (never a size: no huge allocations)."""

    __slots__ = ()

    def __call__(self, source: Any = b"", encoding: Any = None) -> bytearray:
        if isinstance(source, (bytes, bytearray)) and encoding is None:
            return bytearray(source)
        if isinstance(source, str) and encoding in ("latin1", "latin-1"):
            return bytearray(source, "latin-1")
        raise UnsafeMetadataError("refused builtins.bytearray from anything but bytes")


class _Bytes(_Stand):
    """builtins.bytes as protocols 0-2 use it: bytes() for b'' (never a size)."""

    __slots__ = ()

    def __call__(self, *arguments: Any) -> bytes:
        if arguments:
            raise UnsafeMetadataError("refused builtins.bytes with arguments")
        return b""


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NdarrayClass(),
    ("numpy", "dtype"): _Dtype(),
    **{(f"{core}.multiarray", "_reconstruct"): _Reconstruct() for core in _NUMPY_CORE},
    **{(f"{core}.multiarray", "scalar"): _Scalar() for core in _NUMPY_CORE},
    **{(f"{core}.numeric", "_frombuffer"): _FromBuffer() for core in _NUMPY_CORE},
    ("_codecs", "encode"): _Latin1Encode(),
    **{(builtins, "bytes"): _Bytes() for builtins in ("builtins", "__builtin__")},
    **{(builtins, "bytearray"): _Bytearray() for builtins in ("builtins", "__builtin__")},
    **{(builtins, "set"): set for builtins in ("builtins", "__builtin__")},
    **{(builtins, "frozenset"): frozenset for builtins in ("builtins", "__builtin__")},
    **{(builtins, "complex"): complex for builtins in ("builtins", "__builtin__")},
}

ALLOWED_GLOBALS: frozenset[str] = frozenset(f"{module}.{name}" for module, name in _ALLOWED_GLOBALS)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafeMetadataError.refused_global(module, name)
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeMetadataError("refused a persistent id")


def safe_loads(payload: bytes) -> Any:
    """Unpickle plain data: dict, list, tuple, set, str, bytes, numbers, bool, None and numpy
    arrays, scalars and dtypes of plain numbers (as numpy 1.x or 2.x pickle them).

    Any other global (os.system, builtins.eval, functools.partial, copyreg._reconstructor, …)
    raises UnsafeMetadataError naming it, before anything is called; a payload that is not a
    pickle of such values raises BadMetadataError.
    """
    payload = bytes(payload)
    try:
        _check_opcodes(payload)
        loaded = _RestrictedUnpickler(io.BytesIO(payload)).load()
        return _Finisher().finish(loaded, 0)
    except DflError:
        raise
    except Exception as error:  # the unpickler raises many kinds on malformed input
        raise BadMetadataError(f"not a valid pickle ({type(error).__name__}: {error})") from error


def _check_opcodes(payload: bytes) -> None:
    """Refuse, before the unpickler allocates anything, memo indices past any a real pickler
    writes and lengths (strings, bytes, frames) that run past the payload's end.

    pickletools.genops reads each argument from the payload itself, so a declared length of
    2**40 fails as a short read here instead of an allocation in the C unpickler.
    """
    bound = min(len(payload), _MAX_MEMO)
    try:
        for opcode, argument, position in pickletools.genops(payload):
            if opcode.name in _MEMO_OPCODES and not 0 <= int(argument) < bound:
                raise BadMetadataError(f"memo index {argument} at byte {position} is out of range "
                                       f"(a {len(payload)}-byte pickle uses fewer than {bound})")
    except DflError:
        raise
    except Exception as error:  # genops raises ValueError and others on malformed input
        raise BadMetadataError(f"not a valid pickle ({type(error).__name__}: {error})") from error


class _Finisher:
    """Walks the loaded tree once, building the pending numpy values and refusing the stand-ins.

    Pickle's memo lets a few bytes name one object many times (L1 = [L0, L0], L2 = [L1, L1], …:
    a 600-byte payload can describe 2**60 leaves), so each object is finished once and shared
    references stay shared, as plain pickle would give them. Caps on the values and array bytes
    built bound the work whatever the payload, and so does a cap on the expanded size (each
    shared value counted as often as it is referenced): whoever walks the result as a tree
    (np.asarray, repr, ==) does at most that much work. A value that contains itself is refused.
    """

    def __init__(self) -> None:
        self.done: dict[int, Any] = {}  # id(loaded object) -> its finished value
        self.expanded: dict[int, int] = {}  # id(loaded object) -> values in it, shared ones repeated
        self.active: set[int] = set()  # ids of the containers being finished (cycle check)
        self.values = 0
        self.array_bytes = 0

    def _count(self, values: int) -> None:
        self.values += values
        if self.values > _MAX_VALUES:
            raise BadMetadataError(f"more than {_MAX_VALUES} values")

    def finish(self, value: Any, depth: int) -> Any:
        """The finished value; the whole tree's expanded size is checked as it is built."""
        finished, _ = self._finish(value, depth)
        return finished

    def _finish(self, value: Any, depth: int) -> tuple[Any, int]:
        """(finished value, its expanded size)."""
        if depth > _MAX_DEPTH:
            raise BadMetadataError(f"values nested deeper than {_MAX_DEPTH} levels")
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
            return value, 1
        key = id(value)
        if key in self.done:
            return self.done[key], self.expanded[key]
        if key in self.active:
            raise BadMetadataError("a value that contains itself")
        self.active.add(key)
        self._count(1)
        finished, size = self._build(value, depth)
        if size > _MAX_EXPANDED:
            raise BadMetadataError(f"a value that expands to more than {_MAX_EXPANDED} values "
                                   "(shared references counted each time they are used)")
        self.active.discard(key)
        self.done[key] = finished
        self.expanded[key] = size
        return finished, size

    def _children(self, items: Any, depth: int) -> tuple[list[Any], int]:
        finished, total = [], 1
        for item in items:
            value, size = self._finish(item, depth + 1)
            finished.append(value)
            total += size
            if total > _MAX_EXPANDED:  # stop early: the rest cannot make it smaller
                break
        return finished, total

    def _build(self, value: Any, depth: int) -> tuple[Any, int]:
        if isinstance(value, bytearray):
            return value, 1
        if isinstance(value, _PendingDtype):
            return value.build(), 1
        if isinstance(value, (_PendingArray, _PendingFromBuffer, _PendingScalar)):
            built = value.build()
            self.array_bytes += built.nbytes
            if self.array_bytes > _MAX_ARRAY_BYTES:
                raise BadMetadataError(f"numpy arrays of more than {_MAX_ARRAY_BYTES} bytes in all")
            return built, max(1, int(np.size(built)))
        if isinstance(value, dict):
            self._count(2 * len(value))
            pairs = list(value.items())
            keys, key_size = self._children([key for key, _ in pairs], depth)
            items, item_size = self._children([item for _, item in pairs], depth)
            if key_size + item_size - 1 > _MAX_EXPANDED:
                return None, key_size + item_size - 1
            return dict(zip(keys, items)), key_size + item_size - 1
        if isinstance(value, (list, tuple, set, frozenset)):
            self._count(len(value))
            items, size = self._children(value, depth)
            if size > _MAX_EXPANDED:
                return None, size
            return (items if isinstance(value, list) else type(value)(items)), size
        if isinstance(value, _Stand):
            raise BadMetadataError(f"a bare {type(value).__name__.strip('_')} in the metadata")
        raise BadMetadataError(f"unsupported value of type {type(value).__name__}")
