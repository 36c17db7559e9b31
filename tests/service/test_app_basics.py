"""The API image has no torch; health, readiness and metrics; many apps side by side."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.config import Settings
from service.jobs import WorkerInfo
from service.main import create_app
from service.schemas import ModelVersion, Role
from tests.service.conftest import Api, simulate_analysis, upload

ROOT = Path(__file__).resolve().parents[2]


def test_service_never_imports_torch() -> None:
    code = (
        "import sys, service.main\n"
        "from service.config import Settings\n"
        "app = service.main.create_app(Settings(redis_url='redis://unused'))\n"
        "app.openapi()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'torchvision' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_health_readiness_follow_worker_heartbeats(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    not_ready = api.client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["live_workers"] == 0
    now = datetime.now(UTC)
    api.queue.heartbeat(
        WorkerInfo(worker_id="w1", hostname="h", pid=1, started_at=now, beat_at=now)
    )
    ready = api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {
        "status": "ready",
        "redis": True,
        "live_workers": 1,
    }


def test_metrics_report_latency_queue_jobs_frames_and_model(api: Api, clip: Path) -> None:
    first = upload(api, clip).json()
    upload(api, clip)
    simulate_analysis(api, first["segment_id"])
    api.store.models.register(
        ModelVersion(
            version="m-7", path="models/m-7.safetensors", arch="resnet18", classes=["fall"]
        )
    )
    api.store.models.activate("m-7")
    api.client.get("/v1/streams", headers=api.auth(Role.viewer))
    text = api.client.get("/metrics").text
    assert "vigil_queue_depth 1.0" in text
    assert (
        'vigil_jobs{status="succeeded"} 1.0' in text and 'vigil_jobs{status="queued"} 1.0' in text
    )
    assert "vigil_frames_analysed_total 8.0" in text
    assert 'vigil_active_model_info{version="m-7"} 1.0' in text
    count = "vigil_http_request_duration_seconds_count"
    assert f'{count}{{method="GET",route="/v1/streams",status="200"}} 1.0' in text
    assert 'route="/v1/streams/{stream_id}/segments",status="202"} 2.0' in text


def test_two_apps_have_separate_registries(settings: Settings) -> None:
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        one.get("/healthz")
        assert 'route="/healthz"' in one.get("/metrics").text
        assert 'route="/healthz"' not in two.get("/metrics").text


def test_bootstrap_admin_key_from_settings(settings: Settings) -> None:
    boot = settings.model_copy(
        update={"bootstrap_admin_key": SecretStr("automation-admin-key-123")}
    )
    for _ in range(2):  # a restart does not add a second copy
        with TestClient(create_app(boot)) as client:
            me = client.get("/v1/me", headers={"Authorization": "Bearer automation-admin-key-123"})
            assert me.status_code == 200 and me.json()["role"] == "admin"
            store = client.app.state.store
            assert len([k for k in store.api_keys.list() if k.role is Role.admin]) == 1


def test_viewer_is_served_at_root(api: Api) -> None:
    root = api.client.get("/")
    assert root.status_code == 200 and "text/html" in root.headers["content-type"]
    missing = api.client.get("/static/no-such-file.js")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
