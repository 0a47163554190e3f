"""Hot swap: the champion changes under a steady stream of requests and none of them fails."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from serving_support import Server, valid_features, wait_until

from serving import runner

pytestmark = [pytest.mark.serving, pytest.mark.slow]

CLIENTS = 4


class Stream:
    """CLIENTS threads posting /predict until stopped; records (sent_at, status, version)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[float, int, str | None]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(CLIENTS)]

    def _run(self, seed: int) -> None:
        with httpx.Client(timeout=60) as client:
            n = seed
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    resp = client.post(f"{self.url}/predict", json={"features": valid_features(n)})
                    version = resp.json().get("model_version") if resp.status_code == 200 else None
                    self.results.append((sent, resp.status_code, version))
                except Exception as exc:  # a refused or dropped connection is a failure too
                    self.errors.append(repr(exc))
                n += CLIENTS

    def count_after(self, t: float) -> int:
        """Answers to requests sent after t."""
        return sum(1 for sent, _, _ in self.results if sent > t)

    def __enter__(self) -> Stream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)


def _restore(server: Server) -> None:
    server.registry.set_alias("champion", "1")
    server.registry.set_alias("challenger", "2")
    assert runner.reload(server.settings) == {"champion": "1", "shadow-1": "2"}


def test_hot_swap_under_load_fails_no_request(server: Server) -> None:
    pid_before = server.client.get(f"{server.url}/health").json()
    try:
        with Stream(server.url) as stream:
            assert wait_until(lambda: len(stream.results) >= 20, timeout_s=120)
            server.registry.set_alias("champion", "3")
            body = server.reload()  # POST /admin/reload, as `mlops serve --reload` does
            swapped_at = time.monotonic()
            assert body["slots"]["champion"] == "3"
            assert wait_until(lambda: stream.count_after(swapped_at) >= 20, timeout_s=120)
        print(
            f"hot swap: reload took {body['seconds']} s; {len(stream.results)} requests from "
            f"{CLIENTS} clients, {len(stream.errors)} errors"
        )
        assert stream.errors == []
        codes = {code for _, code, _ in stream.results}
        assert codes == {200}, codes
        versions = [v for _, _, v in stream.results]
        assert versions[0] == "1" and "3" in versions
        after = {v for sent, _, v in stream.results if sent > swapped_at}
        assert after == {"3"}
        health = server.client.get(f"{server.url}/health").json()
        assert health["champion"]["version"] == "3"
        assert server.metric("mlops_champion_info", model_version="3") == 1
        assert server.metric("mlops_champion_info", model_version="1") == 0
        # A reconfigure, not a restart: the champion replica kept its process.
        assert health["champion"]["pid"] == pid_before["champion"]["pid"]
    finally:
        _restore(server)


def test_no_champion_means_503_and_no_mirroring(server: Server) -> None:
    try:
        server.registry.set_alias("champion", None)
        server.registry.set_alias("challenger", None)
        assert server.reload()["slots"] == {"champion": None, "shadow-1": None}
        health = server.client.get(f"{server.url}/health")
        assert health.status_code == 503
        assert health.json()["champion"] is None
        resp = server.client.post(f"{server.url}/predict", json={"features": valid_features(0)})
        assert resp.status_code == 503
        info = server.client.get(f"{server.url}/model/info").json()
        assert info["champion"] is None and info["shadows"] == []
        assert server.metric("mlops_champion_info") == 0
    finally:
        _restore(server)
    health = server.client.get(f"{server.url}/health")
    assert health.status_code == 200
    assert health.json()["champion"]["version"] == "1"


def test_reload_without_a_challenger_stops_mirroring(server: Server) -> None:
    try:
        server.registry.set_alias("challenger", None)
        assert runner.reload(server.settings) == {"champion": "1", "shadow-1": None}
        before = server.metric("mlops_shadow_mirrored_total")
        for i in range(10):
            resp = server.client.post(f"{server.url}/predict", json={"features": valid_features(i)})
            assert resp.status_code == 200
        assert server.metric("mlops_shadow_mirrored_total") == before
    finally:
        _restore(server)
