"""A throw-away PKI for the TLS end-to-end tests, made with trustme.

``make_certificates(directory)`` writes PEM files into ``directory`` and returns their paths:

* ``ca``: the test CA that clients and the carrier trust;
* ``server_cert``/``server_key``: the carrier's certificate, for the name ``carrier.test``
  and the address 127.0.0.1, signed by that CA;
* ``client_cert``/``client_key``: a client certificate (for ``router.test``) signed by it,
  for a carrier that requires and verifies client certificates;
* ``untrusted_cert``/``untrusted_key``: a certificate for ``carrier.test`` signed by another
  CA (``other_ca``), which a client trusting ``ca`` must refuse;
* ``wrong_name_cert``/``wrong_name_key``: a certificate signed by ``ca`` but only for
  ``elsewhere.test``, which a client checking the name ``carrier.test`` must refuse.

Certificate files hold the leaf then its chain; keys are unencrypted PKCS#8. Every call makes
new keys, so tests never share a CA by accident. ``client_context`` builds the matching
``ssl.SSLContext`` for a Python test client.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

SERVER_NAME = "carrier.test"
SERVER_IP = "127.0.0.1"
CLIENT_NAME = "router.test"
WRONG_NAME = "elsewhere.test"


@dataclass(frozen=True)
class Certificates:
    """Paths of the PEM files written by make_certificates."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    untrusted_cert: Path
    untrusted_key: Path
    wrong_name_cert: Path
    wrong_name_key: Path


def _write_leaf(leaf: trustme.LeafCert, cert_path: Path, key_path: Path) -> None:
    cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_path))
    key_path.chmod(0o600)


def make_certificates(directory: Path) -> Certificates:
    """Write a test CA, server, client and two bad server certificates into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="trunkguard test CA")
    other = trustme.CA(organization_name="some other CA")
    paths = Certificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
        untrusted_cert=directory / "untrusted.pem",
        untrusted_key=directory / "untrusted.key",
        wrong_name_cert=directory / "wrong-name.pem",
        wrong_name_key=directory / "wrong-name.key",
    )
    ca.cert_pem.write_to_path(str(paths.ca))
    other.cert_pem.write_to_path(str(paths.other_ca))
    _write_leaf(
        ca.issue_cert(SERVER_NAME, SERVER_IP, common_name=SERVER_NAME),
        paths.server_cert,
        paths.server_key,
    )
    _write_leaf(
        ca.issue_cert(CLIENT_NAME, common_name=CLIENT_NAME), paths.client_cert, paths.client_key
    )
    _write_leaf(
        other.issue_cert(SERVER_NAME, SERVER_IP, common_name=SERVER_NAME),
        paths.untrusted_cert,
        paths.untrusted_key,
    )
    _write_leaf(
        ca.issue_cert(WRONG_NAME, common_name=WRONG_NAME),
        paths.wrong_name_cert,
        paths.wrong_name_key,
    )
    return paths


def client_context(certs: Certificates, *, with_client_cert: bool = False) -> ssl.SSLContext:
    """A verifying client context that trusts only the test CA (TLS 1.2 or newer);
    ``with_client_cert`` presents the test client certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if with_client_cert:
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return context
