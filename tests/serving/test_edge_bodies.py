"""Bodies that used to give a 5xx, against the real Ray Serve app and a real bundle_server.

Deep nesting, a 309-digit integer and a lone surrogate each get a 4xx with a message, and the
champion's 5xx count does not move; an oversize body sent whole before reading (Python's
urllib) reads its 413 instead of a connection reset, on both servers (both run uvicorn).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import MAX_BATCH, MAX_BODY, REPO, Server, free_port, valid_features, wait_until

pytestmark = [pytest.mark.serving, pytest.mark.slow]


def _features(**changes: Any) -> dict[str, Any]:
    return valid_features(0) | changes


def _raw(literal: str) -> bytes:
    """A /predict body whose first feature's value is `literal`, spliced in as raw JSON."""
    features = _features()
    name = next(iter(features))
    rest = json.dumps({k: v for k, v in features.items() if k != name})[1:]
    return f'{{"features": {{"{name}": {literal}, {rest}}}'.encode()


def _extra_key(key: str, batch: bool = False) -> bytes:
    """A valid body with one more key, spliced in as raw JSON (`\\ud800` stays an escape)."""
    record = json.dumps(_features())[:-1] + f', "{key}": 1}}'
    return (
        f'{{"instances": [{record}]}}'.encode() if batch else f'{{"features": {record}}}'.encode()
    )


def _bodies() -> list[tuple[str, str, bytes]]:
    """(case, endpoint, body): the three bodies of issue 10 and their relatives."""
    first = next(iter(_features()))
    good = json.dumps({"features": _features()})
    return [
        ("nested 2000", "/predict", b"[" * 2000),
        ("nested 2000 closed", "/predict", b"[" * 2000 + b"]" * 2000),
        ("nested 500 in a feature", "/predict", _raw("[" * 500 + "1" + "]" * 500)),
        ("nested object 1000", "/batch_predict", b'{"instances": ' + b'{"a":' * 1000 + b"1"),
        ("309 nines", "/predict", _raw("9" * 309)),
        ("309 ones (a double)", "/predict", _raw("1" * 309)),
        ("400 digits", "/predict", _raw("1" * 400)),
        ("400 digits with NaN", "/predict", _raw("1" * 400)[:-1] + b', "n": NaN}'),
        ("negative 309 digits", "/predict", _raw("-" + "9" * 309)),
        ("1e400", "/predict", _raw("1e400")),
        ("surrogate key at top", "/predict", b'{"\\ud800": 1}'),
        ("surrogate unknown key", "/predict", _extra_key("\\ud800")),
        ("surrogate value", "/predict", _raw('"\\udc00"')),
        ("surrogate in batch key", "/batch_predict", _extra_key("\\ud800x", batch=True)),
        ("feature named by surrogate", "/predict", good.replace(first, "\\ud800").encode()),
        ("raw surrogate bytes", "/predict", b'{"features": {"\xed\xa0\x80": 1}}'),
        ("NaN feature", "/predict", _raw("NaN")),
        ("1e300 feature (float32 inf)", "/predict", _raw("1e300")),
        ("long string", "/predict", _raw('"' + "x" * 50_000 + '"')),
        (
            "many keys",
            "/predict",
            json.dumps({"features": {str(i): 1 for i in range(5000)}}).encode(),
        ),
        (
            "batch of huge ints",
            "/batch_predict",
            json.dumps({"instances": [_features(**{first: 10**300})] * 3}).encode(),
        ),
    ]


def champion_5xx(url: str) -> float:
    """Sum of the champion's 5xx answers in /metrics (every endpoint, every version)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "mlops_requests_total"
                and labels.get("role") == "champion"
                and labels.get("code", "").startswith("5")
            ):
                total += sample.value
    return total


@pytest.fixture(scope="module")
def bundle_url(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """docker/runtime/bundle_server.py on uvicorn, serving version 1's bundle."""
    root = Path(server.registry.tracking_uri.removeprefix("sqlite:///")).parent
    bundle = root / "train-a" / "bundle"
    assert bundle.is_dir(), bundle
    port = free_port()
    env = os.environ | {
        "PYTHONPATH": str(REPO),
        "MLOPS_BUNDLE_DIR": str(bundle),
        "MLOPS_SERVE_PORT": str(port),
        "MLOPS_MAX_BODY_BYTES": str(MAX_BODY),
        "MLOPS_MAX_BATCH_SIZE": str(MAX_BATCH),
        "MLOPS_MODEL_VERSION": "1",
    }
    log = tmp_path_factory.mktemp("bundle-server") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "docker" / "runtime" / "bundle_server.py")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    try:
        assert wait_until(up, timeout_s=120), log.read_text()
        assert proc.poll() is None, log.read_text()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(params=["ray", "bundle"])
def url(request: pytest.FixtureRequest, server: Server) -> str:
    """Each test runs against the Ray Serve app and against bundle_server."""
    if request.param == "ray":
        return server.url
    return request.getfixturevalue("bundle_url")


@pytest.mark.parametrize(("case", "endpoint", "body"), _bodies(), ids=[c for c, _, _ in _bodies()])
def test_bad_bodies_get_a_4xx_and_no_champion_error(
    url: str, case: str, endpoint: str, body: bytes
) -> None:
    before = champion_5xx(url)
    resp = httpx.post(
        f"{url}{endpoint}", content=body, headers={"content-type": "application/json"}, timeout=60
    )
    assert 400 <= resp.status_code < 500, (case, resp.status_code, resp.text[:300])
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and detail, resp.text[:300]
    assert champion_5xx(url) == before, case
    # The server still answers a good request after it.
    good = httpx.post(f"{url}/predict", json={"features": _features()}, timeout=60)
    assert good.status_code == 200, good.text


def test_the_three_bodies_of_the_issue_answer_400_and_422(url: str) -> None:
    """The statuses: structure and encoding are a 400, a value the model cannot take a 422."""
    codes = {}
    for case, endpoint, body in _bodies():
        codes[case] = httpx.post(f"{url}{endpoint}", content=body, timeout=60).status_code
    assert codes["nested 2000"] == 400
    assert codes["309 nines"] == 400  # a number literal past max_number_chars
    assert codes["309 ones (a double)"] == 422  # a double, past the float32 range
    assert codes["surrogate key at top"] == 400
    assert codes["surrogate unknown key"] == 400
    assert codes["NaN feature"] == 422


def test_feedback_with_a_lone_surrogate_id_is_a_400(server: Server) -> None:
    before = champion_5xx(server.url)
    body = b'{"labels": [{"request_id": "\\ud800", "label": "True"}]}'
    resp = httpx.post(f"{server.url}/feedback", content=body, timeout=60)
    assert resp.status_code == 400, resp.text
    assert "surrogate" in resp.json()["detail"]
    assert champion_5xx(server.url) == before


def _urllib_post(url: str, data: Any, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.parametrize("factor", [2, 7])
def test_urllib_reads_the_413_of_an_oversize_body(url: str, factor: int) -> None:
    """urllib sends the whole body before it reads: the server must read it away first."""
    body = json.dumps({"features": _features(), "pad": "x" * (factor * MAX_BODY)}).encode()
    for _ in range(3):  # and again, on a fresh connection each time
        status, text = _urllib_post(f"{url}/predict", body, {"Content-Type": "application/json"})
        assert status == 413, text[:300]
        assert "max_body_bytes" in json.loads(text)["detail"]


def test_urllib_reads_the_413_of_a_chunked_oversize_body(url: str) -> None:
    """No Content-Length (an iterable body: chunked), so the size shows only while reading."""
    chunk = b" " * 65536
    chunks = [b'{"features": {}, "pad": "'] + [chunk] * (3 * MAX_BODY // len(chunk)) + [b'"}']
    status, text = _urllib_post(
        f"{url}/predict", iter(chunks), {"Content-Type": "application/json"}
    )
    assert status == 413, text[:300]
