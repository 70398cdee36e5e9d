"""The HTTP face: the server (/metrics, health, TLS and auth), the JSON API, its OpenAPI
description, the on-call status page and the ack pages."""
