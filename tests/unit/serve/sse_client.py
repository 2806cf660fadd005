#!/usr/bin/env python3
"""An independent client for the api_server tests (standard library only).

usage: sse_client.py HOST PORT BODY_JSON [TOKEN]

POSTs BODY_JSON to /v1/chat/completions, reads the server-sent events as they arrive and checks
that every event is one "data: <json>" line in the OpenAI chunk shape, that the first chunk
carries the assistant role, that only the last chunk has a finish_reason, and that the stream
ends with "data: [DONE]" and nothing after it. Prints one JSON summary on stdout; on any
violation prints the reason on stderr and exits 1.
"""
import http.client
import json
import sys
import time


def fail(why):
    print("sse_client: " + why, file=sys.stderr)
    sys.exit(1)


def main():
    host, port, body = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    headers = {"Content-Type": "application/json"}
    if len(sys.argv) > 4:
        headers["Authorization"] = "Bearer " + sys.argv[4]
    conn = http.client.HTTPConnection(host, port, timeout=20)
    start = time.monotonic()
    conn.request("POST", "/v1/chat/completions", body=body.encode(), headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        fail("status %d: %s" % (resp.status, resp.read().decode(errors="replace")))
    if resp.getheader("Content-Type") != "text/event-stream":
        fail("Content-Type is %r" % resp.getheader("Content-Type"))
    if resp.getheader("Cache-Control") != "no-cache":
        fail("Cache-Control is %r" % resp.getheader("Cache-Control"))

    events, times = [], []  # the data of each event, and when it was complete
    lines = []
    while True:
        raw = resp.readline()  # http.client undoes the chunked encoding
        if not raw:
            break
        if not raw.endswith(b"\n"):
            fail("the stream ended inside a line: %r" % raw)
        line = raw.decode("utf-8").rstrip("\n")
        if line:
            lines.append(line)
            continue
        if len(lines) != 1 or not lines[0].startswith("data: "):
            fail("an event is not one 'data: ' line: %r" % lines)
        events.append(lines[0][len("data: "):])
        times.append(time.monotonic() - start)
        lines = []
    if lines:
        fail("unterminated event at the end: %r" % lines)
    if not events or events[-1] != "[DONE]":
        fail("the stream does not end with data: [DONE]")
    if "[DONE]" in events[:-1]:
        fail("[DONE] before the end")

    chunks = [json.loads(e) for e in events[:-1]]
    summary = {"chunks": len(chunks), "content": "", "content_chunks": 0, "finish_reason": None, "usage": None,
               "mustdrop": None, "model": None, "error": None, "times": times[:-1]}
    if chunks and "error" in chunks[-1]:
        err = chunks.pop()["error"]
        if not isinstance(err.get("message"), str) or not isinstance(err.get("type"), str):
            fail("malformed error event: %r" % err)
        summary["error"] = err
    ids = set()
    for i, c in enumerate(chunks):
        if "error" in c:
            fail("an error event that is not the last: %r" % c)
        if c.get("object") != "chat.completion.chunk" or not str(c.get("id", "")).startswith("chatcmpl-"):
            fail("not a chunk: %r" % c)
        if not isinstance(c.get("created"), int) or not isinstance(c.get("model"), str):
            fail("bad created/model: %r" % c)
        ids.add(c["id"])
        choices = c.get("choices")
        if not isinstance(choices, list) or len(choices) != 1 or choices[0].get("index") != 0:
            fail("bad choices: %r" % c)
        delta, reason = choices[0].get("delta"), choices[0].get("finish_reason", "missing")
        last = i == len(chunks) - 1 and summary["error"] is None
        if i == 0:
            if delta != {"role": "assistant", "content": ""} or reason is not None:
                fail("the first chunk is not the role chunk: %r" % c)
        elif last:
            if delta != {} or reason not in ("stop", "length") or "mustdrop" not in c:
                fail("bad final chunk: %r" % c)
            summary.update(finish_reason=reason, usage=c.get("usage"), mustdrop=c["mustdrop"], model=c["model"])
        else:
            if set(delta) != {"content"} or not isinstance(delta["content"], str) or reason is not None:
                fail("bad content chunk: %r" % c)
            summary["content"] += delta["content"]
            summary["content_chunks"] += 1
    if len(ids) > 1:
        fail("chunks carry different ids: %r" % ids)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
