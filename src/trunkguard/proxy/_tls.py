"""TLS contexts for the adapter: toward carriers (verify their certificate) and for callers.

Toward a carrier the certificate is checked against the configured CA file
(or the system's store) and must carry the carrier's name, which also goes
in SNI (RFC 5922: the domain of the carrier's URI, not the SRV target's). A
client certificate is presented when one is configured.
"""

from __future__ import annotations

import ssl

from ..routing import TlsClient


def client_context(tls: TlsClient) -> ssl.SSLContext:
    """The context for connections toward one carrier; raises OSError/ssl.SSLError on bad files."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_file is not None:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx


def server_context(
    cert_file: str, key_file: str, ca_file: str | None = None, verify_clients: bool = False
) -> ssl.SSLContext:
    """The context of the router's tls: listeners."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if ca_file is not None:
        ctx.load_verify_locations(ca_file)
    if verify_clients:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def describe(exc: BaseException) -> str:
    """A TLS failure in words, for the reason a target is out with."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS handshake failed: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "TLS connection timed out"
    return f"TLS connection failed: {exc}"
