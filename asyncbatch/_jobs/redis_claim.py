"""`RedisClaim`: one process at a time carries a job kept in Redis.

A SQLite state is guarded by a file lock the system drops when its holder ends. Redis has no
such thing, so the claim is a key holding ``HOST PID TOKEN`` with an expiry: the holder
renews it while the job runs (`keep`) and deletes it when done (`release`). A claim found on
this host whose process is gone (a run killed with SIGKILL) is taken over at once; one from
another host is taken over only once it expires (``ttl`` seconds after its last renewal).
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any, Final

import anyio
from redis.asyncio import Redis

from .._errors import StateStoreError
from .._stores.redis_errors import redis_errors

CLAIM_SECONDS: Final = 600.0
"""How long a claim outlives its last renewal: longer than any wait inside a job's wave."""

# ARGV: key, this holder, ttl in ms, a stale holder to replace ('' for none).
_TAKE_LUA: Final = """
local held = redis.call('GET', ARGV[1])
if (not held) or held == ARGV[2] or held == ARGV[4] then
  redis.call('SET', ARGV[1], ARGV[2], 'PX', ARGV[3])
  return ''
end
return held
"""
# ARGV: key, this holder, ttl in ms (0: release).
_RENEW_LUA: Final = """
if redis.call('GET', ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '0' then redis.call('DEL', ARGV[1])
else redis.call('PEXPIRE', ARGV[1], ARGV[3]) end
return 1
"""


class RedisClaim:
    """The claim on the job whose keys start with ``key_prefix``."""

    def __init__(self, client: Redis, key_prefix: str, *, ttl: float = CLAIM_SECONDS) -> None:
        self._key = f"{key_prefix}owner"
        self._ttl_ms = str(max(1, int(ttl * 1000)))
        self._ttl = ttl
        self.holder = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex[:8]}"
        self._take = client.register_script(_TAKE_LUA)
        self._renew = client.register_script(_RENEW_LUA)

    @redis_errors
    async def take(self, shown: str) -> None:
        """Claim the job, or raise `StateStoreError` naming the process that holds it."""
        held = await self._run(self._take, self._ttl_ms, "")
        if held and _gone(held):
            held = await self._run(self._take, self._ttl_ms, held)  # a dead run's claim
        if held:
            raise StateStoreError(
                f"the job state {shown} is in use by another process ({held}): one process "
                f"carries a job at a time (its claim lapses {self._ttl:g} s after its last "
                "renewal if that process is gone)"
            )

    async def keep(self) -> None:
        """Renew the claim every third of its lifetime until cancelled; `StateStoreError` if
        it was lost (another process took the job over after it lapsed)."""
        while True:
            await anyio.sleep(self._ttl / 3)
            if not await self._renewed(self._ttl_ms):
                raise StateStoreError("the job's claim was lost to another process")

    async def release(self) -> None:
        """Give the claim up, if this process still holds it."""
        await self._renewed("0")

    @redis_errors
    async def _renewed(self, ttl_ms: str) -> bool:
        return await self._run(self._renew, ttl_ms) == "1"

    async def _run(self, script: Any, *args: str) -> str:
        answer = await script(keys=[], args=[self._key, self.holder, *args])
        # Anything may sit in the key; whatever it holds is shown, never a decoding error.
        return answer.decode(errors="replace") if isinstance(answer, bytes) else str(answer)


def _gone(holder: str) -> bool:
    """Whether ``holder`` is a process of this host that has ended."""
    host, _, rest = holder.partition(" ")
    pid = rest.partition(" ")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has ended but was not yet reaped by its parent (a run just killed by a
    supervisor that has not waited for it yet): it still answers signals, but holds nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (macOS): such a claim lapses with its ttl
    fields = stat.rpartition(")")[2].split()
    return bool(fields) and fields[0] == "Z"
