"""One OpenAI-compatible ``/chat/completions`` client, stdlib only: what the LLM judge and the served model share.

It speaks to any server of that API — OpenAI, vLLM, llama.cpp, or ``transformers serve`` running one
of the lab's checkpoints (:mod:`dpo_lab.evaluation.serving`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class ChatClient:
    """``ChatClient("http://127.0.0.1:8000/v1", "model-id").chat(messages)`` → the reply's text."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 60.0):
        if not base_url or not model:
            raise ValueError("a chat client needs base_url (e.g. https://api.openai.com/v1) and model")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout

    def chat(self, messages: list[dict[str, str]], **options: Any) -> str:
        """POST the messages (and options such as ``temperature``, ``max_tokens``); return the first choice's text."""
        body = json.dumps({"model": self.model, "messages": messages, **options}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as e:  # the server's own explanation, not just "500"
            detail = e.read().decode("utf-8", errors="replace")[:300]
            raise RuntimeError(f"{self.url}: HTTP {e.code} {e.reason}: {detail}") from None
        try:
            return payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"{self.url}: not a chat-completions response: {str(payload)[:120]}") from None
