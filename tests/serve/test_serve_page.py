"""The page at `/` in headless Chromium (Debian's chromium + chromium-driver, driven by selenium): upload a WAV,
ask, see the streamed answer (the same as the API's) and the router's choice; a screenshot is kept."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

pytest.register_assert_rewrite("_serve_helpers")  # it is also a plugin (below): rewrite it once
from _serve_helpers import audio_messages, post_json

# The `servers` and `clips` fixtures: one registration, so one pair of servers for all serve tests.
pytest_plugins = ["_serve_helpers"]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is part of the test extra")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=900,1100")


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("Chromium and its driver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mowe-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_page_uploads_a_wav_and_shows_the_answer_and_the_router_choice(servers, clips, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, wav = servers["main"], clips[900]
    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.ID, "model-name").text == server.name)  # /v1/models answered
    browser.find_element(By.ID, "audio-file").send_keys(str(wav))
    wait.until(lambda d: d.find_element(By.ID, "submit").is_enabled())
    instruction = browser.find_element(By.ID, "instruction")
    instruction.clear()
    instruction.send_keys("what is said")
    tokens = browser.find_element(By.ID, "max-tokens")
    tokens.clear()
    tokens.send_keys("8")
    browser.find_element(By.ID, "submit").click()
    wait.until(lambda d: d.find_element(By.ID, "answer").get_attribute("data-done") == "1"
               or "error" in (d.find_element(By.ID, "answer").get_attribute("class") or ""))
    answer = browser.find_element(By.ID, "answer")
    assert "error" not in (answer.get_attribute("class") or ""), answer.text

    status, api = post_json(server.api + "/chat/completions", {"model": server.name, "max_tokens": 8,
                                                               "messages": audio_messages(wav, "what is said")})
    assert status == 200
    # The page shows what the API answers for the same audio and instruction (textContent: exact characters).
    assert answer.get_attribute("textContent") == api["choices"][0]["message"]["content"]
    route = api["mowe"]["router"][0]
    chosen = browser.find_element(By.CSS_SELECTOR, "#router .chosen").text
    assert chosen == ", ".join(s["encoder"] for s in route["selected"])
    rows = browser.find_elements(By.CSS_SELECTOR, "#router .gate")
    assert len(rows) == len(route["gates"])
    selected = [r.find_element(By.CSS_SELECTOR, ".name").text for r in rows if "selected" in r.get_attribute("class")]
    assert selected == [s["encoder"] for s in route["selected"]]
    assert "done" in browser.find_element(By.ID, "status").text

    # A test artefact: under pytest's tmp dir, or MOWE_ARTIFACTS_DIR when set (CI keeps that folder).
    out = os.environ.get("MOWE_ARTIFACTS_DIR") or str(tmp_path)
    os.makedirs(out, exist_ok=True)
    shot = os.path.join(out, "mowe_serve_page.png")
    assert browser.save_screenshot(str(shot)) and os.path.getsize(shot) > 1000
    print(f"\nscreenshot of the page: {shot}")
