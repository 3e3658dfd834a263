"""The `vllm run-batch` anchor (issue 24): the same pages as the raw and system runs, as an OpenAI batch
file of data URLs, run the way the GPU kit's README runs it (vLLM's defaults, max_num_seqs included).

Timed as the anchor was: from the first response's ``created`` (whole seconds) to the output file's last
write, so the engine's load is left out; the process's whole wall time is kept beside it."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.pages import documents
from jobs.prompts.presets import DEFAULT
from workers.inference.openai_wire import png_data_url
from workers.media.pdf import render_pdf


def batch_lines(model: str, docs: list[bytes], side: int, max_tokens: int) -> list[str]:
    """One chat request a page: the image first, then the default prompt (workers.inference.prompts)."""
    lines = []
    for d, doc in enumerate(docs):
        for page in render_pdf(doc, longest_side=side, max_pages=1000):
            content = [{"type": "image_url", "image_url": {"url": png_data_url(page.png)}},
                       {"type": "text", "text": DEFAULT.prompt}]  # fmt: skip
            body = {"model": model, "max_tokens": max_tokens, "ignore_eos": True,
                    "messages": [{"role": "user", "content": content}]}  # fmt: skip
            line = {"custom_id": f"d{d}-p{page.page}", "method": "POST", "url": "/v1/chat/completions",
                    "body": body}  # fmt: skip
            lines.append(json.dumps(line))
    return lines


def run_batch(
    model: str, pages: int, first: int, per_doc: int, max_tokens: int, side: int, quantization: str | None
) -> dict[str, Any]:
    """``first``: the first document seed, so the pages are those of the raw run of that size."""
    work = Path(tempfile.mkdtemp(prefix="vlmq-runbatch-"))
    src, out = work / "batch.jsonl", work / "out.jsonl"
    src.write_text("\n".join(batch_lines(model, documents(pages, per_doc, first), side, max_tokens)) + "\n")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(src), "-o", str(out),
           "--model", model, "--max-model-len", "16384", "--gpu-memory-utilization", "0.85",
           "--limit-mm-per-prompt", json.dumps({"image": 1, "video": 0})]  # fmt: skip
    cmd += ["--quantization", quantization] if quantization else []
    t0 = time.time()
    with (work / "run-batch.log").open("wb") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    total = time.time() - t0
    replies = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    ok = [r["response"]["body"] for r in replies if (r.get("response") or {}).get("status_code") == 200]
    first_created = min(b["created"] for b in ok)
    wall = out.stat().st_mtime - first_created
    out_tok = sum(b["usage"]["completion_tokens"] for b in ok)
    return {"what": "run_batch", "pages": len(ok), "failed": len(replies) - len(ok), "wall_s": round(wall, 2),
            "pages_per_s": round(len(ok) / wall, 3), "output_tokens": out_tok,
            "output_tok_per_s": round(out_tok / wall, 1), "process_s": round(total, 1),
            "prompt_tokens_per_page": ok[0]["usage"]["prompt_tokens"] if ok else None}  # fmt: skip
