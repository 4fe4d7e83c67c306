"""Independent count of MIME leaf parts, for tests/torture_corpus.rs.

Usage: python3 mime_leaves.py [--crlf] FILE...
Prints one JSON object per file: {"file", "leaves", "attached_messages", "decoded_bytes", "payloads"}, where
"payloads" holds, for each leaf, its decoded content (transfer encoding removed) and its body as it stands
in the message, both base64-encoded.

Python's email package is a second, unrelated MIME parser: where it and mail-parser agree on the number
of leaf parts, no part was lost. A leaf is a part that is not a multipart; an attached message
(message/rfc822 and friends) counts as one part itself plus the leaves of the message inside it, which is
how portcullis-scan lists them. --crlf turns every bare LF into CRLF first (mail arrives with CRLF).
"""

import base64
import email
import email.policy
import json
import sys


def b64(data):
    return base64.b64encode(data).decode("ascii")


def walk(part, counts):
    if part.is_multipart():
        if part.get_content_maintype() == "message":
            counts["leaves"] += 1
            counts["attached_messages"] += 1
        for child in part.get_payload():
            walk(child, counts)
        return
    counts["leaves"] += 1
    payload = part.get_payload(decode=True)
    if payload is not None:
        counts["decoded_bytes"] += len(payload)
        body = part.get_payload(decode=False)
        if isinstance(body, str):
            # The parser keeps undecodable bytes as surrogates; a few bodies come back as real text.
            try:
                body = body.encode("ascii", "surrogateescape")
            except UnicodeEncodeError:
                body = body.encode("utf-8", "surrogateescape")
        counts["payloads"].append([b64(payload), b64(body or b"")])


def main(argv):
    crlf = "--crlf" in argv
    for path in (a for a in argv if a != "--crlf"):
        with open(path, "rb") as f:
            raw = f.read()
        if crlf:
            raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        counts = {"file": path, "leaves": 0, "attached_messages": 0, "decoded_bytes": 0, "payloads": []}
        walk(message, counts)
        print(json.dumps(counts))


if __name__ == "__main__":
    main(sys.argv[1:])
