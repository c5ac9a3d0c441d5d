"""Attested key release, the pure parts: the wrapped-key blob a workload keeps beside its data,
and the JWE that carries a released key to a host's TPM-resident binding key. No I/O."""
