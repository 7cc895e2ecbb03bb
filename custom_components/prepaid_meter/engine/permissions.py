"""Who may do what: operators everything; residents their own household, within limits.

Every request to a community carries an `Actor`; `check` says whether that actor may make it:

- an operator (a Home Assistant administrator, an automation), the prepaid rules (`system`)
  and the protective watch (`safety`) may do everything;
- a resident (a user an operator linked to one or more households) may restore the supply of
  a household they are linked to after a *credit* cut (once the balance clears the reclose
  threshold: `policy.decide_restore` decides that part), read its statement and set its
  low-balance threshold; never cut a supply, restore after a safety cut or a person's cut,
  act on another household, move money, assign meters or link people.

A refusal is a `Refusal`: a translation key, an English sentence and the key's placeholders
(the community raises it as a `CommunityError`). Keys and placeholders:

| key                      | placeholders        | refused                                        |
|--------------------------|---------------------|------------------------------------------------|
| `not_authorized`         | `action`            | money (`top_up`, `fee`, `payment`, ...),       |
|                          |                     | `assign`, `link`, `unlink`: an operator's      |
| `cut_needs_operator`     | `meter_id`          | a resident's cut                               |
| `restore_needs_operator` | `meter_id`,`reason` | a resident's restore after a cut that is not   |
|                          |                     | a credit cut (`reason`: why it was cut)        |
| `not_your_meter`         | `meter_id`          | a meter of a household the resident is not     |
|                          |                     | linked to (or of none)                         |
| `not_your_household`     | `household`         | a household the resident is not linked to      |

`UserLinks` is the live copy of which users are linked to which household (the ledger's
`user_links` journal holds them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from .actor import Actor

__all__ = [
    "CREDIT_CUTS",
    "SAFETY_CUTS",
    "Action",
    "Refusal",
    "UserLinks",
    "check",
]

#: What a request does. Money actions are named by their journal entry kind.
type Action = Literal[
    "restore",
    "cut",
    "statement",
    "threshold",
    "assign",
    "safety",
    "link",
    "unlink",
    "top_up",
    "charge",
    "fee",
    "payment",
    "adjustment",
    "refund",
    "settlement",
]

#: Why the prepaid rules cut a supply: a resident may restore after these (balance allowing).
CREDIT_CUTS: Final = frozenset({"credit_exhausted"})
#: Why the protective watch cuts (or may one day): only an operator restores after these. A
#: person's cut (`manual`) and any reason not listed here or above need an operator too.
SAFETY_CUTS: Final = frozenset({"overload", "arc_fault", "theft_suspected", "tamper"})

# A resident's own household's requests; every other action is an operator's.
_RESIDENT_ACTIONS: Final = frozenset({"restore", "statement", "threshold"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: a translation key, an English sentence, placeholders."""

    key: str
    message: str
    placeholders: Mapping[str, str] = field(default_factory=dict)


class UserLinks:
    """Which users are linked to which household, both ways (memory; the ledger keeps them)."""

    def __init__(self, links: Mapping[str, Iterable[str]] | None = None) -> None:
        """Start from each household's linked users."""
        self._users: dict[str, set[str]] = {}
        self._households: dict[str, set[str]] = {}
        for account_id, users in (links or {}).items():
            for user_id in users:
                self.link(account_id, user_id)

    def link(self, account_id: str, user_id: str) -> None:
        """Link a user to a household (nothing happens if linked already)."""
        self._users.setdefault(account_id, set()).add(user_id)
        self._households.setdefault(user_id, set()).add(account_id)

    def unlink(self, account_id: str, user_id: str) -> None:
        """Unlink a user from a household (nothing happens if not linked)."""
        _discard(self._users, account_id, user_id)
        _discard(self._households, user_id, account_id)

    def households_of(self, user_id: str) -> frozenset[str]:
        """Return the households a user is linked to."""
        return frozenset(self._households.get(user_id, ()))

    def users_of(self, account_id: str) -> frozenset[str]:
        """Return the users linked to a household."""
        return frozenset(self._users.get(account_id, ()))

    def as_dict(self) -> dict[str, frozenset[str]]:
        """Return each household's linked users (households with none left out)."""
        return {account_id: frozenset(users) for account_id, users in self._users.items()}


def _discard(index: dict[str, set[str]], key: str, value: str) -> None:
    values = index.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del index[key]


def check(
    actor: Actor,
    action: Action,
    links: UserLinks,
    *,
    account_id: str | None = None,
    meter_id: str | None = None,
    cut_reason: str | None = None,
) -> Refusal | None:
    """Return why `actor` may not do `action`, or None when they may.

    `account_id` is the household acted on (for a meter: the one it is assigned to, None if
    unassigned); `meter_id` names the meter for a supply or threshold request; `cut_reason`
    is why a supply to restore is off (None: it is on, nothing to restore). The balance is
    not looked at here: `policy.decide_restore` decides that for everybody.
    """
    if actor.kind != "resident":
        return None
    if action == "cut":
        assert meter_id is not None
        return Refusal(
            "cut_needs_operator",
            f"Only an operator may cut the supply of meter {meter_id}",
            {"meter_id": meter_id},
        )
    if action not in _RESIDENT_ACTIONS:
        return Refusal(
            "not_authorized", f"Only an operator may {action.replace('_', ' ')}", {"action": action}
        )
    mine = (
        actor.user_id is not None
        and account_id is not None
        and account_id in links.households_of(actor.user_id)
    )
    if not mine:
        if meter_id is not None:
            return Refusal(
                "not_your_meter",
                f"Meter {meter_id} is not of a household you are linked to",
                {"meter_id": meter_id},
            )
        return Refusal(
            "not_your_household",
            f"You are not linked to household {account_id}",
            {"household": str(account_id)},
        )
    if action == "restore" and cut_reason is not None and cut_reason not in CREDIT_CUTS:
        assert meter_id is not None
        return Refusal(
            "restore_needs_operator",
            f"Only an operator may restore the supply of meter {meter_id} after a cut "
            f"for {cut_reason}",
            {"meter_id": meter_id, "reason": cut_reason},
        )
    return None
