#!/usr/bin/env python3
"""An HTTP proxy in front of a Kinesis server (kinesalite) that throttles, for tests.

    python3 scripts/kinesis_throttle_proxy.py --upstream http://127.0.0.1:4567 \\
        --seed 7 --get-records-per-second 4 --throttle-rate 0.2 --error-rate 0.05

It listens on 127.0.0.1 (a free port, printed on the first line of stdout)
and forwards every request verbatim (kinesalite does not enforce the
per-shard read limits). GetRecords calls beyond --get-records-per-second
(across all shards: a stricter limit than Kinesis's 5 per second per shard)
and a seeded random --throttle-rate of GetRecords and GetShardIterator calls
are answered 400 ProvisionedThroughputExceededException; --error-rate of
them 500 InternalFailure. `GET /__faults` answers the counters as JSON.
With --exit-on-stdin-eof the proxy exits when its stdin closes. Python
standard library only.
"""

import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--get-records-per-second", type=float, default=4.0)
    parser.add_argument("--throttle-rate", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args()
    upstream = urllib.parse.urlparse(args.upstream)
    rng = random.Random(args.seed)
    lock = threading.Lock()
    counts = {"requests": 0, "forwarded": 0, "rate_limited": 0, "throttled": 0, "errors": 0}
    recent = []  # times of recent forwarded GetRecords calls

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def answer(self, status, body, content_type="application/x-amz-json-1.1"):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            with lock:
                body = json.dumps(counts)
            self.answer(200, body, "application/json")

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            target = self.headers.get("X-Amz-Target", "")
            operation = target.rsplit(".", 1)[-1]
            fault = None
            with lock:
                counts["requests"] += 1
                if operation in ("GetRecords", "GetShardIterator"):
                    draw = rng.random()
                    if draw < args.error_rate:
                        fault = "errors"
                    elif draw < args.error_rate + args.throttle_rate:
                        fault = "throttled"
                if fault is None and operation == "GetRecords":
                    now = time.monotonic()
                    while recent and recent[0] < now - 1.0:
                        recent.pop(0)
                    if len(recent) >= args.get_records_per_second:
                        fault = "rate_limited"
                    else:
                        recent.append(now)
                if fault:
                    counts[fault] += 1
                else:
                    counts["forwarded"] += 1
            if fault == "errors":
                self.answer(500, json.dumps({"__type": "InternalFailure", "message": "injected"}))
                return
            if fault:
                self.answer(400, json.dumps({
                    "__type": "ProvisionedThroughputExceededException",
                    "message": "Rate exceeded for shard (injected)",
                }))
                return
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
            conn.request("POST", self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            self.send_response(response.status)
            for k, v in response.getheaders():
                if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            conn.close()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    if args.exit_on_stdin_eof:
        def watch():
            sys.stdin.read()
            server.shutdown()
        threading.Thread(target=watch, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
