"""Cold-start phases as a replica reports them on ``GET /shipit/startup``: the marks, the
phases derived from them, where the weights came from, and the endpoint on a real app (the
default runtime with a simulated accelerator, so no weights are read)."""

from __future__ import annotations

import threading
import time

from starlette.testclient import TestClient

from shipit.replica.app import create_app
from shipit.replica.settings import ReplicaSettings
from shipit.replica.startup import StartupTimes, process_started_unix_s, weights_source


def test_process_start_is_in_the_past() -> None:
    started = process_started_unix_s()
    assert started is not None  # the tests run on Linux
    assert started <= time.time()


def test_phases_are_differences_of_the_marks() -> None:
    t = StartupTimes(process_started_unix_s=100.0)
    t.loading_unix_s = 101.5
    assert t.phases_s() == {"process_start": 1.5}
    t.weights_source = "cache"
    t.weights_loaded_unix_s = 104.0
    t.ready_unix_s = 104.25
    assert t.phases_s() == {"process_start": 1.5, "load_weights": 2.5, "warmup": 0.25}
    body = t.to_json()
    assert body["ready"] is True and body["weights_source"] == "cache"


def test_a_command_start_splits_imports_from_process_start_in_order() -> None:
    t = StartupTimes(process_started_unix_s=100.0, command_started_unix_s=100.5)
    t.loading_unix_s = 102.0
    t.weights_loaded_unix_s = 102.25
    t.ready_unix_s = 103.0
    phases = t.phases_s()
    assert list(phases) == ["process_start", "imports", "load_weights", "warmup"]
    assert phases == {"process_start": 0.5, "imports": 1.5, "load_weights": 0.25, "warmup": 0.75}
    assert sum(phases.values()) == 3.0  # they partition process created -> ready


def test_a_builder_that_does_not_report_weights_gets_them_at_ready() -> None:
    t = StartupTimes(process_started_unix_s=None)
    t.loading()
    t.ready()
    assert set(t.phases_s()) == {"load_weights", "warmup"}


def test_weights_source() -> None:
    assert weights_source("llama-3.1-8b", "H100:llama-3.1-8b") == "simulated"
    assert weights_source("/models/x", None) == "files"
    assert weights_source("smollm2-135m-instruct", None) in {"cache", "conversion"}


def test_startup_endpoint_reports_every_phase_in_order_once_ready() -> None:
    settings = ReplicaSettings(
        model="llama-3.1-8b", simulate="H100:llama-3.1-8b", allow_unauthenticated_admin=True
    )
    startup = StartupTimes(command_started_unix_s=time.time())
    with TestClient(create_app(settings, startup=startup)) as client:
        for _ in range(500):
            body = client.get("/shipit/startup").json()
            if body["ready"]:
                break
            threading.Event().wait(0.01)
        assert body["phase"] == "ready"
        assert body["weights_source"] == "simulated"
        assert list(body["phases_s"]) == ["process_start", "imports", "load_weights", "warmup"]
        assert all(v >= 0 for v in body["phases_s"].values())
