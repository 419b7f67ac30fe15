"""tidal's Python client: `tidal.Client(["127.0.0.1:7001"]).submit(type="t2i", payload=b"...")`."""

from .client import Client, Priority, Queue, Submitted, Task, TaskState
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TidalError,
    Unauthenticated,
    Unavailable,
    WaitTimeout,
)

__all__ = [
    "Aborted", "AlreadyExists", "Cancelled", "Client", "DeadlineExceeded",
    "FailedPrecondition", "Internal", "InvalidArgument", "NotFound",
    "PermissionDenied", "Priority", "Queue", "ResourceExhausted", "Submitted",
    "Task", "TaskState", "TidalError", "Unauthenticated", "Unavailable",
    "WaitTimeout",
]
