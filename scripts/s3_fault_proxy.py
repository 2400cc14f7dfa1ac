#!/usr/bin/env python3
"""An HTTP proxy in front of an S3 server that injects faults, for tests.

    python3 scripts/s3_fault_proxy.py --upstream http://127.0.0.1:5000 \\
        --seed 7 --error-rate 0.1 --slow-rate 0.03 --timeout-rate 0.01

It listens on 127.0.0.1 (port 0 by default: a free port) and prints the port
on the first line of stdout. Each request is read in full (Content-Length or
chunked body), then, by a seeded random draw:

  error                  answered 503 SlowDown (an S3 XML error), not forwarded
  timeout                not forwarded; the connection is held for
                         --timeout-hold-ms (longer than the client's request
                         timeout), then closed without an answer
  timeout_after_forward  forwarded, so the server acts on it, but the answer
                         is withheld as for `timeout`: the client cannot tell
                         whether its write happened
  reset_after_forward    forwarded, then the connection is closed at once
                         without an answer (clients take this for a request
                         that never arrived, and repeat it)
  slow                   forwarded after a delay of --slow-min-ms..--slow-max-ms
  (otherwise)            forwarded at once

Requests are forwarded verbatim: same method, target, headers (the Host
header included, which SigV4 signs) and body bytes. Answers are returned with
the server's status, headers and body (a chunked body is passed on with a
Content-Length).

`GET /__faults` answers the counters as JSON and is never faulted. With
--exit-on-stdin-eof the proxy exits when its stdin closes, so a test that dies
does not leave it running. Python standard library only.
"""

import argparse
import http.client
import json
import random
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULT_KINDS = (
    "error", "timeout", "timeout_after_forward", "reset_after_forward", "slow",
)

# Hop-by-hop headers are the proxy's own business on each side.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
}

SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code>"
    b"<Message>Please reduce your request rate.</Message>"
    b"<RequestId>fault-proxy</RequestId></Error>"
)


class Faults:
    """The seeded draw and the counters, shared by the handler threads."""

    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "forwarded": 0, **{k: 0 for k in FAULT_KINDS}}

    def draw(self):
        """The fault for the next request (None for none) and, for `slow`,
        the delay in seconds."""
        a = self.args
        with self.lock:
            self.counts["requests"] += 1
            r = self.rng.random()
            delay = self.rng.uniform(a.slow_min_ms, a.slow_max_ms) / 1000
            for kind, rate in (
                ("error", a.error_rate),
                ("timeout", a.timeout_rate),
                ("timeout_after_forward", a.timeout_after_forward_rate),
                ("reset_after_forward", a.reset_after_forward_rate),
                ("slow", a.slow_rate),
            ):
                if r < rate:
                    self.counts[kind] += 1
                    return kind, delay
                r -= rate
            return None, 0.0

    def count(self, key):
        with self.lock:
            self.counts[key] += 1

    def snapshot(self):
        with self.lock:
            return dict(self.counts)


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, as S3 clients expect; BaseHTTPRequestHandler then also
    # answers `Expect: 100-continue` itself.
    protocol_version = "HTTP/1.1"
    server_version = "s3-fault-proxy"

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        if self.server.faults.args.verbose:
            super().log_message(format, *args)

    def log_fault(self, kind):
        target = self.path.split("?", 1)[0]
        print(f"fault {kind}: {self.command} {target}", file=sys.stderr, flush=True)

    def read_body(self):
        """The request body exactly as sent: Content-Length bytes, or the raw
        chunked encoding up to and including its trailer section."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("connection closed inside a chunked body")
                raw += line
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    break
                chunk = self.rfile.read(size + 2)  # data and its CRLF
                if len(chunk) != size + 2:
                    raise ConnectionError("connection closed inside a chunk")
                raw += chunk
            while True:  # trailer fields, then the final empty line
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("connection closed inside a chunked trailer")
                raw += line
                if line in (b"\r\n", b"\n"):
                    break
            return bytes(raw)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(body) != length:
            raise ConnectionError("connection closed inside the body")
        return body

    def handle_request(self):
        faults = self.server.faults
        if self.command == "GET" and self.path == "/__faults":
            self.answer(200, [("Content-Type", "application/json")],
                        json.dumps(faults.snapshot()).encode())
            return
        body = self.read_body()
        kind, delay = faults.draw()
        if kind is not None:
            self.log_fault(kind)
        if kind == "error":
            self.answer(503, [("Content-Type", "application/xml")], SLOW_DOWN_BODY)
            return
        if kind == "timeout":
            self.hold_and_drop()
            return
        if kind == "slow":
            time.sleep(delay)
        status, headers, answer = self.forward(body)
        faults.count("forwarded")
        if kind == "timeout_after_forward":
            self.hold_and_drop()
            return
        if kind == "reset_after_forward":
            self.drop()
            return
        self.answer(status, headers, answer)

    def forward(self, body):
        """Sends the request upstream verbatim; returns its answer."""
        upstream = self.server.upstream
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in ("connection", "keep-alive", "proxy-connection"):
                    conn.putheader(name, value)
            conn.endheaders()
            if body:
                conn.send(body)
            response = conn.getresponse()
            answer = response.read()  # de-chunked; empty for HEAD
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            return response.status, headers, answer
        finally:
            conn.close()

    def answer(self, status, headers, body):
        self.send_response_only(status)
        has_length = False
        for name, value in headers:
            has_length |= name.lower() == "content-length"
            self.send_header(name, value)
        # The server's Content-Length stays (for HEAD it is the object's
        # size); a chunked or close-delimited body gets one.
        has_body = self.command != "HEAD" and status not in (204, 304)
        if not has_length and has_body:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if has_body:
            self.wfile.write(body)
        self.wfile.flush()

    def hold_and_drop(self):
        """Holds the connection past the client's timeout, then closes it
        without an answer."""
        time.sleep(self.server.faults.args.timeout_hold_ms / 1000)
        self.drop()

    def drop(self):
        """Closes the connection without an answer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_any(self):
        try:
            self.handle_request()
        except (ConnectionError, ValueError) as e:
            print(f"dropping a connection: {e!r}", file=sys.stderr, flush=True)
            self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="the S3 server, http://host:port")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share answered 503")
    parser.add_argument("--timeout-rate", type=float, default=0.0,
                        help="share held and dropped without being forwarded")
    parser.add_argument("--timeout-after-forward-rate", type=float, default=0.0,
                        help="share forwarded, then held and dropped without the answer")
    parser.add_argument("--reset-after-forward-rate", type=float, default=0.0,
                        help="share forwarded, then dropped at once without the answer")
    parser.add_argument("--slow-rate", type=float, default=0.0, help="share forwarded late")
    parser.add_argument("--slow-min-ms", type=float, default=200.0)
    parser.add_argument("--slow-max-ms", type=float, default=800.0)
    parser.add_argument("--timeout-hold-ms", type=float, default=5000.0,
                        help="how long a timed-out request is held; longer than the client's timeout")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument("--exit-on-stdin-eof", action="store_true",
                        help="exit when stdin closes (so a test that dies does not leave it running)")
    args = parser.parse_args()
    rates = (args.error_rate, args.timeout_rate, args.timeout_after_forward_rate,
             args.reset_after_forward_rate, args.slow_rate)
    if any(r < 0 for r in rates) or sum(rates) > 1:
        parser.error("fault rates must be >= 0 and sum to at most 1")

    upstream = urllib.parse.urlsplit(args.upstream)
    if upstream.scheme != "http" or not upstream.hostname:
        parser.error("--upstream must be http://host:port")
    server = Server(("127.0.0.1", args.port), Handler)
    server.upstream = upstream
    server.faults = Faults(args)
    print(server.server_address[1], flush=True)

    if not args.exit_on_stdin_eof:
        server.serve_forever()
        return
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
