"""The validating step of a claimed batch: every line's URL matches the endpoint and its model
has a route; the batch then moves to ``in_progress``, or ends ``failed`` with the errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zumik.core.lines import LineError, target_of
from zumik.core.records import Status, move
from zumik.execution.routing import Router
from zumik.settings import Settings
from zumik.storage.batchhandle import BatchHandle
from zumik.storage.claims import Claim
from zumik.storage.inputs import iter_lines
from zumik.storage.store import ProjectStore

log = logging.getLogger("zumik.executor")


class Validating:
    """``BatchRun``'s validating step (a mixin: the state is the run's)."""

    settings: Settings
    router: Router
    clock: Callable[[], float]
    store: ProjectStore
    claim: Claim
    batch: BatchHandle
    batch_id: str

    if TYPE_CHECKING:  # Finalizing's, found through the run's MRO

        def make_terminal(
            self, final: Status, change: Callable[[dict[str, Any]], bool | None]
        ) -> dict[str, Any]: ...

    def _validate(self, record: dict[str, Any]) -> dict[str, Any]:
        """Check every line can run; move to ``in_progress`` or ``failed``."""
        started = time.perf_counter()
        errors: list[dict[str, Any]] = []
        models: set[str] = set()
        path = self.store.file_data_path(record["input_file_id"])
        if self.batch.cancel_requested():
            return self.batch.read() or record
        try:
            for number, raw in iter_lines(str(path)):
                try:
                    url, model = target_of(raw, number)
                    if len(models) < 2:
                        models.add(model)
                    if url != record["endpoint"]:
                        raise LineError(
                            number,
                            "invalid_url",
                            "The URL provided for this request does not match the batch endpoint.",
                            "url",
                        )
                    if self.router.resolve(model) is None:
                        raise LineError(
                            number,
                            "model_not_found",
                            f"The model {model!r} has no route; "
                            f"known: {', '.join(self.router.model_names())}",
                            "body.model",
                        )
                except LineError as exc:
                    errors.append(exc.as_batch_error())
                    if len(errors) >= self.settings.max_batch_errors:
                        break
        except FileNotFoundError:
            errors.append(
                {
                    "code": "invalid_request",
                    "line": None,
                    "param": "file_id",
                    "message": f"Cannot find file {record['input_file_id']}.",
                }
            )
        now = int(self.clock())
        batch_model = next(iter(models)) if len(models) == 1 else None  # the batch's one model
        if errors:

            def fail(current: dict[str, Any]) -> bool:
                if current["status"] != Status.VALIDATING:
                    return False  # cancelled meanwhile
                current["errors"] = {"object": "list", "data": errors}
                current["model"] = batch_model
                return True

            record = self.make_terminal(Status.FAILED, fail)
        else:

            def start(current: dict[str, Any]) -> None:
                if current["status"] == Status.VALIDATING:  # else cancelled meanwhile
                    current["model"] = batch_model
                    move(current, Status.IN_PROGRESS, now)

            record = self.batch.update(start)
        log.info(
            "batch %s: validated in %.3f s, %s",
            self.batch_id,
            time.perf_counter() - started,
            record["status"],
            extra={
                "batch_id": self.batch_id,
                "project": self.store.project,
                "status": record["status"],
                "epoch": self.claim.epoch,
            },
        )
        return record
