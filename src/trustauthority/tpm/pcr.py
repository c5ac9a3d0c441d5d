"""TPML_PCR_SELECTION (TPM 2.0 Part 2 §10.6) and the quote's PCR digest (Part 3 §18.4)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter

from trustauthority.tpm.constants import DIGEST_SIZES, HASH_IDS, HASH_NAMES, alg_name, digest
from trustauthority.tpm.reader import Reader, u16, u32

#: PCR indices a PC Client TPM has (Part 2 §10.6.1 allows larger maps; we refuse them)
MAX_PCR = 23
_MAX_BANKS = 16


@dataclass(frozen=True)
class PcrBankSelection:
    """TPMS_PCR_SELECTION: one bank and the PCRs selected in it."""

    hash_alg: int
    pcrs: frozenset[int]

    # cached: a verifier asks for both on every quote, and parsed selections are shared
    @cached_property
    def bank(self) -> str:
        name = HASH_NAMES.get(self.hash_alg)
        return name if name is not None else alg_name(self.hash_alg)

    @cached_property
    def ordered(self) -> tuple[int, ...]:
        """The selected PCRs ascending: the order their values enter the quote's digest."""
        return tuple(sorted(self.pcrs))

    @cached_property
    def values_in_order(self) -> Callable[[Mapping[int, bytes]], tuple[bytes, ...]]:
        """PCR -> value to the selected PCRs' values in `ordered` order; KeyError if one is
        missing. Built once per (shared) selection: the lookups then run in C, not in a loop."""
        ordered = self.ordered
        if len(ordered) > 1:
            return itemgetter(*ordered)
        # itemgetter of one key returns the value itself, of none is an error: keep tuples
        return lambda values: tuple(values[pcr] for pcr in ordered)

    @cached_property
    def digest_size(self) -> int | None:
        """Bytes per PCR value in this bank; None for a bank we do not support."""
        if self.hash_alg not in HASH_NAMES:
            return None
        return DIGEST_SIZES.get(self.hash_alg)


@dataclass(frozen=True)
class PcrSelection:
    """TPML_PCR_SELECTION: banks in the order the TPM lists (and digests) them."""

    banks: tuple[PcrBankSelection, ...]

    @classmethod
    def of(cls, selection: Mapping[str, Iterable[int]]) -> PcrSelection:
        """Build from {"sha256": [0, 1, ...]}; banks keep the mapping's order."""
        banks = []
        for name, pcrs in selection.items():
            if name not in HASH_IDS:
                raise ValueError(f"unknown PCR bank {name!r}")
            banks.append(PcrBankSelection(HASH_IDS[name], frozenset(pcrs)))
        return cls(tuple(banks))

    def as_dict(self) -> dict[str, frozenset[int]]:
        """Bank name -> selected PCRs; empty banks dropped (they select nothing)."""
        return {bank.bank: bank.pcrs for bank in self.banks if bank.pcrs}

    def marshal(self) -> bytes:
        out = [u32(len(self.banks))]
        for bank in self.banks:
            bitmap = bytearray(3)
            for pcr in bank.pcrs:
                bitmap[pcr // 8] |= 1 << (pcr % 8)
            out.append(u16(bank.hash_alg) + bytes([len(bitmap)]) + bytes(bitmap))
        return b"".join(out)


#: byte value -> the bit positions set in it, so a bitmap decodes without a per-bit loop
_BITS = tuple(tuple(bit for bit in range(8) if value & (1 << bit)) for value in range(256))


def pcrs_of_bitmap(bitmap: bytes) -> frozenset[int] | None:
    """The PCRs a pcrSelect bitmap selects; None if it selects one that cannot exist."""
    pcrs = [index * 8 + bit for index, byte in enumerate(bitmap) if byte for bit in _BITS[byte]]
    if pcrs and pcrs[-1] > MAX_PCR:
        return None
    return frozenset(pcrs)


def read_pcr_selection(reader: Reader) -> PcrSelection:
    count = reader.u32("TPML_PCR_SELECTION.count")
    if count > _MAX_BANKS:
        raise reader.error(f"TPML_PCR_SELECTION.count {count} exceeds {_MAX_BANKS}", reader.pos - 4)
    banks = []
    for _ in range(count):
        hash_alg = reader.u16("TPMS_PCR_SELECTION.hash")
        size_start = reader.pos
        size = reader.u8("TPMS_PCR_SELECTION.sizeofSelect")
        bitmap = reader.raw(size, "TPMS_PCR_SELECTION.pcrSelect")
        pcrs = pcrs_of_bitmap(bitmap)
        if pcrs is None:
            raise reader.error(f"a PCR above {MAX_PCR} is selected", size_start)
        banks.append(PcrBankSelection(hash_alg, pcrs))
    return PcrSelection(tuple(banks))


def pcr_digest(hash_alg: int, selection: PcrSelection,
               values: Mapping[str, Mapping[int, bytes]]) -> bytes:
    """H(PCR values concatenated in selection order: banks as listed, PCRs ascending).

    `hash_alg` is the signing scheme's hash (Part 3 §18.4.1), not necessarily the bank's.
    Raises KeyError if a selected PCR has no value.
    """
    data = b"".join([values[bank.bank][pcr] for bank in selection.banks for pcr in bank.ordered])
    return digest(hash_alg, data)
