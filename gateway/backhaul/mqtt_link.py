"""How the gateway reaches its broker: address, TLS, credentials and MQTT version, shared by
the publisher and the command subscriber so both connect the same way.

Why a TLS context of our own instead of paho's ``tls_set``: the CA, certificate and key are
loaded when the config is checked, so a missing file or a key that does not match its
certificate is a config error at ``--check-config``, not a silent retry loop after start.

Why failures are described here: paho's network thread retries a failed connect forever and
keeps the exception to itself. ``on_connect_fail`` runs inside paho's ``except OSError``, so
:func:`connect_failure` can still read the exception there and turn it into one line an
operator can act on (which file, which setting). Records wait in the durable queue meanwhile.
"""

from __future__ import annotations

import ssl
import sys
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["MqttLink", "LinkError", "parse_broker_url", "connect_failure", "dropped_before_connack",
           "refusal"]

SCHEMES = {"mqtt": (False, 1883), "mqtts": (True, 8883)}
PROTOCOLS = ("3.1.1", "5")
SESSION_EXPIRY_S = 7 * 86400  # MQTT 5: how long the broker keeps our session (and QoS 1 queue)


class LinkError(ValueError):
    """The broker settings are unusable; ``errors`` lists each problem (config wording)."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


def parse_broker_url(url: object) -> tuple[bool, str, int]:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` -> (tls, host, port). ValueError."""
    if not isinstance(url, str):
        raise ValueError(f"must be a string like 'mqtts://broker:8883', got {type(url).__name__}")
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a valid URL ({exc})") from None
    if u.scheme not in SCHEMES:
        raise ValueError(f"{url!r}: scheme must be 'mqtt' or 'mqtts' (TLS)")
    if not u.hostname:
        raise ValueError(f"{url!r}: no host (mqtt://host:port)")
    if u.username is not None or u.password is not None:
        raise ValueError(f"{url!r}: credentials go in username and password_file, not the URL")
    if u.path not in ("", "/") or u.query or u.fragment:
        raise ValueError(f"{url!r}: unexpected path, query or fragment")
    tls, default_port = SCHEMES[u.scheme]
    return tls, u.hostname, default_port if port is None else port


@dataclass(frozen=True)
class MqttLink:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_file: str = ""  # "" with TLS: the system's CAs
    cert_file: str = ""  # client certificate (mTLS), with key_file
    key_file: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    protocol: str = "3.1.1"
    context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        return "%s://%s:%d" % ("mqtts" if self.tls else "mqtt", self.host, self.port)

    def describe(self) -> str:
        """The URL and how we authenticate (for the start-up log line; never the password)."""
        parts = [self.url, "MQTT " + self.protocol]
        if self.tls:
            parts.append("CA " + (self.ca_file or "system"))
        if self.cert_file:
            parts.append("client certificate " + self.cert_file)
        if self.username:
            parts.append("user " + self.username)
        return ", ".join(parts)

    @classmethod
    def build(cls, url: object, *, ca_file: str = "", cert_file: str = "", key_file: str = "",
              username: str = "", password: str = "", password_file: str = "",
              protocol: str = "3.1.1") -> "MqttLink":
        """Check and load everything (files read, TLS context made); LinkError lists every
        problem, worded as [mqtt] keys."""
        errors: list[str] = []
        tls, host, port = False, "", 0
        try:
            tls, host, port = parse_broker_url(url)
        except ValueError as exc:
            errors.append(f"url: {exc}")
        if protocol not in PROTOCOLS:
            errors.append(f"protocol = {protocol!r}: expected one of " + ", ".join(PROTOCOLS))
        if (ca_file or cert_file or key_file) and not tls and not errors:
            errors.append("ca_file, cert_file and key_file need an mqtts:// url")
        if bool(cert_file) != bool(key_file):
            errors.append("cert_file and key_file go together (mTLS): give both or neither")
        if password and password_file:
            errors.append("give password or password_file, not both")
        if (password or password_file) and not username:
            errors.append("a password needs a username")
        if password_file:
            try:
                with open(password_file, encoding="utf-8") as f:
                    password = f.read().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                errors.append(f"password_file {password_file!r}: {exc}")
            else:
                if not password:
                    errors.append(f"password_file {password_file!r} is empty")
        context = None
        if tls and not errors:
            try:
                context = ssl.create_default_context(cafile=ca_file or None)
            except (OSError, ssl.SSLError) as exc:
                errors.append(f"ca_file {ca_file!r}: {_ssl_reason(exc)}")
            if context is not None and cert_file:
                try:
                    context.load_cert_chain(cert_file, key_file)
                except (OSError, ssl.SSLError) as exc:
                    errors.append(f"cert_file {cert_file!r} / key_file {key_file!r}: "
                                  f"{_ssl_reason(exc)}")
        if errors:
            raise LinkError(errors)
        return cls(host, port, tls, ca_file, cert_file, key_file, username, password, protocol,
                   context)

    def client(self, client_id: str, manual_ack: bool = False):
        """A paho client with our TLS, credentials and version, persistent session; connect
        with :meth:`connect_async`.  ``manual_ack``: a subscriber PUBACKs a message itself
        (``client.ack``) once what it carried is stored."""
        import paho.mqtt.client as mqtt

        if self.protocol == "5":
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                            protocol=mqtt.MQTTv5, manual_ack=manual_ack)
        else:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                            clean_session=False, protocol=mqtt.MQTTv311,
                            manual_ack=manual_ack)
        if self.context is not None:
            c.tls_set_context(self.context)
        if self.username:
            c.username_pw_set(self.username, self.password or None)
        return c

    def connect_async(self, client, keepalive: int = 60) -> None:
        if self.protocol == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            client.connect_async(self.host, self.port, keepalive=keepalive, clean_start=False,
                                 properties=props)
        else:
            client.connect_async(self.host, self.port, keepalive=keepalive)


def _ssl_reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)


def connect_failure(link: MqttLink) -> str:
    """One line for the connect attempt that just failed. Call from ``on_connect_fail``,
    where paho's ``except OSError`` still holds the exception."""
    exc = sys.exc_info()[1]
    where = f"cannot reach the MQTT broker at {link.url}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"{where}: its certificate is not trusted ({exc.verify_message}); check [mqtt] "
                f"ca_file ({link.ca_file or 'system CAs'}) and that the url's host is in the "
                "broker certificate")
    if isinstance(exc, ssl.SSLError):
        hint = (" (the broker may want a client certificate: [mqtt] cert_file, key_file)"
                if not link.cert_file else " (is the client certificate signed by a CA the "
                "broker trusts?)")
        return f"{where}: TLS handshake failed: {_ssl_reason(exc)}{hint}"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where}: connection refused (is it running, is it this port?)"
    if exc is not None:
        return f"{where}: {exc}"
    return where


def dropped_before_connack(link: MqttLink, socket_error: str) -> str:
    """One line for a connection the broker closed before it answered CONNECT: with TLS 1.3 a
    broker that rejects our client certificate (or its absence) does so after the handshake,
    so paho sees a read error, not a failed connect."""
    where = f"the MQTT broker at {link.url} closed the connection before accepting it"
    why = f" ({socket_error})" if socket_error else ""
    if link.tls and not link.cert_file:
        return f"{where}{why}; it may want a client certificate: [mqtt] cert_file, key_file"
    if link.tls:
        return (f"{where}{why}; does it trust the CA that signed [mqtt] cert_file "
                f"({link.cert_file})?")
    return where + why


def refusal(link: MqttLink, reason_code) -> str:
    """One line for a CONNACK that refused us."""
    text = str(reason_code)
    hint = ""
    if getattr(reason_code, "value", None) in (4, 5, 0x86, 0x87):  # bad credentials, not authorized
        hint = ("; check [mqtt] username (%s) and password_file" % (link.username or "none")
                if link.username else "; the broker wants a username and password_file")
    return f"the MQTT broker at {link.url} refused the connection: {text}{hint}"
