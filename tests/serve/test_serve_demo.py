"""`mowe serve demo_out/<system>`: a system the demo trained and saved is served as it is, and its page
answers a question about a test clip and shows the router's choice (headless Chromium; the miniature demo of
   the suite)."""

from __future__ import annotations

import json

import pytest

pytest.register_assert_rewrite("_serve_helpers")
from _serve_helpers import (
    ask_on_page,
    audio_messages,
    page_router_choice,
    post_json,
    start_server,
    stop,
    wait_ready,
)

pytest_plugins = ["_serve_helpers"]


def test_a_trained_demo_system_is_served_and_its_page_shows_the_answer_and_the_route(quick_demo, browser):
    out, res = quick_demo
    model_dir = out / "mowe_prompt"
    assert res["saved_models"]["MoWE+prompt"] == str(model_dir)
    row = next(
        json.loads(line)
        for line in (out / "corpus" / "test.jsonl").read_text().splitlines()
        if json.loads(line)["task"] == "pitch"
    )
    wav = out / "corpus" / row["audio"]
    server = start_server(model_dir, "--max-batch", "1", "--timeout", "120")
    try:
        wait_ready(server)
        shown = ask_on_page(browser, server, wav, row["instruction"], max_tokens=6)
        status, api = post_json(
            server.api + "/chat/completions",
            {"model": server.name, "max_tokens": 6, "messages": audio_messages(wav, row["instruction"])},
        )
    finally:
        stop(server)
    assert status == 200 and shown == api["choices"][0]["message"]["content"]
    route = api["mowe"]["router"][0]
    assert {s["encoder"] for s in route["selected"]} <= {"speaker", "pitch"} and len(route["selected"]) == 1
    chosen, selected, gates = page_router_choice(browser)
    assert chosen == route["selected"][0]["encoder"] and selected == [chosen] and gates == 2
