from __future__ import annotations

from clonechat.providers.stops import StopSequenceFilter


def run(pieces: list[str], stops: list[str]) -> tuple[str, str | None]:
    f = StopSequenceFilter(stops)
    out = "".join(f.feed(p) for p in pieces)
    if f.matched is None:
        out += f.flush()
    return out, f.matched


def test_stop_split_across_pieces_is_never_shown() -> None:
    f = StopSequenceFilter(["^C^C"])
    assert f.feed("bye ^") == "bye "
    assert f.feed("C^") == ""
    assert f.feed("C tail") == ""
    assert f.matched == "^C^C"


def test_false_start_is_released() -> None:
    assert run(["a ^", "C b"], ["^C^C"]) == ("a ^C b", None)
    assert run(["ends with ^C"], ["^C^C"]) == ("ends with ^C", None)


def test_earliest_of_several_stops_wins() -> None:
    assert run(["x END y ^C^C"], ["^C^C", "END"]) == ("x ", "END")


def test_no_stops_passes_everything() -> None:
    assert run(["a", "b"], []) == ("ab", None)
