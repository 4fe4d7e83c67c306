#!/usr/bin/env python3
"""Latency probe for tests/bench/smtp-throughput.

`send`: submits --count small messages to 127.0.0.1:--port, one every --interval seconds, each on
its own connection, with a unique X-Probe-Id; records for each the wall-clock time just before the
connection was opened (so submission, queueing and onward delivery are all inside the measurement).
`report`: matches those ids against the messages an aiosmtpd sink (tests/fixtures/sink.py) stored,
whose envelope line carries the arrival time, and prints latency percentiles as JSON.
"""

import argparse
import json
import os
import smtplib
import sys
import time


def send(args):
    sent = {}
    failures = 0
    for n in range(args.count):
        if args.stop_file and os.path.exists(args.stop_file):
            break
        probe_id = "%s-%d" % (args.tag, n)
        started = time.time()
        message = (
            "From: <probe@origin.test>\r\nTo: <%s>\r\nSubject: probe %s\r\nX-Probe-Id: %s\r\n"
            "Message-ID: <%s@probe.test>\r\n\r\nlatency probe\r\n" % (args.to, probe_id, probe_id, probe_id)
        )
        try:
            with smtplib.SMTP("127.0.0.1", args.port, local_hostname="probe.test", timeout=20) as smtp:
                smtp.sendmail("probe@origin.test", [args.to], message.encode())
            sent[probe_id] = started
        except (smtplib.SMTPException, OSError):
            failures += 1
        pause = args.interval - (time.time() - started)
        if pause > 0:
            time.sleep(pause)
    with open(args.out, "w") as out:
        json.dump({"sent": sent, "failures": failures}, out)


def percentile(sorted_values, fraction):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(fraction * (len(sorted_values) - 1)))))
    return sorted_values[index]


def report(args):
    with open(args.sent) as file:
        sent = json.load(file)["sent"]
    arrived = {}
    for name in os.listdir(args.sink_dir):
        if not name.endswith(".msg") or name.startswith("."):
            continue
        with open(os.path.join(args.sink_dir, name), "rb") as file:
            meta = json.loads(file.readline())
            head = file.read(4096).decode("utf-8", "replace")
        for line in head.split("\r\n"):
            if line.lower().startswith("x-probe-id:"):
                probe_id = line.split(":", 1)[1].strip()
                if probe_id in sent:
                    arrived[probe_id] = meta["received_at"]
    latencies = sorted((arrived[i] - sent[i]) * 1000.0 for i in arrived)
    print(json.dumps({
        "sent": len(sent),
        "arrived": len(latencies),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("send")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--count", type=int, default=200)
    s.add_argument("--interval", type=float, default=0.1)
    s.add_argument("--to", default="probe@probe.test")
    s.add_argument("--tag", default="p")
    s.add_argument("--out", required=True)
    s.add_argument("--stop-file", help="stop sending once this file exists")
    r = commands.add_parser("report")
    r.add_argument("--sent", required=True)
    r.add_argument("--sink-dir", required=True)
    args = parser.parse_args()
    send(args) if args.command == "send" else report(args)


if __name__ == "__main__":
    sys.exit(main())
