"""Video sampling in a child process, so that a decoder crash or hang fails only its item.

decord is C++ over FFmpeg: a hostile file can crash it (a segmentation fault takes the whole process,
which no ``except`` catches) or make it spin. In the prep process itself that kills the Celery child,
and the item only comes back through its lease running out, once per attempt. Here the child dies
instead: the item fails at once with ``corrupt_video`` (the decoder crashed, and on which signal) or
``video_decode_timeout`` (``VLMQ_MEDIA__VIDEO_DECODE_TIMEOUT_S``), and the prep process goes on.

The child (``python -m workers.media.isolated ARGS``) reads the file on stdin and writes the packed
clip (``workers.media.clip.pack``) on stdout. A vlmq error it raises (a refused or unreadable video)
comes back as one JSON line on stderr with exit status 3 and is raised again here, as the same class.
Starting the child costs about half a second, small beside decoding any video.

The standard library's subprocess is used rather than multiprocessing: Celery's prefork children are
daemonic, and daemonic processes may not start multiprocessing children.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict

from jobs import errors
from jobs.errors import CorruptVideo, VideoDecodeTimeout, VlmqError
from workers.media.video import Sampling

CHILD = (sys.executable, "-m", "workers.media.isolated")
ERROR_EXIT = 3  # the child raised a vlmq error: its class and message are the last line of stderr


def sample_packed(
    data: bytes, sampling: Sampling, name: str, timeout_s: float, command: Sequence[str] = CHILD
) -> bytes:
    """The packed clip of ``data``, sampled in a child process (``command``: tests replace it)."""
    args = json.dumps({"sampling": asdict(sampling), "name": name})
    try:
        proc = subprocess.run([*command, args], input=data, capture_output=True, timeout=timeout_s or None)
    except subprocess.TimeoutExpired as e:  # run() has killed the child
        raise VideoDecodeTimeout(f"decoding {name} took over {timeout_s:g} s; it was stopped") from e
    if proc.returncode == 0:
        return proc.stdout
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        raise CorruptVideo(f"the video decoder crashed on {name} ({sig}); the file is damaged or hostile")
    if proc.returncode == ERROR_EXIT:
        raise _error(proc.stderr)
    tail = proc.stderr.decode("utf-8", "replace")[-2000:]
    raise RuntimeError(f"video sampling process exited with status {proc.returncode}: {tail}")


def _error(stderr: bytes) -> VlmqError:
    last = stderr.decode("utf-8", "replace").strip().rsplit("\n", 1)[-1]
    try:
        report = json.loads(last)
        cls = getattr(errors, report["class"])
        if isinstance(cls, type) and issubclass(cls, VlmqError):
            return cls(report["message"])
    except (ValueError, KeyError, TypeError):
        pass
    return CorruptVideo(f"the video sampling process failed: {last[:500]}")


def packed_clip(data: bytes, sampling: Sampling, name: str) -> bytes:
    """What prep stores for a video, made in this process: its sampled frames, packed."""
    from workers.media import clip
    from workers.media.video import sample_video

    return clip.pack(sample_video(data, sampling, name))


def _child(argv: list[str]) -> int:
    args = json.loads(argv[0])
    try:
        packed = packed_clip(sys.stdin.buffer.read(), Sampling(**args["sampling"]), args["name"])
    except VlmqError as e:
        print(json.dumps({"class": type(e).__name__, "message": e.message}), file=sys.stderr)
        return ERROR_EXIT
    sys.stdout.buffer.write(packed)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
