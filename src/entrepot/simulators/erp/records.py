"""Record URLs: the key in the path, the JSON body and the Location of a written record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response

from entrepot.simulators.erp.errors import ErpError, ErrorCode, ErrorDetail, bad_request
from entrepot.simulators.erp.jsonio import parse_json

RECORD_API_PREFIX = "/services/rest/record/v1"
EXTERNAL_ID_PREFIX = "eid:"


@dataclass(frozen=True)
class RecordKey:
    """Key of a record in a URL: ``eid:<externalId>`` or the numeric internal id."""

    column: Literal["external_id", "id"]
    value: str | int

    @property
    def external_id(self) -> str | None:
        return self.value if isinstance(self.value, str) else None

    def where_clause(self, table: str) -> str:
        """Return the SQL condition on ``table`` that selects this record by ``value``."""
        return f"{table}.{self.column} = ?"


def parse_record_key(text: str, record_type: str) -> RecordKey:
    """Parse the last segment of a record URL, raising 404 NONEXISTENT_ID if it is neither
    ``eid:<externalId>`` nor a numeric internal id."""
    if text.startswith(EXTERNAL_ID_PREFIX) and len(text) > len(EXTERNAL_ID_PREFIX):
        return RecordKey("external_id", text.removeprefix(EXTERNAL_ID_PREFIX))
    if text.isascii() and text.isdigit():
        return RecordKey("id", int(text))

    detail = ErrorDetail(
        f"Invalid {record_type} key '{text}'. Use eid:<externalId> or a numeric internal ID.",
        ErrorCode.NONEXISTENT_ID,
    )
    raise ErpError(404, [detail])


def require_external_key(text: str, record_type: str) -> str:
    """Return the external id of an ``eid:<externalId>`` key, which an upsert requires."""
    key = parse_record_key(text, record_type)
    if key.external_id is not None:
        return key.external_id

    detail = ErrorDetail(
        f"An upsert needs an external ID in the URL: PUT {RECORD_API_PREFIX}/{record_type}"
        f"/eid:<externalId>, not the internal ID '{text}'.",
        ErrorCode.INVALID_KEY_OR_REF,
    )
    raise bad_request([detail])


async def read_json_body(request: Request) -> Any:
    """Parse the request body with exact Decimals, raising 400 INVALID_CONTENT if invalid."""
    body = await request.body()
    try:
        return parse_json(body)
    except ValueError as error:
        detail = ErrorDetail(
            f"The request body is not valid JSON: {error}.", ErrorCode.INVALID_CONTENT
        )
        raise bad_request([detail]) from error


def record_written(request: Request, record_type: str, internal_id: int) -> Response:
    """Build NetSuite's response to a successful write: 204 with the record URL as Location."""
    base_url = str(request.base_url).rstrip("/")
    location = f"{base_url}{RECORD_API_PREFIX}/{record_type}/{internal_id}"
    return Response(status_code=204, headers={"Location": location})
