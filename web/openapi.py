"""The OpenAPI 3.1 description of dutyd's HTTP API, served at /api/v1/openapi.json.

Written as data beside the handlers' contracts (web/api.py, web/statuspage/) so that a
client generator or schemathesis can read it; `tests/test_api.py` checks that every route the
daemon serves under /api/ is described here.
"""

from __future__ import annotations

from typing import Any

from dutyd import __version__ as VERSION

_ERROR = {
    "description": "refused, with the reason",
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"error": {"type": "string"}}}
        }
    },
}
_OK = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
# Alternatives, any one of which is enough. With basic auth on, every request needs the login
# too (the web config's `basic_auth_users`), and a write the token beside it.
_WRITE = {"security": [{"token": []}, {"bearer": []}, {"basic": [], "token": []}]}
# Reads also take the read-only token (same header) or a basic-auth login alone; with
# `api.open_loopback_reads` local processes read without a credential.
_READ = {"security": [{"token": []}, {"bearer": []}, {"basic": []}]}
_SCHEMES = {
    "token": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Dutyd-Token",
        "description": "The API token (reads and writes) or the read-only token (reads).",
    },
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The same tokens as 'Authorization: Bearer', only while basic auth is "
        "off (with basic auth, Authorization carries the login).",
    },
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "A login of the web config's basic_auth_users, when configured: then "
        "every request needs it, and it is the recorded actor of a write.",
    },
}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": properties, "required": required}
            }
        },
    }


_STR = {"type": "string"}
_DURATION = {"type": "string", "description": "a duration: 90s, 15m, 2h, 1d"}
_MATCHERS = {
    "type": "object",
    "description": "label matchers as in a rule's match: {target: db1} or {rule: {'=~': 'disk.*'}}",
}


def document() -> dict[str, Any]:
    # 401: no valid credential; 403: none is configured (writes: no API token).
    refused = {"401": _ERROR, "403": _ERROR}
    read = {"responses": {"200": _OK, "400": _ERROR, **refused}, **_READ}
    one = {"responses": {"200": _OK, "404": _ERROR, **refused}, **_READ}
    write = {"responses": {"200": _OK, "400": _ERROR, **refused, "404": _ERROR}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dutyd API",
            "version": VERSION,
            "description": "Alerts, acknowledgements, silences, maintenance windows, targets, "
            "on-call and the duty log. Send the token as 'X-Dutyd-Token: <token>': writes "
            "need the API token; reads the API token, the read-only token or a basic-auth "
            "login ('Authorization: Bearer <token>' works too while basic auth is off). "
            "Without a credential a read is a 401, unless api.open_loopback_reads opens "
            "reads to local processes.",
        },
        "components": {"securitySchemes": _SCHEMES},
        "paths": {
            "/api/v1/status": {
                "get": {
                    "summary": "What is wrong now and who has it (the status page's data)",
                    "parameters": [_query("lang", "en or zh", {"enum": ["en", "zh"]})],
                    **read,
                }
            },
            "/api/v1/cluster": {
                "get": {
                    "summary": "This node's place in the cluster: active or standby, the active "
                    "node, members, shard map, lease age",
                    **read,
                }
            },
            "/api/v1/topology": {
                "get": {
                    "summary": "Every target's parents; those of depends_on: auto as learned "
                    "from the switches' LLDP neighbours or forwarding tables, with the port",
                    **read,
                }
            },
            "/api/v1/alerts": {
                "get": {
                    "summary": "Alerts with overlays (acknowledged, silenced, suppressed)",
                    "parameters": [
                        _query("state", "comma list of pending, firing, resolved"),
                        _query("severity", "comma list"),
                        _query("target", "comma list of target names"),
                        _query("rule", "comma list of rule names"),
                    ],
                    **read,
                }
            },
            "/api/v1/alerts/{fingerprint}": {
                "get": {
                    "summary": "One alert and its duty-log history",
                    "parameters": [
                        {"name": "fingerprint", "in": "path", "required": True, "schema": _STR}
                    ],
                    **one,
                }
            },
            "/api/v1/ack": {
                "post": {
                    "summary": "Acknowledge an alert (escalation stops) or answer a drill",
                    "requestBody": _body(
                        {"alert": _STR, "actor": _STR, "note": _STR, "expires_in": _DURATION},
                        ["alert"],
                    ),
                    **_WRITE,
                    **write,
                }
            },
            "/api/v1/silences": {
                "get": {"summary": "Active silences", **read},
                "post": {
                    "summary": "Silence matching alerts for a duration or until a time",
                    "requestBody": _body(
                        {
                            "matchers": _MATCHERS,
                            "duration": _DURATION,
                            "until": {"type": "number"},
                            "actor": _STR,
                            "reason": _STR,
                        },
                        ["matchers", "reason"],
                    ),
                    **_WRITE,
                    **write,
                },
            },
            "/api/v1/maintenance": {
                "get": {"summary": "Maintenance windows, scheduled and ad hoc", **read},
                "post": {
                    "summary": "Open a maintenance window for targets or label matchers",
                    "requestBody": _body(
                        {
                            "targets": {"type": "array", "items": _STR},
                            "matchers": _MATCHERS,
                            "start": {"type": "number"},
                            "end": {"type": "number"},
                            "duration": _DURATION,
                            "actor": _STR,
                            "reason": _STR,
                        },
                        ["reason"],
                    ),
                    **_WRITE,
                    **write,
                },
            },
            "/api/v1/drills": {
                "post": {
                    "summary": "Start an emergency drill through the escalation chain",
                    "requestBody": _body({"actor": _STR, "wait": _DURATION}, []),
                    **_WRITE,
                    **write,
                }
            },
            "/api/v1/drills/{id}": {
                "get": {
                    "summary": "A drill and who answered",
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": _STR}],
                    **one,
                }
            },
            "/api/v1/targets": {
                "get": {
                    "summary": "Targets with their last poll result",
                    "parameters": [_query("up", "0 for targets down only")],
                    **read,
                }
            },
            "/api/v1/oncall": {"get": {"summary": "Who is on duty now and next", **read}},
            "/api/v1/log": {
                "get": {
                    "summary": "The duty log",
                    "parameters": [
                        _query("since", "unix seconds", {"type": "number"}),
                        _query("until", "unix seconds", {"type": "number"}),
                        _query("kind", "comma list; a trailing '.' is a prefix (alert.)"),
                        _query("subject", "alert fingerprint, target, channel ..."),
                        _query("limit", "1..10000", {"type": "integer"}),
                    ],
                    **read,
                }
            },
            "/api/v1/entries": {
                "get": {
                    "summary": "The entry register: who went in or out of which machine room",
                    "parameters": [
                        _query("room", "one room"),
                        _query("since", "unix seconds", {"type": "number"}),
                        _query("until", "unix seconds", {"type": "number"}),
                        _query("limit", "1..10000", {"type": "integer"}),
                    ],
                    **read,
                },
                "post": {
                    "summary": "Register people in or out of a machine room (with whom, why, "
                    "carrying what); each companion gets a line of their own",
                    "requestBody": _body(
                        {
                            "room": _STR,
                            "person": _STR,
                            "direction": {"enum": ["in", "out"]},
                            "with": {"type": "array", "items": _STR},
                            "purpose": _STR,
                            "items": _STR,
                            "approved_by": _STR,
                            "actor": _STR,
                        },
                        ["room", "person", "direction"],
                    ),
                    **_WRITE,
                    **write,
                },
            },
            "/api/v1/rooms": {
                "get": {"summary": "Each machine room's door and who is in it", **read}
            },
            "/api/v1/registers/sign": {
                "post": {
                    "summary": "The person in charge signs a period of a register off",
                    "requestBody": _body(
                        {
                            "register": {
                                "enum": [
                                    "entry",
                                    "equipment",
                                    "status",
                                    "network",
                                    "software",
                                    "log",
                                ]
                            },
                            "from": {"type": "number"},
                            "to": {"type": "number"},
                            "actor": _STR,
                            "note": _STR,
                        },
                        ["register", "from", "to"],
                    ),
                    **_WRITE,
                    **write,
                }
            },
            "/api/v1/shift": {
                "get": {
                    "summary": "The current shift's check-in: its people and who confirmed",
                    **read,
                }
            },
            "/api/v1/shift/confirm": {
                "post": {
                    "summary": "Confirm that the actor, of the current shift, is on duty",
                    "requestBody": _body({"actor": _STR, "note": _STR}, []),
                    **_WRITE,
                    **write,
                }
            },
            "/api/v1/shift/handover": {
                "post": {
                    "summary": "The outgoing person's hand-over note, into the duty diary",
                    "requestBody": _body({"actor": _STR, "note": _STR}, ["note"]),
                    **_WRITE,
                    **write,
                }
            },
            "/api/v1/doors/{room}": {
                "post": {
                    "summary": "A room's door contact from an access-control system; the "
                    "token is the door's own (rooms[].door.token_env), not the API token, "
                    "and basic auth does not apply",
                    "parameters": [
                        {"name": "room", "in": "path", "required": True, "schema": _STR}
                    ],
                    "requestBody": _body({"open": {"type": "boolean"}}, ["open"]),
                    "security": [{"token": []}],
                    **write,
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document (no token needed; a login when basic auth is on)",
                    "responses": {"200": _OK},
                    "security": [{}, {"basic": []}],
                }
            },
        },
    }
