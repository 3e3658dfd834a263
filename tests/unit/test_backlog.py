"""The engine's backlog (workers.inference.backlog): at most ``limit`` requests inside the engine, the
rest waiting in arrival order, and a cancelled job's waiting requests dropped when their turn comes."""

from __future__ import annotations

import asyncio

import pytest

from workers.inference.backlog import Backlog


async def _requests(backlog: Backlog, ids: list[str], release: asyncio.Event, log: list[str]) -> list[bool]:
    async def one(rid: str) -> bool:
        async with backlog.place(rid) as go:
            log.append(f"in {rid}")
            if go:
                await release.wait()
            log.append(f"out {rid}")
            return go

    return list(await asyncio.gather(*(one(r) for r in ids)))


async def _started(
    limit: int, ids: list[str]
) -> tuple[Backlog, asyncio.Event, asyncio.Future[list[bool]], list[str]]:
    """The requests under way: those that got a place hold it until ``release`` is set."""
    backlog, release, log = Backlog(limit), asyncio.Event(), []
    run = asyncio.ensure_future(_requests(backlog, ids, release, log))
    for _ in range(5):
        await asyncio.sleep(0)
    return backlog, release, run, log


def test_at_most_the_limit_is_inside_and_the_rest_go_in_in_arrival_order() -> None:
    async def main() -> None:
        backlog, release, run, log = await _started(2, ["a", "b", "c", "d"])
        assert (backlog.inside, backlog.waiting) == (2, 2) and log == ["in a", "in b"]
        release.set()
        assert await run == [True] * 4
        assert [x for x in log if x.startswith("in")] == ["in a", "in b", "in c", "in d"]
        assert (backlog.inside, backlog.waiting) == (0, 0)

    asyncio.run(main())


def test_a_cancelled_request_that_waits_is_dropped_and_one_inside_is_left_to_the_engine() -> None:
    async def main() -> None:
        backlog, release, run, _ = await _started(1, ["a", "b", "c"])
        # a is inside (vLLM's abort stops it); b waits and is dropped; c was not cancelled.
        assert backlog.cancel(["a", "b", "unknown"]) == 1
        release.set()
        assert await run == [True, False, True]
        assert backlog.cancel(["b"]) == 0  # forgotten once it left: nothing leaks

    asyncio.run(main())


def test_two_requests_of_one_unit_waiting_are_both_dropped() -> None:
    async def main() -> None:
        backlog, release, run, _ = await _started(1, ["a", "u", "u"])
        assert backlog.cancel(["u"]) == 2
        release.set()
        assert await run == [True, False, False]

    asyncio.run(main())


def test_a_backlog_holds_at_least_one_request() -> None:
    with pytest.raises(ValueError, match="at least one request"):
        Backlog(0)


def test_places_go_by_priority_then_arrival() -> None:
    """A request of a small job (priority 0) waits for the next free place, not behind a bulk job's."""

    async def main() -> None:
        backlog, release, order = Backlog(1), asyncio.Event(), []

        async def one(rid: str, priority: int) -> None:
            async with backlog.place(rid, priority):
                order.append(rid)
                await release.wait()

        tasks = [
            asyncio.ensure_future(one(r, p)) for r, p in [("bulk1", 900), ("bulk2", 900), ("bulk3", 901)]
        ]
        await asyncio.sleep(0)
        tasks.append(asyncio.ensure_future(one("small", 0)))
        for _ in range(5):
            await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*tasks)
        assert order == ["bulk1", "small", "bulk2", "bulk3"]

    asyncio.run(main())


def test_a_waiter_cancelled_in_the_queue_loses_no_place() -> None:
    async def main() -> None:
        backlog, release = Backlog(1), asyncio.Event()

        async def one(rid: str) -> str:
            async with backlog.place(rid):
                await release.wait()
            return rid

        first = asyncio.ensure_future(one("a"))
        waiter = asyncio.ensure_future(one("b"))
        await asyncio.sleep(0)
        waiter.cancel()
        release.set()
        assert await first == "a"
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert await asyncio.wait_for(one("c"), 1) == "c"  # the place came back
        assert (backlog.inside, backlog.waiting) == (0, 0)

    asyncio.run(main())


def test_urgent_requests_overdraw_a_full_backlog_within_bounds_and_places_freed_are_told() -> None:
    """Urgent work (priority below ``urgent_below``) claimed while the engine is full goes in beyond the
    limit, at most ``overdraft`` at once; bulk work waits. Each place given back is told (the gate)."""

    async def main() -> None:
        freed: list[int] = []
        backlog = Backlog(2, urgent_below=10, overdraft=1, on_release=lambda: freed.append(1))
        release, inside = asyncio.Event(), []

        async def one(rid: str, priority: int) -> None:
            async with backlog.place(rid, priority):
                inside.append(rid)
                await release.wait()

        tasks = [asyncio.ensure_future(one(r, p)) for r, p in [("b1", 900), ("b2", 900), ("b3", 900)]]
        tasks += [asyncio.ensure_future(one(r, p)) for r, p in [("u1", 3), ("u2", 4)]]
        for _ in range(5):
            await asyncio.sleep(0)
        assert inside == ["b1", "b2", "u1"] and backlog.free == 2 - 3 - 2  # u2 waits: the overdraft is spent
        release.set()
        await asyncio.gather(*tasks)
        assert inside == ["b1", "b2", "u1", "u2", "b3"] and len(freed) == 5
        assert (backlog.free, backlog.inside, backlog.waiting) == (2, 0, 0)  # the overdraft is paid back

    asyncio.run(main())
