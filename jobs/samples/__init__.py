"""The bundled sample document that ``vlmq demo`` runs, and what the demo's tiny model is taught to say
about each of its pages."""

from __future__ import annotations

from importlib.resources import files

SAMPLE_NAME = "sample.pdf"

# One per page of sample.pdf, in GLM-4.1V-Thinking's output form.
SAMPLE_ANSWERS = [
    "<think>A blue cover.</think><answer>The report's cover.</answer>",
    "<think>A green table.</think><answer>A throughput table.</answer>",
    "<think>Rising bars.</think><answer>Peak: <|begin_of_box|>4.9 pages/s<|end_of_box|></answer>",
]


def sample_pdf_bytes() -> bytes:
    return files(__name__).joinpath(SAMPLE_NAME).read_bytes()
