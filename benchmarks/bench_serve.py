"""Throughput of `mowe serve` under concurrent clients vs one request at a time (dynamic batching at work).

A model is saved, served by a real ``mowe serve`` subprocess on 127.0.0.1, and sent chat requests with a WAV
clip each (greedy) over HTTP by client threads in this process:

* one at a time: ``--sequential`` requests back to back;
* 8 and 32 concurrent clients, each sending ``--per-client`` requests back to back.

Generation is greedy with ``max_tokens`` 64 (chat-length answers; decoding is where batching pays on a CPU,
while prefill and encoders cost about the same per row in any batch). Printed: requests/s and generated
tokens/s of each, their ratio to one-at-a-time (``serve_throughput_ratio_c8``, goal >= 3), and p50/p99
latency. Loop counts are fixed; only localhost is contacted; the server runs one intra-op thread unless
OMP_NUM_THREADS says.

Model (full run): Whisper-shaped strong encoder (d 256, 4 layers) + a Whisper-tiny-shaped and a HuBERT-shaped
weak encoder (top-1) + stack-4 connector + a Llama-shaped LLM (hidden 768, 8 layers, ~60M parameters) with
LoRA; 2 s clips; the Whisper encoders at real length (``pad_to_30s=False``, as a CPU deployment runs them: the
30 s window costs the same per clip in any batch, so it would only measure the encoders). ``--quick``: the
tiny test sizes.

    python benchmarks/bench_serve.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import _common as C
import numpy as np
import soundfile as sf
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_model(directory: str, quick: bool) -> None:
    from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, MoWEConfig, RouterConfig
    from mowe.data.processor import MoWEProcessor
    from mowe.data.processor_options import ProcessorOptions
    from mowe.data.tokenizer import train_bpe_tokenizer
    from mowe.model import MoWEAudioLLM

    # The system prompt is in the tokenizer's training text, so it is a few tokens, as a real LLM tokenizer
    # makes it (a 400-token BPE that never saw it spells it out letter by letter: a prompt 5x longer than
    # real).
    tok = train_bpe_tokenizer(
        [ProcessorOptions().system_prompt, "what is said in the clip", "a tone"] * 10, vocab_size=400
    )
    proc = MoWEProcessor(tok)
    strong = (
        C.QUICK_WHISPER
        if quick
        else {"d_model": 256, "encoder_layers": 4, "encoder_attention_heads": 4, "encoder_ffn_dim": 1024}
    )
    llm = (
        {**C.QUICK_LLM}
        if quick
        else {
            "hidden_size": 768,
            "intermediate_size": 2048,
            "num_hidden_layers": 8,
            "num_attention_heads": 12,
            "num_key_value_heads": 4,
        }
    )
    cfg = MoWEConfig(
        strong=EncoderConfig("whisper", preset="tiny", overrides=strong, pad_to_30s=False),
        weak_encoders={
            "whisper_tiny": EncoderConfig(
                "whisper", preset="tiny", overrides=C.QUICK_WEAK_WHISPER, pad_to_30s=False
            ),
            "hubert": EncoderConfig("hubert", preset="hubert-base", overrides=C.QUICK_HUBERT),
        },
        router=RouterConfig(top_k=1),
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=LLMConfig(
            config={"model_type": "llama", "vocab_size": len(tok), "max_position_embeddings": 1024, **llm}
        ),
        audio_token_id=proc.audio_token_id,
    )
    torch.manual_seed(0)
    MoWEAudioLLM.from_config(cfg).save_pretrained(directory)
    proc.save_pretrained(directory)


def wav_b64(seconds: float, freq: float) -> str:
    import base64
    import io

    t = np.arange(int(seconds * C.SR)) / C.SR
    buf = io.BytesIO()
    sf.write(
        buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), C.SR, format="WAV", subtype="PCM_16"
    )
    return base64.b64encode(buf.getvalue()).decode()


@dataclasses.dataclass
class Run:
    wall: float
    latencies: list[float]
    tokens: int

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def ask(url: str, body: bytes) -> tuple[float, int]:
    t = time.perf_counter()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=600) as r:
        res = json.loads(r.read())
    return time.perf_counter() - t, res["usage"]["completion_tokens"]


def load(url: str, bodies: list[bytes], clients: int, per_client: int) -> Run:
    """``clients`` threads, each sending ``per_client`` requests back to back."""
    lat, toks, lock = [], [], threading.Lock()

    def worker(c: int) -> None:
        for i in range(per_client):
            dt, n = ask(url, bodies[(c * per_client + i) % len(bodies)])
            with lock:
                lat.append(dt)
                toks.append(n)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return Run(time.perf_counter() - t, lat, sum(toks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sequential", type=int, default=None, help="requests sent one at a time")
    ap.add_argument("--per-client", type=int, default=None, help="requests per concurrent client")
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--dtype", default=None, choices=("float32", "bfloat16"), help="the server's --dtype")
    args = ap.parse_args()
    quick = args.quick
    sequential = args.sequential or (4 if quick else 8)
    per_client = args.per_client or (1 if quick else 2)
    max_tokens = args.max_tokens or (4 if quick else 64)
    seconds = 0.5 if quick else 2.0

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        model_dir = os.path.join(tmp, "bench-mowe")
        build_model(model_dir, quick)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # One intra-op thread unless told otherwise: the clients share this 2-core machine with the server.
        env = dict(
            os.environ,
            PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
            OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
        )
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mowe",
                "serve",
                model_dir,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--max-batch",
                "32",
                "--max-wait-ms",
                "20",
                *(["--dtype", args.dtype] if args.dtype else []),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                if server.poll() is not None:
                    raise SystemExit(f"mowe serve exited: {server.stderr.read()[-2000:]}")
                try:
                    urllib.request.urlopen(base + "/health", timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.2)
            url = base + "/v1/chat/completions"
            bodies = [
                json.dumps(
                    {
                        "model": "bench-mowe",
                        "max_tokens": max_tokens,
                        "messages": [
                            {
                                "role": "user",
                                "content": [
                                    {
                                        "type": "input_audio",
                                        "input_audio": {
                                            "data": wav_b64(seconds, 200 + 37 * i),
                                            "format": "wav",
                                        },
                                    },
                                    {"type": "text", "text": "what is said in the clip"},
                                ],
                            }
                        ],
                    }
                ).encode()
                for i in range(16)
            ]
            load(url, bodies, 2, 1)  # warm-up
            runs = {"seq": load(url, bodies, 1, sequential)}
            for c in (8, 32):
                runs[f"c{c}"] = load(url, bodies, c, per_client)
            health = json.loads(urllib.request.urlopen(base + "/health", timeout=5).read())
        finally:
            server.terminate()
            server.wait(30)

    seq = runs["seq"]
    result = {
        **C.device_info(),
        "quick": quick,
        "max_tokens": max_tokens,
        "clip_seconds": seconds,
        "dtype": args.dtype or "float32",
        "largest_batch": health["largest_batch"],
    }
    for name, r in runs.items():
        C.log(
            f"{name:>4}: {len(r.latencies):3d} requests in {r.wall:6.2f} s = {r.rps:6.2f} req/s, "
            f"{r.tokens / r.wall:7.1f} tok/s, latency p50 {r.pct(0.5):.3f} s p99 {r.pct(0.99):.3f} s"
        )
        result[f"serve_rps_{name}"] = round(r.rps, 3)
        result[f"serve_p50_s_{name}"] = round(r.pct(0.5), 4)
        result[f"serve_p99_s_{name}"] = round(r.pct(0.99), 4)
        if name != "seq":
            result[f"serve_throughput_ratio_{name}"] = round(r.rps / seq.rps, 3)
            result[f"serve_token_ratio_{name}"] = round((r.tokens / r.wall) / (seq.tokens / seq.wall), 3)
    C.log(
        f"throughput vs one at a time: 8 clients {result['serve_throughput_ratio_c8']:.2f}x (goal >= 3), "
        f"32 clients {result['serve_throughput_ratio_c32']:.2f}x; largest batch {health['largest_batch']}; "
        f"median latency {statistics.median(seq.latencies):.3f} s alone"
    )
    C.emit(result)


if __name__ == "__main__":
    main()
