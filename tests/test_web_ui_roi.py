"""A segmentation model's region of interest in the web UI, in real Chromium: the Predict page offers the
mask input for a segmentation model only (with a hint when the model was trained inside a field of view,
as the models list and the model card say), sends it as the field 'roi', says whether it was applied, and
shows a refused ROI in the API's words. Uses the page helpers of ``test_web_ui``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from predict_helpers import MODEL, app_with_model, png_bytes, tiny_ecg_run, tiny_segmentation_run
from test_web_ui import TIMEOUT_MS, _browser_page, _log_in_page, _playwright_or_skip, _serve, _shot

from medsight.predict.registration import register_run
from medsight.store import Store


@pytest.fixture(scope="module")
def browser_api() -> Any:
    return _playwright_or_skip()


@pytest.fixture
def roi_server(store: Store, browser_api: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny DRIVE U-Net (trained inside the field of view) as the default, and a tiny ECG model."""
    segmentation, _ = tiny_segmentation_run(tmp_path_factory)
    app, _ = app_with_model(store, segmentation)
    register_run(store, tiny_ecg_run(tmp_path_factory), "beats", "1", user="test")
    yield from _serve(app)


def _predict(page: Any, image: Path, words: str, where: str = "#result-roi") -> None:
    """Upload ``image`` and wait until ``where`` says ``words``."""
    page.set_input_files("#file-input", str(image))
    page.wait_for_function(
        "([where, words]) => { const e = document.querySelector(where);"
        " return !e.closest('[hidden]') && e.textContent.includes(words); }",
        arg=[where, words],
        timeout=TIMEOUT_MS,
    )


def _check_model_facts(page: Any, base: str) -> None:
    """The models list and the card page (what the Predict page reads) say which model wants an ROI."""
    listed = {m["name"]: m["trained_with_roi"] for m in page.request.get(f"{base}/api/models").json()}
    assert listed == {MODEL: True, "beats": False}
    card = page.request.get(f"{base}/api/models/{MODEL}/card").text()
    assert "Trained inside each image's region of interest" in card


def test_a_region_of_interest_is_sent_with_the_image_in_chromium(
    browser_api: Any, roi_server: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    _, pictures = tiny_segmentation_run(tmp_path_factory)
    image, roi = pictures / "26_image.png", pictures / "26_roi.png"
    small = tmp_path / "small-roi.png"
    small.write_bytes(png_bytes(np.asarray(Image.open(roi).resize((70, 73), Image.NEAREST))))
    with _browser_page(browser_api, roi_server) as page:
        _log_in_page(page, "clinician-user")
        _check_model_facts(page, roi_server)
        assert page.is_visible("#roi-input") and "trained inside" in page.inner_text("#roi-hint")

        page.set_input_files("#roi-input", str(roi))
        _predict(page, image, "A region of interest was applied")
        assert page.is_hidden("#error") and "Mask:" in page.inner_text("#result-summary")
        _shot(page, "web-ui-10-segmentation-roi")

        page.click("#roi-clear")
        assert page.is_hidden("#roi-clear")
        _predict(page, image, "no region of interest was given, though the model was trained with one")

        page.set_input_files("#roi-input", str(small))
        _predict(page, image, "the roi is 73 × 70 but its image 26_image.png is 146 × 141", "#error-text")
        assert page.is_hidden("#progress-box")

        page.select_option("#model-select", "beats:1")  # not a segmentation model: no ROI offered
        assert (
            page.is_hidden("#roi-box")
            and page.evaluate("document.querySelector('#roi-input').files.length") == 0
        )
