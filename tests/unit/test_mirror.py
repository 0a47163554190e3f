"""Shadow mirroring without Ray: batching, the bound, timeouts and failures per copy."""

from __future__ import annotations

import asyncio
from typing import Any

from serving.mirror import MirrorCopy, MirrorOutcome, ShadowMirror


def copy(i: int, rows: int = 1) -> MirrorCopy:
    ids = [f"r{i}-{k}" for k in range(rows)]
    return MirrorCopy("/predict", ids, [{"x": i}] * rows, rows == 1, "2")


class Shadow:
    """A stand-in shadow deployment: answers each request with its first record's x."""

    def __init__(self, delay_s: float = 0.0, fail: Exception | None = None) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.calls: list[list[tuple[list[Any], bool]]] = []

    async def __call__(self, batch: list[tuple[list[Any], bool]]) -> list[dict[str, Any]]:
        self.calls.append(batch)
        await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return [
            {"status": "ok", "version": "2", "labels": [str(r[0]["x"])], "model_ms": 0.1}
            if r[0]["x"] >= 0
            else {"status": "invalid", "errors": [{"field": "features.x", "message": "< 0"}]}
            for r, _single in batch
        ]


def run_mirror(
    shadow: Shadow, copies: list[MirrorCopy], **kwargs: Any
) -> tuple[list[tuple[MirrorCopy, MirrorOutcome]], list[bool], list[int], ShadowMirror]:
    reports: list[tuple[MirrorCopy, MirrorOutcome]] = []
    gauge: list[int] = []

    async def main() -> tuple[list[bool], ShadowMirror]:
        mirror = ShadowMirror(
            "shadow-1",
            shadow,
            lambda c, o: reports.append((c, o)),
            on_pending=gauge.append,
            **({"max_pending": 100, "timeout_s": 5.0, "linger_s": 0.05} | kwargs),
        )
        accepted = [mirror.offer(c) for c in copies]
        for _ in range(200):
            await asyncio.sleep(0.02)
            if mirror.pending == 0 and len(reports) == sum(accepted):
                break
        await mirror.close()
        return accepted, mirror

    accepted, mirror = asyncio.run(main())
    return reports, accepted, gauge, mirror


def test_copies_offered_together_share_one_call_and_get_their_own_answers() -> None:
    shadow = Shadow()
    reports, accepted, gauge, mirror = run_mirror(shadow, [copy(i) for i in range(10)])
    assert all(accepted)
    assert mirror.calls == 1 and len(shadow.calls[0]) == 10
    assert [(c.request_ids[0], o.code, o.answer["labels"]) for c, o in reports] == [
        (f"r{i}-0", 200, [str(i)]) for i in range(10)
    ]
    assert max(gauge) == 10 and gauge[-1] == 0


def test_a_call_carries_at_most_max_rows_but_never_splits_a_request() -> None:
    shadow = Shadow()
    sizes = [3, 3, 5, 1, 8, 2]
    copies = [copy(i, rows=n) for i, n in enumerate(sizes)]
    reports, _, _, _ = run_mirror(shadow, copies, max_rows=6)
    # In order; a request larger than max_rows travels alone.
    assert [[len(r) for r, _ in call] for call in shadow.calls] == [[3, 3], [5, 1], [8], [2]]
    assert len(reports) == 6 and all(o.code == 200 for _, o in reports)


def test_copies_past_the_bound_are_refused_not_queued() -> None:
    shadow = Shadow(delay_s=0.2)
    reports, accepted, gauge, _ = run_mirror(shadow, [copy(i) for i in range(7)], max_pending=4)
    assert accepted == [True] * 4 + [False] * 3
    assert max(gauge) == 4
    assert len(reports) == 4


def test_a_hanging_shadow_times_out_every_copy_of_the_call() -> None:
    shadow = Shadow(delay_s=5.0)
    reports, _, gauge, _ = run_mirror(shadow, [copy(i) for i in range(3)], timeout_s=0.1)
    assert [o.code for _, o in reports] == [504, 504, 504]
    assert all("timeout" in (o.error or "") for _, o in reports)
    assert gauge[-1] == 0


def test_a_raising_shadow_fails_its_copies_and_the_mirror_keeps_going() -> None:
    shadow = Shadow(fail=RuntimeError("boom"))
    reports, _, _, _ = run_mirror(shadow, [copy(0), copy(1)])
    assert [o.code for _, o in reports] == [500, 500]
    assert "boom" in (reports[0][1].error or "")

    healthy = Shadow()

    async def later() -> list[int]:
        got: list[int] = []
        mirror = ShadowMirror(
            "shadow-1",
            shadow,
            lambda c, o: got.append(o.code),
            max_pending=10,
            timeout_s=1.0,
            linger_s=0,
        )
        mirror.offer(copy(0))
        await asyncio.sleep(0.1)
        mirror._send = healthy  # the shadow recovered: the same sender task carries on
        mirror.offer(copy(1))
        await asyncio.sleep(0.1)
        await mirror.close()
        return got

    assert asyncio.run(later()) == [500, 200]


def test_invalid_copies_are_reported_as_422_with_the_field() -> None:
    reports, _, _, _ = run_mirror(Shadow(), [copy(1), copy(-1)])
    assert [o.code for _, o in reports] == [200, 422]
    assert reports[1][1].error == "features.x: < 0"


def test_a_reporter_that_raises_does_not_stop_the_sender() -> None:
    shadow = Shadow()
    seen: list[str] = []

    def report(c: MirrorCopy, o: MirrorOutcome) -> None:
        seen.append(c.request_ids[0])
        raise ValueError("metrics broke")

    async def main() -> None:
        mirror = ShadowMirror("s", shadow, report, max_pending=10, timeout_s=1.0, linger_s=0)
        mirror.offer(copy(0))
        await asyncio.sleep(0.1)
        mirror.offer(copy(1))
        await asyncio.sleep(0.1)
        await mirror.close()

    asyncio.run(main())
    assert seen == ["r0-0", "r1-0"]
