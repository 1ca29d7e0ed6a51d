"""Fixtures of the market tests."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest
from market_series import random_walk


@pytest.fixture
def walk() -> Callable[..., pd.DataFrame]:
    return random_walk
