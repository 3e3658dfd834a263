"""Bad model output (no answer, malformed tags) is generated again at each temperature of
``model.retry_temperatures`` in turn, until it is well-formed. A result that came from such a retry is
flagged ``temperature_fallback:<t>``; one that never got well-formed keeps its first (greedy) output,
flagged ``output_retries_exhausted``. Never silent either way.

Output cut off by the token limit (finish_reason "length") is not retried: another temperature does
not make it fit, and on a GPU it would cost the whole generation again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from jobs.prompts.reasoning import split_output
from workers.inference.engine import Engine, GenerationOutput, GenerationRequest


def is_bad(out: GenerationOutput) -> bool:
    if out.finish_reason == "length":
        return False
    parsed = split_output(out.text)
    return parsed.answer_missing or parsed.malformed


def generate_checked(
    engine: Engine,
    requests: Sequence[GenerationRequest],
    temperatures: Sequence[float],
    stop: Callable[[], bool] = lambda: False,
) -> list[GenerationOutput]:
    outputs = engine.generate(requests) if requests else []
    bad = [i for i, o in enumerate(outputs) if is_bad(o)]
    for t in temperatures:
        if not bad or stop():
            break
        again = engine.generate(
            [dataclasses.replace(requests[i], temperature=max(t, requests[i].temperature)) for i in bad]
        )
        for i, out in zip(bad, again, strict=True):
            if not is_bad(out):
                outputs[i] = dataclasses.replace(out, flags=(*out.flags, f"temperature_fallback:{t:g}"))
        bad = [i for i in bad if is_bad(outputs[i])]
    for i in bad if temperatures else []:
        outputs[i] = dataclasses.replace(outputs[i], flags=(*outputs[i].flags, "output_retries_exhausted"))
    return outputs
