"""The engine replica's metrics: vLLM's own, and the wait in the router's queue.

vLLM's metrics (`vllm:num_requests_running`, `vllm:kv_cache_usage_perc`, prefix-cache hits,
engine-side TTFT/TPOT...) go through Ray's metrics, as Ray Serve LLM exports them
(`RayPrometheusStatLogger`: `ray_vllm_*` on the scrape), with one tag more: `node_group`,
so a dashboard can split them by GPU type without joining on worker ids. Kept apart from
serve_app.metrics so the router never imports vLLM.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from ray.serve.metrics import Histogram
from vllm.v1.metrics.ray_wrappers import (
    RayCounterWrapper,
    RayGaugeWrapper,
    RayHistogramWrapper,
    RayPrometheusMetric,
    RayPrometheusStatLogger,
)

from serve_app.metrics import QUEUE_BUCKETS

NODE_GROUP_TAG = "node_group"
GAUGE_REFRESH_S = 1.0  # at least as often as Ray reports metrics (1 s at the shortest)


def engine_stat_logger(node_group: str) -> type[RayPrometheusStatLogger]:
    """vLLM's Ray stat logger whose every metric carries `node_group`."""

    class NodeGroupTag(RayPrometheusMetric):
        """Mixed in before a vLLM wrapper: its tag keys and values get node_group (last,
        after the ReplicaId vLLM appends to the metric's own labels)."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # the wrapper's: it creates the Ray metric
            self._tags[NODE_GROUP_TAG] = node_group

        @staticmethod
        def _get_tag_keys(labelnames: list[str] | None) -> tuple[str, ...]:
            return (*RayPrometheusMetric._get_tag_keys(labelnames), NODE_GROUP_TAG)

        def _build_tags(self, *labels: object, **named: object) -> dict[str, str]:
            if labels:  # positional: the metric's own label names, in order
                own = self.metric._tag_keys[:-2]  # without ReplicaId and node_group
                named.update(zip(own, labels, strict=True))
            tags = RayPrometheusMetric._build_tags(self, **named)
            return {**tags, NODE_GROUP_TAG: node_group}

    class StatLogger(RayPrometheusStatLogger):
        _gauge_cls = type("Gauge", (NodeGroupTag, RayGaugeWrapper), {})
        _counter_cls = type("Counter", (NodeGroupTag, RayCounterWrapper), {})
        _histogram_cls = type("Histogram", (NodeGroupTag, RayHistogramWrapper), {})
        instances: ClassVar[list[StatLogger]] = []  # the one AsyncLLM makes, for the refresh

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Per engine index: requests running, waiting, KV-cache usage. Idle until the
            # first request: zeros, so the series exist from the start.
            self.last = dict.fromkeys(self.gauge_scheduler_running, (0, 0, 0.0))
            self.instances.append(self)

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            super().record(scheduler_stats, iteration_stats, mm_cache_stats, engine_idx)
            if scheduler_stats is not None:
                stats = scheduler_stats
                waiting = stats.num_waiting_reqs + stats.num_skipped_waiting_reqs
                self.last[engine_idx] = (stats.num_running_reqs, waiting, stats.kv_cache_usage)

        def refresh_gauges(self) -> None:
            """Sets the gauges to their last values again. vLLM sets them only on engine
            steps, and Ray drops a gauge that is not set for two report intervals: without
            this an idle engine's panels go blank instead of showing its idle state."""
            for idx, (running, waiting, usage) in self.last.items():
                self.gauge_scheduler_running[idx].set(running)
                self.gauge_scheduler_waiting[idx].set(waiting)
                self.gauge_kv_cache_usage[idx].set(usage)

    return StatLogger


async def keep_gauges_fresh(stat_logger: type[RayPrometheusStatLogger]) -> None:
    """The engine replica's background task: `refresh_gauges` every GAUGE_REFRESH_S."""
    while True:
        for instance in stat_logger.instances:  # type: ignore[attr-defined]
            instance.refresh_gauges()
        await asyncio.sleep(GAUGE_REFRESH_S)


class RouterQueueTime:
    """How long requests waited between the router's dispatch and this replica taking them:
    Serve's queue at the router while every replica of the group is at
    max_ongoing_requests. Recorded here, where the wait ends (Serve tags it with the
    deployment, i.e. the node group)."""

    def __init__(self) -> None:
        self.histogram = Histogram(
            "athene_router_queue_seconds",
            "Time a request waited at the router for a free engine replica slot.",
            boundaries=QUEUE_BUCKETS,
        )

    def observe(self, dispatched_at: float) -> None:
        if dispatched_at:
            self.histogram.observe(max(0.0, time.time() - dispatched_at))
