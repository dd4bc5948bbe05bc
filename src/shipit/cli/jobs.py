"""``shipit jobs``: batch files against a running gateway's OpenAI Batch API.

``submit`` uploads a JSONL file (``/v1/files``, purpose ``batch``) and creates a batch
(``/v1/batches``); ``status`` shows one batch or lists them; ``cancel`` cancels one;
``results`` writes its output (or error) file. Thin: HTTP calls and printing, nothing the
gateway does not report.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import typer

app = typer.Typer(
    help="Run batch files through a gateway (OpenAI's Batch API): submit, status, cancel, "
    "results.\n\nExamples:\n\n  shipit jobs submit requests.jsonl --wait\n\n"
    "  shipit jobs status batch_abc\n\n  shipit jobs results batch_abc -o answers.jsonl",
    no_args_is_help=True,
)
FINAL = ("completed", "failed", "expired", "cancelled")
URL = typer.Option("http://127.0.0.1:8000", "--url", help="The gateway's base URL.")
KEY = typer.Option(None, "--api-key", help="Bearer key for the gateway (default: $SHIPIT_API_KEY).")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="jobs")


def _client(url: str, api_key: str | None) -> httpx.Client:
    key = api_key or os.environ.get("SHIPIT_API_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=60)


def _check(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text
        typer.echo(f"error: {resp.request.method} {resp.request.url.path}: {message}", err=True)
        raise typer.Exit(1)
    return resp.json() if "json" in resp.headers.get("content-type", "") else resp.content


def _call(url: str, api_key: str | None, method: str, path: str, **kw: Any) -> Any:
    try:
        with _client(url, api_key) as client:
            return _check(client.request(method, path, **kw))
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach {url}: {exc}; is `shipit up` running?", err=True)
        raise typer.Exit(1) from exc


def _summary(b: dict[str, Any]) -> str:
    c = b.get("request_counts") or {}
    line = (
        f"{b['id']}  {b['status']}  {c.get('completed', 0)}/{c.get('total', 0)} done, "
        f"{c.get('failed', 0)} failed"
    )
    if b.get("errors"):
        line += "\n" + "\n".join(f"  {e['message']}" for e in b["errors"]["data"])
    return line


@app.command()
def submit(
    file: Path = typer.Argument(..., help="JSONL: one request per line, OpenAI batch format."),
    endpoint: str = typer.Option("/v1/chat/completions", help="or /v1/completions"),
    window: str = typer.Option("24h", "--window", help="completion window: 24h, 30m, 90s"),
    wait: bool = typer.Option(False, "--wait", help="Poll until the batch finishes."),
    url: str = URL,
    api_key: str | None = KEY,
) -> None:
    """Upload FILE and start a batch; prints the batch id."""
    if not file.is_file():
        typer.echo(f"error: {file} does not exist; give a JSONL file of requests", err=True)
        raise typer.Exit(2)
    files = {"file": (file.name, file.read_bytes())}
    up = _call(url, api_key, "POST", "/v1/files", files=files, data={"purpose": "batch"})
    body = {"input_file_id": up["id"], "endpoint": endpoint, "completion_window": window}
    batch = _call(url, api_key, "POST", "/v1/batches", json=body)
    typer.echo(_summary(batch))
    while wait and batch["status"] not in FINAL:
        time.sleep(1.0)
        batch = _call(url, api_key, "GET", f"/v1/batches/{batch['id']}")
        typer.echo(_summary(batch))
    if batch["status"] == "failed":
        raise typer.Exit(1)


@app.command()
def status(
    batch_id: str | None = typer.Argument(None, help="A batch id; none: list recent batches."),
    output: str = typer.Option("text", "--output", "-o", help="text or json."),
    url: str = URL,
    api_key: str | None = KEY,
) -> None:
    """One batch's status and counts, or the recent batches."""
    path = f"/v1/batches/{batch_id}" if batch_id else "/v1/batches"
    data = _call(url, api_key, "GET", path)
    if output == "json":
        typer.echo(json.dumps(data, indent=2))
        return
    for b in data["data"] if not batch_id else [data]:
        typer.echo(_summary(b))


@app.command()
def cancel(batch_id: str, url: str = URL, api_key: str | None = KEY) -> None:
    """Cancel a batch: queued lines are dropped, running ones finish."""
    typer.echo(_summary(_call(url, api_key, "POST", f"/v1/batches/{batch_id}/cancel")))


@app.command()
def results(
    batch_id: str,
    out: Path | None = typer.Option(None, "--out", "-o", help="Write here (default: stdout)."),
    errors: bool = typer.Option(False, "--errors", help="The error file instead."),
    url: str = URL,
    api_key: str | None = KEY,
) -> None:
    """A finished batch's output file (one JSON line per answered request)."""
    batch = _call(url, api_key, "GET", f"/v1/batches/{batch_id}")
    file_id = batch["error_file_id" if errors else "output_file_id"]
    if file_id is None:
        what = "error" if errors else "output"
        typer.echo(f"error: batch {batch_id} ({batch['status']}) has no {what} file", err=True)
        raise typer.Exit(1)
    content = _call(url, api_key, "GET", f"/v1/files/{file_id}/content")
    if out is None:
        typer.echo(content.decode(), nl=False)
    else:
        out.write_bytes(content)
        lines = len(content.splitlines())
        typer.echo(f"wrote {out} ({lines} lines)")
