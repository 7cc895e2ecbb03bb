"""Who did something: the actor of every money movement and supply change.

An `Actor` has a kind, which decides what it may do, and names the person when there is one:

- `operator`: the community's staff (a Home Assistant administrator, or an automation or
  script, which the administrator's configuration runs): may restore a supply below the
  reclose threshold with an override;
- `resident`: a household member (any other Home Assistant user): restores only when the
  balance clears the reclose threshold; where the community enforces permissions
  (engine/permissions.py), only a household an operator linked them to, only after a credit
  cut, and never cuts or moves money;
- `system`: the prepaid rules themselves (credit cuts, automatic restore);
- `safety`: the protective watch (arc faults, severe overloads).

Stored (the journal's `meta`, `supply_changes.actor`) as text: the bare kind when nobody is
named (`system`, `safety`), else `kind|user id|name` with an empty field for what is unknown
(`operator||automation`, `resident|3f2a...|Alice`); a `|` or `%` in the user id is
percent-encoded (the name is last and taken as it is). `Actor.parse` reads that back, and the
strings earlier versions stored, which guessed the role from a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
import re
from typing import ClassVar, Final, Literal

type ActorKind = Literal["operator", "resident", "system", "safety"]

KINDS: Final[tuple[ActorKind, ...]] = ("operator", "resident", "system", "safety")
_SEPARATOR: Final = "|"
# A Home Assistant user id (uuid4 hex): what earlier versions stored for a user with no name.
_USER_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for (or decided) a money movement or a supply change."""

    kind: ActorKind
    user_id: str | None = None
    name: str | None = None

    #: The prepaid rules (credit cuts, automatic restore).
    SYSTEM: ClassVar[Actor]
    #: The protective watch (arc faults, severe overloads).
    SAFETY: ClassVar[Actor]
    #: An automation or script (no user): it runs with the administrator's rights.
    AUTOMATION: ClassVar[Actor]

    def __post_init__(self) -> None:
        """Refuse what could not be stored and read back as the same actor."""
        if self.kind not in KINDS:
            raise ValueError(f"Unknown actor kind {self.kind!r}")
        if self.user_id == "" or self.name == "":
            raise ValueError("An actor's user id and name are None when unknown, never empty")

    @property
    def is_operator(self) -> bool:
        """Return whether this actor acts for the community's staff."""
        return self.kind == "operator"

    @property
    def display(self) -> str:
        """Return who this is for people: the name, else the user id, else the kind."""
        return self.name or self.user_id or self.kind

    def event_data(self) -> dict[str, str | None]:
        """Return the actor as event data: `actor` (display), `actor_kind`, `actor_user_id`."""
        return {"actor": self.display, "actor_kind": self.kind, "actor_user_id": self.user_id}

    def __str__(self) -> str:
        """Return the stored text form (see the module docstring); `parse` inverts it."""
        if self.user_id is None and self.name is None:
            return self.kind
        user_id = "" if self.user_id is None else _quote(self.user_id)
        return _SEPARATOR.join((self.kind, user_id, self.name or ""))

    @classmethod
    def parse(cls, text: str) -> Actor:
        """Read a stored actor: this version's text form, or an earlier version's string.

        Earlier strings: "system", "auto" -> the system; "safety" -> safety; "automation"
        (an automation or script, with the administrator's rights) -> the operator named
        "automation"; "operator:<name>" and "resident:<name>" -> that kind with that name
        (a user id when it is one); "user:<id>" and a bare user id (a user whose role was not
        recorded) -> a resident, the least privilege; anything else -> the system, named by
        the text.
        """
        kind, separator, rest = text.partition(_SEPARATOR)
        if separator and kind in KINDS:
            user_id, _, name = rest.partition(_SEPARATOR)
            return cls(_kind(kind), _unquote(user_id) or None, name or None)
        return _legacy(text)


def _kind(text: str) -> ActorKind:
    for kind in KINDS:
        if kind == text:
            return kind
    raise ValueError(f"Unknown actor kind {text!r}")


def _quote(user_id: str) -> str:
    return user_id.replace("%", "%25").replace(_SEPARATOR, "%7C")


def _unquote(user_id: str) -> str:
    return user_id.replace("%7C", _SEPARATOR).replace("%25", "%")


def _legacy(text: str) -> Actor:
    """Read an actor string of an earlier version (see `Actor.parse`)."""
    text = text.strip()
    if text in ("", "system", "auto"):
        return Actor.SYSTEM
    if text == "automation":
        return Actor.AUTOMATION
    if text in KINDS:
        return Actor(_kind(text))
    if _USER_ID.fullmatch(text):
        return Actor("resident", user_id=text)
    prefix, colon, who = text.partition(":")
    who = who.strip()
    if colon and who:
        if prefix == "user":
            return Actor("resident", user_id=who)
        if prefix in ("operator", "resident"):
            kind = _kind(prefix)
            if _USER_ID.fullmatch(who):
                return Actor(kind, user_id=who)
            return Actor(kind, name=who)
    return Actor("system", name=text)


Actor.SYSTEM = Actor("system")
Actor.SAFETY = Actor("safety")
Actor.AUTOMATION = Actor("operator", name="automation")
