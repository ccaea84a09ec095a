"""The certificates of a TLS test server: a fresh CA and a node certificate it signed.

Generated with the ``cryptography`` package (the ``esdb-testing`` extra), imported only when a
TLS server is asked for, so that the insecure server needs nothing beyond grpcio and esdbclient.
The node certificate names the host the server listens on plus ``localhost``, ``127.0.0.1`` and
``::1``, so a client may address the node by any of them. Keys are ECDSA P-256: quick to make.
"""

from __future__ import annotations

import ipaddress
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

EXTRA: Final = "esdb-testing"
_VALIDITY: Final = timedelta(days=30)
_CLOCK_SKEW: Final = timedelta(minutes=5)
_LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "::1")


class TlsUnavailableError(ImportError):
    """TLS was asked for but the ``cryptography`` package (the ``esdb-testing`` extra) is missing."""

    def __init__(self) -> None:
        super().__init__(
            "EsdbTestServer(tls=True) generates its certificates with the cryptography package: "
            f"pip install 'eventsourcing-cqrs[{EXTRA}]'"
        )


@dataclass(frozen=True, slots=True)
class NodeCertificates:
    """PEM bytes of the CA and of the node's certificate and key, and the files they are in.

    ``directory`` holds ``ca.crt``, ``node.crt`` and ``node.key``; :meth:`remove` deletes it.
    """

    ca_pem: bytes = field(repr=False)
    certificate_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    directory: Path

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM): what a client gives as ``tlsCAFile``."""
        return self.directory / "ca.crt"

    def remove(self) -> None:
        """Delete the directory and the files in it (idempotent)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def generate_certificates(host: str) -> NodeCertificates:
    """A new CA and a node certificate for ``host`` signed by it, written to a new temp directory.

    Raises :class:`TlsUnavailableError` when ``cryptography`` is not installed.
    """
    try:
        from cryptography import x509  # noqa: PLC0415 - optional extra, see the module docstring
        from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415
    except ImportError as exc:
        raise TlsUnavailableError from exc

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EsdbTestServer CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    node_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in dict.fromkeys(name for name in (host.strip("[]"), *_LOOPBACK_NAMES) if name):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    node = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eventstoredb-node")]))
        .issuer_name(ca_name)
        .public_key(node_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    certificates = NodeCertificates(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        certificate_pem=node.public_bytes(serialization.Encoding.PEM),
        key_pem=node_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        directory=Path(tempfile.mkdtemp(prefix="esdb-test-server-")),  # mode 0700
    )
    certificates.ca_file.write_bytes(certificates.ca_pem)
    (certificates.directory / "node.crt").write_bytes(certificates.certificate_pem)
    (certificates.directory / "node.key").write_bytes(certificates.key_pem)
    return certificates
