"""The OpenAPI document, generated from the msgspec types the client encodes with (so it
cannot drift from the wire)."""

from __future__ import annotations

import functools
from typing import Any, Final

import msgspec
from rkd.client import cloud
from rkd.client.report import CommunityReport


class Held(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to an access request: the raw events held for the sessions named."""

    events: list[dict[str, Any]]


REF: Final = "#/components/schemas/{name}"
SIGNED: Final = [
    cloud.H_KEY_ID,
    cloud.H_TIMESTAMP,
    cloud.H_NONCE,
    cloud.H_BATCH_ID,
    cloud.H_SIGNATURE,
]


def _ref(t: type) -> dict[str, str]:
    return {"$ref": REF.format(name=t.__name__)}


def _json(t: type) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(t)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"description": "Refused.", **_json(cloud.Problem)} for s in statuses}


def _post(summary: str, body: type, ok: int, answer: type, signed: bool) -> dict[str, Any]:
    params = [{"name": h, "in": "header", "required": True, "schema": {"type": "string"}}
              for h in (SIGNED if signed else [])]  # fmt: skip
    return {"post": {
        "summary": summary, "parameters": params,
        "requestBody": {"required": True, "description": "gzip (Content-Encoding) of msgpack.",
                        "content": {cloud.CONTENT_TYPE: {"schema": _ref(body)}}},
        "responses": {str(ok): {"description": "Done.", **_json(answer)},
                      **_errors(400, 401, 413, 429, 503)},
    }}  # fmt: skip


@functools.cache
def openapi_document() -> dict[str, Any]:
    types = [cloud.EventBatch, CommunityReport, cloud.SessionsRequest, cloud.Answer,
             cloud.Erased, Held, cloud.Problem]  # fmt: skip
    _, components = msgspec.json.schema_components(types, ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "rkd ingestion API", "version": str(cloud.PROTOCOL_VERSION)},
        "paths": {
            cloud.EVENTS_PATH: _post(
                "A Pro sync batch.", cloud.EventBatch, 202, cloud.Answer, True
            ),
            cloud.REPORTS_PATH: _post(
                "A community report (no key, no id).", CommunityReport, 202, cloud.Answer, False
            ),
            cloud.ERASURE_PATH: _post(
                "Erase the raw events of sessions.", cloud.SessionsRequest, 200, cloud.Erased, True
            ),
            cloud.ACCESS_PATH: _post(
                "The raw events held for sessions.", cloud.SessionsRequest, 200, Held, True
            ),
            "/healthz": {"get": {"summary": "Alive.", "responses": {"200": {"description": "ok"}}}},
            "/metrics": {
                "get": {"summary": "Prometheus text.", "responses": {"200": {"description": "ok"}}}
            },
        },
        "components": {"schemas": components},
    }
