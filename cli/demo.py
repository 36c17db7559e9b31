"""``vigil demo``: the whole service on this machine, end to end, in one command.

1. gets the default detector (the shipped file: ``lab.recipes.ensure_default_detector``);
2. starts the service (API + one worker) on an embedded Redis under ``OUT/data``;
3. generates a synthetic clinical-room clip with a fall (known event intervals, ``lab.synth``);
4. posts it over HTTP, polls the job, reads the stream's timeline;
5. prints the events with their overlay URLs next to the true intervals, saves the overlays
   under ``OUT/overlays`` and exits 0 (``--serve`` keeps the service running instead).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import socket
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STREAM = "demo-room-1"
MARKER = ".vigil-demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="run the service locally on a generated clip and show the events",
        description="Start Vigil on an embedded Redis, post a generated clip with a fall, "
        "print the detected events with their overlay URLs and save the overlays.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("vigil-demo"),
        help="folder for the clip, overlays and the demo's data (default ./vigil-demo)",
    )
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated clip")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="keep the service running after the demo (Ctrl-C to stop)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The demo; returns 0 when the clip was analysed."""
    from cli.serve import ensure_active_model, open_redis, running_workers
    from lab.recipes import ensure_default_detector
    from service.config import get_settings

    out = args.out.resolve()
    data = _fresh_data_dir(out)
    _say("[1/5] default detector (trained on first use, then cached) ...")
    checkpoint = ensure_default_detector()
    _say(f"      {checkpoint}")
    port = args.port or _free_port()
    settings = get_settings().model_copy(
        update={
            "redis_url": None,
            "data_dir": data,
            "host": "127.0.0.1",
            "port": port,
            "bootstrap_admin_key": None,
        }
    )
    with open_redis(settings) as settings:
        key = _admin_key(settings)
        store_version = _with_store(
            settings, lambda s: ensure_active_model(s, settings, checkpoint)
        )
        _say(f"[2/5] service on http://127.0.0.1:{port} (embedded Redis, model {store_version})")
        with running_workers(settings, 1, grace_s=5.0), _BackgroundApi(settings) as base:
            api = _Client(base, key)
            clip, truth = _make_clip(out, args.seed)
            ok = _analyse(api, clip, truth, out)
            if args.serve:
                _say(f"\nServing at {base}  (admin key: {key})  - Ctrl-C to stop")
                _block()
    return 0 if ok else 1


def _say(text: str) -> None:
    print(text, flush=True)


def _fresh_data_dir(out: Path) -> Path:
    """``OUT/data``, emptied when a previous demo left it (and only then)."""
    data = out / "data"
    if (data / MARKER).exists():
        shutil.rmtree(data)
    elif data.exists() and any(data.iterdir()):
        raise SystemExit(f"{data} exists and was not made by `vigil demo`; choose another --out")
    data.mkdir(parents=True, exist_ok=True)
    (data / MARKER).write_text("made by `vigil demo`; deleted by the next demo run\n")
    return data


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_store(settings: Any, action: Any) -> Any:
    from service.store import Store

    store = Store.from_url(settings.redis_url, settings.redis_prefix)
    try:
        return action(store)
    finally:
        store.close()


def _admin_key(settings: Any) -> str:
    from service.schemas import Role

    return _with_store(settings, lambda s: s.api_keys.create("demo", Role.admin)[1])


class _BackgroundApi:
    """uvicorn in a background thread; yields the base URL once it accepts connections."""

    def __init__(self, settings: Any) -> None:
        import uvicorn

        from service.main import create_app
        from service.server import uvicorn_config

        config = uvicorn_config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.base = f"http://{settings.host}:{settings.port}"
        self.thread = threading.Thread(target=self.server.run, name="vigil-api", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.05)
        return self.base

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class _Client:
    """A tiny JSON-over-HTTP client (stdlib only) with the demo's admin key."""

    def __init__(self, base: str, key: str) -> None:
        self.base, self.key = base, key

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(self.base + path, data=body, method=method)
        request.add_header("Authorization", f"Bearer {self.key}")
        if content_type:
            request.add_header("Content-Type", content_type)
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()

    def json(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> Any:
        return json.loads(self.request(method, path, body, content_type)[1])


def _make_clip(out: Path, seed: int) -> tuple[Path, list[tuple[str, float, float]]]:
    """A 30-s synthetic room (a held-out test room) in which the patient falls."""
    from lab.synth import SynthConfig, clip_refs
    from lab.synth.scenario import ScenarioConfig
    from lab.synth.writer import write_clip

    _say("[3/5] generating a 30 s clip of a hospital room with a fall (lab.synth) ...")
    cfg = SynthConfig(
        rooms=1,
        clips_per_room=1,
        room_offset=950,
        duration_s=30.0,
        fps=10.0,
        width=320,
        height=240,
        seed=seed,
        scenario=ScenarioConfig(fall_prob=1.0),
    )
    ref = next(iter(clip_refs(cfg)))
    labels, _boxes = write_clip(cfg, ref, out)
    truth = [(str(label), float(start), float(end)) for _, label, start, end in labels]
    for label, start, end in truth:
        _say(f"      truth  {label:16} {start:6.1f} s - {end:6.1f} s")
    return out / ref.name, truth


def _analyse(api: _Client, clip: Path, truth: list[tuple[str, float, float]], out: Path) -> bool:
    start = datetime.now(UTC).replace(microsecond=0)
    iso = start.isoformat().replace("+00:00", "Z")
    _say(f"[4/5] POST /v1/streams/{STREAM}/segments?start={iso}  ({clip.stat().st_size} bytes)")
    accepted = api.json(
        "POST", f"/v1/streams/{STREAM}/segments?start={iso}", clip.read_bytes(), "video/mp4"
    )
    job = _wait(api, accepted["job_id"])
    if job["status"] != "succeeded":
        _say(f"      the job failed: {job['error']}")
        return False
    page = api.json("GET", f"/v1/streams/{STREAM}/events?limit=100")
    events = sorted(page["data"], key=lambda e: (e["start"], e["label"]))
    _say(f"[5/5] {len(events)} events on the timeline (times from the clip start):")
    overlays = out / "overlays"
    overlays.mkdir(parents=True, exist_ok=True)
    for event in events:
        t0 = _offset(event["start"], start)
        t1 = _offset(event["end"], start)
        consistency = event["consistency"]
        _say(
            f"      {event['label']:16} {t0:6.1f} s - {t1:6.1f} s  peak {event['peak_score']:.2f}"
            f"  consistency {'-' if consistency is None else f'{consistency:+.2f}'}"
        )
        url = event["keyframe"]["overlay_url"]
        _status, jpeg = api.request("GET", url)
        name = overlays / f"{event['label']}-{t0:05.1f}s.jpg"
        name.write_bytes(jpeg)
        _say(f"        overlay {api.base}{url}\n        saved   {name}")
    return True


def _wait(api: _Client, job_id: str) -> dict[str, Any]:
    last = -1.0
    while True:
        job = api.json("GET", f"/v1/jobs/{job_id}")
        if job["status"] in ("succeeded", "failed"):
            _say(f"      job {job_id}: {job['status']}")
            return job
        if job["progress"] >= last + 0.25:
            last = job["progress"]
            _say(f"      job {job_id}: {job['status']} {100 * job['progress']:.0f}%")
        time.sleep(0.3)


def _offset(iso: str, start: datetime) -> float:
    return (datetime.fromisoformat(iso.replace("Z", "+00:00")) - start).total_seconds()


def _block() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        _say("stopping ...")
