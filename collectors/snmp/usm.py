"""The SNMPv3 user settings shared by polled targets and the trap listener's users."""

from __future__ import annotations

from typing import Any

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
