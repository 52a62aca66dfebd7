"""A fault-injecting OpenAI-compatible ``/chat/completions`` endpoint on loopback, for the answer chain's
tests and benchmark: each request takes the next behaviour of a script (then the default one).

Behaviours: ``ok`` (an answer, streamed when asked), ``slow`` (``delay_s`` first), ``500``, ``429``, ``400``,
``malformed`` (200 with a body that is not JSON), ``cut`` (a stream closed mid-way; a JSON body closed
before its end), ``hang`` (no answer until the server closes).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_ANSWER = "Items can be returned within 30 days of delivery [1]."


class FaultServer:
    def __init__(self, default: str = "ok", answer: str = DEFAULT_ANSWER, delay_s: float = 0.5):
        self.default = default
        self.answer = answer
        self.delay_s = delay_s
        self.retry_after: str | None = None  # the Retry-After header of a 429 (none by default)
        self.requests: list[dict] = []
        self._script: deque[str] = deque()
        self._closing = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                behaviour = outer._next()
                outer.requests.append({"path": self.path, "body": body, "behaviour": behaviour})
                outer._respond(self, behaviour, body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def script(self, *behaviours: str) -> FaultServer:
        """The next requests' behaviours, in order; ``requests`` starts afresh."""
        self._script = deque(behaviours)
        self.requests = []
        return self

    def _next(self) -> str:
        return self._script.popleft() if self._script else self.default

    def _respond(self, handler: BaseHTTPRequestHandler, behaviour: str, body: dict) -> None:
        if behaviour == "hang":
            self._closing.wait(30)
            return
        if behaviour == "slow":
            self._closing.wait(self.delay_s)
            behaviour = "ok"
        if behaviour in ("500", "429", "400"):
            retry_after = self.retry_after if behaviour == "429" else None
            self._send(handler, int(behaviour), b'{"error": "injected"}', retry_after)
        elif behaviour == "malformed":
            self._send(handler, 200, b'{"choices": [{"message": {"content": "tru')
        elif body.get("stream"):
            self._stream(handler, cut=behaviour == "cut")
        elif behaviour == "cut":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", "1000")
            handler.end_headers()
            handler.wfile.write(b'{"choices": [')
            handler.close_connection = True
        else:
            payload = {
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.answer}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112},
            }
            self._send(handler, 200, json.dumps(payload).encode())

    @staticmethod
    def _send(handler, status: int, payload: bytes, retry_after: str | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        if retry_after is not None:
            handler.send_header("Retry-After", retry_after)
        handler.end_headers()
        handler.wfile.write(payload)

    def _stream(self, handler, cut: bool) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        words = self.answer.split(" ")
        for i, word in enumerate(words):
            if cut and i == len(words) // 2:
                return  # the connection closes: no [DONE]
            chunk = {"choices": [{"index": 0, "delta": {"content": word if i == 0 else " " + word}}]}
            handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            handler.wfile.flush()
        usage = {"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": len(words)}}
        handler.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        handler.wfile.flush()

    def close(self) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
