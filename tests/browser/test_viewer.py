"""The clinician's viewer in a real browser (headless Chromium) against a live API.

Each test signs in with a key of one role and drives the UI as a person would; the checks look
at what the browser actually shows (geometry of the timeline bars, decoded images, the video's
playback clock) and at what the API stored.
"""

from __future__ import annotations

import httpx
import pytest

from service.schemas import to_epoch
from tests.browser.conftest import LiveServer, screenshot, sign_in
from tests.browser.seed import EVENTS, QUIET_STREAM, STREAM, T0, THRESHOLDS, at, quiet_event

pytestmark = pytest.mark.browser

# Mean RGB of the overlay image as decoded by the browser (proves it decoded, and what it shows).
IMAGE_MEAN_RGB = """() => {
  const img = document.querySelector('#overlay-img');
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  const sum = [0, 0, 0];
  for (let i = 0; i < d.length; i += 4) { sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2]; }
  const n = d.length / 4;
  return sum.map((v) => v / n);
}"""

BAR_GEOMETRY = """(id) => {
  const svg = document.querySelector('#timeline');
  const bar = svg.querySelector(`.event[data-event-id="${id}"] .bar`);
  if (!bar) return null;
  const box = svg.getBoundingClientRect();
  const scale = box.width / svg.width.baseVal.value;
  const r = bar.getBoundingClientRect();
  const lanes = {};
  for (const lane of svg.querySelectorAll('.lane')) {
    const bg = lane.querySelector('.lane-bg').getBoundingClientRect();
    lanes[lane.querySelector('.lane-name').textContent] = [bg.top, bg.bottom];
  }
  return {
    left: r.left, right: r.right, midY: (r.top + r.bottom) / 2, lanes,
    svgLeft: box.left, scale,
    viewStart: Number(svg.dataset.viewStart), viewEnd: Number(svg.dataset.viewEnd),
    plotLeft: Number(svg.dataset.plotLeft), plotRight: Number(svg.dataset.plotRight),
  };
}"""


def expected_x(geom: dict, when_ms: float) -> float:
    """Screen x of a wall-clock time on the drawn axis."""
    frac = (when_ms - geom["viewStart"]) / (geom["viewEnd"] - geom["viewStart"])
    plot_x = geom["plotLeft"] + frac * (geom["plotRight"] - geom["plotLeft"])
    return geom["svgLeft"] + geom["scale"] * plot_x


def bar_opacity(page, event_id: str) -> float:
    """The fill opacity of an event's bar (it encodes the event's consistency)."""
    bar = page.locator(f'.event[data-event-id="{event_id}"] .bar')
    return float(bar.get_attribute("fill-opacity"))


def wait_for_method(page, method: str) -> None:
    """Wait until the overlay image shows ``method``."""
    page.wait_for_function(
        "(m) => document.querySelector('#overlay-img')?.dataset.method === m", arg=method
    )


def set_opacity(page, percent: int) -> None:
    """Move the overlay opacity slider as a user would (value + input event)."""
    script = "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }"
    page.eval_on_selector("#overlay-opacity", script, percent)


def open_timeline(page, live_server: LiveServer, stream_id: str = STREAM) -> None:
    """From the streams list, open a stream whose timeline has events."""
    page.click(f'#streams-table a:text-is("{stream_id}")')
    page.wait_for_selector("#timeline .event")


def test_sign_in_and_streams_list(page, live_server: LiveServer):
    page.goto(live_server.base_url + "/")
    page.wait_for_selector("#api-key")
    assert page.locator("#nav").is_hidden() and page.locator("#sign-out").is_hidden()
    screenshot(page, "01-sign-in")
    page.fill("#api-key", "vgl_not-a-key")
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("#signin-error:text('not accepted')")

    sign_in(page, live_server.base_url, live_server.keys["viewer"])
    row = page.locator(f'#streams-table tr[data-stream-id="{STREAM}"]')
    row.wait_for()
    assert row.locator("td[data-count]").inner_text() == str(len(EVENTS))
    chips = row.locator(".chip").all_inner_texts()
    assert sorted(c.replace("\n", " ") for c in chips) == ["bed_exit 2", "fall 2"]
    assert page.locator(f'#streams-table tr[data-stream-id="{QUIET_STREAM}"]').count() == 1
    screenshot(page, "02-streams")


def test_timeline_places_events_in_their_lanes(page, live_server: LiveServer):
    sign_in(page, live_server.base_url, live_server.keys["viewer"])
    open_timeline(page, live_server)
    for event_id, label, start_s, end_s, _peak, _c, is_open in EVENTS:
        geom = page.evaluate(BAR_GEOMETRY, event_id)
        assert geom is not None, f"no bar for {event_id}"
        top, bottom = geom["lanes"][label]
        assert top < geom["midY"] < bottom, f"{event_id} is not in the {label} lane"
        start_ms = to_epoch(at(start_s)) * 1000
        end_ms = to_epoch(at(end_s)) * 1000
        assert abs(geom["left"] - expected_x(geom, start_ms)) < 2.5
        assert abs(geom["right"] - expected_x(geom, end_ms)) < 2.5
        bar = page.locator(f'.event[data-event-id="{event_id}"]')
        assert (bar.get_attribute("class") or "").split().count("open") == (1 if is_open else 0)
    # Consistency is the bar's opacity, and the tooltip explains it.
    assert bar_opacity(page, "evt-fall-1") > bar_opacity(page, "evt-bed-1")
    page.hover('.event[data-event-id="evt-fall-1"] .bar')
    tip = page.locator("#timeline-tooltip")
    tip.wait_for(state="visible")
    assert "Consistency 0.82" in tip.inner_text() and "Grad-CAM" in tip.inner_text()
    screenshot(page, "03-timeline")


def test_timeline_zoom_and_keyboard(page, live_server: LiveServer):
    sign_in(page, live_server.base_url, live_server.keys["viewer"])
    open_timeline(page, live_server)
    svg = page.locator("#timeline")

    def span() -> int:
        return int(svg.get_attribute("data-view-end")) - int(svg.get_attribute("data-view-start"))

    before = span()
    page.click("button[aria-label='Zoom in']")
    assert span() < before
    svg.focus()
    page.keyboard.press("0")  # fit again
    fitted = (int(svg.get_attribute("data-view-start")), span())
    start_before = int(svg.get_attribute("data-view-start"))
    page.keyboard.press("ArrowRight")
    assert int(svg.get_attribute("data-view-start")) > start_before
    page.select_option("#tl-preset", "900")  # the stream's last 15 minutes of activity
    assert span() == 900_000
    assert int(svg.get_attribute("data-view-end")) == round(to_epoch(at(30.0)) * 1000)
    svg.focus()
    page.keyboard.press("0")
    assert (int(svg.get_attribute("data-view-start")), span()) == fitted
    page.keyboard.press("Tab")  # into the bars: Enter opens the focused event
    focused = page.evaluate("document.activeElement.dataset.eventId")
    assert focused in {e[0] for e in EVENTS}
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/#/events/{focused}")


def test_event_view_overlay_methods_and_video(page, live_server: LiveServer):
    sign_in(page, live_server.base_url, live_server.keys["viewer"])
    open_timeline(page, live_server)
    page.click('.event[data-event-id="evt-fall-1"] .bar')
    page.wait_for_url("**/#/events/evt-fall-1")
    wait_for_method(page, "gradcam")
    assert page.evaluate("document.querySelector('#overlay-img').naturalWidth") > 0
    gradcam = page.evaluate(IMAGE_MEAN_RGB)
    assert gradcam[0] > gradcam[1] and gradcam[0] > gradcam[2]

    # The video plays from the event's start (5 s into the segment).
    page.wait_for_function("() => document.querySelector('#event-video').readyState >= 2")
    t1 = page.evaluate("document.querySelector('#event-video').currentTime")
    assert 4.9 <= t1 <= 9.0
    # On a loaded machine autoplay may already have stopped at the event's end (9 s): keep
    # playing past it, then require the clock to move.
    page.uncheck("#stop-at-end")
    t2 = page.evaluate("() => { const v = document.querySelector('#event-video'); v.play(); "
                       "return v.currentTime; }")
    page.wait_for_function(
        "(t) => document.querySelector('#event-video').currentTime > t + 0.3", arg=t2
    )
    page.wait_for_selector("#raw-frame[data-ready='true']")

    # The per-frame score curve with the model's thresholds, and 10 s of context: the event is
    # [5, 9] s and the 2 fps scores start at 0 s, so the curve covers [0, 19] s (39 frames).
    assert page.locator("#score-chart polyline[data-cls='fall']").count() == 1
    points = page.get_attribute("#score-chart polyline[data-cls='fall']", "points")
    assert len(points.split()) == 39
    on, off = THRESHOLDS["fall"]
    assert page.get_attribute("#score-chart g.threshold-on", "data-value") == str(on)
    assert page.get_attribute("#score-chart g.threshold-off", "data-value") == str(off)
    assert page.locator("#no-thresholds").count() == 0

    for method, channel in (("guided_backprop", 1), ("integrated_gradients", 2)):
        page.check(f"input[name='overlay-method'][value='{method}']")
        wait_for_method(page, method)
        assert page.evaluate("document.querySelector('#overlay-img').naturalWidth") > 0
        rgb = page.evaluate(IMAGE_MEAN_RGB)
        assert rgb[channel] == max(rgb), f"{method} overlay is not the stored {method} image"
    set_opacity(page, 30)
    assert page.evaluate("document.querySelector('#overlay-img').style.opacity") == "0.3"
    page.check("input[name='overlay-method'][value='gradcam']")
    wait_for_method(page, "gradcam")
    set_opacity(page, 65)
    screenshot(page, "04-event", full_page=True)


def test_label_made_on_the_timeline_reaches_the_api(page, live_server: LiveServer):
    sign_in(page, live_server.base_url, live_server.keys["ingest"])
    open_timeline(page, live_server)
    geom = page.evaluate(BAR_GEOMETRY, "evt-fall-1")
    y = sum(geom["lanes"]["fall"]) / 2
    x1 = expected_x(geom, to_epoch(at(11.0)) * 1000)
    x2 = expected_x(geom, to_epoch(at(15.0)) * 1000)
    page.click("#tl-mark")
    page.mouse.move(x1, y)
    page.mouse.down()
    page.mouse.move(x2, y, steps=6)
    page.mouse.up()
    page.wait_for_selector("#label-dialog[open]")
    page.fill("#label-name", "near_fall")
    screenshot(page, "05-label-dialog")
    page.click("#label-save")
    # Shown at once (well before the next poll), in a lane of its own.
    page.wait_for_selector('.label-mark[data-label="near_fall"]', timeout=2000)
    assert page.locator('.lane[data-lane="near_fall"]').count() == 1

    with live_server.api("viewer") as api:
        labels = api.get(f"/v1/streams/{STREAM}/labels").json()["data"]
    made = [lb for lb in labels if lb["label"] == "near_fall"]
    assert len(made) == 1
    from datetime import datetime

    start_s = datetime.fromisoformat(made[0]["start"]).timestamp() - T0.timestamp()
    end_s = datetime.fromisoformat(made[0]["end"]).timestamp() - T0.timestamp()
    assert abs(start_s - 11.0) < 0.3 and abs(end_s - 15.0) < 0.3


def test_label_from_the_player(page, live_server: LiveServer):
    sign_in(page, live_server.base_url, live_server.keys["ingest"])
    page.goto(live_server.base_url + "/#/events/evt-fall-2")
    page.wait_for_function("() => document.querySelector('#event-video')?.readyState >= 2")
    page.click("#label-marked")  # the interval defaults to the event's
    page.fill("#label-name", "fall_confirmed")
    page.click("#label-save")
    page.wait_for_selector("#label-dialog", state="detached")
    with live_server.api("viewer") as api:
        labels = api.get(f"/v1/streams/{STREAM}/labels").json()["data"]
    made = [lb for lb in labels if lb["label"] == "fall_confirmed"]
    assert len(made) == 1
    assert made[0]["start"].startswith(at(18.0).isoformat()[:19])


def test_live_updates_show_new_events(page, live_server: LiveServer):
    sign_in(page, live_server.base_url, live_server.keys["viewer"])
    page.goto(live_server.base_url + f"/#/streams/{QUIET_STREAM}?poll=1000")
    page.wait_for_selector('#tl-status:has-text("events loaded")')
    assert page.locator("#timeline .event").count() == 0
    event = quiet_event("evt-live-1", 5.0, 20.0)  # inside the stream's only segment
    live_server.store.events.write(QUIET_STREAM, [event])
    page.wait_for_selector('.event[data-event-id="evt-live-1"]', timeout=5000)
    assert page.locator('.event[data-event-id="evt-live-1"]').get_attribute("data-open") == "true"
    # It closes: the poller sees the change through updated_since.
    live_server.store.events.write(QUIET_STREAM, [event.model_copy(update={"open": False})])
    page.wait_for_selector('.event[data-event-id="evt-live-1"][data-open="false"]', timeout=5000)


def test_viewer_key_sees_no_admin(page, live_server: LiveServer):
    sign_in(page, live_server.base_url, live_server.keys["viewer"])
    assert page.locator("#nav-admin").is_hidden()
    assert "viewer" in page.locator("#role-badge").inner_text()
    page.goto(live_server.base_url + "/#/admin")
    page.wait_for_selector("text=Page not available")
    assert page.locator("#models-table").count() == 0
    page.goto(live_server.base_url + f"/#/streams/{STREAM}")
    page.wait_for_selector("#timeline .lane")
    assert page.locator("#tl-mark").count() == 0  # viewers cannot label


def test_admin_models_activate_and_rollback(page, live_server: LiveServer):
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, live_server.base_url, live_server.keys["admin"])
    page.click("#nav-admin")
    page.wait_for_selector("#models-table")
    rows = page.locator("#models-table tbody tr")
    assert rows.count() == 2
    active = page.locator('#models-table tr[data-active="true"]')
    assert active.get_attribute("data-version") == "m-20260301-base"
    page.wait_for_selector("#train-form")
    screenshot(page, "06-admin", full_page=True)

    page.click('button[data-activate="m-20260302-retrained"]')
    page.wait_for_selector('tr[data-version="m-20260302-retrained"][data-active=true]')
    with live_server.api("admin") as api:
        models = api.get("/v1/admin/models").json()["data"]
    assert [m["version"] for m in models if m["active"]] == ["m-20260302-retrained"]
    # Roll back through the UI as well.
    rollback = page.locator('button[data-activate="m-20260301-base"]')
    assert rollback.inner_text() == "Roll back to this"
    rollback.click()
    page.wait_for_selector('tr[data-version="m-20260301-base"][data-active=true]')


def test_admin_starts_retraining_from_labeled_intervals(page, live_server: LiveServer):
    sign_in(page, live_server.base_url, live_server.keys["admin"])
    page.goto(live_server.base_url + "/#/admin")
    page.wait_for_selector("#train-form")
    page.check(f'#train-form input[name="stream"][value="{STREAM}"]')
    page.check("#train-method-atcon_guided_backprop")
    page.fill("#train-epochs", "2")
    page.click("#train-submit")
    row = page.locator("#jobs-table tbody tr").first
    row.wait_for()
    job_id = row.get_attribute("data-job-id")
    with live_server.api("admin") as api:
        job = api.get(f"/v1/admin/training-jobs/{job_id}").json()
    assert job["spec"]["method"] == "atcon_guided_backprop"
    assert job["spec"]["hyperparameters"]["epochs"] == 2
    assert [s["stream_id"] for s in job["spec"]["streams"]] == [STREAM]


def test_admin_lists_training_jobs_from_the_api_with_older_pages(page, live_server: LiveServer):
    # Jobs started elsewhere (another admin, a script), not behind any model version: only the
    # list endpoint knows them. 21 of them: more than one page of 20.
    spec = {"streams": [{"stream_id": STREAM}], "hyperparameters": {"epochs": 1}}
    with live_server.api("admin") as api:
        posted = [api.post("/v1/admin/training-jobs", json=spec).json()["job_id"]
                  for _ in range(21)]
        total = len(api.get("/v1/admin/training-jobs", params={"limit": 1000}).json()["data"])
    sign_in(page, live_server.base_url, live_server.keys["admin"])
    page.goto(live_server.base_url + "/#/admin")
    rows = page.locator("#jobs-table tbody tr")
    rows.first.wait_for()
    assert rows.count() == 20
    assert rows.first.get_attribute("data-job-id") == posted[-1]  # newest first
    page.click("#jobs-more")
    page.wait_for_function(
        "(n) => document.querySelectorAll('#jobs-table tbody tr').length === n", arg=min(total, 40)
    )
    shown = [rows.nth(i).get_attribute("data-job-id") for i in range(rows.count())]
    assert shown[:21] == posted[::-1]


def test_admin_creates_a_key_shown_once(page, live_server: LiveServer):
    sign_in(page, live_server.base_url, live_server.keys["admin"])
    page.goto(live_server.base_url + "/#/admin")
    page.wait_for_selector("#keys-table")
    own = page.locator("#keys-table tbody tr", has_text="admin tester")
    assert own.locator("button").count() == 0  # the signed-in key cannot revoke itself here
    page.fill("#key-name", "nurse station")
    page.select_option("#key-role", "viewer")
    page.click("#key-form button[type=submit]")
    secret = page.locator("code.secret").inner_text()
    page.wait_for_selector('#keys-table tr:has-text("nurse station")')
    with httpx.Client(base_url=live_server.base_url) as client:
        me = client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).json()
    assert me["role"] == "viewer" and me["name"] == "nurse station"
