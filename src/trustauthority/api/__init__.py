"""The HTTPS API (FastAPI): routers, authentication, the one error→HTTP mapping, the server."""
