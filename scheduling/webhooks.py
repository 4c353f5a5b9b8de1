"""Alert webhooks: which URLs may receive alerts, and one POST to one of them.

Whoever may edit a job chooses where its alerts go, so a webhook must not become a way to
make the workers reach (and report on) what only they can reach: the cloud metadata
service at 169.254.169.254, a database port on localhost, an internal admin page.

1. Only ``http`` and ``https`` URLs with a host are accepted.
2. A literal IP address in a URL must be public. Private, loopback, link-local, shared,
   multicast, reserved and unspecified addresses (and IPv6 forms that embed one of them)
   are refused unless they are in ``WEBHOOK_ALLOWED_NETWORKS`` (intranet receivers).
   Checked when a job is saved (no lookup needed) and again at delivery.
3. At delivery the host name is resolved once; *every* address it resolves to must pass
   rule 2, and the connection goes to one of those checked addresses (the name is not
   looked up again), so a DNS answer that changes between the check and the connection
   (DNS rebinding) cannot point the POST somewhere else. TLS still verifies the
   certificate against the host name.
4. Redirects are never followed: a 3xx answer is a failed delivery.
"""

import http.client
import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from scheduling import conf

SCHEMES = ("http", "https")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64).
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class WebhookRefused(Exception):
    """The URL may not receive alerts (scheme, or an address that is not public). Final:
    trying again cannot help."""


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [
        ipaddress.ip_network(network, strict=False)
        for network in conf.get("WEBHOOK_ALLOWED_NETWORKS")
    ]


def _embedded(address: Address) -> list[Address]:
    """``address`` and the IPv4 addresses some IPv6 forms route to."""
    found: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            found.append(address.ipv4_mapped)
        if address.sixtofour:
            found.append(address.sixtofour)
        if address.teredo:
            found.append(address.teredo[1])
        if any(address in network for network in _NAT64):
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def address_allowed(*, address: Address) -> bool:
    """Whether a webhook may be sent to ``address``: public, or in the allow-list."""
    if any(address in network for network in _allowed_networks()):
        return True
    return all(a.is_global and not a.is_multicast for a in _embedded(address))


def _parse(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of ``url``; :class:`WebhookRefused` when it cannot be a
    webhook."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(_("%(url)s is not a valid URL.") % {"url": url}) from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise WebhookRefused(
            _("%(url)s: only http:// and https:// URLs can receive alerts.") % {"url": url}
        )
    if not parts.hostname:
        raise WebhookRefused(_("%(url)s has no host name.") % {"url": url})
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _refusal(url: str, address: Address) -> WebhookRefused:
    return WebhookRefused(
        _(
            "%(url)s: %(address)s is not a public address (private, loopback, link-local or "
            "reserved); an intranet receiver's network must be listed in "
            "SCHEDULING_WEBHOOK_ALLOWED_NETWORKS."
        )
        % {"url": url, "address": address}
    )


def webhook_url_check(*, url: str) -> None:
    """Refuse ``url`` when it can never receive alerts, without any network lookup:
    a scheme other than http(s), no host, or a literal address that is not allowed.
    Raises :class:`WebhookRefused`."""
    _scheme, host, _port = _parse(url)
    address = _literal(host)
    if address is not None and not address_allowed(address=address):
        raise _refusal(url, address)


def webhook_urls_validate(*, text: str) -> None:
    """Check every URL of a job's ``alert_webhooks`` (one per line, or comma-separated);
    ``ValidationError`` naming the field and each refused URL."""
    problems = []
    for url in (line.strip() for line in text.replace(",", "\n").splitlines()):
        if not url:
            continue
        try:
            webhook_url_check(url=url)
        except WebhookRefused as exc:
            problems.append(str(exc))
    if problems:
        raise ValidationError({"alert_webhooks": problems})


Target = tuple[int, tuple]  # (address family, socket address)


def webhook_addresses(*, url: str) -> list[Target]:
    """Resolve ``url``'s host and check every address it resolves to; the checked
    addresses, to connect to. :class:`WebhookRefused` when any one is not allowed
    (a name that resolves to a public and a private address could be either)."""
    _scheme, host, port = _parse(url)
    literal = _literal(host)
    if literal is not None:
        if not address_allowed(address=literal):
            raise _refusal(url, literal)
        if literal.version == 6:
            return [(socket.AF_INET6, (str(literal), port, 0, 0))]
        return [(socket.AF_INET, (str(literal), port))]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    targets: list[Target] = []
    for family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if not address_allowed(address=address):
            raise _refusal(url, address)
        if (family, sockaddr) not in targets:
            targets.append((family, sockaddr))
    if not targets:
        raise OSError(f"{host} resolves to no address")
    return targets


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to one of the checked addresses (as given, with no lookup of its own)
    instead of looking the host up again; the Host header still names the host."""

    def __init__(self, host: str, port: int, *, targets: list[Target], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._targets = targets

    def _connect_checked(self) -> socket.socket:
        error: OSError | None = None
        for family, sockaddr in self._targets:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                error = exc
            else:
                return sock
        raise error or OSError("no address to connect to")

    def connect(self) -> None:
        self.sock = self._connect_checked()


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """:class:`_PinnedHTTPConnection` over TLS, the certificate checked for the host name."""

    default_port = http.client.HTTPS_PORT

    def connect(self) -> None:
        context = ssl.create_default_context()
        self.sock = context.wrap_socket(self._connect_checked(), server_hostname=self.host)


def webhook_post(*, url: str, body: bytes, timeout: float) -> int:
    """POST ``body`` (JSON) to ``url`` under the rules above; return the HTTP status.

    Each socket operation may take ``timeout`` seconds. Raises :class:`WebhookRefused`
    for a URL that may not receive alerts, ``OSError`` (or ``http.client``'s errors) when
    the receiver cannot be reached. No redirect is followed.
    """
    scheme, host, port = _parse(url)
    targets = webhook_addresses(url=url)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(host, port, targets=targets, timeout=timeout)
    try:
        connection.request(
            "POST",
            target,
            body=body,
            headers={"Content-Type": "application/json", "User-Agent": "scheduled-jobs-alerts"},
        )
        response = connection.getresponse()
        response.read(65536)
        return response.status
    finally:
        connection.close()
