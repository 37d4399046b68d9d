"""What an MQTT topic soundmon publishes to may contain: one pure rule, used at start.

Why a rule of our own: paho accepts topics that the broker then rejects. Mosquitto closes the
connection on a topic with a control or non-character (so every retry dies the same way), a
topic over 65,535 bytes kills paho's network thread, and a topic beginning with `$` is
acknowledged and silently discarded (`$` is reserved for the broker's own `$SYS/...`). So the
configuration (`mqtt.node_id`, `mqtt.base_topic`, `mqtt.discovery_prefix`) and the model's
labels (each one becomes a topic level) are checked against this rule before anything connects.

The rule (MQTT 3.1.1 sections 1.5.3 and 4.7, plus what Mosquitto enforces, measured with
Mosquitto 2.0: it disconnects on every class below):
- at least one character and at most 65,535 bytes of UTF-8;
- no U+0000, no control characters (C0 U+0001-U+001F, DEL U+007F, C1 U+0080-U+009F),
  no surrogates (not encodable as UTF-8) and no non-characters (U+FDD0-U+FDEF, U+xFFFE/U+xFFFF);
- a topic published to has no wildcard `+` or `#`;
- it does not begin with `$`.
"""

from __future__ import annotations

__all__ = ["MAX_STRING_BYTES", "MAX_TOPIC_BYTES", "level_problem", "string_problem", "topic_problem"]

MAX_STRING_BYTES = 65_535  # every UTF-8 string in an MQTT packet (topic, client id, user name)
MAX_TOPIC_BYTES = MAX_STRING_BYTES


def _char_problem(ch: str) -> str | None:
    """Why one character cannot appear in a topic, or None."""
    cp = ord(ch)
    if cp == 0:
        return "the NUL character U+0000"
    if cp < 0x20 or cp == 0x7F or 0x80 <= cp <= 0x9F:
        return f"the control character U+{cp:04X}"
    if 0xD800 <= cp <= 0xDFFF:
        return f"the lone surrogate U+{cp:04X} (not UTF-8)"
    if 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE:
        return f"the Unicode non-character U+{cp:04X}"
    return None


def _text_problem(text: str, wildcards: bool) -> str | None:
    """The checks a whole topic and a single level share: non-empty, allowed characters, wildcards."""
    if not text:
        return "is empty"
    for ch in text:
        why = _char_problem(ch)
        if why is not None:
            return f"contains {why}"
    if not wildcards and ("+" in text or "#" in text):
        return "contains an MQTT wildcard ('+' or '#')"
    return None


def topic_problem(topic: str, *, wildcards: bool = False) -> str | None:
    """Why `topic` cannot be published to (or subscribed to, with `wildcards`), or None if it can.

    The answer is a short phrase for an error message ("contains the control character
    U+0001", "is 70,010 bytes long; MQTT allows at most 65,535", ...).
    """
    why = _text_problem(topic, wildcards)
    if why is not None:
        return why
    size = len(topic.encode("utf-8", "surrogatepass"))
    if size > MAX_TOPIC_BYTES:
        return f"is {size:,} bytes long; MQTT allows at most {MAX_TOPIC_BYTES:,}"
    if topic.startswith("$"):
        return "begins with '$' (reserved for the broker's own topics: it drops messages there)"
    return None


def level_problem(level: str) -> str | None:
    """Why `level` cannot be one level inside a topic soundmon publishes to, or None.

    The character and wildcard rules of `topic_problem`, plus no '/'. Length and a leading '$'
    are properties of the whole topic: check the topics built from the level with `topic_problem`.
    """
    if "/" in level:
        return "contains '/' (it must be a single topic level)"
    return _text_problem(level, wildcards=False)


def string_problem(text: str) -> str | None:
    """Why `text` cannot be an MQTT UTF-8 string other than a topic (client id, user name), or None.

    Same characters as a topic and the same 65,535-byte limit; wildcards and '$' are fine here.
    An empty string is allowed (MQTT allows it; the caller decides whether it makes sense).
    """
    for ch in text:
        why = _char_problem(ch)
        if why is not None:
            return f"contains {why}"
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_STRING_BYTES:
        return f"is {size:,} bytes long; MQTT allows at most {MAX_STRING_BYTES:,}"
    return None
