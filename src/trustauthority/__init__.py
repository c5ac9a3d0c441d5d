"""Trust Authority: attestation of TPM 2.0 hosts and key release to hosts that are trusted now."""

__version__ = "0.1.0"
