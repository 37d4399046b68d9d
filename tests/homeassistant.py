"""A real Home Assistant core for tests: its cached venv, a config dir, a running instance,
its REST API and a websocket recorder of its state changes.

Home Assistant (`homeassistant==2024.3.3`, the newest release for Python 3.11) lives in its own
venv, `.cache/ha-venv` (git-ignored; `$SOUNDMON_HA_VENV` overrides), built once by
`build_venv()` (`make ha-venv`, or the test fixture when it is missing):

1. `pip install --no-deps homeassistant==2024.3.3`, to read its manifests and its pinned
   `homeassistant/package_constraints.txt`;
2. the requirements of every integration the test instance sets up -- the ones in our
   configuration.yaml, the `mqtt` config entry, HA's DEFAULT_INTEGRATIONS (set up whatever the
   configuration says; `frontend` is critical: without it HA falls into recovery mode and
   loads no config entry) and all their dependencies -- are installed in one resolve together
   with HA's own, under HA's constraints (so `paho-mqtt==1.6.1` for its mqtt integration);
3. a stamp file records the version and the requirement list: a venv without it (an
   interrupted build) is built again.

HA then runs with `--skip-pip`: it never installs anything at run time.

The instance (`HomeAssistant`) is bound to 127.0.0.1 on a free port with a minimal
configuration.yaml (no `default_config`: no discovery protocols, no cloud, no updater), MQTT
configured by a pre-written config entry in `.storage/core.config_entries`, onboarded through
its REST API (`/api/onboarding/users`, then `/auth/token`) for an access token; services
(a number's `set_value`, a switch's `turn_off`, ...) are called through the same REST API. Its Python
process also loads a network guard (`sitecustomize.py` on its PYTHONPATH): a connection,
datagram or name lookup towards anything but the loopback range is refused and written to
`net_guard.log`, which the tests read.

Stdlib only: `python tests/homeassistant.py events ...` runs under the HA venv's python (it
has aiohttp) to record state changes from HA's websocket API; `python -m tests.homeassistant
build` builds the venv.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

__all__ = [
    "HA_VERSION",
    "HomeAssistant",
    "build_venv",
    "integration_requirements",
    "read_events",
    "venv_dir",
    "venv_ready",
]

HA_VERSION = "2024.3.3"
REPO = Path(__file__).resolve().parents[1]
STAMP_NAME = ".soundmon-complete"
# What our configuration.yaml and config entries set up (HA adds its defaults to these).
CONFIGURED_DOMAINS = ("http", "api", "logger", "mqtt", "websocket_api")
BUILD_TIMEOUT_S = 1200.0


def venv_dir() -> Path:
    return Path(os.environ.get("SOUNDMON_HA_VENV") or REPO / ".cache" / "ha-venv")


def venv_python(venv: Path | None = None) -> Path:
    return (venv or venv_dir()) / "bin" / "python"


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise RuntimeError(f"no site-packages in {venv}")
    return found[0]


def venv_ready(venv: Path | None = None) -> bool:
    """True when the venv was completely built for HA_VERSION (its stamp file exists)."""
    venv = venv or venv_dir()
    stamp = venv / STAMP_NAME
    return (
        stamp.is_file()
        and stamp.read_text().startswith(f"homeassistant=={HA_VERSION}\n")
        and (venv / "bin" / "hass").exists()
    )


def _set_literal(tree: ast.Module, name: str) -> set[str]:
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            value = node.value
            if isinstance(value, ast.Set):
                out: set[str] = set()
                for elt in value.elts:
                    if isinstance(elt, ast.Constant):
                        out.add(elt.value)
                return out
    raise RuntimeError(f"homeassistant/bootstrap.py: no set literal {name}")


_IMPORT = re.compile(
    r"homeassistant\.components\.([a-z0-9_]+)"
    r"|from \.\.([a-z0-9_]+)\b"
    r"|from homeassistant\.components import \(?([a-z0-9_, \n]+)\)?"
)


def _imported_integrations(components: Path, domain: str) -> set[str]:
    """Integrations whose modules `domain`'s code imports (HA's manifests do not list all:
    analytics imports recorder, camera imports stream, ...)."""
    out: set[str] = set()
    for f in (components / domain).glob("*.py"):
        for m in _IMPORT.finditer(f.read_text(errors="replace")):
            if m[1] or m[2]:
                out.add(m[1] or m[2])
            else:
                out |= {x.strip() for x in m[3].replace("\n", " ").split(",") if x.strip()}
    return {d for d in out if (components / d / "manifest.json").is_file()}


def integration_requirements(ha_package: Path) -> tuple[list[str], list[str]]:
    """(integrations, requirements) our instance needs, read from HA's files (no import).

    Set up: our configured domains, HA's DEFAULT_INTEGRATIONS and CORE_INTEGRATIONS, the
    entity platforms the mqtt entry sets up (all of `mqtt/const.py`'s PLATFORMS: camera,
    light, ...), and their dependencies; every integration they import has its requirements
    installed too, so no import fails under --skip-pip.
    """
    components = ha_package / "components"
    tree = ast.parse((ha_package / "bootstrap.py").read_text())
    wanted = set(CONFIGURED_DOMAINS)
    wanted |= _set_literal(tree, "DEFAULT_INTEGRATIONS") | _set_literal(tree, "CORE_INTEGRATIONS")
    mqtt_const = (components / "mqtt" / "const.py").read_text()
    wanted |= {p.lower() for p in re.findall(r"Platform\.([A-Z_]+)", mqtt_const)}
    todo, done, reqs = sorted(wanted), set(), set()
    while todo:
        domain = todo.pop()
        if domain in done:
            continue
        done.add(domain)
        manifest = json.loads((components / domain / "manifest.json").read_text())
        reqs.update(manifest.get("requirements", []))
        more = set(manifest.get("dependencies", [])) | _imported_integrations(components, domain)
        todo.extend(sorted(more - done))
    return sorted(done), sorted(reqs)


# Known breakage of HA 2024.3's pins: hass-nabucasa -> acme 2.8 needs josepy < 2 (josepy 2
# removed ComparableX509), and HA's constraints do not cap it.
EXTRA_CONSTRAINTS = ("josepy<2",)


def build_venv(venv: Path | None = None, log_path: Path | None = None) -> float:
    """Create (or complete) the HA venv; returns the seconds it took (0 if it was ready).

    Output goes to `log_path` (default: beside the venv). Raises RuntimeError with the log's
    tail if pip fails (e.g. no access to PyPI).
    """
    venv = venv or venv_dir()
    if venv_ready(venv):
        return 0.0
    venv.parent.mkdir(parents=True, exist_ok=True)
    log_path = log_path or venv.with_name(venv.name + "-build.log")
    lock_path = venv.with_name(venv.name + ".lock")
    import fcntl

    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another build (make ha-venv, a parallel test) waits
        if venv_ready(venv):
            return 0.0
        t0 = time.monotonic()
        with open(log_path, "w") as log:

            def run(*cmd: str | Path) -> None:
                log.write(f"$ {' '.join(map(str, cmd))}\n")
                log.flush()
                left = BUILD_TIMEOUT_S - (time.monotonic() - t0)
                try:
                    rc = subprocess.run(
                        [str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, timeout=max(left, 1.0),
                    ).returncode  # fmt: skip
                except subprocess.TimeoutExpired:
                    rc = -1
                    log.write(f"timed out after {BUILD_TIMEOUT_S:.0f} s\n")
                log.flush()
                if rc != 0:
                    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
                    raise RuntimeError(
                        f"building the Home Assistant venv failed (exit {rc}); log {log_path}:\n{tail}"
                    )

            base = getattr(sys, "_base_executable", None) or sys.executable
            if not (venv / "bin" / "python").exists():
                run(base, "-m", "venv", venv)
            pip = venv / "bin" / "pip"
            run(pip, "install", "-q", "--upgrade", "pip")
            run(pip, "install", "-q", "--no-deps", f"homeassistant=={HA_VERSION}")
            ha_package = _site_packages(venv) / "homeassistant"
            domains, reqs = integration_requirements(ha_package)
            log.write(f"integrations: {' '.join(domains)}\nrequirements: {' '.join(reqs)}\n")
            extra = venv / "extra_constraints.txt"
            extra.write_text("\n".join(EXTRA_CONSTRAINTS) + "\n")
            run(pip, "install", "-q", "-c", ha_package / "package_constraints.txt", "-c", extra,
                f"homeassistant=={HA_VERSION}", *reqs)  # fmt: skip
            run(venv / "bin" / "python", "-c", "import homeassistant.components.mqtt, paho.mqtt")
            seconds = time.monotonic() - t0
            log.write(f"built in {seconds:.0f} s\n")
        (venv / STAMP_NAME).write_text(f"homeassistant=={HA_VERSION}\n" + "\n".join(reqs) + "\n")
        return seconds


# --------------------------------------------------------------------------- the instance

_NET_GUARD = r'''
"""Loaded by site at start-up (PYTHONPATH): refuse and log any traffic off the loopback range."""
import errno, ipaddress, os, socket, time, traceback

_LOG = os.environ.get("SOUNDMON_NET_GUARD_LOG")


def _record(kind, target):
    if _LOG:
        where = "".join(traceback.format_stack(limit=6)[:-2]).replace("\n", " | ")
        with open(_LOG, "a") as f:
            f.write(f"{time.time():.3f} {kind} {target!r} {where}\n")


def _local_ip(host):
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return None
    return ip.is_loopback or (ip.is_unspecified)


def _allowed(address):
    if not isinstance(address, tuple):  # AF_UNIX, netlink ...
        return True
    return bool(_local_ip(address[0]))


_connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto


def _kind(sock):
    return "udp-connect" if sock.type == socket.SOCK_DGRAM else "connect"  # UDP: no packet sent


def connect(self, address):
    if not _allowed(address):
        _record(_kind(self), address)
        raise OSError(errno.ENETUNREACH, "network guard: only loopback is allowed in this test")
    return _connect(self, address)


def connect_ex(self, address):
    if not _allowed(address):
        _record(_kind(self), address)
        return errno.ENETUNREACH
    return _connect_ex(self, address)


def sendto(self, data, *args):
    if args and not _allowed(args[-1]):
        _record("sendto", args[-1])
        raise OSError(errno.ENETUNREACH, "network guard: only loopback is allowed in this test")
    return _sendto(self, data, *args)


_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if name not in (None, "", "localhost") and _local_ip(name) is None:
        _record("resolve", name)
        raise socket.gaierror(socket.EAI_NONAME, "network guard: no name lookups in this test")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
socket.getaddrinfo = getaddrinfo
'''


def free_port() -> int:
    # tests.broker.free_port's twin: this file also runs as a script inside HA's own venv (the
    # event recorder), where the tests package cannot be imported, so it stays standard library.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HomeAssistant:
    """One `hass` process on 127.0.0.1:`port` with its config in `config_dir`."""

    host = "127.0.0.1"

    def __init__(self, config_dir: Path, mqtt_host: str, mqtt_port: int, venv: Path | None = None) -> None:
        self.venv = venv or venv_dir()
        self.config_dir = Path(config_dir)
        self.port = free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.mqtt = (mqtt_host, mqtt_port)
        self.proc: subprocess.Popen[bytes] | None = None
        self.token: str | None = None
        self.log_path = self.config_dir / "home-assistant.log"
        self.console_path = self.config_dir / "console.log"
        self.guard_log = self.config_dir / "net_guard.log"
        self._write_config()

    # -- config dir

    def _write_config(self) -> None:
        d = self.config_dir
        (d / ".storage").mkdir(parents=True, exist_ok=True)
        (d / "configuration.yaml").write_text(
            "homeassistant:\n"
            "  name: soundmon test\n"
            "  latitude: 0\n  longitude: 0\n  elevation: 0\n"
            "  unit_system: metric\n  time_zone: UTC\n  currency: EUR\n  country: DE\n"
            f"  internal_url: {self.url}\n"
            "http:\n"
            f"  server_host: {self.host}\n"
            f"  server_port: {self.port}\n"
            "api:\n"
            "websocket_api:\n"
            "logger:\n"
            "  default: warning\n"
        )
        entry = {
            "entry_id": uuid.uuid4().hex,
            "version": 1,
            "minor_version": 1,
            "domain": "mqtt",
            "title": f"{self.mqtt[0]}",
            "data": {"broker": self.mqtt[0], "port": self.mqtt[1], "discovery": True},
            "options": {},
            "pref_disable_new_entities": False,
            "pref_disable_polling": False,
            "source": "user",
            "unique_id": None,
            "disabled_by": None,
        }
        (d / ".storage" / "core.config_entries").write_text(
            json.dumps({"version": 1, "minor_version": 1, "key": "core.config_entries",
                        "data": {"entries": [entry]}})  # fmt: skip
        )
        guard = d / "guard"
        guard.mkdir(exist_ok=True)
        (guard / "sitecustomize.py").write_text(_NET_GUARD)

    # -- process

    def start(self, timeout: float = 300.0) -> HomeAssistant:
        """Start hass and wait until its HTTP API answers and the MQTT entry is loaded."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update(PYTHONPATH=str(self.config_dir / "guard"), SOUNDMON_NET_GUARD_LOG=str(self.guard_log),
                   PATH=f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}")  # fmt: skip
        env.pop("SUPERVISOR", None)
        with open(self.console_path, "ab") as console:
            self.proc = subprocess.Popen(
                [str(self.venv / "bin" / "hass"), "--config", str(self.config_dir), "--skip-pip",
                 "--log-file", str(self.log_path)],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hass exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                steps = self.request("GET", "/api/onboarding", auth=False, timeout=2)
                if isinstance(steps, list):
                    break
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"hass did not answer within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.5)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def tail(self, n: int = 40) -> str:
        out = []
        for p in (self.console_path, self.log_path):
            with contextlib.suppress(FileNotFoundError):
                out += p.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(out)

    def log_text(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(errors="replace")
        return ""

    def sockets(self) -> list[tuple[str, str, int]]:
        """(protocol, address, port) of every TCP socket the hass process listens on and every
        UDP socket it has bound, read from /proc (its own fds matched by inode)."""
        if self.proc is None:
            return []
        inodes = set()
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        out = []
        for proto in ("tcp", "tcp6", "udp", "udp6"):
            with contextlib.suppress(FileNotFoundError):
                rows = Path(f"/proc/{self.proc.pid}/net/{proto}").read_text().splitlines()[1:]
                for row in rows:
                    f = row.split()
                    local, state, inode = f[1], f[3], f[9]
                    if inode not in inodes or (proto.startswith("tcp") and state != "0A"):  # 0A: LISTEN
                        continue
                    hex_ip, hex_port = local.split(":")
                    raw = bytes.fromhex(hex_ip)
                    if len(raw) == 4:
                        addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
                    else:  # four little-endian 32-bit words
                        addr = socket.inet_ntop(
                            socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                        )
                    out.append((proto, addr, int(hex_port, 16)))
        return out

    def guard_text(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.guard_log.read_text(errors="replace")
        return ""

    # -- HTTP

    def request(self, method: str, path: str, data: Any = None, *, auth: bool = True,
                form: bool = False, timeout: float = 30.0) -> Any:  # fmt: skip
        headers = {}
        body = None
        if data is not None:
            if form:
                body = urllib.parse.urlencode(data).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                body = json.dumps(data).encode()
                headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
        with opener.open(req, timeout=timeout) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    def onboard(self) -> str:
        """Create the owner user through onboarding and trade its auth code for a token."""
        client_id = self.url + "/"
        user = self.request("POST", "/api/onboarding/users", {
            "client_id": client_id, "name": "Test", "username": "test",
            "password": "soundmon-test-password", "language": "en",
        }, auth=False)  # fmt: skip
        tok = self.request("POST", "/auth/token", {
            "grant_type": "authorization_code", "code": user["auth_code"], "client_id": client_id,
        }, auth=False, form=True)  # fmt: skip
        self.token = tok["access_token"]
        return self.token

    def states(self) -> dict[str, dict[str, Any]]:
        """`/api/states` as entity_id -> state object."""
        return {s["entity_id"]: s for s in self.request("GET", "/api/states")}

    def call(self, domain: str, service: str, **data: Any) -> Any:
        """Call a service through the REST API (`POST /api/services/<domain>/<service>`), as a
        dashboard does: e.g. `call("number", "set_value", entity_id=..., value=0.35)`."""
        return self.request("POST", f"/api/services/{domain}/{service}", data)

    def config_entries(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/config/config_entries/entry")

    def ws(self, *commands: dict[str, Any], timeout: float = 60.0) -> list[Any]:
        """Run websocket commands (e.g. `config/entity_registry/list`); their results."""
        out = subprocess.run(
            [str(venv_python(self.venv)), __file__, "ws", self.url, str(self.token), json.dumps(commands)],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"websocket command failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout)

    def record_events(self, path: Path) -> subprocess.Popen[bytes]:
        """Start a child that appends every `state_changed` event to `path` (JSON lines)."""
        proc = subprocess.Popen(
            [str(venv_python(self.venv)), __file__, "events", self.url, str(self.token), str(path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(str(path) + ".err", "wb"),  # noqa: SIM115
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not path.exists() or not path.read_text().startswith('{"subscribed"'):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("event recorder did not subscribe: " + Path(str(path) + ".err").read_text())
            time.sleep(0.1)
        return proc


def read_events(path: Path) -> list[dict[str, Any]]:
    """The recorded state changes: dicts with t (wall time), entity_id, state (None = removed)."""
    lines = path.read_text().splitlines()[1:]
    return [json.loads(x) for x in lines if x.strip()]


# --------------------------------------------------------------------------- HA venv side


async def _ws_connect(session: Any, url: str, token: str) -> Any:
    ws = await session.ws_connect(url.replace("http", "ws", 1) + "/api/websocket")
    assert (await ws.receive_json())["type"] == "auth_required"
    await ws.send_json({"type": "auth", "access_token": token})
    reply = await ws.receive_json()
    if reply["type"] != "auth_ok":
        raise RuntimeError(f"websocket auth failed: {reply}")
    return ws


async def _ws_commands(url: str, token: str, commands: list[dict[str, Any]]) -> list[Any]:
    import aiohttp

    results = []
    async with aiohttp.ClientSession() as session:
        ws = await _ws_connect(session, url, token)
        for i, cmd in enumerate(commands, 1):
            await ws.send_json({"id": i, **cmd})
            while True:
                msg = await ws.receive_json()
                if msg.get("id") == i and msg.get("type") == "result":
                    if not msg.get("success"):
                        raise RuntimeError(f"{cmd}: {msg}")
                    results.append(msg.get("result"))
                    break
        await ws.close()
    return results


async def _ws_events(url: str, token: str, out_path: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        ws = await _ws_connect(session, url, token)
        await ws.send_json({"id": 1, "type": "subscribe_events", "event_type": "state_changed"})
        with open(out_path, "a", buffering=1) as out:
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                data = json.loads(msg.data)
                if data.get("type") == "result" and data.get("id") == 1:
                    out.write(json.dumps({"subscribed": data.get("success")}) + "\n")
                    continue
                if data.get("type") != "event":
                    continue
                ev = data["event"]["data"]
                new = ev.get("new_state")
                out.write(json.dumps({
                    "t": time.time(),
                    "entity_id": ev["entity_id"],
                    "state": new["state"] if new else None,
                    "old": ev["old_state"]["state"] if ev.get("old_state") else None,
                    "attributes": new["attributes"] if new else None,
                }) + "\n")  # fmt: skip


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        venv = venv_dir()
        if venv_ready(venv):
            print(f"{venv}: Home Assistant {HA_VERSION} venv is complete")
            return 0
        print(f"building {venv} (Home Assistant {HA_VERSION}); log: {venv}-build.log", flush=True)
        try:
            seconds = build_venv(venv)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"built {venv} in {seconds:.0f} s")
        return 0
    if argv[:1] == ["events"] and len(argv) == 4:
        import asyncio

        asyncio.run(_ws_events(argv[1], argv[2], argv[3]))
        return 0
    if argv[:1] == ["ws"] and len(argv) == 4:
        import asyncio

        print(json.dumps(asyncio.run(_ws_commands(argv[1], argv[2], json.loads(argv[3])))))
        return 0
    print("usage: homeassistant.py build | events URL TOKEN FILE | ws URL TOKEN JSON", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
