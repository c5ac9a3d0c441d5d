"""The one bounds-checked reader over untrusted event-log bytes.

Every read checks the remaining length first and raises EventLogFormatError naming the absolute
byte offset, so no caller ever sees IndexError, struct.error or a short slice.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final
from uuid import UUID

from trustauthority.errors import EventLogFormatError

_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
_U32X2: Final = struct.Struct("<II")
_U32X3: Final = struct.Struct("<III")


class Reader:
    """A cursor over `raw[start:end]`; offsets in errors are `base` + position in `raw`.

    `base` lets a reader over one event's data report offsets relative to that data (base 0)
    or to the whole log (base = the data's offset in the log).
    """

    __slots__ = ("_base", "_end", "_raw", "pos")

    def __init__(self, raw: bytes, start: int = 0, end: int | None = None, *,
                 base: int = 0) -> None:
        self._raw = raw
        self.pos = start
        self._end = len(raw) if end is None else end
        self._base = base

    @property
    def raw(self) -> bytes:
        """The bytes read (for a hot loop that reads with locals and keeps `pos` in step)."""
        return self._raw

    @property
    def end(self) -> int:
        """Where reading stops (exclusive)."""
        return self._end

    @property
    def remaining(self) -> int:
        return self._end - self.pos

    def at_end(self) -> bool:
        return self.pos >= self._end

    def need(self, size: int, what: str) -> None:
        """Raise unless `size` more bytes are there; call before trusting any declared length."""
        if size > self._end - self.pos:
            raise EventLogFormatError(
                f"truncated {what}: needs {size} bytes, {self._end - self.pos} left",
                self._base + self.pos,
            )

    # Each read repeats the length check inline rather than calling need(): parsing spends most
    # of its time in these few lines, and a Python call costs as much as the read itself.

    def u8(self, what: str) -> int:
        pos = self.pos
        if self._end - pos < 1:
            self.need(1, what)
        self.pos = pos + 1
        return self._raw[pos]

    def u16(self, what: str) -> int:
        pos = self.pos
        if self._end - pos < 2:
            self.need(2, what)
        self.pos = pos + 2
        return int(_U16.unpack_from(self._raw, pos)[0])

    def u32(self, what: str) -> int:
        pos = self.pos
        if self._end - pos < 4:
            self.need(4, what)
        self.pos = pos + 4
        return int(_U32.unpack_from(self._raw, pos)[0])

    def u64(self, what: str) -> int:
        pos = self.pos
        if self._end - pos < 8:
            self.need(8, what)
        self.pos = pos + 8
        return int(_U64.unpack_from(self._raw, pos)[0])

    def uint(self, size: int, what: str) -> int:
        """A UINTN whose width (4 or 8) the log's Spec ID header declares."""
        return self.u64(what) if size == 8 else self.u32(what)

    def u32_pair(self, what: str) -> tuple[int, int]:
        pos = self.pos
        if self._end - pos < 8:
            self.need(8, what)
        self.pos = pos + 8
        first, second = _U32X2.unpack_from(self._raw, pos)
        return int(first), int(second)

    def u32_triple(self, what: str) -> tuple[int, int, int]:
        pos = self.pos
        if self._end - pos < 12:
            self.need(12, what)
        self.pos = pos + 12
        first, second, third = _U32X3.unpack_from(self._raw, pos)
        return int(first), int(second), int(third)

    def take(self, size: int, what: str) -> bytes:
        pos = self.pos
        if self._end - pos < size:
            self.need(size, what)
        self.pos = pos + size
        return self._raw[pos : pos + size]

    def peek(self, layout: struct.Struct) -> tuple[Any, ...] | None:
        """`layout` unpacked at the cursor without moving it; None if too few bytes are left."""
        if self._end - self.pos < layout.size:
            return None
        return layout.unpack_from(self._raw, self.pos)

    def skip(self, size: int, what: str) -> None:
        if self._end - self.pos < size:
            self.need(size, what)
        self.pos += size

    def u16_and_take(self, sizes: Mapping[int, int], tag_what: str,
                     value_what: str) -> tuple[int, bytes]:
        """A UINT16 tag, then as many bytes as `sizes` gives for that tag (TPMT_HA-like).

        Raises if the tag is not in `sizes`.
        """
        pos = self.pos
        if self._end - pos < 2:
            self.need(2, tag_what)
        tag = int(_U16.unpack_from(self._raw, pos)[0])
        size = sizes.get(tag)
        if size is None:
            raise self.fail(f"{tag_what} 0x{tag:04x} is not one the log declares", pos)
        pos += 2
        if self._end - pos < size:
            self.pos = pos
            self.need(size, value_what)
        self.pos = pos + size
        return tag, self._raw[pos : pos + size]

    def sized_u32(self, limit: int, what: str) -> bytes:
        """A UINT32 length (at most `limit`), then that many bytes."""
        pos = self.pos
        if self._end - pos < 4:
            self.need(4, f"{what} size")
        size = int(_U32.unpack_from(self._raw, pos)[0])
        if size > limit:
            raise self.fail(f"{what} size {size} exceeds the {limit}-byte limit", pos)
        pos += 4
        if self._end - pos < size:
            self.pos = pos
            self.need(size, what)
        self.pos = pos + size
        return self._raw[pos : pos + size]

    def guid(self, what: str) -> UUID:
        # EFI_GUID is stored with its first three fields little-endian (UEFI 2.10 Appendix A).
        return UUID(bytes_le=self.take(16, what))

    def rest(self) -> bytes:
        start = self.pos
        self.pos = self._end
        return self._raw[start : self._end]

    def fail(self, message: str, at: int | None = None) -> EventLogFormatError:
        """An error for a value that was read but is not allowed, at `at` (default: cursor)."""
        return EventLogFormatError(message, self._base + (self.pos if at is None else at))
