"""Outbound requests to URLs a user gave reach public addresses only.

A media URL comes from whoever submits the job. Fetched as is, ``http://127.0.0.1:6379/`` or
``http://169.254.169.254/`` turns the worker into a client of the machine's own services. While a
``guarded()`` block is active on a thread, every host name that thread resolves is checked *after*
resolution, so a public name pointing at a private address is refused too, and so is every redirect
(each new connection resolves again). Addresses are checked where they are resolved because the
libraries we drive (yt-dlp, urllib3) connect to exactly the addresses ``getaddrinfo`` returned.

``OutboundPolicy.allowed_networks`` lists the private networks an operator trusts (a LAN media server,
the tests' local HTTP server); everything else that is not a global unicast address is refused.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from processing.errors import PermanentError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(PermanentError):
    """A URL resolves to a loopback, private, link-local or otherwise non-public address."""


@dataclass(frozen=True)
class OutboundPolicy:
    """Which non-public networks outbound requests may reach (none by default)."""

    allowed_networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> OutboundPolicy:
        """A policy from a comma-separated CIDR list, e.g. ``"10.0.5.0/24, 127.0.0.1/32"``."""
        networks = []
        for part in text.split(","):
            if part.strip():
                try:
                    networks.append(ipaddress.ip_network(part.strip(), strict=False))
                except ValueError:
                    raise ValueError(f"not a network in CIDR form: {part.strip()!r}") from None
        return cls(tuple(networks))

    def permits(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allowed_networks):
            return True
        return address.is_global and not address.is_multicast


_policy = OutboundPolicy()
_active = threading.local()
_resolve = socket.getaddrinfo
_install_lock = threading.Lock()
_installed = False


def set_policy(policy: OutboundPolicy) -> None:
    """The policy every later ``guarded()`` block enforces (the actors set it from the settings)."""
    global _policy
    _policy = policy


def current_policy() -> OutboundPolicy:
    return _policy


def _kind(address: Address) -> str:
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    return "not a public address"


def _guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    results = _resolve(host, port, *args, **kwargs)
    policy: OutboundPolicy | None = getattr(_active, "policy", None)
    if policy is None:
        return results
    permitted = []
    refused = f"{host} resolves to no address"
    for result in results:
        address = ipaddress.ip_address(str(result[4][0]).split("%", 1)[0])
        if policy.permits(address):
            permitted.append(result)
        else:
            refused = f"{host} resolves to {address}, {_kind(address)}"
    if not permitted:
        _active.refusal = refused
        # An OSError, so the HTTP stack treats it as a failed connection and gives up cleanly.
        raise OSError(f"refused: {refused}")
    return permitted


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            socket.getaddrinfo = _guarded_getaddrinfo
            _installed = True


@contextlib.contextmanager
def guarded(policy: OutboundPolicy | None = None) -> Iterator[None]:
    """Refuse non-public addresses for every name this thread resolves inside the block."""
    _install()
    previous = getattr(_active, "policy", None)
    _active.policy = policy or _policy
    _active.refusal = None
    try:
        yield
    finally:
        _active.policy = previous


def refusal() -> str | None:
    """Why the last connection of this thread's ``guarded()`` block was refused, if it was."""
    return getattr(_active, "refusal", None)


def check_url(url: str, policy: OutboundPolicy | None = None) -> None:
    """Raise ``AddressRefused`` unless every address ``url``'s host resolves to is permitted.

    For a URL handed to a program that connects by itself (ffprobe), where no guard can sit in between.
    """
    host = urlsplit(url).hostname
    if not host:
        return
    policy = policy or _policy
    try:
        results = _resolve(host, None, 0, socket.SOCK_STREAM)
    except OSError:
        return  # the program reports the unknown host itself
    for result in results:
        address = ipaddress.ip_address(str(result[4][0]).split("%", 1)[0])
        if not policy.permits(address):
            raise AddressRefused(f"refusing to fetch {url!r}: {host} resolves to {address}, {_kind(address)}")


@contextlib.contextmanager
def unguarded() -> Iterator[None]:
    """Lift the guard for our own code called back from inside a guarded block (progress reports)."""
    previous = getattr(_active, "policy", None)
    _active.policy = None
    try:
        yield
    finally:
        _active.policy = previous
