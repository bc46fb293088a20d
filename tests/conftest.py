"""Shared fixtures. Integration tests run against the real services of `scripts/services up`:
a service that cannot be reached fails the test run; it is never skipped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from core.settings import ROOT, Settings

SERVICES = {"kafka": ("127.0.0.1", 9092), "schema registry": ("127.0.0.1", 8081),
            "redis": ("127.0.0.1", 6379), "mlflow": ("127.0.0.1", 5002)}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def services() -> None:
    down = [f"{name} ({host}:{port})" for name, (host, port) in SERVICES.items() if not _reachable(host, port)]
    if down:
        pytest.fail(f"services not reachable: {', '.join(down)}; start them with `scripts/services up`",
                    pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_settings(tmp_path: Path, **overrides) -> Settings:
    """Settings with topics, consumer group, model name and ports of this test's own."""
    tag = uuid.uuid4().hex[:8]
    values = dict(
        app_id=f"test-scorer-{tag}", transactions_topic=f"test-transactions-{tag}",
        verdicts_topic=f"test-verdicts-{tag}", feedback_topic=f"test-feedback-{tag}",
        dlq_topic=f"test-dlq-{tag}", rules_topic=f"test-rules-{tag}",
        terminal_events_topic=f"test-terminal-events-{tag}",
        examples_topic=f"test-examples-{tag}", partitions=3, model_name=f"test-xgb-{tag}",
        experiment="fraud-scorer-tests", model_poll_seconds=1.0, api_port=free_port(),
        state_dir=tmp_path / "faust", model_cache_dir=tmp_path / "model-cache", worker_id=f"test-{tag}",
        jwt_secret=f"test-secret-{uuid.uuid4().hex}", data_dir=tmp_path / "data",
    )
    values.update(overrides)
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"FRAUD_{name.upper()}"] = str(value)
    return env


def bearer(settings: Settings, role: str = "admin") -> dict[str, str]:
    """The Authorization header of a token for `role`, signed with the settings' secret."""
    from ops_api.auth import mint

    return {"Authorization": f"Bearer {mint(settings, role, 3600, subject='tests')}"}


class WorkerProcess:
    """A real `fraud worker` process (or, with `command="api"`, a `fraud api`) with its own log file."""

    def __init__(self, settings: Settings, log_path: Path, command: str = "worker"):
        self.settings = settings
        self.log_path = log_path
        self.command = command
        self.proc: subprocess.Popen | None = None
        self.base = f"http://127.0.0.1:{settings.api_port}"

    def start(self) -> "WorkerProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "fraud", self.command], cwd=ROOT,
                                     env=settings_env(self.settings), stdout=log, stderr=subprocess.STDOUT)
        return self

    def get(self, path: str, timeout: float = 10) -> tuple[int, dict]:
        req = urllib.request.Request(self.base + path, headers=bearer(self.settings))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def post(self, path: str, body: bytes | dict, timeout: float = 10) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **bearer(self.settings)})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_ready(self, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, body = self.get("/health/ready", timeout=2)
                if status == 200:
                    return body
                last = body
            except OSError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise AssertionError(f"worker not ready after {timeout}s ({last}):\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def small_history():
    from models.simulate import SimulationConfig, simulate

    return simulate(SimulationConfig(customers=300, terminals=600, days=40, seed=7))
