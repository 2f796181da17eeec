#!/usr/bin/env python3
"""Buckets `perf script` samples of a connector by what the time was spent on.

Reads `perf script --no-inline -F comm,tid,time,ip,sym,dso` output (call graphs, leaf first) on stdin
and prints two tables: the share of samples per category, and the top functions by self time.

A sample's category is decided by its innermost frame that matches a rule below, so time spent in
the allocator, memcpy or the kernel is charged to the work that asked for it (e.g. `malloc` called
from `serde_json::de` counts as JSON parsing, `pwrite` called from SQLite as SQL).
"""

import re
import sys
from collections import Counter

# (category, regular expression on the demangled symbol), most specific first.
RULES = [
    ("JSON parse (serde_json::de)", r"serde_json::de::|serde_json::value::de::|as serde::de::Deserialize"),
    ("JSON serialize (serde_json::ser)", r"serde_json::ser::|serde_json::value::ser::|as serde::ser::Serialize|serde_json::value::Value as core::fmt::Display"),
    ("@context resolution (connector::contexts)", r"civitas_connector::contexts::"),
    ("expansion (ngsild::expand)", r"civitas_ngsild::expand::"),
    ("validation/decode (ngsild::canonical::decode_*, geo, names)", r"civitas_ngsild::canonical::decode|civitas_ngsild::geo::|civitas_ngsild::names::"),
    ("canonical encode (ngsild::canonical::encode_*)", r"civitas_ngsild::canonical::encode"),
    ("compaction/render (ngsild::render, compact_*)", r"civitas_ngsild::render::|ActiveContext::compact"),
    ("model update ops (ngsild::update)", r"civitas_ngsild::update::"),
    ("SQL: SQLite engine (sqlite3*)", r"^sqlite3|^_?sqlite3"),
    ("SQL: driver (sqlx)", r"sqlx_core::|sqlx_sqlite::|sqlx_postgres::|^sqlx::|^flume::|flume::IntoIter"),
    ("store glue (civitas_store)", r"civitas_store::"),
    ("connector handlers (routes, entities)", r"civitas_connector::"),
    ("HTTP: negotiation/problem (civitas_http)", r"civitas_http::"),
    ("compression (flate2)", r"flate2::|miniz_oxide::"),
    ("logging (tracing)", r"^tracing|tracing_subscriber|tracing_core"),
    ("HTTP server: actix/h1 parsing, routing, response", r"actix_http::|actix_web::|actix_router::|actix_server::|actix_service::|httparse::|^http::"),
    ("async runtime, sockets (tokio, mio)", r"tokio::|mio::|actix_rt::|futures_"),
]
COMPILED = [(name, re.compile(pattern)) for name, pattern in RULES]
HEADER = re.compile(r"^(\S.*?)\s+\d+\s")
FRAME = re.compile(r"^\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$")
HASH = re.compile(r"::h[0-9a-f]{16}$")
OFFSET = re.compile(r"\+0x[0-9a-f]+$")


def clean(symbol):
    symbol = OFFSET.sub("", symbol)
    return HASH.sub("", symbol)


def classify(thread, frames):
    """The category of the innermost frame a rule matches; kernel time is marked as such."""
    # sqlx runs each SQLite connection on a thread of its own, its loop inlined out of sight.
    category = "SQL: driver (sqlx)" if thread.startswith("sqlx-sqlite") else "other"
    for symbol, _dso in frames:
        found = next((name for name, pattern in COMPILED if pattern.search(symbol)), None)
        if found:
            category = found
            break
    return category


SYSCALL = re.compile(r"^(?:__(?:x64|ia32)_sys_|__do_sys_|ksys_)(\w+)$")
INTERRUPT = re.compile(r"^(?:asm_\w+|irqentry_exit\w*|exit_to_user_mode_loop)$")


def kernel_part(frames):
    """For a sample in the kernel: the system call (or interrupt path) it is in, else None."""
    if not frames or "kernel" not in frames[0][1]:
        return None
    for symbol, dso in frames:
        if "kernel" not in dso:
            break
        match = SYSCALL.match(symbol)
        if match:
            return match.group(1)
        if INTERRUPT.match(symbol):
            return "interrupts, preemption, return to user"
    return "other kernel"


def samples(stream):
    """Yields (thread name, frames leaf first) per sample."""
    thread, frames = None, None
    for line in stream:
        if not line.strip():
            if frames is not None:
                yield thread, frames
            frames = None
            continue
        header = HEADER.match(line)
        if header:
            if frames is not None:
                yield thread, frames
            thread, frames = header.group(1), []
            continue
        match = FRAME.match(line)
        if match and frames is not None:
            frames.append((clean(match.group(1)), match.group(2)))
    if frames is not None:
        yield thread, frames


def main():
    categories = Counter()
    in_kernel = Counter()
    kernel_calls = Counter()
    leaves = Counter()
    threads = Counter()
    total = 0
    for thread, frames in samples(sys.stdin):
        if not frames:
            continue
        total += 1
        threads[re.sub(r"[-_]?\d+$", "-N", thread)] += 1
        category = classify(thread, frames)
        categories[category] += 1
        call = kernel_part(frames)
        if call:
            in_kernel[category] += 1
            kernel_calls[call] += 1
        symbol, dso = frames[0]
        leaves[symbol if symbol != "[unknown]" else f"[unknown] ({dso.split('/')[-1]})"] += 1
    if total == 0:
        print("no samples")
        return
    print(f"{total} samples\n")
    print("| share | of which in the kernel | category |\n| ---: | ---: | --- |")
    for name, count in categories.most_common():
        print(f"| {100.0 * count / total:.1f} % | {100.0 * in_kernel[name] / total:.1f} % | {name} |")
    print("\n| share | kernel time by system call |\n| ---: | --- |")
    for name, count in kernel_calls.most_common(12):
        print(f"| {100.0 * count / total:.1f} % | {name} |")
    print("\n| share | thread |\n| ---: | --- |")
    for name, count in threads.most_common():
        print(f"| {100.0 * count / total:.1f} % | {name} |")
    print("\n| self | function |\n| ---: | --- |")
    for name, count in leaves.most_common(20):
        shown = name if len(name) <= 110 else name[:107] + "..."
        print(f"| {100.0 * count / total:.1f} % | `{shown}` |")


if __name__ == "__main__":
    main()
