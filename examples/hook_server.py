#!/usr/bin/env python3
"""A minimal operator web server for mediaserver REST hooks (copy and adapt).

Run:  python3 examples/hook_server.py --port 8090 [--secret k3y]
Then: mediaserver apps update defaultApp --url http://127.0.0.1:8090/MyAPI
      mediaserver apps add-rest-method defaultApp StreamKeepAliveEvent
and enable [hooks.keep_alive] in the server config.

Policy shown here:
  * connect / publishStream / playStream: allow, except names in BLOCKED (403 with a reason);
  * StreamKeepAliveEvent: 403 (terminates that stream) for sessions listed in /kick;
  * everything else (StreamStatusEvent, unPublishStream, stopStream): log and 200.
  POST /kick {"mediaSessionId": "..."} marks a session to be stopped at its next keep-alive.
"""
import argparse, hashlib, hmac, json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOCKED = {"forbidden"}
KICK = set()
SECRET = None


class Hooks(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        method = self.path.rstrip("/").rsplit("/", 1)[-1]
        if method == "kick":  # operator's own endpoint, not a hook: no signature
            KICK.add(json.loads(raw)["mediaSessionId"])
            return self.reply(200, {})
        if SECRET:
            want = "sha256=" + hmac.new(SECRET, raw, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(want, self.headers.get("X-Signature", "")):
                return self.reply(401, {"reason": "bad signature"})
        body = json.loads(raw or b"{}")
        print(method, json.dumps(body), flush=True)
        if method in ("connect", "publishStream", "playStream") and body.get("name") in BLOCKED:
            return self.reply(403, {"status": 403, "reason": "stream %s is blocked" % body["name"]})
        if method == "StreamKeepAliveEvent" and body.get("mediaSessionId") in KICK:
            return self.reply(403, {"status": 403, "reason": "kicked"})
        return self.reply(200, {})

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--secret")
    a = ap.parse_args()
    SECRET = a.secret.encode() if a.secret else None
    ThreadingHTTPServer(("127.0.0.1", a.port), Hooks).serve_forever()
