"""Exceptions of the tidal client: one per gRPC status code, each carrying it."""

import grpc


class TidalError(Exception):
    """A call that failed: `code` is the gRPC status code (grpc.StatusCode),
    `message` the server's (or this client's) words, and for UNAVAILABLE
    answers `leader_id`/`leader_addr` when the server named the leader."""

    def __init__(self, code, message, leader_id=None, leader_addr=None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.leader_id = leader_id
        self.leader_addr = leader_addr


class InvalidArgument(TidalError):
    pass


class NotFound(TidalError):
    pass


class AlreadyExists(TidalError):
    pass


class FailedPrecondition(TidalError):
    pass


class ResourceExhausted(TidalError):
    pass


class PermissionDenied(TidalError):
    pass


class Unauthenticated(TidalError):
    pass


class Unavailable(TidalError):
    pass


class DeadlineExceeded(TidalError):
    pass


class Aborted(TidalError):
    pass


class Cancelled(TidalError):
    pass


class Internal(TidalError):
    pass


class WaitTimeout(TidalError, TimeoutError):
    """`Client.wait` gave up before the task finished; `task` is the last read."""

    def __init__(self, message, task):
        super().__init__(grpc.StatusCode.DEADLINE_EXCEEDED, message)
        self.task = task


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INTERNAL: Internal,
}

_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


def error(code, message, leader_id=None, leader_addr=None):
    """The exception of `code` (a grpc.StatusCode or its number)."""
    if isinstance(code, int):
        code = _BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    cls = _BY_CODE.get(code, TidalError)
    return cls(code, message, leader_id, leader_addr)
