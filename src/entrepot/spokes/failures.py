"""The three kinds of delivery failure. Every failure a spoke reports is one of them.

- `RetryLater`: the target could not take the message now (throttled, down, timed
  out). The message waits and is sent again.
- `PermanentFailure`: the target refused the message's data. Sending it again
  cannot help, so it goes to the dead letters at once, with the reason and what
  would fix it.
- `NothingToDo`: there was no work to do (an order cancelled before it was
  posted, say). This is recorded, and the message is done.

`OnHold` is a `RetryLater` for an order that the target will not take until an
operator acts there, such as a customer on credit hold.
"""

from __future__ import annotations


class DeliveryFailure(Exception):
    """Base of the failure kinds; ``reason`` is for operators and logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryLater(DeliveryFailure):
    """Raised when the target cannot take the message now.

    ``retry_after`` is the wait in seconds the target asked for, if any.
    ``ambiguous`` is set when the target may have committed the request before it
    failed (a timeout after the request was sent), so the next attempt must look
    the record up before creating it. ``throttled`` is set when the target refused
    the request for its own load; such a refusal uses up no attempt of the message.
    """

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        ambiguous: bool = False,
        throttled: bool = False,
        status_code: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.ambiguous = ambiguous
        self.throttled = throttled
        self.status_code = status_code


class OnHold(RetryLater):
    """Raised when the target holds the order back for a reason of its own (the
    customer's credit), so the order waits, using up no attempt, and is offered
    again after ``retry_after`` seconds."""

    def __init__(self, reason: str, *, retry_after: float) -> None:
        super().__init__(reason, retry_after=retry_after)


class PermanentFailure(DeliveryFailure):
    """Raised when the target refuses the data itself.

    ``remedy`` says what would fix it; ``error_code`` and ``field_path`` are the
    target's own names for the error and the field, where it gives them.
    """

    def __init__(
        self,
        reason: str,
        *,
        remedy: str | None = None,
        error_code: str | None = None,
        field_path: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.remedy = remedy
        self.error_code = error_code
        self.field_path = field_path
        self.status_code = status_code


class NothingToDo(DeliveryFailure):
    """Raised when there is nothing to send; the delivery is recorded as done."""
