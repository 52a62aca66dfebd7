"""The ``groundwork`` command: run the pipeline, search the index, see the state of every table."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from resources.settings import PROJECT_ROOT, SAMPLES_DIR, Settings, get_settings

app = typer.Typer(help="Groundwork: trustworthy, queryable AI context from your data.", no_args_is_help=True)
console = Console()
# The progress bar and summary say what happened; Dagster's step-by-step log stays in the UI.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SAMPLE_QUESTION = "How many days do I have to return an item?"


def ensure_dagster_home(settings: Settings) -> Path:
    """Point DAGSTER_HOME at the data root and give it the project's dagster.yaml."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    source, target = PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml"
    if not target.exists() or target.read_text() != source.read_text():
        shutil.copyfile(source, target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def seed_landing(settings: Settings) -> int:
    """Copy the bundled samples into an empty landing zone; returns the number of files copied."""
    landing = Path(settings.landing_uri)
    if landing.exists() and any(p.is_file() for p in landing.rglob("*")):
        return 0
    copied = 0
    for folder in sorted(p for p in SAMPLES_DIR.iterdir() if p.is_dir() and p.name != "gold"):
        shutil.copytree(folder, landing / folder.name, dirs_exist_ok=True)
        copied += sum(1 for p in (landing / folder.name).rglob("*") if p.is_file())
    return copied


def run_pipeline(settings: Settings, selection: list[str] | None = None) -> bool:
    """Materialize the assets through Dagster (recorded in the instance, so the UI shows the run)."""
    ensure_dagster_home(settings)
    from dagster import AssetKey, DagsterEventType, DagsterInstance

    from pipelines.definitions import build_definitions
    from pipelines.jobs import MAIN_JOB

    defs = build_definitions(settings)
    job = defs.resolve_job_def(MAIN_JOB)
    keys = [AssetKey(s) for s in selection] if selection else None
    graph = job.asset_layer.asset_graph
    assets = set(keys) if keys else set(job.asset_layer.executable_asset_keys)
    total = len(assets) + len(graph.get_check_keys_for_assets(assets))  # one step per asset and per check
    run_id = str(uuid.uuid4())
    with DagsterInstance.get() as instance:
        result_box: dict = {}

        def execute() -> None:
            try:
                result_box["result"] = job.execute_in_process(
                    run_config=QUIET_CONSOLE,
                    instance=instance,
                    run_id=run_id,
                    asset_selection=keys,
                    raise_on_error=False,
                )
            except Exception as exc:  # surfaced below, after the progress display closes
                result_box["error"] = exc

        worker = threading.Thread(target=execute, daemon=True)
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("starting Spark and the pipeline", total=total)
            worker.start()
            while worker.is_alive():
                worker.join(0.5)
                done, current = 0, ""
                for record in instance.all_logs(run_id):
                    event = record.dagster_event
                    if event is None:
                        continue
                    if event.event_type == DagsterEventType.STEP_START:
                        current = event.step_key or ""
                    elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                        done += 1
                progress.update(
                    task, completed=done, description=f"materializing {current}" if current else "starting"
                )
            progress.update(task, description="done")
        if "error" in result_box:
            raise result_box["error"]
        result = result_box["result"]
        summary = Table(title=f"run {run_id[:8]}: {'succeeded' if result.success else 'FAILED'}")
        for column in ("asset", "rows", "version", "details"):
            summary.add_column(column)
        for event in result.get_asset_materialization_events():
            m = event.materialization
            meta = {k: v.value for k, v in m.metadata.items()}
            version = meta.get("delta_version", meta.get("lancedb_version", ""))
            details = ", ".join(
                f"{k}={v}"
                for k, v in meta.items()
                if isinstance(v, int | float) and not k.startswith("dagster/") and not k.endswith("version")
            )
            summary.add_row(
                m.asset_key.to_user_string(), str(meta.get("dagster/row_count", "")), str(version), details
            )
        console.print(summary)
        for event in result.all_events:
            if event.event_type == DagsterEventType.STEP_FAILURE:
                console.print(
                    f"[red]{event.step_key} failed:[/red] {event.step_failure_data.error.message.strip()}"
                )
        return result.success


@app.command()
def run(
    select: Annotated[
        list[str] | None, typer.Option("--select", "-s", help="Asset names; default: all")
    ] = None,
) -> None:
    """Materialize every asset (or a selection) through Dagster, incrementally."""
    if not run_pipeline(get_settings(), select):
        raise typer.Exit(1)


def _searcher(settings: Settings):
    from resources import build_resources
    from serving.search import Searcher

    resources = build_resources(settings)
    return Searcher(resources["lancedb"].connect(), settings.embeddings_table, resources["embedder"])


@app.command()
def search(
    question: str,
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many chunks")] = 5,
    mode: Annotated[str, typer.Option(help="vector | fulltext | hybrid")] = "hybrid",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Print the chunks that best answer QUESTION, with their source and score."""
    try:
        hits = _searcher(get_settings()).search(question, k=k, mode=mode)  # type: ignore[arg-type]
    except (LookupError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False))
        return
    for rank, hit in enumerate(hits, start=1):
        where = (
            hit.path
            + (f" p.{hit.page}" if hit.page else "")
            + (f" § {hit.heading_path}" if hit.heading_path else "")
        )
        console.rule(
            f"[bold]{rank}. {hit.title}[/bold]  [dim]{where}  score {hit.score:.4f}[/dim]", align="left"
        )
        text = hit.text if len(hit.text) <= 600 else hit.text[:600] + " …"
        console.print(text, markup=False, highlight=False)
    if not hits:
        console.print("no results")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Each table's rows, version and last update; quarantine counts per source."""
    from pipelines.status import collect_status

    report = collect_status(get_settings())
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    tables = Table(title="tables")
    for column in ("table", "engine", "rows", "version", "updated"):
        tables.add_column(column)
    for row in report["tables"]:
        updated = row["updated_at"].strftime("%Y-%m-%d %H:%M:%S") if row["updated_at"] else ""
        version = "" if row["version"] is None else str(row["version"])
        tables.add_row(row["name"], row["engine"], str(row["rows"]), version, updated)
    console.print(tables)
    if report["quarantine"]:
        quarantine = Table(title="quarantine")
        for column in ("source", "rows", "latest reason"):
            quarantine.add_column(column)
        for row in report["quarantine"]:
            quarantine.add_row(row["source"], str(row["rows"]), row["latest_reason"])
        console.print(quarantine)
    if report["failures"]:
        failures = Table(title="recent failures")
        for column in ("failed", "run", "job", "step", "attempts", "cause"):
            failures.add_column(column)
        for row in report["failures"]:
            failures.add_row(
                row["failed_at"].strftime("%Y-%m-%d %H:%M:%S"),
                row["run_id"][:8],
                row["job_name"],
                row["step_key"] or "",
                str(row["attempts"]),
                row["cause"],
            )
        console.print(failures)


@app.command()
def demo(question: Annotated[str, typer.Argument()] = SAMPLE_QUESTION) -> None:
    """Seed the landing zone with the bundled samples (if empty), run the pipeline, search one question."""
    settings = get_settings()
    copied = seed_landing(settings)
    console.print(
        f"GROUNDWORK_HOME = {settings.home}"
        + (f"  (copied {copied} sample files into the landing zone)" if copied else "")
    )
    started = time.perf_counter()
    if not run_pipeline(settings):
        raise typer.Exit(1)
    console.print(f"pipeline finished in {time.perf_counter() - started:.0f}s\n")
    console.print(f"[bold]groundwork search[/bold] {question!r}")
    search(question, k=3, mode="hybrid", as_json=False)


@app.command()
def dev(port: Annotated[int, typer.Option()] = 3000) -> None:
    """Start the Dagster UI and daemon (`dagster dev`) on this project, storage under GROUNDWORK_HOME."""
    ensure_dagster_home(get_settings())
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    raise typer.Exit(subprocess.call(command, cwd=PROJECT_ROOT))


if __name__ == "__main__":
    app()
