"""UEFI device paths (UEFI 2.10 §10.3) to their text form (§10.6), and a few nodes back.

Rendering never raises: a node we do not know becomes the generic `Path(type,subtype,hex)` text
form, and a node whose length field is impossible ends the text with `Malformed(hex)`.
`device_path_from_text` covers only the nodes the builder needs for realistic test logs.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Final
from uuid import UUID

# Node types (UEFI 2.10 §10.3.1).
_HARDWARE: Final = 0x01
_ACPI: Final = 0x02
_MESSAGING: Final = 0x03
_MEDIA: Final = 0x04
_BBS: Final = 0x05
_END: Final = 0x7F
_END_ENTIRE: Final = 0xFF
_END_INSTANCE: Final = 0x01

_PNP_EISA: Final = 0x41D0  # the compressed EISA vendor id "PNP"
_MAX_MALFORMED_HEX: Final = 64


def _guid(raw: bytes) -> str:
    return str(UUID(bytes_le=raw[:16])).upper()


def _u16(raw: bytes, at: int) -> int:
    return int(struct.unpack_from("<H", raw, at)[0])


def _u32(raw: bytes, at: int) -> int:
    return int(struct.unpack_from("<I", raw, at)[0])


def _u64(raw: bytes, at: int) -> int:
    return int(struct.unpack_from("<Q", raw, at)[0])


def _vendor(prefix: str, body: bytes) -> str:
    extra = body[16:]
    return f"{prefix}({_guid(body)}{',' + extra.hex().upper() if extra else ''})"


def _eisa_id(hid: int) -> str:
    # EISA ids pack three letters into five bits each, then a 16-bit product number.
    vendor = hid & 0xFFFF
    letters = "".join(chr(((vendor >> shift) & 0x1F) + 0x40) for shift in (10, 5, 0))
    return f"{letters}{hid >> 16:04X}"


def _acpi(body: bytes) -> str:
    hid, uid = _u32(body, 0), _u32(body, 4)
    if hid & 0xFFFF == _PNP_EISA:
        product = hid >> 16
        if product == 0x0A03:
            return f"PciRoot(0x{uid:x})"
        if product == 0x0A08:
            return f"PcieRoot(0x{uid:x})"
        if product == 0x0604:
            return f"Floppy(0x{uid:x})"
    return f"Acpi({_eisa_id(hid)},0x{uid:x})"


def _hard_drive(body: bytes) -> str:
    number, start, size = _u32(body, 0), _u64(body, 4), _u64(body, 12)
    signature, signature_type = body[20:36], body[37]
    if signature_type == 0x02:
        return f"HD({number},GPT,{_guid(signature)},0x{start:x},0x{size:x})"
    if signature_type == 0x01:
        return f"HD({number},MBR,0x{_u32(signature, 0):08x},0x{start:x},0x{size:x})"
    return f"HD({number},{signature_type},0,0x{start:x},0x{size:x})"


def _file_path(body: bytes) -> str:
    # CHAR16 path, NUL-terminated; `replace` keeps a damaged name readable instead of failing.
    usable = body[: len(body) & ~1]
    return usable.decode("utf-16-le", errors="replace").split("\x00", 1)[0]


def _mac(body: bytes) -> str:
    if_type = body[32]
    size = 6 if if_type in (0, 1) else 32
    return f"MAC({body[:size].hex()},0x{if_type:x})"


def _nvme(body: bytes) -> str:
    # EDK2 and the UEFI text form print the EUI-64 most significant byte first.
    eui = "-".join(f"{byte:02X}" for byte in reversed(body[4:12]))
    return f"NVMe(0x{_u32(body, 0):x},{eui})"


def _bbs(body: bytes) -> str:
    description = body[4:].split(b"\x00", 1)[0].decode("ascii", errors="replace")
    return f"BBS(0x{_u16(body, 0):x},{description},0x{_u16(body, 2):x})"


# (type, subtype) -> (minimum body length, renderer). Bodies shorter than the minimum go generic.
_RENDERERS: Final[dict[tuple[int, int], tuple[int, Callable[[bytes], str]]]] = {
    (_HARDWARE, 0x01): (2, lambda b: f"Pci(0x{b[1]:x},0x{b[0]:x})"),
    (_HARDWARE, 0x02): (1, lambda b: f"PcCard(0x{b[0]:x})"),
    (_HARDWARE, 0x03): (20, lambda b: f"MemoryMapped(0x{_u32(b, 0):x},0x{_u64(b, 4):x},"
                                      f"0x{_u64(b, 12):x})"),
    (_HARDWARE, 0x04): (16, lambda b: _vendor("VenHw", b)),
    (_HARDWARE, 0x05): (4, lambda b: f"Ctrl(0x{_u32(b, 0):x})"),
    (_ACPI, 0x01): (8, _acpi),
    (_ACPI, 0x03): (4, lambda b: f"AcpiAdr(0x{_u32(b, 0):x})"),
    (_MESSAGING, 0x01): (4, lambda b: f"Ata({'Secondary' if b[0] else 'Primary'},"
                                      f"{'Slave' if b[1] else 'Master'},0x{_u16(b, 2):x})"),
    (_MESSAGING, 0x02): (4, lambda b: f"Scsi(0x{_u16(b, 0):x},0x{_u16(b, 2):x})"),
    (_MESSAGING, 0x05): (2, lambda b: f"USB(0x{b[0]:x},0x{b[1]:x})"),
    (_MESSAGING, 0x0A): (16, lambda b: _vendor("VenMsg", b)),
    (_MESSAGING, 0x0B): (33, _mac),
    (_MESSAGING, 0x11): (1, lambda b: f"Unit(0x{b[0]:x})"),
    (_MESSAGING, 0x12): (6, lambda b: f"Sata(0x{_u16(b, 0):x},0x{_u16(b, 2):x},"
                                      f"0x{_u16(b, 4):x})"),
    (_MESSAGING, 0x14): (2, lambda b: f"Vlan({_u16(b, 0)})"),
    (_MESSAGING, 0x17): (12, _nvme),
    (_MESSAGING, 0x18): (0, lambda b: f"Uri({b.decode('utf-8', errors='replace')})"),
    (_MESSAGING, 0x1A): (1, lambda b: f"SD(0x{b[0]:x})"),
    (_MESSAGING, 0x1D): (1, lambda b: f"eMMC(0x{b[0]:x})"),
    (_MEDIA, 0x01): (38, _hard_drive),
    (_MEDIA, 0x02): (20, lambda b: f"CDROM(0x{_u32(b, 0):x},0x{_u64(b, 4):x},0x{_u64(b, 12):x})"),
    (_MEDIA, 0x03): (16, lambda b: _vendor("VenMedia", b)),
    (_MEDIA, 0x04): (0, _file_path),
    (_MEDIA, 0x05): (16, lambda b: f"Media({_guid(b)})"),
    (_MEDIA, 0x06): (16, lambda b: f"FvFile({_guid(b)})"),
    (_MEDIA, 0x07): (16, lambda b: f"Fv({_guid(b)})"),
    (_MEDIA, 0x08): (20, lambda b: f"Offset(0x{_u64(b, 4):x},0x{_u64(b, 12):x})"),
    (_BBS, 0x01): (4, _bbs),
}


def _generic(node_type: int, subtype: int, body: bytes) -> str:
    return f"Path({node_type},{subtype}{',' + body.hex().upper() if body else ''})"


def device_path_to_text(raw: bytes) -> str:
    """The text form of a device path; never raises, whatever the bytes."""
    parts: list[str] = []
    separator = "/"
    pos, end = 0, len(raw)
    while pos < end:
        if end - pos < 4:
            parts.append(f"Malformed({raw[pos:pos + _MAX_MALFORMED_HEX].hex()})")
            break
        node_type, subtype, length = raw[pos], raw[pos + 1], _u16(raw, pos + 2)
        if length < 4 or length > end - pos:
            tail = raw[pos:pos + _MAX_MALFORMED_HEX].hex()
            parts.append(f"Malformed({tail}{'…' if end - pos > _MAX_MALFORMED_HEX else ''})")
            break
        body = raw[pos + 4 : pos + length]
        pos += length
        if node_type == _END:
            if subtype == _END_ENTIRE:
                break
            if subtype == _END_INSTANCE:
                parts.append(",")
                continue
        entry = _RENDERERS.get((node_type, subtype))
        if entry is not None and len(body) >= entry[0]:
            parts.append(entry[1](body))
        else:
            parts.append(_generic(node_type, subtype, body))
    text = ""
    for part in parts:
        if part == "," or text.endswith(",") or not text:
            text += part
        else:
            text += separator + part
    return text


# ---------------------------------------------------------------------------------------------
# Text to bytes, for the builder: PciRoot, PcieRoot, Pci, HD (GPT/MBR), Sata, Fv, FvFile, and
# file paths ("\EFI\BOOT\BOOTX64.EFI").

_NODE_TEXT: Final = re.compile(r"^(?P<name>[A-Za-z]+)\((?P<args>[^()]*)\)$")


def _node(node_type: int, subtype: int, body: bytes) -> bytes:
    return struct.pack("<BBH", node_type, subtype, 4 + len(body)) + body


def _int(text: str) -> int:
    return int(text, 0)


def _text_node(segment: str) -> bytes:
    match = _NODE_TEXT.match(segment)
    if match is None:
        # Anything that is not Name(args) is a file path node: CHAR16 text, NUL-terminated.
        return _node(_MEDIA, 0x04, (segment + "\x00").encode("utf-16-le"))
    name, args = match["name"], [arg.strip() for arg in match["args"].split(",")]
    if name in ("PciRoot", "PcieRoot") and len(args) == 1:
        product = 0x0A03 if name == "PciRoot" else 0x0A08
        return _node(_ACPI, 0x01, struct.pack("<II", product << 16 | _PNP_EISA, _int(args[0])))
    if name == "Pci" and len(args) == 2:
        return _node(_HARDWARE, 0x01, struct.pack("<BB", _int(args[1]), _int(args[0])))
    if name == "Sata" and len(args) == 3:
        return _node(_MESSAGING, 0x12, struct.pack("<HHH", *(_int(arg) for arg in args)))
    if name in ("Fv", "FvFile") and len(args) == 1:
        return _node(_MEDIA, 0x07 if name == "Fv" else 0x06, UUID(args[0]).bytes_le)
    if name == "HD" and len(args) == 5 and args[1] in ("GPT", "MBR"):
        # MBRType and SignatureType are both 2 for GPT, both 1 for MBR (UEFI 2.10 §10.3.5.1).
        if args[1] == "GPT":
            signature, kind = UUID(args[2]).bytes_le, 0x02
        else:
            signature, kind = struct.pack("<I", _int(args[2])) + bytes(12), 0x01
        body = struct.pack("<IQQ", _int(args[0]), _int(args[3]), _int(args[4]))
        return _node(_MEDIA, 0x01, body + signature + bytes((kind, kind)))
    raise ValueError(f"unsupported device path node {segment!r}")


def device_path_from_text(text: str) -> bytes:
    """Bytes of a device path written in the UEFI text form, ending with End Entire.

    Example: `PciRoot(0x0)/Pci(0x1,0x1)/HD(1,GPT,<guid>,0x800,0x100000)/\\EFI\\BOOT\\BOOTX64.EFI`.
    Raises ValueError for nodes outside the small set listed in the module docstring.
    """
    nodes = b"".join(_text_node(segment) for segment in text.split("/") if segment)
    return nodes + _node(_END, _END_ENTIRE, b"")
