"""``GET /v1/events/{id}``: frames with context across segments, and the model's thresholds."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from service.schemas import ModelVersion, Role, Thresholds
from tests.service.conftest import T0, Api, simulate_analysis, upload


def _analysed_segment(api: Api, clip: Path, start: datetime) -> str:
    accepted = upload(api, clip, start=start)
    assert accepted.status_code == 202, accepted.text
    segment_id = accepted.json()["segment_id"]
    simulate_analysis(api, segment_id)
    return segment_id


def _times(detail: dict) -> list[float]:
    t0 = T0.timestamp()
    return [datetime.fromisoformat(f["time"]).timestamp() - t0 for f in detail["frames"]]


def test_context_adds_frames_from_the_neighbouring_segment(api: Api, clip: Path) -> None:
    viewer = api.auth(Role.viewer)
    first = _analysed_segment(api, clip, T0)  # frames every 0.5 s over [0, 3.5], event [1, 3]
    _analysed_segment(api, clip, T0 + timedelta(seconds=4))  # frames over [4, 7.5]
    url = f"/v1/events/ev-{first}"

    plain = api.client.get(url, headers=viewer).json()
    assert _times(plain) == [1.0, 1.5, 2.0, 2.5, 3.0] and plain["context_s"] == 0

    wide = api.client.get(url, params={"context_s": 2.0}, headers=viewer)
    assert wide.status_code == 200, wide.text
    detail = wide.json()
    # [1 - 2, 3 + 2] = [-1, 5]: all of the first segment and the start of the second.
    assert _times(detail) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
    assert detail["context_s"] == 2.0
    assert [f["scores"]["fall"] for f in detail["frames"]][:3] == [0.05, 0.05, 0.9]
    # The event itself is unchanged by the context.
    assert (detail["start"], detail["end"]) == (plain["start"], plain["end"])

    for bad in (-1, 601, "soon"):
        refused = api.client.get(url, params={"context_s": bad}, headers=viewer)
        assert refused.status_code == 422 and refused.json()["code"] == "validation_error"


def test_thresholds_of_the_events_model_version(api: Api, clip: Path) -> None:
    viewer = api.auth(Role.viewer)
    segment_id = _analysed_segment(api, clip, T0)  # the event's model version is m-test
    url = f"/v1/events/ev-{segment_id}"
    assert api.client.get(url, headers=viewer).json()["thresholds"] is None  # not registered

    thresholds = {"fall": Thresholds(on=0.55, off=0.44), "other": Thresholds(on=0.5, off=0.4)}
    for version, scale in (("m-test", 1.0), ("m-other", 0.5)):
        api.store.models.register(
            ModelVersion(
                version=version,
                path=f"models/{version}.safetensors",
                arch="resnet18",
                classes=["fall", "other"],
                thresholds={
                    k: Thresholds(on=v.on * scale, off=v.off * scale)
                    for k, v in thresholds.items()
                },
            )
        )
    api.store.models.activate("m-other")  # the active model is not the event's
    detail = api.client.get(url, headers=viewer).json()
    # (Thresholds also carry per-label timing and reliability; only on/off are set here.)
    got = {label: (t["on"], t["off"]) for label, t in detail["thresholds"].items()}
    assert got == {"fall": (0.55, 0.44), "other": (0.5, 0.4)}
    models = api.client.get("/v1/admin/models", headers=api.auth(Role.admin)).json()["data"]
    assert {m["version"]: m["thresholds"]["fall"]["on"] for m in models} == {
        "m-test": 0.55, "m-other": 0.275,
    }
