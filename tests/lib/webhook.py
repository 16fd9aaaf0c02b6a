"""A local webhook receiver for tests: records every request on 127.0.0.1.

    from lib.webhook import WebhookReceiver
    with WebhookReceiver() as hook:              # hook.url == "http://127.0.0.1:PORT/hooks/T000/B000/secret"
        ... run the job with FACTORY_RELEASE_WEBHOOK_URL=hook.url ...
        hook.posts()      # [{"method", "path", "headers", "body", "json"}]

statuses=[500, 200] answers the first requests with those statuses (then
200), like Slack's "ok" for a good post.
"""
import http.server
import json
import threading


class WebhookReceiver:
    def __init__(self, path="/hooks/T000/B000/0123456789abcdefSECRET", statuses=None):
        self.path = path
        self.statuses = list(statuses or [])
        self._posts = []
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        self.url = None

    def start(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                try:
                    parsed = json.loads(body.decode("utf-8")) if body else None
                except (ValueError, UnicodeDecodeError):
                    parsed = None
                with outer._lock:
                    outer._posts.append({"method": self.command, "path": self.path,
                                         "headers": {k.lower(): v for k, v in self.headers.items()},
                                         "body": body, "json": parsed})
                    status = outer.statuses.pop(0) if outer.statuses else 200
                reply = b"ok" if status == 200 else b"error"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_POST = _any
            do_PUT = _any
            do_GET = _any

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)
        self._thread.start()
        self.url = "http://127.0.0.1:%d%s" % (self._server.server_address[1], self.path)
        return self

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def posts(self):
        with self._lock:
            return list(self._posts)
