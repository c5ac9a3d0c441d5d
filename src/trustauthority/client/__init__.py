"""The Python SDK: a typed HTTPS client for the Trust Authority API, used by the CLI and the
host agent."""

from trustauthority.client.http import Credentials, TrustAuthorityClient

__all__ = ["Credentials", "TrustAuthorityClient"]
