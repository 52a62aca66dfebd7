"""Can the packaged local generator write the training queries for the adapted embedder?

Issue 22's lever left open: queries phrased the way users ask, one per chunk, written by a generator
model instead of mined from the chunk's own words. The only generator that runs here without a hub is
the packaged SmolLM2-135M-Instruct (``resources.llamacpp``, the answers' local generator). This times it
writing one question for each of ``--chunks`` random chunks of the retrieval benchmark's corpus, prints
the questions (judge them by eye) and projects the time for the whole corpus.

    python -m benchmarks.question_writer [--corpus /usr/share/doc/git-doc] [--chunks 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from benchmarks.retrieval_quality import groundwork_rows, load_corpus
from models.embedding_model import packaged_model_path
from resources.llamacpp import LOCAL_MODEL_NAME, LocalModel, package_file
from resources.settings import Settings

PROMPT = (
    "Passage from the Git documentation, page {title}:\n{text}\n\n"
    "Write one short question a Git user would ask that this passage answers. Reply with the question only."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/usr/share/doc/git-doc"))
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=40)
    args = parser.parse_args()

    settings = Settings(home=Path(tempfile.gettempdir()) / "groundwork-bench")
    rows = groundwork_rows(load_corpus(args.corpus), settings, str(packaged_model_path()))
    sample = random.Random(1).sample(rows, args.chunks)
    model = LocalModel(package_file(), threads=args.threads)
    model.chat("Say OK.", 2)  # load the model outside the timing
    started = time.perf_counter()
    for row in sample:
        reply = model.chat(PROMPT.format(title=row["title"], text=row["text"][:800]), args.max_tokens)
        question = reply["choices"][0]["message"]["content"].strip().replace("\n", " ")
        print(f"{row['title']:<22} {question[:160]}")
    per_question = (time.perf_counter() - started) / len(sample)
    print(
        f"{LOCAL_MODEL_NAME}, {args.threads} thread(s): {per_question:.1f} s per question; "
        f"{len(rows):,} chunks would take {per_question * len(rows) / 3600:.1f} h"
    )


if __name__ == "__main__":
    main()
