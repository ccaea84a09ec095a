"""The .NET-to-Python regex translation that a strict test server applies to filters."""

from __future__ import annotations

import pytest

from eventsourcing_cqrs.testing.esdb_server._dotnet_regex import DotnetRegexError, compile_dotnet, translate


@pytest.mark.parametrize(
    ("dotnet", "python"),
    [
        (r"(?<kind>Order)\k<kind>", r"(?P<kind>Order)(?P=kind)"),
        (r"(?'kind'Order)\k'kind'", r"(?P<kind>Order)(?P=kind)"),
        (r"(a)\k<1>", r"(a)(?:\1)"),
        (r"(?<=a)b(?<!c)", r"(?<=a)b(?<!c)"),
        (r"^(?!(\$.+$|PersistentConfig\d+$))", r"^(?!(\$.+$|PersistentConfig\d+$))"),
        (r"a\z", r"a\Z"),
        (r"a\Z", r"a(?=\n?\Z)"),
        (r"\cA\e", r"\x01\x1b"),
        (r"a{,3}", r"a\{,3}"),
        (r"a{2,3}?b{2}c{1,}", r"a{2,3}?b{2}c{1,}"),
        (r"[(?<x>)\k]", r"[(?<x>)\k]"),
        (r"[]a]", r"[\]a]"),
        (r"(?i:abc)(?s)", r"(?i:abc)(?s)"),
    ],
)
def test_dotnet_syntax_is_translated(dotnet: str, python: str) -> None:
    assert translate(dotnet) == python


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?P<name>a)",
        r"(?P=name)",
        r"(?P>name)",
        r"a*+",
        r"a++",
        r"a?+",
        r"a{2}+",
        r"(?a)x",
        r"(?u:x)",
        r"\N{DIGIT ONE}",
        r"\U0001F600",
        r"[abc",
        "a\\",
        r"\k<>",
    ],
)
def test_what_dotnet_rejects_is_rejected_even_where_python_accepts_it(pattern: str) -> None:
    with pytest.raises(DotnetRegexError):
        compile_dotnet(pattern)


def test_compiled_patterns_search_unanchored_as_regex_match_does() -> None:
    assert compile_dotnet(r"(?<w>ab)\k<w>").search("xxababyy") is not None
    assert compile_dotnet(r"end\Z").search("the end\n") is not None
    assert compile_dotnet(r"end\z").search("the end\n") is None
    assert compile_dotnet(r"a{,3}").search("a{,3}") is not None


def test_remaining_divergences_fail_as_invalid_rather_than_silently() -> None:
    # Valid .NET, unsupported by Python's re: reported as invalid (documented in the module).
    for pattern in (r"\p{L}+", r"(?n)(a)"):
        with pytest.raises(DotnetRegexError):
            compile_dotnet(pattern)
