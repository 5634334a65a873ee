"""The page at `/` in headless Chromium (Debian's chromium + chromium-driver, driven by selenium): upload a
WAV, ask, see the streamed answer (the same as the API's) and the router's choice; a screenshot is kept."""

from __future__ import annotations

import os

import pytest

pytest.register_assert_rewrite("_serve_helpers")  # it is also a plugin (below): rewrite it once
from _serve_helpers import ask_on_page, audio_messages, page_router_choice, post_json

# The `servers` and `clips` fixtures: one registration, so one pair of servers for all serve tests.
pytest_plugins = ["_serve_helpers"]


def test_page_uploads_a_wav_and_shows_the_answer_and_the_router_choice(servers, clips, browser, tmp_path):
    server, wav = servers["main"], clips[900]
    shown = ask_on_page(browser, server, wav, "what is said", max_tokens=8)
    status, api = post_json(
        server.api + "/chat/completions",
        {"model": server.name, "max_tokens": 8, "messages": audio_messages(wav, "what is said")},
    )
    assert status == 200
    assert shown == api["choices"][0]["message"]["content"]  # the page shows what the API answers
    route = api["mowe"]["router"][0]
    chosen, selected, gates = page_router_choice(browser)
    assert chosen == ", ".join(s["encoder"] for s in route["selected"])
    assert gates == len(route["gates"]) and selected == [s["encoder"] for s in route["selected"]]

    # A test artefact: under pytest's tmp dir, or MOWE_ARTIFACTS_DIR when set (CI keeps that folder).
    out = os.environ.get("MOWE_ARTIFACTS_DIR") or str(tmp_path)
    os.makedirs(out, exist_ok=True)
    shot = os.path.join(out, "mowe_serve_page.png")
    assert browser.save_screenshot(str(shot)) and os.path.getsize(shot) > 1000
    print(f"\nscreenshot of the page: {shot}")
