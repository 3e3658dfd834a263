"""The temperature ladder for bad model output, and the fake test engine (fixed latency, abort)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from workers.inference.engine import GenerationOutput, GenerationRequest
from workers.inference.fake_engine import MALFORMED_HOOK, FakeEngine
from workers.inference.ladder import generate_checked


class ScriptedEngine:
    """Answers from a script per temperature: the fake at an I/O seam."""

    name, model_id = "scripted", "scripted"

    def __init__(self, script: dict[float, str], finish: str = "stop") -> None:
        self.script, self.finish, self.temperatures = script, finish, []  # type: ignore[var-annotated]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        self.temperatures.append([r.temperature for r in requests])
        return [
            GenerationOutput(r.request_id, self.script[r.temperature], 5, 5, self.finish) for r in requests
        ]  # type: ignore[arg-type]


GOOD, BAD = "<think>r</think><answer>a</answer>", "<think>r</think>"


def _req(n: int = 1) -> list[GenerationRequest]:
    return [GenerationRequest(f"r{i}", "p") for i in range(n)]


def test_good_output_is_not_retried() -> None:
    engine = ScriptedEngine({0.0: GOOD})
    (out,) = generate_checked(engine, _req(), [0.6, 1.0])
    assert engine.temperatures == [[0.0]] and out.flags == ()


def test_bad_output_climbs_the_ladder_and_the_fallback_is_flagged() -> None:
    engine = ScriptedEngine({0.0: BAD, 0.6: BAD, 1.0: GOOD})
    (out,) = generate_checked(engine, _req(), [0.6, 1.0])
    assert engine.temperatures == [[0.0], [0.6], [1.0]]
    assert out.text == GOOD and out.flags == ("temperature_fallback:1",)


def test_exhausted_ladder_keeps_the_first_output_flagged() -> None:
    engine = ScriptedEngine({0.0: BAD, 0.6: "<answer>x</think>", 1.0: BAD})
    (out,) = generate_checked(engine, _req(), [0.6, 1.0])
    assert out.text == BAD and out.flags == ("output_retries_exhausted",)


def test_only_the_bad_requests_are_generated_again() -> None:
    class Mixed(ScriptedEngine):
        def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
            self.temperatures.append([r.temperature for r in requests])
            text = {("r0", 0.0): GOOD, ("r1", 0.0): BAD, ("r1", 0.6): GOOD}
            return [
                GenerationOutput(r.request_id, text[(r.request_id, r.temperature)], 1, 1, "stop")
                for r in requests
            ]

    engine = Mixed({})
    outs = generate_checked(engine, _req(2), [0.6])
    assert engine.temperatures == [[0.0, 0.0], [0.6]]
    assert [o.flags for o in outs] == [(), ("temperature_fallback:0.6",)]


def test_output_cut_by_the_token_limit_is_not_retried() -> None:
    engine = ScriptedEngine({0.0: "<think>long"}, finish="length")
    generate_checked(engine, _req(), [0.6])
    assert engine.temperatures == [[0.0]]


def test_a_stopped_job_ends_the_ladder() -> None:
    engine = ScriptedEngine({0.0: BAD, 0.6: GOOD})
    generate_checked(engine, _req(), [0.6], stop=lambda: True)
    assert engine.temperatures == [[0.0]]


def test_fake_engine_output_is_well_formed_and_its_hook_is_not() -> None:
    engine = FakeEngine(latency=0)
    ok, hooked = engine.generate([GenerationRequest("a", "p"), GenerationRequest("b", MALFORMED_HOOK)])
    assert ok.text.startswith("<think>") and ok.text.endswith("</answer>")
    (fixed,) = generate_checked(engine, [GenerationRequest("b", MALFORMED_HOOK)], [0.7])
    assert hooked.text != fixed.text and fixed.flags == ("temperature_fallback:0.7",)


def test_fake_engine_sleeps_its_latency_and_abort_cuts_it_short() -> None:
    engine = FakeEngine(latency=0.3)
    t0 = time.monotonic()
    engine.generate([GenerationRequest("a", "p")])
    assert time.monotonic() - t0 >= 0.3
    slow = FakeEngine(latency=30)
    threading.Timer(0.2, slow.abort, args=(["x"],)).start()
    t0 = time.monotonic()
    slow.generate([GenerationRequest("x", "p")])
    assert time.monotonic() - t0 < 10 and slow.aborted == {"x"}
