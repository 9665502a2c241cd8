"""Batch intake for the Faust worker: Faust's own Kafka consumer, one callback per fetched batch.

Why (design §6: ≥ 20 000 records/s with one record per message; notes/local-kafka.md): Faust's fetcher
hands every message to the topic conductor through ``wait_first(callback(message), …)`` — about four
task creations and three event-loop turns per message — before a stream or ``take()`` even sees it.
With one record per message that machinery, not parsing or the engine, bounded the worker at a few
thousand records/s. This module keeps everything else of Faust's consumer (group membership,
rebalances, the fetch thread, flow control, acknowledgement bookkeeping, offset commits, the Prometheus
sensor's offset gauges) and replaces only its drain loop: each ``getmany`` batch goes to one
``BatchHandler`` call as a list of ``ConsumerMessage`` (raw bytes; nothing is deserialized by Faust).

Contract
--------
* The handler receives the messages of one fetch (at most ``broker_max_poll_records``), in Faust's
  round-robin order across partitions and in offset order within each partition; a message already
  read in this generation is not passed again (Faust's read-offset rule); offset gaps on acknowledging
  topics are registered as Faust does (compacted topics), so commits can pass them.
* Nothing is acknowledged here. The handler acknowledges a message (``ack``) only once its effects are
  durable — in the worker: outputs produced and flushed, sinks flushed, checkpoint written. Faust then
  commits the highest contiguous acknowledged offset on its commit interval, as for agents.
* The handler's exceptions propagate and stop the consumer (the worker turns them into a loud exit);
  nothing unacknowledged is committed.

* Only the messages of the installed topic reach the handler. A message of any *other* topic the app's
  consumer reads — an agent's topic, a table's changelog during recovery (the trace-worker has both) —
  goes through Faust's own path (``callback`` → conductor → streams), one by one as in Faust's drain loop.

``install(app, topic, handler)`` must be called right after creating the app, before anything starts it.
Both Kafka shells use it: ``monitor worker`` (``monitor.streams.app``) and ``monitor trace-worker``
(``monitor.trace.app``, whose repartition topics and table changelogs stay on Faust's path).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

#: Longest time (ms) the broker may hold a fetch that finds no new data (Faust fixes 1 500 ms). The
#: arrival-order merge waits for the partition that ran dry; with one fetch in flight per broker, a
#: fetch holding only caught-up partitions delayed its refill by up to that long (seen as 1.5 s stalls).
FETCH_MAX_WAIT_MS = 100

#: One batch of consumed messages (``faust.types.ConsumerMessage``) → awaitable.
BatchHandler = Callable[[Sequence[Any]], Awaitable[None]]


def _batch_consumer(handler: BatchHandler, topics: frozenset[str]) -> type[Any]:
    base = cast(Any, faust_aiokafka.Consumer)
    needed = ("_drain_messages", "_wait_next_records", "_to_message", "perform_seek", "highwater")
    missing = [name for name in needed if not callable(getattr(base, name, None))]
    if missing:  # a faust-streaming upgrade moved the internals this module replaces: fail at start-up
        raise RuntimeError(f"faust-streaming Consumer lacks {', '.join(missing)}: cannot install batch intake")

    class FetchThread(cast(Any, faust_aiokafka.AIOKafkaConsumerThread)):  # type: ignore[misc]
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by its fetcher at start
            return consumer

    class BatchConsumer(base):  # type: ignore[misc,valid-type]
        """Faust's aiokafka consumer with a batch drain loop (module docstring)."""

        def _new_consumer_thread(self) -> Any:
            return FetchThread(self, loop=self.loop, beacon=self.beacon)

        async def _fetch_batch(self, timeout: float) -> list[tuple[Any, Any]]:
            """Faust's ``getmany`` as one list: the same flow-control, generation and paused-partition
            rules and the same seek when flow is inactive, but the end-offset sensor is updated once per
            partition and batch instead of once per message (a labelled gauge set per message cost
            more than the rest of the fetch)."""
            records, active = await self._wait_next_records(timeout)
            if records is None or self.should_stop:
                return []
            if not self.flow_active:
                try:
                    await self.perform_seek()  # as Faust: back to the committed offsets
                except Exception as exc:
                    self.log.warning(f"exception performing seek when flow not active {exc}")
                return []
            app = self.app
            generation_id = app.consumer_generation_id
            to_message = self._to_message
            out: list[tuple[Any, Any]] = []
            for tp, recs in records.items():
                if not self.flow_active or app.consumer_generation_id != generation_id:
                    break  # a rebalance began: the rest is fetched again in the new generation
                if active is None or tp in active or tp in self._buffered_partitions:
                    app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    out.extend((tp, to_message(tp, rec)) for rec in recs)
            return out

        async def _drain_messages(self, fetcher: Any) -> None:
            callback = self.callback
            consumer_should_stop = self._stopped.is_set
            fetcher_should_stop = fetcher._stopped.is_set
            read_offsets = self._read_offset
            acks_enabled_for = self.app.topics.acks_enabled_for
            commit_every = self._commit_every
            try:
                while not (consumer_should_stop() or fetcher_should_stop()):
                    batch: list[Any] = []
                    await self.sleep(0)  # as Faust: getmany may not yield to the loop when data waits
                    if self.should_stop:
                        break
                    for tp, message in await self._fetch_batch(1.0):
                        offset = message.offset
                        r_offset = read_offsets[tp]
                        if r_offset is not None and offset < r_offset:
                            continue  # read before in this generation (Faust drops it too)
                        if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)  # e.g. compacted away
                        if message.topic not in topics:  # an agent's topic or a changelog: Faust's path
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                            read_offsets[tp] = offset
                            continue
                        read_offsets[tp] = offset
                        # Not ``track_message``: its per-message sensor calls (three labelled Prometheus
                        # updates) cost as much as parsing; the sensor's offset gauges (end offset per
                        # getmany, committed offset per commit) stay, and ``monitor_records_total``
                        # counts what was applied.
                        batch.append(message)
                    if batch:
                        await handler(batch)
                    me = cast(Any, self)  # Faust's counter of acks since the last commit
                    if commit_every is not None and me._n_acked >= commit_every:
                        me._n_acked = 0
                        await self.commit()
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    return
                raise

    return BatchConsumer


def install(app: faust.App, topic: Any, handler: BatchHandler) -> None:
    """Subscribe ``app``'s consumer to ``topic`` (acknowledging, so commits follow acks) and deliver its
    messages to ``handler`` one fetched batch at a time (module docstring)."""
    consumer_cls = _batch_consumer(handler, frozenset(topic.topics))

    class BatchTransport(faust_aiokafka.Transport):
        Consumer = consumer_cls

    app.transport = BatchTransport(app.conf.broker_consumer, app)
    app.topics.add(topic)


def ack(app: faust.App, message: Any) -> None:
    """Mark ``message`` safe to commit (Faust commits the highest contiguous acknowledged offset)."""
    app.consumer.ack(message)
