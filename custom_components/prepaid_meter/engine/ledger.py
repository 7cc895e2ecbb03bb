"""The money ledger: one SQLite file per community, an append-only journal of every money movement.

Every movement of money is a journal entry with a unique idempotency key, a signed amount
(credit positive, debit negative) on one sub-account of one household, and the balance of that
sub-account after it. Journal rows are never updated or deleted (SQLite triggers refuse it); the
`balances` table caches each (account, sub-account) balance and is written in the same
transaction as the entry, and `Ledger.check_invariant()` proves the cache equals the sum of the
journal.

Meter cursors (the last reading billed for each meter) and usage totals per (cycle, tier, period)
are written by `Ledger.commit_batch()` in the same transaction as the charges for those readings,
so a crash between two batches loses nothing and bills nothing twice. The same usage is also
summed per (local month of its charge entry, tier, period) in `usage_months`, so that a month's
charges split by tier and period exactly, whatever the billing cycle (`month_usage`).

Whether a meter's supply should be on is a ledger fact too: every change of the wanted relay
state (state, reason, actor, time) is appended to `supply_changes` (append-only), in the same
transaction as the charges that led to it (`commit_batch`) or on its own (`record_supply`);
the newest row of each meter is what is wanted after a restart. Actors are text here (the
engine's `Actor` in its stored form, see engine/actor.py; this module imports nothing of
the package), in `supply_changes.actor` and in a journal entry's `meta`.

Who lives where is a ledger fact as well: linking a person (an opaque user id, a Home
Assistant user's) to a household, and unlinking them, is appended to `user_links`
(append-only, with who did it and when); the newest row of each (household, user) says
whether they are linked. Linking what is linked, or unlinking what is not, writes nothing.

How much each household used on each local day is kept with the charges: `usage_days` holds,
per (household, local day of the tariff's zone), the kWh and the money of that day's charge
entries and the time of its first one, added to by the same transaction that inserts the
charges (a duplicate adds nothing, being no insert), so the sums and the journal cannot
disagree, across a crash either; `check_invariant` proves it. A start-up reads these few rows
(at most about 40 per household for this month and the last week), never the charges, whose
number grows by one per meter and minute. The days are local days of a zone the file learns
from the community (`set_day_zone`, with the first day it will ask for): until it is told
one, nothing is summed; when it is told one first, or another zone, or an earlier first day,
the days from that first day on are summed again from the journal's charges, once.

Online payments keep their facts here too (engine/orders.py decides, this module stores):
`pay_orders` holds each order a resident was asked to pay (household, what it pays, amount,
provider, expiry, who asked) and whether it was paid; `pay_notices` every verified payment or
refund a provider reported, once per event however often it was delivered, with what became
of it; `pay_rejects` counts the messages refused, per provider and reason. A notice and the
order it pays are written in one transaction (`record_notice`); the money itself is posted
to the journal by the caller under the notice's idempotency key.

The safety watch (engine/safety.py) keeps what operators set here: `safety_settings` is an
append-only journal of each household's care and vacant flags and rule overrides and of each
area's master meter and members (the newest row of each holds), with who set it and when;
`safety_acks` every alarm episode acknowledged, by whom and when; `safety_state` one row with
the watch's own state (open episodes, what it learned), replaced as it changes.

Storage rules: decimals are TEXT holding `str(Decimal)` (never REAL), timestamps are integer UNIX
seconds (UTC). The file runs in WAL mode with `synchronous=FULL`, so a call that returns has been
committed to disk. The schema is versioned with `PRAGMA user_version`; `_MIGRATIONS` lists the
steps, each applied in its own transaction, in order.

Signs and limits, per entry kind (amounts are `Decimal`; money has at most 4 decimal places, except
charges and settlements, which carry the full precision of the tariff arithmetic, up to 28):

| kind         | sign  | sub-account | meaning                                                  |
|--------------|-------|-------------|----------------------------------------------------------|
| `top_up`     | > 0   | any         | money the resident paid into a prepaid wallet            |
| `payment`    | > 0   | any         | money the resident paid against a fee account            |
| `charge`     | <= 0  | electricity | energy used, priced by the tariff (from readings)        |
| `fee`        | < 0   | any         | a fee billed (property fee, parking fee, service fee)    |
| `refund`     | < 0   | any         | money handed back to the resident: it leaves the account |
| `adjustment` | != 0  | any         | an operator's correction, either way, with a reason      |
| `settlement` | any   | electricity | written only by `close_cycle`: squares a cycle's charges |
|              |       |             | with its statement total, to the cent                    |

Every error is a `LedgerError` with one sentence; when one is raised nothing has been written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, datetime, time as day_time, timedelta
import decimal
from decimal import Decimal
from enum import StrEnum
import json
from pathlib import Path
import re
import sqlite3
import threading
import time
from types import TracebackType
from typing import Any, Final, Self
from zoneinfo import ZoneInfo

__all__ = [
    "SCHEMA_VERSION",
    "Cursor",
    "Entry",
    "EntryKind",
    "Household",
    "Ledger",
    "LedgerError",
    "Mismatch",
    "MonthUsage",
    "PayNotice",
    "PayOrder",
    "PayReject",
    "PostResult",
    "Posting",
    "ReconImport",
    "ReconItem",
    "SafetyAck",
    "SafetySetting",
    "SubAccount",
    "SupplyChange",
    "UsageDelta",
    "UsageRow",
    "UseDay",
    "UserLink",
]


class LedgerError(Exception):
    """Any refusal or failure of the ledger, with one clear sentence; nothing was written."""


class SubAccount(StrEnum):
    """The sub-accounts every household has."""

    ELECTRICITY = "electricity"
    """The prepaid wallet: its balance decides whether the supply stays on."""
    PROPERTY_FEE = "property_fee"
    PARKING_FEE = "parking_fee"


class EntryKind(StrEnum):
    """What a journal entry records (see the module docstring for the sign of each)."""

    TOP_UP = "top_up"
    CHARGE = "charge"
    FEE = "fee"
    PAYMENT = "payment"
    ADJUSTMENT = "adjustment"
    REFUND = "refund"
    SETTLEMENT = "settlement"


type Meta = Mapping[str, str | int]


@dataclass(frozen=True, slots=True)
class Posting:
    """One money movement to record; `key` makes posting it again harmless."""

    key: str
    account_id: str
    sub: SubAccount
    kind: EntryKind
    amount: Decimal
    ts: int
    meta: Meta = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class PostResult:
    """What a posting became: its entry, and whether it had been posted before."""

    entry_id: int
    key: str
    balance_after: Decimal
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last reading billed for a meter: its sequence number, time and energy register."""

    meter_id: str
    seq: int | None
    ts: int
    energy_kwh: Decimal


@dataclass(frozen=True, slots=True)
class SupplyChange:
    """A decision about a meter's supply: the relay state wanted, why, by whom, when."""

    meter_id: str
    state: str  # "on" or "off"
    reason: str
    actor: str  # the text form of an engine.actor.Actor
    ts: int


@dataclass(frozen=True, slots=True)
class UserLink:
    """A person linked to (or unlinked from) a household, by whom, when."""

    account_id: str
    user_id: str  # opaque: a Home Assistant user id
    linked: bool  # False: unlinked
    actor: str  # the text form of an engine.actor.Actor
    ts: int


@dataclass(frozen=True, slots=True)
class SafetySetting:
    """An operator's setting of the safety watch, by whom, when.

    `subject` is `household` (`key` an account id; `body` its care, vacant and rules
    overrides) or `area` (`key` an area id; `body` its master meter and member meters).
    An empty `body` clears the setting.
    """

    subject: str  # "household" or "area"
    key: str
    body: Mapping[str, Any]
    actor: str  # the text form of an engine.actor.Actor
    ts: int


@dataclass(frozen=True, slots=True)
class SafetyAck:
    """An alarm episode acknowledged: the meter, the kind, when it started, by whom, when."""

    meter_id: str
    account_id: str | None
    kind: str
    started: int
    actor: str  # the text form of an engine.actor.Actor
    ts: int


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """Energy and money to add to a household's usage for one (cycle, tier, period)."""

    account_id: str
    cycle: str
    tier: int
    period: str
    kwh: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class MonthUsage:
    """Energy and money of a household's charges in one local month, for one (tier, period).

    The month (`YYYY-MM`, the tariff's zone) is that of the charge entries the energy is
    billed in, so a month's rows add up to that month's charges whatever the billing cycle.
    """

    account_id: str
    month: str
    tier: int
    period: str
    kwh: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class UsageRow:
    """A household's accumulated usage for one (cycle, tier, period)."""

    cycle: str
    tier: int
    period: str
    kwh: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class UseDay:
    """A household's charges on one local day: their kWh, their money, the first one's time."""

    account_id: str
    day: date
    kwh: Decimal
    cost: Decimal  # what the charges took, positive
    first_ts: int


@dataclass(frozen=True, slots=True)
class Household:
    """A household account."""

    account_id: str
    label: str
    opened_at: int
    supply_protected: bool
    created_at: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal entry, as stored."""

    entry_id: int
    key: str
    ts: int
    account_id: str
    sub: SubAccount
    kind: EntryKind
    amount: Decimal
    balance_after: Decimal
    meta: Meta


@dataclass(frozen=True, slots=True)
class PayOrder:
    """An order a resident was asked to pay, bound to a household and a sub-account."""

    order_id: str
    account_id: str
    purpose: SubAccount  # the sub-account a payment of it credits
    provider: str
    amount: Decimal
    created_at: int
    expires_at: int
    actor: str  # who asked for it (the text form of an engine.actor.Actor)
    state: str = "open"  # open, paid or closed
    transaction_id: str | None = None  # the provider's, once paid
    paid_at: int | None = None
    code: str | None = None  # the payment code (QR) the provider gave for it


@dataclass(frozen=True, slots=True)
class PayNotice:
    """A verified payment or refund a provider reported, and what became of it."""

    notice_key: str  # one per event, however often delivered
    provider: str
    kind: str  # paid or refund
    order_id: str
    transaction_id: str
    amount: Decimal
    received_at: int
    state: str  # due, done, unmatched, waiting, dismissed or resolved
    reason: str = ""  # why unmatched or waiting, or how resolved
    account_id: str | None = None
    purpose: SubAccount | None = None
    credit_key: str | None = None  # the idempotency key its money is posted under
    credit_amount: Decimal | None = None  # what it credits (paid) or takes back (refund)
    body: str = "{}"  # the notice as the provider reported it (JSON, no secret)
    resolved_by: str | None = None
    resolved_at: int | None = None


@dataclass(frozen=True, slots=True)
class PayReject:
    """How often messages of one provider were refused for one reason."""

    provider: str
    key: str
    count: int
    first_ts: int
    last_ts: int


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A place where the cached balances disagree with the journal."""

    account_id: str
    sub: str
    what: str
    expected: Decimal
    found: Decimal

    def __str__(self) -> str:
        """Say what disagrees, in one line."""
        return (
            f"{self.account_id}/{self.sub}: {self.what} is {self.found}, "
            f"the journal says {self.expected}"
        )


# Each migration is a list of statements run in one transaction, after which user_version is
# set to its position (1-based). Append new migrations; never edit one that has shipped.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the first schema
        """CREATE TABLE households (
            account_id TEXT PRIMARY KEY NOT NULL,
            label TEXT NOT NULL,
            opened_at INTEGER NOT NULL,
            supply_protected INTEGER NOT NULL DEFAULT 0 CHECK (supply_protected IN (0, 1)),
            created_at INTEGER NOT NULL
        ) STRICT""",
        """CREATE TABLE journal (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            ts INTEGER NOT NULL,
            account_id TEXT NOT NULL REFERENCES households (account_id),
            sub TEXT NOT NULL
                CHECK (sub IN ('electricity', 'property_fee', 'parking_fee')),
            kind TEXT NOT NULL CHECK (kind IN
                ('top_up', 'charge', 'fee', 'payment', 'adjustment', 'refund', 'settlement')),
            amount TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            balance_after TEXT NOT NULL
        ) STRICT""",
        "CREATE INDEX journal_account ON journal (account_id, sub, id)",
        "CREATE INDEX journal_kind_ts ON journal (kind, ts)",
        """CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
            BEGIN SELECT RAISE(ABORT, 'journal entries are append-only'); END""",
        """CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
            BEGIN SELECT RAISE(ABORT, 'journal entries are append-only'); END""",
        """CREATE TABLE balances (
            account_id TEXT NOT NULL REFERENCES households (account_id),
            sub TEXT NOT NULL,
            balance TEXT NOT NULL,
            PRIMARY KEY (account_id, sub)
        ) STRICT, WITHOUT ROWID""",
        """CREATE TABLE meters (
            meter_id TEXT PRIMARY KEY NOT NULL,
            account_id TEXT REFERENCES households (account_id),
            last_seq INTEGER,
            last_ts INTEGER,
            last_energy TEXT
        ) STRICT""",
        """CREATE TABLE usage (
            account_id TEXT NOT NULL REFERENCES households (account_id),
            cycle TEXT NOT NULL,
            tier INTEGER NOT NULL,
            period TEXT NOT NULL,
            kwh TEXT NOT NULL,
            amount TEXT NOT NULL,
            PRIMARY KEY (account_id, cycle, tier, period)
        ) STRICT, WITHOUT ROWID""",
        """CREATE TABLE statements (
            account_id TEXT NOT NULL REFERENCES households (account_id),
            cycle TEXT NOT NULL,
            total TEXT NOT NULL,
            body TEXT NOT NULL,
            closed_at INTEGER NOT NULL,
            PRIMARY KEY (account_id, cycle)
        ) STRICT, WITHOUT ROWID""",
        """CREATE TRIGGER statements_no_update BEFORE UPDATE ON statements
            BEGIN SELECT RAISE(ABORT, 'closed statements are final'); END""",
        """CREATE TRIGGER statements_no_delete BEFORE DELETE ON statements
            BEGIN SELECT RAISE(ABORT, 'closed statements are final'); END""",
    ),
    (  # 2: the wanted supply state of each meter, as a journal of decisions
        """CREATE TABLE supply_changes (
            id INTEGER PRIMARY KEY,
            meter_id TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('on', 'off')),
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            ts INTEGER NOT NULL
        ) STRICT""",
        "CREATE INDEX supply_changes_meter ON supply_changes (meter_id, id)",
        """CREATE TRIGGER supply_changes_no_update BEFORE UPDATE ON supply_changes
            BEGIN SELECT RAISE(ABORT, 'supply decisions are append-only'); END""",
        """CREATE TRIGGER supply_changes_no_delete BEFORE DELETE ON supply_changes
            BEGIN SELECT RAISE(ABORT, 'supply decisions are append-only'); END""",
    ),
    (  # 3: which people are linked to which household, as a journal of links and unlinks
        """CREATE TABLE user_links (
            id INTEGER PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES households (account_id),
            user_id TEXT NOT NULL,
            linked INTEGER NOT NULL CHECK (linked IN (0, 1)),
            actor TEXT NOT NULL,
            ts INTEGER NOT NULL
        ) STRICT""",
        "CREATE INDEX user_links_pair ON user_links (account_id, user_id, id)",
        """CREATE TRIGGER user_links_no_update BEFORE UPDATE ON user_links
            BEGIN SELECT RAISE(ABORT, 'user links are append-only'); END""",
        """CREATE TRIGGER user_links_no_delete BEFORE DELETE ON user_links
            BEGIN SELECT RAISE(ABORT, 'user links are append-only'); END""",
    ),
    (  # 4: each household's charges summed per local day, kept with the charges
        # Filled by Ledger.set_day_zone, not here: the day is local to the tariff's zone,
        # which the file does not know yet. The first start after the upgrade therefore reads
        # the journal's charges of the days the community shows (this month's and the last
        # week's) once, as every start did before: slow on a large ledger (about 5 s per
        # million charges: some 15 minutes for 5,000 meters at the end of a month); every
        # start after it reads only these sums.
        """CREATE TABLE usage_days (
            account_id TEXT NOT NULL REFERENCES households (account_id),
            day TEXT NOT NULL,
            kwh TEXT NOT NULL,
            cost TEXT NOT NULL,
            first_ts INTEGER NOT NULL,
            PRIMARY KEY (account_id, day)
        ) STRICT, WITHOUT ROWID""",
        "CREATE INDEX usage_days_day ON usage_days (day)",
        # The zone whose local days usage_days holds, and the first day it holds (no row:
        # none yet, nothing summed).
        """CREATE TABLE usage_days_zone (
            only INTEGER PRIMARY KEY CHECK (only = 1),
            zone TEXT NOT NULL,
            since TEXT NOT NULL
        ) STRICT""",
        # Charges of earlier versions carry no kWh: it is the register in their key less the
        # register of the meter's previous such charge, kept here.
        """CREATE TABLE usage_days_registers (
            meter_id TEXT PRIMARY KEY NOT NULL,
            register TEXT NOT NULL
        ) STRICT, WITHOUT ROWID""",
    ),
    (  # 5: online payments: orders, the providers' notices, and the refused messages counted
        # An order is what a resident was asked to pay, bound to a household and to what it
        # pays (the sub-account credited); its state moves open -> paid (or closed) once.
        """CREATE TABLE pay_orders (
            order_id TEXT PRIMARY KEY NOT NULL,
            account_id TEXT NOT NULL REFERENCES households (account_id),
            purpose TEXT NOT NULL
                CHECK (purpose IN ('electricity', 'property_fee', 'parking_fee')),
            provider TEXT NOT NULL,
            amount TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            actor TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('open', 'paid', 'closed')),
            transaction_id TEXT,
            paid_at INTEGER,
            code TEXT
        ) STRICT""",
        "CREATE INDEX pay_orders_account ON pay_orders (account_id, created_at)",
        """CREATE TRIGGER pay_orders_no_delete BEFORE DELETE ON pay_orders
            BEGIN SELECT RAISE(ABORT, 'payment orders are kept'); END""",
        # Every verified payment or refund a provider reported, once per event (notice_key),
        # with what became of it: due (to post), done (posted), unmatched or waiting (kept
        # for the operator or for the provider's next delivery), dismissed or resolved.
        """CREATE TABLE pay_notices (
            id INTEGER PRIMARY KEY,
            notice_key TEXT NOT NULL UNIQUE,
            provider TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('paid', 'refund')),
            order_id TEXT NOT NULL,
            transaction_id TEXT NOT NULL,
            amount TEXT NOT NULL,
            received_at INTEGER NOT NULL,
            state TEXT NOT NULL
                CHECK (state IN ('due', 'done', 'unmatched', 'waiting', 'dismissed', 'resolved')),
            reason TEXT NOT NULL DEFAULT '',
            account_id TEXT,
            purpose TEXT,
            credit_key TEXT,
            credit_amount TEXT,
            body TEXT NOT NULL DEFAULT '{}',
            resolved_by TEXT,
            resolved_at INTEGER
        ) STRICT""",
        "CREATE INDEX pay_notices_state ON pay_notices (state, id)",
        "CREATE INDEX pay_notices_order ON pay_notices (order_id, id)",
        """CREATE TRIGGER pay_notices_no_delete BEFORE DELETE ON pay_notices
            BEGIN SELECT RAISE(ABORT, 'payment notices are kept'); END""",
        # Messages refused (bad signature, stale timestamp, ...), counted per provider and key.
        """CREATE TABLE pay_rejects (
            provider TEXT NOT NULL,
            key TEXT NOT NULL,
            count INTEGER NOT NULL,
            first_ts INTEGER NOT NULL,
            last_ts INTEGER NOT NULL,
            PRIMARY KEY (provider, key)
        ) STRICT, WITHOUT ROWID""",
    ),
    (  # 6: the safety watch: operators' settings and acknowledgements, and its learned state
        # Households' care and vacant flags and rule overrides, and the areas of master
        # meters: a journal of settings (the newest row of each subject and key holds).
        """CREATE TABLE safety_settings (
            id INTEGER PRIMARY KEY,
            subject TEXT NOT NULL CHECK (subject IN ('household', 'area')),
            key TEXT NOT NULL,
            body TEXT NOT NULL,
            actor TEXT NOT NULL,
            ts INTEGER NOT NULL
        ) STRICT""",
        "CREATE INDEX safety_settings_key ON safety_settings (subject, key, id)",
        """CREATE TRIGGER safety_settings_no_update BEFORE UPDATE ON safety_settings
            BEGIN SELECT RAISE(ABORT, 'safety settings are append-only'); END""",
        """CREATE TRIGGER safety_settings_no_delete BEFORE DELETE ON safety_settings
            BEGIN SELECT RAISE(ABORT, 'safety settings are append-only'); END""",
        # Alarm episodes an operator acknowledged, with who and when.
        """CREATE TABLE safety_acks (
            id INTEGER PRIMARY KEY,
            meter_id TEXT NOT NULL,
            account_id TEXT,
            kind TEXT NOT NULL,
            started INTEGER NOT NULL,
            actor TEXT NOT NULL,
            ts INTEGER NOT NULL
        ) STRICT""",
        """CREATE TRIGGER safety_acks_no_update BEFORE UPDATE ON safety_acks
            BEGIN SELECT RAISE(ABORT, 'acknowledgements are append-only'); END""",
        """CREATE TRIGGER safety_acks_no_delete BEFORE DELETE ON safety_acks
            BEGIN SELECT RAISE(ABORT, 'acknowledgements are append-only'); END""",
        # The watch's open episodes and what it learned (SafetyWatch.export_state), one row.
        """CREATE TABLE safety_state (
            only INTEGER PRIMARY KEY CHECK (only = 1),
            body TEXT NOT NULL,
            ts INTEGER NOT NULL
        ) STRICT""",
    ),
    (  # 7: usage per local month, kept with the charges (for the operators' monthly report)
        # Written by commit_batch in the same transaction as the charges, keyed by the month of
        # the charge entry the energy is billed in, so a month's rows sum to its charges even
        # when the billing cycle is a year. Months before this migration have no rows.
        """CREATE TABLE usage_months (
            account_id TEXT NOT NULL REFERENCES households (account_id),
            month TEXT NOT NULL,
            tier INTEGER NOT NULL,
            period TEXT NOT NULL,
            kwh TEXT NOT NULL,
            amount TEXT NOT NULL,
            PRIMARY KEY (account_id, month, tier, period)
        ) STRICT, WITHOUT ROWID""",
        "CREATE INDEX usage_months_month ON usage_months (month)",
    ),
    (  # 8: reconciliation: the providers' daily statements imported, and what disagreed
        # Each import of a provider's statement file: its day, the file's digest, what it
        # found (JSON counts), who imported it and when. Kept as imported.
        """CREATE TABLE recon_imports (
            id INTEGER PRIMARY KEY,
            provider TEXT NOT NULL,
            day TEXT NOT NULL,
            digest TEXT NOT NULL,
            name TEXT NOT NULL,
            summary TEXT NOT NULL DEFAULT '{}',
            actor TEXT NOT NULL,
            ts INTEGER NOT NULL
        ) STRICT""",
        """CREATE TRIGGER recon_imports_no_update BEFORE UPDATE ON recon_imports
            BEGIN SELECT RAISE(ABORT, 'statement imports are kept as imported'); END""",
        """CREATE TRIGGER recon_imports_no_delete BEFORE DELETE ON recon_imports
            BEGIN SELECT RAISE(ABORT, 'statement imports are kept as imported'); END""",
        # Each discrepancy once (item_key: provider, kind and the provider's ids): open until
        # an operator resolves it (credit, refund or dismiss: who, when, what was posted under
        # which journal key) or a later import of its day finds it matched.
        """CREATE TABLE recon_items (
            id INTEGER PRIMARY KEY,
            item_key TEXT NOT NULL UNIQUE,
            provider TEXT NOT NULL,
            day TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('paid', 'refund')),
            class TEXT NOT NULL CHECK (
                class IN ('missing_in_ledger', 'missing_at_provider', 'amount_mismatch')
            ),
            transaction_id TEXT NOT NULL,
            order_id TEXT NOT NULL,
            refund_id TEXT NOT NULL DEFAULT '',
            provider_amount TEXT,
            ledger_amount TEXT,
            account_id TEXT,
            purpose TEXT,
            detail TEXT NOT NULL DEFAULT '{}',
            import_id INTEGER NOT NULL REFERENCES recon_imports (id),
            found_at INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('open', 'resolved')),
            action TEXT CHECK (action IN ('credit', 'refund', 'dismiss', 'matched')),
            amount TEXT,
            entry_key TEXT,
            resolved_by TEXT,
            resolved_at INTEGER
        ) STRICT""",
        "CREATE INDEX recon_items_day ON recon_items (provider, day, state)",
        "CREATE INDEX recon_items_state ON recon_items (state, id)",
        """CREATE TRIGGER recon_items_no_delete BEFORE DELETE ON recon_items
            BEGIN SELECT RAISE(ABORT, 'reconciliation items are kept'); END""",
        """CREATE TRIGGER recon_items_resolved_stay BEFORE UPDATE ON recon_items
            WHEN OLD.state = 'resolved'
            BEGIN SELECT RAISE(ABORT, 'a resolved reconciliation item stays resolved'); END""",
    ),
)

SCHEMA_VERSION: Final = len(_MIGRATIONS)
"""The schema version this module writes (files from a newer version are refused)."""

# Arithmetic on money never rounds: any sum that would need rounding raises instead.
_CTX: Final = decimal.Context(
    prec=80,
    rounding=decimal.ROUND_HALF_EVEN,
    Emax=999,
    Emin=-999,
    traps=[
        decimal.InvalidOperation,
        decimal.DivisionByZero,
        decimal.Overflow,
        decimal.Inexact,
        decimal.Underflow,
    ],
)
_LIMIT: Final = Decimal("1e12")
_MONEY_PLACES: Final = 4
_FINE_PLACES: Final = 28
_ZERO: Final = Decimal(0)
_SETTLE_PREFIX: Final = "settle:"
_MONTH_TEXT: Final = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
_MAX_TEXT: Final = 200

# (sign rule, fixed sub-account or None, most decimal places)
_RULES: Final[dict[EntryKind, tuple[str, SubAccount | None, int]]] = {
    EntryKind.TOP_UP: ("> 0", None, _MONEY_PLACES),
    EntryKind.PAYMENT: ("> 0", None, _MONEY_PLACES),
    EntryKind.CHARGE: ("<= 0", SubAccount.ELECTRICITY, _FINE_PLACES),
    EntryKind.FEE: ("< 0", None, _MONEY_PLACES),
    EntryKind.REFUND: ("< 0", None, _MONEY_PLACES),
    EntryKind.ADJUSTMENT: ("!= 0", None, _MONEY_PLACES),
    EntryKind.SETTLEMENT: ("any", SubAccount.ELECTRICITY, _FINE_PLACES),
}

_SQL_INSERT_ENTRY: Final = (
    "INSERT INTO journal (id, key, ts, account_id, sub, kind, amount, meta, balance_after) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_UPSERT_BALANCE: Final = (
    "INSERT INTO balances (account_id, sub, balance) VALUES (?, ?, ?) "
    "ON CONFLICT (account_id, sub) DO UPDATE SET balance = excluded.balance"
)
_SQL_UPSERT_CURSOR: Final = (
    "INSERT INTO meters (meter_id, last_seq, last_ts, last_energy) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (meter_id) DO UPDATE SET last_seq = excluded.last_seq, "
    "last_ts = excluded.last_ts, last_energy = excluded.last_energy"
)
_SQL_UPSERT_USAGE: Final = (
    "INSERT INTO usage (account_id, cycle, tier, period, kwh, amount) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (account_id, cycle, tier, period) DO UPDATE SET "
    "kwh = excluded.kwh, amount = excluded.amount"
)
_SQL_UPSERT_MONTH: Final = (
    "INSERT INTO usage_months (account_id, month, tier, period, kwh, amount) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, month, tier, period) DO UPDATE SET "
    "kwh = excluded.kwh, amount = excluded.amount"
)
_SQL_UPSERT_DAY: Final = (
    "INSERT INTO usage_days (account_id, day, kwh, cost, first_ts) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (account_id, day) DO UPDATE SET "
    "kwh = excluded.kwh, cost = excluded.cost, first_ts = excluded.first_ts"
)
_SQL_UPSERT_REGISTER: Final = (
    "INSERT INTO usage_days_registers (meter_id, register) VALUES (?, ?) "
    "ON CONFLICT (meter_id) DO UPDATE SET register = excluded.register"
)
#: Day sums held in memory while the journal is read whole, before they are written.
_DAYS_FLUSH: Final = 200_000
_SQL_ENTRY_COLUMNS: Final = "id, key, ts, account_id, sub, kind, amount, balance_after, meta"
_SQL_ORDER_COLUMNS: Final = (
    "order_id, account_id, purpose, provider, amount, created_at, expires_at, actor, state, "
    "transaction_id, paid_at, code"
)
_SQL_NOTICE_COLUMNS: Final = (
    "notice_key, provider, kind, order_id, transaction_id, amount, received_at, state, reason, "
    "account_id, purpose, credit_key, credit_amount, body, resolved_by, resolved_at"
)
_NOTICE_STATES: Final = frozenset({"due", "done", "unmatched", "waiting", "dismissed", "resolved"})


def _places(value: Decimal) -> int:
    """Return how many decimal places `value` really has (trailing zeros do not count)."""
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or exponent >= 0 or not any(digits):
        return 0
    places = -exponent
    for digit in reversed(digits):
        if digit != 0 or places == 0:
            break
        places -= 1
    return places


def _clean(value: Decimal) -> Decimal:
    """Return `value` without a negative zero, so stored text never reads '-0'."""
    if not value and value.is_signed():
        return value.copy_abs()
    return value


def _add(left: Decimal, right: Decimal) -> Decimal:
    """Add exactly (raises rather than round)."""
    return _clean(_CTX.add(left, right))


def _number(value: object, what: str, places: int) -> Decimal:
    """Check that `value` is a finite Decimal in range with at most `places` decimal places."""
    if not isinstance(value, Decimal):
        raise LedgerError(f"{what} must be a Decimal, not {type(value).__name__}.")
    if not value.is_finite():
        raise LedgerError(f"{what} must be a finite number, not {value}.")
    if value.copy_abs() >= _LIMIT:
        raise LedgerError(f"{what} {value} is out of range (at most {_LIMIT:,f} either way).")
    if _places(value) > places:
        raise LedgerError(f"{what} {value} has more than {places} decimal places.")
    return value


def _text(value: object, what: str) -> str:
    """Check that `value` is a non-empty string of sensible length."""
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise LedgerError(f"{what} must be a non-empty string of at most {_MAX_TEXT} characters.")
    return value


def _integer(value: object, what: str) -> int:
    """Check that `value` is a plain int (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise LedgerError(f"{what} must be an integer, not {type(value).__name__}.")
    return value


def _timestamp(value: object, what: str) -> int:
    """Check that `value` is a UNIX time in whole seconds."""
    seconds = _integer(value, what)
    if seconds < 0:
        raise LedgerError(f"{what} must be UNIX seconds, not {seconds}.")
    return seconds


def _meta_text(meta: object, key: str) -> str:
    """Serialise a posting's meta to compact JSON, checking its types."""
    if not isinstance(meta, Mapping):
        raise LedgerError(f"The meta of posting {key!r} must be a mapping.")
    for name, value in meta.items():
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, str | int):
            raise LedgerError(
                f"The meta of posting {key!r} may hold only strings and integers under "
                f"string names ({name!r} does not)."
            )
    return json.dumps(dict(meta), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _enum[E: StrEnum](cls: type[E], value: object, what: str) -> E:
    """Return `value` as member of `cls`, or refuse it."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str) and value in cls._value2member_map_:
        return cls(value)
    allowed = ", ".join(member.value for member in cls)
    raise LedgerError(f"{what} {value!r} is not one of {allowed}.")


@dataclass(slots=True)
class _Checked:
    """A posting after validation, ready to write."""

    key: str
    account_id: str
    sub: SubAccount
    kind: EntryKind
    amount: Decimal
    ts: int
    meta: str
    kwh: Decimal | None = None  # a charge's energy, from its meta (None: not given)

    def same_as(self, account_id: str, sub: str, kind: str, amount: Decimal) -> bool:
        """Tell whether a stored entry carries this posting's content."""
        return (
            self.account_id == account_id
            and self.sub == sub
            and self.kind == kind
            and self.amount == amount
        )


def _check_posting(posting: Posting, *, settlement: bool = False) -> _Checked:
    """Validate one posting against the rules of its kind."""
    if not isinstance(posting, Posting):
        raise LedgerError(f"Expected a Posting, not {type(posting).__name__}.")
    key = _text(posting.key, "A posting key")
    kind = _enum(EntryKind, posting.kind, f"The kind of posting {key!r}")
    sub = _enum(SubAccount, posting.sub, f"The sub-account of posting {key!r}")
    if not settlement and (kind is EntryKind.SETTLEMENT or key.startswith(_SETTLE_PREFIX)):
        raise LedgerError(
            f"Posting {key!r}: settlement entries (and keys starting with {_SETTLE_PREFIX!r}) "
            "are written only by close_cycle."
        )
    sign, fixed_sub, places = _RULES[kind]
    amount = _number(posting.amount, f"The amount of posting {key!r}", places)
    if fixed_sub is not None and sub is not fixed_sub:
        raise LedgerError(f"Posting {key!r}: a {kind} belongs on {fixed_sub}, not on {sub}.")
    ok = {
        "> 0": amount > 0,
        "< 0": amount < 0,
        "<= 0": amount <= 0,
        "!= 0": amount != 0,
        "any": True,
    }[sign]
    if not ok:
        raise LedgerError(f"Posting {key!r}: the amount of a {kind} must be {sign}, not {amount}.")
    return _Checked(
        key=key,
        account_id=_text(posting.account_id, f"The account of posting {key!r}"),
        sub=sub,
        kind=kind,
        amount=_clean(amount),
        ts=_timestamp(posting.ts, f"The time of posting {key!r}"),
        meta=_meta_text(posting.meta, key),
        kwh=_charge_kwh(posting.meta, key) if kind is EntryKind.CHARGE else None,
    )


def _charge_kwh(meta: Meta, key: str) -> Decimal | None:
    """Return the `kwh` of a charge's meta (None if absent); refuse one that is no number."""
    text = meta.get("kwh")
    if text is None:
        return None
    kwh = _decimal_or_none(str(text))
    if kwh is None or kwh.copy_abs() >= _LIMIT:
        raise LedgerError(f"The kwh of charge {key!r} must be a number, not {text!r}.")
    return kwh


def _decimal_or_none(text: str) -> Decimal | None:
    """Return `text` as a finite Decimal, or None if it is not one."""
    try:
        value = Decimal(text)
    except ArithmeticError:
        return None
    return value if value.is_finite() else None


def _key_register(key: str) -> tuple[str, Decimal | None]:
    """Return the meter and register a charge key `charge:<meter>:<ts>:<register>` names.

    Read as start-up read them before the day sums (so entries of every earlier version
    count alike): the register is None when the key's last part is not a number.
    """
    meter_and_ts, _, register_text = key.partition(":")[2].rpartition(":")
    return meter_and_ts.rpartition(":")[0], _decimal_or_none(register_text)


class _DaySums:
    """Charge entries summed per (account, local day): kWh, cost and the first entry's time.

    A charge's kWh is its meta's `kwh`; for a charge of an earlier version, without it, the
    register in its key less the register of the meter's previous such charge (`registers`,
    updated here; 0 for the first, or when the register went down).
    """

    def __init__(self, zone: ZoneInfo, registers: dict[str, Decimal], since: str) -> None:
        self._zone = zone
        self._since = since  # the first day kept (ISO): charges of earlier days are left out
        self._span: tuple[int, int, str] = (0, 0, "")
        self.sums: dict[tuple[str, str], tuple[Decimal, Decimal, int]] = {}
        self.registers = registers
        self.moved: set[str] = set()

    def day(self, ts: int) -> str:
        """Return the local day of a moment as ISO text (the last day is remembered)."""
        start, end, day = self._span
        if start <= ts < end:
            return day
        local = datetime.fromtimestamp(ts, self._zone).date()
        self._span = (
            _midnight(local, self._zone),
            _midnight(local + timedelta(days=1), self._zone),
            local.isoformat(),
        )
        return self._span[2]

    def add(self, ts: int, account_id: str, key: str, amount: Decimal, kwh: Decimal | None) -> None:
        """Add one charge entry (its amount as journaled: zero or below)."""
        day = self.day(ts)
        if day < self._since:
            return
        if kwh is None:
            meter_id, register = _key_register(key)
            kwh = _ZERO
            if register is not None:
                before = self.registers.get(meter_id)
                if before is not None and register >= before:
                    kwh = _CTX.subtract(register, before)
                self.registers[meter_id] = register
                self.moved.add(meter_id)
        slot = (account_id, day)
        old = self.sums.get(slot)
        if old is None:
            self.sums[slot] = (_clean(kwh), _clean(-amount), ts)
        else:
            self.sums[slot] = (_add(old[0], kwh), _add(old[1], -amount), min(old[2], ts))


def _midnight(day: date, zone: ZoneInfo) -> int:
    """Return when a local day starts (as the community reckons it)."""
    return int(datetime.combine(day, day_time.min, zone).timestamp())


def _check_cursor(cursor: Cursor) -> tuple[str, int | None, int, str]:
    """Validate a cursor and return its row values."""
    if not isinstance(cursor, Cursor):
        raise LedgerError(f"Expected a Cursor, not {type(cursor).__name__}.")
    meter_id = _text(cursor.meter_id, "A meter id")
    seq = None if cursor.seq is None else _integer(cursor.seq, f"The seq of meter {meter_id!r}")
    ts = _timestamp(cursor.ts, f"The cursor time of meter {meter_id!r}")
    energy = _number(cursor.energy_kwh, f"The energy of meter {meter_id!r}", _FINE_PLACES)
    return meter_id, seq, ts, str(energy)


_SQL_INSERT_SUPPLY: Final = (
    "INSERT INTO supply_changes (meter_id, state, reason, actor, ts) VALUES (?, ?, ?, ?, ?)"
)


def _check_supply(change: SupplyChange) -> tuple[str, str, str, str, int]:
    if change.state not in ("on", "off"):
        raise LedgerError(f"supply state must be on or off, got {change.state!r}")
    return (
        _text(change.meter_id, "meter_id"),
        change.state,
        _text(change.reason, "reason"),
        _text(change.actor, "actor"),
        _timestamp(change.ts, "ts"),
    )


def _check_usage(delta: UsageDelta) -> UsageDelta:
    """Validate a usage delta."""
    if not isinstance(delta, UsageDelta):
        raise LedgerError(f"Expected a UsageDelta, not {type(delta).__name__}.")
    account_id = _text(delta.account_id, "The account of a usage delta")
    what = f"The usage of {account_id!r} in cycle {delta.cycle!r}"
    _text(delta.cycle, f"The cycle of a usage delta for {account_id!r}")
    _integer(delta.tier, f"The tier of {what}")
    _text(delta.period, f"The period of {what}")
    _number(delta.kwh, f"The kWh of {what}", _FINE_PLACES)
    _number(delta.amount, f"The amount of {what}", _FINE_PLACES)
    return delta


def _check_month(row: MonthUsage) -> MonthUsage:
    if not isinstance(row, MonthUsage):
        raise LedgerError(f"Expected a MonthUsage, not {type(row).__name__}.")
    _text(row.account_id, "The account of a month's usage")
    if not _MONTH_TEXT.fullmatch(str(row.month)):
        raise LedgerError(f"The month of usage of {row.account_id!r} must be YYYY-MM.")
    _integer(row.tier, "A usage tier")
    _text(row.period, "A usage period")
    _number(row.kwh, "A month's usage kWh", _FINE_PLACES)
    _number(row.amount, "A month's usage amount", _FINE_PLACES)
    return row


def _entry(row: Sequence[Any]) -> Entry:
    """Build an Entry from a row selected with _SQL_ENTRY_COLUMNS."""
    return Entry(
        entry_id=row[0],
        key=row[1],
        ts=row[2],
        account_id=row[3],
        sub=SubAccount(row[4]),
        kind=EntryKind(row[5]),
        amount=Decimal(row[6]),
        balance_after=Decimal(row[7]),
        meta=json.loads(row[8]),
    )


def _household(row: Sequence[Any]) -> Household:
    """Build a Household from a row of the households table."""
    return Household(
        account_id=row[0],
        label=row[1],
        opened_at=row[2],
        supply_protected=bool(row[3]),
        created_at=row[4],
    )


def _pay_order(row: Sequence[Any]) -> PayOrder:
    """Build a PayOrder from a row selected with _SQL_ORDER_COLUMNS."""
    return PayOrder(
        order_id=row[0],
        account_id=row[1],
        purpose=SubAccount(row[2]),
        provider=row[3],
        amount=Decimal(row[4]),
        created_at=row[5],
        expires_at=row[6],
        actor=row[7],
        state=row[8],
        transaction_id=row[9],
        paid_at=row[10],
        code=row[11],
    )


def _pay_notice(row: Sequence[Any]) -> PayNotice:
    """Build a PayNotice from a row selected with _SQL_NOTICE_COLUMNS."""
    return PayNotice(
        notice_key=row[0],
        provider=row[1],
        kind=row[2],
        order_id=row[3],
        transaction_id=row[4],
        amount=Decimal(row[5]),
        received_at=row[6],
        state=row[7],
        reason=row[8],
        account_id=row[9],
        purpose=None if row[10] is None else SubAccount(row[10]),
        credit_key=row[11],
        credit_amount=None if row[12] is None else Decimal(row[12]),
        body=row[13],
        resolved_by=row[14],
        resolved_at=row[15],
    )


def _check_notice(notice: PayNotice) -> tuple[Any, ...]:
    """Validate a payment notice and return its row values (in _SQL_NOTICE_COLUMNS order)."""
    if not isinstance(notice, PayNotice):
        raise LedgerError(f"Expected a PayNotice, not {type(notice).__name__}.")
    key = _text(notice.notice_key, "A notice key")
    if notice.kind not in ("paid", "refund"):
        raise LedgerError(f"Notice {key!r}: kind must be paid or refund, not {notice.kind!r}.")
    if notice.state not in _NOTICE_STATES:
        raise LedgerError(f"Notice {key!r}: unknown state {notice.state!r}.")
    amount = _number(notice.amount, f"The amount of notice {key!r}", _MONEY_PLACES)
    credit = notice.credit_amount
    if credit is not None:
        _number(credit, f"The credit of notice {key!r}", _MONEY_PLACES)
    purpose = notice.purpose
    if purpose is not None:
        purpose = _enum(SubAccount, purpose, f"The purpose of notice {key!r}")
    try:
        json.loads(notice.body)
    except (TypeError, ValueError) as err:
        raise LedgerError(f"The body of notice {key!r} is not JSON: {err}.") from err
    return (
        key,
        _text(notice.provider, f"The provider of notice {key!r}"),
        notice.kind,
        _text(notice.order_id, f"The order of notice {key!r}"),
        _text(notice.transaction_id, f"The transaction of notice {key!r}"),
        str(amount),
        _timestamp(notice.received_at, f"The time of notice {key!r}"),
        notice.state,
        str(notice.reason),
        notice.account_id,
        None if purpose is None else purpose.value,
        notice.credit_key,
        None if credit is None else str(credit),
        notice.body,
        notice.resolved_by,
        notice.resolved_at,
    )


def _as_json_list(values: Iterable[str]) -> str:
    """Encode strings as a JSON array, for `IN (SELECT value FROM json_each(?))`."""
    return json.dumps(list(values), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ReconImport:
    """One import of a provider's daily statement (engine/reconcile.py decides, this stores)."""

    provider: str
    day: str  # the statement's date, YYYY-MM-DD
    digest: str  # sha256 of the file
    name: str  # the file's name, as given
    summary: str  # what it found, JSON
    actor: str
    ts: int


@dataclass(frozen=True, slots=True)
class ReconItem:
    """A discrepancy between a provider's statement and the ledger, and its resolution."""

    item_key: str  # provider:paid:<transaction id> or provider:refund:<transaction>:<refund>
    provider: str
    day: str
    kind: str  # paid or refund
    cls: str  # missing_in_ledger, missing_at_provider or amount_mismatch
    transaction_id: str
    order_id: str
    refund_id: str = ""
    provider_amount: Decimal | None = None  # what the statement says (None: not in it)
    ledger_amount: Decimal | None = None  # what we credited or reversed (None: nothing)
    account_id: str | None = None
    purpose: str | None = None
    detail: str = "{}"  # the statement's row, JSON
    item_id: int = 0
    import_id: int = 0
    found_at: int = 0
    state: str = "open"  # open or resolved
    action: str | None = None  # credit, refund, dismiss or matched
    amount: Decimal | None = None  # what the resolution posted (signed)
    entry_key: str | None = None  # the journal key it was posted under
    resolved_by: str | None = None
    resolved_at: int | None = None


_RECON_CLASSES: Final = frozenset({"missing_in_ledger", "missing_at_provider", "amount_mismatch"})
_RECON_ACTIONS: Final = frozenset({"credit", "refund", "dismiss", "matched"})
_SQL_RECON_COLUMNS: Final = (
    "item_key, provider, day, kind, class, transaction_id, order_id, refund_id, "
    "provider_amount, ledger_amount, account_id, purpose, detail, id, import_id, found_at, "
    "state, action, amount, entry_key, resolved_by, resolved_at"
)


def _recon_item(row: Sequence[Any]) -> ReconItem:
    """Build a ReconItem from a row selected with _SQL_RECON_COLUMNS."""
    return ReconItem(
        item_key=row[0],
        provider=row[1],
        day=row[2],
        kind=row[3],
        cls=row[4],
        transaction_id=row[5],
        order_id=row[6],
        refund_id=row[7],
        provider_amount=None if row[8] is None else Decimal(row[8]),
        ledger_amount=None if row[9] is None else Decimal(row[9]),
        account_id=row[10],
        purpose=row[11],
        detail=row[12],
        item_id=row[13],
        import_id=row[14],
        found_at=row[15],
        state=row[16],
        action=row[17],
        amount=None if row[18] is None else Decimal(row[18]),
        entry_key=row[19],
        resolved_by=row[20],
        resolved_at=row[21],
    )


def _check_recon_item(item: ReconItem) -> tuple[Any, ...]:
    """Validate a new discrepancy and return its row values (the first 13 columns)."""
    if not isinstance(item, ReconItem):
        raise LedgerError(f"Expected a ReconItem, not {type(item).__name__}.")
    key = _text(item.item_key, "A reconciliation item key")
    if item.kind not in ("paid", "refund"):
        raise LedgerError(f"Item {key!r}: kind must be paid or refund, not {item.kind!r}.")
    if item.cls not in _RECON_CLASSES:
        raise LedgerError(f"Item {key!r}: unknown class {item.cls!r}.")
    amounts = []
    for value, what in ((item.provider_amount, "provider"), (item.ledger_amount, "ledger")):
        if value is not None:
            _number(value, f"The {what} amount of item {key!r}", _MONEY_PLACES)
        amounts.append(None if value is None else str(value))
    try:
        json.loads(item.detail)
    except (TypeError, ValueError) as err:
        raise LedgerError(f"The detail of item {key!r} is not JSON: {err}.") from err
    return (
        key,
        _text(item.provider, f"The provider of item {key!r}"),
        _text(item.day, f"The day of item {key!r}"),
        item.kind,
        item.cls,
        _text(item.transaction_id, f"The transaction of item {key!r}"),
        str(item.order_id)[:_MAX_TEXT],
        str(item.refund_id)[:_MAX_TEXT],
        *amounts,
        item.account_id,
        item.purpose,
        item.detail,
    )


class Ledger:
    """The journal, balances, meter cursors, usage and statements of one community.

    Open one per community file; calls may come from any thread (one at a time is enforced by a
    lock). Every write is one transaction that has been committed to disk when the call returns.
    """

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the ledger file at `path` and bring its schema up to date."""
        self._path = Path(path)
        self._lock = threading.Lock()
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=10.0,
                autocommit=True,
                check_same_thread=False,
                cached_statements=64,
            )
        except sqlite3.Error as err:
            raise LedgerError(f"Cannot open the ledger file {self._path}: {err}.") from err
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LedgerError(
                    f"The ledger file {self._path} cannot use write-ahead logging "
                    f"(journal mode {mode})."
                )
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate(conn)
        except sqlite3.Error as err:
            conn.close()
            raise LedgerError(f"Cannot open the ledger file {self._path}: {err}.") from err
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn
        self._zone: ZoneInfo | None = None  # the last zone read from usage_days_zone

    # ------------------------------------------------------------------ lifecycle

    @property
    def path(self) -> Path:
        """Return the ledger file's path."""
        return self._path

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        """Return the ledger itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the ledger."""
        self.close()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Apply the migrations this file lacks, each in its own transaction, in order."""
        migrations = _MIGRATIONS
        newest = len(migrations)
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > newest:
            raise LedgerError(
                f"The ledger file {self._path} has schema version {version}, newer than the "
                f"{newest} this version of prepaid_meter understands; upgrade prepaid_meter."
            )
        for number in range(version + 1, newest + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if current < number:  # another process may have just done it
                    for statement in migrations[number - 1]:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {number:d}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _connection(self) -> sqlite3.Connection:
        """Return the open connection (the caller holds the lock)."""
        if self._conn is None:
            raise LedgerError(f"The ledger {self._path} is closed.")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the body in one write transaction, committed on success, rolled back on error.

        The caller holds the lock. Database and arithmetic failures become LedgerError.
        """
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise LedgerError(f"The ledger {self._path} is busy or unwritable: {err}.") from err
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as err:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(err, sqlite3.Error):
                raise LedgerError(f"The ledger could not save this change: {err}.") from err
            if isinstance(err, decimal.DecimalException):
                raise LedgerError(f"A sum in the ledger would lose precision: {err!r}.") from err
            raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one query under the lock and return all its rows."""
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as err:
                raise LedgerError(f"The ledger could not be read: {err}.") from err

    # ------------------------------------------------------------------ households and meters

    def ensure_household(
        self,
        account_id: str,
        label: str,
        opened_at: int,
        supply_protected: bool = False,
    ) -> Household:
        """Create the household if it is new, with a zero balance on every sub-account.

        For a household that exists only the label is updated: `opened_at` (which billing
        depends on) and `supply_protected` (see `set_supply_protected`) are kept as stored.
        Returns the household as stored.
        """
        _text(account_id, "An account id")
        if not isinstance(label, str):
            raise LedgerError(f"The label of account {account_id!r} must be a string.")
        _timestamp(opened_at, f"The opening time of account {account_id!r}")
        with self._lock, self._transaction() as conn:
            conn.execute(
                "INSERT INTO households (account_id, label, opened_at, supply_protected, "
                "created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (account_id) DO UPDATE SET label = excluded.label",
                (account_id, label, opened_at, int(bool(supply_protected)), int(time.time())),
            )
            conn.executemany(
                "INSERT INTO balances (account_id, sub, balance) VALUES (?, ?, '0') "
                "ON CONFLICT (account_id, sub) DO NOTHING",
                [(account_id, sub.value) for sub in SubAccount],
            )
            row = conn.execute(
                "SELECT * FROM households WHERE account_id = ?", (account_id,)
            ).fetchone()
        return _household(row)

    def set_supply_protected(self, account_id: str, protected: bool) -> None:
        """Mark a household whose supply must never be cut (or clear the mark)."""
        with self._lock, self._transaction() as conn:
            changed = conn.execute(
                "UPDATE households SET supply_protected = ? WHERE account_id = ?",
                (int(bool(protected)), account_id),
            ).rowcount
            if changed != 1:
                raise LedgerError(f"Unknown account {account_id!r}.")

    def households(self) -> list[Household]:
        """Return every household, ordered by account id."""
        return [
            _household(row) for row in self._read("SELECT * FROM households ORDER BY account_id")
        ]

    def household(self, account_id: str) -> Household | None:
        """Return one household, or None if there is no such account."""
        rows = self._read("SELECT * FROM households WHERE account_id = ?", (account_id,))
        return _household(rows[0]) if rows else None

    def assign_meter(self, meter_id: str, account_id: str | None) -> None:
        """Bind a meter to a household's account, or unbind it with None (its cursor stays)."""
        _text(meter_id, "A meter id")
        with self._lock, self._transaction() as conn:
            if (
                account_id is not None
                and not conn.execute(
                    "SELECT 1 FROM households WHERE account_id = ?", (account_id,)
                ).fetchone()
            ):
                raise LedgerError(
                    f"Cannot assign meter {meter_id!r} to unknown account {account_id!r}."
                )
            conn.execute(
                "INSERT INTO meters (meter_id, account_id) VALUES (?, ?) "
                "ON CONFLICT (meter_id) DO UPDATE SET account_id = excluded.account_id",
                (meter_id, account_id),
            )

    def meter_account(self, meter_id: str) -> str | None:
        """Return the account a meter is assigned to, or None."""
        rows = self._read("SELECT account_id FROM meters WHERE meter_id = ?", (meter_id,))
        return rows[0][0] if rows else None

    def meters(self) -> dict[str, str | None]:
        """Return every known meter and the account it is assigned to (None if unassigned)."""
        return dict(self._read("SELECT meter_id, account_id FROM meters ORDER BY meter_id"))

    # ------------------------------------------------------------------ writing money

    def post(self, posting: Posting) -> PostResult:
        """Record one money movement, committed to disk before this returns.

        Posting a key that exists returns the first result with `duplicate=True` and writes
        nothing; the same key with a different account, sub-account, kind or amount is refused.
        Time and meta are not compared (a retry may carry a later time).
        """
        checked = _check_posting(posting)
        with self._lock, self._transaction() as conn:
            return self._apply(conn, [checked])[0]

    def post_many(self, postings: Sequence[Posting]) -> list[PostResult]:
        """Record several money movements in one transaction: all of them, or none.

        Each key behaves as in `post` (a key posted before is a duplicate, written once).
        """
        checked = [_check_posting(posting) for posting in postings]
        with self._lock, self._transaction() as conn:
            return self._apply(conn, checked)

    def commit_batch(
        self,
        postings: Sequence[Posting],
        cursors: Sequence[Cursor],
        usage: Sequence[UsageDelta],
        supply: Sequence[SupplyChange] = (),
        months: Sequence[MonthUsage] = (),
    ) -> list[PostResult]:
        """Write charges, meter cursors and usage increments in ONE transaction.

        Postings whose key exists are skipped and reported as duplicates (different content
        under an existing key is refused). Cursors replace the stored ones. Usage deltas are
        added to the stored totals as given: the caller derives them from readings past the
        cursor, so readings already billed never reach here. Usage for a cycle that has been
        closed is refused, since that cycle's money has been settled against its statement.
        Supply decisions are appended in the same transaction (those the charges led to), and
        the charges' usage per local month (`months`, added like usage; see `month_usage`).
        If anything is refused, nothing at all is written.
        """
        checked = [_check_posting(posting) for posting in postings]
        cursor_rows = [_check_cursor(cursor) for cursor in cursors]
        deltas = [_check_usage(delta) for delta in usage]
        supply_rows = [_check_supply(change) for change in supply]
        month_rows = [_check_month(row) for row in months]
        with self._lock, self._transaction() as conn:
            results = self._apply(conn, checked)
            if month_rows:
                self._add_months(conn, month_rows)
            if cursor_rows:
                conn.executemany(_SQL_UPSERT_CURSOR, cursor_rows)
            if deltas:
                self._add_usage(conn, deltas)
            if supply_rows:
                conn.executemany(_SQL_INSERT_SUPPLY, supply_rows)
            return results

    def record_supply(self, change: SupplyChange) -> None:
        """Append one supply decision on its own (an operator's or resident's request)."""
        row = _check_supply(change)
        with self._lock, self._transaction() as conn:
            conn.execute(_SQL_INSERT_SUPPLY, row)

    def supply_states(self) -> dict[str, SupplyChange]:
        """Return each meter's newest supply decision."""
        rows = self._read(
            """SELECT meter_id, state, reason, actor, ts FROM supply_changes
               WHERE id IN (SELECT MAX(id) FROM supply_changes GROUP BY meter_id)"""
        )
        return {row[0]: SupplyChange(row[0], row[1], row[2], row[3], int(row[4])) for row in rows}

    def supply_history(self, meter_id: str) -> list[SupplyChange]:
        """Return a meter's supply decisions, oldest first."""
        rows = self._read(
            """SELECT meter_id, state, reason, actor, ts FROM supply_changes
               WHERE meter_id = ? ORDER BY id""",
            (meter_id,),
        )
        return [SupplyChange(row[0], row[1], row[2], row[3], int(row[4])) for row in rows]

    # ------------------------------------------------------------------ people and households

    def record_link(self, change: UserLink) -> bool:
        """Link a user to a household or unlink them; return whether anything changed.

        Linking a linked user, or unlinking one who is not linked, writes nothing.
        """
        account_id = _text(change.account_id, "An account id")
        user_id = _text(change.user_id, "A user id")
        actor = _text(change.actor, "The actor of a link")
        ts = _timestamp(change.ts, "The time of a link")
        linked = bool(change.linked)
        with self._lock, self._transaction() as conn:
            if not conn.execute(
                "SELECT 1 FROM households WHERE account_id = ?", (account_id,)
            ).fetchone():
                raise LedgerError(
                    f"Cannot link user {user_id!r} to unknown account {account_id!r}."
                )
            newest = conn.execute(
                "SELECT linked FROM user_links WHERE account_id = ? AND user_id = ? "
                "ORDER BY id DESC LIMIT 1",
                (account_id, user_id),
            ).fetchone()
            if bool(newest and newest[0]) == linked:
                return False
            conn.execute(
                "INSERT INTO user_links (account_id, user_id, linked, actor, ts) "
                "VALUES (?, ?, ?, ?, ?)",
                (account_id, user_id, int(linked), actor, ts),
            )
            return True

    def user_links(self) -> dict[str, frozenset[str]]:
        """Return each household's linked users (households with none are left out)."""
        links: dict[str, set[str]] = {}
        for account_id, user_id in self._read(
            """SELECT account_id, user_id FROM user_links
               WHERE id IN (SELECT MAX(id) FROM user_links GROUP BY account_id, user_id)
               AND linked = 1"""
        ):
            links.setdefault(account_id, set()).add(user_id)
        return {account_id: frozenset(users) for account_id, users in links.items()}

    # ------------------------------------------------------------------ the safety watch

    def record_safety_setting(self, setting: SafetySetting) -> bool:
        """Append an operator's safety setting; return whether it changed anything.

        A household's setting needs the household. Setting what is set writes nothing.
        """
        if setting.subject not in ("household", "area"):
            raise LedgerError(f"Unknown safety setting subject {setting.subject!r}.")
        key = _text(setting.key, "The key of a safety setting")
        actor = _text(setting.actor, "The actor of a safety setting")
        ts = _timestamp(setting.ts, "The time of a safety setting")
        if not isinstance(setting.body, Mapping):
            raise LedgerError(f"The safety setting of {key!r} must be a mapping.")
        try:
            body = json.dumps(dict(setting.body), sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as err:
            raise LedgerError(f"The safety setting of {key!r} is not JSON data: {err}.") from None
        with self._lock, self._transaction() as conn:
            if (
                setting.subject == "household"
                and not conn.execute(
                    "SELECT 1 FROM households WHERE account_id = ?", (key,)
                ).fetchone()
            ):
                raise LedgerError(f"Unknown account {key!r}.")
            newest = conn.execute(
                "SELECT body FROM safety_settings WHERE subject = ? AND key = ? "
                "ORDER BY id DESC LIMIT 1",
                (setting.subject, key),
            ).fetchone()
            if (newest[0] if newest else "{}") == body:
                return False
            conn.execute(
                "INSERT INTO safety_settings (subject, key, body, actor, ts) "
                "VALUES (?, ?, ?, ?, ?)",
                (setting.subject, key, body, actor, ts),
            )
            return True

    def safety_settings(self, subject: str) -> dict[str, dict[str, Any]]:
        """Return the newest setting of each key of a subject (cleared ones left out)."""
        found: dict[str, dict[str, Any]] = {}
        for key, body in self._read(
            """SELECT key, body FROM safety_settings
               WHERE id IN (SELECT MAX(id) FROM safety_settings WHERE subject = ? GROUP BY key)
               ORDER BY key""",
            (subject,),
        ):
            value = json.loads(body)
            if value:
                found[key] = value
        return found

    def safety_history(self, subject: str | None = None) -> list[SafetySetting]:
        """Return the safety settings (of one subject, or all), oldest first."""
        sql = "SELECT subject, key, body, actor, ts FROM safety_settings"
        params: tuple[str, ...] = ()
        if subject is not None:
            sql += " WHERE subject = ?"
            params = (subject,)
        return [
            SafetySetting(row[0], row[1], json.loads(row[2]), row[3], int(row[4]))
            for row in self._read(sql + " ORDER BY id", params)
        ]

    def record_safety_ack(self, ack: SafetyAck) -> None:
        """Append an acknowledgement of an alarm episode."""
        meter_id = _text(ack.meter_id, "A meter id")
        kind = _text(ack.kind, "An alarm kind")
        actor = _text(ack.actor, "The actor of an acknowledgement")
        started = _timestamp(ack.started, "The start of an alarm")
        ts = _timestamp(ack.ts, "The time of an acknowledgement")
        with self._lock, self._transaction() as conn:
            conn.execute(
                "INSERT INTO safety_acks (meter_id, account_id, kind, started, actor, ts) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (meter_id, ack.account_id, kind, started, actor, ts),
            )

    def safety_acks(self, meter_id: str | None = None) -> list[SafetyAck]:
        """Return the acknowledgements (of one meter, or all), oldest first."""
        sql = "SELECT meter_id, account_id, kind, started, actor, ts FROM safety_acks"
        params: tuple[str, ...] = ()
        if meter_id is not None:
            sql += " WHERE meter_id = ?"
            params = (meter_id,)
        return [
            SafetyAck(row[0], row[1], row[2], int(row[3]), row[4], int(row[5]))
            for row in self._read(sql + " ORDER BY id", params)
        ]

    def save_safety_state(self, body: str, ts: int) -> None:
        """Keep the watch's state (its `export_state()` as JSON text), replacing the last."""
        if not isinstance(body, str):
            raise LedgerError("The safety watch's state must be text.")
        ts = _timestamp(ts, "The time of the safety watch's state")
        with self._lock, self._transaction() as conn:
            conn.execute(
                "INSERT INTO safety_state (only, body, ts) VALUES (1, ?, ?) "
                "ON CONFLICT (only) DO UPDATE SET body = excluded.body, ts = excluded.ts",
                (body, ts),
            )

    def safety_state(self) -> str | None:
        """Return the watch's kept state (None: none kept)."""
        rows = self._read("SELECT body FROM safety_state WHERE only = 1")
        return str(rows[0][0]) if rows else None

    def link_history(self, account_id: str | None = None) -> list[UserLink]:
        """Return the links and unlinks of one household (or of all), oldest first."""
        sql = "SELECT account_id, user_id, linked, actor, ts FROM user_links"
        params: tuple[str, ...] = ()
        if account_id is not None:
            sql += " WHERE account_id = ?"
            params = (account_id,)
        return [
            UserLink(row[0], row[1], bool(row[2]), row[3], int(row[4]))
            for row in self._read(sql + " ORDER BY id", params)
        ]

    def _apply(self, conn: sqlite3.Connection, postings: Sequence[_Checked]) -> list[PostResult]:
        """Insert the new postings and update their balances (inside the caller's transaction)."""
        if not postings:
            return []
        existing: dict[str, tuple[Any, ...]] = {
            row[1]: row
            for row in conn.execute(
                "SELECT id, key, account_id, sub, kind, amount, balance_after FROM journal "
                "WHERE key IN (SELECT value FROM json_each(?))",
                (_as_json_list([p.key for p in postings]),),
            )
        }
        balances: dict[tuple[str, str], Decimal] = {}
        known: set[str] = set()
        fresh = [p for p in postings if p.key not in existing]
        if fresh:
            for account_id, sub, balance in conn.execute(
                "SELECT h.account_id, b.sub, b.balance FROM households AS h "
                "LEFT JOIN balances AS b ON b.account_id = h.account_id "
                "WHERE h.account_id IN (SELECT value FROM json_each(?))",
                (_as_json_list({p.account_id for p in fresh}),),
            ):
                known.add(account_id)
                if sub is not None:
                    balances[account_id, sub] = Decimal(balance)
            next_id = int(conn.execute("SELECT coalesce(max(id), 0) FROM journal").fetchone()[0])
        results: list[PostResult] = []
        rows: list[tuple[Any, ...]] = []
        touched: set[tuple[str, str]] = set()
        added: dict[str, tuple[_Checked, PostResult]] = {}
        for posting in postings:
            old = existing.get(posting.key)
            if old is not None:
                if not posting.same_as(old[2], old[3], old[4], Decimal(old[5])):
                    raise LedgerError(
                        f"Idempotency key {posting.key!r} reused with different content."
                    )
                results.append(PostResult(old[0], posting.key, Decimal(old[6]), duplicate=True))
                continue
            earlier = added.get(posting.key)
            if earlier is not None:
                first, result = earlier
                if not posting.same_as(first.account_id, first.sub, first.kind, first.amount):
                    raise LedgerError(
                        f"Idempotency key {posting.key!r} reused with different content."
                    )
                results.append(
                    PostResult(result.entry_id, posting.key, result.balance_after, duplicate=True)
                )
                continue
            if posting.account_id not in known:
                raise LedgerError(
                    f"Posting {posting.key!r} is for unknown account {posting.account_id!r}."
                )
            slot = (posting.account_id, posting.sub.value)
            after = _add(balances.get(slot, _ZERO), posting.amount)
            balances[slot] = after
            touched.add(slot)
            next_id += 1
            rows.append(
                (
                    next_id,
                    posting.key,
                    posting.ts,
                    posting.account_id,
                    posting.sub.value,
                    posting.kind.value,
                    str(posting.amount),
                    posting.meta,
                    str(after),
                )
            )
            result = PostResult(next_id, posting.key, after, duplicate=False)
            added[posting.key] = (posting, result)
            results.append(result)
        if rows:
            conn.executemany(_SQL_INSERT_ENTRY, rows)
            conn.executemany(
                _SQL_UPSERT_BALANCE,
                [(account_id, sub, str(balances[account_id, sub])) for account_id, sub in touched],
            )
            charges = [p for p, _ in added.values() if p.kind is EntryKind.CHARGE]
            if charges:
                self._add_days(conn, charges)
        return results

    # ------------------------------------------------------------------ online payments

    def add_order(self, order: PayOrder) -> None:
        """Record a new payment order (a known order id or an unknown household is refused)."""
        if not isinstance(order, PayOrder):
            raise LedgerError(f"Expected a PayOrder, not {type(order).__name__}.")
        order_id = _text(order.order_id, "An order id")
        purpose = _enum(SubAccount, order.purpose, f"The purpose of order {order_id!r}")
        amount = _number(order.amount, f"The amount of order {order_id!r}", 2)
        if amount <= 0:
            raise LedgerError(f"The amount of order {order_id!r} must be above zero.")
        if order.state != "open":
            raise LedgerError(f"A new order {order_id!r} must be open, not {order.state!r}.")
        row = (
            order_id,
            _text(order.account_id, f"The account of order {order_id!r}"),
            purpose.value,
            _text(order.provider, f"The provider of order {order_id!r}"),
            str(amount),
            _timestamp(order.created_at, f"The creation time of order {order_id!r}"),
            _timestamp(order.expires_at, f"The expiry of order {order_id!r}"),
            _text(order.actor, f"The actor of order {order_id!r}"),
        )
        with self._lock, self._transaction() as conn:
            if not conn.execute(
                "SELECT 1 FROM households WHERE account_id = ?", (order.account_id,)
            ).fetchone():
                raise LedgerError(
                    f"Order {order_id!r} is for unknown account {order.account_id!r}."
                )
            if conn.execute("SELECT 1 FROM pay_orders WHERE order_id = ?", (order_id,)).fetchone():
                raise LedgerError(f"Order {order_id!r} exists already.")
            conn.execute(
                "INSERT INTO pay_orders (order_id, account_id, purpose, provider, amount, "
                "created_at, expires_at, actor, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open')",
                row,
            )

    def pay_order(self, order_id: str) -> PayOrder | None:
        """Return one payment order, or None."""
        rows = self._read(
            f"SELECT {_SQL_ORDER_COLUMNS} FROM pay_orders WHERE order_id = ?",  # noqa: S608
            (order_id,),
        )
        return _pay_order(rows[0]) if rows else None

    def pay_orders(
        self, account_id: str | None = None, since: int | None = None, limit: int = 100
    ) -> list[PayOrder]:
        """Return payment orders, newest first: of one household, created since `since`."""
        sql = f"SELECT {_SQL_ORDER_COLUMNS} FROM pay_orders WHERE 1 = 1"  # noqa: S608
        params: list[Any] = []
        if account_id is not None:
            sql += " AND account_id = ?"
            params.append(account_id)
        if since is not None:
            sql += " AND created_at >= ?"
            params.append(_integer(since, "since"))
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        params.append(max(0, _integer(limit, "limit")))
        return [_pay_order(row) for row in self._read(sql, params)]

    def set_order_code(self, order_id: str, code: str) -> None:
        """Keep the payment code (QR content) the provider gave for an open order."""
        if not isinstance(code, str) or not code or len(code) > 1024:
            raise LedgerError(f"The payment code of order {order_id!r} must be a short text.")
        with self._lock, self._transaction() as conn:
            if (
                conn.execute(
                    "UPDATE pay_orders SET code = ? WHERE order_id = ?", (code, order_id)
                ).rowcount
                != 1
            ):
                raise LedgerError(f"Unknown order {order_id!r}.")

    def close_order(self, order_id: str) -> bool:
        """Close an open order (no payment of it will be credited); return whether it was open."""
        with self._lock, self._transaction() as conn:
            if not conn.execute(
                "SELECT 1 FROM pay_orders WHERE order_id = ?", (order_id,)
            ).fetchone():
                raise LedgerError(f"Unknown order {order_id!r}.")
            return (
                conn.execute(
                    "UPDATE pay_orders SET state = 'closed' WHERE order_id = ? AND state = 'open'",
                    (order_id,),
                ).rowcount
                == 1
            )

    def record_notice(
        self,
        notice: PayNotice,
        *,
        pays_order: bool = False,
        replaces: frozenset[str] = frozenset(),
    ) -> tuple[PayNotice, bool]:
        """Record a provider's notice once; return the stored notice and whether it is new.

        A notice whose key is stored already is returned as stored, and nothing is written,
        unless its stored state is one of `replaces` (a refund that was waiting for its
        payment): then it is replaced. With `pays_order` the notice's order, which must be
        open, becomes paid by its transaction, in the same transaction.
        """
        row = _check_notice(notice)
        with self._lock, self._transaction() as conn:
            stored = conn.execute(
                f"SELECT {_SQL_NOTICE_COLUMNS} FROM pay_notices WHERE notice_key = ?",  # noqa: S608
                (row[0],),
            ).fetchone()
            if stored is not None and stored[7] not in replaces:
                return _pay_notice(stored), False
            if pays_order:
                changed = conn.execute(
                    "UPDATE pay_orders SET state = 'paid', transaction_id = ?, paid_at = ? "
                    "WHERE order_id = ? AND state = 'open'",
                    (notice.transaction_id, notice.received_at, notice.order_id),
                ).rowcount
                if changed != 1:
                    raise LedgerError(f"Order {notice.order_id!r} is not open.")
            if stored is not None:
                conn.execute(
                    "UPDATE pay_notices SET provider = ?, kind = ?, order_id = ?, "
                    "transaction_id = ?, amount = ?, received_at = ?, state = ?, reason = ?, "
                    "account_id = ?, purpose = ?, credit_key = ?, credit_amount = ?, body = ?, "
                    "resolved_by = ?, resolved_at = ? WHERE notice_key = ?",
                    (*row[1:], row[0]),
                )
            else:
                conn.execute(
                    f"INSERT INTO pay_notices ({_SQL_NOTICE_COLUMNS}) "  # noqa: S608
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
        return _pay_notice(row), True

    def pay_notice(self, notice_key: str) -> PayNotice | None:
        """Return one stored notice, or None."""
        rows = self._read(
            f"SELECT {_SQL_NOTICE_COLUMNS} FROM pay_notices WHERE notice_key = ?",  # noqa: S608
            (notice_key,),
        )
        return _pay_notice(rows[0]) if rows else None

    def pay_notices(
        self,
        states: Iterable[str] | None = None,
        order_id: str | None = None,
        limit: int = 1000,
    ) -> list[PayNotice]:
        """Return stored notices, oldest first: in some states, of one order."""
        sql = f"SELECT {_SQL_NOTICE_COLUMNS} FROM pay_notices WHERE 1 = 1"  # noqa: S608
        params: list[Any] = []
        if states is not None:
            sql += " AND state IN (SELECT value FROM json_each(?))"
            params.append(_as_json_list(states))
        if order_id is not None:
            sql += " AND order_id = ?"
            params.append(order_id)
        sql += " ORDER BY id LIMIT ?"
        params.append(max(0, _integer(limit, "limit")))
        return [_pay_notice(row) for row in self._read(sql, params)]

    def settle_notice(
        self,
        notice_key: str,
        from_states: Iterable[str],
        to_state: str,
        *,
        reason: str | None = None,
        actor: str | None = None,
        ts: int | None = None,
    ) -> bool:
        """Move a notice from one of `from_states` to `to_state`; return whether it moved."""
        if to_state not in _NOTICE_STATES:
            raise LedgerError(f"Unknown notice state {to_state!r}.")
        with self._lock, self._transaction() as conn:
            return (
                conn.execute(
                    "UPDATE pay_notices SET state = ?, reason = coalesce(?, reason), "
                    "resolved_by = coalesce(?, resolved_by), "
                    "resolved_at = coalesce(?, resolved_at) "
                    "WHERE notice_key = ? AND state IN (SELECT value FROM json_each(?))",
                    (to_state, reason, actor, ts, notice_key, _as_json_list(from_states)),
                ).rowcount
                == 1
            )

    def count_reject(self, provider: str, key: str, ts: int) -> int:
        """Count one refused message of a provider for a reason; return the new count."""
        _text(provider, "A provider")
        _text(key, "A reject key")
        _timestamp(ts, "The time of a refused message")
        with self._lock, self._transaction() as conn:
            conn.execute(
                "INSERT INTO pay_rejects (provider, key, count, first_ts, last_ts) "
                "VALUES (?, ?, 1, ?, ?) ON CONFLICT (provider, key) DO UPDATE SET "
                "count = count + 1, last_ts = excluded.last_ts",
                (provider, key, ts, ts),
            )
            return int(
                conn.execute(
                    "SELECT count FROM pay_rejects WHERE provider = ? AND key = ?",
                    (provider, key),
                ).fetchone()[0]
            )

    def pay_rejects(self) -> list[PayReject]:
        """Return every (provider, reason) with how often and when messages were refused."""
        return [
            PayReject(row[0], row[1], int(row[2]), int(row[3]), int(row[4]))
            for row in self._read(
                "SELECT provider, key, count, first_ts, last_ts FROM pay_rejects "
                "ORDER BY provider, key"
            )
        ]

    # ------------------------------------------------------------------ days of use

    def _stored_zone(self, conn: sqlite3.Connection) -> tuple[ZoneInfo, str] | None:
        """Return the zone the day sums are in and their first day, or None if none was set."""
        row = conn.execute("SELECT zone, since FROM usage_days_zone").fetchone()
        if row is None:
            return None
        if self._zone is None or self._zone.key != row[0]:
            self._zone = ZoneInfo(row[0])
        return self._zone, str(row[1])

    def _add_days(self, conn: sqlite3.Connection, charges: Sequence[_Checked]) -> None:
        """Add newly inserted charges to their days (inside the caller's transaction)."""
        stored = self._stored_zone(conn)
        if stored is None:
            return  # summed from the journal when a zone is set
        zone, since = stored
        registers: dict[str, Decimal] = {}
        legacy = {_key_register(c.key)[0] for c in charges if c.kwh is None}
        if legacy:
            registers = {
                meter_id: Decimal(register)
                for meter_id, register in conn.execute(
                    "SELECT meter_id, register FROM usage_days_registers "
                    "WHERE meter_id IN (SELECT value FROM json_each(?))",
                    (_as_json_list(legacy),),
                )
            }
        sums = _DaySums(zone, registers, since)
        for charge in charges:
            sums.add(charge.ts, charge.account_id, charge.key, charge.amount, charge.kwh)
        self._write_days(conn, sums)

    @staticmethod
    def _write_days(conn: sqlite3.Connection, sums: _DaySums) -> None:
        """Add the sums to the stored days and store the registers that moved."""
        found = sums.sums
        if found:
            for account_id, day, kwh, cost, first_ts in conn.execute(
                "SELECT account_id, day, kwh, cost, first_ts FROM usage_days "
                "WHERE account_id IN (SELECT value FROM json_each(?)) "
                "AND day IN (SELECT value FROM json_each(?))",
                (
                    _as_json_list({slot[0] for slot in found}),
                    _as_json_list({slot[1] for slot in found}),
                ),
            ):
                added = found.get((account_id, day))
                if added is not None:
                    found[account_id, day] = (
                        _add(Decimal(kwh), added[0]),
                        _add(Decimal(cost), added[1]),
                        min(int(first_ts), added[2]),
                    )
            conn.executemany(
                _SQL_UPSERT_DAY,
                [
                    (account_id, day, str(kwh), str(cost), first_ts)
                    for (account_id, day), (kwh, cost, first_ts) in found.items()
                ],
            )
            found.clear()
        if sums.moved:
            conn.executemany(
                _SQL_UPSERT_REGISTER,
                [(meter_id, str(sums.registers[meter_id])) for meter_id in sorted(sums.moved)],
            )
            sums.moved.clear()

    def day_zone(self) -> tuple[str, date] | None:
        """Return the zone of the days of use and the first day kept (None: none set yet)."""
        rows = self._read("SELECT zone, since FROM usage_days_zone")
        return (str(rows[0][0]), date.fromisoformat(rows[0][1])) if rows else None

    def set_day_zone(self, zone: ZoneInfo, since: date) -> bool:
        """Keep the days of use from `since` on, in local days of `zone`; return if rebuilt.

        Nothing to do when they already are (in that zone, from `since` or earlier).
        Otherwise (the first start after the upgrade that added them, a tariff moved to
        another zone, or an earlier first day asked for) the days from `since` on are summed
        again from the journal's charges of those days, in one transaction: slow on a large
        journal (about 5 s per million charges read), and done once. Days before `since`
        are not kept; charges of such days that arrive later are not summed.
        """
        if not isinstance(zone, ZoneInfo):
            raise LedgerError(f"The zone of the days of use must be a ZoneInfo, not {zone!r}.")
        if not isinstance(since, date):
            raise LedgerError(f"The first day of use to keep must be a date, not {since!r}.")
        first = since.isoformat()
        current = self.day_zone()
        if current is not None and current[0] == zone.key and current[1] <= since:
            return False
        with self._lock, self._transaction() as conn:
            stored = self._stored_zone(conn)
            if stored is not None and stored[0].key == zone.key and stored[1] <= first:
                return False  # another process did it meanwhile
            conn.execute("DELETE FROM usage_days")
            conn.execute("DELETE FROM usage_days_registers")
            sums = _DaySums(zone, {}, first)
            # Through the (kind, ts) index, in time order (a meter's charges are in time
            # order as in the order written; only an earlier version's kWh-less charge
            # looks at the one before it).
            for ts, account_id, key, amount, kwh in conn.execute(
                "SELECT ts, account_id, key, amount, json_extract(meta, '$.kwh') "
                "FROM journal WHERE kind = 'charge' AND ts >= ? ORDER BY ts, id",
                (_midnight(since, zone),),
            ):
                sums.add(
                    ts,
                    account_id,
                    key,
                    Decimal(amount),
                    None if kwh is None else _decimal_or_none(str(kwh)),
                )
                if len(sums.sums) >= _DAYS_FLUSH:
                    self._write_days(conn, sums)
            self._write_days(conn, sums)
            conn.execute(
                "INSERT INTO usage_days_zone (only, zone, since) VALUES (1, ?, ?) "
                "ON CONFLICT (only) DO UPDATE SET zone = excluded.zone, since = excluded.since",
                (zone.key, first),
            )
            self._zone = zone
            return True

    def use_days(self, since: date) -> list[UseDay]:
        """Return every household's days of use from `since` on (start-up; a few rows each).

        Refused until a zone is set (`set_day_zone`): the days are local days; and for a
        day before the first one kept.
        """
        if not isinstance(since, date):
            raise LedgerError(f"The first day of use to read must be a date, not {since!r}.")
        kept = self.day_zone()
        if kept is None:
            raise LedgerError("The days of use have no zone yet: call set_day_zone first.")
        if since < kept[1]:
            raise LedgerError(
                f"The days of use are kept from {kept[1]} on, not from {since}: "
                "call set_day_zone with the earlier day first."
            )
        return [
            UseDay(account_id, date.fromisoformat(day), Decimal(kwh), Decimal(cost), first_ts)
            for account_id, day, kwh, cost, first_ts in self._read(
                "SELECT account_id, day, kwh, cost, first_ts FROM usage_days WHERE day >= ? "
                "ORDER BY account_id, day",
                (since.isoformat(),),
            )
        ]

    def _add_usage(self, conn: sqlite3.Connection, deltas: Sequence[UsageDelta]) -> None:
        """Add usage deltas to the stored totals (inside the caller's transaction)."""
        sums: dict[tuple[str, str, int, str], tuple[Decimal, Decimal]] = {}
        for delta in deltas:
            slot = (delta.account_id, delta.cycle, delta.tier, delta.period)
            kwh, amount = sums.get(slot, (_ZERO, _ZERO))
            sums[slot] = (_add(kwh, delta.kwh), _add(amount, delta.amount))
        accounts = _as_json_list({slot[0] for slot in sums})
        cycles = _as_json_list({slot[1] for slot in sums})
        known = {
            row[0]
            for row in conn.execute(
                "SELECT account_id FROM households "
                "WHERE account_id IN (SELECT value FROM json_each(?))",
                (accounts,),
            )
        }
        for slot in sums:
            if slot[0] not in known:
                raise LedgerError(f"Usage is for unknown account {slot[0]!r}.")
        closed = set(
            conn.execute(
                "SELECT account_id, cycle FROM statements "
                "WHERE account_id IN (SELECT value FROM json_each(?)) "
                "AND cycle IN (SELECT value FROM json_each(?))",
                (accounts, cycles),
            )
        )
        for slot in sums:
            if slot[:2] in closed:
                raise LedgerError(
                    f"Usage for account {slot[0]!r} arrived for cycle {slot[1]!r}, "
                    "which is already closed."
                )
        for account_id, cycle, tier, period, kwh, amount in conn.execute(
            "SELECT account_id, cycle, tier, period, kwh, amount FROM usage "
            "WHERE account_id IN (SELECT value FROM json_each(?)) "
            "AND cycle IN (SELECT value FROM json_each(?))",
            (accounts, cycles),
        ):
            slot = (account_id, cycle, tier, period)
            if slot in sums:
                add_kwh, add_amount = sums[slot]
                sums[slot] = (_add(Decimal(kwh), add_kwh), _add(Decimal(amount), add_amount))
        conn.executemany(
            _SQL_UPSERT_USAGE,
            [(*slot, str(kwh), str(amount)) for slot, (kwh, amount) in sums.items()],
        )

    def _add_months(self, conn: sqlite3.Connection, rows: Sequence[MonthUsage]) -> None:
        """Add usage per month to the stored sums (inside the caller's transaction)."""
        sums: dict[tuple[str, str, int, str], tuple[Decimal, Decimal]] = {}
        for row in rows:
            slot = (row.account_id, row.month, row.tier, row.period)
            kwh, amount = sums.get(slot, (_ZERO, _ZERO))
            sums[slot] = (_add(kwh, row.kwh), _add(amount, row.amount))
        for account_id, month, tier, period, kwh, amount in conn.execute(
            "SELECT account_id, month, tier, period, kwh, amount FROM usage_months "
            "WHERE account_id IN (SELECT value FROM json_each(?)) "
            "AND month IN (SELECT value FROM json_each(?))",
            (_as_json_list({s[0] for s in sums}), _as_json_list({s[1] for s in sums})),
        ):
            slot = (account_id, month, tier, period)
            if slot in sums:
                add_kwh, add_amount = sums[slot]
                sums[slot] = (_add(Decimal(kwh), add_kwh), _add(Decimal(amount), add_amount))
        conn.executemany(
            _SQL_UPSERT_MONTH,
            [(*slot, str(kwh), str(amount)) for slot, (kwh, amount) in sums.items()],
        )

    def close_cycle(
        self,
        account_id: str,
        cycle: str,
        statement_total: Decimal,
        statement_json: str,
        ts: int,
    ) -> PostResult:
        """Store a cycle's statement and settle the cycle's charges against it, in one transaction.

        The settlement entry on electricity has amount = (sum of usage.amount charged for the
        cycle) - statement_total, so the charges plus the settlement take exactly the statement
        total for the cycle. Its key is `settle:{account_id}:{cycle}`; closing the same cycle
        again with the same total returns the first result as a duplicate, with another total
        it is refused. Usage for the cycle is refused after this.
        """
        _text(account_id, "An account id")
        _text(cycle, f"The cycle to close for {account_id!r}")
        total = _number(statement_total, f"The statement total of {account_id!r} {cycle}", 4)
        if total < 0:
            raise LedgerError(f"The statement total of {account_id!r} {cycle} is negative.")
        if not isinstance(statement_json, str):
            raise LedgerError(f"The statement of {account_id!r} {cycle} must be JSON text.")
        try:
            json.loads(statement_json)
        except ValueError as err:
            raise LedgerError(
                f"The statement of {account_id!r} {cycle} is not valid JSON: {err}."
            ) from err
        _timestamp(ts, f"The closing time of {account_id!r} {cycle}")
        key = f"{_SETTLE_PREFIX}{account_id}:{cycle}"
        with self._lock, self._transaction() as conn:
            stored = conn.execute(
                "SELECT total FROM statements WHERE account_id = ? AND cycle = ?",
                (account_id, cycle),
            ).fetchone()
            if stored is not None:
                if Decimal(stored[0]) != total:
                    raise LedgerError(
                        f"Cycle {cycle} of {account_id!r} is already closed with total "
                        f"{stored[0]}, not {total}."
                    )
                row = conn.execute(
                    "SELECT id, balance_after FROM journal WHERE key = ?", (key,)
                ).fetchone()
                return PostResult(row[0], key, Decimal(row[1]), duplicate=True)
            if not conn.execute(
                "SELECT 1 FROM households WHERE account_id = ?", (account_id,)
            ).fetchone():
                raise LedgerError(f"Cannot close cycle {cycle} of unknown account {account_id!r}.")
            charged = _ZERO
            for (amount,) in conn.execute(
                "SELECT amount FROM usage WHERE account_id = ? AND cycle = ?",
                (account_id, cycle),
            ):
                charged = _add(charged, Decimal(amount))
            conn.execute(
                "INSERT INTO statements (account_id, cycle, total, body, closed_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (account_id, cycle, str(total), statement_json, ts),
            )
            settlement = _check_posting(
                Posting(
                    key=key,
                    account_id=account_id,
                    sub=SubAccount.ELECTRICITY,
                    kind=EntryKind.SETTLEMENT,
                    amount=_CTX.subtract(charged, total),
                    ts=ts,
                    meta={"cycle": cycle, "statement_total": str(total), "charged": str(charged)},
                ),
                settlement=True,
            )
            return self._apply(conn, [settlement])[0]

    # ------------------------------------------------------------------ reading

    def cursor(self, meter_id: str) -> Cursor | None:
        """Return the last reading billed for a meter, or None if none was."""
        rows = self._read(
            "SELECT meter_id, last_seq, last_ts, last_energy FROM meters "
            "WHERE meter_id = ? AND last_ts IS NOT NULL",
            (meter_id,),
        )
        return Cursor(rows[0][0], rows[0][1], rows[0][2], Decimal(rows[0][3])) if rows else None

    def cursors(self) -> dict[str, Cursor]:
        """Return every meter's cursor (for start-up)."""
        return {
            meter_id: Cursor(meter_id, seq, ts, Decimal(energy))
            for meter_id, seq, ts, energy in self._read(
                "SELECT meter_id, last_seq, last_ts, last_energy FROM meters "
                "WHERE last_ts IS NOT NULL"
            )
        }

    def balance(self, account_id: str, sub: SubAccount) -> Decimal:
        """Return one sub-account's balance; unknown accounts are refused."""
        balances = self.balances(account_id)
        return balances[_enum(SubAccount, sub, "A sub-account")]

    def balances(self, account_id: str) -> dict[SubAccount, Decimal]:
        """Return the balance of each sub-account of a household; unknown accounts are refused."""
        rows = self._read(
            "SELECT h.account_id, b.sub, b.balance FROM households AS h "
            "LEFT JOIN balances AS b ON b.account_id = h.account_id WHERE h.account_id = ?",
            (account_id,),
        )
        if not rows:
            raise LedgerError(f"Unknown account {account_id!r}.")
        found = {SubAccount(sub): Decimal(balance) for _, sub, balance in rows if sub is not None}
        return {sub: found.get(sub, _ZERO) for sub in SubAccount}

    def entries(
        self,
        account_id: str,
        sub: SubAccount | None = None,
        since: int | None = None,
        limit: int = 100,
    ) -> list[Entry]:
        """Return a household's most recent entries, newest first.

        `sub` keeps one sub-account, `since` keeps entries with `ts >= since`, `limit` caps
        how many are returned.
        """
        sql = f"SELECT {_SQL_ENTRY_COLUMNS} FROM journal WHERE account_id = ?"  # noqa: S608
        params: list[Any] = [account_id]
        if sub is not None:
            sql += " AND sub = ?"
            params.append(_enum(SubAccount, sub, "A sub-account").value)
        if since is not None:
            sql += " AND ts >= ?"
            params.append(_integer(since, "since"))
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(max(0, _integer(limit, "limit")))
        return [_entry(row) for row in self._read(sql, params)]

    def entry_by_key(self, key: str) -> Entry | None:
        """Return the entry posted under an idempotency key, or None."""
        rows = self._read(
            f"SELECT {_SQL_ENTRY_COLUMNS} FROM journal WHERE key = ?",  # noqa: S608
            (key,),
        )
        return _entry(rows[0]) if rows else None

    def usage(self, account_id: str, cycle: str) -> list[UsageRow]:
        """Return a household's usage in one cycle, one row per (tier, period)."""
        return [
            UsageRow(cycle, tier, period, Decimal(kwh), Decimal(amount))
            for tier, period, kwh, amount in self._read(
                "SELECT tier, period, kwh, amount FROM usage WHERE account_id = ? AND cycle = ? "
                "ORDER BY tier, period",
                (account_id, cycle),
            )
        ]

    def month_usage(self, month: str) -> list[MonthUsage]:
        """Return every household's usage in one local month (`YYYY-MM`), by (tier, period).

        Ordered by account, tier and period; a month before schema 7 has no rows.
        """
        return [
            MonthUsage(account_id, month, tier, period, Decimal(kwh), Decimal(amount))
            for account_id, tier, period, kwh, amount in self._read(
                "SELECT account_id, tier, period, kwh, amount FROM usage_months "
                "WHERE month = ? ORDER BY account_id, tier, period",
                (month,),
            )
        ]

    def open_cycles(self, account_id: str) -> list[str]:
        """Return the cycles with usage of a household that have no statement yet, oldest first."""
        return [
            cycle
            for (cycle,) in self._read(
                "SELECT DISTINCT cycle FROM usage WHERE account_id = ? AND cycle NOT IN "
                "(SELECT cycle FROM statements WHERE account_id = ?) ORDER BY cycle",
                (account_id, account_id),
            )
        ]

    def statement(self, account_id: str, cycle: str) -> tuple[Decimal, str] | None:
        """Return the total and JSON body of a closed cycle's statement, or None if open."""
        rows = self._read(
            "SELECT total, body FROM statements WHERE account_id = ? AND cycle = ?",
            (account_id, cycle),
        )
        return (Decimal(rows[0][0]), rows[0][1]) if rows else None

    # ------------------------------------------------------------------ operators' figures

    def total_balance(self, sub: SubAccount) -> Decimal:
        """Return the sum of every household's balance on one sub-account."""
        total = _ZERO
        for (balance,) in self._read(
            "SELECT balance FROM balances WHERE sub = ?",
            (_enum(SubAccount, sub, "A sub-account").value,),
        ):
            total = _add(total, Decimal(balance))
        return total

    def count_in_arrears(self, sub: SubAccount) -> int:
        """Return how many households have a negative balance on one sub-account."""
        # Balances are stored without negative zero, so a leading '-' means below zero.
        rows = self._read(
            "SELECT count(*) FROM balances WHERE sub = ? AND substr(balance, 1, 1) = '-'",
            (_enum(SubAccount, sub, "A sub-account").value,),
        )
        return int(rows[0][0])

    def sum_kind_since(
        self, kind: EntryKind, since_ts: int, sub: SubAccount | None = None
    ) -> Decimal:
        """Return the sum of all entries of one kind with `ts >= since_ts` (e.g. top-ups today)."""
        sql = "SELECT amount FROM journal WHERE kind = ? AND ts >= ?"
        params: list[Any] = [
            _enum(EntryKind, kind, "An entry kind").value,
            _integer(since_ts, "since_ts"),
        ]
        if sub is not None:
            sql += " AND sub = ?"
            params.append(_enum(SubAccount, sub, "A sub-account").value)
        total = _ZERO
        for (amount,) in self._read(sql, params):
            total = _add(total, Decimal(amount))
        return total

    # ------------------------------------------------------------------ reconciliation

    def record_statement(
        self,
        statement: ReconImport,
        items: Sequence[ReconItem],
        matched: Iterable[str] = (),
    ) -> tuple[int, list[ReconItem]]:
        """Record one import of a statement and what disagreed, in one transaction.

        A discrepancy kept already (the same `item_key`) is not added again and keeps its
        class and figures (a later file that lacks a line must not turn a payment missing in
        the ledger into something else); a resolved one stays as it was. Open items of the
        same provider and day whose keys this import found matched (`matched`) are resolved
        as `matched` by its actor; an open item the file does not mention stays open (a
        SUCCESS-only or shortened export is no proof).
        Return the import's id and every item of that provider and day, oldest first.
        """
        if not isinstance(statement, ReconImport):
            raise LedgerError(f"Expected a ReconImport, not {type(statement).__name__}.")
        head = (
            _text(statement.provider, "The provider of a statement"),
            _text(statement.day, "The day of a statement"),
            _text(statement.digest, "The digest of a statement"),
            str(statement.name)[:_MAX_TEXT],
            statement.summary,
            _text(statement.actor, "The actor of a statement import"),
            _timestamp(statement.ts, "The time of a statement import"),
        )
        try:
            json.loads(statement.summary)
        except (TypeError, ValueError) as err:
            raise LedgerError(f"The summary of a statement is not JSON: {err}.") from err
        rows = [_check_recon_item(item) for item in items]
        for row in rows:
            if row[1] != head[0] or row[2] != head[1]:
                raise LedgerError(f"Item {row[0]!r} is not of this statement's provider and day.")
        with self._lock, self._transaction() as conn:
            import_id = int(
                conn.execute(
                    "INSERT INTO recon_imports (provider, day, digest, name, summary, actor, ts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    head,
                ).fetchone()[0]
            )
            for row in rows:
                conn.execute(
                    "INSERT INTO recon_items (item_key, provider, day, kind, class, "
                    "transaction_id, order_id, refund_id, provider_amount, ledger_amount, "
                    "account_id, purpose, detail, import_id, found_at, state) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open') "
                    "ON CONFLICT (item_key) DO NOTHING",
                    (*row, import_id, head[6]),
                )
            conn.execute(
                "UPDATE recon_items SET state = 'resolved', action = 'matched', "
                "resolved_by = ?, resolved_at = ? WHERE provider = ? AND day = ? "
                "AND state = 'open' AND item_key IN (SELECT value FROM json_each(?))",
                (head[5], head[6], head[0], head[1], _as_json_list(str(k) for k in matched)),
            )
            found = conn.execute(
                f"SELECT {_SQL_RECON_COLUMNS} FROM recon_items "  # noqa: S608
                "WHERE provider = ? AND day = ? ORDER BY id",
                (head[0], head[1]),
            ).fetchall()
        return import_id, [_recon_item(row) for row in found]

    def recon_items(
        self,
        states: Iterable[str] | None = None,
        provider: str | None = None,
        day: str | None = None,
        limit: int = 10_000,
    ) -> list[ReconItem]:
        """Return reconciliation items, oldest first: in some states, of a provider and day."""
        sql = f"SELECT {_SQL_RECON_COLUMNS} FROM recon_items WHERE 1 = 1"  # noqa: S608
        params: list[Any] = []
        if states is not None:
            sql += " AND state IN (SELECT value FROM json_each(?))"
            params.append(_as_json_list(states))
        if provider is not None:
            sql += " AND provider = ?"
            params.append(provider)
        if day is not None:
            sql += " AND day = ?"
            params.append(day)
        sql += " ORDER BY id LIMIT ?"
        params.append(max(0, _integer(limit, "limit")))
        return [_recon_item(row) for row in self._read(sql, params)]

    def recon_item(self, item_id: int) -> ReconItem | None:
        """Return one reconciliation item, or None."""
        rows = self._read(
            f"SELECT {_SQL_RECON_COLUMNS} FROM recon_items WHERE id = ?",  # noqa: S608
            (_integer(item_id, "An item id"),),
        )
        return _recon_item(rows[0]) if rows else None

    def resolve_recon_item(
        self,
        item_id: int,
        action: str,
        actor: str,
        ts: int,
        *,
        amount: Decimal | None = None,
        entry_key: str | None = None,
    ) -> bool:
        """Resolve an open item (who, when, what was posted); return whether it was open."""
        if action not in _RECON_ACTIONS:
            raise LedgerError(f"Unknown resolution {action!r}.")
        if amount is not None:
            _number(amount, f"The amount resolving item {item_id}", _MONEY_PLACES)
        row = (
            action,
            None if amount is None else str(amount),
            entry_key,
            _text(actor, "The actor resolving an item"),
            _timestamp(ts, "The time of a resolution"),
            _integer(item_id, "An item id"),
        )
        with self._lock, self._transaction() as conn:
            return (
                conn.execute(
                    "UPDATE recon_items SET state = 'resolved', action = ?, amount = ?, "
                    "entry_key = ?, resolved_by = ?, resolved_at = ? "
                    "WHERE id = ? AND state = 'open'",
                    row,
                ).rowcount
                == 1
            )

    # ------------------------------------------------------------------ consistency

    def check_invariant(self) -> list[Mismatch]:
        """Recompute every balance from the journal and return where the ledger disagrees.

        Checks that each entry's `balance_after` is the running sum of its sub-account's
        entries, that each cached balance equals the sum of its entries, and (once a zone is
        set) that the days of use are the sums of the charges of each day. Empty means
        consistent. It reads the whole journal (about 1.7 s per million entries measured), so
        it is for tests, start-up checks and maintenance, not for every batch.
        """
        mismatches: list[Mismatch] = []
        running: dict[tuple[str, str], Decimal] = {}
        days: _DaySums | None = None
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN")  # one snapshot for the journal, balances and days
                try:
                    kept = self._stored_zone(conn)
                    days = None if kept is None else _DaySums(kept[0], {}, kept[1])
                    for (
                        entry_id,
                        account_id,
                        sub,
                        amount,
                        after,
                        kind,
                        ts,
                        key,
                        kwh,
                    ) in conn.execute(
                        "SELECT id, account_id, sub, amount, balance_after, kind, ts, key, "
                        "CASE WHEN kind = 'charge' THEN json_extract(meta, '$.kwh') END "
                        "FROM journal ORDER BY id"
                    ):
                        if days is not None and kind == "charge":
                            days.add(
                                ts,
                                account_id,
                                key,
                                Decimal(amount),
                                None if kwh is None else _decimal_or_none(str(kwh)),
                            )
                        slot = (account_id, sub)
                        total = _add(running.get(slot, _ZERO), Decimal(amount))
                        running[slot] = total
                        if Decimal(after) != total:
                            mismatches.append(
                                Mismatch(
                                    account_id,
                                    sub,
                                    f"balance_after of entry {entry_id}",
                                    total,
                                    Decimal(after),
                                )
                            )
                    cached = {
                        (account_id, sub): Decimal(balance)
                        for account_id, sub, balance in conn.execute(
                            "SELECT account_id, sub, balance FROM balances"
                        )
                    }
                    stored_days = {
                        (account_id, day): (Decimal(kwh), Decimal(cost), int(first_ts))
                        for account_id, day, kwh, cost, first_ts in conn.execute(
                            "SELECT account_id, day, kwh, cost, first_ts FROM usage_days"
                        )
                    }
                    registers = {
                        meter_id: Decimal(register)
                        for meter_id, register in conn.execute(
                            "SELECT meter_id, register FROM usage_days_registers"
                        )
                    }
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as err:
                raise LedgerError(f"The ledger could not be read: {err}.") from err
        for slot in sorted(set(running) | set(cached)):
            expected = running.get(slot, _ZERO)
            found = cached.get(slot)
            if found is None or found != expected:
                mismatches.append(
                    Mismatch(
                        slot[0],
                        slot[1],
                        "cached balance",
                        expected,
                        _ZERO if found is None else found,
                    )
                )
        if days is not None:
            mismatches += _day_mismatches(days, stored_days, registers)
        return mismatches


def _day_mismatches(
    days: _DaySums,
    stored: Mapping[tuple[str, str], tuple[Decimal, Decimal, int]],
    registers: Mapping[str, Decimal],
) -> list[Mismatch]:
    """Return where the stored days of use disagree with the journal's charges."""
    mismatches: list[Mismatch] = []
    nothing = (_ZERO, _ZERO, 0)
    for account_id, day in sorted(set(days.sums) | set(stored)):  # from the first day kept
        expected = days.sums.get((account_id, day), nothing)
        found = stored.get((account_id, day), nothing)
        for what, want, have in (
            (f"kWh of {day}", expected[0], found[0]),
            (f"cost of {day}", expected[1], found[1]),
            (f"first charge time of {day}", Decimal(expected[2]), Decimal(found[2])),
        ):
            if want != have:
                mismatches.append(Mismatch(account_id, "electricity", what, want, have))
    for meter_id in sorted(set(days.registers) | set(registers)):
        want, have = days.registers.get(meter_id, _ZERO), registers.get(meter_id, _ZERO)
        if want != have:
            mismatches.append(
                Mismatch(meter_id, "-", "register of its last kWh-less charge", want, have)
            )
    return mismatches
