"""Who did something: the typed actor, its stored text, and the strings of earlier versions."""

from __future__ import annotations

from hypothesis import given, strategies as st
import pytest

from custom_components.prepaid_meter.engine.actor import KINDS, Actor

HA_USER = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("actor", "text"),
    [
        (Actor.SYSTEM, "system"),
        (Actor.SAFETY, "safety"),
        (Actor.AUTOMATION, "operator||automation"),
        (Actor("operator", user_id=HA_USER, name="Ops"), f"operator|{HA_USER}|Ops"),
        (Actor("resident", user_id=HA_USER), f"resident|{HA_USER}|"),
        (Actor("resident", name="Alice: 3|501"), "resident||Alice: 3|501"),
        (Actor("operator", user_id="a|b%c"), "operator|a%7Cb%25c|"),
        (Actor("operator"), "operator"),
    ],
)
def test_text_form_round_trips(actor: Actor, text: str) -> None:
    """The stored text is readable and reads back as the same actor."""
    assert str(actor) == text
    assert Actor.parse(text) == actor


@given(
    st.sampled_from(KINDS),
    st.none() | st.text(min_size=1),
    st.none() | st.text(min_size=1),
)
def test_any_actor_round_trips(kind: str, user_id: str | None, name: str | None) -> None:
    """Whatever a user id or a name holds, the text form reads back exactly."""
    actor = Actor(kind, user_id, name)  # type: ignore[arg-type]
    assert Actor.parse(str(actor)) == actor


@pytest.mark.parametrize(
    ("old", "actor"),
    [
        ("system", Actor.SYSTEM),
        ("auto", Actor.SYSTEM),
        ("", Actor.SYSTEM),
        ("safety", Actor.SAFETY),
        # automations and scripts had the administrator's rights
        ("automation", Actor.AUTOMATION),
        ("operator:automation", Actor.AUTOMATION),
        ("operator:Ops", Actor("operator", name="Ops")),
        ("resident:Alice", Actor("resident", name="Alice")),
        ("operator:Ops: night shift", Actor("operator", name="Ops: night shift")),
        (f"operator:{HA_USER}", Actor("operator", user_id=HA_USER)),  # a nameless admin
        # a user whose role was not recorded: the least privilege
        (f"user:{HA_USER}", Actor("resident", user_id=HA_USER)),
        (HA_USER, Actor("resident", user_id=HA_USER)),
        ("resident", Actor("resident")),
        ("operator", Actor("operator")),
        # anything else was written by a program, not a person: kept as the system's, named
        ("test", Actor("system", name="test")),
        ("operator:", Actor("system", name="operator:")),
    ],
)
def test_strings_of_earlier_versions(old: str, actor: Actor) -> None:
    """Ledgers written before actors were typed read back with sensible kinds."""
    assert Actor.parse(old) == actor
    assert Actor.parse(str(actor)) == actor


def test_kinds_and_event_data() -> None:
    """Only an operator acts for the staff; events carry plain values for people."""
    ops = Actor("operator", user_id=HA_USER, name="Ops")
    assert ops.is_operator
    assert Actor.AUTOMATION.is_operator
    assert not any(a.is_operator for a in (Actor("resident"), Actor.SYSTEM, Actor.SAFETY))
    assert ops.event_data() == {"actor": "Ops", "actor_kind": "operator", "actor_user_id": HA_USER}
    assert Actor("resident", user_id=HA_USER).display == HA_USER
    assert Actor.SAFETY.event_data() == {
        "actor": "safety",
        "actor_kind": "safety",
        "actor_user_id": None,
    }


def test_what_cannot_be_stored_is_refused() -> None:
    """An unknown kind, or an empty id or name (None means unknown), is an error at once."""
    with pytest.raises(ValueError, match="kind"):
        Actor("admin")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="never empty"):
        Actor("operator", user_id="")
    with pytest.raises(ValueError, match="never empty"):
        Actor("resident", name="")
