"""Use cases of the Trust Authority service: they authorize the caller, change the store and
write the audit entry in one transaction. The API and the CLI call these; nothing else does."""
