"""Shared fixtures: everything offline, small, deterministic."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ[_var] = "1"  # forced: no test may reach the network, whatever the shell says

import pytest  # noqa: E402
import torch  # noqa: E402

import dpo_lab  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    """The `cpu` profile's BPE tokenizer trained on the offline corpus (pad == eos, like GPT-2)."""
    return dpo_lab.corpus_tokenizer(seed=0, vocab_size=4096)


MAX_RESPONSE_TOKENS = 48


@pytest.fixture(scope="session")
def pairs(tokenizer):
    """Ten offline pairs of unequal lengths (helpful and harmless, subtle and obvious), responses ≤ 48 tokens.

    Why short: a random tiny model gives about -8 nats per token, and an fp32 number of magnitude
    ≥ 512 has a resolution (one ulp) of 6.1e-5 — coarser than the 5e-5 parity tolerance. Responses
    of ≤ 48 tokens keep every |log-prob| < 512, where 5e-5 is at least 1.6 ulp. Longer pairs are
    compared with a relative tolerance in `long_pairs`.
    """
    data, _ = dpo_lab.load_preference_data("offline", split="train", max_pairs=400)
    short = [
        p
        for p in data
        if max(len(tokenizer(p[k] + tokenizer.eos_token)["input_ids"]) for k in ("chosen", "rejected"))
        <= MAX_RESPONSE_TOKENS
    ][:10]
    assert len(short) == 10
    assert len({(len(p["chosen"]), len(p["rejected"])) for p in short}) > 5, "the fixture must mix lengths"
    return short


@pytest.fixture(scope="session")
def long_pairs(tokenizer):
    """Eight pairs whose chosen response is long (structured answers, 60+ tokens)."""
    data, _ = dpo_lab.load_preference_data("offline", split="train", max_pairs=400)
    long = [p for p in data if len(tokenizer(p["chosen"])["input_ids"]) >= 60][:8]
    assert len(long) == 8
    return long


@pytest.fixture()
def policy_and_reference(tokenizer):
    """Two DIFFERENT tiny models (seeds 1 and 2), dropout off: a copy would give ln 2 whatever the code does."""
    policy = dpo_lab.tiny_random_model(tokenizer, seed=1).eval()
    reference = dpo_lab.tiny_random_model(tokenizer, seed=2).eval()
    return policy, reference


@pytest.fixture(scope="session")
def tokenized_pairs(tokenizer, pairs):
    return dpo_lab.tokenize_pairs(tokenizer, pairs)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


# ---------------------------------------------------------------- a stub OpenAI-compatible judge server on loopback
class StubChat(BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions stub: prefers the answer containing GOOD; garbles on request."""

    requests: list[dict] = []
    fail_after: int | None = None

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        if self.fail_after is not None and len(type(self).requests) > self.fail_after:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b'{"error": "the stub server is down"}')
            return
        user = body["messages"][-1]["content"]
        first = user.split("[Answer A]")[1].split("[Answer B]")[0]
        second = user.split("[Answer B]")[1]
        if "garble" in user:
            content = "I cannot decide."
        elif ("GOOD" in first) == ("GOOD" in second):
            content = "Both are the same. [[tie]]"
        else:
            content = "Answer A is better. [[A]]" if "GOOD" in first else "Answer B is more specific. [[B]]"
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def stub_server():
    StubChat.requests, StubChat.fail_after = [], None
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def loop_args(kind: str, **overrides):
    """SFTArgs / DPOArgs (``kind`` "sft" or "dpo") as the run layer builds them from the smoke profile, with the
    loop as these unit tests drive it (no warm-up, no periodic saves, seed 0, no truncation) and ``overrides``."""
    import dataclasses

    from dpo_lab.run import pipeline

    make = {"sft": pipeline.sft_args, "dpo": pipeline.dpo_args}[kind]
    base = dict(warmup_steps=0, save_every=0, seed=0, max_length=None)
    return dataclasses.replace(make(dpo_lab.get_config("smoke"), progress=False), **{**base, **overrides})


def make_smoke_run(run_dir, betas=()):
    """A smoke-profile run folder: 01_data and 02_sft, then stage 03 at each beta given (seconds, not minutes)."""
    from dpo_lab.run.pipeline import run_dpo_stage, run_sft_stage
    from dpo_lab.run.prepare import prepare_data, save_prepared_data

    save_prepared_data(prepare_data(dpo_lab.get_config("smoke", run_dir=str(run_dir))))
    run_sft_stage(run_dir, progress=False)
    for beta in betas:
        run_dpo_stage(run_dir, beta=beta, progress=False)
    return run_dir


def count_calls(monkeypatch, target, method: str) -> dict:
    """Count calls of target.method (e.g. one clip_grad_norm_ per optimizer step)."""
    original = getattr(target, method)
    count = {"n": 0}

    def wrapper(*a, **k):
        count["n"] += 1
        return original(*a, **k)

    monkeypatch.setattr(target, method, wrapper)
    return count


class Interrupted(Exception):
    """Raised by interrupt_after: a run killed in the middle of a step."""


def interrupt_after(monkeypatch, target, method: str, calls: int):
    """target.method raises Interrupted from call `calls + 1` on: a kill in the middle of a run."""
    original = getattr(target, method)
    count = {"n": 0}

    def wrapper(*a, **k):
        count["n"] += 1
        if count["n"] > calls:
            raise Interrupted
        return original(*a, **k)

    monkeypatch.setattr(target, method, wrapper)
