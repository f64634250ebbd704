"""NetSuite error responses sorted into retry later, permanent and nothing to do."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from entrepot.spokes.failures import PermanentFailure, RetryLater
from entrepot.spokes.netsuite.errors import raise_for_failure, retry_after_seconds


def answer(
    status: int, details: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"status": status, "o:errorDetails": details or []}
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers or {})


def test_success_raises_nothing() -> None:
    raise_for_failure("erp", httpx.Response(204))


def test_concurrency_limit_is_throttling() -> None:
    response = answer(
        429,
        [
            {
                "detail": "Concurrent request limit exceeded.",
                "o:errorCode": "CONCURRENCY_LIMIT_EXCEEDED",
            }
        ],
    )
    with pytest.raises(RetryLater) as raised:
        raise_for_failure("erp", response)
    assert raised.value.throttled
    assert "CONCURRENCY_LIMIT_EXCEEDED" in raised.value.reason


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_retry_later(status: int) -> None:
    with pytest.raises(RetryLater) as raised:
        raise_for_failure("erp", answer(status, headers={"Retry-After": "7"}))
    assert not raised.value.throttled
    assert raised.value.retry_after == 7.0
    assert raised.value.status_code == status


def test_bad_data_is_permanent_with_path_and_remedy() -> None:
    response = answer(
        400,
        [
            {
                "detail": "Invalid item reference key 'SKU-9'.",
                "o:errorCode": "INVALID_KEY_OR_REF",
                "o:errorPath": "item.items[1].item",
            }
        ],
    )
    with pytest.raises(PermanentFailure) as raised:
        raise_for_failure("erp", response)
    assert raised.value.error_code == "INVALID_KEY_OR_REF"
    assert raised.value.field_path == "item.items[1].item"
    assert "item.items[1].item: Invalid item reference key 'SKU-9'." in raised.value.reason
    assert raised.value.remedy is not None
    assert "Create the item in the ERP" in raised.value.remedy


def test_authentication_failure_retries_with_hint() -> None:
    with pytest.raises(RetryLater, match="check the token configured for target 'erp'"):
        raise_for_failure("erp", answer(401))


def test_retry_after_as_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    seconds = retry_after_seconds(
        httpx.Response(503, headers={"Retry-After": format_datetime(when, usegmt=True)})
    )
    assert seconds is not None
    assert 25 <= seconds <= 31


def test_retry_after_invalid_ignored() -> None:
    assert retry_after_seconds(httpx.Response(503, headers={"Retry-After": "soon"})) is None
