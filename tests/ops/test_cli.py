"""`vigil keys` on the test Redis, and `vigil serve` on its embedded Redis: first admin key
printed once, an active model registered, a live worker, persistence across a restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cli.main import main
from service.store import Store
from tests.ops.conftest import REPO, TORCHVISION_JPEG


def test_keys_create_list_revoke(
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VIGIL_REDIS_URL", redis_url)
    monkeypatch.setenv("VIGIL_REDIS_PREFIX", redis_prefix)
    assert main(["keys", "create", "--role", "ingest", "--name", "recorder-3"]) == 0
    printed = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines()[:3])
    key_id, key = printed["key_id"].strip(), printed["key"].strip()
    store = Store.from_url(redis_url, redis_prefix)
    try:
        verified = store.api_keys.verify(key)
        assert verified is not None and verified.key_id == key_id
        assert verified.role.value == "ingest" and verified.name == "recorder-3"
        assert main(["keys", "list"]) == 0
        listing = capsys.readouterr().out
        assert key_id in listing and "recorder-3" in listing and key not in listing
        assert main(["keys", "revoke", key_id]) == 0
        assert store.api_keys.verify(key) is None
        assert main(["keys", "revoke", "nope"]) == 1
    finally:
        store.close()


def test_default_model_is_registered_with_its_thresholds(
    tiny_checkpoint: Path, store: Store, tmp_path: Path
) -> None:
    from cli.serve import ensure_active_model
    from model.checkpoint import read_meta
    from service.config import Settings

    settings = Settings(data_dir=tmp_path / "data", model_path=tiny_checkpoint)
    meta = read_meta(tiny_checkpoint)
    assert ensure_active_model(store, settings) == meta.version
    model = store.models.get(meta.version)
    assert model is not None and model.active
    assert (settings.data_dir / model.path).is_file()
    assert {c: (t.on, t.off) for c, t in model.thresholds.items()} == {
        c: (meta.thresholds_for(c).on, meta.thresholds_for(c).off) for c in meta.classes
    }
    # An active model is kept: a second call registers nothing.
    assert ensure_active_model(store, settings) == meta.version
    assert [m.version for m in store.models.list()] == [meta.version]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, key: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _serve(data: Path, port: int, checkpoint: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(
        {
            "VIGIL_DATA_DIR": str(data),
            "VIGIL_MODEL_PATH": str(checkpoint),
            "VIGIL_DEVICE": "cpu",
            "VIGIL_HEARTBEAT_INTERVAL_S": "1",
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path) -> dict:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            status, body = _get(f"{base}/readyz")
            if status == 200 and body["status"] == "ready":
                return body
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.3)
    raise AssertionError(log.read_text()[-3000:])


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_serve_on_embedded_redis_bootstraps_and_persists(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data, port = tmp_path / "data", _free_port()
    base = f"http://127.0.0.1:{port}"
    first_log = tmp_path / "first.log"
    proc = _serve(data, port, tiny_checkpoint, first_log)
    try:
        assert _wait_ready(proc, base, first_log)["live_workers"] == 1
    finally:
        _stop(proc, first_log)
    lines = first_log.read_text().splitlines()
    key = lines[lines.index(next(x for x in lines if "First admin API key" in x)) + 1].strip()
    assert (data / "redis" / "appendonly.aof").exists()

    second_log = tmp_path / "second.log"
    proc = _serve(data, port, tiny_checkpoint, second_log)
    try:
        _wait_ready(proc, base, second_log)
        status, models = _get(f"{base}/v1/admin/models", key)  # the key survived the restart
        assert status == 200 and [m["active"] for m in models["data"]] == [True]
        assert set(models["data"][0]["thresholds"]) == {"square", "other"}
    finally:
        _stop(proc, second_log)
    assert "First admin API key" not in second_log.read_text()  # printed once, ever


_NO_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "safetensors"):
            raise ImportError("the API image has no " + name)
sys.meta_path.insert(0, Block())
from cli.main import main
sys.exit(main(["serve", "--no-worker", "--port", sys.argv[1]]))
"""


def test_api_only_serve_runs_without_torch(tmp_path: Path) -> None:
    """What the API image runs (deploy/Dockerfile.api has no torch)."""
    port, log = _free_port(), tmp_path / "api.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update({"VIGIL_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO)})
    proc = subprocess.Popen(
        [sys.executable, "-c", _NO_TORCH, str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                status, _ = _get(f"http://127.0.0.1:{port}/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        assert status == 200
        status, body = _get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503 and body["live_workers"] == 0  # no worker in this process
    finally:
        _stop(proc, log)


@pytest.mark.slow
@TORCHVISION_JPEG
def test_demo_runs_end_to_end(
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`vigil demo`'s plumbing (embedded Redis, HTTP, worker, timeline, overlays) with the tiny
    detector standing in for the default one (which trains for minutes on first use)."""
    import lab.recipes

    for name in [k for k in os.environ if k.startswith("VIGIL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(lab.recipes, "ensure_default_detector", lambda **_: tiny_checkpoint)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "[5/5]" in out and "events on the timeline" in out
    assert (tmp_path / "demo" / "clips").is_dir() and (tmp_path / "demo" / "overlays").is_dir()
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0  # a second run starts afresh
