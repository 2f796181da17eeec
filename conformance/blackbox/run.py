#!/usr/bin/env python3
"""Black-box tests of a Civitas connector's NGSI-LD provision API (ETSI GS CIM 009 v1.8), over HTTP only.

    python3 conformance/blackbox/run.py --civitas target/debug/civitas     # starts its own connector
    python3 conformance/blackbox/run.py --url http://127.0.0.1:9092        # any running deployment

Safe against a shared, non-empty deployment: every entity id carries a random run id, every query is
scoped by id, idPattern or a per-run type, and everything created is deleted at the end.

Prints one line per failing check, then `N passed, N failed`; exit code 1 if any check failed. Checks
listed in KNOWN are expected to fail (a connector behaviour we disagree with the test about, or a
bug not fixed yet): they are printed and counted separately, and one that passes is reported.

Standard library only (Python 3.11+).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
DEFAULT_VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"
NULL = "urn:ngsi-ld:null"

# check id -> why it is expected to fail. Reported as an expected failure, not as a failure.
# Each is a connector bug this suite found; remove the entry when it is fixed (the run says XPASS).
KNOWN: dict[str, str] = {}


# ----------------------------------------------------------------------------------------- HTTP

class Response:
    def __init__(self, method: str, url: str, status: int, reason: str,
                 headers: list[tuple[str, str]], body: bytes):
        self.method, self.url, self.status, self.reason = method, url, status, reason
        self.header_list = headers
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body
        self._json = ...

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        if self._json is ...:
            try:
                self._json = json.loads(self.body) if self.body.strip() else None
            except ValueError:
                self._json = None
        return self._json

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def brief(self) -> str:
        path = urllib.parse.urlsplit(self.url)
        where = path.path + (f"?{path.query}" if path.query else "")
        text = self.text
        if len(text) > 300:
            text = text[:300] + "…"
        return f"{self.method} {where} -> {self.status} {text}"


def link(url: str) -> str:
    return f'<{url}>; rel="{CONTEXT_REL}"; type="application/ld+json"'


def link_target(value: str | None) -> str | None:
    m = re.match(r"\s*<([^>]*)>", value or "")
    return m.group(1) if m else None


class Client:
    """Raw HTTP against BASE/ngsi-ld/v1; one connection per request (no client-side magic)."""

    def __init__(self, base: str, tenant: str | None = None, timeout: float = 30):
        self.base = base.rstrip("/")
        u = urllib.parse.urlsplit(self.base)
        if u.scheme not in ("http", "https"):
            raise SystemExit(f"--url must be http(s)://host[:port], not {base!r}")
        self.scheme, self.netloc, self.prefix = u.scheme, u.netloc, u.path.rstrip("/")
        self.tenant = tenant
        self.timeout = timeout

    def with_tenant(self, tenant: str | None) -> "Client":
        return Client(self.base, tenant, self.timeout)

    def _conn(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.netloc, timeout=self.timeout)

    def request(self, method: str, path: str, body=None, *, query=None, ctype=None, accept=None,
                link_url=None, headers=None, raw: bytes | None = None, api: bool = True,
                tenant=...) -> Response:
        target = self.prefix + ("/ngsi-ld/v1" if api else "") + path
        if query:
            target += "?" + urllib.parse.urlencode(query, safe=",:", quote_via=urllib.parse.quote)
        hdrs = {}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            hdrs["Content-Type"] = ctype or ("application/ld+json" if isinstance(body, dict)
                                             and "@context" in body else "application/json")
        elif ctype:
            hdrs["Content-Type"] = ctype
        if accept:
            hdrs["Accept"] = accept
        if link_url:
            hdrs["Link"] = link(link_url)
        tenant = self.tenant if tenant is ... else tenant
        if tenant:
            hdrs["NGSILD-Tenant"] = tenant
        hdrs.update(headers or {})
        conn = self._conn()
        try:
            conn.request(method, target, body=data, headers=hdrs)
            r = conn.getresponse()
            payload = r.read()
            return Response(method, self.base + target, r.status, r.reason, r.getheaders(), payload)
        finally:
            conn.close()

    def stream(self, method: str, path: str, head: bytes, fill: int, tail: bytes, ctype: str) -> Response:
        """Sends head + `fill` bytes of "x" + tail, tolerating a server that answers (413) and closes
        before it has read everything."""
        size = len(head) + fill + len(tail)
        block = b"x" * (1 << 20)
        target = self.prefix + "/ngsi-ld/v1" + path
        conn = self._conn()
        try:
            conn.putrequest(method, target)
            conn.putheader("Content-Type", ctype)
            conn.putheader("Content-Length", str(size))
            if self.tenant:
                conn.putheader("NGSILD-Tenant", self.tenant)
            conn.endheaders()
            try:
                conn.send(head)
                while fill > 0:
                    conn.send(block[:fill])
                    fill -= len(block)
                conn.send(tail)
            except (BrokenPipeError, ConnectionResetError):
                pass
            r = conn.getresponse()
            payload = r.read()
            return Response(method, self.base + target, r.status, r.reason, r.getheaders(), payload)
        finally:
            conn.close()

    def follow(self, location: str) -> Response:
        """GET a Location header's target as an HTTP client would: resolved against the base URL,
        the fragment not sent."""
        u = urllib.parse.urlsplit(urllib.parse.urljoin(self.base + "/", location))
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        conn = self._conn()
        try:
            hdrs = {"NGSILD-Tenant": self.tenant} if self.tenant else {}
            conn.request("GET", target, headers=hdrs)
            r = conn.getresponse()
            return Response("GET", self.base + target, r.status, r.reason, r.getheaders(), r.read())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.request("PATCH", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


def quote_id(entity_id: str) -> str:
    return urllib.parse.quote(entity_id, safe=":")


# --------------------------------------------------------------------------------- checks

class Stop(Exception):
    """A required check failed; the rest of this group cannot run meaningfully."""


class Results:
    def __init__(self, verbose: bool):
        self.passed = 0
        self.failed = 0
        self.xfailed: list[tuple[str, str, str]] = []
        self.xpassed: list[str] = []
        self.verbose = verbose
        self.seen: set[str] = set()

    def record(self, cid: str, ok: bool, reason: str) -> bool:
        if cid in self.seen:
            raise AssertionError(f"check id {cid} used twice")
        self.seen.add(cid)
        if cid in KNOWN:
            if ok:
                self.passed += 1
                self.xpassed.append(cid)
                print(f"XPASS {cid}: passes now; remove it from KNOWN ({KNOWN[cid]})", flush=True)
            else:
                self.xfailed.append((cid, reason, KNOWN[cid]))
                print(f"XFAIL {cid}: {reason}", flush=True)
            return ok
        if ok:
            self.passed += 1
            if self.verbose:
                print(f"ok    {cid}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL  {cid}: {reason}", flush=True)
        return ok


R: Results  # set in main


def check(cid: str, ok: bool, reason: str = "") -> bool:
    return R.record(cid, bool(ok), reason)


def require(cid: str, ok: bool, reason: str = "") -> None:
    if not check(cid, ok, reason):
        raise Stop(cid)


def status(cid: str, r: Response, *codes: int, must: bool = False) -> bool:
    ok = r.status in codes
    why = f"expected {' or '.join(map(str, codes))}: {r.brief()}"
    if must:
        require(cid, ok, why)
        return True
    return check(cid, ok, why)


def problem_issues(r: Response, code: int, kind: str | None) -> list[str]:
    issues = []
    if r.status != code:
        issues.append(f"status {r.status}, expected {code}")
    if r.content_type not in ("application/json", "application/problem+json"):
        issues.append(f"Content-Type {r.headers.get('content-type')!r}")
    body = r.json()
    if not isinstance(body, dict):
        return issues + ["body is not a JSON object (ProblemDetails)"]
    t = body.get("type")
    if not isinstance(t, str) or not t.startswith(ERRORS) or len(t) == len(ERRORS):
        issues.append(f"type {t!r} is not {ERRORS}…")
    elif kind and t != ERRORS + kind:
        issues.append(f"type {t!r}, expected {ERRORS + kind}")
    for member in ("title", "detail"):
        v = body.get(member)
        if not isinstance(v, str) or not v.strip():
            issues.append(f"{member} missing or empty")
    return issues


def problem(cid: str, r: Response, code: int, kind: str | None = None) -> bool:
    """The response is a ProblemDetails with this status and (if given) this NGSI-LD error type."""
    issues = problem_issues(r, code, kind)
    return check(cid, not issues, "; ".join(issues) + f" — {r.brief()}")


TIME_KEYS = {"observedAt", "createdAt", "modifiedAt", "deletedAt"}
NGSI_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def parse_time(s):
    if not isinstance(s, str) or not NGSI_DATE.match(s):
        return None
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def diff(expected, actual, path="$", unordered=False) -> str | None:
    """The first difference between two JSON values, or None. Strict about int vs float vs bool;
    timestamps compare as instants; lists in order unless `unordered`."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {json.dumps(actual)[:120]}"
        missing = [k for k in expected if k not in actual]
        extra = [k for k in actual if k not in expected]
        if missing or extra:
            return f"{path}: missing {missing}, unexpected {extra}"
        for k in expected:
            if k in TIME_KEYS and isinstance(expected[k], str):
                a, b = parse_time(expected[k]), parse_time(actual[k])
                if a is None or a != b:
                    return f"{path}.{k}: expected {expected[k]!r}, got {actual[k]!r}"
                continue
            d = diff(expected[k], actual[k], f"{path}.{k}", unordered)
            if d:
                return d
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{path}: expected an array, got {json.dumps(actual)[:120]}"
        if len(expected) != len(actual):
            return f"{path}: expected {len(expected)} items, got {len(actual)}: {json.dumps(actual)[:200]}"
        if unordered:
            rest = list(actual)
            for i, e in enumerate(expected):
                hit = next((j for j, a in enumerate(rest) if diff(e, a, "", True) is None), None)
                if hit is None:
                    return f"{path}[{i}]: no match for {json.dumps(e)[:120]} in {json.dumps(rest)[:200]}"
                rest.pop(hit)
            return None
        for i, (e, a) in enumerate(zip(expected, actual)):
            d = diff(e, a, f"{path}[{i}]", unordered)
            if d:
                return d
        return None
    if type(expected) is not type(actual) or expected != actual:
        return f"{path}: expected {json.dumps(expected)}, got {json.dumps(actual)}"
    return None


def same(cid: str, expected, actual, unordered=False) -> bool:
    d = diff(expected, actual, unordered=unordered)
    return check(cid, d is None, d or "")


def without(obj: dict, *keys: str) -> dict:
    return {k: v for k, v in obj.items() if k not in keys}


# ------------------------------------------------------------------------------ the suite

class Run:
    def __init__(self, client: Client, tenants: tuple[str, str] | None, body_bytes: int):
        self.c = client
        self.rid = uuid.uuid4().hex[:10]
        self.type = f"BbThing{self.rid}"            # a per-run type: type queries stay ours
        self.tenants = tenants
        self.body_bytes = body_bytes
        self.created: dict[str | None, set[str]] = {}
        self.hosted: list[str] = []
        self.ctx_url: str | None = None
        self.ns = f"https://civitas.example/blackbox/{self.rid}#"
        self.n = 0

    # ids and bookkeeping ------------------------------------------------------------
    def id(self, label: str) -> str:
        self.n += 1
        return f"urn:ngsi-ld:BbThing:{self.rid}:{label}-{self.n}"

    def pattern(self, label: str = "") -> str:
        return f"^urn:ngsi-ld:BbThing:{self.rid}:{re.escape(label)}"

    def track(self, entity_id: str, client: Client | None = None) -> None:
        self.created.setdefault((client or self.c).tenant, set()).add(entity_id)

    def e(self, entity_id: str) -> str:
        return "/entities/" + quote_id(entity_id)

    def create(self, cid: str, entity: dict, client: Client | None = None, **kw) -> Response:
        c = client or self.c
        self.track(entity["id"], c)
        r = c.post("/entities", entity, **kw)
        status(cid, r, 201, must=True)
        return r

    def fetch(self, entity_id: str, client: Client | None = None, **kw) -> Response:
        kw.setdefault("link_url", self.ctx_url)
        return (client or self.c).get(self.e(entity_id), **kw)

    def exists(self, entity_id: str, client: Client | None = None) -> bool:
        return (client or self.c).get(self.e(entity_id)).status == 200

    # the @context used by most groups: hosted by the connector itself -----------------
    def terms(self) -> dict:
        n = self.ns
        return {
            "BbThing": n + "BbThing", self.type: n + self.type,
            "speed": n + "speed", "name": n + "name", "owner": n + "owner",
            "tags": n + "tags", "colour": n + "colour", "extra": n + "extra",
            "note": n + "note", "source": n + "source", "level": n + "level",
        }

    def expand(self, term: str) -> str:
        return self.terms()[term]


def base_entity(run: Run, entity_id: str) -> dict:
    return {
        "id": entity_id,
        "type": run.type,
        "speed": {"type": "Property", "value": 55, "unitCode": "KMH",
                  "observedAt": "2026-01-02T03:04:05.000Z",
                  "source": {"type": "Property", "value": "radar"}},
        "name": {"type": "Property", "value": "Bench by the river"},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:" + run.rid},
        "tags": {"type": "Property", "value": ["a", "b", 3, 1.5, True, None, {"k": "v"}]},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [4.35, 50.85]}},
    }


# ----------------------------------------------------------------------------- groups

def g_context(run: Run) -> None:
    """Hosts the run's @context on the connector (POST /jsonldContexts) and finds its URL."""
    c = run.c
    r = c.post("/jsonldContexts", {"@context": run.terms()}, ctype="application/json")
    status("context.host", r, 201, must=True)
    loc = r.headers.get("location", "")
    local_id = loc.rstrip("/").rsplit("/", 1)[-1]
    require("context.host.location", loc.startswith("/ngsi-ld/v1/jsonldContexts/") and local_id,
            f"Location {loc!r}")
    run.hosted.append(local_id)
    r = c.get("/jsonldContexts/" + urllib.parse.quote(local_id, safe=""), query={"details": "true"})
    status("context.details", r, 200, must=True)
    url = (r.json() or {}).get("URL")
    require("context.details.url", isinstance(url, str) and url.endswith(loc), r.brief())
    run.ctx_url = url
    r = c.get("/jsonldContexts/" + urllib.parse.quote(local_id, safe=""))
    check("context.serve", r.status == 200 and r.json() == {"@context": run.terms()}, r.brief())


def g_create_retrieve(run: Run) -> None:
    c, url = run.c, run.ctx_url
    eid = run.id("cr")
    entity = base_entity(run, eid)
    r = run.create("create.json_link.status", entity, link_url=url)
    check("create.location", r.headers.get("location", "").endswith("/ngsi-ld/v1/entities/" + eid),
          f"Location {r.headers.get('location')!r}")
    check("create.empty_body", r.body == b"", r.brief())
    problem("create.duplicate", c.post("/entities", entity, link_url=url), 409, "AlreadyExists")

    # normalized, application/json: Link header, no @context in the body
    r = run.fetch(eid)
    status("retrieve.normalized.status", r, 200, must=True)
    check("retrieve.normalized.content_type", r.content_type == "application/json", r.brief())
    check("retrieve.normalized.link", link_target(r.headers.get("link")) == url,
          f"Link {r.headers.get('link')!r}")
    same("retrieve.normalized.body", entity, r.json())

    # application/ld+json: @context in the body (the request's), no Link header needed
    r = run.fetch(eid, accept="application/ld+json")
    status("retrieve.jsonld.status", r, 200, must=True)
    check("retrieve.jsonld.content_type", r.content_type == "application/ld+json", r.brief())
    body = r.json() or {}
    ctx = body.get("@context")
    check("retrieve.jsonld.context", ctx == url or ctx == [url] or ctx == [url, CORE],
          f"@context {ctx!r}")
    same("retrieve.jsonld.body", entity, without(body, "@context"))

    # Accept */* means JSON
    r = run.fetch(eid, accept="*/*")
    check("retrieve.accept_any", r.status == 200 and r.content_type == "application/json"
          and "@context" not in (r.json() or {}), r.brief())

    # without a Link header only the core context applies: names come back as full IRIs
    r = c.get(run.e(eid))
    status("retrieve.no_link.status", r, 200, must=True)
    expanded = {("type" if k == "type" else run.expand(k) if k in run.terms() else k): v
                for k, v in entity.items()}
    expanded["type"] = run.expand(run.type)
    expanded["speed"] = dict(entity["speed"])
    expanded[run.expand("speed")] = expanded.pop("speed")
    expanded[run.expand("speed")][run.expand("source")] = expanded[run.expand("speed")].pop("source")
    same("retrieve.no_link.body", expanded, r.json())
    check("retrieve.no_link.link", link_target(r.headers.get("link")) == CORE,
          f"Link {r.headers.get('link')!r}")

    # keyValues (options=keyValues and format=simplified)
    kv = {"id": eid, "type": run.type, "speed": 55, "name": "Bench by the river",
          "owner": entity["owner"]["object"], "tags": entity["tags"]["value"],
          "location": entity["location"]["value"]}
    r = run.fetch(eid, query={"options": "keyValues"})
    status("retrieve.keyValues.status", r, 200)
    same("retrieve.keyValues.body", kv, r.json())
    r = run.fetch(eid, query={"format": "simplified"})
    same("retrieve.simplified.body", kv, r.json())

    # concise: lossless, type members left out; it must round-trip to the same entity
    r = run.fetch(eid, query={"format": "concise"})
    status("retrieve.concise.status", r, 200, must=True)
    concise = r.json() or {}
    check("retrieve.concise.value_only", concise.get("name") == "Bench by the river",
          f"name {concise.get('name')!r}")
    sp = concise.get("speed")
    check("retrieve.concise.property", isinstance(sp, dict) and "type" not in sp
          and sp.get("value") == 55 and sp.get("unitCode") == "KMH"
          and sp.get("source") == "radar", f"speed {sp!r}")
    ow = concise.get("owner")
    check("retrieve.concise.relationship", isinstance(ow, dict) and "type" not in ow
          and ow.get("object") == entity["owner"]["object"], f"owner {ow!r}")
    eid2 = run.id("concise")
    copy = dict(concise, id=eid2)
    run.create("create.concise.status", copy, link_url=url)
    r = run.fetch(eid2)
    same("create.concise.roundtrip", dict(entity, id=eid2), r.json())

    # sysAttrs
    r = run.fetch(eid, query={"options": "sysAttrs"})
    body = r.json() or {}
    stamps = [("entity", body)] + [(k, body.get(k)) for k in ("speed", "name", "owner", "location")]
    bad = [k for k, o in stamps if not (isinstance(o, dict) and parse_time(o.get("createdAt"))
                                        and parse_time(o.get("modifiedAt")))]
    check("retrieve.sysAttrs.present", r.status == 200 and not bad, f"no valid createdAt/modifiedAt on {bad}: {r.brief()}")
    strip = lambda o: ({k: strip(v) for k, v in o.items() if k not in ("createdAt", "modifiedAt")}
                       if isinstance(o, dict) else o)
    same("retrieve.sysAttrs.rest", entity, strip(body))

    # projections
    r = run.fetch(eid, query={"attrs": "speed,name"})
    same("retrieve.attrs", {"id": eid, "type": run.type, "speed": entity["speed"], "name": entity["name"]}, r.json())
    r = run.fetch(eid, query={"pick": "id,speed"})
    same("retrieve.pick", {"id": eid, "speed": entity["speed"]}, r.json())
    r = run.fetch(eid, query={"omit": "type,speed,tags,location"})
    same("retrieve.omit", {"id": eid, "name": entity["name"], "owner": entity["owner"]}, r.json())
    r = run.fetch(eid, query={"pick": "speed", "omit": "name"})
    problem("retrieve.pick_and_omit", r, 400, "BadRequestData")
    r = run.fetch(eid, query={"pick": "name", "options": "keyValues"})
    same("retrieve.pick.keyValues", {"name": "Bench by the river"}, r.json())

    # GeoJSON
    r = run.fetch(eid, accept="application/geo+json")
    status("retrieve.geojson.status", r, 200, must=True)
    check("retrieve.geojson.content_type", r.content_type == "application/geo+json", r.brief())
    f = r.json() or {}
    check("retrieve.geojson.feature", f.get("type") == "Feature" and f.get("id") == eid
          and f.get("geometry") == entity["location"]["value"], f"feature {json.dumps(f)[:300]}")
    props = f.get("properties") or {}
    check("retrieve.geojson.properties", props.get("type") == run.type
          and props.get("speed") == entity["speed"], f"properties {json.dumps(props)[:300]}")
    r = run.fetch(eid, accept="application/geo+json", query={"options": "keyValues"})
    props = (r.json() or {}).get("properties") or {}
    check("retrieve.geojson.keyValues", r.status == 200 and props.get("speed") == 55, r.brief())
    r = c.get("/entities", query={"id": eid, "type": run.type}, link_url=url, accept="application/geo+json")
    fc = r.json() or {}
    check("query.geojson", r.status == 200 and fc.get("type") == "FeatureCollection"
          and [x.get("id") for x in fc.get("features", [])] == [eid], r.brief())

    # JSON-LD request body with the @context inline
    eid3 = run.id("ld")
    run.create("create.jsonld.status", dict(base_entity(run, eid3), **{"@context": url}))
    same("create.jsonld.body", base_entity(run, eid3), run.fetch(eid3).json())
    eid4 = run.id("ld-inline")
    inline = dict(base_entity(run, eid4), **{"@context": [run.terms(), CORE]})
    run.create("create.jsonld.inline_object.status", inline)
    same("create.jsonld.inline_object.body", base_entity(run, eid4), run.fetch(eid4).json())

    # plain JSON without Link: the core @vocab expands the names
    eid5 = run.id("vocab")
    run.create("create.core_vocab.status", {"id": eid5, "type": "BbPlain", "colour": {"type": "Property", "value": "red"}})
    r = c.get(run.e(eid5))
    same("create.core_vocab.body", {"id": eid5, "type": "BbPlain", "colour": {"type": "Property", "value": "red"}}, r.json())
    r = run.fetch(eid5)   # with the run's context, whose `colour` is another IRI
    body = r.json() or {}
    check("create.core_vocab.other_context", "colour" not in body and
          any(k.endswith("colour") for k in body), f"keys {list(body)}")

    # every attribute type, values verbatim (numbers keep their JSON type, strings any character)
    eid6 = run.id("rich")
    rich = {
        "id": eid6, "type": run.type,
        "name": {"type": "LanguageProperty", "languageMap": {"en": "Bench", "fr": "Banc", "@none": "Bank"}},
        "colour": {"type": "VocabProperty", "vocab": "https://civitas.example/vocab/red"},
        "extra": {"type": "JsonProperty", "json": {"a": None, "b": [1, 2.5, {"c": "d"}], "null": None}},
        "tags": {"type": "ListProperty", "valueList": [1, "x", True, {"k": 1}]},
        "owner": {"type": "ListRelationship", "objectList": [{"object": "urn:ngsi-ld:P:1"}, {"object": "urn:ngsi-ld:P:2"}]},
        "source": {"type": "Relationship", "object": "urn:ngsi-ld:P:3", "objectType": "https://civitas.example/Person"},
        "level": {"type": "Property", "value": [9007199254740993, -17, 0, 0.1, 1e-300, 1e300, -2.5]},
        "note": {"type": "Property", "value": "é ✓ 😀 \u0000 \"quoted\" \\ <&>"},
        "speed": {"type": "Property", "value": {"nested": {"deeper": [None, False]}}},
    }
    run.create("create.rich.status", rich, link_url=url)
    same("create.rich.normalized", rich, run.fetch(eid6).json())
    r = run.fetch(eid6, query={"format": "concise"})
    eid7 = run.id("rich-concise")
    run.create("create.rich.concise.status", dict(r.json() or {}, id=eid7), link_url=url)
    same("create.rich.concise.roundtrip", dict(rich, id=eid7), run.fetch(eid7).json())

    # concise must stay lossless where arrays are involved: multi-attributes and array values
    eid8 = run.id("multi")
    multi = {"id": eid8, "type": run.type,
             "speed": [{"type": "Property", "value": 1},
                       {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:b"}],
             "location": [{"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}},
                          {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3, 4]},
                           "datasetId": "urn:ngsi-ld:Dataset:b"}],
             "tags": {"type": "Property", "value": [{"value": 1}, {"value": 2}]}}
    run.create("create.multi.status", multi, link_url=url)
    same("create.multi.normalized", multi, run.fetch(eid8).json(), unordered=True)
    concise = run.fetch(eid8, query={"format": "concise"}).json() or {}
    for attr in ("speed", "location", "tags"):
        eid9 = run.id("multi-concise")
        one = {"id": eid9, "type": run.type, attr: concise.get(attr)}
        r = c.post("/entities", one, link_url=url)
        run.track(eid9)
        got = run.fetch(eid9).json() if r.status == 201 else r.brief()
        same(f"concise.roundtrip.{attr}", {"id": eid9, "type": run.type, attr: multi[attr]}, got, unordered=True)

    # ids with characters that are special in a URL: Location must lead back to the entity
    for label, ch in (("slash", "/"), ("query", "?"), ("fragment", "#"), ("percent", "%25")):
        sid = run.id("chars") + ":a" + ch + "b"
        run.track(sid)
        r = c.post("/entities", {"id": sid, "type": run.type}, link_url=url)
        if not status(f"create.id_with_{label}.status", r, 201):
            continue
        back = c.follow(r.headers.get("location", ""))
        check(f"create.id_with_{label}.location", back.status == 200 and (back.json() or {}).get("id") == sid,
              f"Location {r.headers.get('location')!r} -> {back.brief()}")
        got = c.get(run.e(sid))
        check(f"create.id_with_{label}.retrieve", got.status == 200 and (got.json() or {}).get("id") == sid, got.brief())
        r = c.get("/entities", query={"id": sid})
        check(f"create.id_with_{label}.query", r.status == 200 and [x.get("id") for x in r.json() or []] == [sid], r.brief())

    # media type details
    eid10 = run.id("media")
    r = c.post("/entities/", {"id": eid10, "type": run.type}, ctype="application/json; charset=utf-8")
    run.track(eid10)
    status("create.trailing_slash_and_charset", r, 201)
    r = c.get(run.e(eid10), accept="application/ld+json;q=0.9, application/json;q=0.5")
    check("retrieve.accept_quality", r.content_type == "application/ld+json", r.brief())
    r = c.get(run.e(eid10), accept="application/xml, application/json;q=0.1")
    check("retrieve.accept_fallback", r.status == 200 and r.content_type == "application/json", r.brief())
    problem("append.merge_patch", c.post(run.e(eid10) + "/attrs", {"level": 1}, ctype="application/merge-patch+json"),
            415, None)

    # other representations and errors of create/retrieve
    problem("retrieve.unknown", run.fetch(run.id("nope")), 404, "ResourceNotFound")
    problem("create.jsonld_with_link", c.post("/entities", dict(base_entity(run, run.id("x")), **{"@context": url}),
                                              link_url=url), 400, "BadRequestData")
    problem("create.json_with_context", c.post("/entities", dict(base_entity(run, run.id("x")), **{"@context": url}),
                                               ctype="application/json"), 400, "BadRequestData")
    problem("create.jsonld_without_context", c.post("/entities", base_entity(run, run.id("x")),
                                                    ctype="application/ld+json"), 400, "BadRequestData")
    problem("retrieve.bad_option", run.fetch(eid, query={"options": "bogus"}), 400, "BadRequestData")
    problem("retrieve.keyValues_and_concise", run.fetch(eid, query={"options": "keyValues,concise"}), 400, "BadRequestData")
    problem("retrieve.type_mismatch", run.fetch(eid, query={"type": "SomethingElse"}), 404, "ResourceNotFound")
    check("retrieve.type_match", run.fetch(eid, query={"type": run.type}).status == 200)

    # delete entity
    check("delete.entity", c.delete(run.e(eid2)).status == 204)
    problem("delete.entity.again", c.delete(run.e(eid2)), 404, "ResourceNotFound")
    problem("retrieve.after_delete", run.fetch(eid2), 404, "ResourceNotFound")


def g_attributes(run: Run) -> None:
    c, url = run.c, run.ctx_url
    eid = run.id("attrs")
    entity = base_entity(run, eid)
    run.create("attrs.setup", entity, link_url=url)
    path = run.e(eid)

    def current() -> dict:
        r = run.fetch(eid)
        if r.status != 200:
            require("attrs.fetch", False, r.brief())
        return r.json()

    # append (overwrite): new attribute added, existing one replaced
    r = c.post(path + "/attrs", {"colour": {"type": "Property", "value": "green"},
                                 "name": {"type": "Property", "value": "Renamed"}}, link_url=url)
    status("append.status", r, 204)
    now = current()
    check("append.added", now.get("colour") == {"type": "Property", "value": "green"}, f"colour {now.get('colour')}")
    check("append.overwritten", now.get("name") == {"type": "Property", "value": "Renamed"}, f"name {now.get('name')}")
    check("append.others_kept", now.get("speed") == entity["speed"], f"speed {now.get('speed')}")

    # append with noOverwrite: 207 UpdateResult; the existing attribute stays
    r = c.post(path + "/attrs", {"extra": {"type": "Property", "value": 1},
                                 "name": {"type": "Property", "value": "Not this"}},
               link_url=url, query={"options": "noOverwrite"})
    status("append.noOverwrite.status", r, 207)
    body = r.json() or {}
    check("append.noOverwrite.updated", body.get("updated") in (["extra"], [run.expand("extra")]), r.brief())
    nu = body.get("notUpdated") or [{}]
    check("append.noOverwrite.notUpdated", len(nu) == 1 and nu[0].get("attributeName") in ("name", run.expand("name"))
          and isinstance(nu[0].get("reason"), str) and nu[0]["reason"], r.brief())
    now = current()
    check("append.noOverwrite.effect", now.get("name", {}).get("value") == "Renamed"
          and now.get("extra") == {"type": "Property", "value": 1}, f"name {now.get('name')}, extra {now.get('extra')}")
    problem("append.unknown_entity", c.post(run.e(run.id("nope")) + "/attrs", {"extra": {"type": "Property", "value": 1}},
                                            link_url=url), 404, "ResourceNotFound")

    # update (PATCH /attrs): only existing attributes; others reported (clause 5.6.2)
    r = c.patch(path + "/attrs", {"colour": {"type": "Property", "value": "blue"}}, link_url=url)
    status("update.status", r, 204)
    check("update.effect", current().get("colour", {}).get("value") == "blue")
    r = c.patch(path + "/attrs", {"colour": {"type": "Property", "value": "yellow"},
                                  "note": {"type": "Property", "value": "absent"}}, link_url=url)
    status("update.partial.status", r, 207)
    body = r.json() or {}
    check("update.partial.body", body.get("updated") in (["colour"], [run.expand("colour")])
          and [n.get("attributeName") for n in body.get("notUpdated", [])] in (["note"], [run.expand("note")]), r.brief())
    now = current()
    check("update.partial.effect", now.get("colour", {}).get("value") == "yellow" and "note" not in now,
          f"colour {now.get('colour')}, note {now.get('note')}")

    # partial attribute update: a merge into the attribute
    r = c.patch(path + "/attrs/speed", {"value": 60}, link_url=url)
    status("partial.status", r, 204)
    sp = current().get("speed", {})
    check("partial.merged", sp.get("value") == 60 and sp.get("unitCode") == "KMH"
          and sp.get("source") == {"type": "Property", "value": "radar"}, f"speed {sp}")
    r = c.patch(path + "/attrs/speed", {"value": 61}, link_url=url, ctype="application/merge-patch+json")
    status("partial.merge_patch.status", r, 204)
    check("partial.merge_patch.effect", current().get("speed", {}).get("value") == 61)
    problem("partial.empty", c.patch(path + "/attrs/speed", {}, link_url=url), 400, "BadRequestData")
    problem("partial.unknown_attribute", c.patch(path + "/attrs/note", {"value": 1}, link_url=url), 404, "ResourceNotFound")
    problem("partial.type_change", c.patch(path + "/attrs/speed", {"type": "Relationship", "object": "urn:a:b"},
                                           link_url=url), 400, "BadRequestData")

    # replace attribute: the whole attribute, sub-attributes gone
    r = c.put(path + "/attrs/speed", {"type": "Property", "value": 7}, link_url=url)
    status("replace_attr.status", r, 204)
    same("replace_attr.effect", {"type": "Property", "value": 7}, current().get("speed"))
    problem("replace_attr.unknown", c.put(path + "/attrs/note", {"type": "Property", "value": 1}, link_url=url),
            404, "ResourceNotFound")

    # multi-attributes: datasetId instances, delete one, delete all
    r = c.post(path + "/attrs", {"speed": {"type": "Property", "value": 8, "datasetId": "urn:ngsi-ld:Dataset:gps"}},
               link_url=url)
    status("dataset.append.status", r, 204)
    sp = current().get("speed")
    same("dataset.append.effect", [{"type": "Property", "value": 7},
                                   {"type": "Property", "value": 8, "datasetId": "urn:ngsi-ld:Dataset:gps"}],
         sp, unordered=True)
    r = c.patch(path + "/attrs/speed", {"value": 9, "datasetId": "urn:ngsi-ld:Dataset:gps"}, link_url=url)
    status("dataset.partial.status", r, 204)
    problem("dataset.partial.unknown", c.patch(path + "/attrs/speed", {"value": 9, "datasetId": "urn:ngsi-ld:Dataset:nope"},
                                               link_url=url), 404, "ResourceNotFound")
    r = c.delete(path + "/attrs/speed", link_url=url, query={"datasetId": "urn:ngsi-ld:Dataset:gps"})
    status("dataset.delete_one.status", r, 204)
    same("dataset.delete_one.effect", {"type": "Property", "value": 7}, current().get("speed"))
    problem("dataset.delete_one.unknown", c.delete(path + "/attrs/speed", link_url=url,
                                                   query={"datasetId": "urn:ngsi-ld:Dataset:gps"}), 404, "ResourceNotFound")
    c.post(path + "/attrs", {"speed": {"type": "Property", "value": 8, "datasetId": "urn:ngsi-ld:Dataset:gps"}}, link_url=url)
    r = c.delete(path + "/attrs/speed", link_url=url, query={"deleteAll": "true"})
    status("dataset.delete_all.status", r, 204)
    check("dataset.delete_all.effect", "speed" not in current())
    r = c.delete(path + "/attrs/colour", link_url=url)
    status("delete_attr.status", r, 204)
    check("delete_attr.effect", "colour" not in current())
    problem("delete_attr.unknown", c.delete(path + "/attrs/colour", link_url=url), 404, "ResourceNotFound")
    problem("delete_attr.bad_deleteAll", c.delete(path + "/attrs/name", link_url=url, query={"deleteAll": "maybe"}),
            400, "BadRequestData")

    # merge entity: attribute-level merge; urn:ngsi-ld:null deletes
    before = current()
    r = c.patch(path, {"name": {"type": "Property", "value": NULL},
                       "owner": {"type": "Relationship", "object": NULL},
                       "tags": {"type": "Property", "value": ["merged"]},
                       "level": {"type": "Property", "value": 3, "unitCode": "C62"}}, link_url=url)
    status("merge.status", r, 204)
    now = current()
    check("merge.null_deletes", "name" not in now and "owner" not in now, f"keys {sorted(now)}")
    check("merge.sets", now.get("tags", {}).get("value") == ["merged"]
          and now.get("level") == {"type": "Property", "value": 3, "unitCode": "C62"},
          f"tags {now.get('tags')}, level {now.get('level')}")
    check("merge.keeps", now.get("location") == before.get("location") and now.get("extra") == before.get("extra"))
    r = c.patch(path, {"level": {"value": 4}}, link_url=url)
    status("merge.attribute_merge.status", r, 204)
    check("merge.attribute_merge.effect", current().get("level") == {"type": "Property", "value": 4, "unitCode": "C62"},
          f"level {current().get('level')}")
    problem("merge.unknown_entity", c.patch(run.e(run.id("nope")), {"level": {"type": "Property", "value": 1}},
                                            link_url=url), 404, "ResourceNotFound")

    # replace entity: attributes replaced, createdAt kept
    created = run.fetch(eid, query={"options": "sysAttrs"}).json().get("createdAt")
    replacement = {"id": eid, "type": run.type, "note": {"type": "Property", "value": "only me"}}
    r = c.put(path, replacement, link_url=url)
    status("replace.status", r, 204)
    same("replace.effect", replacement, current())
    after = run.fetch(eid, query={"options": "sysAttrs"}).json() or {}
    check("replace.createdAt_kept", after.get("createdAt") == created,
          f"createdAt {created!r} -> {after.get('createdAt')!r}")
    nope = run.id("nope")
    problem("replace.unknown", c.put(run.e(nope), dict(replacement, id=nope), link_url=url), 404, "ResourceNotFound")
    problem("replace.id_mismatch", c.put(path, dict(replacement, id=nope), link_url=url), 400, "BadRequestData")


def g_batch(run: Run) -> None:
    c, url = run.c, run.ctx_url
    ops = lambda op: "/entityOperations/" + op
    a, b, cc, d = run.id("batch-a"), run.id("batch-b"), run.id("batch-c"), run.id("batch-d")
    for x in (a, b, cc, d):
        run.track(x)
    mk = lambda i, v=1: {"id": i, "type": run.type, "level": {"type": "Property", "value": v}}
    query = lambda ids: c.get("/entities", query={"id": ",".join(ids), "type": run.type}, link_url=url)

    r = c.post(ops("create"), [mk(a), mk(b)], link_url=url)
    status("batch.create.status", r, 201)
    check("batch.create.body", sorted(r.json() or []) == sorted([a, b]), r.brief())
    r = query([a, b])
    same("batch.create.stored", [mk(a), mk(b)], r.json(), unordered=True)

    # mixed: one new, one existing, one invalid -> 207, the good one stored
    r = c.post(ops("create"), [mk(cc), mk(a), {"id": "not a uri", "type": run.type}], link_url=url)
    status("batch.create.mixed.status", r, 207)
    body = r.json() or {}
    check("batch.create.mixed.success", body.get("success") == [cc], r.brief())
    errs = body.get("errors") or []
    check("batch.create.mixed.errors", sorted(e.get("entityId", "") for e in errs) == sorted([a, "not a uri"]), r.brief())
    kinds = {e.get("entityId"): (e.get("error") or {}).get("type") for e in errs}
    check("batch.create.mixed.error_types", kinds == {a: ERRORS + "AlreadyExists", "not a uri": ERRORS + "BadRequestData"}
          and all((e.get("error") or {}).get("title") for e in errs), r.brief())
    check("batch.create.mixed.stored", run.exists(cc))

    # upsert: replace by default; 201 with the new ids only; 204 when none is new
    r = c.post(ops("upsert"), [mk(a, 2), mk(d, 2)], link_url=url)
    status("batch.upsert.status", r, 201)
    check("batch.upsert.body", (r.json() or None) == [d], r.brief())
    same("batch.upsert.effect", [mk(a, 2), mk(d, 2)], query([a, d]).json(), unordered=True)
    r = c.post(ops("upsert"), [{"id": a, "type": run.type, "note": {"type": "Property", "value": "n"}}],
               link_url=url, query={"options": "update"})
    status("batch.upsert.update.status", r, 204)
    check("batch.upsert.update.effect", set(run.fetch(a).json() or {}) >= {"level", "note"},
          f"{run.fetch(a).json()}")
    r = c.post(ops("upsert"), [mk(a, 3)], link_url=url)
    status("batch.upsert.replace.status", r, 204)
    same("batch.upsert.replace.effect", mk(a, 3), run.fetch(a).json())

    # update: existing entities get the attributes; an unknown one is reported
    unknown = run.id("batch-unknown")
    r = c.post(ops("update"), [{"id": b, "type": run.type, "level": {"type": "Property", "value": 5}},
                               {"id": unknown, "type": run.type, "level": {"type": "Property", "value": 5}}],
               link_url=url)
    status("batch.update.status", r, 207)
    body = r.json() or {}
    check("batch.update.body", body.get("success") == [b]
          and [e.get("entityId") for e in body.get("errors", [])] == [unknown], r.brief())
    check("batch.update.effect", (run.fetch(b).json() or {}).get("level", {}).get("value") == 5)
    check("batch.update.unknown_not_created", not run.exists(unknown))

    # merge: urn:ngsi-ld:null deletes
    r = c.post(ops("merge"), [{"id": b, "type": run.type, "level": {"type": "Property", "value": NULL},
                               "note": {"type": "Property", "value": "merged"}}], link_url=url)
    status("batch.merge.status", r, 204)
    same("batch.merge.effect", {"id": b, "type": run.type, "note": {"type": "Property", "value": "merged"}},
         run.fetch(b).json())

    # JSON-LD batch: each entity carries its @context
    e = run.id("batch-ld")
    run.track(e)
    r = c.post(ops("create"), [dict(mk(e), **{"@context": url})], ctype="application/ld+json")
    status("batch.jsonld.status", r, 201)
    same("batch.jsonld.effect", mk(e), run.fetch(e).json())
    r = c.post(ops("create"), [dict(mk(run.id("x")), **{"@context": url})], ctype="application/ld+json", link_url=url)
    problem("batch.jsonld_with_link", r, 400, "BadRequestData")

    # delete
    r = c.post(ops("delete"), [a, b, unknown], link_url=url)
    status("batch.delete.mixed.status", r, 207)
    body = r.json() or {}
    check("batch.delete.mixed.body", sorted(body.get("success") or []) == sorted([a, b])
          and [x.get("entityId") for x in body.get("errors", [])] == [unknown], r.brief())
    r = c.post(ops("delete"), [cc, d, e], link_url=url)
    status("batch.delete.status", r, 204)
    r = query([a, b, cc, d, e])
    check("batch.delete.effect", r.status == 200 and r.json() == [], r.brief())

    # duplicates in one batch: processed in order
    f = run.id("batch-dup")
    run.track(f)
    r = c.post(ops("upsert"), [mk(f, 1), mk(f, 2)], link_url=url)
    check("batch.upsert.duplicate", r.status == 201 and r.json() == [f], r.brief())
    check("batch.upsert.duplicate.last_wins", (run.fetch(f).json() or {}).get("level", {}).get("value") == 2)
    r = c.post(ops("create"), [mk(f)], link_url=url)
    check("batch.create.existing_only", r.status == 207 and (r.json() or {}).get("success") == []
          and [e.get("entityId") for e in (r.json() or {}).get("errors", [])] == [f], r.brief())
    c.delete(run.e(f))

    problem("batch.empty", c.post(ops("create"), [], link_url=url), 400, "BadRequestData")
    problem("batch.not_array", c.post(ops("create"), mk(run.id("x")), link_url=url), 400, "BadRequestData")
    problem("batch.malformed", c.post(ops("upsert"), raw=b'[{"id": ', ctype="application/json"), 400, "InvalidRequest")


def g_query(run: Run) -> None:
    c, url = run.c, run.ctx_url
    qtype = f"BbQuery{run.rid}"
    ids = [run.id("q") for _ in range(5)]
    other = run.id("qother")
    for i, x in enumerate(ids):
        run.create(f"query.setup.{i}", {"id": x, "type": qtype, "level": {"type": "Property", "value": i}},
                   link_url=url)
    run.create("query.setup.other", {"id": other, "type": run.type, "level": {"type": "Property", "value": 9}},
               link_url=url)

    def q(cid, **params):
        r = c.get("/entities", query=params, link_url=url)
        status(cid + ".status", r, 200, must=True)
        return r

    r = q("query.type", type=qtype, limit="100")
    check("query.type.ids", sorted(x.get("id") for x in r.json()) == sorted(ids), r.brief())
    check("query.type.content_type", r.content_type == "application/json"
          and link_target(r.headers.get("link")) == url, r.brief())
    r = q("query.id", id=f"{ids[0]},{ids[3]},{other}")
    check("query.id.ids", sorted(x.get("id") for x in r.json()) == sorted([ids[0], ids[3], other]), r.brief())
    r = q("query.id_type", id=f"{ids[0]},{other}", type=qtype)
    check("query.id_type.ids", [x.get("id") for x in r.json()] == [ids[0]], r.brief())
    r = q("query.idPattern", idPattern=run.pattern("q-"), limit="100")
    check("query.idPattern.ids", sorted(x.get("id") for x in r.json()) == sorted(ids), r.brief())
    r = q("query.type_multi", type=f"{qtype},{run.type}", id=f"{ids[1]},{other}")
    check("query.type_multi.ids", sorted(x.get("id") for x in r.json()) == sorted([ids[1], other]), r.brief())
    r = q("query.attrs", type=qtype, attrs="level", limit="100")
    check("query.attrs.ids", len(r.json()) == 5, r.brief())
    r = q("query.attrs_projection", id=other, attrs="level")
    same("query.attrs_projection.body", [{"id": other, "type": run.type, "level": {"type": "Property", "value": 9}}],
         r.json())
    r = c.get("/entities", query={"type": DEFAULT_VOCAB + "BbNoSuchType" + run.rid})
    check("query.type_iri.none", r.status == 200 and r.json() == [], r.brief())
    r = c.get("/entities", query={"type": run.expand(run.type), "id": other})
    check("query.type_iri", r.status == 200 and [x.get("id") for x in r.json() or []] == [other], r.brief())
    r = q("query.attrs_absent", type=qtype, attrs="note")
    check("query.attrs_absent.empty", r.json() == [], r.brief())
    r = q("query.keyValues", id=ids[2], options="keyValues")
    same("query.keyValues.body", [{"id": ids[2], "type": qtype, "level": 2}], r.json())
    r = c.get("/entities", query={"id": ids[2]}, link_url=url, accept="application/ld+json")
    body = r.json() or [{}]
    check("query.jsonld", r.status == 200 and r.content_type == "application/ld+json"
          and body[0].get("@context") in (url, [url]), r.brief())

    # the query language (clause 4.9)
    r = q("query.q_range", type=qtype, q="level>=1;level<3", limit="100")
    check("query.q_range.ids", sorted(x.get("id") for x in r.json()) == sorted(ids[1:3]), r.brief())
    r = q("query.q_or", type=qtype, q="level==0|level==4", limit="100", count="true")
    check("query.q_or.ids", sorted(x.get("id") for x in r.json()) == sorted([ids[0], ids[4]]), r.brief())
    check("query.q_or.count", r.headers.get("ngsild-results-count") == "2",
          f"NGSILD-Results-Count {r.headers.get('ngsild-results-count')!r}")
    r = q("query.q_only", q="level==9", idPattern=run.pattern("qother"))
    check("query.q_only.ids", [x.get("id") for x in r.json()] == [other], r.brief())
    r = q("query.q_page", type=qtype, q="level>0", limit="2", offset="2")
    check("query.q_page.ids", [x.get("id") for x in r.json()] == sorted(ids[1:])[2:4], r.brief())
    problem("query.q_invalid", c.get("/entities", query={"type": qtype, "q": "(level>1"}, link_url=url),
            400, "BadRequestData")
    r = c.post("/entityOperations/query", {"type": "Query", "entities": [{"type": qtype}], "q": "level<1"},
               link_url=url)
    check("query.q_post.ids", r.status == 200 and [x.get("id") for x in r.json() or []] == [ids[0]], r.brief())

    # geo-queries (clause 4.10)
    gtype = f"BbGeo{run.rid}"
    near_id, far_id = run.id("geo"), run.id("geo")
    for cid, x, lon, lat in (("near", near_id, 4.35, 50.85), ("far", far_id, 5.57, 50.63)):
        run.create(f"query.geo.setup.{cid}", {"id": x, "type": gtype, "location": {
            "type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}}, link_url=url)
    r = q("query.geo_near", type=gtype, georel="near;maxDistance==2000", geometry="Point",
          coordinates="[4.35,50.84]")
    check("query.geo_near.ids", [x.get("id") for x in r.json()] == [near_id], r.brief())
    r = q("query.geo_within", type=gtype, georel="within", geometry="Polygon",
          coordinates="[[[5,50],[6,50],[6,51],[5,51],[5,50]]]")
    check("query.geo_within.ids", [x.get("id") for x in r.json()] == [far_id], r.brief())
    problem("query.geo_incomplete", c.get("/entities", query={"type": gtype, "georel": "within"},
                                          link_url=url), 400, "BadRequestData")

    # pagination and count
    r = q("query.count", type=qtype, limit="2", count="true")
    check("query.count.page", len(r.json()) == 2, r.brief())
    check("query.count.header", r.headers.get("ngsild-results-count") == "5",
          f"NGSILD-Results-Count {r.headers.get('ngsild-results-count')!r}")
    r = q("query.no_count", type=qtype, limit="2")
    check("query.no_count.header", "ngsild-results-count" not in r.headers, str(r.headers))
    pages = []
    for off in (0, 2, 4):
        r = q(f"query.page{off}", type=qtype, limit="2", offset=str(off))
        pages.append([x.get("id") for x in r.json()])
    check("query.pages.sizes", [len(p) for p in pages] == [2, 2, 1], str(pages))
    check("query.pages.cover", sorted(sum(pages, [])) == sorted(ids), str(pages))
    r = q("query.offset_past_end", type=qtype, offset="10")
    check("query.offset_past_end.empty", r.json() == [], r.brief())
    r = q("query.limit0", type=qtype, limit="0", count="true")
    check("query.limit0.body", r.json() == [] and r.headers.get("ngsild-results-count") == "5", r.brief())

    problem("query.no_filter", c.get("/entities", link_url=url), 400, "BadRequestData")
    problem("query.bad_limit", c.get("/entities", query={"type": qtype, "limit": "-1"}, link_url=url), 400, "BadRequestData")
    problem("query.bad_idPattern", c.get("/entities", query={"idPattern": "(unclosed"}, link_url=url), 400, "BadRequestData")
    problem("query.bad_id", c.get("/entities", query={"id": "not a uri"}, link_url=url), 400, "BadRequestData")
    r = c.get("/entities", query={"type": qtype, "limit": "1000000"}, link_url=url)
    if r.status == 403:
        problem("query.limit_too_large", r, 403, "TooManyResults")
    else:
        problem("query.limit_too_large", r, 400, None)


def g_purge(run: Run) -> None:
    c, url = run.c, run.ctx_url
    ptype = f"BbPurge{run.rid}"
    p = [run.id("purge") for _ in range(4)]
    for i, x in enumerate(p):
        run.create(f"purge.setup.{i}", {"id": x, "type": ptype, "name": {"type": "Property", "value": "n"},
                                        "level": {"type": "Property", "value": i}}, link_url=url)
    r = c.delete("/entities", query={"id": p[0]}, link_url=url)
    status("purge.id.status", r, 204)
    check("purge.id.effect", not run.exists(p[0]) and run.exists(p[1]))
    r = c.delete("/entities", query={"id": p[1], "drop": "name"}, link_url=url)
    status("purge.drop.status", r, 204)
    same("purge.drop.effect", {"id": p[1], "type": ptype, "level": {"type": "Property", "value": 1}}, run.fetch(p[1]).json())
    r = c.delete("/entities", query={"id": p[2], "keep": "name"}, link_url=url)
    status("purge.keep.status", r, 204)
    same("purge.keep.effect", {"id": p[2], "type": ptype, "name": {"type": "Property", "value": "n"}}, run.fetch(p[2]).json())
    problem("purge.keep_and_drop", c.delete("/entities", query={"type": ptype, "keep": "name", "drop": "level"},
                                            link_url=url), 400, "BadRequestData")
    problem("purge.no_filter", c.delete("/entities", link_url=url), 400, "BadRequestData")
    r = c.delete("/entities", query={"type": ptype, "q": "level==3"}, link_url=url)
    status("purge.q.status", r, 204)
    check("purge.q.effect", not run.exists(p[3]) and run.exists(p[1]) and run.exists(p[2]))
    r = c.delete("/entities", query={"idPattern": run.pattern("purge-"), "type": ptype}, link_url=url)
    status("purge.pattern.status", r, 204)
    r = c.get("/entities", query={"type": ptype, "count": "true", "limit": "0"}, link_url=url)
    check("purge.pattern.effect", r.status == 200 and r.headers.get("ngsild-results-count") == "0", r.brief())


def g_tenants(run: Run) -> None:
    if not run.tenants:
        print("notice: tenant checks skipped: the deployment's tenants are unknown "
              "(pass --tenant-a and --tenant-b, two tenants it declares)", flush=True)
        return
    ta, tb = run.tenants
    a, b = run.c.with_tenant(ta), run.c.with_tenant(tb)
    default = run.c.with_tenant(None)
    url = run.ctx_url
    eid = run.id("tenant")
    run.create("tenant.create_a", {"id": eid, "type": run.type, "level": {"type": "Property", "value": 1}},
               client=a, link_url=url)
    check("tenant.visible_in_a", run.exists(eid, a))
    problem("tenant.invisible_in_b", run.fetch(eid, client=b), 404, "ResourceNotFound")
    if run.c.tenant is None:
        problem("tenant.invisible_in_default", run.fetch(eid, client=default), 404, "ResourceNotFound")
    r = b.get("/entities", query={"id": eid}, link_url=url)
    check("tenant.query_b_empty", r.status == 200 and r.json() == [], r.brief())
    # the same id in tenant B is another entity
    run.create("tenant.create_b_same_id", {"id": eid, "type": run.type, "level": {"type": "Property", "value": 2}},
               client=b, link_url=url)
    va = (run.fetch(eid, client=a).json() or {}).get("level", {}).get("value")
    vb = (run.fetch(eid, client=b).json() or {}).get("level", {}).get("value")
    check("tenant.separate_data", (va, vb) == (1, 2), f"A sees {va}, B sees {vb}")
    check("tenant.delete_b", b.delete(run.e(eid)).status == 204)
    check("tenant.a_unaffected", run.exists(eid, a))
    r = b.post("/entityOperations/upsert", [{"id": eid, "type": run.type}], link_url=url)
    run.track(eid, b)
    check("tenant.batch_b", r.status == 201, r.brief())
    check("tenant.batch_b_isolated", (run.fetch(eid, client=a).json() or {}).get("level", {}).get("value") == 1)

    # a tenant that is not declared is refused, never created on the fly
    ghost = run.c.with_tenant(f"blackbox-undeclared-{run.rid}")
    gid = run.id("ghost")
    r = ghost.post("/entities", {"id": gid, "type": run.type})
    if r.status == 201:
        run.track(gid, ghost)
    problem("tenant.undeclared.create", r, 404, "NonexistentTenant")
    problem("tenant.undeclared.retrieve", ghost.get(run.e(gid)), 404, "NonexistentTenant")
    problem("tenant.undeclared.query", ghost.get("/entities", query={"id": gid}), 404, "NonexistentTenant")
    problem("tenant.undeclared.batch", ghost.post("/entityOperations/create", [{"id": gid, "type": run.type}]),
            404, "NonexistentTenant")
    problem("tenant.invalid_name", run.c.with_tenant("bad tenant!").get(run.e(gid)), 400, None)
    for cl in (a, b, default):
        check(f"tenant.undeclared.nothing_written.{cl.tenant or 'default'}", not run.exists(gid, cl))


def g_errors(run: Run) -> None:
    """The error matrix. Every request here must fail and write nothing (checked at the end)."""
    c, url = run.c, run.ctx_url
    ids = []

    def eid():
        ids.append(run.id("err"))
        run.track(ids[-1])      # deleted at the end should the connector have written it after all
        return ids[-1]

    def ent(i=None):
        return {"id": i or eid(), "type": run.type, "level": {"type": "Property", "value": 1}}

    problem("error.malformed_json", c.post("/entities", raw=b'{"id": "urn:a:b", "type": ', ctype="application/json"),
            400, "InvalidRequest")
    problem("error.empty_body", c.post("/entities", raw=b"", ctype="application/json"), 400, "InvalidRequest")
    problem("error.not_an_object", c.post("/entities", [ent()], link_url=url), 400, "InvalidRequest")
    problem("error.invalid_id", c.post("/entities", {"id": "not a uri", "type": run.type}), 400, "BadRequestData")
    problem("error.missing_type", c.post("/entities", {"id": eid()}), 400, "BadRequestData")
    problem("error.null_value", c.post("/entities", {"id": eid(), "type": run.type,
                                                    "level": {"type": "Property", "value": None}}), 400, "BadRequestData")
    problem("error.bad_relationship", c.post("/entities", {"id": eid(), "type": run.type,
                                                          "owner": {"type": "Relationship", "object": "not a uri"}}),
            400, "BadRequestData")
    problem("error.bad_geometry", c.post("/entities", {"id": eid(), "type": run.type,
                                                      "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": "x"}}}),
            400, "BadRequestData")
    problem("error.invalid_id_in_path", c.get("/entities/not-a-uri"), 400, "BadRequestData")
    problem("error.empty_id_in_path", c.post("/entities//attrs", {"level": {"type": "Property", "value": 1}}),
            400, "BadRequestData")
    problem("error.unknown_param.query", c.get("/entities", query={"type": run.type, "bogus": "1"}), 400, "InvalidRequest")
    problem("error.unknown_param.create", c.post("/entities", ent(), query={"bogus": "1"}), 400, "InvalidRequest")
    problem("error.unknown_param.purge", c.delete("/entities", query={"bogus": "1"}), 400, "InvalidRequest")
    problem("error.accept_xml", c.get(run.e(eid()), accept="application/xml"), 406, None)
    # Accept is checked on writes too (their responses may carry JSON bodies): 406, nothing written
    for cid, path, body, accept in [
            ("create", "", None, "application/xml"),
            ("batch", "/entityOperations/create", "batch", "application/geo+json"),
            ("append", "/attrs", None, "application/xml")]:
        i = run.id("acc")
        run.track(i)
        if cid == "append":
            c.post("/entities", ent(i))
            r = c.post(run.e(i) + "/attrs", {"note": {"type": "Property", "value": 1}}, accept=accept)
            written = "note" in (c.get(run.e(i)).json() or {})
        else:
            r = c.post(path or "/entities", [ent(i)] if body else ent(i), accept=accept)
            written = run.exists(i)
        problem(f"error.accept_on_write.{cid}", r, 406, None)
        check(f"error.accept_on_write.{cid}.nothing_written", not written, f"{i} was written: {r.brief()}")
    problem("error.content_type_xml", c.post("/entities", raw=b"<entity/>", ctype="application/xml"), 415, None)
    problem("error.content_type_xml.json_body", c.post("/entities", ent(), ctype="application/xml"), 415, None)
    problem("error.content_type_text.batch", c.post("/entityOperations/create", [ent()], ctype="text/plain"), 415, None)
    problem("error.merge_patch_on_create", c.post("/entities", ent(), ctype="application/merge-patch+json"), 415, None)

    # a valid entity whose body is over the limit: `level` holds a long string
    head = json.dumps({"id": eid(), "type": run.type}).encode()[:-1] + b', "level": {"type": "Property", "value": "'
    tail = b'"}}'
    size = run.body_bytes
    try:
        r = c.stream("POST", "/entities", head, size - len(head) - len(tail), tail, "application/json")
        problem("error.body_too_large", r, 413, None)
    except (OSError, http.client.HTTPException) as e:
        check("error.body_too_large", False, f"no response to a {size}-byte body: {e!r}")

    # nesting: sub-attributes 40 levels deep (refused), JSON 100 000 levels deep (refused, no crash)
    deep = {"type": "Property", "value": 0}
    for _ in range(40):
        deep = {"type": "Property", "value": 0, "level": deep}
    problem("error.nested_sub_attributes", c.post("/entities", {"id": eid(), "type": run.type, "level": deep},
                                                  link_url=url), 400, "BadRequestData")
    depth = 100_000
    raw = (b'{"id": "' + eid().encode() + b'", "type": "T", "level": {"type": "Property", "value": '
           + b"[" * depth + b"]" * depth + b"}}")
    problem("error.nested_json", c.post("/entities", raw=raw, ctype="application/json"), 400, "InvalidRequest")
    r = c.get("/health", api=False)
    check("error.alive_after_nesting", r.status == 200, r.brief())

    # an @context that cannot be had (nothing listens on port 9 of the connector's host)
    missing = f"http://127.0.0.1:9/blackbox-{run.rid}/context.jsonld"
    t0 = time.monotonic()
    problem("error.context_unavailable.body", c.post("/entities", dict(ent(), **{"@context": missing})),
            503, "LdContextNotAvailable")
    problem("error.context_unavailable.link", c.post("/entities", ent(), link_url=missing), 503, "LdContextNotAvailable")
    problem("error.context_unavailable.get", c.get(run.e(eid()), link_url=missing), 503, "LdContextNotAvailable")
    r = c.post("/entityOperations/create", [dict(ent(), **{"@context": missing})], ctype="application/ld+json")
    errs = (r.json() or {}).get("errors") or [{}]
    check("error.context_unavailable.batch", r.status in (207, 503) and (
        r.status == 503 and not problem_issues(r, 503, "LdContextNotAvailable")
        or (errs[0].get("error") or {}).get("type") == ERRORS + "LdContextNotAvailable"), r.brief())
    check("error.context_unavailable.fast", time.monotonic() - t0 < 15, f"{time.monotonic() - t0:.1f}s")
    problem("error.context_invalid", c.post("/entities", dict(ent(), **{"@context": {"level": 5}})), 400, None)

    # operations on things that do not exist
    problem("error.update_unknown", c.patch(run.e(eid()) + "/attrs", {"level": {"type": "Property", "value": 2}},
                                            link_url=url), 404, "ResourceNotFound")
    problem("error.delete_unknown", c.delete(run.e(eid())), 404, "ResourceNotFound")
    problem("error.method_not_allowed", c.request("PUT", "/entityOperations/create", [ent()]), 405, None)
    problem("error.unknown_path", c.get("/nothing-here"), 404, None)

    # resources of the spec not implemented yet: 501 with a ProblemDetails, never silently ignored
    for cid, method, path, kw in [
        ("subscriptions", "POST", "/subscriptions", {"body": {"id": f"urn:ngsi-ld:Subscription:{run.rid}",
                                                              "type": "Subscription", "entities": [{"type": "T"}],
                                                              "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}}}}),
        ("subscriptions.list", "GET", "/subscriptions", {}),
        ("temporal", "GET", "/temporal/entities", {"query": {"type": run.type}}),
    ]:
        problem(f"error.not_implemented.{cid}", c.request(method, path, **kw), 501, "OperationNotSupported")

    # nothing was written
    r = c.get("/entities", query={"idPattern": run.pattern("err-"), "count": "true", "limit": "0"})
    check("error.nothing_written.count", r.status == 200 and r.headers.get("ngsild-results-count") == "0",
          f"NGSILD-Results-Count {r.headers.get('ngsild-results-count')!r}: {r.brief()}")
    left = [i for i in ids if c.get(run.e(i)).status != 404]
    check("error.nothing_written.each", not left, f"these exist: {left}")


GROUPS = [("context", g_context), ("create_retrieve", g_create_retrieve), ("attributes", g_attributes),
          ("batch", g_batch), ("query", g_query), ("purge", g_purge), ("tenants", g_tenants),
          ("errors", g_errors)]


def cleanup(run: Run) -> None:
    for tenant, ids in run.created.items():
        cl = run.c.with_tenant(tenant)
        for i in sorted(ids):
            r = cl.delete(run.e(i))
            if r.status not in (204, 404):
                print(f"warning: cleanup of {i} (tenant {tenant or 'default'}): {r.brief()}", flush=True)
    for local_id in run.hosted:
        run.c.delete("/jsonldContexts/" + urllib.parse.quote(local_id, safe=""))
    for tenant in run.created:
        cl = run.c.with_tenant(tenant)
        r = cl.get("/entities", query={"idPattern": run.pattern(), "count": "true", "limit": "0"})
        check(f"cleanup.nothing_left.{tenant or 'default'}",
              r.status == 200 and r.headers.get("ngsild-results-count") == "0",
              f"NGSILD-Results-Count {r.headers.get('ngsild-results-count')!r}: {r.brief()}")
    if run.hosted:
        r = run.c.get("/jsonldContexts/" + urllib.parse.quote(run.hosted[0], safe=""))
        problem("cleanup.context_deleted", r, 404, "ResourceNotFound")


# --------------------------------------------------------------------------- the service

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`BIN connector` on a fresh SQLite database, stopped (and its directory removed) at the end."""

    def __init__(self, binary: str, config: Path, keep: bool):
        self.binary, self.config, self.keep = binary, config, keep
        self.tmp = tempfile.mkdtemp(prefix="civitas-blackbox-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = Path(self.tmp) / "civitas.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        cmd = [self.binary, "connector", "--config", str(self.config),
               "--database-url", f"sqlite://{self.tmp}/bb.db", "--listen", f"127.0.0.1:{self.port}"]
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        client = Client(self.base, timeout=2)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if client.get("/health", api=False).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        code = self.proc.poll()
        tail = self.log.read_text(errors="replace")[-2000:]
        self.stop()
        raise SystemExit(f"{self.binary} did not answer GET /health (exit code {code}); log:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.keep:
            print(f"kept {self.tmp} (database and civitas.log)", flush=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------ main

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", metavar="BASE", help="a running connector, base URL without /ngsi-ld/v1")
    where.add_argument("--civitas", metavar="BIN", help="start BIN connector on a fresh database and test it")
    p.add_argument("--config", type=Path, default=HERE / "connector.toml",
                   help="connector settings for --civitas (default: conformance/blackbox/connector.toml)")
    p.add_argument("--tenant", help="run the checks in this tenant (NGSILD-Tenant) instead of the default one")
    p.add_argument("--tenant-a", help="a tenant the deployment declares (tenant checks; with --civitas: blackbox-a)")
    p.add_argument("--tenant-b", help="another declared tenant (with --civitas: blackbox-b)")
    p.add_argument("--body-mib", type=float, default=40,
                   help="size of the over-the-limit body, MiB (default 40; the connector's default limit is 32)")
    p.add_argument("--group", action="append", choices=[g for g, _ in GROUPS],
                   help="run only this group (repeatable; the context group always runs)")
    p.add_argument("--keep", action="store_true", help="with --civitas: keep the database directory and log")
    p.add_argument("-v", "--verbose", action="store_true", help="also print passing checks")
    args = p.parse_args(argv)
    if bool(args.tenant_a) != bool(args.tenant_b):
        p.error("--tenant-a and --tenant-b go together")
    return args


def main(argv: list[str]) -> int:
    global R
    args = parse_args(argv)
    R = Results(args.verbose)
    service = None
    if args.civitas:
        service = Service(args.civitas, args.config.resolve(), args.keep)
        service.start()
        base = service.base
        tenants = (args.tenant_a, args.tenant_b) if args.tenant_a else ("blackbox-a", "blackbox-b")
    else:
        base = args.url
        tenants = (args.tenant_a, args.tenant_b) if args.tenant_a else None
    t0 = time.monotonic()
    try:
        run = Run(Client(base, args.tenant), tenants, int(args.body_mib * (1 << 20)))
        print(f"black-box run {run.rid} against {base}{' (tenant ' + args.tenant + ')' if args.tenant else ''}",
              flush=True)
        try:
            for name, group in GROUPS:
                if args.group and name != "context" and name not in args.group:
                    continue
                try:
                    group(run)
                except Stop as stop:
                    print(f"      ({name}: stopped after {stop})", flush=True)
                    if name == "context":
                        break
                except Exception as e:  # a bug in the test or a response it did not expect
                    check(f"{name}.exception", False, "".join(traceback.format_exception_only(e)).strip())
                    if args.verbose:
                        traceback.print_exc()
        finally:
            cleanup(run)
    finally:
        if service:
            service.stop()
    if R.xfailed:
        print(f"{len(R.xfailed)} expected failures (KNOWN), known connector bugs:")
        for why in dict.fromkeys(k for _, _, k in R.xfailed):
            print(f"  - {why}: " + ", ".join(c for c, _, k in R.xfailed if k == why))
    if R.xpassed:
        print(f"{len(R.xpassed)} KNOWN checks now pass: " + ", ".join(R.xpassed))
    print(f"({time.monotonic() - t0:.1f}s)")
    print(f"{R.passed} passed, {R.failed} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
