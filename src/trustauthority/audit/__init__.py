"""The audit log's hash chain, pure: build entries that commit to their predecessor, and verify
a sequence of them offline. Storage, signing of checkpoints and the CLI live outside.

Public API: `AuditEntry`, `GENESIS_HASH`, `append`, `verify_chain`, `ChainSummary`.
"""

from trustauthority.audit.chain import GENESIS_HASH, AuditEntry, ChainSummary, append, verify_chain

__all__ = ["GENESIS_HASH", "AuditEntry", "ChainSummary", "append", "verify_chain"]
