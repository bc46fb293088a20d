"""Per-endpoint rate limits, per token and per client address, counted in Redis so that every API
replica shares them (the `limits` library, fixed windows).

Each endpoint's class of work has its limit (FRAUD_RATE_LIMIT_READ, _ANALYSE, _TRAIN, and _PREDICT for
synchronous decisions, such as "600/minute"); a request counts against both its token's subject and
its client address, on that endpoint. Past a limit: 429 with `Retry-After` and the `X-RateLimit-*` headers. While Redis cannot be
reached, requests are still served and counted in this process alone, and /health says so.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError

log = logging.getLogger(__name__)


class RateLimits:
    def __init__(self, redis_url: str, limits: dict[str, str], namespace: str):
        self.items: dict[str, RateLimitItem] = {need: parse(spec) for need, spec in limits.items()}
        shared = RedisStorage(redis_url.replace("redis://", "async+redis://", 1), implementation="redispy",
                              wrap_exceptions=True, key_prefix=f"fraud-limits-{namespace}",
                              socket_timeout=1, socket_connect_timeout=1)
        self.shared = FixedWindowRateLimiter(shared)
        self.local = FixedWindowRateLimiter(MemoryStorage())
        self.degraded: str | None = None  # why limits are counted per process, when they are

    def describe(self) -> dict:
        limits = {need: str(item) for need, item in self.items.items()}
        if self.degraded:
            return {"status": "degraded", "counted": "per process", "reason": self.degraded, "limits": limits}
        return {"status": "ok", "counted": "in redis, for every replica", "limits": limits}

    async def hit(self, need: str, endpoint: str, callers: list[str], cost: int = 1) -> dict[str, str] | None:
        """Count `cost` requests (a batch counts each of its items) of each caller key on `endpoint`;
        the headers of a refusal (429), or None."""
        item = self.items.get(need)
        if item is None:
            return None
        for caller in callers:
            limiter = self.shared
            try:
                allowed = await limiter.hit(item, endpoint, caller, cost=cost)
                self.degraded = None
            except StorageError as exc:
                if self.degraded is None:
                    log.warning("rate limits counted per process: redis unavailable: %s", exc)
                self.degraded = f"redis unavailable: {type(exc.storage_error).__name__}"
                limiter = self.local
                allowed = await limiter.hit(item, endpoint, caller, cost=cost)
            if not allowed:
                stats = await limiter.get_window_stats(item, endpoint, caller)
                retry = max(1, math.ceil(stats.reset_time - time.time()))
                return {"Retry-After": str(retry), "X-RateLimit-Limit": str(item.amount),
                        "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(stats.reset_time))}
        return None
