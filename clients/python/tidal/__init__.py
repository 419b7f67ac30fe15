"""tidal's Python client and agent.

Client: `tidal.Client(["127.0.0.1:7001"]).submit(type="t2i", payload=b"...")`.
Agent: `agent = tidal.Agent(endpoints, id="py-1")`, `@agent.task("t2i")`, `agent.run()`.
"""

from .agent import Agent, AgentStopped, AgentTask, TaskFailed, TaskStopped
from .client import AgentInfo, Client, Priority, Queue, Submitted, Task, TaskState
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
    "Agent", "AgentInfo", "AgentStopped", "AgentTask", "TaskFailed", "TaskStopped",
    "Aborted", "AlreadyExists", "Cancelled", "Client", "DeadlineExceeded",
    "FailedPrecondition", "Internal", "InvalidArgument", "NotFound",
    "PermissionDenied", "Priority", "Queue", "ResourceExhausted", "Submitted",
    "Task", "TaskState", "TidalError", "Unauthenticated", "Unavailable",
    "WaitTimeout",
]
