"""The worker process, put together in one place: settings -> clients, stores and steps -> the loop,
and the Faust app that hosts it beside the ops API and the timers.

`fraud worker` runs `build(Settings())`; so does `faust -A fraud.faust_app worker`.

The Faust app runs the process: signals and graceful stop, the ops API (aiohttp), and the timers
that follow the model registry and export online quality. Records do not go through Faust's
per-record streams and topic sends: the loop (streams/worker.py) hands whole batches to librdkafka
through confluent-kafka, with two transactional producers taking turns (streams/checkpoint.py),
which is what moves them at the Kafka client's speed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass

import faust
from faust.app.base import BootStrategy
from mode import Service

from core.decision import Thresholds
from core.drift import DriftWatch
from core.features import CardState, TerminalCounts
from core.metrics import Metrics
from core.settings import Settings
from models.serving import LoadedModel, ModelFollower, ModelHandle, ModelSource
from ops_api.app import StreamView, create_api, serve
from schemas.codec import SchemaRegistry
from streams.feedback import FeedbackStep
from streams.quality import OnlineQuality
from streams.rules import RulesTable
from streams.scoring import ScoringStep
from streams.state import Store
from streams.terminals import TerminalStep, TerminalView
from streams.topics import cards_changelog, codecs, ensure_topics, terminal_snapshots, terminals_changelog
from streams.worker import Worker, WorkerStatus

log = logging.getLogger(__name__)
EXIT_LOOP_FAILED = 70


class WithoutFaustKafka(BootStrategy):
    """Faust's own consumer and producer stay off: the loop has its own (see the module docstring)."""

    enable_kafka = False


class Host(faust.App):
    BootStrategy = WithoutFaustKafka


@dataclass
class Scorer:
    """One worker process: what the loop, the API and the timers share."""

    settings: Settings
    metrics: Metrics
    models: ModelHandle
    challenger: ModelHandle
    model_source: ModelSource
    model_follower: ModelFollower
    rules: RulesTable
    terminals: TerminalView
    quality: dict
    feedback: FeedbackStep
    worker: Worker
    status: WorkerStatus
    app: faust.App

    def stream_view(self) -> StreamView:
        s = self
        return StreamView(
            assigned=lambda: [f"{t}[{p}]" for t, p in s.status.assigned],
            lag=lambda: dict(s.status.lag),
            model=lambda: s.models.current,
            model_error=lambda: s.model_follower.error or s.status.waiting_for,
            rules=lambda: s.rules,
            challenger=lambda: s.challenger.current,
            caught_up=lambda: s.status.followed_caught_up and not s.status.preparing,
            terminal=s.terminals.describe,
            verdicts=lambda: {"status": "ok" if s.terminals.caught_up else "loading",
                              "terminals": len(s.terminals.terminals),
                              "verdicts_for_feedback": s.feedback.held(),
                              "undecodable_records": s.terminals.undecodable,
                              "preparing": [f"{t}[{p}]" for t, p in s.status.preparing]},
            quality=lambda: {model: q.summary() for model, q in s.quality.items()},
            waiting_for=lambda: s.status.waiting_for,
            score=self.what_if,
            drift=lambda: s.worker.steps[s.settings.transactions_topic].drift.latest,
        )

    def what_if(self, txn: dict):
        """A what-if verdict from the loop's thread (a concurrent Future), or None when this worker does
        not hold the card's partition with its state read."""
        from streams.topics import partition_of

        topic = self.settings.transactions_topic
        partition = partition_of(txn["customer_id"], self.settings.partitions)
        if (topic, partition) not in self.status.assigned or (topic, partition) in self.status.preparing:
            return None
        step = self.worker.steps[topic]
        now_ms = int(time.time() * 1000)
        return self.worker.ask(lambda: step.what_if(txn, now_ms) if self.worker.ready_to_read(topic, partition)
                               else None)


def build(settings: Settings) -> Scorer:
    metrics = Metrics()
    registry = SchemaRegistry(settings.schema_registry_url)
    codec = codecs(settings, registry)
    thresholds = Thresholds(settings.review_threshold, settings.decline_threshold)
    models, challenger = ModelHandle(), ModelHandle()
    source = ModelSource(settings.mlflow_uri, settings.model_name, settings.model_alias,
                         settings.model_cache_dir, settings.xgb_threads)

    def swapped(model: LoadedModel) -> None:
        metrics.model_swaps.inc()
        metrics.model_version.labels(model.name).set(float(model.version))

    follower = ModelFollower(source, models, challenger, settings.challenger_alias, on_swap=swapped)
    rules = RulesTable(settings.rules_topic)
    terminals = TerminalView(terminal_snapshots(settings), settings.partitions)
    quality = {model: OnlineQuality(thresholds, settings.quality_window) for model in ("champion", "challenger")}
    cards = Store("cards", settings.transactions_topic, cards_changelog(settings),
                  CardState.to_bytes, CardState.from_bytes)
    counts = Store("terminals", settings.terminal_events_topic, terminals_changelog(settings),
                   TerminalCounts.to_bytes, TerminalCounts.from_bytes)
    topics = {"verdicts": settings.verdicts_topic, "dlq": settings.dlq_topic,
              "terminal_events": settings.terminal_events_topic, "examples": settings.examples_topic}

    def prepare() -> None:
        """Topics and schemas, then the model: what the loop waits for before its first batch."""
        ensure_topics(settings)
        for c in codec.values():
            if c.schema_id is None:
                c.register()
        follower.load_at_start()

    status = WorkerStatus()
    worker = Worker(settings, steps=[], stores=[cards, counts], followed=[rules.source, *terminals.sources],
                    metrics=metrics, prepare=prepare, status=status)
    scoring = ScoringStep(settings.transactions_topic, cards, terminals.terminals, codec, models, challenger,
                          rules, thresholds, metrics, topics, settings.partitions, settings.worker_id,
                          settings.exact_reasons, retry_later=worker.retry_later,
                          drift=DriftWatch(settings.drift_window_seconds))
    feedback = FeedbackStep(settings.feedback_topic, settings.verdicts_topic, codec, quality, metrics, topics,
                            settings.partitions, settings.feedback_horizon_days,
                            settings.feedback_match_wait_seconds, worker.start_offset_at,
                            retry_later=worker.retry_later)
    terminal_step = TerminalStep(settings.terminal_events_topic, counts, codec["terminal_events"],
                                 terminal_snapshots(settings), settings.dlq_topic, metrics,
                                 retry_later=worker.retry_later)
    worker.steps = {step.topic: step for step in (scoring, feedback, terminal_step)}

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    app = Host(settings.app_id, web_enabled=False, autodiscover=False,
               datadir=str(settings.state_dir / settings.app_id))
    scorer = Scorer(settings, metrics, models, challenger, source, follower, rules, terminals, quality,
                    feedback, worker, status, app)
    _host(scorer)
    return scorer


class LoopThread(Service):
    """The worker's loop in a thread of its own: started with the app, stopped (commit, leave the
    group) before the app's loop closes."""

    def __init__(self, worker: Worker, **kwargs):
        self.worker = worker
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="scoring-loop", daemon=True)
        super().__init__(**kwargs)

    def _run(self) -> None:
        try:
            self.worker.run(self.stopping)
        except:  # noqa: E722 - whatever ended the loop (librdkafka can raise objects that are not
            # exceptions), the process must not live on without it: it exits, and is restarted.
            log.critical("the scoring loop failed; the worker exits", exc_info=True)
            logging.shutdown()
            os._exit(EXIT_LOOP_FAILED)

    async def on_start(self) -> None:
        self.thread.start()

    async def on_stop(self) -> None:
        self.stopping.set()
        await asyncio.get_running_loop().run_in_executor(None, self.thread.join, 60)


class ApiService(Service):
    def __init__(self, scorer: Scorer, **kwargs):
        self.scorer = scorer
        super().__init__(**kwargs)

    @Service.task
    async def _serve(self) -> None:
        s = self.scorer
        if s.settings.api_port:
            await serve(create_api(s.settings, s.metrics, s.stream_view(), s.model_source), s.settings.api_host,
                        s.settings.api_port)


def _host(scorer: Scorer) -> None:
    """Attach the loop, the API and the timers to the Faust app."""
    app, settings = scorer.app, scorer.settings
    app.service(LoopThread(scorer.worker))
    app.service(ApiService(scorer))

    @app.timer(interval=settings.model_poll_seconds)
    async def follow_model_aliases() -> None:
        if scorer.models.current is not None:  # the loop loads the first one
            await asyncio.get_running_loop().run_in_executor(None, scorer.model_follower.follow)

    @app.timer(interval=5.0)
    async def export_online_quality() -> None:
        for model, quality in scorer.quality.items():
            if quality.labels:
                scorer.metrics.record_quality(model, quality.summary())
