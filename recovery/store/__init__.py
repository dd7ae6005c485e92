"""PostgreSQL store (asyncpg, plain SQL): every query of the service lives in this package.

`db` owns the pool, the connection context and the queries several aggregates share; one
module per aggregate holds its SQL; `Store` (in `facade`) is the one object callers hold.
"""

from recovery.store.db import UNAVAILABLE_ERRORS, new_id
from recovery.store.facade import Store
from recovery.store.outbox import OUTBOX_CHANNEL
from recovery.store.records import (
    AnalyticsSummary,
    ApiKeyInfo,
    ApiKeyRecord,
    AuditEntryRecord,
    ConsoleSession,
    DayFigures,
    DeliveryTarget,
    DueDeliveries,
    IngestOutcome,
    IngestResult,
    LinkSummary,
    LinkView,
    MerchantFigures,
    MerchantRecord,
    MetricsSnapshot,
    NotificationRecord,
    OutboxRow,
    OutgoingNotification,
    QueuedDelivery,
    ReceivedPayment,
    RecoveryRecord,
    SealedSecret,
    SimulatorCheckout,
    StoredPSPCredentials,
    TryDone,
    WebhookDeliveryRecord,
    WebhookEndpointRecord,
)
from recovery.store.recoveries import decode_cursor, encode_cursor

__all__ = [
    "OUTBOX_CHANNEL",
    "UNAVAILABLE_ERRORS",
    "AnalyticsSummary",
    "ApiKeyInfo",
    "ApiKeyRecord",
    "AuditEntryRecord",
    "ConsoleSession",
    "DayFigures",
    "DeliveryTarget",
    "DueDeliveries",
    "IngestOutcome",
    "IngestResult",
    "LinkSummary",
    "LinkView",
    "MerchantFigures",
    "MerchantRecord",
    "MetricsSnapshot",
    "NotificationRecord",
    "OutboxRow",
    "OutgoingNotification",
    "QueuedDelivery",
    "ReceivedPayment",
    "RecoveryRecord",
    "SealedSecret",
    "SimulatorCheckout",
    "Store",
    "StoredPSPCredentials",
    "TryDone",
    "WebhookDeliveryRecord",
    "WebhookEndpointRecord",
    "decode_cursor",
    "encode_cursor",
    "new_id",
]
