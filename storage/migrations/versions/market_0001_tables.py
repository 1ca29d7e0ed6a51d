"""Market tables: assets, price bars, indicator values, signals, runs.

Revision ID: market_0001
Revises:
Depends on: core_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "market_0001"
down_revision = None
branch_labels = ("market",)
depends_on = "core_0001"

INDICATOR_COLUMNS = (
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "sma_short",
    "sma_medium",
    "sma_long",
    "ema_fast",
    "ema_slow",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "atr",
    "stoch_k",
    "stoch_d",
)


def upgrade() -> None:
    op.create_table(
        "market_assets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("symbol", sa.String(32), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("chart_path", sa.Text),
        sa.Column("chart_rendered_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "market_price_bars",
        sa.Column("asset_id", sa.Integer, sa.ForeignKey("market_assets.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("timeframe", sa.String(8), primary_key=True),
        sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("open", sa.Float, nullable=False),
        sa.Column("high", sa.Float, nullable=False),
        sa.Column("low", sa.Float, nullable=False),
        sa.Column("close", sa.Float, nullable=False),
        sa.Column("volume", sa.Float, nullable=False),
    )
    op.create_table(
        "market_indicator_values",
        sa.Column("asset_id", sa.Integer, sa.ForeignKey("market_assets.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("timeframe", sa.String(8), primary_key=True),
        sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
        *[sa.Column(name, sa.Float) for name in INDICATOR_COLUMNS],
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "market_signals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("asset_id", sa.Integer, sa.ForeignKey("market_assets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("timeframe", sa.String(8), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(4), nullable=False),
        sa.Column("strength", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.UniqueConstraint("asset_id", "timeframe", "ts", "rule", "direction", name="uq_market_signals_bar_rule"),
    )
    op.create_index("ix_market_signals_asset_id", "market_signals", ["asset_id"])
    op.create_index("ix_market_signals_active_expires", "market_signals", ["active", "expires_at"])
    op.create_table(
        "market_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("message_id", sa.String(64)),
        sa.Column("params", sa.Text),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("succeeded", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_market_runs_message_id", "market_runs", ["message_id"])
    op.create_table(
        "market_run_items",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("market_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("asset_id", sa.Integer, primary_key=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("market_run_items")
    op.drop_index("ix_market_runs_message_id", table_name="market_runs")
    op.drop_table("market_runs")
    op.drop_index("ix_market_signals_active_expires", table_name="market_signals")
    op.drop_index("ix_market_signals_asset_id", table_name="market_signals")
    op.drop_table("market_signals")
    op.drop_table("market_indicator_values")
    op.drop_table("market_price_bars")
    op.drop_table("market_assets")
