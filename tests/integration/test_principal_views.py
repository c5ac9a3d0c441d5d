"""`whoami` (one Core read, the hot path) tells a principal what the full view does."""

from __future__ import annotations

from tests.support.inprocess import InProcessService

REQUEST = "views"


def test_whoami_is_the_principal_as_an_admin_sees_it(in_process: InProcessService) -> None:
    principals = in_process.platform.principals
    principals.create(in_process.admin, REQUEST, name="ops", kind="person",
                      roles=["infra-admin", "auditor"], description="two hats",
                      allow_multiple_roles=True)
    token = principals.create_token(in_process.admin, REQUEST, "ops").token
    for caller in (in_process.admin, in_process.infra, in_process.caller(token)):
        mine = principals.whoami(caller)
        assert mine == principals.get(in_process.admin, caller.name)
        assert mine.roles == tuple(sorted(caller.roles))
    assert principals.whoami(in_process.caller(token)).roles == ("auditor", "infra-admin")
