"""``clonechat models``: what the registry holds, and (with --check) whether each answers."""

from __future__ import annotations

import time

import anyio

from clonechat.errors import ClonechatError
from clonechat.providers.base import ChatMessage, ChatRequest, GenerationParams
from clonechat.providers.http import HttpProvider
from clonechat.providers.retry import RetryPolicy
from clonechat.registry import ModelSpec, ProviderPool, Registry


async def check_model(spec: ModelSpec, limit_seconds: float = 60.0) -> str:
    """Ask for one token, without retries; a short verdict for the table."""
    pool = ProviderPool()
    started = time.perf_counter()
    try:
        provider = pool.get(spec)
        if isinstance(provider, HttpProvider):
            provider.retry = RetryPolicy(budget=0)
        request = ChatRequest([ChatMessage("user", "Say OK.")], GenerationParams(temperature=0.0, max_tokens=1))

        async def ignore(_text: str) -> None:
            return None

        with anyio.fail_after(limit_seconds):
            await provider.generate(request, ignore)
        return f"ok ({time.perf_counter() - started:.2f} s)"
    except TimeoutError:
        return f"no answer within {limit_seconds:.0f} s"
    except ClonechatError as exc:
        return f"error: {exc}"
    finally:
        with anyio.CancelScope(shield=True):
            await pool.aclose()


async def check_all(registry: Registry) -> dict[str, str]:
    results: dict[str, str] = {}

    async def one(spec: ModelSpec) -> None:
        results[spec.name] = await check_model(spec)

    async with anyio.create_task_group() as tg:
        for spec in registry.models.values():
            tg.start_soon(one, spec)
    return results
