"""Portway's storage layer: users, API tokens, usage records and model versions.

Open with ``await Store.open(url)``; everything it returns is a plain frozen
dataclass from :mod:`portway.store.records`.
"""

from portway.store.db import Store
from portway.store.records import (
    ANONYMOUS_USER,
    MAX_END_USER,
    MAX_TEXT,
    MAX_TOKENS,
    USAGE_STATUSES,
    DailyUsage,
    RejectedUsage,
    TokenInfo,
    UsageRecord,
    UsageSummary,
    User,
    printable,
)

__all__ = [
    "ANONYMOUS_USER",
    "MAX_END_USER",
    "MAX_TEXT",
    "MAX_TOKENS",
    "USAGE_STATUSES",
    "DailyUsage",
    "RejectedUsage",
    "Store",
    "TokenInfo",
    "UsageRecord",
    "UsageSummary",
    "User",
    "printable",
]
