"""Price files with several defects, too little history, staged copies and server paths: every defect is
reported (up to 50, then counted), with the file's name as the user gave it and never a server path,
directly and through a worker."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from market_series import random_walk

from processing.errors import CorruptInput, PermanentError
from processing.prices import MAX_DEFECTS_SHOWN, PriceFileError, parse_price_text, read_price_file
from tests.support import wait_for_job

HEADER = "date,symbol,open,high,low,close,volume\n"


def rows(symbol: str, count: int, *, seed: int = 3) -> list[str]:
    return [
        f"{ts.date().isoformat()},{symbol},{r.open:.4f},{r.high:.4f},{r.low:.4f},{r.close:.4f},{int(r.volume)}"
        for ts, r in random_walk(count, seed=seed).iterrows()
    ]


def several_defects(good: str, short: str) -> tuple[str, dict[int, str]]:
    """A file with 250 good bars of ``good`` and five defects, and the line each defect is on."""
    lines = rows(good, 250)
    lines[10] = lines[10].rsplit(",", 2)[0] + ",abc," + lines[10].rsplit(",", 1)[1]  # line 12
    lines[20] = lines[19]  # line 22 repeats line 21
    lines[30] = lines[30].rsplit(",", 1)[0] + ",-5"  # line 32
    lines[40] = ",".join(lines[40].split(",")[:4])  # line 42: a short row
    lines += rows(short, 5, seed=9)  # lines 252-256: too few bars
    expected = {
        12: f"line 12 ({good}): close 'abc' is not a number",
        22: f"line 22 ({good}): duplicate date",
        32: f"line 32 ({good}): volume -5 is negative",
        42: f"line 42 ({good}): short row: 4 fields where the header needs 7",
        252: f"line 252 ({short}): {short} has 5 bars; the indicators need at least 200",
    }
    return HEADER + "\n".join(lines) + "\n", expected


def test_every_defect_of_a_file_is_reported_with_its_line_and_symbol() -> None:
    # Given a file with a non-numeric close, a duplicate row, a negative volume, a short row and a
    # symbol with five bars
    text, expected = several_defects("GOOD", "TINY")

    # When it is parsed with the indicators' need of 200 bars
    with pytest.raises(PriceFileError) as caught:
        parse_price_text(text, source="prices.csv", min_bars=200)

    # Then all five are reported, in line order, in one permanent error naming the file
    message = str(caught.value)
    assert message.startswith("prices.csv has 5 defects, no rows of this file were stored: ")
    assert [defect.line for defect in caught.value.defects] == sorted(expected)
    for words in expected.values():
        assert words in message, (words, message)
    assert isinstance(caught.value, PermanentError) and "\n" not in message


def test_more_than_fifty_defects_are_counted_past_the_fiftieth() -> None:
    # Given a file with 80 rows whose close is not a number
    text = HEADER + "".join(f"2024-01-{1 + n % 28:02d},S{n},1,2,0.5,x,10\n" for n in range(80))

    # When it is parsed
    with pytest.raises(PriceFileError) as caught:
        parse_price_text(text, source="many.csv")

    # Then fifty are listed and the other thirty counted
    message = str(caught.value)
    assert len(caught.value.defects) == 80
    assert message.count("is not a number") == MAX_DEFECTS_SHOWN
    assert message.endswith("; and 30 more")


def test_bars_already_stored_count_towards_the_history_a_symbol_needs() -> None:
    # Given five new bars of a symbol that has 300 stored, and five of one that has none
    text = HEADER + "\n".join(rows("OLD", 5) + rows("NEW", 5)) + "\n"

    # When the file is parsed with the indicators' need
    from processing.prices import parse_price_rows

    with pytest.raises(PriceFileError) as caught:
        parse_price_rows(text.splitlines(keepends=True), source="update.csv", min_bars=200, stored_bars={"OLD": 300})

    # Then only the new symbol is short
    assert [defect.symbol for defect in caught.value.defects] == ["NEW"]
    assert "NEW has 5 bars; the indicators need at least 200" in str(caught.value)


def test_an_unreadable_file_is_named_without_its_path(tmp_path: Path) -> None:
    # Given a price file that cannot be opened (a directory where the file should be)
    path = tmp_path / "3f2a9c1e-prices.csv"
    path.mkdir()

    # When it is read under the name the user gave
    with pytest.raises(CorruptInput) as caught:
        read_price_file(path, source="prices.csv")

    # Then the error names that file and shows no path
    assert str(caught.value).startswith("prices.csv cannot be read")
    assert str(tmp_path) not in str(caught.value) and "3f2a9c1e" not in str(caught.value)


@pytest.fixture
def market(broker: Any) -> Any:
    from actors import market

    return market


def test_a_worker_rejects_a_file_with_several_defects_and_reports_them_all(
    market: Any, worker: Any, tmp_path: Path
) -> None:
    # Given a file with five defects outside the storage root, imported as the cli does (a staged copy)
    from pipelines import RunFailed
    from pipelines.market import import_price_file
    from settings import settings
    from storage import market as store

    good, short = (f"{p}{uuid.uuid4().hex[:6]}".upper() for p in ("G", "T"))
    text, expected = several_defects(good, short)
    path = tmp_path / "my-prices.csv"
    path.write_text(text)

    # When it is imported and its run waited for
    run = import_price_file(path)
    with pytest.raises(RunFailed) as failed:
        run.wait(120)
    job = wait_for_job(run.id, timeout=10)

    # Then the job failed at once, listing every defect under the user's file name, no server path
    message = job.error_message or ""
    assert (job.state, job.attempts) == ("failed", 1)
    assert failed.value.error_message == message and "\n" not in str(failed.value)
    assert message.startswith("my-prices.csv has 5 defects"), message
    for words in expected.values():
        assert words in message
    assert not re.search(r"[0-9a-f]{8}-my-prices\.csv", message)
    assert str(settings.storage_root.resolve()) not in message and str(tmp_path) not in message

    # And nothing of the file was stored
    assert store.get_asset_by_symbol(good) is None and store.get_asset_by_symbol(short) is None


def test_a_worker_rejects_a_symbol_with_too_few_bars_and_stores_a_long_enough_one(
    market: Any, worker: Any, storage_root: Path
) -> None:
    # Given a file with 5 bars of one symbol, then the same symbol's 250-bar history in another file
    from storage import market as store

    symbol = f"F{uuid.uuid4().hex[:7]}".upper()
    (storage_root / f"{symbol}-few.csv").write_text(HEADER + "\n".join(rows(symbol, 5)) + "\n")
    (storage_root / f"{symbol}-all.csv").write_text(HEADER + "\n".join(rows(symbol, 250)) + "\n")

    # When the short file is imported, then the long one
    few = wait_for_job(market.import_prices.send(f"{symbol}-few.csv").message_id)
    full = wait_for_job(market.import_prices.send(f"{symbol}-all.csv").message_id)

    # Then the short one failed naming the symbol, its bars and the need; the long one is stored
    assert (few.state, few.attempts) == ("failed", 1)
    assert f"{symbol} has 5 bars; the indicators need at least 200" in (few.error_message or "")
    assert full.state == "succeeded", full.error_message
    asset = store.get_asset_by_symbol(symbol)
    assert asset is not None and store.count_bars(asset.id) == 250


def test_a_worker_names_a_path_outside_the_root_without_showing_it(market: Any, worker: Any, tmp_path: Path) -> None:
    # Given a file outside the storage root, and a missing one, sent by their absolute paths
    outside = tmp_path / "elsewhere.csv"
    outside.write_text(HEADER + "\n".join(rows("OUT", 250)) + "\n")

    # When each is imported
    escaped = wait_for_job(market.import_prices.send(str(outside)).message_id)
    missing = wait_for_job(market.import_prices.send(str(tmp_path / "none.csv")).message_id)

    # Then both fail naming the file only
    assert escaped.error_message == "elsewhere.csv is outside the storage root"
    assert missing.state == "failed" and str(tmp_path) not in (missing.error_message or "")
