"""Task presets: a prompt template and a version string, stored on every job and result so reprocessing
can find results made by an older prompt. Change a preset's text => bump its version.

| task        | the user's prompt                                   | version stored            |
|-------------|-----------------------------------------------------|---------------------------|
| caption     | optional: replaces the template                     | caption-v1 / custom-<hash> |
| ocr         | optional: replaces the template                     | ocr-v1 / custom-<hash>     |
| qa          | required: the question, put into the template       | qa-v1                      |
| grounding   | required: what to find, put into the template       | grounding-v1               |

A template holding ``{prompt}`` takes the user's text; the others are complete prompts. With the
``text_hint`` option the page's PDF text layer is appended (``with_text_hint``) and the version gets
``TEXT_HINT_SUFFIX``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from jobs.errors import InvalidInput

SLOT = "{prompt}"


@dataclass(frozen=True)
class Preset:
    name: str
    version: str
    prompt: str  # the template; SLOT marks where the user's text goes

    @property
    def needs_prompt(self) -> bool:
        return SLOT in self.prompt


CAPTION = Preset(
    name="caption",
    version="caption-v1",
    prompt="Describe this page: its type, its layout, and the main content it conveys.",
)
OCR = Preset(
    name="ocr",
    version="ocr-v1",
    prompt=(
        "Transcribe all the text in this image into Markdown, in reading order. Keep headings, lists and "
        "emphasis; write tables as Markdown tables and formulas in LaTeX. Output only the Markdown."
    ),
)
QA = Preset(
    name="qa",
    version="qa-v1",
    prompt=(
        "Answer the question using only what the image shows. If it does not show the answer, say so.\n"
        "Question: " + SLOT
    ),
)
# GLM-4.1V's own grounding form: boxes between its box tokens, corners normalised to 0-1000 of the
# image's width and height, origin top left (see jobs.prompts.reasoning.regions for the way back to pixels).
GROUNDING = Preset(
    name="grounding",
    version="grounding-v1",
    prompt=(
        "Find this in the image: " + SLOT + "\nGive the bounding box of each match as "
        "<|begin_of_box|>[[x1,y1,x2,y2]]<|end_of_box|>, with coordinates normalised to 0-1000 "
        "(0,0 is the top-left corner)."
    ),
)

PRESETS = {p.name: p for p in (CAPTION, OCR, QA, GROUNDING)}
TASKS = tuple(PRESETS)
DEFAULT = CAPTION
TEXT_HINT_SUFFIX = "+text-hint-v1"
_HINT = "\n\nThe document's own text layer for this page follows (it may be incomplete or out of order):\n"


def get(task: str | None) -> Preset:
    if task is None:
        return DEFAULT
    try:
        return PRESETS[task]
    except KeyError:
        raise InvalidInput(f"unknown task {task!r}; one of: {', '.join(TASKS)}") from None


def custom_version(prompt: str) -> str:
    return "custom-" + hashlib.sha256(prompt.encode()).hexdigest()[:12]


def resolve(task: str | None, user_prompt: str | None) -> tuple[str, str]:
    """(prompt text, version) for ``task`` with the user's prompt, which a slot template requires."""
    preset = get(task)
    if preset.needs_prompt:
        if not (user_prompt and user_prompt.strip()):
            raise InvalidInput(f"task {preset.name!r} needs a prompt (the question or what to find)")
        return preset.prompt.replace(SLOT, user_prompt.strip()), preset.version
    if user_prompt is None:
        return preset.prompt, preset.version
    return user_prompt, custom_version(user_prompt)


def prompt_version(custom_prompt: str | None) -> str:
    """The default preset's version, or ``custom-<hash>`` naming a user's own prompt text."""
    return DEFAULT.version if custom_prompt is None else custom_version(custom_prompt)


def with_text_hint(prompt: str, text: str, max_chars: int) -> tuple[str, bool]:
    """The prompt with the text layer appended; True when the text was cut to ``max_chars``."""
    cut = len(text) > max_chars
    body = text[:max_chars] + ("\n[...]" if cut else "")
    return f'{prompt}{_HINT}"""\n{body}\n"""', cut
