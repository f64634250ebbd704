"""NetSuite REST error bodies: RFC 7807 problem details with ``o:errorDetails``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from starlette.responses import Response

from entrepot.simulators.erp.jsonio import DecimalJSONResponse

PROBLEM_MEDIA_TYPE = "application/problem+json"

_RFC9110 = "https://www.rfc-editor.org/rfc/rfc9110.html#section-"

# Type link and title of each status the simulator sends. RFC 9110 defines every status
# here except 429, which RFC 6585 section 4 defines.
_PROBLEM_TYPES: dict[int, tuple[str, str]] = {
    400: (_RFC9110 + "15.5.1", "Bad Request"),
    401: (_RFC9110 + "15.5.2", "Unauthorized"),
    404: (_RFC9110 + "15.5.5", "Not Found"),
    405: (_RFC9110 + "15.5.6", "Method Not Allowed"),
    429: ("https://www.rfc-editor.org/rfc/rfc6585.html#section-4", "Too Many Requests"),
    500: (_RFC9110 + "15.6.1", "Internal Server Error"),
    503: (_RFC9110 + "15.6.4", "Service Unavailable"),
}


class ErrorCode(StrEnum):
    """NetSuite error codes (``o:errorCode``) that the simulator sends."""

    CONCURRENCY_LIMIT_EXCEEDED = "CONCURRENCY_LIMIT_EXCEEDED"
    DUP_RCRD = "DUP_RCRD"
    INVALID_CONTENT = "INVALID_CONTENT"
    INVALID_FLD_VALUE = "INVALID_FLD_VALUE"
    INVALID_KEY_OR_REF = "INVALID_KEY_OR_REF"
    INVALID_LOGIN = "INVALID_LOGIN"
    NONEXISTENT_ID = "NONEXISTENT_ID"
    REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    USER_ERROR = "USER_ERROR"


@dataclass(frozen=True)
class ErrorDetail:
    """One entry of ``o:errorDetails``. ``path`` is the JSON path of the faulty value."""

    detail: str
    code: ErrorCode
    path: str | None = None

    def to_json(self) -> dict[str, str]:
        body = {"detail": self.detail, "o:errorCode": self.code.value}
        if self.path is not None:
            body["o:errorPath"] = self.path
        return body


class ErpError(Exception):
    """Error that a record route returns to the client as a NetSuite error body."""

    def __init__(
        self,
        status: int,
        details: Sequence[ErrorDetail],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__("; ".join(detail.detail for detail in details))
        self.status = status
        self.details = tuple(details)
        self.headers = dict(headers or {})


def error_body(status: int, details: Sequence[ErrorDetail]) -> dict[str, Any]:
    """Build the NetSuite error body for ``status``."""
    type_link, title = _PROBLEM_TYPES.get(status, (_RFC9110 + "15", "Error"))
    return {
        "type": type_link,
        "title": title,
        "status": status,
        "o:errorDetails": [detail.to_json() for detail in details],
    }


def error_response(
    status: int,
    details: Sequence[ErrorDetail],
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Build an HTTP response that carries the NetSuite error body for ``status``."""
    return DecimalJSONResponse(
        error_body(status, details),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def response_for(error: ErpError) -> Response:
    """Build the HTTP response for a raised ErpError."""
    return error_response(error.status, error.details, error.headers)


def bad_request(details: Sequence[ErrorDetail]) -> ErpError:
    """Build a 400 error carrying every detail found in one request."""
    return ErpError(400, details)


def not_found(record_type: str, key: str) -> ErpError:
    """Build the 404 error for a record that does not exist."""
    detail = ErrorDetail(
        f"Record {record_type} with key '{key}' does not exist.",
        ErrorCode.NONEXISTENT_ID,
    )
    return ErpError(404, [detail])


def duplicate_record(external_id: str) -> ErpError:
    """Build the 400 error for a create whose external id another record already has."""
    detail = ErrorDetail(
        f"A record with external ID '{external_id}' already exists.",
        ErrorCode.DUP_RCRD,
        "externalId",
    )
    return ErpError(400, [detail])


def invalid_login() -> ErpError:
    """Build the 401 error for a record request without the configured bearer token."""
    detail = ErrorDetail(
        "Invalid login attempt. Send the header 'Authorization: Bearer <token>' with the"
        " token the simulator was started with.",
        ErrorCode.INVALID_LOGIN,
    )
    return ErpError(401, [detail], {"WWW-Authenticate": "Bearer"})


def concurrency_limit_exceeded() -> ErpError:
    """Build the 429 for a request over the account's concurrency limit.

    It has no Retry-After header, so clients must choose their own backoff.
    """
    detail = ErrorDetail(
        "Concurrent request limit exceeded. Request blocked.",
        ErrorCode.CONCURRENCY_LIMIT_EXCEEDED,
    )
    return ErpError(429, [detail])


def request_limit_exceeded(retry_after: int | None) -> ErpError:
    """Build the 429 for a request over the rate limit, with Retry-After when given."""
    if retry_after is None:
        return ErpError(429, [_request_limit_detail("Request blocked.")])

    detail = _request_limit_detail(f"Retry after {retry_after} seconds.")
    return ErpError(429, [detail], {"Retry-After": str(retry_after)})


def _request_limit_detail(advice: str) -> ErrorDetail:
    return ErrorDetail(f"Request limit exceeded. {advice}", ErrorCode.REQUEST_LIMIT_EXCEEDED)


def service_unavailable(retry_after: int | None) -> ErpError:
    """Build the 503 sent during a simulated maintenance window."""
    advice = "Try again later." if retry_after is None else f"Retry after {retry_after} seconds."
    detail = ErrorDetail(
        f"The service is unavailable because of scheduled maintenance. {advice}",
        ErrorCode.SERVICE_UNAVAILABLE,
    )
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return ErpError(503, [detail], headers)
