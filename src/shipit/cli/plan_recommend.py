"""``shipit plan recommend``: GPU x TP x precision x provider ranked by $/M tokens at an SLO.

Thin: flags to a ``capacity.RecommendQuery``, ``capacity.answer_recommend`` (as the web
console), a ranked table or JSON.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from shipit import capacity as cap
from shipit.cli.plan_common import (
    ModelOpt,
    OutOpt,
    emit,
    fail,
    run,
    split_csv,
)
from shipit.engine.model_files import resolve_model

HELP = (
    "Rank GPU x TP x precision x provider by dollars per million tokens at your SLO, each "
    "row with its reasoning.\n\n"
    "Examples:\n\n"
    "  shipit plan recommend -m llama-3.1-70b --rps 5 --input-len 1500 --output-len 300 "
    "--ttft-p99-ms 2000 --tpot-p99-ms 50\n\n"
    "  shipit plan recommend -m llama-3.1-8b --throughput 20000 --input-len 500 "
    "--output-len 500 --ttft-p99-ms 500 --tpot-p99-ms 30 --providers lambda,runpod "
    "--max-gpus 16 -o json"
)


def register(plan_app: typer.Typer) -> None:
    plan_app.command("recommend", help=HELP)(recommend_cmd)


def recommend_cmd(
    model: str = ModelOpt,
    rps: float | None = typer.Option(None, "--rps", help="Mean requests/s."),
    throughput: float | None = typer.Option(None, "--throughput", help="Output tokens/s."),
    input_len: int = typer.Option(..., "--input-len"),
    output_len: int = typer.Option(..., "--output-len"),
    input_len_p99: int | None = typer.Option(None, "--input-len-p99"),
    output_len_p99: int | None = typer.Option(None, "--output-len-p99"),
    ttft_p99_ms: float = typer.Option(..., "--ttft-p99-ms", help="TTFT SLO incl. queueing."),
    tpot_p99_ms: float = typer.Option(..., "--tpot-p99-ms", help="TPOT SLO."),
    providers: list[str] = typer.Option([], "--providers", help="aws,gcp,lambda,runpod."),
    max_gpus: int | None = typer.Option(None, "--max-gpus", help="Most GPUs in total."),
    max_usd_per_hour: float | None = typer.Option(
        None, "--max-usd-per-hour", help="Budget: most $/hour for the whole fleet at peak."
    ),
    dtypes: list[str] = typer.Option(["bf16,fp8,int4-awq"], "--dtypes", help="To consider."),
    top: int = typer.Option(10, "--top", help="Rows to show in the table."),
    output: str = OutOpt,
) -> None:
    if (rps is None) == (throughput is None):  # RecommendQuery checks it too, without flag names
        raise fail("give exactly one of --rps or --throughput (output tokens/s)")
    catalog = cap.load_catalog()
    m = run(lambda: resolve_model(catalog, model))
    q = run(
        lambda: cap.RecommendQuery(
            rps=rps,
            throughput=throughput,
            input_len=input_len,
            output_len=output_len,
            input_len_p99=input_len_p99,
            output_len_p99=output_len_p99,
            ttft_p99_ms=ttft_p99_ms,
            tpot_p99_ms=tpot_p99_ms,
            providers=split_csv(providers),
            max_gpus=max_gpus,
            max_usd_per_hour=max_usd_per_hour,
            dtypes=split_csv(dtypes),
        )
    )
    res = run(lambda: cap.answer_recommend(catalog, m, q))  # the console asks the same question
    mean_rps = q.mean_rps
    title = (
        f"{m.id}: {mean_rps:g} rps, {input_len}/{output_len} tokens, "
        f"p99 TTFT {ttft_p99_ms:g} ms, TPOT {tpot_p99_ms:g} ms"
    )
    emit(output, res, lambda c: _render(c, title, res, top))


def _render(c: Console, title: str, res: cap.RecommendResult, top: int) -> None:
    tab = Table(title=title, title_justify="left")
    for col in ("#", "GPU", "TP", "dtype", "provider", "GPUs", "$/h", "$/M tok", "why"):
        tab.add_column(col, overflow="fold")
    for i, r in enumerate(res.rows[:top], 1):
        tab.add_row(
            str(i),
            r.gpu_id if r.calibrated else f"{r.gpu_id} *",
            str(r.tp),
            r.dtype,
            r.provider,
            str(r.gpus),
            f"{r.usd_per_hour:,.2f}",
            f"{r.usd_per_million_tokens:,.3f}",
            r.reason,
        )
    c.print(tab)
    shown = res.rows[:top]
    if any(not r.calibrated for r in shown):
        c.print(
            "* uncalibrated: no published run checks the planner on this GPU; its figures are "
            "the datasheet roofline, usually optimistic. Benchmark it before buying.",
            highlight=False,
        )
    if shown and not shown[0].calibrated:
        c.print(
            f"[yellow]the first-ranked option ({shown[0].gpu_id}) is uncalibrated[/]; the best "
            "calibrated one is "
            + next(
                (f"#{i} ({r.gpu_id})" for i, r in enumerate(res.rows, 1) if r.calibrated),
                "none in this list",
            ),
            highlight=False,
        )
    if not res.rows:
        c.print("[red]no configuration meets the SLO; loosen it or allow more GPUs")
    c.print(f"{len(res.rows)} options, {len(res.rejected)} rejected (see -o json)")
