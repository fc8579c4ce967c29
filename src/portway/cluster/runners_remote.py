"""``RemoteLink``: a runner attached to another process, as this process's pools see it."""

from __future__ import annotations

from typing import Any, Protocol

from portway.cluster.runners_wire import RemoteRunner
from portway.errors import PortwayError
from portway.runners.link import Call, RunnerLink
from portway.runners.wire import ErrorFrame


class CallRouter(Protocol):
    """Sends calls to the process that holds a runner, and their cancels."""

    def open_call(self, link: RemoteLink, kind: str, payload: dict[str, Any]) -> Call: ...

    def close_call(self, link: RemoteLink, call: Call, *, cancel: bool) -> None: ...


class RemoteLink(RunnerLink):
    """Stands in a pool for a runner of another process: a call opened here is
    sent to that process, which admits it (its pool queues it when the runner
    is busy) and streams the runner's answers back into the call's events.

    ``in_flight`` counts this process's calls (at most the runner's concurrency
    are sent from here); :attr:`load` also counts the other processes' calls,
    as its owner last announced them.
    """

    remote = True

    def __init__(self, runner: RemoteRunner, process: str, subject: str, router: CallRouter):
        super().__init__(runner.name, runner.model, runner.concurrency, runner.owner)
        self.runner_id = runner.id
        self.process = process
        """The name of the process that holds the runner."""
        self.subject = subject
        """That process's subject token."""
        self.reported = runner
        self.router = router
        self.refusals: dict[str, PortwayError] = {}

    @property
    def load(self) -> int:
        return max(self.in_flight, self.reported.in_flight)

    def refuse(self, call: Call, error: PortwayError) -> ErrorFrame:
        """The frame that ends ``call`` with ``error`` (its owner refused it), which
        :meth:`error` turns back into ``error`` itself."""
        self.refusals[call.id] = error
        return ErrorFrame(type="error", id=call.id, message=error.message[:4000], code=error.code)

    def error(self, frame: ErrorFrame) -> PortwayError:
        return self.refusals.pop(frame.id, None) or super().error(frame)

    def open(self, kind: str, payload: dict[str, Any]) -> Call:
        call = self.router.open_call(self, kind, payload)
        self.calls[call.id] = call
        return call

    def finish(self, call: Call) -> None:
        self.calls.pop(call.id, None)
        self.refusals.pop(call.id, None)
        self.router.close_call(self, call, cancel=not call.done and not self.gone)

    def health(self) -> dict[str, Any]:
        runner = self.reported
        return {
            "runner": self.name,
            "owner": self.owner,
            "concurrency": self.concurrency,
            "in_flight": self.load,
            "served": runner.served,
            "failed": runner.failed,
            "process": self.process,
        }
