"""Record the Spark driver's classes once, so that every later JVM maps them instead of loading them.

A new Spark driver loads about 29,000 classes (Spark, Scala, Hadoop, Delta) and verifies most of them:
10-15 CPU-seconds of every `groundwork run`, test process and worker start, on the critical path of
the first step. Java's class data sharing (a dynamic AppCDS archive, JDK 13+) stores them parsed and
verified. ``make setup`` runs this module once per environment: a short Spark and Delta workload on
the project's own code paths (a landing stream, a parse in Python workers, Delta appends with
transaction ids, a MERGE, the change feed), in a JVM started with ``-XX:ArchiveClassesAtExit``.

The archive's name carries a key of what it depends on (the Java runtime, pyspark, Delta's jars);
``resources.spark.get_spark`` uses it only when the key matches, and the JVM itself falls back to
ordinary class loading if it does not validate (a changed classpath), so a missing or stale archive
costs time, never a failure.

    python -m resources.spark_archive [--jars-dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from resources.settings import get_settings
from resources.spark import class_archive


def _workload(spark, work: Path) -> None:
    """The Spark and Delta paths a pipeline run takes, on a few rows."""
    import pandas as pd
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from assets.landing import stream_landed_files
    from resources.lakehouse import Lakehouse

    landing = work / "landing" / "things"
    landing.mkdir(parents=True)
    for i in range(3):
        (landing / f"part-{i}.csv").write_text(
            "id,name\n" + "".join(f"{j},n{j}\n" for j in range(i * 5, i * 5 + 8))
        )
    lakehouse = Lakehouse(
        landing_uri=str(work / "landing"),
        delta_uri=str(work / "delta"),
        checkpoint_uri=str(work / "checkpoints"),
    )

    def parse(batches):
        for files in batches:
            rows = [pd.read_csv(p.removeprefix("file:")).assign(_file=p) for p in files["path"]]
            yield pd.concat(rows).astype({"id": "int64", "name": "str", "_file": "str"})

    def ingest(files: pd.DataFrame, batch_id: int) -> None:
        landed = spark.createDataFrame(files).repartition(2)
        parsed = landed.select(F.col("uri").alias("path")).mapInPandas(
            parse, "id long, name string, _file string"
        )
        lakehouse.append(parsed.withColumn("_at", F.current_timestamp()), "bronze", txn=("warm-up", batch_id))

    stream_landed_files(spark, lakehouse.landing_path("things"), lakehouse.checkpoint_path("bronze"), ingest)
    bronze = lakehouse.read(spark, "bronze")
    newest = Window.partitionBy("id").orderBy(F.col("_at").desc(), "_file")
    silver = bronze.withColumn("_n", F.row_number().over(newest)).where("_n = 1").drop("_n", "_at")
    silver = silver.withColumn("_delete", F.col("id") % 7 == 0)
    lakehouse.apply_changes(spark, silver, "silver", ["id"], txn=("warm-up-silver", 0))
    changed = silver.withColumn("name", F.upper("name")).withColumn(
        "score", F.udf(lambda s: len(s), "int")("name")
    )
    lakehouse.apply_changes(spark, changed, "silver", ["id"], "t.name <> s.name", txn=("warm-up-silver", 1))
    spark.sql(
        f"ALTER TABLE delta.`{lakehouse.table_path('silver')}` "
        "SET TBLPROPERTIES (delta.enableChangeDataFeed = true)"
    )
    lakehouse.apply_changes(
        spark, changed.withColumn("name", F.lower("name")), "silver", ["id"], "t.name <> s.name"
    )
    changes = lakehouse.changes(spark, "silver", lakehouse.version("silver") - 1)
    changes.groupBy("_change_type").count().toPandas()
    lakehouse.read(spark, "silver").join(bronze, "id").toArrow()


def build(jars_dir: Path) -> Path | None:
    """The archive for this environment: built unless it exists; None if the JVM did not write one."""
    target = class_archive(jars_dir)
    if target.exists():
        return target
    from pyspark import SparkContext

    from resources.spark import get_spark

    print(f"==> recording the Spark driver's classes into {target} (once per environment)", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="groundwork-classes-") as tmp:
        partial = Path(tmp) / target.name
        # Class-loading warnings (classes CDS cannot store: signed jars, generated lambdas) go to a log.
        log = Path(tmp) / "cds.log"
        options = f"-XX:ArchiveClassesAtExit={partial} -Xlog:disable -Xlog:cds*=warning:file={log}"
        spark = get_spark("local[2]", jars_dir, "1g", 2, java_options=options, class_data=False)
        gateway = SparkContext._gateway
        _workload(spark, Path(tmp))
        spark.stop()
        # The JVM writes the archive as it exits, which it does when its standard input closes.
        gateway.proc.stdin.close()
        gateway.proc.wait(timeout=600)
        if not partial.exists():
            print(f"the JVM wrote no class archive; Spark starts without one:\n{_tail(log)}")
            return None
        shutil.move(partial, target)
    for stale in target.parent.glob("spark-driver-*.jsa"):
        if stale != target:
            stale.unlink()
    print(f"    {target.stat().st_size / 2**20:.0f} MB in {time.monotonic() - started:.0f} s", flush=True)
    return target


def _tail(log: Path) -> str:
    return "\n".join(log.read_text().splitlines()[-20:]) if log.exists() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jars-dir", type=Path, help="default: the settings' spark_jars_dir")
    args = parser.parse_args()
    build(args.jars_dir or get_settings().spark_jars_dir)
    sys.exit(0)


if __name__ == "__main__":
    main()
