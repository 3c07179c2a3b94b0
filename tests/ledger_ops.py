"""Random store operations and an independent recount, for the usage ledger's property tests.

``random_op`` does one change through the store's own functions (uploads, keyed uploads,
deletes, batch creates and ends, Uploads API sessions, expiries by the janitor); ``recount``
counts what the project holds straight from its folders, the way ``usage()`` did before the
ledger. Run as a script (``python ledger_ops.py DATA_DIR SEED``) it loops forever: the kill -9
test kills it at random moments.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from zumik.core import ids, records
from zumik.core.exceptions import ZumikError
from zumik.settings import Settings, load_settings
from zumik.storage import fsutil
from zumik.storage.idempotency import IdempotentRequest
from zumik.storage.janitor import Janitor
from zumik.storage.store import ProjectStore
from zumik.storage.upload_sessions import UploadSessions
from zumik.storage.versioned import VersionedDoc

PROJECT = "proj-a"
LINE = b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}\n'


def make_settings(data_dir: Path) -> Settings:
    return load_settings(
        {},
        data_dir=data_dir,
        max_files=40,
        max_bytes=4000,
        max_records=60,
        max_active_batches=4,
        batch_ttl=50,
        upload_ttl=30,
        idempotency_ttl=40,
    )


def recount(store: ProjectStore, now: float) -> tuple[int, int, int]:
    """Files, bytes, records, from the folders themselves (the old full-scan definition)."""
    files = size = kept = 0
    for path in store.files_dir.glob("file-*.json"):
        meta = json.loads(path.read_bytes())
        if meta.get("expires_at") is None or meta["expires_at"] > now:
            files += 1
            size += meta["bytes"]
    for path in store.uploads_dir.glob("upload_*.json"):
        if path.name.count(".") != 1:
            continue
        record = VersionedDoc(path).read()
        if record is None:
            continue
        kept += 1
        if record["status"] == "pending" and record["expires_at"] > now:
            files += 1
            size += sum(
                p.stat().st_size for p in store.uploads_dir.glob(f"{path.name[:-5]}.part_*")
            )
    kept += sum(1 for p in store.batches_dir.glob("batch_*.json") if p.name.count(".") == 1)
    kept += sum(1 for _ in store.idempotency_dir.glob("*.json"))
    return files, size, kept


class Ops:
    """The operations, on one project, with a clock the caller moves."""

    def __init__(self, data_dir: Path, rng: random.Random, clock: list[float]) -> None:
        self.settings = make_settings(data_dir)
        self.rng = rng
        self.clock = clock
        self.store = ProjectStore(data_dir, PROJECT, lambda: self.clock[0]).ensure()
        self.sessions = UploadSessions(self.store, self.settings)

    def _file_ids(self) -> list[str]:
        return sorted(p.name[:-5] for p in self.store.files_dir.glob("file-*.json"))

    def upload(self, keyed: bool = False) -> None:
        s, now = self.settings, self.clock[0]
        content = LINE * self.rng.randint(1, 6)
        tmp = fsutil.temp_path(self.store.files_dir, "up-")
        fsutil.write_durably(tmp, content)
        expires = self.rng.choice([None, None, int(now) + self.rng.randint(1, 40)])
        meta = {
            "id": ids.new_id(ids.FILE_PREFIX, now),
            "object": "file",
            "bytes": len(content),
            "created_at": int(now),
            "filename": "f.jsonl",
            "purpose": self.rng.choice(["batch", "batch", "batch_output"]),
            "status": "processed",
            "status_details": None,
            "expires_at": expires,
            "requests": content.count(b"\n"),
        }
        key = None
        if keyed:
            key = IdempotentRequest(
                self.store.idempotency_dir,
                f"k{self.rng.randint(0, 5)}",
                "files",
                str(len(content)),
                now,
                s.idempotency_ttl,
            )
        try:
            self.store.commit_upload(
                tmp,
                meta,
                max_files=s.max_files,
                max_bytes=s.max_bytes,
                idempotent=key,
                max_records=s.max_records,
            )
        except ZumikError:
            pass
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self) -> None:
        found = self._file_ids()
        if found:
            with contextlib.suppress(ZumikError):
                self.store.delete_file(self.rng.choice(found))

    def create_batch(self) -> None:
        found = [
            i for i in self._file_ids() if (m := self.store.get_file(i)) and m["purpose"] == "batch"
        ]
        if not found:
            return
        s, now = self.settings, self.clock[0]
        record = records.new_batch(
            ids.new_id(ids.BATCH_PREFIX, now),
            now=int(now),
            input_file_id=self.rng.choice(found),
            endpoint="/v1/chat/completions",
            window="24h",
            metadata={},
            total=1,
        )
        with contextlib.suppress(ZumikError):
            self.store.create_batch(
                record,
                max_active=s.max_active_batches,
                max_files=s.max_files,
                max_bytes=s.max_bytes,
                max_records=s.max_records,
            )

    def end_batch(self) -> None:
        active = self.store.active_ids()
        if not active:
            return
        batch_id = self.rng.choice(active)
        now = int(self.clock[0])
        status = self.rng.choice([records.Status.COMPLETED, records.Status.CANCELLED])
        if status == records.Status.COMPLETED and self.rng.random() < 0.7:
            content = LINE * self.rng.randint(1, 3)
            tmp = fsutil.temp_path(self.store.files_dir, "out-")
            fsutil.write_durably(tmp, content)
            output = {
                "id": ids.new_id(ids.FILE_PREFIX, now),
                "object": "file",
                "bytes": len(content),
                "created_at": now,
                "filename": "out.jsonl",
                "purpose": "batch_output",
                "status": "processed",
                "status_details": None,
                "expires_at": now + self.rng.randint(5, 60),
                "requests": 1,
            }
            try:
                self.store.publish_result(tmp, output)
            finally:
                tmp.unlink(missing_ok=True)
        record = self.store.batch(batch_id).update(lambda r: records.move(r, status, now))
        self.store.release_input(record["input_file_id"], now + self.settings.batch_ttl)

    def session(self) -> None:
        pending = [
            p.name[:-5]
            for p in self.store.uploads_dir.glob("upload_*.json")
            if p.name.count(".") == 1
        ]
        choice = self.rng.random()
        try:
            if not pending or choice < 0.3:
                self.sessions.create(
                    nbytes=len(LINE) * 2,
                    filename="u.jsonl",
                    mime_type="application/jsonl",
                    purpose="batch",
                    file_expires_after=None,
                )
                return
            upload_id = self.rng.choice(pending)
            if choice < 0.6:
                tmp = self.sessions.part_temp()
                fsutil.write_durably(tmp, LINE)
                try:
                    self.sessions.add_part(upload_id, tmp)
                finally:
                    tmp.unlink(missing_ok=True)
            elif choice < 0.8:
                self.sessions.complete(upload_id, self.sessions.part_ids(upload_id), None)
            else:
                self.sessions.cancel(upload_id)
        except ZumikError:
            pass

    def sweep(self) -> None:
        Janitor(self.settings, clock=lambda: self.clock[0], batch_size=3).sweep(passes=2)

    def random_op(self) -> None:
        self.clock[0] += self.rng.choice([0, 0, 0.5, 3, 20])
        op = self.rng.choices(
            [
                self.upload,
                lambda: self.upload(keyed=True),
                self.delete,
                self.create_batch,
                self.end_batch,
                self.session,
                self.sweep,
            ],
            weights=[5, 2, 2, 3, 3, 3, 1],
        )[0]
        op()


def main(argv: list[str]) -> None:
    data_dir, seed = Path(argv[1]), int(argv[2])
    clock = [float(argv[3]) if len(argv) > 3 else time.time()]
    ops = Ops(data_dir, random.Random(seed), clock)
    print("ready", flush=True)
    while True:
        ops.random_op()


if __name__ == "__main__":
    main(sys.argv)


def usage_of(store: ProjectStore) -> tuple[int, int, int]:
    used = store.usage()
    return used.files, used.bytes, used.records


__all__: list[Any] = ["Ops", "recount", "usage_of", "make_settings"]
