"""Market tables: assets, price bars, indicator values, signals, and runs over many assets.

Writes are bulk upserts (``INSERT ... ON CONFLICT`` in the SQLite and PostgreSQL dialects), one
statement per batch, so a re-run rewrites the same rows instead of adding new ones. Timestamps are UTC;
SQLite hands them back without a zone, so readers attach UTC again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    func,
    select,
    type_coerce,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

# The market tables' indicator and price columns carry the names processing gives them.
from processing.indicators import INDICATOR_COLUMNS, PRICE_COLUMNS
from storage.db import Base, get_engine, session_scope

if TYPE_CHECKING:
    import pandas as pd


class Asset(Base):
    """Something with a price: a stock, a coin, an index."""

    __tablename__ = "market_assets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    symbol: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The last chart written for the asset, and when.
    chart_path: Mapped[str | None] = mapped_column(Text)
    chart_rendered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PriceBarRow(Base):
    """One OHLCV bar of one asset in one timeframe (``1d``, ``1h``, ...)."""

    __tablename__ = "market_price_bars"

    asset_id: Mapped[int] = mapped_column(ForeignKey("market_assets.id", ondelete="CASCADE"), primary_key=True)
    timeframe: Mapped[str] = mapped_column(String(8), primary_key=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    open: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)
    low: Mapped[float] = mapped_column(Float)
    close: Mapped[float] = mapped_column(Float)
    volume: Mapped[float] = mapped_column(Float)


class IndicatorRow(Base):
    """Every indicator of one bar; a column is NULL where the indicator is not yet defined."""

    __tablename__ = "market_indicator_values"

    asset_id: Mapped[int] = mapped_column(ForeignKey("market_assets.id", ondelete="CASCADE"), primary_key=True)
    timeframe: Mapped[str] = mapped_column(String(8), primary_key=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    rsi: Mapped[float | None] = mapped_column(Float)
    macd: Mapped[float | None] = mapped_column(Float)
    macd_signal: Mapped[float | None] = mapped_column(Float)
    macd_hist: Mapped[float | None] = mapped_column(Float)
    sma_short: Mapped[float | None] = mapped_column(Float)
    sma_medium: Mapped[float | None] = mapped_column(Float)
    sma_long: Mapped[float | None] = mapped_column(Float)
    ema_fast: Mapped[float | None] = mapped_column(Float)
    ema_slow: Mapped[float | None] = mapped_column(Float)
    bb_upper: Mapped[float | None] = mapped_column(Float)
    bb_middle: Mapped[float | None] = mapped_column(Float)
    bb_lower: Mapped[float | None] = mapped_column(Float)
    atr: Mapped[float | None] = mapped_column(Float)
    stoch_k: Mapped[float | None] = mapped_column(Float)
    stoch_d: Mapped[float | None] = mapped_column(Float)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


#: A signal is unique per asset, timeframe, bar, rule and direction.
SIGNAL_KEY: tuple[str, ...] = ("asset_id", "timeframe", "ts", "rule", "direction")


class SignalRow(Base):
    """A buy or sell signal a rule emitted for one bar; active until it expires."""

    __tablename__ = "market_signals"
    __table_args__ = (
        UniqueConstraint(*SIGNAL_KEY, name="uq_market_signals_bar_rule"),
        Index("ix_market_signals_active_expires", "active", "expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("market_assets.id", ondelete="CASCADE"), index=True)
    timeframe: Mapped[str] = mapped_column(String(8))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rule: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(4))
    strength: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column(Boolean)


class MarketRun(Base):
    """One fan-out over many assets; ``outcome`` is set when the last asset's job has finished."""

    __tablename__ = "market_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))  # indicators, signals, refresh
    message_id: Mapped[str | None] = mapped_column(String(64), index=True)
    params: Mapped[str | None] = mapped_column(Text)
    total: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    # running, then succeeded (every asset), partial (some failed) or failed (all failed).
    outcome: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MarketRunItem(Base):
    """How one asset of a run ended."""

    __tablename__ = "market_run_items"

    run_id: Mapped[int] = mapped_column(ForeignKey("market_runs.id", ondelete="CASCADE"), primary_key=True)
    asset_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    outcome: Mapped[str] = mapped_column(String(20))  # succeeded, failed, dead, cancelled
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class AssetInfo:
    id: int
    symbol: str
    chart_path: str | None
    chart_rendered_at: datetime | None


@dataclass(frozen=True)
class StoredSignal:
    id: int
    asset_id: int
    timeframe: str
    ts: datetime
    rule: str
    direction: str
    strength: float
    reason: str
    created_at: datetime
    expires_at: datetime
    active: bool


@dataclass(frozen=True)
class RunInfo:
    id: int
    kind: str
    total: int
    succeeded: int
    failed: int
    outcome: str
    started_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A timestamp read back from the database, with its UTC zone restored."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _insert(session: Session) -> Any:
    """The dialect's ``insert`` that knows ``on_conflict_do_update``."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    return insert


def _chunks(rows: Sequence[Mapping[str, Any]], size: int) -> Iterable[Sequence[Mapping[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# --------------------------------------------------------------------------------------------------
# Assets and price bars
# --------------------------------------------------------------------------------------------------


def _asset_info(asset: Asset) -> AssetInfo:
    rendered = as_utc(asset.chart_rendered_at) if asset.chart_rendered_at else None
    return AssetInfo(asset.id, asset.symbol, asset.chart_path, rendered)


def get_asset(asset_id: int) -> AssetInfo | None:
    table = Asset.__table__
    query = select(table.c.id, table.c.symbol, table.c.chart_path, table.c.chart_rendered_at)
    with get_engine().connect() as connection:
        row = connection.execute(query.where(table.c.id == asset_id)).first()
    if row is None:
        return None
    return AssetInfo(row[0], row[1], row[2], as_utc(row[3]) if row[3] else None)


def get_asset_by_symbol(symbol: str) -> AssetInfo | None:
    with session_scope() as session:
        asset = session.scalars(select(Asset).where(Asset.symbol == symbol.strip().upper())).first()
        return _asset_info(asset) if asset else None


def list_asset_ids() -> list[int]:
    with session_scope() as session:
        return list(session.scalars(select(Asset.id).order_by(Asset.id)))


def import_bars(rows: Sequence[Mapping[str, Any]], *, timeframe: str) -> dict[str, int]:
    """Store bars (dicts with symbol, ts, open, high, low, close, volume) in one transaction.

    Assets are created for new symbols; a bar already stored for the same asset, timeframe and time is
    overwritten, so importing a file twice leaves the tables as they were. Returns counts of assets
    created, symbols seen and bars written.
    """
    symbols = sorted({str(r["symbol"]) for r in rows})
    now = utcnow()
    with session_scope() as session:
        insert = _insert(session)
        before = set(session.scalars(select(Asset.symbol).where(Asset.symbol.in_(symbols))))
        new = [{"symbol": s, "created_at": now} for s in symbols if s not in before]
        if new:
            session.execute(insert(Asset).on_conflict_do_nothing(index_elements=["symbol"]), new)
        ids = dict(session.execute(select(Asset.symbol, Asset.id).where(Asset.symbol.in_(symbols))).all())
        bars = [
            {
                "asset_id": ids[str(r["symbol"])],
                "timeframe": timeframe,
                "ts": r["ts"],
                "open": r["open"],
                "high": r["high"],
                "low": r["low"],
                "close": r["close"],
                "volume": r["volume"],
            }
            for r in rows
        ]
        statement = insert(PriceBarRow)
        statement = statement.on_conflict_do_update(
            index_elements=["asset_id", "timeframe", "ts"],
            set_={c: statement.excluded[c] for c in ("open", "high", "low", "close", "volume")},
        )
        for chunk in _chunks(bars, 5_000):
            session.execute(statement, list(chunk))
    return {"assets_created": len(new), "symbols": len(symbols), "bars": len(bars)}


def count_bars(asset_id: int, timeframe: str = "1d") -> int:
    with session_scope() as session:
        query = select(func.count()).select_from(PriceBarRow)
        query = query.where(PriceBarRow.asset_id == asset_id, PriceBarRow.timeframe == timeframe)
        return int(session.scalar(query) or 0)


def _ts_index(values: Sequence[Any]) -> pd.DatetimeIndex:
    """A UTC index from timestamps as the driver returns them.

    SQLite hands back the stored text (``2024-01-02 00:00:00.000000``, always UTC here), which numpy
    parses in bulk far faster than row-by-row conversion; PostgreSQL hands back datetimes.
    """
    import numpy as np
    import pandas as pd

    if values and isinstance(values[0], str):
        return pd.DatetimeIndex(np.array(values, dtype="datetime64[us]"), name="ts").tz_localize("UTC")
    index = pd.DatetimeIndex(list(values), name="ts")
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def _frame(rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> pd.DataFrame:
    """Rows of (ts, value, ...) newest first as a frame oldest first; NULL becomes NaN."""
    import numpy as np
    import pandas as pd

    ordered = list(reversed(rows))
    if not ordered:
        empty = pd.DataFrame({c: np.array([], dtype="float64") for c in columns})
        empty.index = pd.DatetimeIndex([], name="ts", tz="UTC")
        return empty
    transposed = list(zip(*ordered, strict=True))
    data = {c: np.array(v, dtype="float64") for c, v in zip(columns, transposed[1:], strict=True)}
    return pd.DataFrame(data, index=_ts_index(transposed[0]))


def _ts_column(column: Any, dialect: str) -> Any:
    """The timestamp column, read as stored text on SQLite (parsed in bulk by ``_ts_index``)."""
    return type_coerce(column, String()) if dialect == "sqlite" else column


def _sqlite_rows(sql: str, params: tuple[Any, ...], limit: int | None, *, order: str = "ts") -> list[Any]:
    """Rows of a read, newest ``order`` first, as plain tuples from the driver (no result objects).

    Reading a few hundred rows this way takes about half the time of a SQLAlchemy query on SQLite;
    timestamps come back as the stored text, which ``_frame`` parses in bulk.
    """
    statement = f"{sql}ORDER BY {order} DESC LIMIT ?"
    with get_engine().connect() as connection:
        driver = connection.connection.driver_connection
        assert driver is not None
        return list(driver.execute(statement, (*params, -1 if limit is None else limit)).fetchall())


def load_bars(asset_id: int, timeframe: str = "1d", *, limit: int | None = None) -> pd.DataFrame:
    """The latest ``limit`` bars (all without a limit), oldest first, indexed by UTC timestamp."""
    table = PriceBarRow.__table__
    engine = get_engine()
    if engine.dialect.name == "sqlite":
        sql = f"SELECT ts, {', '.join(PRICE_COLUMNS)} FROM market_price_bars WHERE asset_id = ? AND timeframe = ? "
        return _frame(_sqlite_rows(sql, (asset_id, timeframe), limit), PRICE_COLUMNS)
    query = (
        select(
            _ts_column(table.c.ts, engine.dialect.name),
            *(table.c[c] for c in PRICE_COLUMNS),
        )
        .where(table.c.asset_id == asset_id, table.c.timeframe == timeframe)
        .order_by(table.c.ts.desc())
    )
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return _frame(rows, PRICE_COLUMNS)


# --------------------------------------------------------------------------------------------------
# Indicators
# --------------------------------------------------------------------------------------------------

_statements: dict[tuple[str, str], Any] = {}


def _dialect_insert(dialect: str) -> Any:
    """The dialect's ``insert`` that knows ``ON CONFLICT``."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    return insert


def _indicator_upsert(dialect: str) -> Any:
    """One upsert statement per dialect, built once (building it costs more than running it)."""
    key = ("indicators", dialect)
    if key not in _statements:
        statement = _dialect_insert(dialect)(IndicatorRow.__table__)
        _statements[key] = statement.on_conflict_do_update(
            index_elements=["asset_id", "timeframe", "ts"],
            set_={c: statement.excluded[c] for c in (*INDICATOR_COLUMNS, "computed_at")},
        )
    return _statements[key]


def upsert_indicators(asset_id: int, timeframe: str, frame: pd.DataFrame) -> int:
    """Store the indicator rows of ``frame`` (index: timestamps; NaN becomes NULL); returns rows written.

    Columns of ``INDICATOR_COLUMNS`` missing from ``frame`` are stored as NULL.
    """
    import numpy as np

    if len(frame) == 0:
        return 0
    now = utcnow()
    matrix = frame.reindex(columns=list(INDICATOR_COLUMNS)).to_numpy(dtype="float64")
    # NaN is "not defined yet": stored as NULL, never as a number.
    cells: list[list[float | None]] = np.where(np.isnan(matrix), None, matrix).tolist()  # type: ignore[attr-defined]
    engine = get_engine()
    if engine.dialect.name == "sqlite":
        # The driver's own bulk insert of plain tuples: the same rows, a fraction of the Python work.
        computed_at = _sqlite_stamp(now)
        params = [
            (asset_id, timeframe, ts, *values, computed_at)
            for ts, values in zip(_sqlite_stamps(frame.index), cells, strict=True)
        ]
        with engine.begin() as connection:
            connection.exec_driver_sql(_SQLITE_INDICATOR_UPSERT, params)  # type: ignore[arg-type]
        return len(params)
    rows = [
        {
            "asset_id": asset_id,
            "timeframe": timeframe,
            "ts": ts,
            "computed_at": now,
            **dict(zip(INDICATOR_COLUMNS, values, strict=True)),
        }
        for ts, values in zip(frame.index.to_pydatetime(), cells, strict=True)
    ]
    statement = _indicator_upsert(engine.dialect.name)
    with engine.begin() as connection:
        for chunk in _chunks(rows, 2_000):
            connection.execute(statement, list(chunk))
    return len(rows)


def _sqlite_stamps(index: pd.DatetimeIndex) -> list[str]:
    """UTC timestamps as SQLAlchemy stores ``DateTime`` on SQLite (``2024-01-02 00:00:00.000000``)."""
    import numpy as np

    utc = index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index
    text = np.datetime_as_string(utc.to_numpy(dtype="datetime64[us]"), unit="us")
    return [t.replace("T", " ") for t in text.tolist()]


_SQLITE_INDICATOR_UPSERT = (
    f"INSERT INTO market_indicator_values (asset_id, timeframe, ts, {', '.join(INDICATOR_COLUMNS)}, computed_at) "
    f"VALUES ({', '.join('?' for _ in range(len(INDICATOR_COLUMNS) + 4))}) "
    "ON CONFLICT (asset_id, timeframe, ts) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*INDICATOR_COLUMNS, "computed_at"))
)


def load_indicators(
    asset_id: int,
    timeframe: str = "1d",
    *,
    limit: int | None = None,
    columns: Sequence[str] = INDICATOR_COLUMNS,
) -> pd.DataFrame:
    """Stored indicator rows with the bar's close, oldest first; NULL comes back as NaN.

    ``columns`` picks the indicators read (all by default).
    """
    unknown = sorted(set(columns) - set(INDICATOR_COLUMNS))
    if unknown:
        raise ValueError(f"unknown indicator column {', '.join(unknown)}")
    ind = IndicatorRow.__table__
    bars = PriceBarRow.__table__
    engine = get_engine()
    if engine.dialect.name == "sqlite":
        sql = (
            f"SELECT i.ts, b.close{''.join(f', i.{c}' for c in columns)} FROM market_indicator_values AS i "
            "JOIN market_price_bars AS b ON b.asset_id = i.asset_id AND b.timeframe = i.timeframe AND b.ts = i.ts "
            "WHERE i.asset_id = ? AND i.timeframe = ? "
        )
        return _frame(_sqlite_rows(sql, (asset_id, timeframe), limit, order="i.ts"), ("close", *columns))
    query = (
        select(_ts_column(ind.c.ts, engine.dialect.name), bars.c.close, *[ind.c[c] for c in columns])
        .join(
            bars,
            (bars.c.asset_id == ind.c.asset_id) & (bars.c.timeframe == ind.c.timeframe) & (bars.c.ts == ind.c.ts),
        )
        .where(ind.c.asset_id == asset_id, ind.c.timeframe == timeframe)
        .order_by(ind.c.ts.desc())
    )
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return _frame(rows, ("close", *columns))


# --------------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------------


_SIGNAL_COLUMNS = (*SIGNAL_KEY, "strength", "reason", "created_at", "expires_at", "active")
_SQLITE_SIGNAL_INSERT = (
    f"INSERT INTO market_signals ({', '.join(_SIGNAL_COLUMNS)}) VALUES ({', '.join('?' for _ in _SIGNAL_COLUMNS)}) "
    f"ON CONFLICT ({', '.join(SIGNAL_KEY)}) DO NOTHING"
)


def _sqlite_stamp(value: datetime) -> str:
    """A timestamp as SQLAlchemy stores ``DateTime`` on SQLite, in UTC."""
    utc = value.astimezone(UTC) if value.tzinfo is not None else value
    return utc.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _signal_insert(dialect: str) -> Any:
    key = ("signals", dialect)
    if key not in _statements:
        insert = _dialect_insert(dialect)
        _statements[key] = (
            insert(SignalRow.__table__)
            .on_conflict_do_nothing(index_elements=list(SIGNAL_KEY))
            .returning(SignalRow.__table__.c.id)
        )
    return _statements[key]


def insert_signals(rows: Sequence[Mapping[str, Any]]) -> int:
    """Store new signals (dicts with the ``market_signals`` columns but id); returns how many were new.

    A signal already stored for the same asset, timeframe, bar, rule and direction is kept as it is
    (its creation time, expiry and active flag included), so re-running a computation adds nothing.
    """
    if not rows:
        return 0
    created = 0
    engine = get_engine()
    if engine.dialect.name == "sqlite":
        # The driver's own bulk insert of plain tuples; its row count is the rows the insert added.
        params = [
            (
                row["asset_id"],
                row["timeframe"],
                _sqlite_stamp(row["ts"]),
                row["rule"],
                row["direction"],
                row["strength"],
                row["reason"],
                _sqlite_stamp(row["created_at"]),
                _sqlite_stamp(row["expires_at"]),
                1 if row["active"] else 0,
            )
            for row in rows
        ]
        with engine.begin() as connection:
            result = connection.exec_driver_sql(_SQLITE_SIGNAL_INSERT, params)  # type: ignore[arg-type]
            return int(result.rowcount)
    statement = _signal_insert(engine.dialect.name)
    with engine.begin() as connection:
        for chunk in _chunks(rows, 1_000):
            created += len(connection.execute(statement, list(chunk)).all())
    return created


def _stored_signal(row: SignalRow) -> StoredSignal:
    return StoredSignal(
        id=row.id,
        asset_id=row.asset_id,
        timeframe=row.timeframe,
        ts=as_utc(row.ts),
        rule=row.rule,
        direction=row.direction,
        strength=row.strength,
        reason=row.reason,
        created_at=as_utc(row.created_at),
        expires_at=as_utc(row.expires_at),
        active=bool(row.active),
    )


def list_signals(
    *,
    asset_id: int | None = None,
    timeframe: str | None = None,
    active: bool | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[StoredSignal]:
    """Stored signals, oldest bar first."""
    query = select(SignalRow).order_by(SignalRow.ts, SignalRow.rule, SignalRow.direction)
    if asset_id is not None:
        query = query.where(SignalRow.asset_id == asset_id)
    if timeframe is not None:
        query = query.where(SignalRow.timeframe == timeframe)
    if active is not None:
        query = query.where(SignalRow.active.is_(active))
    if since is not None:
        query = query.where(SignalRow.ts >= since)
    if limit is not None:
        query = query.limit(limit)
    with session_scope() as session:
        return [_stored_signal(row) for row in session.scalars(query)]


def deactivate_expired(now: datetime | None = None) -> int:
    """Mark every active signal whose expiry has passed as inactive; returns how many."""
    now = now or utcnow()
    with session_scope() as session:
        result = session.execute(
            update(SignalRow)
            .where(SignalRow.active.is_(True), SignalRow.expires_at <= now)
            .values(active=False)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)


# --------------------------------------------------------------------------------------------------
# Charts
# --------------------------------------------------------------------------------------------------


def set_chart(asset_id: int, path: str, rendered_at: datetime | None = None) -> None:
    with session_scope() as session:
        session.execute(
            update(Asset)
            .where(Asset.id == asset_id)
            .values(chart_path=path, chart_rendered_at=rendered_at or utcnow())
            .execution_options(synchronize_session=False)
        )


# --------------------------------------------------------------------------------------------------
# Runs over many assets
# --------------------------------------------------------------------------------------------------


def _run_info(run: MarketRun) -> RunInfo:
    return RunInfo(
        id=run.id,
        kind=run.kind,
        total=run.total,
        succeeded=run.succeeded,
        failed=run.failed,
        outcome=run.outcome,
        started_at=as_utc(run.started_at),
        finished_at=as_utc(run.finished_at) if run.finished_at else None,
    )


def create_run(kind: str, total: int, *, params: Mapping[str, Any] | None = None, message_id: str | None = None) -> int:
    """Open a run over ``total`` assets; a run over none is finished at once."""
    now = utcnow()
    with session_scope() as session:
        run = MarketRun(
            kind=kind,
            message_id=message_id,
            params=json.dumps(dict(params or {}), default=str),
            total=total,
            succeeded=0,
            failed=0,
            outcome="succeeded" if total == 0 else "running",
            started_at=now,
            updated_at=now,
            finished_at=now if total == 0 else None,
        )
        session.add(run)
        session.flush()
        return run.id


def find_run_by_message(message_id: str) -> int | None:
    """The run a message opened, if it opened one (a retried fan-out reuses it)."""
    with session_scope() as session:
        query = select(MarketRun.id).where(MarketRun.message_id == message_id).order_by(MarketRun.id)
        return session.scalars(query).first()


def get_run(run_id: int) -> RunInfo | None:
    with session_scope() as session:
        run = session.get(MarketRun, run_id)
        return _run_info(run) if run else None


def run_size(run_id: int) -> tuple[datetime, int] | None:
    """When a run started and how many assets it covers, or None when it does not exist."""
    runs = MarketRun.__table__
    with get_engine().connect() as connection:
        row = connection.execute(select(runs.c.started_at, runs.c.total).where(runs.c.id == run_id)).first()
    return None if row is None else (as_utc(row[0]), int(row[1]))


def list_run_items(run_id: int) -> list[tuple[int, str, str | None]]:
    """(asset id, outcome, error) of every asset of a run that has finished."""
    with session_scope() as session:
        query = select(MarketRunItem.asset_id, MarketRunItem.outcome, MarketRunItem.error)
        query = query.where(MarketRunItem.run_id == run_id).order_by(MarketRunItem.asset_id)
        return [(a, o, e) for a, o, e in session.execute(query)]


def _run_item_upsert(dialect: str) -> Any:
    key = ("run_items", dialect)
    if key not in _statements:
        statement = _dialect_insert(dialect)(MarketRunItem.__table__)
        _statements[key] = statement.on_conflict_do_update(
            index_elements=["run_id", "asset_id"],
            set_={c: statement.excluded[c] for c in ("outcome", "error", "finished_at")},
        )
    return _statements[key]


def record_run_item(run_id: int, asset_id: int, outcome: str, error: str | None = None) -> RunInfo | None:
    """Record how one asset of a run ended; the call that records the last asset closes the run.

    Recording the same asset again (a retried job) replaces its outcome without counting it twice.
    Returns the run as it stands after this call, or None when the run does not exist.
    """
    return record_run_items(run_id, [(asset_id, outcome, error, utcnow())])


def record_run_items(run_id: int, items: Sequence[tuple[int, str, str | None, datetime]]) -> RunInfo | None:
    """Record how several assets of a run ended, (asset id, outcome, error, when) each, in one transaction.

    Outcomes already recorded for the same assets are replaced, never counted twice; the run is closed
    when every asset has one. Returns the run as it stands after this call, or None when the run does
    not exist.
    """
    now = utcnow()
    runs, items_table = MarketRun.__table__, MarketRunItem.__table__
    engine = get_engine()
    with engine.begin() as connection:
        # Writing the run row first takes its lock (PostgreSQL) or the database's write lock (SQLite),
        # so the items of one run are counted one writer at a time and exactly one call closes it.
        touched = connection.execute(update(MarketRun).where(MarketRun.id == run_id).values(updated_at=now))
        if not touched.rowcount:
            return None
        rows = [{"run_id": run_id, "asset_id": a, "outcome": o, "error": e, "finished_at": at} for a, o, e, at in items]
        for chunk in _chunks(rows, 1_000):
            connection.execute(_run_item_upsert(engine.dialect.name), list(chunk))
        counted = (
            select(items_table.c.outcome, func.count())
            .where(items_table.c.run_id == run_id)
            .group_by(items_table.c.outcome)
        )
        counts = {str(o): int(n) for o, n in connection.execute(counted).all()}
        succeeded = counts.get("succeeded", 0)
        failed = sum(n for o, n in counts.items() if o != "succeeded")
        run = connection.execute(select(runs).where(runs.c.id == run_id)).one()
        values: dict[str, Any] = {"succeeded": succeeded, "failed": failed}
        if run.finished_at is None and succeeded + failed >= run.total:
            values["outcome"] = "succeeded" if failed == 0 else "failed" if succeeded == 0 else "partial"
            values["finished_at"] = now
        connection.execute(update(MarketRun).where(MarketRun.id == run_id).values(**values))
    finished_at = values.get("finished_at", run.finished_at)
    return RunInfo(
        id=run.id,
        kind=run.kind,
        total=run.total,
        succeeded=succeeded,
        failed=failed,
        outcome=values.get("outcome", run.outcome),
        started_at=as_utc(run.started_at),
        finished_at=as_utc(finished_at) if finished_at else None,
    )


def delete_asset(asset_id: int) -> None:
    """Remove an asset with its bars, indicators and signals."""
    with session_scope() as session:
        for table in (SignalRow, IndicatorRow, PriceBarRow):
            session.execute(delete(table).where(table.asset_id == asset_id))
        session.execute(delete(Asset).where(Asset.id == asset_id))
