"""The web UI: its session login and CSRF rules (through the API), and the page itself in a real browser.

The browser test drives Debian's Chromium with Playwright against ``medsight serve``'s app on a loopback
port: log in, drop a PneumoniaMNIST test image (PNG) and pick a CT slice (DICOM), see the finding, the
probability bar with its threshold and the heatmap, toggle it, open the model card, look at the history
and the admin pages, log out; predict with a 3D model on a stored CT series from the history page. Screenshots go to ``test-artifacts/``. Without Chromium or Playwright it
skips, except under ``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from predict_helpers import (
    MODEL,
    PASSWORD,
    app_with_model,
    png_bytes,
    tiny_ecg_run,
    tiny_run,
    tiny_segmentation_run,
)
from series_helpers import CT_SERIES, bone_segmentation_run

from medsight.ingest import Ingestor
from medsight.predict.registration import register_run
from medsight.serve import create_app
from medsight.serve.web import CSRF_HEADER, SESSION_COOKIE, STATIC_DIR
from medsight.store import Role, Store, add_user, list_tokens, open_store
from medsight.store.audit import query as audit_query

REPO_ROOT = Path(__file__).parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path(os.environ.get("MEDSIGHT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
CT = "dicom/ct_head_ge/01.dcm"
TIMEOUT_MS = 60_000  # a first prediction loads the model: generous on a busy 2-core machine


@pytest.fixture
def store() -> Iterator[Store]:
    with open_store() as store:
        yield store


# ---- session and CSRF, through the API (no browser needed) -----------------------------------


@pytest.fixture
def client(store: Store) -> TestClient:
    add_user(store, "dr-web", Role.CLINICIAN, PASSWORD)
    return TestClient(create_app(store))


def _log_in(client: TestClient) -> str:
    response = client.post("/api/auth/session", json={"username": "dr-web", "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()["csrf_token"]


def test_session_cookie_is_httponly_strict_and_short(client: TestClient, store: Store) -> None:
    response = client.post("/api/auth/session", json={"username": "dr-web", "password": PASSWORD})
    body, cookie = response.json(), response.headers["set-cookie"]
    assert body["user"] == "dr-web" and body["role"] == "clinician" and len(body["csrf_token"]) == 64
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie
    assert "Secure" not in cookie  # plain http on loopback; https requests get Secure
    assert body["csrf_token"] not in cookie  # the page holds the CSRF token, the cookie the session
    (session,) = [t for t in list_tokens(store, "dr-web") if t.name == "browser session"]
    assert session.status == "active" and session.expires_at is not None
    assert client.get("/api/auth/me").json()["name"] == "dr-web"  # GET: the cookie alone suffices
    assert client.get("/api/auth/session/csrf").json()["csrf_token"] == body["csrf_token"]


def test_unsafe_requests_need_the_sessions_csrf_token(client: TestClient, store: Store) -> None:
    csrf = _log_in(client)
    for headers in ({}, {CSRF_HEADER: "0" * 64}):
        refused = client.post("/api/auth/session/logout", headers=headers)
        assert refused.status_code == 403 and CSRF_HEADER in refused.json()["error"]
    other = TestClient(client.app)  # another session's token does not fit this session
    other_csrf = _log_in(other)
    refused = client.post("/api/auth/session/logout", headers={CSRF_HEADER: other_csrf})
    assert refused.status_code == 403

    assert client.post("/api/auth/session/logout", headers={CSRF_HEADER: csrf}).status_code == 204
    assert SESSION_COOKIE not in client.cookies
    sessions = [t for t in list_tokens(store, "dr-web") if t.name == "browser session"]
    assert sorted(t.status for t in sessions) == ["active", "revoked"]  # the other session lives on


def test_a_revoked_session_cookie_is_refused(client: TestClient) -> None:
    csrf = _log_in(client)
    cookie = client.cookies[SESSION_COOKIE]
    client.post("/api/auth/session/logout", headers={CSRF_HEADER: csrf})
    client.cookies.set(SESSION_COOKIE, cookie)  # a copy kept after logout
    response = client.get("/api/auth/me")
    assert response.status_code == 401 and "revoked" in response.json()["error"]


def test_failed_browser_logins_are_audited(client: TestClient, store: Store) -> None:
    bad = client.post("/api/auth/session", json={"username": "dr-web", "password": "wrong password"})
    assert bad.status_code == 401 and bad.json() == {"error": "wrong user name or password."}
    assert SESSION_COOKIE not in client.cookies
    (failed,) = audit_query(store, action="login_failed")
    assert (failed.resource_id, failed.outcome) == ("dr-web", "denied")


def test_page_and_files_are_served_with_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    for name in ("css/app.css", "js/app.js", "js/api.js", "js/viewer.js"):
        assert (STATIC_DIR / name).is_file()
        assert client.get(f"/static/{name}").status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    assert client.get("/static/../pyproject.toml").status_code == 404


# ---- the page in a real browser ---------------------------------------------------------------


def _playwright_or_skip() -> Any:
    """Playwright's sync API, or a skip saying what is missing (a failure under CI=true)."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[dev]')"
    if missing is None and not (CHROMIUM.is_file() or shutil.which(str(CHROMIUM))):
        missing = f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or make test as root)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the browser test cannot run: {missing}", pytrace=False)
        pytest.skip(missing)
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def sync_playwright() -> Any:
    return _playwright_or_skip()


@pytest.fixture(scope="module")
def run_dir(sync_playwright: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, trained only once the browser is known to be there (a skip costs no training)."""
    return tiny_run(tmp_path_factory)


@pytest.fixture
def server(store: Store, run_dir: Path) -> Iterator[str]:
    """The app with the tiny model, served by uvicorn on a loopback port in a thread; yields its URL."""
    app, _ = app_with_model(store, run_dir)
    yield from _serve(app)


@pytest.fixture
def task_server(
    store: Store, sync_playwright: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The app with a tiny segmentation model (the default) and a tiny ECG beat model."""
    segmentation, _ = tiny_segmentation_run(tmp_path_factory)
    app, _ = app_with_model(store, segmentation)  # registered as MODEL, the default
    register_run(store, tiny_ecg_run(tmp_path_factory), "beats", "1", user="test")
    yield from _serve(app)


def _serve(app: Any) -> Iterator[str]:
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    assert httpx.get(f"{url}/api/health").status_code == 200
    yield url
    uv.should_exit = True
    thread.join(timeout=20)


@pytest.fixture
def pneumonia_png(tmp_path: Path, shared_data: Path) -> Path:
    """The first PneumoniaMNIST test image, saved as a PNG as a clinician might have it."""
    with np.load(shared_data / "medmnist" / "pneumoniamnist.npz") as data:
        image = np.asarray(data["test_images"][0], dtype=np.uint8)
    path = tmp_path / "pneumonia-test-0.png"
    path.write_bytes(png_bytes(image))
    return path


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _drop_file(page: Any, path: Path, mime: str) -> None:
    """Drag-and-drop as the browser delivers it: a drop event whose DataTransfer holds the file."""
    page.evaluate(
        """([data, name, mime]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            const zone = document.querySelector("#dropzone");
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        [base64.b64encode(path.read_bytes()).decode(), path.name, mime],
    )


def _canvas(page: Any) -> str:
    return page.evaluate("document.querySelector('#canvas').toDataURL()")


def _log_in_page(page: Any, user: str) -> None:
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")  # the keyboard is enough
    page.wait_for_selector("#who", state="visible")


def _check_prediction(page: Any, title: str) -> None:
    page.wait_for_function(
        "t => document.querySelector('#viewer-title').textContent === t && !document.querySelector('#viewer-card').hidden",
        arg=title,
        timeout=TIMEOUT_MS,
    )
    assert page.inner_text("#result-label") in ("lesion", "no lesion")
    assert page.locator(".bar").count() == 2 and page.locator(".bar-fill").first.is_visible()
    assert page.locator(".threshold").is_visible()  # the threshold is marked on the positive class's bar
    assert "Threshold" in page.inner_text("#prob-bars")
    page.wait_for_function("() => document.querySelector('#overlay-img').naturalWidth > 0")
    assert page.locator("#overlay-img").is_visible() and page.locator("#canvas").is_visible()
    assert page.is_hidden("#error")


def _check_heatmap_controls(page: Any) -> None:
    with_map = _canvas(page)
    page.click("#heatmap-toggle")
    assert _canvas(page) != with_map, "hiding the heatmap did not change the picture"
    page.click("#heatmap-toggle")
    assert _canvas(page) == with_map
    page.focus("#opacity")
    page.keyboard.press("End")  # sliders work from the keyboard
    assert _canvas(page) != with_map
    page.focus("#window")
    page.keyboard.press("Home")
    width = page.evaluate("document.querySelector('#canvas').width")
    page.click("#zoom-in")
    assert page.evaluate("document.querySelector('#canvas').width") > width
    assert page.inner_text("#zoom-value") == "125%"


def _predict_png_and_dicom(page: Any, png: Path, dicom: Path) -> None:
    _drop_file(page, png, "image/png")
    _check_prediction(page, png.name)
    assert page.get_attribute("#canvas", "data-image-size") == "28x28"  # the browser draws a PNG itself
    _shot(page, "web-ui-2-png-prediction")  # before the controls test turns every slider to its end
    _check_heatmap_controls(page)

    page.set_input_files("#file-input", str(dicom))  # the file picker
    _check_prediction(page, dicom.name)
    assert page.get_attribute("#canvas", "data-image-size") == "512x512"  # the server's preview of the CT
    before = _canvas(page)
    page.focus("#level")
    page.keyboard.press("PageDown")  # level down: the CT gets brighter
    assert _canvas(page) != before
    _shot(page, "web-ui-3-dicom-prediction")


def _open_model_card(page: Any) -> None:
    with page.expect_popup() as popup_info:
        page.click("#result-card-link")
    card = popup_info.value
    card.wait_for_load_state()
    assert MODEL in card.content() and card.url.endswith("/card?version=1")
    _shot(card, "web-ui-4-model-card")
    card.close()


def _check_history(page: Any) -> None:
    page.click(".tab[data-view=history]")
    page.wait_for_selector("#studies-table tbody tr td.uid")
    assert page.locator("#studies-table tbody tr").count() == 2  # the picture's study and the CT's
    page.locator("#studies-table tbody tr td.uid button").first.click()
    page.locator("#results-table tbody button").first.click()
    page.wait_for_function(
        "() => document.querySelector('#viewer-title').textContent.startsWith('Result of')"
    )
    assert page.is_disabled("#heatmap-toggle")  # a stored result shows its overlay, the map baked in
    _shot(page, "web-ui-5-history-result")


def _check_csrf_and_logout(page: Any, base: str) -> None:
    (cookie,) = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "medsight_session" not in page.evaluate("document.cookie")  # scripts cannot read it
    forged = page.evaluate("fetch('/api/auth/session/logout', {method: 'POST'}).then(r => r.status)")
    assert forged == 403  # the cookie alone does not log out (nor predict, nor change users)
    page.click("#logout")
    page.wait_for_selector("#view-login", state="visible")
    assert page.request.get(f"{base}/api/auth/me").status == 401


def _check_admin_pages(page: Any) -> None:
    _log_in_page(page, "admin-user")
    page.click(".tab[data-view=admin]")
    page.wait_for_selector("#users-table tbody tr")
    assert "clinician-user" in page.inner_text("#users-table")
    page.wait_for_function(  # the flagged list has loaded, whether or not the CT was flagged
        "() => !document.querySelector('#flagged-empty').hidden"
        " || document.querySelectorAll('#flagged-table tbody tr').length > 0"
    )
    page.fill("#new-name", "nurse-a")
    page.fill("#new-password", PASSWORD)
    page.select_option("#new-role", "viewer")
    page.click("#user-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#users-table').innerText.includes('nurse-a')")
    page.fill("#new-name", "nurse-a")
    page.fill("#new-password", PASSWORD)
    page.click("#user-form button[type=submit]")
    page.wait_for_selector("#error", state="visible")
    assert "already exists" in page.inner_text("#error-text")  # the API's words, shown as they are
    _shot(page, "web-ui-6-admin")


@contextmanager
def _browser_page(sync_playwright: Any, url: str) -> Iterator[Any]:
    """A Chromium page at ``url``, closed afterwards whatever happened."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            yield page
        finally:
            browser.close()


def test_web_ui_in_chromium(
    sync_playwright: Any, server: str, pneumonia_png: Path, shared_data: Path
) -> None:
    with _browser_page(sync_playwright, server) as page:
        page.wait_for_selector("#view-login", state="visible")
        page.fill("#username", "clinician-user")
        page.fill("#password", "wrong password")
        page.click("#login-submit")
        page.wait_for_selector("#error", state="visible")
        assert page.inner_text("#error-text") == "wrong user name or password."
        _shot(page, "web-ui-1-login-error")
        _log_in_page(page, "clinician-user")
        assert page.is_hidden(".tab[data-view=admin]")  # admin pages only for admins

        _predict_png_and_dicom(page, pneumonia_png, shared_data / CT)
        _open_model_card(page)
        page.set_viewport_size({"width": 768, "height": 1024})  # a tablet, portrait
        _shot(page, "web-ui-3b-tablet")
        page.set_viewport_size({"width": 1366, "height": 900})
        _check_history(page)
        _check_csrf_and_logout(page, server)
        _check_admin_pages(page)


def test_segmentation_and_ecg_models_in_chromium(
    sync_playwright: Any, task_server: str, tmp_path_factory: pytest.TempPathFactory, shared_data: Path
) -> None:
    """The mask over the image with its toggle and area; then, with the ECG model picked, a record's
    three files at once, answered with the beat counts and the strip plot."""
    _, pictures = tiny_segmentation_run(tmp_path_factory)
    record = shared_data / "ecg" / "wfdb" / "100"
    with _browser_page(sync_playwright, task_server) as page:
        _log_in_page(page, "clinician-user")
        page.set_input_files("#file-input", str(pictures / "26_image.png"))
        page.wait_for_function(
            "() => document.querySelector('#canvas').dataset.map === 'mask'", timeout=TIMEOUT_MS
        )
        assert page.inner_text("#map-name") == "Mask" and page.locator(".bar").count() == 0
        assert "Mask:" in page.inner_text("#result-summary") and page.is_visible("#result-mask-link")
        with_mask = _canvas(page)
        page.click("#heatmap-toggle")
        assert _canvas(page) != with_mask, "hiding the mask did not change the picture"
        page.click("#heatmap-toggle")
        _shot(page, "web-ui-7-segmentation")

        page.select_option("#model-select", "beats:1")
        page.set_input_files("#file-input", [str(record.with_suffix(s)) for s in (".hea", ".dat", ".atr")])
        page.wait_for_function("() => document.querySelector('#strip-img').naturalWidth > 0")
        counts = page.inner_text("#beat-counts")
        assert "other:" in counts and "pvc:" in counts and page.is_hidden("#viewer-card")
        assert page.is_hidden("#overlay-figure") and page.is_hidden("#error")
        _shot(page, "web-ui-8-ecg")


def _predict_on_stored_series(page: Any, model: str) -> None:
    """Choose ``model`` on the Predict page, select the stored study on the History page, press Predict."""
    page.click(".tab[data-view=predict]")
    page.select_option("#model-select", f"{model}:1")
    page.click(".tab[data-view=history]")
    page.click("#studies-table tbody tr td.uid button")
    predict = page.wait_for_selector("#series-table tbody button")
    row = page.inner_text("#series-table tbody tr")
    assert row.split("\t")[0] == "CT" and row.split("\t")[2] == "28", row  # modality, images
    predict.focus()
    page.keyboard.press("Enter")  # the keyboard is enough


def test_a_stored_series_is_predicted_from_the_history_page(
    sync_playwright: Any,
    server: str,
    store: Store,
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The head CT in the store, no result yet: its study is listed with its series; Predict with the
    default 2D model is refused in the API's words, with the 3D bone U-Net it shows the mask and its volume."""
    register_run(store, bone_segmentation_run(tmp_path_factory), "ct-bone", "1", user="test")
    Ingestor(store, workers=1).ingest_paths([shared_data / CT_SERIES], progress=False)
    with _browser_page(sync_playwright, server) as page:
        _log_in_page(page, "clinician-user")
        _predict_on_stored_series(page, MODEL)
        page.wait_for_selector("#error", state="visible")
        assert "not a series" in page.inner_text("#error-text")

        _predict_on_stored_series(page, "ct-bone")
        page.wait_for_function(
            "() => document.querySelector('#viewer-title').textContent.startsWith('Result of')",
            timeout=TIMEOUT_MS,
        )
        page.wait_for_function("() => document.querySelector('#overlay-img').naturalWidth > 0")
        summary = page.inner_text("#result-summary")
        assert "of the series" in summary and " mL" in summary and page.is_hidden("#error")
        assert page.inner_text("#result-label")  # the finding
        _shot(page, "web-ui-9-stored-series")
