"""A fixed-window rate limiter on Redis (INCR + EXPIRE in one pipeline)."""

from __future__ import annotations

import redis


class RateLimiter:
    def __init__(self, client: redis.Redis, limit: int, window_seconds: int) -> None:
        self.client = client
        self.limit = limit
        self.window = window_seconds

    @classmethod
    def from_url(cls, url: str, limit: int, window_seconds: int) -> RateLimiter:
        return cls(redis.Redis.from_url(url), limit, window_seconds)

    def allow(self, key: str) -> bool:
        pipe = self.client.pipeline()
        pipe.incr(f"ratelimit:{key}")
        pipe.expire(f"ratelimit:{key}", self.window, nx=True)
        count, _ = pipe.execute()
        return int(count) <= self.limit

    def remaining_ttl(self, key: str) -> int:
        return int(self.client.ttl(f"ratelimit:{key}"))
