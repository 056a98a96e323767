"""Kamailio as a real carrier for the end-to-end tests: registrar, digest auth, TLS, relay.

SIPp plays a carrier's switch well, but it cannot be a registrar, it computes MD5 digests
only and Debian builds it without TLS. This peer is a Kamailio (Debian's ``kamailio`` and
``kamailio-tls-modules``) on 127.0.0.1 with a configuration written for each test:

* **Registrar** (``registrar``/``usrloc``, memory only): REGISTER is challenged with 401
  and saved once the digest is right. A wrong password is challenged again, as registrars
  do, or refused with ``refuse_register`` (e.g. 403). ``register_expires`` bounds the
  granted interval; ``interval_too_brief=True`` answers 423 below the minimum.
* **Digest** (``auth``: ``pv_www_authenticate``/``pv_proxy_authenticate``): credentials
  come from ``users`` and are written into the configuration as HA1 hashes in an
  ``htable`` (no database). ``algorithm`` is ``"MD5"`` or ``"SHA-256"`` (the auth module's
  ``algorithm`` parameter: one algorithm per challenge, never both). Challenges carry
  ``qop=auth`` unless ``qop=False``; a stale nonce is challenged again with ``stale=true``.
* **Calls**: ``challenge_invite`` (None, 401 or 407) challenges new INVITEs first;
  ``require_registration`` refuses an INVITE with 403 unless its From user, or the user it
  authenticated as, has a live registration. The INVITE is then relayed statefully
  (``tm``, ``record_route``) to ``forward_to``, where the test runs a SIPp UAS as the
  carrier's switch (without ``forward_to`` it is answered 480). In-dialog requests follow
  ``loose_route``; CANCEL and ACK are handled like Kamailio's sample configuration.
  Out-of-dialog OPTIONS are answered 200 (keepalives).
* **Transports**: UDP always (``udp_port``), TCP with ``tcp_port``, TLS with ``tls_port``,
  ``cert_file`` and ``key_file`` (``ca_file`` makes it require and verify a client
  certificate). See certs.py for a test CA.

How it runs: ``kamailio -DD -E`` (foreground, log on stderr into ``kamailio.log`` in its
working directory), small ``-m``/``-M`` memory, two workers per transport, runtime
directory ``-Y`` inside the working directory, no pid file, no database, no control
socket. It does not change user, so running as root needs nothing from /var/run. The
processes are one process group of their own: pause() and resume() stop and continue all
of them (SIGSTOP/SIGCONT: "the registrar stops answering"), stop(), kill() and close()
end all of them. The main process gets PR_SET_PDEATHSIG (SIGTERM, on which Kamailio ends
its workers) so nothing outlives a test run that dies; a timer kills the group when
``lifetime`` seconds have passed since start(). The environment, with conftest's
TRUNKGUARD_TEST_SESSION marker, is inherited like SIPp's.

What the tests read: each request, auth result, local reply, relayed reply and saved
registration is one ``xlog`` line (``TGK|kind|key=value|...``) in the log;
``requests(method)``, ``auth_failures()``, ``registered(user)``, ``registration(user)``,
``sent(code)`` and ``events()`` parse it, and ``wait_until`` polls them with a bound.
``log()`` is the raw log for failure messages.

Usage::

    udp, switch_port = free_udp_ports(2)
    with start_uas("uas_answer", port=switch_port) as switch, Kamailio(
        udp_port=udp, users={"trunk1": "s3cret"}, challenge_invite=407,
        forward_to=switch.address, tmp_root=tmp_path,
    ) as carrier:
        ...  # the router registers to carrier.address and calls through it
        assert carrier.wait_until(lambda: carrier.registered("trunk1"))
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from sipp import HOST, REASONS, Address

REALM = "carrier.test"
TAG = "TGK"
#: From user of the readiness probe's OPTIONS; requests() leaves those out.
PROBE_USER = "tg-kamailio-probe"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
#: pv_*_authenticate results that mean "credentials given and wrong" (user unknown is -3).
AUTH_FAILURES = frozenset({-1, -2, -3, -6, -7, -8})
AUTH_OK = 1
AUTH_NO_CREDENTIALS = -5
AUTH_STALE = -4

_LOG = "kamailio.log"
_CFG = "kamailio.cfg"
_TLS_CFG = "tls.cfg"
_USER_RE = re.compile(r"^[A-Za-z0-9._~+-]+$")
_MODULE_DIRS = (
    "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    "/usr/lib/aarch64-linux-gnu/kamailio/modules",
    "/usr/lib/kamailio/modules",
    "/usr/lib64/kamailio/modules",
    "/usr/local/lib64/kamailio/modules",
    "/usr/local/lib/kamailio/modules",
)

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _term_with_parent() -> None:
    """In the child between fork and exec: SIGTERM when the test process dies. Kamailio's
    main process stops its workers on SIGTERM; SIGKILL would leave them running."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class KamailioError(RuntimeError):
    """Kamailio could not be started or did not behave as a peer should."""


def kamailio_binary() -> str:
    """Path of the ``kamailio`` executable; raises KamailioError when it is not installed."""
    path = shutil.which("kamailio") or next(
        (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if os.access(p, os.X_OK)),
        None,
    )
    if path is None:
        raise KamailioError("kamailio is not installed (Debian package kamailio)")
    return path


def module_dir() -> str:
    """Directory of Kamailio's modules (the one holding tm.so)."""
    for directory in _MODULE_DIRS:
        if os.path.isfile(os.path.join(directory, "tm.so")):
            return directory
    found = glob.glob("/usr/lib/*/kamailio/modules/tm.so")
    if found:
        return os.path.dirname(found[0])
    raise KamailioError("Kamailio's modules (tm.so) were not found")


def tls_available() -> bool:
    """Whether the TLS module (Debian package kamailio-tls-modules) is installed."""
    try:
        return os.path.isfile(os.path.join(module_dir(), "tls.so"))
    except KamailioError:
        return False


def free_tcp_port(host: str = HOST) -> int:
    """A TCP port that was free on ``host`` a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_tcp_ports(n: int, host: str = HOST) -> list[int]:
    """``n`` distinct TCP ports that were free on ``host`` a moment ago."""
    out: list[int] = []
    while len(out) < n:
        port = free_tcp_port(host)
        if port not in out:
            out.append(port)
    return out


def ha1(user: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """The digest HA1, ``H(user:realm:password)``, as Kamailio's auth module compares it."""
    data = f"{user}:{realm}:{password}".encode()
    if algorithm == "SHA-256":
        return hashlib.sha256(data).hexdigest()
    return hashlib.md5(data).hexdigest()


def options_request(
    target: Address, local: Address, *, from_user: str = "keepalive", transport: str = "UDP"
) -> tuple[str, bytes]:
    """An out-of-dialog OPTIONS to ``target`` from ``local``: (Call-ID, message bytes)."""
    call_id = uuid.uuid4().hex
    host, port = target
    request = (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {local[0]}:{local[1]};branch=z9hG4bK{call_id}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{from_user}@{local[0]}:{local[1]}>;tag={call_id[:10]}\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    return call_id, request.encode()


def send_options(
    target: Address, timeout: float = 1.0, *, from_user: str = "keepalive", source: str = HOST
) -> str | None:
    """Send one OPTIONS over UDP from ``source`` and return the first response to it (its
    text), or None when none came within ``timeout`` seconds."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        call_id, request = options_request(target, sock.getsockname(), from_user=from_user)
        sock.sendto(request, target)
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65535)
            except (TimeoutError, ConnectionRefusedError):
                # ICMP port unreachable surfaces as ECONNREFUSED on the next recv.
                return None
            text = data.decode(errors="replace")
            if f"Call-ID: {call_id}" in text or f"i: {call_id}" in text:
                return text
    return None


def status_of(response: str | None) -> int | None:
    """Status code of a response text (None for None or a malformed first line)."""
    if not response or not response.startswith("SIP/2.0 "):
        return None
    try:
        return int(response.split(" ", 2)[1])
    except (IndexError, ValueError):
        return None


# --------------------------------------------------------------------------- log


@dataclass(frozen=True)
class Event:
    """One ``TGK|kind|key=value|...`` line of the log (Kamailio's "<null>" reads as "")."""

    kind: str
    fields: dict[str, str] = field(hash=False)

    @property
    def time(self) -> float:
        return _to_float(self.fields.get("t", ""))

    def get(self, name: str) -> str:
        return self.fields.get(name, "")

    def number(self, name: str) -> int | None:
        try:
            return int(self.fields.get(name, ""))
        except ValueError:
            return None


def parse_events(text: str) -> list[Event]:
    """The TGK lines of a Kamailio log; a last line without its newline is left out."""
    events = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        at = line.find(f"{TAG}|")
        if at < 0:
            continue
        parts = line[at:].rstrip("\r\n").split("|")
        if len(parts) < 2:
            continue
        fields = {}
        for part in parts[2:]:
            key, sep, value = part.partition("=")
            if sep:
                fields[key] = "" if value == "<null>" else value
        events.append(Event(kind=parts[1], fields=fields))
    return events


def _to_float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class Registration:
    """The registration of one AoR user as Kamailio logged it after its last REGISTER."""

    user: str
    auth_user: str
    contacts: list[str]
    #: Seconds the registrar granted (the longest-lived contact), when saved.
    expires: int
    #: Epoch second at which the longest-lived contact expires (0: none left).
    until: int
    #: Epoch time at which Kamailio logged it.
    saved_at: float

    @property
    def alive(self) -> bool:
        return bool(self.contacts) and self.until > time.time()


# ---------------------------------------------------------------------- config


def _escape(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise ValueError(f"not printable ASCII: {value!r}")
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _fill(template: str, **values: object) -> str:
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", str(value))
    if "{{" in template:
        raise AssertionError(f"unfilled placeholder in: {template[template.index('{{') :][:40]}")
    return template


_HEAD = """#!KAMAILIO
# A test carrier for trunkguard's end-to-end tests, written by tests/e2e/kamailio.py.

debug=2
log_stderror=yes
children={{CHILDREN}}
auto_aliases=no
dns=no
rev_dns=no
dns_try_ipv6=no
use_dns_cache=off
sip_warning=no
server_header="Server: trunkguard-test-carrier"
user_agent_header="User-Agent: trunkguard-test-carrier"
alias="{{REALM}}"
mpath="{{MPATH}}"
"""

_MODULES = """
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"
loadmodule "htable.so"

modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 60000)
modparam("usrloc", "db_mode", 0)
modparam("usrloc", "timer_interval", 1)
modparam("registrar", "min_expires", {{MIN_EXPIRES}})
modparam("registrar", "default_expires", {{DEFAULT_EXPIRES}})
modparam("registrar", "max_expires", {{MAX_EXPIRES}})
modparam("registrar", "min_expires_mode", {{MIN_EXPIRES_MODE}})
modparam("auth", "algorithm", "{{ALGORITHM}}")
modparam("auth", "secret", "{{SECRET}}")
modparam("auth", "nonce_expire", {{NONCE_EXPIRE}})
modparam("htable", "htable", "users=>size=4;")
"""

_NATHELPER = """
loadmodule "nathelper.so"
"""

_TLS_MODULE = """
loadmodule "tls.so"
modparam("tls", "config", "{{TLS_CFG}}")
"""

_ROUTES = """
# Credentials: HA1 per user, never a clear password.
event_route[htable:mod-init] {
{{USERS}}    xlog("L_NOTICE", "TGK|start|t=$TV(Sn)|users={{USER_COUNT}}\\n");
}

request_route {
    xlog("L_NOTICE", "TGK|req|t=$TV(Sn)|m=$rm|proto=$pr|src=$si:$sp|cid=$ci|cseq=$cs|fu=$fU|tu=$tU|ru=$ru\\n");
    if (!mf_process_maxfwd_header("10")) {
        $var(code) = 483; $var(reason) = "Too Many Hops"; route(RESPOND);
    }
    if (is_method("OPTIONS") && !has_totag()) {
        $var(code) = 200; $var(reason) = "OK"; route(RESPOND);
    }
    if (has_totag()) {
        route(WITHINDLG);
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            t_relay();
            exit;
        }
        $var(code) = 481; $var(reason) = "Call/Transaction Does Not Exist"; route(RESPOND);
    }
    if (is_method("ACK")) {
        exit;
    }
    # A retransmission of a relayed request: tm answers it and stops here.
    t_check_trans();
    if (is_method("REGISTER")) {
        route(REGISTRAR);
    }
    if (is_method("INVITE")) {
        route(INVITE);
    }
    $var(code) = 405; $var(reason) = "Method Not Allowed"; route(RESPOND);
}

route[RESPOND] {
    xlog("L_NOTICE", "TGK|sent|t=$TV(Sn)|code=$var(code)|m=$rm|cid=$ci|cseq=$cs\\n");
    sl_send_reply("$var(code)", "$var(reason)");
    exit;
}

route[WITHINDLG] {
    if (loose_route()) {
{{HANDLE_ALIAS}}        if (!t_relay()) {
            sl_reply_error();
        }
        exit;
    }
    if (is_method("ACK")) {
        if (t_check_trans()) {
            t_relay();
        }
        exit;
    }
    $var(code) = 404; $var(reason) = "Not Here"; route(RESPOND);
}

route[REGISTRAR] {
    $var(auth_user) = "";
{{REGISTER_AUTH}}    # Saved without a reply, logged, then answered: a client that has its 200 finds
    # the registration in the log already.
    save("location", "0x02");
    $var(rc) = $rc;
    if ($var(rc) < 0) {
        xlog("L_NOTICE", "TGK|regfail|t=$TV(Sn)|aor=$tU|rc=$var(rc)|cid=$ci|cseq=$cs\\n");
        reg_send_reply();
        exit;
    }
    $var(count) = 0;
    $var(until) = 0;
    if (reg_fetch_contacts("location", "$tu", "r")) {
        $var(count) = $ulc(r=>count);
        $var(i) = 0;
        while ($var(i) < $var(count)) {
            $var(e) = $(ulc(r=>expires)[$var(i)]);
            $var(left) = $var(e) - $Ts;
            xlog("L_NOTICE", "TGK|contact|t=$TV(Sn)|aor=$tU|uri=$(ulc(r=>addr)[$var(i)])|until=$var(e)|expires=$var(left)\\n");
            if ($var(e) > $var(until)) {
                $var(until) = $var(e);
            }
            $var(i) = $var(i) + 1;
        }
        reg_free_contacts("r");
    }
    $var(left) = 0;
    if ($var(until) > 0) {
        $var(left) = $var(until) - $Ts;
    }
    xlog("L_NOTICE", "TGK|reg|t=$TV(Sn)|aor=$tU|user=$var(auth_user)|count=$var(count)|until=$var(until)|expires=$var(left)|cid=$ci|cseq=$cs\\n");
    reg_send_reply();
    exit;
}

route[INVITE] {
    $var(auth_user) = "";
{{INVITE_AUTH}}{{REGISTRATION_CHECK}}{{INVITE_RELAY}}}

{{AUTH_ROUTES}}
reply_route {
    xlog("L_NOTICE", "TGK|reply|t=$TV(Sn)|code=$rs|m=$rm|src=$si:$sp|cid=$ci|cseq=$cs\\n");
}

event_route[usrloc:contact-expired] {
    xlog("L_NOTICE", "TGK|expired|t=$TV(Sn)|aor=$ulc(exp=>aor)|uri=$ulc(exp=>addr)\\n");
}
"""  # noqa: E501 (one log line per statement)

# kind: "www" (401, Authorization) or "proxy" (407, Proxy-Authorization).
_AUTH_ROUTE = """route[AUTH_{{KIND}}] {
    if ($au == $null) {
        $var(rc) = -5;
    } else if ($sht(users=>$au) == $null) {
        $var(rc) = -3;
    } else {
        pv_{{KIND}}_authenticate("{{REALM}}", "$sht(users=>$au)", "1");
        $var(rc) = $rc;
    }
    xlog("L_NOTICE", "TGK|auth|t=$TV(Sn)|m=$rm|user=$au|rc=$var(rc)|cid=$ci|cseq=$cs\\n");
    if ($var(rc) == 1) {
        $var(auth_user) = $au;
        consume_credentials();
        return 1;
    }
{{REFUSE}}    xlog("L_NOTICE", "TGK|sent|t=$TV(Sn)|code={{CODE}}|m=$rm|cid=$ci|cseq=$cs\\n");
    if ($var(rc) == -4) {
        {{KIND}}_challenge("{{REALM}}", "{{STALE_FLAGS}}");
    } else {
        {{KIND}}_challenge("{{REALM}}", "{{FLAGS}}");
    }
    exit;
}
"""

_REFUSE = """    if ($var(rc) != -5 && $var(rc) != -4 && is_method("REGISTER")) {
        $var(code) = {{CODE}}; $var(reason) = "{{REASON}}"; route(RESPOND);
    }
"""

_REGISTRATION_CHECK = """    if (!registered("location", "sip:$fU@{{REALM}}")) {
        if ($var(auth_user) == "" || !registered("location", "sip:$var(auth_user)@{{REALM}}")) {
            xlog("L_NOTICE", "TGK|unregistered|t=$TV(Sn)|fu=$fU|user=$var(auth_user)|cid=$ci\\n");
            $var(code) = 403; $var(reason) = "Not Registered"; route(RESPOND);
        }
    }
"""

_RELAY = """    record_route();
{{ADD_ALIAS}}    $du = "sip:{{HOST}}:{{PORT}}";
    xlog("L_NOTICE", "TGK|relay|t=$TV(Sn)|m=$rm|du=$du|cid=$ci|cseq=$cs\\n");
    if (!t_relay()) {
        sl_reply_error();
    }
    exit;
"""

_NO_SWITCH = """    $var(code) = 480; $var(reason) = "No Switch Configured"; route(RESPOND);
"""


@dataclass(frozen=True)
class _Settings:
    udp_port: int
    tcp_port: int | None
    tls_port: int | None
    cert_file: Path | None
    key_file: Path | None
    ca_file: Path | None
    realm: str
    users: dict[str, str]
    algorithm: str
    qop: bool
    register_expires: tuple[int, int, int]
    interval_too_brief: bool
    challenge_register: bool
    challenge_invite: int | None
    require_registration: bool
    refuse_register: int | None
    forward_to: Address | None
    nonce_expire: int
    children: int
    secret: str


def render_config(s: _Settings, tls_cfg: Path | None) -> str:
    """kamailio.cfg for these settings (see the module docstring for the behaviour)."""
    streams = s.tcp_port is not None or s.tls_port is not None
    lines = [_fill(_HEAD, CHILDREN=s.children, REALM=s.realm, MPATH=module_dir() + "/")]
    lines.append(f"listen=udp:{HOST}:{s.udp_port}\n")
    if s.tcp_port is not None:
        lines.append(f"listen=tcp:{HOST}:{s.tcp_port}\n")
    if s.tls_port is not None:
        lines.append(f"listen=tls:{HOST}:{s.tls_port}\nenable_tls=yes\n")
    if streams:
        lines.append(f"tcp_children={s.children}\ntcp_connection_lifetime=300\n")
    else:
        lines.append("disable_tcp=yes\n")
    minimum, default, maximum = s.register_expires
    lines.append(
        _fill(
            _MODULES,
            MIN_EXPIRES=minimum,
            DEFAULT_EXPIRES=default,
            MAX_EXPIRES=maximum,
            MIN_EXPIRES_MODE=1 if s.interval_too_brief else 0,
            ALGORITHM=s.algorithm,
            SECRET=s.secret,
            NONCE_EXPIRE=s.nonce_expire,
        )
    )
    if streams:
        lines.append(_NATHELPER)
    if tls_cfg is not None:
        lines.append(_fill(_TLS_MODULE, TLS_CFG=_escape(str(tls_cfg))))

    flags = 1 if s.qop else 0
    auth_routes = ""
    for kind, code in (("www", 401), ("proxy", 407)):
        refuse = ""
        if kind == "www" and s.refuse_register is not None:
            reason = REASONS.get(s.refuse_register, "Refused")
            refuse = _fill(_REFUSE, CODE=s.refuse_register, REASON=_escape(reason))
        auth_routes += _fill(
            _AUTH_ROUTE,
            KIND=kind,
            CODE=code,
            REALM=s.realm,
            FLAGS=flags,
            STALE_FLAGS=flags | 16,
            REFUSE=refuse,
        )
    users = "".join(
        f'    $sht(users=>{user}) = "{ha1(user, s.realm, password, s.algorithm)}";\n'
        for user, password in s.users.items()
    )
    if s.challenge_invite is None:
        invite_auth = ""
    else:
        invite_auth = (
            "    route(AUTH_www);\n" if s.challenge_invite == 401 else "    route(AUTH_proxy);\n"
        )
    check = _fill(_REGISTRATION_CHECK, REALM=s.realm) if s.require_registration else ""
    if s.forward_to is None:
        relay = _NO_SWITCH
    else:
        alias = (
            "    if (proto == TCP || proto == TLS) {\n        add_contact_alias();\n    }\n"
            if streams
            else ""
        )
        relay = _fill(_RELAY, ADD_ALIAS=alias, HOST=s.forward_to[0], PORT=s.forward_to[1])
    lines.append(
        _fill(
            _ROUTES,
            USERS=users,
            USER_COUNT=len(s.users),
            HANDLE_ALIAS="        handle_ruri_alias();\n" if streams else "",
            REGISTER_AUTH="    route(AUTH_www);\n" if s.challenge_register else "",
            INVITE_AUTH=invite_auth,
            REGISTRATION_CHECK=check,
            INVITE_RELAY=relay,
            AUTH_ROUTES=auth_routes,
        )
    )
    return "".join(lines)


def render_tls_config(s: _Settings) -> str:
    """tls.cfg: the server profile (TLS 1.2 or newer); with ``ca_file``, client
    certificates are required and verified against it."""
    assert s.cert_file is not None and s.key_file is not None
    verify = "yes" if s.ca_file is not None else "no"
    text = (
        "[server:default]\n"
        "method = TLSv1.2+\n"
        f"verify_certificate = {verify}\n"
        f"require_certificate = {verify}\n"
        f"certificate = {s.cert_file}\n"
        f"private_key = {s.key_file}\n"
    )
    if s.ca_file is not None:
        text += f"ca_list = {s.ca_file}\nverify_depth = 3\n"
    text += "\n[client:default]\nverify_certificate = no\nrequire_certificate = no\n"
    return text


# --------------------------------------------------------------------- process


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
            members.append(int(entry))
    return members


class Kamailio:
    """A Kamailio carrier on 127.0.0.1 (see the module docstring).

    ``with Kamailio(udp_port=...) as carrier:`` starts it and returns once it answers
    OPTIONS; leaving the block kills it. Keyword arguments:

    ``udp_port`` (required), ``tcp_port``, ``tls_port`` with ``cert_file`` and
    ``key_file`` (``ca_file``: require client certificates signed by it); ``realm``;
    ``users`` (user -> password); ``algorithm`` ("MD5" or "SHA-256"); ``qop``;
    ``register_expires`` (min, default, max seconds); ``interval_too_brief`` (423 below
    the minimum instead of raising to it); ``challenge_register`` (False: REGISTER is saved
    without credentials); ``challenge_invite`` (None, 401, 407); ``require_registration``;
    ``refuse_register`` (a status such as 403 for REGISTERs with wrong credentials,
    instead of a new challenge); ``forward_to`` (host, port) of the switch;
    ``nonce_expire`` (seconds); ``children`` (workers per transport); ``lifetime`` (seconds
    from start() until the process group is killed); ``tmp_root`` (a directory to keep
    the working directory in, e.g. pytest's tmp_path; without it a temporary directory
    is made and removed by close()).
    """

    def __init__(
        self,
        *,
        udp_port: int,
        tcp_port: int | None = None,
        tls_port: int | None = None,
        cert_file: Path | str | None = None,
        key_file: Path | str | None = None,
        ca_file: Path | str | None = None,
        realm: str = REALM,
        users: Mapping[str, str] | None = None,
        algorithm: Literal["MD5", "SHA-256"] = "MD5",
        qop: bool = True,
        register_expires: tuple[int, int, int] = (1, 60, 3600),
        interval_too_brief: bool = False,
        challenge_register: bool = True,
        challenge_invite: Literal[401, 407] | None = None,
        require_registration: bool = False,
        refuse_register: int | None = None,
        forward_to: Address | None = None,
        nonce_expire: int = 300,
        children: int = 2,
        lifetime: float = 600.0,
        tmp_root: Path | None = None,
    ) -> None:
        users = dict(users or {})
        for user in users:
            if not _USER_RE.match(user):
                raise ValueError(f"user names are letters, digits and ._~+- only: {user!r}")
        if not re.match(r"^[A-Za-z0-9.-]+$", realm):
            raise ValueError(f"realm is a host name: {realm!r}")
        if algorithm not in ("MD5", "SHA-256"):
            raise ValueError(f"algorithm is MD5 or SHA-256, not {algorithm!r}")
        if challenge_invite not in (None, 401, 407):
            raise ValueError(f"challenge_invite is None, 401 or 407, not {challenge_invite!r}")
        if refuse_register is not None and not 400 <= refuse_register <= 699:
            raise ValueError(f"refuse_register is a 4xx-6xx status: {refuse_register!r}")
        minimum, default, maximum = register_expires
        if not 0 <= minimum <= default <= maximum:
            raise ValueError(f"register_expires is (min, default, max): {register_expires!r}")
        if tls_port is not None and (cert_file is None or key_file is None):
            raise ValueError("tls_port needs cert_file and key_file")
        if tls_port is not None and not tls_available():
            raise KamailioError("Kamailio's TLS module is missing (kamailio-tls-modules)")
        self.settings = _Settings(
            udp_port=udp_port,
            tcp_port=tcp_port,
            tls_port=tls_port,
            cert_file=Path(cert_file).resolve() if cert_file is not None else None,
            key_file=Path(key_file).resolve() if key_file is not None else None,
            ca_file=Path(ca_file).resolve() if ca_file is not None else None,
            realm=realm,
            users=users,
            algorithm=algorithm,
            qop=qop,
            register_expires=(minimum, default, maximum),
            interval_too_brief=interval_too_brief,
            challenge_register=challenge_register,
            challenge_invite=challenge_invite,
            require_registration=require_registration,
            refuse_register=refuse_register,
            forward_to=forward_to,
            nonce_expire=nonce_expire,
            children=children,
            secret=uuid.uuid4().hex,
        )
        self.lifetime = lifetime
        if tmp_root is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="kamailio-"))
            self._owns_workdir = True
        else:
            tmp_root.mkdir(parents=True, exist_ok=True)
            self.workdir = Path(tempfile.mkdtemp(prefix="kamailio-", dir=tmp_root))
            self._owns_workdir = False
        self.config_path = self.workdir / _CFG
        self.tls_config_path = self.workdir / _TLS_CFG if tls_port is not None else None
        self.log_path = self.workdir / _LOG
        self.runtime_dir = self.workdir / "run"
        self.runtime_dir.mkdir()
        if self.tls_config_path is not None:
            self.tls_config_path.write_text(render_tls_config(self.settings))
        self.config_path.write_text(render_config(self.settings, self.tls_config_path))
        self._process: subprocess.Popen[bytes] | None = None
        self._timer: threading.Timer | None = None
        self._paused = False
        self._expired = False
        self._run_offset = 0  # where the current run's lines start in the log

    # -- identity -------------------------------------------------------------------

    @property
    def address(self) -> Address:
        """The UDP listener (host, port)."""
        return (HOST, self.settings.udp_port)

    @property
    def tcp_address(self) -> Address | None:
        port = self.settings.tcp_port
        return None if port is None else (HOST, port)

    @property
    def tls_address(self) -> Address | None:
        port = self.settings.tls_port
        return None if port is None else (HOST, port)

    def uri(self, transport: Literal["udp", "tcp", "tls"] = "udp") -> str:
        """A SIP URI of this carrier for a router's configuration."""
        port = {
            "udp": self.settings.udp_port,
            "tcp": self.settings.tcp_port,
            "tls": self.settings.tls_port,
        }[transport]
        if port is None:
            raise KamailioError(f"no {transport} listener configured")
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"sip:{HOST}:{port}{suffix}"

    @property
    def realm(self) -> str:
        return self.settings.realm

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        """Start Kamailio and return once it answers an OPTIONS on its UDP port.

        Raises KamailioError, with the end of the log, if it exits or stays silent for
        ``timeout`` seconds (it is killed then).
        """
        if self.running():
            raise KamailioError("already running")
        binary = kamailio_binary()
        tls = self.settings.tls_port is not None
        command = [
            binary,
            "-DD",
            "-E",
            "-f",
            str(self.config_path),
            "-Y",
            str(self.runtime_dir),
            "-m",
            "64" if tls else "32",
            "-M",
            "8",
        ]
        self._run_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._expired = False
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                process_group=0,
                preexec_fn=_term_with_parent,
            )
        self._paused = False
        self._timer = threading.Timer(self.lifetime, self._expire)
        self._timer.daemon = True
        self._timer.start()
        end = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                status = self._process.returncode
                self._reap_group()
                raise KamailioError(f"kamailio exited {status} at start:\n{self.log_tail()}")
            reply = send_options(self.address, timeout=0.25, from_user=PROBE_USER)
            if status_of(reply) == 200:
                return self
            if time.monotonic() >= end:
                self.kill()
                raise KamailioError(
                    f"kamailio did not answer OPTIONS on {HOST}:{self.settings.udp_port} "
                    f"within {timeout} s:\n{self.log_tail()}"
                )

    def stop(self, grace: float = 3.0) -> int | None:
        """Clean stop: SIGTERM (Kamailio stops its workers), SIGKILL for whatever is left
        after ``grace`` seconds. Returns the main process's exit status."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            self._signal_group(signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            end = time.monotonic() + grace
            while _group_members(process.pid) and time.monotonic() < end:
                time.sleep(0.02)
        return self.kill()

    def kill(self) -> int | None:
        """SIGKILL to every Kamailio process at once: the carrier crashes, its ports close.
        Returns the main process's exit status (-9 unless it had exited)."""
        process = self._process
        if process is None:
            return None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._signal_group(signal.SIGKILL)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise KamailioError(f"kamailio {process.pid} did not die on SIGKILL") from exc
        self._reap_group()
        self._paused = False
        return process.returncode

    def restart(self, *, kill: bool = False, timeout: float = START_TIMEOUT) -> Self:
        """Stop (or kill) and start again on the same ports with the same configuration.
        Registrations are lost (usrloc keeps them in memory); the log goes on."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start(timeout=timeout)

    def pause(self) -> None:
        """SIGSTOP to every Kamailio process: nothing answers; packets queue meanwhile."""
        if self.running():
            self._signal_group(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """SIGCONT after pause(): Kamailio then handles what queued up."""
        if self.running():
            self._signal_group(signal.SIGCONT)
        self._paused = False

    def close(self) -> None:
        """Kill if running; remove the working directory if this object made it."""
        self.kill()
        self._process = None
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _signal_group(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)

    def _reap_group(self) -> None:
        """Wait until no process of the group is alive (workers outlive a killed main)."""
        process = self._process
        if process is None:
            return
        end = time.monotonic() + STOP_TIMEOUT
        while (left := _group_members(process.pid)) and time.monotonic() < end:
            self._signal_group(signal.SIGKILL)
            time.sleep(0.02)
        if left:
            raise KamailioError(f"kamailio processes {left} survived SIGKILL")
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT)

    def _expire(self) -> None:
        self._expired = True
        self._signal_group(signal.SIGKILL)

    @property
    def expired(self) -> bool:
        """Whether the lifetime timer killed the current run."""
        return self._expired

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- inspection -----------------------------------------------------------------

    def log(self) -> str:
        """The whole log (every run's, in order)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    def events(self, kind: str | None = None, *, current_run: bool = False) -> list[Event]:
        """Parsed TGK lines, optionally of one ``kind`` ("req", "auth", "sent", "reg",
        "contact", "regfail", "unregistered", "relay", "reply", "expired") and of the
        current run only (since the last start())."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return []
        base = self._run_offset if current_run else 0
        text = data[base:].decode("utf-8", errors="replace")
        return [e for e in parse_events(text) if kind is None or e.kind == kind]

    def requests(self, method: str) -> int:
        """Distinct ``method`` requests received (by Call-ID and CSeq: retransmissions
        count once), every run, without the readiness probe's OPTIONS."""
        method = method.upper()
        return len(
            {
                (e.get("cid"), e.get("cseq"))
                for e in self.events("req")
                if e.get("m") == method and e.get("fu") != PROBE_USER
            }
        )

    def auth_results(self, method: str | None = None) -> list[int]:
        """Each authentication check's result in order (1 ok, -5 no credentials, -4 stale
        nonce, -2 wrong password, -3 unknown user, other negatives: see AUTH_FAILURES)."""
        out = []
        for e in self.events("auth"):
            rc = e.number("rc")
            if rc is not None and (method is None or e.get("m") == method.upper()):
                out.append(rc)
        return out

    def auth_failures(self, method: str | None = None) -> int:
        """Checks whose credentials were present and wrong (not the first, bare request)."""
        return sum(1 for rc in self.auth_results(method) if rc in AUTH_FAILURES)

    def sent(self, code: int, method: str | None = None) -> int:
        """Final replies Kamailio itself sent with status ``code`` (challenges, refusals,
        200 to OPTIONS), without those to the readiness probe. The registrar's own replies
        to REGISTER and relayed replies are not in it."""
        probes = {e.get("cid") for e in self.events("req") if e.get("fu") == PROBE_USER}
        return sum(
            1
            for e in self.events("sent")
            if e.number("code") == code
            and (method is None or e.get("m") == method.upper())
            and e.get("cid") not in probes
        )

    def replies(self, code: int, method: str = "INVITE") -> int:
        """Replies with status ``code`` that Kamailio received from the switch."""
        return sum(
            1
            for e in self.events("reply")
            if e.number("code") == code and e.get("m") == method.upper()
        )

    def registration(self, user: str) -> Registration | None:
        """What the last REGISTER for AoR user ``user`` left in the current run."""
        contacts: list[str] = []
        last: Registration | None = None
        for e in self.events(current_run=True):
            if e.get("aor") != user:
                continue
            if e.kind == "contact":
                contacts.append(e.get("uri"))
            elif e.kind == "reg":
                last = Registration(
                    user=user,
                    auth_user=e.get("user"),
                    contacts=contacts,
                    expires=e.number("expires") or 0,
                    until=e.number("until") or 0,
                    saved_at=e.time,
                )
                contacts = []
        return last

    def registered(self, user: str) -> bool:
        """Whether AoR user ``user`` has a contact that has not expired, in this run."""
        if not self.running():
            return False
        registration = self.registration(user)
        return registration is not None and registration.alive

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Poll ``predicate`` every 20 ms until it holds (True) or ``timeout`` s pass."""
        end = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.02)

    def wait_registered(self, user: str, timeout: float = 10.0) -> bool:
        return self.wait_until(lambda: self.registered(user), timeout)

    def wait_requests(self, method: str, count: int = 1, timeout: float = 10.0) -> bool:
        return self.wait_until(lambda: self.requests(method) >= count, timeout)

    def ping(self, timeout: float = 1.0) -> int | None:
        """Status of the answer to one OPTIONS on the UDP port (None: no answer)."""
        return status_of(send_options(self.address, timeout=timeout))

    def describe(self) -> str:
        """A few lines for assertion messages: state and the end of the log."""
        return (
            f"kamailio pid {self.pid} running {self.running()} paused {self._paused} "
            f"expired {self._expired} workdir {self.workdir}\n{self.log_tail(3000)}"
        )
