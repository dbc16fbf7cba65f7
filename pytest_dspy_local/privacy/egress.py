"""Privacy guard: no prompt or data leaves loopback and the configured model endpoint.

How it works
------------
One ``sys.addaudithook`` per process watches the socket audit events that come before any
packet leaves: name lookups (``socket.getaddrinfo``, ``gethostbyname[_ex]``, the reverse
``gethostbyaddr`` / ``getnameinfo``) and sends (``socket.connect``, ``sendto``, ``sendmsg``).
While an :class:`EgressGuard` is active (``with guard.active(label=...)``), an attempt to reach
a host outside its allow-list is recorded and, unless the guard was built with
``block=False``, refused with :class:`EgressBlocked` (a ``PermissionError``) before the
packet is sent. The record survives callers that swallow the exception (urllib turns it into
``URLError``; DSPy and LiteLLM log and fall back). Allowed connections are counted per label,
which gives the run's receipt of endpoints contacted.

What is allowed
---------------
* Loopback, always: the name ``localhost``, ``127.0.0.0/8``, ``::1`` and their IPv4-mapped
  IPv6 forms. ``0.0.0.0`` / ``::`` are *not* loopback: as a connect target they mean "this
  host" on Linux but fail or mean other things elsewhere, so they are refused unless listed.
* Each allow-list entry: a host name (case-insensitive, trailing dot ignored), an IP
  address, a CIDR network (``10.0.0.0/8``), ``host:port`` / ``[v6]:port`` (that port only,
  for connections; lookups of the name are allowed whatever the port), or a URL (its host
  and explicit port, so ``base_url`` can be passed as is).
* Unix-domain sockets (they never leave the machine) and other non-IP local families
  (netlink). Any other non-IP family (e.g. vsock, Bluetooth) is refused.
* Name lookups of a literal IP address (no DNS traffic; the later connect is checked).

The hook itself never resolves names (that would recurse and leak). So that a connection
to an allowed *name* passes, the guard resolves its allowed names once, when it is built
(``resolve_names=True``) and outside the hook: a connect to one of those addresses passes.
A name whose DNS answer changes during the run is refused at its new address; the message
names the address to add.

Limits (what an audit hook cannot see)
--------------------------------------
* ``sock.connect((name, port))`` / ``sock.sendto(data, (name, port))`` on a raw socket with a
  *name* resolve it in C before the audit event fires (measured on CPython 3.11): that DNS
  query leaves unobserved; the connection itself is still refused. Every HTTP stack used
  here (``socket.create_connection``, urllib, httpx/httpcore, asyncio, DSPy's transport)
  calls ``getaddrinfo`` first, which is checked.
* Native code that opens sockets without Python (libcurl, gRPC core, llama.cpp's own HTTP
  download code) and child processes are not seen.
* Name lookups by the machine's own name (``socket.getfqdn()``) are refused like any other.

Known leaks in DSPy 3.4.1 / LiteLLM 1.110.2, found by reading the installed sources and
confirmed with this hook (see tests/test_egress.py):
* DSPy's built-in client (``dspy/clients/model_metadata/__init__.py``, ``_load``) GETs
  LiteLLM's price map from ``https://raw.githubusercontent.com/BerriAI/litellm/main/
  model_prices_and_context_window.json`` with urllib, once per process: when JSONAdapter
  plans capabilities before the first call, and after the first *successful* response
  (cost estimate) otherwise. Closed by ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (read at call
  time); ``LITELLM_OFFLINE_MODE`` does not stop it. The URL can be redirected with
  ``LITELLM_MODEL_COST_MAP_URL``.
* ``import litellm`` (used when DSPy falls back to LiteLLM) GETs the same map with httpx at
  import time and, when that fails, starts a daemon thread ``litellm-model-cost-map-retry``
  that retries after seconds, i.e. possibly during a later, unrelated test. Closed by
  ``LITELLM_LOCAL_MODEL_COST_MAP=True`` or ``LITELLM_OFFLINE_MODE=True``, read at import.
* LiteLLM's Anthropic beta-header config (same host) on first Anthropic use: closed by
  ``LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS=True`` or offline mode.
* LiteLLM's token counter downloads Hugging Face tokenizers for some model families;
  offline mode makes it use the bundled tokenizers or tiktoken (counts approximate).
  (LiteLLM points ``TIKTOKEN_CACHE_DIR`` at its bundled files, so tiktoken fetches nothing.)
* ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` in the environment route requests to a
  *loopback* model server through the proxy (DSPy's transport and httpx honour them and do
  not exempt loopback): the prompt itself would leave. Closed by adding loopback to
  ``NO_PROXY``.
* Hugging Face Hub telemetry (only on explicit hub calls): ``HF_HUB_DISABLE_TELEMETRY=1``.
* Not leaks by default: ``litellm.telemetry`` (DSPy sets it False; unused); LiteLLM's
  ``ollama_chat`` POSTs ``/api/show`` to ``OLLAMA_API_BASE`` or ``localhost:11434``
  whatever ``api_base`` says (loopback unless that variable names a remote host); DSPy's
  OAuth token refresh (``dspy/_vendor/lm15/auth.py``) only for Claude Code / Codex models.
  ``import dspy`` connects nowhere.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from types import FrameType, MappingProxyType
from typing import Any, TypeAlias
from urllib.parse import urlsplit

IPAddress: TypeAlias = "ipaddress.IPv4Address | ipaddress.IPv6Address"
IPNetwork: TypeAlias = "ipaddress.IPv4Network | ipaddress.IPv6Network"
Port: TypeAlias = "int | str | None"

SETTING_HINT = "add it to allow_hosts in [tool.dspy_local] (or DSPY_LOCAL_ALLOW_HOSTS) if it is intended"
LOOPBACK_NAMES = frozenset({"localhost"})
NO_PROXY_LOOPBACK = ("localhost", "127.0.0.1", "::1")
LEAK_ENV: Mapping[str, str] = MappingProxyType(
    {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
        "LITELLM_OFFLINE_MODE": "True",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
)

_SENDS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
_LOOKUPS = frozenset({"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex"})
_REVERSE_LOOKUPS = frozenset({"socket.gethostbyaddr", "socket.getnameinfo"})
_EVENTS = _SENDS | _LOOKUPS | _REVERSE_LOOKUPS
_IP_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6})
_LOCAL_FAMILIES = frozenset(
    family for family in (getattr(socket, "AF_UNIX", None), getattr(socket, "AF_NETLINK", None)) if family
)
# Frames in these modules are plumbing; the first frame outside them is "the code that tried".
_PLUMBING = (
    "socket", "ssl", "selectors", "urllib", "http", "asyncio", "concurrent.futures", "threading",
    "httpx", "httpcore", "anyio", "sniffio", "h11", "h2", "urllib3", "requests", "aiohttp",
    "dspy._vendor.lm15.transports", "litellm.llms.custom_httpx",
)  # fmt: skip


class EgressBlocked(PermissionError):
    """A connection outside the allow-list was refused before any packet left."""

    def __init__(self, message: str, attempt: BlockedAttempt | None = None) -> None:
        super().__init__(message)
        self.attempt = attempt


@dataclass(frozen=True)
class BlockedAttempt:
    """One attempt to reach a host outside the allow-list (``blocked=False``: let through)."""

    host: str
    port: Port
    event: str
    label: str
    where: str
    function: str
    blocked: bool = True

    @property
    def endpoint(self) -> str:
        """``host:port`` (IPv6 in brackets), or the host alone when no port was given."""
        return _endpoint(self.host, self.port)


@dataclass(eq=False)
class _Activation:
    guard: EgressGuard
    label: str


# The only run state, and a module global on purpose: an audit hook cannot be removed, so
# exactly one is installed (``_HOOKED``) and it consults this stack. The innermost
# activation applies to every thread in the process (threads that DSPy starts during an
# evaluation count too). It cannot live on a pytest object: the hook outlives any session.
_ACTIVE: list[_Activation] = []
_STATE_LOCK = threading.Lock()
_HOOKED = threading.Event()


def install() -> None:
    """Add the audit hook, once per process (idempotent; ``active()`` calls it)."""
    with _STATE_LOCK:
        if not _HOOKED.is_set():
            sys.addaudithook(_audit)
            _HOOKED.set()


def _audit(
    event: str, args: tuple[Any, ...], _events: frozenset[str] = _EVENTS, _active: list[_Activation] = _ACTIVE
) -> None:
    # Runs on every audit event in the process: leave at once unless it is ours. The
    # defaults keep working while the interpreter tears module globals down.
    if event not in _events:
        return
    top = _active[-1:]  # a slice never raises, even while another thread pops
    if top:
        top[0].guard._observe(event, args, top[0].label)


def hosts_from_url(url: str | None) -> set[str]:
    """The host of a base URL such as ``http://gpu-box:8000/v1`` (empty if it has none)."""
    if not url:
        return set()
    host = urlsplit(url if "://" in url else f"//{url}").hostname
    return {host} if host else set()


def close_known_leaks() -> None:
    """Set the environment that stops DSPy's and LiteLLM's known calls home.

    Call it before LiteLLM is imported (LiteLLM reads its variables at import time).
    Values the user set are kept. See the module docstring for what each closes.
    """
    for name, value in LEAK_ENV.items():
        os.environ.setdefault(name, value)
    _exempt_loopback_from_proxies(os.environ)


def _exempt_loopback_from_proxies(environ: MutableMapping[str, str]) -> None:
    # urllib reads both spellings and the lowercase one wins: write the merged list to both.
    current = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    entries = [entry.strip() for entry in current.split(",") if entry.strip()]
    if "*" in entries:
        return
    merged = ",".join([*entries, *(host for host in NO_PROXY_LOOPBACK if host not in entries)])
    environ["no_proxy"] = environ["NO_PROXY"] = merged


class EgressGuard:
    """An allow-list of hosts, the attempts it refused and the endpoints it let through."""

    def __init__(
        self, allowed_hosts: Iterable[str], *, block: bool = True, resolve_names: bool = True
    ) -> None:
        if isinstance(allowed_hosts, str):
            raise TypeError("allowed_hosts must be a list of hosts, not one string")
        self.block = block
        self.allowed_hosts = tuple(entry.strip() for entry in allowed_hosts)
        self._names: dict[str, set[int | None]] = {}
        self._addresses: dict[IPAddress, set[int | None]] = {}
        self._networks: list[tuple[IPNetwork, int | None]] = []
        # Reentrant: a signal handler that opens a socket while this thread holds it must not deadlock.
        self._lock = threading.RLock()
        self._attempts: list[BlockedAttempt] = []
        self._contacted: dict[str, dict[str, int]] = {}
        for entry in self.allowed_hosts:
            self._add_rule(entry, resolve_names)

    @property
    def attempts(self) -> list[BlockedAttempt]:
        """Every recorded attempt so far, oldest first."""
        with self._lock:
            return list(self._attempts)

    def take(self, label: str) -> list[BlockedAttempt]:
        """Return and forget the attempts recorded under ``label``."""
        with self._lock:
            taken = [attempt for attempt in self._attempts if attempt.label == label]
            self._attempts = [attempt for attempt in self._attempts if attempt.label != label]
        return taken

    def contacted(self, label: str) -> dict[str, int]:
        """Endpoints (``host:port``) connected to under ``label``, with counts."""
        with self._lock:
            return dict(self._contacted.get(label, {}))

    def take_contacted(self, label: str) -> dict[str, int]:
        """Return and forget the endpoints contacted under ``label``."""
        with self._lock:
            return self._contacted.pop(label, {})

    def describe_allowed(self) -> str:
        """The allow-list as shown in messages: ``loopback, host, ...``."""
        return ", ".join(["loopback", *self.allowed_hosts])

    @contextlib.contextmanager
    def active(self, label: str = "") -> Iterator[EgressGuard]:
        """Check every connection in the process against this guard while inside."""
        install()
        activation = _Activation(self, label)
        with _STATE_LOCK:
            _ACTIVE.append(activation)
        try:
            yield self
        finally:
            with _STATE_LOCK:
                _ACTIVE.remove(activation)

    def allows(self, host: str, port: int | None = None) -> bool:
        """Whether ``host`` (and ``port``; None: any, as for a lookup) is allowed."""
        name = host.strip().lower().rstrip(".")
        address = _as_address(name)
        if address is None:
            return name in LOOPBACK_NAMES or _port_ok(self._names.get(name), port)
        if address.is_loopback or _port_ok(self._addresses.get(address), port):
            return True
        return any(address in net and (p is None or port is None or p == port) for net, p in self._networks)

    def _add_rule(self, entry: str, resolve: bool) -> None:
        host, port = _split_entry(entry)
        if "/" in host:
            self._networks.append((_network(entry, host), port))
            return
        address = _as_address(host)
        if address is not None:
            self._addresses.setdefault(address, set()).add(port)
            return
        self._names.setdefault(host, set()).add(port)
        if resolve and host not in LOOPBACK_NAMES:
            for resolved in _resolve(host):
                self._addresses.setdefault(resolved, set()).add(port)

    def _observe(self, event: str, args: tuple[Any, ...], label: str) -> None:
        try:
            attempt = self._judge(event, args, label)
            message = _message(attempt, self.describe_allowed()) if attempt and attempt.blocked else None
        except Exception:  # a bug in the guard must never break the caller's socket call
            return
        if message is not None:
            raise EgressBlocked(message, attempt)

    def _judge(self, event: str, args: tuple[Any, ...], label: str) -> BlockedAttempt | None:
        target = _target(event, args)
        if target is None:
            return None
        host, port = target
        sends = event in _SENDS
        if event in _LOOKUPS and _as_address(host.strip().lower()) is not None:
            return None  # a literal address is "resolved" without any traffic
        check_port = port if sends and isinstance(port, int) else None
        allowed = self.allows(host, check_port)
        if sends and (allowed or not self.block):
            self._count(label, _endpoint(host, port))
        if allowed:
            return None
        where, function = _caller()
        attempt = BlockedAttempt(host, port, event, label, where, function, blocked=self.block)
        with self._lock:
            self._attempts.append(attempt)
        return attempt

    def _count(self, label: str, endpoint: str) -> None:
        with self._lock:
            counts = self._contacted.setdefault(label, {})
            counts[endpoint] = counts.get(endpoint, 0) + 1


def _target(event: str, args: tuple[Any, ...]) -> tuple[str, Port] | None:
    """The (host, port) an event is about, or None when it cannot leave the machine."""
    if event in _SENDS:
        return _send_target(args[0], args[1])
    if event == "socket.getnameinfo":
        sockaddr = args[0]
        return _text(sockaddr[0]), sockaddr[1]
    host = args[0]
    if host is None or host in ("", b""):
        return None  # getaddrinfo(None, port): the wildcard / loopback address, no lookup
    return _text(host), (args[1] if event == "socket.getaddrinfo" else None)


def _send_target(sock: Any, address: Any) -> tuple[str, Port] | None:
    family = getattr(sock, "family", None)
    if address is None or family in _LOCAL_FAMILIES or isinstance(address, (str, bytes, bytearray)):
        return None  # a connected socket's send, or a Unix-domain path
    if family in _IP_FAMILIES and isinstance(address, tuple) and len(address) > 1:
        return _text(address[0]), address[1]
    return f"<family {family} address {address!r}>", None


def _text(host: Any) -> str:
    if isinstance(host, (bytes, bytearray)):
        return bytes(host).decode("ascii", "replace")
    return str(host)


def _as_address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _port_ok(ports: set[int | None] | None, port: int | None) -> bool:
    return ports is not None and (port is None or None in ports or port in ports)


def _split_entry(entry: str) -> tuple[str, int | None]:
    """``(host, port)`` of one allow-list entry, host lowercased; ValueError names the entry."""
    text = entry.strip().lower()
    if "://" in text or (text.count(":") == 1 and "/" not in text) or text.startswith("["):
        parts = urlsplit(text if "://" in text else f"//{text}")
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            host = None
        if not host:
            raise ValueError(f"allowed host {entry!r}: expected host, host:port, IP, CIDR network or URL")
        return host.rstrip("."), port
    if not text or any(char.isspace() for char in text):
        raise ValueError(f"allowed host {entry!r}: expected host, host:port, IP, CIDR network or URL")
    return text.rstrip("."), None


def _network(entry: str, text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"allowed host {entry!r}: not a valid CIDR network such as 10.0.0.0/8") from None


def _resolve(name: str) -> set[IPAddress]:
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError, ValueError):
        return set()  # unresolvable now: the name is still allowed, its addresses are not known
    found = {_as_address(str(info[4][0])) for info in infos}
    return {address for address in found if address is not None}


def _caller() -> tuple[str, str]:
    """``(file:line, function)`` of the first frame outside this module and the socket plumbing."""
    frame: FrameType | None = sys._getframe(1)
    fallback: FrameType | None = None
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != __name__:
            fallback = fallback or frame
            if not _is_plumbing(module):
                break
        frame = frame.f_back
    chosen = frame or fallback
    if chosen is None:
        return "<unknown>", "<unknown>"
    return f"{chosen.f_code.co_filename}:{chosen.f_lineno}", chosen.f_code.co_name


def _is_plumbing(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in _PLUMBING)


def _endpoint(host: str, port: Port) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("<") else host
    return shown if port is None else f"{shown}:{port}"


def _message(attempt: BlockedAttempt, allowed: str) -> str:
    return (
        f"dspy-local blocked a connection to {attempt.endpoint} from {attempt.where} "
        f"(not in allowed hosts: {allowed}); {SETTING_HINT}"
    )
