#!/usr/bin/env python3
"""Writes the seed corpus: valid and near-valid bus frames (u32 BE L, u32 BE H, header JSON, payload).
Run from fuzz/: python3 make-seeds.py. libFuzzer adds what it finds to these directories."""
import json, os, struct

def frame(header, payload=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">II", 4 + len(h) + len(payload), len(h)) + h + payload

event = json.dumps({"type": "log", "job_id": "j1", "seq": 3, "worker_id": "w1", "stream": "stdout", "lines": ["hi"], "time": "2026-01-01T00:00:00Z"}).encode()
seeds = {
    "FuzzBusFrames": {
        "connect-pub": b"\x07" + frame({"op": "connect", "token": "t", "proto": 1}) + frame({"op": "pub", "subject": "a.b", "reply": "_INBOX.x.1", "headers": {"k": "v"}}, b"payload"),
        "sub-unsub": b"\x01" + frame({"op": "connect", "token": "t"}) + frame({"op": "sub", "subject": "kiln.>", "sid": "1", "queue": "workers", "max": 3}) + frame({"op": "unsub", "sid": "1", "max": 1}),
        "ping-pong": b"\x3f" + frame({"op": "ping"}) + frame({"op": "pong"}),
        "bad-header": b"\x02" + struct.pack(">II", 12, 8) + b'{"op":1}',
        "escapes": b"\x05" + frame({"op": "connect", "token": "t\u00e9\\\"\n", "name": "\ud83d\ude00"}),
    },
    "FuzzSubmissionBodies": {
        "json": b"\x00" + json.dumps({"nonce": "abcd", "source_data": "H4sIAAAAAAAA/w==", "source_name": "p.tar.gz", "x": [1, {"y": None}]}).encode(),
        "json-escapes": b"\x04" + b'{"nonce":"ab\\u00e9","source_data":"H4sI\\/\\u0041AA\\nAA=="}',
        "json-bad": b"\x02" + b'{"nonce": 12, "source_data": "@@"}',
        "form": b"\x01" + b'--B\r\nContent-Disposition: form-data; name="nonce"\r\n\r\nabcd\r\n--B\r\nContent-Disposition: form-data; name="source"; filename="a.zip"\r\n\r\nPK\x03\x04\r\n--B\r\n--B--\r\n',
        "form-truncated": b"\x03" + b'--B\r\nContent-Disposition: form-data; name="source"\r\n\r\nPK\r\n--',
    },
    "FuzzGatewayMessages": {
        "event": frame({"op": "msg", "subject": "kiln.build.j1.events.w1", "sid": "1"}, event),
        "result-chunk": frame({"op": "msg", "subject": "kiln.build.j1.result.w1", "sid": "1", "reply": "_INBOX.w1.a.1",
                               "headers": {"index": "0", "count": "2", "size": "15", "sha256": "0" * 64, "worker_id": "w1"}}, b"0123456789"),
        "result-overflow": frame({"op": "msg", "subject": "kiln.build.j1.result.w1", "sid": "1",
                                  "headers": {"index": str(2**63 - 2), "count": str(2**63 - 1), "size": str(2**63 - 1), "sha256": "0" * 64}}, b"x"),
        "source-request": frame({"op": "msg", "subject": "kiln.build.j1.source.w1", "sid": "1", "reply": "_INBOX.w1.a.2", "headers": {"index": str(2**63 - 1)}}),
        "dispatch-reply": frame({"op": "msg", "subject": "_INBOX.g.1", "sid": "1"}, json.dumps({"accepted": True, "worker_id": "w1"}).encode()),
    },
}
for target, files in seeds.items():
    os.makedirs(f"corpus/{target}", exist_ok=True)
    for name, data in files.items():
        with open(f"corpus/{target}/seed-{name}", "wb") as f:
            f.write(data)
