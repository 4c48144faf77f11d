"""A fake OpenAI-compatible chat endpoint on 127.0.0.1 for the judge's tests.

Each request is logged (its judgment key from the X-Judgment-Key header, the aspect read from the
criteria text, the images it carried) and answered from a per-key script of actions, else with the
default rating of its aspect:
    ("reply", text)       200 with `text` as the assistant's message
    ("status", code)      an error status with an OpenAI-style error body
    ("sleep", seconds)    wait, then answer with the next action (or the default): the client times out
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def rating(score: int, reason: str = "fine") -> str:
    return json.dumps({"score": score, "reason": reason})


class FakeJudgeServer:
    def __init__(self, default: dict[str, int] | None = None, delay_s: float = 0.0, rate=None):
        self.default = default or {"concept": 3, "prompt": 2}
        self.rate = rate  # entry -> score, instead of the aspect's default (a rating that follows the image)
        self.delay_s = delay_s  # every request, before its answer (a slow judge, for the kill test)
        self.script: dict[str, deque] = defaultdict(deque)
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers.get("X-Judgment-Key", "")
                content = body["messages"][-1]["content"]
                text = next(part["text"] for part in content if part["type"] == "text")
                entry = {
                    "key": key,
                    "aspect": "concept" if "first image is a photo" in text else "prompt",
                    "images": [part["image_url"]["url"] for part in content if part["type"] == "image_url"],
                    "text": text,
                    "model": body.get("model"),
                }
                with server.lock:
                    server.log.append(entry)
                    actions = server.script.get(key)
                    action = actions.popleft() if actions else None
                time.sleep(server.delay_s)
                if action is not None and action[0] == "sleep":
                    time.sleep(action[1])
                    with server.lock:
                        action = actions.popleft() if actions else None
                if action is not None and action[0] == "status":
                    return self.answer(action[1], {"error": {"message": f"fake {action[1]}", "type": "fake"}})
                content_text = (
                    action[1]
                    if action is not None
                    else rating(server.rate(entry) if server.rate else server.default[entry["aspect"]])
                )
                choice = {
                    "index": 0,
                    "message": {"role": "assistant", "content": content_text},
                    "finish_reason": "stop",
                }
                self.answer(
                    200,
                    {
                        "id": "fake",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model"),
                        "choices": [choice],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

            def answer(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeJudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def keys(self) -> list[str]:
        with self.lock:
            return [entry["key"] for entry in self.log]
