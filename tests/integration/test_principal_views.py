"""`whoami` (one Core read, the hot path) tells a principal what the full view does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.inprocess import InProcessService

REQUEST = "views"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[InProcessService]:
    started = InProcessService.create(tmp_path, REQUEST)
    yield started
    started.close()


def test_whoami_is_the_principal_as_an_admin_sees_it(service: InProcessService) -> None:
    principals = service.platform.principals
    principals.create(service.admin, REQUEST, name="ops", kind="person",
                      roles=["infra-admin", "auditor"], description="two hats",
                      allow_multiple_roles=True)
    token = principals.create_token(service.admin, REQUEST, "ops").token
    for caller in (service.admin, service.infra, service.caller(token)):
        mine = principals.whoami(caller)
        assert mine == principals.get(service.admin, caller.name)
        assert mine.roles == tuple(sorted(caller.roles))
    assert principals.whoami(service.caller(token)).roles == ("auditor", "infra-admin")
