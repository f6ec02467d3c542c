from __future__ import annotations

import pytest

from vpsctl.spec.units import (
    MIN_MEM_LIMIT,
    check_duration,
    format_size,
    human_size,
    parse_memory,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("256m", 256 * 1024**2),
        ("2g", 2 * 1024**3),
        ("1536MiB", 1536 * 1024**2),
        ("8GiB", 8 * 1024**3),
        ("512mb", 512 * 1024**2),  # Docker: every unit is binary
        ("1.5g", int(1.5 * 1024**3)),
        ("100", 100),
        (4096, 4096),
    ],
)
def test_parse_size_like_docker(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "12 parsecs", "-1g", "1.2.3g"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size like 256m"):
        parse_size(text)


def test_format_size_round_trips() -> None:
    for text in ("128m", "2g", "1536m", "7800m"):
        assert format_size(parse_size(text)) == text
    assert format_size(1000) == "1000"


def test_human_size() -> None:
    assert human_size(2 * 1024**3) == "2 GiB"
    assert human_size(1536 * 1024**2) == "1.50 GiB"
    assert human_size(256 * 1024**2) == "256 MiB"


@pytest.mark.parametrize("text", ["10s", "1m30s", "500ms", "2h"])
def test_durations(text: str) -> None:
    assert check_duration(text) == text


@pytest.mark.parametrize("text", ["10", "ten seconds", "1d", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration like"):
        check_duration(text)


@pytest.mark.parametrize("text", [256, "256", 0, "0"])
def test_memory_sizes_need_a_unit(text: str | int) -> None:
    with pytest.raises(ValueError, match="has no unit"):
        parse_memory(text)


def test_swap_zero_means_none_and_other_sizes_still_need_a_unit() -> None:
    assert parse_memory(0, zero_ok=True) == 0
    assert parse_memory("0", zero_ok=True) == 0
    assert parse_memory("2g", zero_ok=True) == 2 * 1024**3
    with pytest.raises(ValueError, match="or 0 for none"):
        parse_memory(2048, zero_ok=True)


def test_mem_limit_minimum_is_dockers() -> None:
    assert parse_memory("6m", minimum=MIN_MEM_LIMIT) == 6 * 1024**2
    for text in ("5m", "256b", "1k"):
        with pytest.raises(ValueError, match="smallest memory limit Docker accepts"):
            parse_memory(text, minimum=MIN_MEM_LIMIT)
