"""The SNMPv3 user settings shared by polled targets and the trap listener's users."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

# The spellings net-snmp (`-a SHA -x AES`), snmp_exporter, vendors' web pages and RFC 3414/7860
# use, after upper-casing and dropping '-', '_', ' ', an `HMAC`/`USM` prefix and a `Protocol`
# suffix. AES alone is AES-128 (CFB), as in net-snmp and snmp_exporter. One table for polled
# targets and trap users: a user copied from one section to the other must load in both.
AUTH_SPELLINGS: dict[str, str] = {
    "MD5": "MD5",
    "MD596": "MD5",
    "SHA": "SHA",
    "SHA1": "SHA",
    "SHA96": "SHA",
    "SHA196": "SHA",
    "SHA224": "SHA224",
    "128SHA224": "SHA224",
    "SHA256": "SHA256",
    "192SHA256": "SHA256",
    "SHA384": "SHA384",
    "256SHA384": "SHA384",
    "SHA512": "SHA512",
    "384SHA512": "SHA512",
}
PRIV_SPELLINGS: dict[str, str] = {
    "DES": "DES",
    "DESCBC": "DES",
    "CBCDES": "DES",
    "AES": "AES128",
    "AES128": "AES128",
    "AESCFB": "AES128",
    "AESCFB128": "AES128",
    "AES128CFB": "AES128",
    "CFBAES128": "AES128",
    "AES192": "AES192",
    "AES192CFB": "AES192",
    "AES256": "AES256",
    "AES256CFB": "AES256",
    "AES192C": "AES192C",
    "AES192CISCO": "AES192C",
    "AES256C": "AES256C",
    "AES256CISCO": "AES256C",
}


def _protocol_key(value: str) -> str:
    key = "".join(c for c in value.upper() if c not in "-_ ")
    for prefix in ("USM", "HMAC"):
        key = key.removeprefix(prefix)
    # The MIB object names: usmHMAC192SHA256AuthProtocol, usmAesCfb128Protocol.
    for suffix in ("AUTHPROTOCOL", "PRIVPROTOCOL", "PROTOCOL"):
        key = key.removesuffix(suffix)
    return key


def canonical_protocol(value: Any, spellings: Mapping[str, str], what: str) -> Any:
    """`value` as the one name dutyd uses (AES -> AES128, SHA-256 -> SHA256); ValueError
    naming the accepted spellings for an unknown one. Non-strings are left to the type check."""
    if not isinstance(value, str):
        return value
    canonical = spellings.get(_protocol_key(value))
    if canonical is None:
        names = ", ".join(sorted(set(spellings.values())))
        raise ValueError(f"{value!r} is not an SNMPv3 {what} protocol; use one of {names}")
    return canonical


def canonical_auth(value: Any) -> Any:
    """The before-validator of an `auth_protocol` field."""
    return canonical_protocol(value, AUTH_SPELLINGS, "authentication")


def canonical_priv(value: Any) -> Any:
    """The before-validator of a `priv_protocol` field."""
    return canonical_protocol(value, PRIV_SPELLINGS, "privacy")


# The field types of both models: the canonical names, reached from any accepted spelling.
AuthProtocol = Annotated[
    Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"], BeforeValidator(canonical_auth)
]
PrivProtocol = Annotated[
    Literal["DES", "AES128", "AES192", "AES256", "AES192C", "AES256C"],
    BeforeValidator(canonical_priv),
]


AUTH_SECRETS = ("auth_password", "auth_password_env", "auth_password_file")
PRIV_SECRETS = ("priv_password", "priv_password_env", "priv_password_file")
USM_SECRETS = AUTH_SECRETS + PRIV_SECRETS


def given(model: Any, *names: str) -> list[str]:
    """The names among `names` that the model has a value for."""
    return [n for n in names if getattr(model, n) is not None]


def check_usm(model: Any) -> None:
    """Raise ValueError for an inconsistent USM user: two forms of one secret, a protocol
    without its password (or the reverse), privacy without authentication, a short password.
    `model` has auth_/priv_ password fields (inline, _env, _file), auth_protocol,
    priv_protocol and auth_secret()/priv_secret()."""
    auth = given(model, *AUTH_SECRETS)
    priv = given(model, *PRIV_SECRETS)
    for group in (auth, priv):
        if len(group) > 1:
            raise ValueError(f"give only one of {', '.join(group)}")
    if bool(auth) != bool(model.auth_protocol):
        raise ValueError("give auth_protocol and an auth password together")
    if bool(priv) != bool(model.priv_protocol):
        raise ValueError("give priv_protocol and a priv password together")
    if priv and not auth:
        raise ValueError("privacy (priv_*) needs authentication (auth_*) too")
    for secret in (model.auth_secret(), model.priv_secret()):
        if secret is not None and len(secret) < 8:
            raise ValueError("SNMPv3 passwords are at least 8 characters (RFC 3414)")
