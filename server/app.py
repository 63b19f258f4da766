"""The ingestion API (starlette): the protocol of ``rkd.client.cloud``, server side.

Every POST runs the checks of :mod:`rkd.server.guard` in order before any work, then
schema validation (400, nothing stored), the privacy filter, and the group commit; the
202 goes out only after the write succeeded. A refusal is counted by reason in exactly
one place (:func:`_answer_refusal`). The client's address is never read: not here, not
in uvicorn's access log (off), and forwarded headers are ignored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import msgspec
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rkd.client import cloud
from rkd.client.report import decode_report
from rkd.server import prepare
from rkd.server.commit import GroupCommit
from rkd.server.config import ServerSettings
from rkd.server.dashboards import ROUTES as dashboards_routes
from rkd.server.dashboards import Dashboards
from rkd.server.guard import (
    NONCES_FILE,
    RateLimiter,
    Refused,
    Replay,
    Signed,
    gunzip_capped,
    read_capped,
    verify,
)
from rkd.server.keys import load_keys
from rkd.server.metrics import Metrics
from rkd.server.openapi import openapi_document
from rkd.server.privacy import filter_report
from rkd.server.rows import report_row
from rkd.server.warehouse import Warehouse, connect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

log = structlog.get_logger("rkd.server")
ANOMALY_INTERVAL_SECS: Final = 60.0
MAX_REPORT_BYTES: Final = 64 * 1024
_sessions_decoder: Final = msgspec.msgpack.Decoder(cloud.SessionsRequest)


class Server:
    """The app's state: settings, keys, limiters, filter, warehouse and the committer."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.keys = load_keys(settings.keys_path)
        self.replay = Replay(settings.data_dir / NONCES_FILE)
        self.key_limiter = RateLimiter(settings.key_rate_per_sec, settings.key_burst)
        self.report_limiter = RateLimiter(settings.report_rate_per_sec, settings.report_burst)
        self.limited_keys: set[str] = set()  # in the current anomaly window
        self.bucket_limiter = RateLimiter(settings.bucket_rate_per_sec, settings.bucket_burst)
        prepare.init(settings.vocabulary_files)  # this process's filter: reports, workers=0
        self.vocabularies = prepare.load_vocabularies(settings.vocabulary_files)
        self.pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.warehouse: Warehouse | None = None
        self.commit: GroupCommit | None = None

    # -- lifespan ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.settings.workers:
            # spawn, before the engine starts: a fork of a process running ClickHouse's
            # threads is not safe.
            self.pool = concurrent.futures.ProcessPoolExecutor(
                self.settings.workers, multiprocessing.get_context("spawn"),
                initializer=prepare.init, initargs=(self.settings.vocabulary_files,),
            )  # fmt: skip
            await asyncio.gather(*(self._prepare(b"", "") for _ in range(self.settings.workers)))
        dsn, db = self.settings.warehouse_dsn, self.settings.database
        self.warehouse = Warehouse(connect(dsn), db, self.settings.distributed)
        # On a cluster the DDL is applied by hand (rkd-server schema --cluster): not here.
        applied = [] if self.settings.distributed else self.warehouse.migrate()
        self.commit = GroupCommit(self.warehouse, self.metrics, self.settings.commit_window_secs)
        self.commit.start()
        anomalies = asyncio.get_running_loop().create_task(self._anomaly_lines())
        log.info("server_started", migrations_applied=applied, keys=len(self.keys),
                 tls=self.settings.tls, warehouse=self.settings.warehouse_dsn.split(":", 1)[0])  # fmt: skip
        try:
            yield
        finally:
            anomalies.cancel()
            await self.commit.stop()
            if self.pool is not None:
                self.pool.shutdown(cancel_futures=True)
            self._log_anomalies()
            self.warehouse.close()
            self.replay.close()
            log.info("server_stopped")

    async def _anomaly_lines(self) -> None:
        while True:
            await asyncio.sleep(ANOMALY_INTERVAL_SECS)
            self._log_anomalies()

    def _log_anomalies(self) -> None:
        """One structured line per interval with what was refused or filtered (§9.3)."""
        window = self.metrics.take_window()
        self.limited_keys.clear()
        if window:
            log.warning(
                "anomalies", interval_secs=ANOMALY_INTERVAL_SECS, **dict(sorted(window.items()))
            )

    # -- endpoints ---------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        assert self.commit is not None
        with self.commit.arriving():  # left before _commit queues the rows, no await between
            body = await self._body(request, cloud.MAX_BODY_BYTES)
            raw = self._inflate(request, body, cloud.MAX_RAW_BYTES)
            signed = self._verify(request, body)
            self._take(self.key_limiter, "key", signed.key_id)
            prepared = await self._prepare(raw, signed.batch_id)
        if prepared.status:
            raise Refused(prepared.status, prepared.reason)
        counts = Counter(dict(prepared.counts))
        self.metrics.filter_counts(counts)
        n = prepared.n_rows
        new = await self._commit("events", signed.batch_id, prepared.rows, n)
        self.metrics.events.labels("accepted" if new else "duplicate").inc(n)
        dropped = {
            k.removeprefix("dropped."): v for k, v in counts.items() if k.startswith("dropped.")
        }
        answer = cloud.Answer(accepted=n if new else 0, duplicates=0 if new else n,
                              rejected=dropped)  # fmt: skip
        return _json(202, answer)

    async def reports(self, request: Request) -> Response:
        body = await self._body(request, MAX_REPORT_BYTES)
        raw = self._inflate(request, body, MAX_REPORT_BYTES)
        self._take(self.report_limiter, "reports", "all")
        report = _decode(decode_report, raw)
        bucket = f"{report.product}|{report.version}|{report.os}|{report.arch}"
        self._take(self.bucket_limiter, "report_bucket", bucket)
        vocabulary = self.vocabularies.get(report.product)
        if vocabulary is None:
            raise Refused(400, "undeclared_product")
        counts: Counter[str] = Counter()
        report = filter_report(report, vocabulary, counts)
        self.metrics.filter_counts(counts)
        await self._commit(
            "reports", uuid.uuid4().hex, prepare.encode_rows([report_row(report, _now())]), 1
        )
        self.metrics.reports.inc()
        return _json(202, cloud.Answer(accepted=1))

    async def erasure(self, request: Request) -> Response:
        sessions = await self._sessions_request(request)
        assert self.commit is not None
        deleted = await self.commit.call(self._warehouse().erase, sessions)
        self.metrics.erasures.inc()
        return _json(200, cloud.Erased(deleted=deleted))

    async def access(self, request: Request) -> Response:
        sessions = await self._sessions_request(request)
        assert self.commit is not None
        events = await self.commit.call(self._warehouse().access, sessions)
        return Response(msgspec.json.encode({"events": events}), 200, media_type="application/json")

    async def healthz(self, request: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def metrics_text(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        return Response(msgspec.json.encode(openapi_document()), media_type="application/json")

    # -- the steps ---------------------------------------------------------------------------

    async def _body(self, request: Request, cap: int) -> bytes:
        return await read_capped(request.headers.get("content-length"), request.stream(), cap,
                                 self.settings.body_timeout_secs)  # fmt: skip

    def _inflate(self, request: Request, body: bytes, cap: int) -> bytes:
        encoding = request.headers.get("content-encoding", "identity").lower()
        if encoding == "gzip":
            return gunzip_capped(body, cap)
        if encoding != "identity":
            raise Refused(415, "unsupported_encoding")
        return body

    def _verify(self, request: Request, body: bytes) -> Signed:
        signed = Signed.from_headers(request.headers)
        verify(signed, self.keys, request.method, request.url.path, body, self.replay, time.time())
        return signed

    def _take(self, limiter: RateLimiter, source: str, name: str) -> None:
        """A token, or 429: counted by source; the keys limited in the current anomaly
        window are counted too (how many, never which: a per-key spike is an anomaly)."""
        try:
            limiter.take(name)
        except Refused:
            self.metrics.rate_limited.labels(source).inc()
            if source == "key":
                self.limited_keys.add(name)
                self.metrics.window["rate_limited_keys"] = len(self.limited_keys)
            raise

    async def _prepare(self, raw: bytes, signed_batch_id: str) -> prepare.Prepared:
        if self.pool is None:
            return prepare.prepare(raw, signed_batch_id)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, prepare.prepare, raw, signed_batch_id)

    async def _commit(self, table: str, batch_id: str, rows: bytes, n_rows: int) -> bool:
        assert self.commit is not None
        try:
            return await self.commit.submit(table, batch_id, rows, n_rows)
        except asyncio.QueueFull:
            raise Refused(503, "busy", retry_after=1) from None
        except Exception as e:
            # The error's type only: an engine's parse error quotes the rows it read.
            log.error("write_failed", error=type(e).__name__)
            raise Refused(503, "write_failed", retry_after=5) from None

    async def _sessions_request(self, request: Request) -> list[uuid.UUID]:
        body = await self._body(request, cloud.MAX_BODY_BYTES)
        raw = self._inflate(request, body, cloud.MAX_RAW_BYTES)
        signed = self._verify(request, body)
        self._take(self.key_limiter, "key", signed.key_id)
        req: cloud.SessionsRequest = _decode(_sessions_decoder.decode, raw)
        if req.request_id != signed.batch_id:
            raise Refused(400, "batch_id_mismatch")
        return req.session_ids

    def _warehouse(self) -> Warehouse:
        assert self.warehouse is not None
        return self.warehouse

    async def warehouse_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(warehouse, *args)`` on the writer's thread (the dashboards' reports)."""
        assert self.commit is not None
        return await self.commit.call(fn, self._warehouse(), *args)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _decode(decode: Callable[[bytes], Any], raw: bytes) -> Any:
    """Decode with the shared schema; 400 with a reason that names a kind and a path,
    never a value (msgspec's messages may quote one)."""
    try:
        return decode(raw)
    except msgspec.ValidationError as e:
        raise Refused(400, prepare.reason_of(str(e))) from None
    except msgspec.DecodeError:
        raise Refused(400, "malformed") from None


def _json(status: int, value: Any) -> Response:
    return Response(msgspec.json.encode(value), status, media_type="application/json")


def _answer_refusal(metrics: Metrics) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        metrics.reject(exc.reason.split(" ", 1)[0])
        headers = {} if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
        body = msgspec.json.encode(cloud.Problem(error=exc.reason))
        return Response(body, exc.status, headers=headers, media_type="application/json")

    return handler


def build_app(settings: ServerSettings) -> CountResponses:
    server = Server(settings)
    dashboards = Dashboards(settings.data_dir, server.warehouse_call)
    app = Starlette(
        routes=[
            Route(cloud.EVENTS_PATH, server.events, methods=["POST"]),
            Route(cloud.REPORTS_PATH, server.reports, methods=["POST"]),
            Route(cloud.ERASURE_PATH, server.erasure, methods=["POST"]),
            Route(cloud.ACCESS_PATH, server.access, methods=["POST"]),
            Route("/healthz", server.healthz, methods=["GET"]),
            Route("/metrics", server.metrics_text, methods=["GET"]),
            Route("/openapi.json", server.openapi, methods=["GET"]),
            *dashboards.routes(),
        ],
        exception_handlers={Refused: _answer_refusal(server.metrics)},
        lifespan=server.lifespan,
    )
    app.state.server = server
    return CountResponses(app, server.metrics)


class CountResponses:
    """ASGI wrapper: every response counted by route and status (no address, no path
    beyond the fixed routes)."""

    ROUTES: Final = frozenset((cloud.EVENTS_PATH, cloud.REPORTS_PATH, cloud.ERASURE_PATH,
                               cloud.ACCESS_PATH, "/healthz", "/metrics", "/openapi.json",
                               *dashboards_routes))  # fmt: skip

    def __init__(self, app: Starlette, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.ROUTES else "other"

        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)
