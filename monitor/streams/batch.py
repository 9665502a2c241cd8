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

``install(app, handler)`` must be called right after creating the app, before anything starts it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

#: One batch of consumed messages (``faust.types.ConsumerMessage``) → awaitable.
BatchHandler = Callable[[Sequence[Any]], Awaitable[None]]


def _batch_consumer(handler: BatchHandler) -> type[Any]:
    base = cast(Any, faust_aiokafka.Consumer)
    if not callable(getattr(base, "_drain_messages", None)) or not callable(getattr(base, "getmany", None)):
        raise RuntimeError("this faust-streaming version has no Consumer._drain_messages/getmany to batch")

    class BatchConsumer(base):  # type: ignore[misc,valid-type]
        """Faust's aiokafka consumer with a batch drain loop (module docstring)."""

        async def _drain_messages(self, fetcher: Any) -> None:
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
                    async for tp, message in self.getmany(timeout=1.0):
                        offset = message.offset
                        r_offset = read_offsets[tp]
                        if r_offset is not None and offset < r_offset:
                            continue  # read before in this generation (Faust drops it too)
                        if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)  # e.g. compacted away
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
    consumer_cls = _batch_consumer(handler)

    class BatchTransport(faust_aiokafka.Transport):
        Consumer = consumer_cls

    app.transport = BatchTransport(app.conf.broker_consumer, app)
    app.topics.add(topic)


def ack(app: faust.App, message: Any) -> None:
    """Mark ``message`` safe to commit (Faust commits the highest contiguous acknowledged offset)."""
    app.consumer.ack(message)
