"""Start, reload and stop the serving app on a local Ray instance this process owns.

- `start(settings, blocking=False)`: start a private local Ray (`address="local"`, its own
  short temp dir, no dashboard), Serve on `serving.host:serving.port`, and the app; with
  `blocking=True` serve until SIGINT/SIGTERM, then stop. This is `mlops serve`.
- `start_detached(settings)`: the same in a background process (`python -m serving.runner`,
  its own session), recorded in `MLOPS_HOME/serve.json` and `serve.pid`, log in `serve.log`.
  This is `mlops serve --detach`.
- `reload(settings)`: re-resolve the aliases and hot-swap (in process, or `POST /admin/reload`).
- `stop(settings)`: stop only what we started: in process `serve.shutdown()` +
  `ray.shutdown()`; otherwise SIGTERM to the recorded runner pid (its process group when it
  was detached), checked against the recorded process start time. Never `ray stop`.

One server per project: `start` holds an exclusive `flock` on `MLOPS_HOME/serve.lock` for as
long as it serves (the kernel releases it when the process dies, so a crash leaves no stale
lock). A second `mlops serve` fails at once with ServeLockBusy, naming the holder's pid (the
file's content). `start_detached` takes the lock before it spawns the runner and hands the
locked descriptor down to it, so two detached starts cannot both get as far as Ray either.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

log = logging.getLogger(__name__)

STATE_FILE = "serve.json"
PID_FILE = "serve.pid"
LOG_FILE = "serve.log"
LOCK_FILE = "serve.lock"
DETACHED_ENV = "MLOPS_SERVE_DETACHED"
LOCK_FD_ENV = "MLOPS_SERVE_LOCK_FD"  # the locked descriptor start_detached hands down
STOP_TIMEOUT_S = 60.0


class ServeLockBusy(RuntimeError):
    """Another `mlops serve` of this project holds the serve lock."""

    def __init__(self, path: Path, holder: int | None) -> None:
        who = f"pid {holder}" if holder is not None else "a process that has not written its pid"
        super().__init__(
            f"a server of this project already runs: {who} holds the serve lock {path}; "
            "stop it with `mlops serve --stop` (or wait for it to exit)"
        )
        self.path = path
        self.holder = holder


class ServeHandleInfo(BaseModel):
    """Where the app answers and who owns it."""

    url: str
    app_name: str
    pid: int
    pid_start: str | None = None
    detached: bool = False
    ray_temp_dir: str | None = None
    slots: dict[str, str | None] = {}
    started_at: str

    def __str__(self) -> str:
        served = ", ".join(f"{k}={v or '-'}" for k, v in self.slots.items())
        return f"{self.url} pid {self.pid} [{served}]"


class _InProcess:
    """What this process started, so `stop` shuts down exactly that."""

    def __init__(
        self, settings: Any, args: Any, info: ServeHandleInfo, owns_ray: bool, lock_fd: int
    ) -> None:
        self.settings = settings
        self.args = args
        self.info = info
        self.owns_ray = owns_ray
        self.lock_fd = lock_fd


_RUNNING: _InProcess | None = None
_LOCK = threading.Lock()


def _ours(settings: Any) -> _InProcess | None:
    """The app this process started for this project (same MLOPS_HOME), if any."""
    running = _RUNNING
    if running is None or Path(running.settings.home) != Path(settings.home):
        return None
    return running


def _state_path(settings: Any) -> Path:
    return Path(settings.home) / STATE_FILE


def _pid_path(settings: Any) -> Path:
    return Path(settings.home) / PID_FILE


def lock_path(settings: Any) -> Path:
    """The project's serve lock file, beside serve.json and serve.pid."""
    return Path(settings.home) / LOCK_FILE


def _lock_holder(path: Path, wait_s: float = 1.0) -> int | None:
    """The pid the lock's holder wrote (it may still be writing it: wait a little)."""
    deadline = time.monotonic() + wait_s
    while True:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(path.read_text().split()[0])
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _record_holder(fd: int, pid: int) -> None:
    """Write `<pid> <process start time>` into the lock file (for the loser's message)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid} {_proc_start(pid) or ''}\n".encode(), 0)


def acquire_serve_lock(settings: Any) -> int:
    """Take the project's serve lock without waiting; return its descriptor.

    Raises ServeLockBusy naming the holder's pid when another process holds it. A descriptor
    handed down by start_detached (MLOPS_SERVE_LOCK_FD, the same locked open file) is taken
    over rather than locked again.
    """
    path = lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _inherited_lock(path)
    if fd is None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ServeLockBusy(path, _lock_holder(path)) from None
    except BaseException:
        os.close(fd)
        raise
    os.set_inheritable(fd, False)  # Ray's raylet and workers must not keep the lock alive
    _record_holder(fd, os.getpid())
    return fd


def _inherited_lock(path: Path) -> int | None:
    """The lock descriptor start_detached passed down, if it is this project's lock file."""
    raw = os.environ.pop(LOCK_FD_ENV, None)
    if not raw:
        return None
    try:
        fd = int(raw)
        same = os.fstat(fd).st_ino == path.stat().st_ino
    except (ValueError, OSError):
        return None
    if not same:
        return None
    return fd


def release_serve_lock(fd: int) -> None:
    """Release the serve lock (closing its descriptor); the pid in the file is left as is."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (guards against a recycled pid)."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def _alive(pid: int, start: str | None) -> bool:
    """True while `pid` runs and is the process that was recorded (zombies count as gone)."""
    fields = _proc_stat(pid)
    if fields is None:
        return False
    if fields[0] == "Z":
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our child (start_detached)
        return False
    return start is None or fields[19] == start


def read_state(settings: Any) -> ServeHandleInfo | None:
    """The recorded server of this project, if its process still runs."""
    path = _state_path(settings)
    if not path.exists():
        return None
    try:
        info = ServeHandleInfo.model_validate_json(path.read_text())
    except ValueError:
        return None
    return info if _alive(info.pid, info.pid_start) else None


def _read_pid_file(settings: Any) -> tuple[int | None, str | None]:
    """`serve.pid` holds `<pid> <process start time>`."""
    try:
        parts = _pid_path(settings).read_text().split()
        return int(parts[0]), (parts[1] if len(parts) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None, None


def _clear_state(settings: Any, pid: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(_state_path(settings).read_text()).get("pid") == pid:
            _state_path(settings).unlink()
    if _read_pid_file(settings)[0] == pid:
        _pid_path(settings).unlink(missing_ok=True)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def start(
    settings: Any,
    *,
    blocking: bool = False,
    log_to_driver: bool = True,
    log_predictions: bool = True,
    wait_s: float = 240.0,
) -> ServeHandleInfo:
    """Start a local Ray, Serve and the app; `blocking` serves until SIGINT/SIGTERM."""
    with _LOCK:
        if _RUNNING is not None:
            raise RuntimeError(f"already serving from this process at {_RUNNING.info.url}")
        lock_fd = acquire_serve_lock(settings)  # before anything else: no check-then-act race
        try:
            info = _start_locked(settings, lock_fd, log_to_driver, log_predictions, wait_s)
        except BaseException:
            release_serve_lock(lock_fd)
            raise
    if blocking:
        _serve_until_signal()
        stop(settings)
    return info


def _start_ray_and_serve(serving: Any, log_to_driver: bool) -> tuple[bool, str | None]:
    """Start Ray (unless this process is already connected) and Serve's HTTP edge.

    Serve's throughput settings (serving/config.py SERVE_ENV) are in the environment while
    Ray starts: its processes read them then. Returns (owns_ray, Ray's temp dir).
    """
    from serving.config import applied_serve_env

    with applied_serve_env():
        import ray
        from ray import serve

        owns_ray = not ray.is_initialized()
        temp_dir = None
        if owns_ray:
            # A short private temp dir: Ray's socket paths must stay under 108 bytes, and a
            # private dir keeps this cluster apart from any other Ray on the machine.
            temp_dir = tempfile.mkdtemp(prefix="mlops-ray-", dir="/tmp")
            ray.init(
                address="local",
                num_cpus=serving.num_cpus,
                include_dashboard=False,
                namespace="mlops-serve",
                log_to_driver=log_to_driver,
                _temp_dir=temp_dir,
                # A fixed port for Prometheus' `ray` job (compose: 8090, DESIGN.md); else random.
                _metrics_export_port=int(os.environ["MLOPS_RAY_METRICS_PORT"])
                if os.environ.get("MLOPS_RAY_METRICS_PORT")
                else None,
            )
        try:
            serve.start(http_options={"host": serving.host, "port": serving.port})
        except BaseException:
            _stop_ray_and_serve(owns_ray, temp_dir)
            raise
    return owns_ray, temp_dir


def _stop_ray_and_serve(owns_ray: bool, temp_dir: str | None) -> None:
    """Undo `_start_ray_and_serve` after a failed start."""
    import ray
    from ray import serve

    with contextlib.suppress(Exception):
        serve.shutdown()
    if owns_ray:
        ray.shutdown()
        shutil.rmtree(temp_dir or "", ignore_errors=True)


def _start_locked(
    settings: Any, lock_fd: int, log_to_driver: bool, log_predictions: bool, wait_s: float
) -> ServeHandleInfo:
    """`start` once this process holds the project's serve lock."""
    global _RUNNING
    other = read_state(settings)
    if other is not None and other.pid != os.getpid():
        raise RuntimeError(
            f"a server of this project already runs (pid {other.pid}, {other.url}); "
            "stop it with `mlops serve --stop`"
        )
    serving = settings.config.serving
    from serving.edge import FEEDBACK_TOKEN_ENV, exposure_error, is_loopback

    refused = exposure_error(serving.host, serving.admin_token_env)
    if refused:
        raise RuntimeError(refused)
    if not is_loopback(serving.host) and not os.environ.get(FEEDBACK_TOKEN_ENV):
        log.warning(
            "%s is not set: anyone who reaches %s:%s can post labels to /feedback",
            FEEDBACK_TOKEN_ENV,
            serving.host,
            serving.port,
        )
    if not _port_free(serving.host, serving.port):
        raise RuntimeError(
            f"port {serving.port} on {serving.host} is in use; free it or set serving.port"
        )
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    settings.home.mkdir(parents=True, exist_ok=True)
    owns_ray, temp_dir = _start_ray_and_serve(serving, log_to_driver)
    try:
        # Imported once Ray is up: Serve's modules read SERVE_ENV when first imported.
        from serving.deploy import app_args_from_settings, apply, wait_for_app

        args = app_args_from_settings(settings, log_predictions=log_predictions)
        slots = apply(args, wait_s=wait_s)
        wait_for_app(args.app_name, timeout_s=wait_s)
    except BaseException:
        _stop_ray_and_serve(owns_ray, temp_dir)
        raise
    pid = os.getpid()
    info = ServeHandleInfo(
        url=f"http://{serving.host}:{serving.port}",
        app_name=args.app_name,
        pid=pid,
        pid_start=_proc_start(pid),
        detached=os.environ.get(DETACHED_ENV) == "1",
        ray_temp_dir=temp_dir,
        slots={s: (r.version if r else None) for s, r in slots.items()},
        started_at=datetime.now(UTC).isoformat(),
    )
    _state_path(settings).write_text(info.model_dump_json(indent=2))
    _RUNNING = _InProcess(settings, args, info, owns_ray, lock_fd)
    log.info("serving %s", info)
    return info


def _serve_until_signal() -> None:
    done = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        done.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(1.0):
            pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _stop_in_process() -> None:
    global _RUNNING
    import ray
    from ray import serve

    running = _RUNNING
    if running is None:
        return
    try:
        serve.shutdown()  # graceful: the ingress flushes its prediction log
    except Exception as exc:
        log.warning("serve.shutdown failed: %s", exc)
    if running.owns_ray:
        ray.shutdown()
        shutil.rmtree(running.info.ray_temp_dir or "", ignore_errors=True)
    _clear_state(running.settings, running.info.pid)
    release_serve_lock(running.lock_fd)
    _RUNNING = None


def stop(settings: Any, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop the server this process or this project started; False when none was running."""
    with _LOCK:
        if _ours(settings) is not None:
            _stop_in_process()
            return True
    info = read_state(settings)
    if info is None:
        pid, start_time = _read_pid_file(settings)
        _state_path(settings).unlink(missing_ok=True)
        if pid is not None and _alive(pid, start_time):
            # A detached runner that has not got as far as serving yet.
            return _terminate(settings, pid, start_time, True, timeout_s)
        _pid_path(settings).unlink(missing_ok=True)
        return False
    return _terminate(settings, info.pid, info.pid_start, info.detached, timeout_s)


def _terminate(
    settings: Any, pid: int, start_time: str | None, detached: bool, timeout_s: float
) -> bool:
    """SIGTERM the runner (it shuts Serve and Ray down), then SIGKILL what it started."""
    group = detached and os.getpgid(pid) == pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _clear_state(settings, pid)
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid, start_time):
        time.sleep(0.2)
    if _alive(pid, start_time):
        log.warning("runner %d ignored SIGTERM for %gs; killing it", pid, timeout_s)
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(pid, signal.SIGKILL)  # its own session: only what it started
            else:
                os.kill(pid, signal.SIGKILL)
    _clear_state(settings, pid)
    return True


def start_detached(settings: Any, *, wait_s: float = 300.0) -> ServeHandleInfo:
    """Run `start(blocking=True)` in a background session; return once it serves."""
    running = read_state(settings)
    if running is not None:
        raise RuntimeError(f"a server of this project already runs (pid {running.pid})")
    settings.home.mkdir(parents=True, exist_ok=True)
    # Locked here, before the spawn: of two detached starts, the loser fails now, and never
    # writes serve.pid over the winner's. The runner takes the locked descriptor over.
    lock_fd = acquire_serve_lock(settings)
    log_path = Path(settings.home) / LOG_FILE
    env = dict(os.environ, MLOPS_HOME=str(settings.home), RAY_USAGE_STATS_ENABLED="0")
    env[DETACHED_ENV] = "1"
    env[LOCK_FD_ENV] = str(lock_fd)
    cmd = [sys.executable, "-m", "serving.runner", "--config", str(settings.config_path)]
    try:
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(settings.project_dir),
                start_new_session=True,
                pass_fds=(lock_fd,),
            )
        _record_holder(lock_fd, proc.pid)
    finally:
        os.close(lock_fd)  # the runner's copy of the open file keeps it locked
    _pid_path(settings).write_text(f"{proc.pid} {_proc_start(proc.pid) or ''}\n")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            _pid_path(settings).unlink(missing_ok=True)
            raise RuntimeError(f"the server exited with code {code}; log {log_path}:\n{tail}")
        info = read_state(settings)
        if info is not None and info.pid == proc.pid:
            return info
        time.sleep(0.5)
    stop(settings)
    raise TimeoutError(f"the server did not start in {wait_s:g}s; see {log_path}")


def reload(settings: Any, *, timeout_s: float = 300.0) -> dict[str, str | None]:
    """Re-resolve the aliases and hot-swap; returns {slot: version or None}."""
    with _LOCK:
        running = _ours(settings)
    if running is not None:
        from serving.deploy import apply

        slots = apply(running.args, reread_policy=True)
        return {s: (r.version if r else None) for s, r in slots.items()}
    import httpx

    from mlops_assets.lifecycle.context import reload_endpoint

    url, headers = reload_endpoint(settings)
    try:
        resp = httpx.post(url, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"no server answers at {url}: {exc}") from None
    if resp.status_code != 200:
        raise RuntimeError(f"reload refused ({resp.status_code}): {resp.text[:300]}")
    return dict(resp.json().get("slots", {}))


def apply_overrides(
    *,
    faults: dict[str, Any] | None = None,
    shadow_traffic_percent: float | None = None,
    shadow_timeout_s: float | None = None,
    max_inflight_shadow: int | None = None,
) -> dict[str, str | None]:
    """Re-apply the app started in this process with overrides (faults are for tests only).

    Overrides last until the next apply: a reload resets them to the configured values.
    """
    with _LOCK:
        running = _RUNNING
    if running is None:
        raise RuntimeError("no app was started in this process")
    from serving.deploy import apply

    slots = apply(
        running.args,
        faults=faults,
        shadow_traffic_percent=shadow_traffic_percent,
        shadow_timeout_s=shadow_timeout_s,
        max_inflight_shadow=max_inflight_shadow,
    )
    return {s: (r.version if r else None) for s, r in slots.items()}


def main(argv: list[str] | None = None) -> int:
    """`python -m serving.runner --config config/config.yaml`: serve in the foreground."""
    parser = argparse.ArgumentParser(prog="serving.runner", description=main.__doc__)
    parser.add_argument("--config", default=None, help="config/config.yaml (or MLOPS_CONFIG)")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from mlops_assets.settings import load_settings

    settings = load_settings(ns.config)
    try:
        start(settings, blocking=True)
    except ServeLockBusy as exc:
        log.error("%s", exc)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
