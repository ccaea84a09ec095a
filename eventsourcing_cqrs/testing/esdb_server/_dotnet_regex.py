""".NET regular expressions, as EventStoreDB's server-side filters see them, run on Python's ``re``.

EventStoreDB 24.10 compiles a filter's regex with ``new Regex(expression, RegexOptions.Compiled)``
(``src/EventStore.Core/Services/Storage/ReaderIndex/EventFilter.cs``) and matches with
``Regex.Match(value).Success``: an unanchored search, case-sensitive, no other options. A pattern
``new Regex`` rejects throws out of ``Streams.ConvertToEventFilter`` (``Streams.Read.cs``) before
anything is sent, and grpc-dotnet turns that unhandled exception into ``UNKNOWN`` "Exception was
thrown by handler." (the server does not enable detailed errors, ``ClusterVNodeStartup.cs``).

:func:`translate` rewrites .NET syntax to Python syntax and rejects what .NET rejects but Python
would accept; :func:`compile_dotnet` does that and compiles. Translated:

- named groups ``(?<name>...)`` and ``(?'name'...)`` → ``(?P<name>...)``;
- named backreferences ``\\k<name>``, ``\\k'name'`` (and numbered ``\\k<1>``) → ``(?P=name)`` / ``(?:\\1)``;
- ``\\z`` (absolute end) → ``\\Z``; ``\\Z`` (end, or before a final newline) → ``(?=\\n?\\Z)``;
- ``\\e`` → ``\\x1b``; ``\\cX`` (control character) → ``\\xNN``; ``\\G`` → ``\\A`` (one ``Match``
  call from the start, so "where the previous match ended" is the start);
- ``{,n}`` is literal text in .NET (Python reads it as ``{0,n}``): it is escaped.

Rejected (Python accepts them, .NET throws ``RegexParseException``):
``(?P<name>...)``, ``(?P=name)``, ``(?P>name)``; possessive quantifiers ``*+ ++ ?+ {n}+`` (.NET: "Nested
quantifier"); ``\\N{NAME}`` and ``\\U0010FFFF`` escapes; inline flags .NET does not know (``a``, ``L``,
``u``).

Remaining divergences (documented, not emulated):

- Unicode categories ``\\p{L}`` / ``\\P{...}``, character-class subtraction ``[a-z-[aeiou]]``,
  balancing groups ``(?<open-close>...)`` and the inline option ``n`` (explicit capture) are valid
  .NET but Python's ``re`` rejects them: such a filter is reported as invalid here although a real
  server would accept it.
- ``\\w``, ``\\d``, ``\\s`` and ``\\b`` follow Python's Unicode tables, which differ from .NET's in a
  few categories (e.g. .NET ``\\w`` includes ``Mn``/``Pc``/``Lm``; Python's is ``str.isalnum`` plus ``_``).
- .NET matches a timeout and culture rules never apply to these options; a .NET regex that takes
  exponential time would run just as long in Python.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["DotnetRegexError", "compile_dotnet", "translate"]

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
_INLINE_FLAGS: Final = frozenset("imnsx-")


class DotnetRegexError(ValueError):
    """A pattern that .NET's ``Regex`` constructor would reject (or ``re`` cannot run)."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"Invalid .NET regular expression {pattern!r}: {reason}")
        self.pattern = pattern
        self.reason = reason


def compile_dotnet(pattern: str) -> re.Pattern[str]:
    """Translate ``pattern`` from .NET syntax and compile it; raise :class:`DotnetRegexError`."""
    translated = translate(pattern)
    try:
        return re.compile(translated)
    except re.error as exc:
        raise DotnetRegexError(pattern, str(exc)) from None


def translate(pattern: str) -> str:
    """Rewrite a .NET regular expression as an equivalent Python one (see the module docstring)."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    in_class = False
    previous_was_quantifier = False
    while i < n:
        char = pattern[i]
        quantifier = False
        if char == "\\":
            if i + 1 >= n:
                raise DotnetRegexError(pattern, "illegal \\ at end of pattern")
            escaped = pattern[i + 1]
            if escaped == "k" and not in_class:
                name, i = _group_name_after(pattern, i + 2)
                out.append(f"(?:\\{name})" if name.isdigit() else f"(?P={name})")
                previous_was_quantifier = False
                continue
            if escaped in "NU":
                raise DotnetRegexError(pattern, f"unrecognized escape sequence \\{escaped}")
            if escaped == "c":
                if i + 2 >= n or not pattern[i + 2].isascii() or not pattern[i + 2].isalpha():
                    raise DotnetRegexError(pattern, "missing control character")
                out.append(f"\\x{ord(pattern[i + 2].upper()) - 64:02x}")
                i += 3
                previous_was_quantifier = False
                continue
            if escaped == "e":
                out.append("\\x1b")
            elif escaped == "z" and not in_class:
                out.append("\\Z")
            elif escaped == "Z" and not in_class:
                out.append("(?=\\n?\\Z)")
            elif escaped == "G" and not in_class:
                out.append("\\A")
            else:
                out.append(pattern[i : i + 2])
            i += 2
        elif in_class:
            out.append(char)
            if char == "]":
                in_class = False
            i += 1
        elif char == "[":
            in_class = True
            out.append(char)
            i += 1
            # A ']' (after an optional '^') right at the start is a literal in both dialects.
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append("\\]")
                i += 1
        elif char == "(" and pattern.startswith("(?", i):
            i = _group_opening(pattern, i, out)
        elif char in "*+?":
            if char == "+" and previous_was_quantifier:
                # "a*+" and "a{2}+" are possessive in Python 3.11 but a nested quantifier in .NET.
                raise DotnetRegexError(pattern, f"nested quantifier '+' at position {i}")
            if char == "?" and previous_was_quantifier:
                out.append(char)  # lazy modifier of the previous quantifier
                i += 1
                previous_was_quantifier = False
                continue
            out.append(char)
            i += 1
            quantifier = True
        elif char == "{":
            close = pattern.find("}", i)
            body = pattern[i + 1 : close] if close != -1 else ""
            if close != -1 and re.fullmatch(r"[0-9]+(,[0-9]*)?", body):
                out.append(pattern[i : close + 1])
                i = close + 1
                quantifier = True
            else:
                out.append("\\{")  # .NET reads anything else, including "{,n}", as literal text
                i += 1
        else:
            out.append(char)
            i += 1
        previous_was_quantifier = quantifier
    if in_class:
        raise DotnetRegexError(pattern, "unterminated [] set")
    return "".join(out)


def _group_name_after(pattern: str, index: int) -> tuple[str, int]:
    """Parse ``<name>`` or ``'name'`` at ``index``; return the name and the index after it."""
    if index >= len(pattern) or pattern[index] not in "<'":
        raise DotnetRegexError(pattern, "malformed \\k<...> named back reference")
    closer = ">" if pattern[index] == "<" else "'"
    end = pattern.find(closer, index + 1)
    name = pattern[index + 1 : end] if end != -1 else ""
    if not _NAME.fullmatch(name):
        raise DotnetRegexError(pattern, f"invalid group name {name!r}")
    return name, end + 1


def _group_opening(pattern: str, index: int, out: list[str]) -> int:
    """Translate the ``(?...`` construct at ``index``; return the index after its opening."""
    rest = pattern[index + 2 :]
    if rest.startswith("P"):
        raise DotnetRegexError(pattern, f"unrecognized grouping construct at position {index}")
    if rest.startswith(("<=", "<!")):
        out.append(pattern[index : index + 4])
        return index + 4
    if rest.startswith(("<", "'")):
        name, after = _group_name_after(pattern, index + 2)
        if name.isdigit():
            out.append("(")  # a numbered group (?<1>...) is an ordinary capturing group
        else:
            out.append(f"(?P<{name}>")
        return after
    flags = re.match(r"[A-Za-z-]*", rest)
    letters = flags.group(0) if flags else ""
    if letters and rest[len(letters) : len(letters) + 1] in (":", ")"):
        unknown = set(letters) - _INLINE_FLAGS
        if unknown:  # e.g. Python's "a", "L", "u"
            raise DotnetRegexError(pattern, f"unrecognized inline option(s) {''.join(sorted(unknown))!r}")
    out.append("(?")
    return index + 2
