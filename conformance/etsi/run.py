#!/usr/bin/env python3
"""Run the ETSI NGSI-LD test suite (ETSI GS CIM 014, Robot Framework) against Civitas.

Standard library only (Python >= 3.11). Robot Framework and its libraries live in a
virtualenv that this script creates and fills from requirements.txt beside it.

Two ways to point it at a service:

  --civitas BIN   start `BIN connector` per selected folder, each on a fresh SQLite
                  database (this is how state is reset between folders), wait for
                  GET /health, run robot, stop the service.
  --url BASE      use a service that is already running (BASE without /ngsi-ld/v1);
                  state is NOT reset between folders.

Pass/fail is counted from each folder's output.xml with robot.api.ExecutionResult,
never from robot's exit code (which is the failure count capped at 250). The last
line printed is exactly `N passed, N failed`.

Run `run.py --help` for all options; conformance/README.md has the one-line command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent            # conformance/etsi
CONFORMANCE = HERE.parent                          # conformance
REPO = CONFORMANCE.parent                          # repository root

DEFAULT_FOLDERS = [
    "TP/NGSI-LD/CommonBehaviours",
    "TP/NGSI-LD/ContextInformation/Provision/Entities",
    "TP/NGSI-LD/ContextInformation/Provision/EntityAttributes",
    "TP/NGSI-LD/ContextInformation/Provision/BatchEntities",
    "TP/NGSI-LD/ContextInformation/Provision/PurgeEntities",
    "TP/NGSI-LD/jsonldContext",
]
ALWAYS_EXCLUDE = ["sub-mqtt-notification"]          # MQTT tests start Docker containers
MOCK_PORTS = {8085: "notification server", 8086: "context source", 8087: "@context server"}
CORE_CONTEXT_V18 = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
NGSI_LD_PATH = "/ngsi-ld/v1"

# Runs inside the venv's python: reads output.xml files, prints one JSON document.
COUNT_SCRIPT = r"""
import json, re, sys
from robot.api import ExecutionResult, ResultVisitor

class Collect(ResultVisitor):
    def __init__(self):
        self.failed = []
    def visit_test(self, test):
        if test.status == "FAIL":
            name = test.name
            m = re.match(r"^(\S+)\s+(.*)$", name)
            tid, title = (m.group(1), m.group(2)) if m and re.search(r"\d", m.group(1)) else ("", name)
            lines = [l.strip() for l in (test.message or "").strip().splitlines() if l.strip()]
            msg = lines[0] if lines else ""
            if msg.endswith(":") and len(lines) > 1:  # e.g. "Setup failed:" + the real reason
                msg = msg + " " + lines[1]
            self.failed.append({"id": tid, "name": title, "source": str(test.source or ""),
                                "message": msg, "tags": list(test.tags)})

out = {}
for path in sys.argv[1:]:
    try:
        result = ExecutionResult(path)
    except Exception as exc:  # unreadable / truncated output.xml
        out[path] = {"error": "%s: %s" % (type(exc).__name__, exc)}
        continue
    total = result.statistics.total
    visitor = Collect()
    result.visit(visitor)
    out[path] = {"passed": total.passed, "failed": total.failed, "skipped": total.skipped,
                 "failures": visitor.failed}
print(json.dumps(out))
"""


def log(msg: str) -> None:
    print(f"[etsi] {msg}", flush=True)


def warn(msg: str) -> None:
    print(f"[etsi] WARNING: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- venv

def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(venv: Path, python: str, requirements: Path, offline_ok: bool) -> Path:
    """Create the venv if missing and install the pinned requirements if they changed."""
    py = venv_python(venv)
    if not py.exists():
        log(f"creating venv {venv} with {python}")
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = venv / ".requirements.sha256"
    if stamp.exists() and stamp.read_text().strip() == digest:
        return py
    log(f"installing {requirements.name} into {venv}")
    proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "-r", str(requirements)])
    if proc.returncode != 0:
        if offline_ok:
            warn("pip install failed; trying with what is installed")
            return py
        raise SystemExit(f"pip install -r {requirements} failed (exit {proc.returncode})")
    stamp.write_text(digest + "\n")
    return py


def install_suite_mock(py: Path, suite: Path) -> None:
    """Replace PyPI's HttpCtrl with the copy the suite carries in libraries/. The distributed-
    operations tests are written for it: its stubs match a forwarded write whatever its query
    string or trailing slash (PyPI's compare the whole URL), as their stub counts assume."""
    source = suite / "libraries" / "robotframework-httpctrl"
    if not (source / "setup.py").exists():
        raise SystemExit(f"{source} is missing: --suite-mock needs the suite's own HttpCtrl")
    stamp = py.parent.parent / ".suite-mock"
    commit = subprocess.run(["git", "-C", str(suite), "rev-parse", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    if stamp.exists() and stamp.read_text().strip() == commit:
        return
    log(f"installing the suite's HttpCtrl from {source}")
    proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps",
                           "--force-reinstall", str(source)])
    if proc.returncode != 0:
        raise SystemExit(f"installing {source} failed (exit {proc.returncode})")
    stamp.write_text(commit + "\n")


# --------------------------------------------------------------------------- folders

def resolve_folder(suite: Path, name: str) -> str:
    """Accept `TP/NGSI-LD/X`, `X` (under TP/NGSI-LD), `Provision/X` (under ContextInformation),
    or a folder name that is unique under TP/NGSI-LD (e.g. `PurgeEntities`)."""
    name = name.strip().strip("/")
    for cand in (name, f"TP/NGSI-LD/{name}", f"TP/NGSI-LD/ContextInformation/{name}"):
        p = suite / cand
        if p.exists():
            return p.relative_to(suite).as_posix()
    matches = [p for p in (suite / "TP" / "NGSI-LD").rglob(name) if p.is_dir()]
    if len(matches) == 1:
        return matches[0].relative_to(suite).as_posix()
    if len(matches) > 1:
        raise SystemExit(f"folder {name!r} is ambiguous: " +
                         ", ".join(sorted(m.relative_to(suite).as_posix() for m in matches)))
    raise SystemExit(f"folder {name!r} not found in {suite} (tried TP/NGSI-LD/ and "
                     "TP/NGSI-LD/ContextInformation/ prefixes, or a unique folder name)")


def slug(folder: str) -> str:
    short = folder[len("TP/NGSI-LD/"):] if folder.startswith("TP/NGSI-LD/") else folder
    return short.replace("/", "-").replace(".robot", "") or "all"


def short_folder(source: str, suite: Path) -> str:
    """Folder of a test's .robot file, relative to TP/NGSI-LD."""
    try:
        rel = Path(source).resolve().relative_to(suite.resolve() / "TP" / "NGSI-LD")
        return rel.parent.as_posix()
    except (ValueError, OSError):
        return Path(source).parent.name


# --------------------------------------------------------------------------- service

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_health(base: str, proc: subprocess.Popen | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if 200 <= r.status < 300:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    return False


class Service:
    """One `civitas connector` process on a fresh database."""

    def __init__(self, args: argparse.Namespace, outdir: Path):
        self.args = args
        self.outdir = outdir
        self.proc: subprocess.Popen | None = None
        self.tmp: str | None = None
        self.logf = None
        self.port = args.port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="civitas-etsi-")
        db_url = self.args.database_url.format(dir=self.tmp)
        cmd = [self.args.civitas, "connector", "--config", str(self.args.config),
               "--database-url", db_url, "--listen", f"127.0.0.1:{self.port}"]
        self.logf = open(self.outdir / "civitas.log", "wb")
        log("starting: " + " ".join(cmd))
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        if not wait_health(self.base, self.proc, self.args.startup_timeout):
            code = self.proc.poll()
            self.stop()
            tail = (self.outdir / "civitas.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"civitas did not become healthy at {self.base}/health "
                               f"(exit code {code}); log tail:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.logf:
            self.logf.close()
            self.logf = None
        if self.tmp and not self.args.keep_db:
            shutil.rmtree(self.tmp, ignore_errors=True)
        elif self.tmp:
            log(f"kept database dir {self.tmp}")


# --------------------------------------------------------------------------- robot

def robot_command(py: Path, args: argparse.Namespace, base: str, outdir: Path, folder: str) -> list[str]:
    api = base.rstrip("/") + NGSI_LD_PATH
    cmd = [str(py), "-m", "robot",
           "--outputdir", str(outdir), "--output", "output.xml",
           "--log", "log.html", "--report", "report.html",
           "--consolewidth", "150", "--runemptysuite",
           "--variable", f"url:{api}",
           "--variable", f"temporal_api_url:{api}",
           "--variable", "notification_server_host:127.0.0.1",
           "--variable", "context_source_host:127.0.0.1",
           "--variable", "context_server_host:127.0.0.1",
           "--variable", f"core_context:{args.core_context}"]
    for tag in ALWAYS_EXCLUDE + args.exclude:
        cmd += ["--exclude", tag]
    for tag in args.include:
        cmd += ["--include", tag]
    for name in args.test:
        cmd += ["--test", name]
    cmd += args.robot_args
    cmd.append(folder)
    return cmd


def run_robot(cmd: list[str], suite: Path, outdir: Path, timeout: float, verbose: bool) -> int:
    console = outdir / "console.log"
    with open(console, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=suite, stdout=subprocess.PIPE if verbose else f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            if verbose:
                assert proc.stdout is not None
                os.set_blocking(proc.stdout.fileno(), False)
                while proc.poll() is None and time.monotonic() < deadline:
                    chunk = proc.stdout.read()
                    if chunk:
                        f.write(chunk)
                        sys.stdout.buffer.write(chunk)
                        sys.stdout.flush()
                    time.sleep(0.2)
                rest = proc.stdout.read() if proc.poll() is not None else None
                if rest:
                    f.write(rest)
                    sys.stdout.buffer.write(rest)
            else:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)   # robot stops gracefully, still writes output.xml
            proc.wait(timeout=60)
            raise
        if proc.poll() is None:
            warn(f"robot exceeded --folder-timeout {timeout:.0f}s; stopping it gracefully")
            proc.send_signal(signal.SIGINT)   # graceful: remaining tests fail, output.xml written
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)  # second SIGINT: robot stops at once
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        return proc.returncode


def count_results(py: Path, outputs: list[Path]) -> dict:
    proc = subprocess.run([str(py), "-c", COUNT_SCRIPT, *map(str, outputs)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit("could not read robot results:\n" + proc.stderr)
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------- report

def md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def failures_table(rows: list[dict]) -> str:
    lines = ["| Test | Name | Folder | Failure (first line) |", "| --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["folder"], r["id"], r["name"])):
        msg = r["message"]
        if len(msg) > 200:
            msg = msg[:197] + "..."
        lines.append(f"| {md_escape(r['id'])} | {md_escape(r['name'])} | "
                     f"{md_escape(r['folder'])} | {md_escape(msg)} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str]) -> argparse.Namespace:
    passthrough: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(
        description="Run the ETSI NGSI-LD test suite against Civitas "
                    "(arguments after `--` go to robot unchanged).")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--civitas", metavar="BIN",
                        help="civitas binary; started per folder on a fresh database")
    target.add_argument("--url", metavar="BASE",
                        help="base URL of a running service, WITHOUT /ngsi-ld/v1 (no state reset)")
    target.add_argument("--no-run", action="store_true",
                        help="do not run anything; recount the output.xml files already in --results")
    p.add_argument("--suite", type=Path,
                   default=Path(os.environ.get("ETSI_SUITE", REPO.parent / "etsi-suite")),
                   help="checkout of the ETSI NGSI-LD test suite "
                        "(default: $ETSI_SUITE or ../etsi-suite next to the repository)")
    p.add_argument("--folder", action="append", default=[],
                   help="suite folder to run (repeatable): TP/NGSI-LD/X, X, or Provision/X; "
                        "default: the issue #2 folders")
    p.add_argument("--test", action="append", default=[], help="robot --test pattern (repeatable)")
    p.add_argument("--include", action="append", default=[], help="robot --include tag pattern")
    p.add_argument("--exclude", action="append", default=[],
                   help="robot --exclude tag pattern (sub-mqtt-notification is always excluded)")
    p.add_argument("--results", type=Path, default=CONFORMANCE / "results",
                   help="where robot writes output (default: conformance/results)")
    p.add_argument("--venv", type=Path, default=CONFORMANCE / ".venv-etsi",
                   help="virtualenv for robot (default: conformance/.venv-etsi)")
    p.add_argument("--suite-mock", action="store_true",
                   help="use the suite's own HttpCtrl mock (libraries/) instead of PyPI's, in a "
                        "venv of its own: what the DistributedOperations tests are written for")
    p.add_argument("--python", default=sys.executable, help="interpreter used to create the venv")
    p.add_argument("--config", type=Path, default=HERE / "connector.toml",
                   help="connector config for --civitas (default: conformance/etsi/connector.toml)")
    p.add_argument("--database-url", default="sqlite://{dir}/etsi.db",
                   help="database URL template for --civitas; {dir} is a fresh temporary directory")
    p.add_argument("--port", type=int, default=0, help="port for --civitas (default: a free one)")
    p.add_argument("--keep-db", action="store_true", help="keep the temporary databases")
    p.add_argument("--startup-timeout", type=float, default=60, help="seconds to wait for /health")
    p.add_argument("--folder-timeout", type=float, default=2400,
                   help="seconds before a folder's robot run is stopped (default 2400)")
    p.add_argument("--core-context", default=CORE_CONTEXT_V18,
                   help="the core @context URL the service uses (robot variable core_context)")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even if tests failed (still non-zero if nothing ran)")
    p.add_argument("--list-failures", nargs="?", const="-", metavar="FILE",
                   help="write a markdown table of failed tests to FILE (or stdout)")
    p.add_argument("--robot-arg", action="append", default=[], dest="robot_args_opt",
                   help="one extra argument for robot (repeatable); or put them after `--`")
    p.add_argument("-v", "--verbose", action="store_true", help="also stream robot's console output")
    args = p.parse_args(argv)
    args.robot_args = args.robot_args_opt + passthrough
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    suite = args.suite.resolve()
    if not (suite / "TP" / "NGSI-LD").is_dir() or not (suite / "resources").is_dir():
        raise SystemExit(f"{suite} is not a checkout of the ETSI NGSI-LD test suite (use --suite)")
    folders = [resolve_folder(suite, f) for f in (args.folder or DEFAULT_FOLDERS)]
    results_dir = args.results.resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    venv = args.venv.resolve()
    if args.suite_mock:
        venv = venv.with_name(venv.name + "-suite-mock")
    py = ensure_venv(venv, args.python, HERE / "requirements.txt", args.no_run)
    if args.suite_mock and not args.no_run:
        install_suite_mock(py, suite)

    if args.civitas:
        args.civitas = str(Path(args.civitas).resolve()) if os.sep in args.civitas else args.civitas
        if shutil.which(args.civitas) is None:
            raise SystemExit(f"civitas binary not found: {args.civitas}")
        args.config = args.config.resolve()
        if not args.config.exists():
            raise SystemExit(f"config not found: {args.config}")
    if args.url:
        args.url = args.url.rstrip("/")
        if args.url.endswith(NGSI_LD_PATH):
            args.url = args.url[: -len(NGSI_LD_PATH)]
            warn(f"--url should not include {NGSI_LD_PATH}; using {args.url}")
        if len(folders) > 1:
            warn("--url: state is NOT reset between folders (tests comparing full lists may fail); "
                 "use --civitas BIN for a fresh store per folder")
    if not args.no_run:
        for port, what in MOCK_PORTS.items():
            if port_busy(port):
                warn(f"port {port} ({what} mock of the suite) is already in use")

    outputs: list[tuple[str, Path]] = []
    errors: list[str] = []
    for folder in folders:
        outdir = results_dir / slug(folder)
        if not args.no_run:
            if outdir.exists():
                shutil.rmtree(outdir)
            outdir.mkdir(parents=True)
            service = None
            try:
                if args.civitas:
                    service = Service(args, outdir)
                    service.start()
                    base = service.base
                else:
                    base = args.url
                log(f"running {folder} against {base}{NGSI_LD_PATH}")
                t0 = time.monotonic()
                rc = run_robot(robot_command(py, args, base, outdir, folder), suite, outdir,
                               args.folder_timeout, args.verbose)
                log(f"  robot finished in {time.monotonic() - t0:.0f}s (exit {rc}; not used for counting)")
            except RuntimeError as exc:
                errors.append(f"{folder}: {exc}")
                warn(str(exc))
                continue
            finally:
                if service is not None:
                    service.stop()
        out = outdir / "output.xml"
        if out.exists():
            outputs.append((folder, out))
        else:
            errors.append(f"{folder}: no output.xml (see {outdir / 'console.log'})")
            warn(errors[-1])

    counted = count_results(py, [o for _, o in outputs]) if outputs else {}
    passed = failed = skipped = 0
    failure_rows: list[dict] = []
    print()
    for folder, out in outputs:
        r = counted[str(out)]
        if "error" in r:
            errors.append(f"{folder}: unreadable output.xml: {r['error']}")
            print(f"  {folder}: ERROR {r['error']}")
            continue
        passed += r["passed"]
        failed += r["failed"]
        skipped += r["skipped"]
        extra = f", {r['skipped']} skipped" if r["skipped"] else ""
        print(f"  {folder}: {r['passed']} passed, {r['failed']} failed{extra}")
        for f in r["failures"]:
            f["folder"] = short_folder(f["source"], suite) if f["source"] else slug(folder)
            failure_rows.append(f)
    if errors:
        print(f"  {len(errors)} folder(s) could not be run or read:")
        for e in errors:
            print(f"    - {e.splitlines()[0]}")
    print(f"  results: {results_dir}")

    if args.list_failures:
        table = failures_table(failure_rows)
        if args.list_failures == "-":
            print()
            print(table, end="")
        else:
            Path(args.list_failures).write_text(table)
            log(f"wrote {len(failure_rows)} failures to {args.list_failures}")
    if skipped:
        print(f"({skipped} skipped)")
    print(f"{passed} passed, {failed} failed", flush=True)

    if errors:
        return 2
    if passed + failed == 0:
        warn("no test was executed")
        return 3
    if failed and not args.allow_failures:
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
