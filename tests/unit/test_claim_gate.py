"""The GPU worker's claim gate (workers.inference.gate) and the vLLM engine's choice of a request to
preempt for urgent work (workers.inference.vllm_engine.pick_victim), without a GPU."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from workers.inference.gate import ClaimGate
from workers.inference.vllm_engine import pick_victim


def test_claims_wait_for_places_and_a_freed_place_lets_them_in() -> None:
    places = {"free": 10}
    gate = ClaimGate(lambda: places["free"], ahead=0, urgent_below=256, poll_s=30)
    tickets: list[object] = []
    with gate.enter(8) as first:
        assert first.below is None and gate.reserved == 8 and gate.room() == 2

        def second() -> None:
            with gate.enter(8) as t:
                tickets.append(t)

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.1)
        assert tickets == []  # 2 places left for a batch of 8: it waits (the scout, for 30 s)
        gate.handed()  # the first batch reached the engine, which counts it now
        places["free"] = 8 - 6
        gate.freed()
        time.sleep(0.1)
        assert tickets == []  # still only 2
        places["free"] = 9
        gate.freed()
        t.join(5)
    assert [getattr(x, "below", "?") for x in tickets] == [None] and gate.reserved == 0


def test_while_the_engine_is_full_one_thread_looks_for_urgent_work_only() -> None:
    gate = ClaimGate(lambda: 0, ahead=4, urgent_below=256, poll_s=0.05)
    got: list[int | None] = []
    lock = threading.Lock()

    def claim() -> None:
        with gate.enter(8) as t:
            with lock:
                got.append(t.below)
            time.sleep(0.05)

    threads = [threading.Thread(target=claim) for _ in range(3)]
    for th in threads:
        th.start()
    time.sleep(0.3)
    for th in threads:
        th.join(0.01)
    # One scout at a time, each after poll_s; none of them may claim in turn (no room).
    assert got and set(got) == {256}
    assert gate.reserved <= 8  # one scout's claim reserved at a time
    places_freed = ClaimGate(lambda: 100, ahead=0, urgent_below=256)
    with places_freed.enter(8) as t:
        assert t.below is None  # with room no one scouts


def _processor(states: dict[str, tuple[bool, int]], extra: int = 0) -> SimpleNamespace:
    """vLLM's front-end state: vid -> (is_prefilling, output tokens); ``extra`` more requests waiting."""
    req = {
        f"i-{v}": SimpleNamespace(
            is_prefilling=pre, detokenizer=SimpleNamespace(num_output_tokens=lambda n=n: n)
        )
        for v, (pre, n) in states.items()
    }
    req |= {f"w{k}": SimpleNamespace(is_prefilling=True, detokenizer=None) for k in range(extra)}
    return SimpleNamespace(request_states=req, external_req_ids={v: [f"i-{v}"] for v in states})


def test_the_victim_is_the_worst_turn_running_then_the_least_output() -> None:
    running = {"a": (False, 500), "b": (False, 20), "c": (False, 10), "waiting": (True, 0)}
    priorities = {"a": 2000, "b": 2000, "c": 900, "waiting": 5000}
    proc = _processor(running, extra=2)  # 6 requests in an engine of 4 slots
    assert pick_victim(proc, priorities, 0, 4) == "b"  # c is nearer the front; waiting is not running
    assert pick_victim(proc, priorities, 1999, 4) is None  # nobody a whole engine behind
    assert pick_victim(_processor(running), priorities, 0, 4) is None  # 4 requests, 4 slots: one frees
