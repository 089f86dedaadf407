"""AWS failures: botocore's exception types, re-exported so that no module outside this
package imports botocore, and the classification every retry relies on."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectionError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    InvalidRegionError,
    NoCredentialsError,
    NoRegionError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
)

from dynamo_backups.aws.timeouts import CONNECT_VARIABLE, READ_VARIABLE, timeouts_from_environment

__all__ = [
    "BotoCoreError",
    "CertificateError",
    "ClientError",
    "ConnectionClosedError",
    "EndpointConnectionError",
    "HTTPClientError",
    "InvalidRegionError",
    "NoCredentialsError",
    "NoRegionError",
    "ProfileNotFound",
    "client_error",
    "describe_error",
    "error_code",
    "http_status",
    "is_conditional_conflict",
    "is_timeout",
    "is_transient",
    "key_error",
    "modeled_error",
    "raise_for_key_errors",
]

TRANSIENT_ERROR_CODES = frozenset(
    {
        "SlowDown",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "TransactionInProgressException",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "CRC32CheckFailed",
    }
)

# What S3 and DynamoDB answer when an object or version is not there.
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound"})
# What AWS answers when the caller's policies do not allow the call (S3, IAM, DynamoDB, EC2).
ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "AllAccessDisabled", "UnauthorizedOperation", "403"}
)
# What S3 answers when a conditional write lost to another writer.
PRECONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412"})
# What S3 answers (409) when a conditional request met a concurrent operation on the same key
# still in progress: not a verdict on the condition. AWS: "On a 409 failure you should retry"
# (PutObject's If-None-Match and If-Match; conditional deletes alike). OperationAborted is the
# older code S3 gives for the same conflict.
CONDITIONAL_CONFLICT_CODES = frozenset({"ConditionalRequestConflict", "OperationAborted"})


class CertificateError(BotoCoreError):
    """The server's TLS certificate is not trusted: retrying will not help."""

    fmt = (
        "the TLS certificate of {endpoint} is not trusted ({reason}): if it is signed by a "
        "private CA, set AWS_CA_BUNDLE (or ca_bundle in the AWS config) to a file holding it"
    )


def error_code(error: BaseException) -> str:
    """The service's error code of a ClientError ("" for anything else)."""
    if not isinstance(error, ClientError):
        return ""
    return str(error.response.get("Error", {}).get("Code", ""))


def http_status(error: BaseException) -> int:
    """The HTTP status of a ClientError (0 for anything else)."""
    if not isinstance(error, ClientError):
        return 0
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def is_transient(error: BaseException) -> bool:
    """True for failures that a later attempt can cure: throttling, 5xx, dropped or reset
    connections, timeouts, truncated answers."""
    if isinstance(error, ClientError):
        status = http_status(error)
        return error_code(error) in TRANSIENT_ERROR_CODES or status >= 500 or status == 429
    return isinstance(
        error, ConnectionError | HTTPClientError | IncompleteReadError | ResponseStreamingError
    )


def is_conditional_conflict(error: BaseException) -> bool:
    """A conditional request that met a concurrent one on its key (409): to be sent again,
    so that S3 judges its condition on what the other request left."""
    return error_code(error) in CONDITIONAL_CONFLICT_CODES


def is_timeout(error: BaseException) -> bool:
    """No answer in time: botocore's connect or read timeout, or the fast transport's."""
    if isinstance(error, ReadTimeoutError | ConnectTimeoutError):
        return True
    text = str(error).lower()
    return isinstance(error, HTTPClientError) and ("timed out" in text or "timeout" in text)


def describe_error(error: BaseException) -> str:
    """A one-line description: the service's error code and message where there is one;
    for a timeout, the endpoint, the timeout and the variable that sets it."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code") or http_status(error)
        return f"{code}: {details.get('Message') or error}"
    if is_timeout(error):
        return _describe_timeout(error)
    return f"{type(error).__name__}: {error}"


def _describe_timeout(error: BaseException) -> str:
    try:
        timeouts = timeouts_from_environment()
    except ValueError:
        timeouts = None
    endpoint = getattr(error, "kwargs", {}).get("endpoint_url")
    where = f"from {endpoint} " if endpoint else f"({error}) "
    if isinstance(error, ConnectTimeoutError):
        limit = f" {timeouts.connect:g} s" if timeouts else ""
        return (
            f"no connection {where}within the connect timeout{limit} "
            f"(set {CONNECT_VARIABLE} to change it)"
        )
    limit = f" {timeouts.read:g} s" if timeouts else ""
    return f"no answer {where}within the read timeout{limit} (set {READ_VARIABLE} to change it)"


def client_error(
    operation: str,
    code: str,
    message: str,
    status: int,
    headers: dict[str, Any] | None = None,
    **extra: Any,
) -> ClientError:
    """botocore's ClientError for an answer that did not come through a botocore client."""
    return ClientError(
        {
            "Error": {"Code": code, "Message": message, **extra},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
        },
        operation,
    )


def key_error(
    operation: str, key: str, code: str, message: str, other_keys: int = 0
) -> ClientError:
    """The error of one key in a DeleteObjects answer (which S3 answers with 200) as a
    ClientError with that key's own code, so that it is classified like any other answer:
    an AccessDenied fails at once, an InternalError or SlowDown is retried."""
    more = f", and {other_keys:,} other keys" if other_keys else ""
    return client_error(operation, code, f"{message} (key {key}{more})", 200, Key=key)


def raise_for_key_errors(answer: Mapping[str, Any], operation: str = "DeleteObjects") -> None:
    """Raise the first per-key error of a DeleteObjects answer (see ``key_error``), naming
    how many other keys failed; botocore returns them in ``Errors`` and raises nothing."""
    errors = answer.get("Errors") or []
    if not errors:
        return
    first = errors[0]
    raise key_error(
        operation,
        str(first.get("Key", "")),
        str(first.get("Code", "")),
        str(first.get("Message", "")),
        len(errors) - 1,
    )


@cache
def _error_parser(protocol: str) -> Any:
    from botocore.parsers import create_parser

    return create_parser(protocol)


def modeled_error(client: Any, protocol: str, operation: str, response: Any) -> ClientError:
    """The exception botocore would raise for an error answer that came through its HTTP
    session but not through the client: parsed by botocore's own parser for ``protocol``,
    raised as the client's modeled class (``client.exceptions.NoSuchKey`` and the like)."""
    parsed = _error_parser(protocol).parse(
        {
            "status_code": response.status_code,
            "headers": response.headers,
            "body": response.content,
        },
        None,
    )
    code = parsed.get("Error", {}).get("Code") or str(response.status_code)
    return client.exceptions.from_code(code)(parsed, operation)
