"""Peer for tests/bench/decompose-throughput: Python's email package doing comparable work.

Usage: python3 decompose_peer.py [--rounds N] DIR...
For each message: parse with policy.default, walk every part, decode every leaf payload (transfer encoding
and, for text, the charset; HTML reduced to text by dropping tags), then match the same terms as the Rust
example (firmware/scan/examples/throughput.rs) case-insensitively in subject and texts. Messages are read
into memory first; only parsing, decoding and matching are timed. The last line is JSON.
"""

import email
import email.policy
import json
import os
import re
import sys
import time

RULES = {
    "money": ["wire transfer", "credit card", "mortgage", "acc?unt number", "$$$"],
    "pills": ["viagra", "pharmacy", "weight loss"],
    "marketing": ["click here", "unsubscribe", "limited time", "act now", "free*offer"],
}


def term_regex(term):
    """Same term language as the content rules: blanks match any whitespace run, * a run of non-blanks,
    ? one non-blank."""
    out = []
    for ch in term:
        if ch.isspace():
            if not out or out[-1] != r"\s+":
                out.append(r"\s+")
        elif ch == "*":
            out.append(r"\S{0,256}")
        elif ch == "?":
            out.append(r"\S")
        else:
            out.append(re.escape(ch))
    return "".join(out)


PATTERNS = {name: re.compile("|".join(term_regex(t) for t in terms), re.IGNORECASE) for name, terms in RULES.items()}
TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)


def texts(message):
    for part in message.walk():
        if part.is_multipart():
            continue
        try:
            if part.get_content_maintype() == "text":
                content = part.get_content()
                if part.get_content_subtype() == "html":
                    content = TAG.sub(" ", content)
                yield content
            else:
                part.get_payload(decode=True)
        except (LookupError, ValueError, AssertionError):
            # Unknown charset or broken encoding: fall back to the raw decoded bytes, as a scanner would.
            payload = part.get_payload(decode=True) or b""
            yield payload.decode("latin-1")


def scan(raw):
    message = email.message_from_bytes(raw, policy=email.policy.default)
    sources = [str(message.get("subject", ""))]
    sources.extend(texts(message))
    parts = sum(1 for p in message.walk() if not p.is_multipart())
    hit = any(p.search(s) for p in PATTERNS.values() for s in sources)
    return parts, hit


def main(argv):
    rounds = 3
    if "--rounds" in argv:
        i = argv.index("--rounds")
        rounds = int(argv[i + 1])
        del argv[i : i + 2]
    files = sorted(os.path.join(d, f) for d in argv for f in os.listdir(d) if f.endswith(".txt"))
    messages = []
    for path in files:
        with open(path, "rb") as f:
            messages.append(f.read())
    size = sum(map(len, messages))
    started = time.perf_counter()
    for _ in range(rounds):
        parts = hits = 0
        for raw in messages:
            p, hit = scan(raw)
            parts += p
            hits += hit
    seconds = (time.perf_counter() - started) / rounds
    mb_per_s = size / 1e6 / seconds
    msgs_per_s = len(messages) / seconds
    print(
        f"python email (policy.default): {len(messages)} messages, {size / 1e6:.1f} MB, {parts} parts, "
        f"{hits} with a policy hit: {seconds:.3f} s per round, {mb_per_s:.1f} MB/s, {msgs_per_s:.0f} messages/s "
        f"(mean of {rounds} rounds)"
    )
    print(json.dumps({"messages": len(messages), "bytes": size, "parts": parts, "hits": hits, "seconds": seconds,
                      "mb_per_s": mb_per_s, "msgs_per_s": msgs_per_s}))


if __name__ == "__main__":
    main(sys.argv[1:])
