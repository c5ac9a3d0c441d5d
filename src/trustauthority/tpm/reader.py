"""One bounds-checked reader for TPM 2.0 wire structures (big-endian, TPM 2.0 Part 1 §9.3).

Every read checks the remaining length first, so truncated or oversized input raises
`TpmFormatError` naming the byte offset instead of IndexError or struct.error.
"""

from __future__ import annotations

import struct
from typing import TypeVar

from trustauthority.errors import TpmFormatError

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Reader:
    """Sequential reader over untrusted bytes."""

    __slots__ = ("_data", "_end", "_what", "pos")

    def __init__(self, data: bytes, what: str, start: int = 0) -> None:
        self._data = data
        self._end = len(data)
        self._what = what
        self.pos = start

    @property
    def remaining(self) -> int:
        return self._end - self.pos

    def error(self, message: str, offset: int | None = None) -> TpmFormatError:
        return TpmFormatError(f"{self._what}: {message}", self.pos if offset is None else offset)

    def _need(self, count: int, field: str) -> None:
        if count > self._end - self.pos:
            raise self.error(f"truncated {field}: need {count} bytes, {self.remaining} left")

    def u8(self, field: str = "UINT8") -> int:
        self._need(1, field)
        value = self._data[self.pos]
        self.pos += 1
        return value

    def u16(self, field: str = "UINT16") -> int:
        self._need(2, field)
        (value,) = _U16.unpack_from(self._data, self.pos)
        self.pos += 2
        return int(value)

    def u32(self, field: str = "UINT32") -> int:
        self._need(4, field)
        (value,) = _U32.unpack_from(self._data, self.pos)
        self.pos += 4
        return int(value)

    def u64(self, field: str = "UINT64") -> int:
        self._need(8, field)
        (value,) = _U64.unpack_from(self._data, self.pos)
        self.pos += 8
        return int(value)

    def raw(self, count: int, field: str) -> bytes:
        self._need(count, field)
        value = self._data[self.pos : self.pos + count]
        self.pos += count
        return value

    def tpm2b(self, field: str, max_size: int = 4096) -> bytes:
        """A TPM2B_*: UINT16 size followed by that many bytes (Part 2 §10.4)."""
        start = self.pos
        size = self.u16(f"{field} size")
        if size > max_size:
            raise self.error(f"{field} size {size} exceeds the maximum {max_size}", start)
        return self.raw(size, field)

    def since(self, start: int) -> bytes:
        """The bytes read from `start` up to the current position."""
        return self._data[start : self.pos]

    def expect_end(self) -> None:
        if self.pos != self._end:
            raise self.error(f"{self.remaining} unexpected trailing bytes")


_T = TypeVar("_T")


def new_frozen(cls: type[_T], fields: dict[str, object]) -> _T:
    """Build a frozen dataclass without its generated __init__.

    A frozen __init__ sets each field through object.__setattr__ (about 0.15 µs a field); a
    verifier builds several of these per quote, so the parsers' fast paths fill __dict__
    directly. Only for classes without __post_init__ or slots, with every field given.
    """
    instance = object.__new__(cls)
    instance.__dict__.update(fields)
    return instance


def u16(value: int) -> bytes:
    return _U16.pack(value)


def u32(value: int) -> bytes:
    return _U32.pack(value)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def tpm2b(value: bytes) -> bytes:
    """Marshal a TPM2B_*: UINT16 size, then the bytes."""
    return _U16.pack(len(value)) + value
