"""A mosquitto the tests start with a TLS listener, a password file and an ACL, and the PKI it
needs (a CA, the broker's certificate for 127.0.0.1, client certificates), made with the
cryptography package so no test depends on the openssl command line."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.gateway.mosquitto import Mosquitto

USERS = {"gw-1": "gw-secret", "app": "app-secret"}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: str, *pems: bytes) -> str:
    with open(path, "wb") as f:
        f.write(b"".join(pems))
    return path


class Pki:
    """``Pki(dir)``: ca.pem, server.pem/server.key (SAN 127.0.0.1, localhost), client certs
    by name (client(name) -> (cert, key) paths), and rogue-ca.pem that signed nothing here."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self._ca_key, self._ca_cert = self._self_signed("streetgrid test CA")
        self.ca = _write(os.path.join(directory, "ca.pem"), self._pem(self._ca_cert))
        _, rogue = self._self_signed("rogue CA")
        self.rogue_ca = _write(os.path.join(directory, "rogue-ca.pem"), self._pem(rogue))
        self.server_cert, self.server_key = self._issue(
            "server", "127.0.0.1", server=True,
            sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])

    def client(self, name: str) -> tuple[str, str]:
        return self._issue(name, name, server=False, sans=[])

    @staticmethod
    def _pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    @staticmethod
    def _self_signed(cn: str):
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                             False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return key, cert

    def _issue(self, stem: str, cn: str, *, server: bool, sans: list):
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self._ca_cert.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 self._ca_key.public_key()), critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self._ca_key, hashes.SHA256())
        cert_path = _write(os.path.join(self.dir, stem + ".pem"), self._pem(cert))
        key_path = _write(os.path.join(self.dir, stem + ".key"), key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        os.chmod(key_path, 0o600)
        return cert_path, key_path


def acl_text(site: str = "block-a", gateway_id: str = "gw-1") -> str:
    """The gateway may publish its readings and command results and read its commands; the
    application reads everything under streetgrid/ and may write commands."""
    base = f"streetgrid/{site}/{gateway_id}/"
    return (f"user gw-1\ntopic write {base}readings\ntopic write {base}command-results\n"
            f"topic read {base}commands\n\n"
            "user app\ntopic read streetgrid/#\ntopic write streetgrid/+/+/commands\n")


class SecureMosquitto(Mosquitto):
    """mosquitto with one TLS listener (``require_certificate``: mTLS), no anonymous access, a
    password file of USERS and acl_text()."""

    def __init__(self, tmpdir, pki: Pki, require_certificate: bool = True, **kw) -> None:
        super().__init__(tmpdir, **kw)
        self.pki = pki
        self.require_certificate = require_certificate
        self.url = "mqtts://127.0.0.1:%d" % self.port
        self.passwd = os.path.join(self.workdir, "passwd")
        self.acl = os.path.join(self.workdir, "acl")

    def config_text(self) -> str:
        open(self.passwd, "w").close()
        for user, password in USERS.items():
            subprocess.run(["mosquitto_passwd", "-b", self.passwd, user, password], check=True,
                           capture_output=True)
        with open(self.acl, "w") as f:
            f.write(acl_text())
        text = super().config_text().replace("allow_anonymous true\n", "")
        return text + (
            "allow_anonymous false\n"
            f"password_file {self.passwd}\nacl_file {self.acl}\n"
            f"cafile {self.pki.ca}\ncertfile {self.pki.server_cert}\n"
            f"keyfile {self.pki.server_key}\n"
            f"require_certificate {'true' if self.require_certificate else 'false'}\n")
