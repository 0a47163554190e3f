"""Generated fuzzing from the served OpenAPI: schemathesis at CI size against the real Ray app.

`scripts/fuzz_serving.sh` builds (or reuses) schemathesis's own venv and runs it against
`/openapi.json`; every answer must be a non-5xx that matches the documented status codes,
content types and response schemas. The full run (>= 10,000 cases) is the same script with
`--cases 10000`; its figures are in RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from serving_support import REPO, Server

pytestmark = [pytest.mark.serving, pytest.mark.slow]

SCRIPT = REPO / "scripts" / "fuzz_serving.sh"
VENV = Path(os.environ.get("MLOPS_FUZZ_VENV", Path.home() / ".cache" / "mlops-fuzz-venv"))
CI_CASES = int(os.environ.get("MLOPS_FUZZ_CI_CASES", "250"))
SEED = os.environ.get("MLOPS_FUZZ_SEED", "20261202")


def test_the_served_spec_is_valid_openapi_31(server: Server, tmp_path: Path) -> None:
    subprocess.run(["bash", str(SCRIPT), "--install-only"], check=True, timeout=900)
    spec = tmp_path / "openapi.json"
    spec.write_text(server.client.get(f"{server.url}/openapi.json").text)
    code = "import json, sys; from openapi_spec_validator import validate; "
    code += "validate(json.load(open(sys.argv[1]))); print('valid')"
    out = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", code, str(spec)], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == "valid", out.stderr[-3000:]
    paths = json.loads(spec.read_text())["paths"]
    assert "requestBody" in paths["/predict"]["post"], "the served spec is not the typed one"


def feedback_token(server: Server) -> str | None:
    """The /feedback bearer token the app was started with, if it has one."""
    name = getattr(server.settings.config.serving, "feedback_token_env", "MLOPS_FEEDBACK_TOKEN")
    return os.environ.get(name) or None


def test_generated_fuzzing_finds_no_5xx(server: Server, tmp_path: Path) -> None:
    before = server.metric("mlops_requests_total", endpoint="/predict", code="200")
    env = dict(os.environ)
    token = feedback_token(server)
    env.pop("MLOPS_FEEDBACK_TOKEN", None)
    if token:
        env["MLOPS_FEEDBACK_TOKEN"] = token  # the script sends it to /feedback only
    out = subprocess.run(
        [
            "bash",
            str(SCRIPT),
            server.url,
            "--cases",
            str(CI_CASES),
            "--seed",
            SEED,
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    log = out.stdout + out.stderr
    summary = re.search(r"^fuzz: (\d+) cases sent, (\d+) 5xx$", out.stdout, re.MULTILINE)
    assert summary, log[-5000:]
    sent, server_errors = map(int, summary.groups())
    assert server_errors == 0, log[-5000:]
    assert out.returncode == 0, log[-5000:]  # every check passed, not only "no 5xx"
    assert sent >= CI_CASES, log[-3000:]
    by_op = json.loads((tmp_path / "summary.json").read_text())["by_operation"]
    # The typed spec gets bodies through to the model: many answers are real predictions.
    assert by_op["POST /predict"].get("200", 0) >= CI_CASES // 10, by_op
    assert by_op["POST /batch_predict"].get("200", 0) > 0, by_op
    # /feedback bodies reach the label checks (with the token, when one is configured).
    assert by_op["POST /feedback"].get("422", 0) > 0, by_op
    assert server.metric("mlops_requests_total", endpoint="/predict", code="200") > before
