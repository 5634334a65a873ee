"""Bad requests to `mowe serve` get 4xx JSON errors in the OpenAI shape; none of them hurts the server."""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import time

import numpy as np
import pytest
import soundfile as sf

pytest.register_assert_rewrite("_serve_helpers")  # it is also a plugin (below): rewrite it once
from _serve_helpers import audio_messages, b64, get_json, post_json

# The `servers` and `clips` fixtures: one registration, so one pair of servers for all serve tests.
pytest_plugins = ["_serve_helpers"]

openai = pytest.importorskip("openai", reason="the openai client is part of the test extra")


def _audio_part(data: str, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


def _body(server, content, **extra) -> dict:
    return {
        "model": server.name,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 2,
        **extra,
    }


def _check(status_body, status: int, *needles: str, code: str | None = None):
    got, body = status_body
    assert got == status, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and isinstance(err["message"], str)
    assert err["type"] == ("invalid_request_error" if status < 500 else "server_error")
    for needle in needles:
        assert needle in err["message"], err["message"]
    if code is not None:
        assert err["code"] == code
    return err


def _wav_bytes(seconds: float, sr: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * sr), dtype=np.float32) + 0.1, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_each_bad_audio_class_is_a_400_naming_the_part(servers, clips):
    s = servers["strict"]
    url = s.api + "/chat/completions"
    text = {"type": "text", "text": "what is said"}
    _check(
        post_json(url, _body(s, [text, _audio_part(base64.b64encode(b"not audio at all" * 20).decode())])),
        400,
        "messages[0].content[1].input_audio",
        code="invalid_audio",
    )
    _check(post_json(url, _body(s, [_audio_part("")])), 400, "empty", code="invalid_audio")
    _check(
        post_json(url, _body(s, [_audio_part("@@not base64@@")])),
        400,
        "not valid base64",
        code="invalid_audio",
    )
    header_only = _wav_bytes(0.0)
    _check(
        post_json(url, _body(s, [_audio_part(base64.b64encode(header_only).decode())])),
        400,
        "no audio frames",
    )
    _check(
        post_json(url, _body(s, [_audio_part(b64(clips[300]), fmt="aac")])),
        400,
        "unsupported audio format",
        code="unsupported_format",
    )
    err = _check(
        post_json(url, _body(s, [_audio_part(base64.b64encode(_wav_bytes(3.0)).decode())])),
        413,
        "3.0 s long",
        "maximum duration of 2 s",
        "--max-audio-seconds",
        code="audio_too_long",
    )
    assert "/tmp" not in err["message"]  # the server's temporary file is not disclosed
    _check(
        post_json(url, _body(s, [_audio_part(base64.b64encode(_wav_bytes(0.01)).decode())])),
        400,
        "shorter than",
        code="audio_too_short",
    )
    three = [_audio_part(b64(clips[300]))] * 3
    _check(post_json(url, _body(s, three)), 400, "3 audio clips", "limit of 2", code="too_many_clips")
    _check(post_json(url, _body(s, [text])), 400, "no input_audio", code="no_audio")


def test_malformed_json_bad_parameters_and_unknown_model(servers, clips):
    s = servers["strict"]
    url = s.api + "/chat/completions"
    _check(post_json(url, b'{"model": "x", "messages": ['), 400, "not valid JSON", code="invalid_json")
    _check(post_json(url, b"[1, 2]"), 400, "JSON object", code="invalid_json")
    _check(post_json(url, b"\xff\xfe garbage"), 400, "not valid JSON")
    audio = [_audio_part(b64(clips[300]))]
    assert _check(post_json(url, _body(s, audio, max_tokens=0)), 400, "max_tokens")["param"] == "max_tokens"
    assert (
        _check(post_json(url, _body(s, audio, temperature="hot")), 400, "temperature")["param"]
        == "temperature"
    )
    _check(post_json(url, _body(s, audio, n=2)), 400, "n > 1 needs temperature > 0")
    _check(post_json(url, _body(s, audio, stop=["\n"])), 400, "'stop' is not supported")
    _check(
        post_json(url, _body(s, [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}] + audio)),
        400,
        "messages[0].content[0]",
    )
    _check(post_json(url, {"model": s.name, "messages": "hello"}), 400, "messages must be a non-empty list")
    _check(
        post_json(url, _body(s, audio, model="gpt-4o")),
        404,
        "'gpt-4o' does not exist",
        code="model_not_found",
    )
    # The openai client sees the same errors as its own exception types.
    client = openai.OpenAI(base_url=s.api, api_key="unused", max_retries=0, timeout=30)
    with pytest.raises(openai.BadRequestError, match="unsupported audio format"):
        client.chat.completions.create(
            model=s.name,
            max_tokens=2,
            messages=[{"role": "user", "content": [_audio_part(b64(clips[300]), fmt="webm")]}],
        )


def test_oversize_bodies_are_refused_before_decoding(servers):
    s = servers["strict"]
    big = b'{"model": "' + b"x" * (2 * 2**20) + b'"}'
    conn = http.client.HTTPConnection("127.0.0.1", int(s.url.rsplit(":", 1)[1]), timeout=30)
    conn.putrequest("POST", "/v1/chat/completions")
    conn.putheader("content-type", "application/json")
    conn.putheader("content-length", str(len(big)))
    conn.endheaders()  # no body sent: the declared length alone is refused
    res = conn.getresponse()
    body = json.loads(res.read())
    assert (
        res.status == 413
        and body["error"]["code"] == "body_too_large"
        and str(len(big)) in body["error"]["message"]
    )
    conn.close()
    # Chunked, with no length declared: refused once the limit is passed.
    conn = http.client.HTTPConnection("127.0.0.1", int(s.url.rsplit(":", 1)[1]), timeout=30)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=iter([big[i : i + 2**16] for i in range(0, len(big), 2**16)]),
            headers={"content-type": "application/json"},
            encode_chunked=True,
        )
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer and close before the client has written everything
    res = conn.getresponse()
    assert res.status == 413 and json.loads(res.read())["error"]["code"] == "body_too_large"
    conn.close()


def test_routes_and_files_outside_the_api_are_404_json(servers):
    s = servers["strict"]
    for path in (
        "/nope",
        "/static/../../setup.cfg",
        "/static/%2e%2e%2fsetup.cfg",
        "/static/..%2f..%2fcli.py",
        "/static/__init__.py",
        "/static/%2fetc%2fpasswd",
    ):
        status, body = get_json(s.url + path)
        assert status == 404 and "error" in body, path
    status, body = get_json(s.api + "/chat/completions")  # GET on a POST route
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    with socket.create_connection(("127.0.0.1", int(s.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"GET /static/../../../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    assert b" 404 " in reply.split(b"\r\n", 1)[0] and b"root:" not in reply


def _raw_request(port: int, body: bytes, *, send_body: bool = True) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + (body if send_body else body[:10]))
    return sock


def test_slow_body_times_out_and_a_leaving_client_frees_its_slot(servers, clips):
    s = servers["strict"]
    port = int(s.url.rsplit(":", 1)[1])
    start = time.monotonic()
    sock = _raw_request(port, b"{" + b" " * 100 + b"}", send_body=False)  # stalls after 10 bytes
    sock.settimeout(20)
    reply = b""
    while b"}}" not in reply:  # until the JSON error has arrived (or the server closes)
        part = sock.recv(65536)
        if not part:
            break
        reply += part
    sock.close()
    assert b" 408 " in reply.split(b"\r\n", 1)[0] and b"did not arrive within 3 s" in reply
    assert time.monotonic() - start < 20

    # Batches of 1 here: a long streamed answer holds the model while a second request waits in the queue.
    long = json.dumps(
        {**_body(s, audio_messages(clips[300])[0]["content"]), "max_tokens": 512, "stream": True}
    ).encode()
    queued = json.dumps(_body(s, audio_messages(clips[600])[0]["content"])).encode()
    before = get_json(s.url + "/health")[1]
    first = _raw_request(port, long)
    first.recv(1024)  # its stream has begun: it is running
    second = _raw_request(port, queued)
    time.sleep(0.3)
    assert get_json(s.url + "/health")[1]["queued"] == 1
    second.close()  # the waiting client leaves
    first.close()  # and so does the streaming one: its row stops
    end = time.monotonic() + 15
    while time.monotonic() < end:
        health = get_json(s.url + "/health")[1]
        if health["queued"] == 0 and health["cancelled"] > before["cancelled"]:
            break
        time.sleep(0.1)
    assert health["queued"] == 0 and health["cancelled"] == before["cancelled"] + 1
    # The server still answers, and ran neither the dropped request nor anything else twice.
    status, res = post_json(s.api + "/chat/completions", _body(s, audio_messages(clips[900])[0]["content"]))
    assert status == 200 and res["choices"][0]["finish_reason"] in ("stop", "length")
    end = time.monotonic() + 10  # the counters move just after the answer is handed over
    while get_json(s.url + "/health")[1]["requests"] < before["requests"] + 2 and time.monotonic() < end:
        time.sleep(0.05)
    final = get_json(s.url + "/health")[1]
    assert final["requests"] == before["requests"] + 2 and final["cancelled"] == before["cancelled"] + 1
    assert s.proc.poll() is None
