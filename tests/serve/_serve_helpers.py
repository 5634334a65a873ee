"""Shared by the serve tests: a tiny saved model, real WAV clips, and `mowe serve` subprocesses on
127.0.0.1."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(
    os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
)
INSTRUCTION = "what is said"


def write_tone(path: Path, freq: float, seconds: float = 0.5, sr: int = 16000) -> Path:
    """A real 16-bit PCM WAV file: a tone plus a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(int(freq))
    sf.write(
        path,
        (0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32),
        sr,
        subtype="PCM_16",
    )
    return path


def b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def audio_messages(path: Path, text: str = INSTRUCTION, fmt: str = "wav") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "input_audio", "input_audio": {"data": b64(path), "format": fmt}},
                {"type": "text", "text": text},
            ],
        }
    ]


def build_tiny_model(directory: Path) -> Path:
    """A tiny random MoWE model (strong Whisper, 4 weak encoders, router, Llama with LoRA) + processor,
    saved."""
    from conftest import tiny_config

    from mowe.data.processor import MoWEProcessor
    from mowe.data.tokenizer import train_bpe_tokenizer
    from mowe.model import MoWEAudioLLM

    tok = train_bpe_tokenizer(
        ["what is said", "describe the sound", "a low tone", "a high tone"] * 5, vocab_size=300
    )
    proc = MoWEProcessor(tok, max_audio_seconds=8.0)
    cfg = tiny_config(vocab_size=len(tok))
    cfg = dataclasses.replace(cfg, audio_token_id=proc.audio_token_id)
    torch.manual_seed(0)
    model = MoWEAudioLLM.from_config(cfg)
    model.save_pretrained(directory)
    proc.save_pretrained(directory)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def post_json(url: str, body: bytes | dict, timeout: float = 60) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@dataclasses.dataclass
class Server:
    url: str
    model_dir: Path
    name: str
    proc: subprocess.Popen

    @property
    def api(self) -> str:
        return self.url + "/v1"


def start_server(model_dir: Path, *args: str) -> Server:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mowe", "serve", str(model_dir), "--port", str(port), *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Server(f"http://127.0.0.1:{port}", model_dir, model_dir.name, proc)


def wait_ready(server: Server, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"mowe serve exited with {server.proc.returncode}: {server.proc.stdout.read()[-3000:]}"
            )
        try:
            if get_json(server.url + "/health", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("mowe serve did not come up")


def stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """Two servers of one tiny model, started together: ``main`` (batches of 4, 300 ms wait) and ``strict``
    (small limits: 1 MB bodies, 2 s clips, 2 clips, a 3 s request timeout, batches of 1). The test modules
    register this module with ``pytest_plugins``, so the fixture exists once and the servers start once.
    """
    model_dir = build_tiny_model(tmp_path_factory.mktemp("serve") / "tiny-mowe")
    started = {
        "main": start_server(model_dir, "--max-batch", "4", "--max-wait-ms", "300", "--timeout", "60"),
        "strict": start_server(
            model_dir,
            "--max-batch",
            "1",
            "--max-wait-ms",
            "0",
            "--timeout",
            "3",
            "--max-body-mb",
            "1",
            "--max-audio-seconds",
            "2",
            "--max-clips",
            "2",
        ),
    }
    try:
        for server in started.values():
            wait_ready(server)
        yield started
    finally:
        for server in started.values():
            stop(server)


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {f: write_tone(root / f"tone{f}.wav", f, seconds=0.4 + f / 4000) for f in (300, 600, 900, 1200)}


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=900,1100",
)


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("Chromium and its driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
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


def ask_on_page(browser, server: Server, wav: Path, instruction: str, max_tokens: int = 8) -> str:
    """Drive the page at ``/``: upload ``wav``, ask ``instruction``, wait for the streamed answer; its
    text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.ID, "model-name").text == server.name)  # /v1/models answered
    browser.find_element(By.ID, "audio-file").send_keys(str(wav))
    wait.until(lambda d: d.find_element(By.ID, "submit").is_enabled())
    box = browser.find_element(By.ID, "instruction")
    box.clear()
    box.send_keys(instruction)
    tokens = browser.find_element(By.ID, "max-tokens")
    tokens.clear()
    tokens.send_keys(str(max_tokens))
    browser.find_element(By.ID, "submit").click()
    wait.until(
        lambda d: (
            d.find_element(By.ID, "answer").get_attribute("data-done") == "1"
            or "error" in (d.find_element(By.ID, "answer").get_attribute("class") or "")
        )
    )
    answer = browser.find_element(By.ID, "answer")
    assert "error" not in (answer.get_attribute("class") or ""), answer.text
    assert "done" in browser.find_element(By.ID, "status").text
    return answer.get_attribute("textContent")  # exact characters


def page_router_choice(browser) -> tuple[str, list[str], int]:
    """What the page shows of the router: the chosen line, the selected encoders' names, the number of
    gates."""
    from selenium.webdriver.common.by import By

    chosen = browser.find_element(By.CSS_SELECTOR, "#router .chosen").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#router .gate")
    selected = [
        r.find_element(By.CSS_SELECTOR, ".name").text for r in rows if "selected" in r.get_attribute("class")
    ]
    return chosen, selected, len(rows)
