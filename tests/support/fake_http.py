"""A local HTTP file server for download tests: ranges, broken connections, wrong answers on demand."""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeServer:
    """A local HTTP server serving `files`, recording what was asked and sent."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.honour_range = True
        self.fail_after: list[int] = []  # per request, in order: send only this many body bytes
        self.content_range_shift = 0  # answer ranges with a wrong start
        self.delay = 0.0
        self.send_length = True
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                record = {"path": self.path, "range": self.headers.get("Range"), "sent": 0}
                server.requests.append(record)
                if server.delay:
                    time.sleep(server.delay)
                name = self.path.rsplit("/", 1)[-1]
                data = server.files.get(name)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start, status = 0, 200
                match = re.fullmatch(r"bytes=(\d+)-", record["range"] or "")
                if match and server.honour_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                if status == 206:
                    shown = start + server.content_range_shift
                    self.send_header("Content-Range", f"bytes {shown}-{len(data) - 1}/{len(data)}")
                if server.send_length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.fail_after:
                    body = body[: server.fail_after.pop(0)]
                self.wfile.write(body)
                record["sent"] = len(body)
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/models"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
