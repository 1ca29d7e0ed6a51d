"""docs/api.md runs as written: its Python blocks, in order, in one namespace, through a real worker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)

pytestmark = pytest.mark.timeout(900)


def test_the_api_page_runs_as_written(worker, storage_root):
    page = (ROOT / "docs" / "api.md").read_text()
    blocks = BLOCK.findall(page)
    assert len(blocks) >= 6

    namespace: dict[str, object] = {"__name__": "api_docs"}
    for number, source in enumerate(blocks, start=1):
        code = compile(source, f"docs/api.md block {number}", "exec")
        exec(code, namespace)  # a failing assertion names its block


def test_each_reader_says_what_it_did_not_find(broker):
    from pipelines.documents import document_chunks
    from pipelines.market import indicators, signals
    from pipelines.media import frames, transcript
    from processing.errors import NotFound

    cases = [
        (lambda: document_chunks(10**9), "document 1000000000 does not exist"),
        (lambda: transcript("no-such-job"), "no video made by job 'no-such-job'"),
        (lambda: frames(10**9), "no video with id 1000000000"),
        (lambda: indicators("NO-SUCH-SYMBOL"), "no asset 'NO-SUCH-SYMBOL'"),
        (lambda: signals(10**9), "no asset 1000000000"),
    ]
    for read, message in cases:
        with pytest.raises(NotFound) as caught:
            read()
        assert str(caught.value) == message
