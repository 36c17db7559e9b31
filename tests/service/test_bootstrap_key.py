"""``VIGIL_BOOTSTRAP_ADMIN_KEY`` is imported once: revoked, it stays revoked across restarts
(issue "Never stall, never lose a trace", item 4)."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.config import Settings
from service.main import create_app
from service.schemas import Role
from service.store import Store, hash_key

BOOT = "automation-admin-key-123"
AUTH = {"Authorization": f"Bearer {BOOT}"}


@pytest.fixture
def boot(settings: Settings) -> Settings:
    return settings.model_copy(update={"bootstrap_admin_key": SecretStr(BOOT)})


def test_revoked_bootstrap_key_is_not_recreated(
    boot: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(boot)) as client:
        assert client.get("/v1/me", headers=AUTH).json()["role"] == "admin"
        other = client.post("/v1/admin/keys", json={"name": "ops", "role": "admin"}, headers=AUTH)
        me = client.get("/v1/me", headers=AUTH).json()
        assert client.delete(f"/v1/admin/keys/{me['key_id']}", headers=AUTH).status_code == 200
        assert client.get("/v1/me", headers=AUTH).status_code == 401
    restart = TestClient(create_app(boot))  # same environment
    with caplog.at_level(logging.WARNING, logger="service.auth"), restart as client:
        refused = client.get("/v1/me", headers=AUTH)
        assert refused.status_code == 401 and refused.json()["code"] == "invalid_credentials"
        store: Store = client.app.state.store
        admins = [k for k in store.api_keys.list() if k.role is Role.admin]
        assert len(admins) == 2 and sum(k.revoked_at is None for k in admins) == 1
        ops = {"Authorization": f"Bearer {other.json()['key']}"}
        assert client.get("/v1/me", headers=ops).status_code == 200
    assert any("revoked" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert BOOT not in caplog.text


def test_bootstrap_key_revoked_before_the_marker_existed(boot: Settings) -> None:
    """A deployment that revoked its bootstrap key before imports were remembered."""
    store = Store.from_url(boot.redis_url, boot.redis_prefix)
    try:
        record, _ = store.api_keys.create("bootstrap-admin", Role.admin, plaintext=BOOT)
        store.api_keys.create("ops", Role.admin)
        store.api_keys.revoke(record.key_id)
    finally:
        store.close()
    with TestClient(create_app(boot)) as client:
        assert client.get("/v1/me", headers=AUTH).status_code == 401
        store = client.app.state.store
        assert store.r.sismember(store.keys.api_keys_bootstrapped(), hash_key(BOOT))


def test_two_starts_import_one_key(boot: Settings) -> None:
    with TestClient(create_app(boot)) as one, TestClient(create_app(boot)) as two:
        for client in (one, two):
            assert client.get("/v1/me", headers=AUTH).status_code == 200
        store: Store = one.app.state.store
        assert [k.name for k in store.api_keys.list()] == ["bootstrap-admin"]
