"""`vlmq status JOB_ID` for many jobs in one process: ``python -m tests.soak.cli_status ID...`` prints
{job id: what the command printed, parsed}. The command itself runs (typer's runner), as the operator's
shell would run it, without a Python start per job."""

from __future__ import annotations

import json
import sys

from typer.testing import CliRunner

from api.cli import app


def main(ids: list[str]) -> None:
    runner = CliRunner()
    out: dict[str, object] = {}
    for job_id in ids:
        result = runner.invoke(app, ["status", job_id])
        try:
            out[job_id] = json.loads(result.stdout)
        except ValueError:
            out[job_id] = {"exit_code": result.exit_code, "output": result.stdout[-500:]}
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
