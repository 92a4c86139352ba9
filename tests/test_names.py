"""Names that become file names and database keys: a trailing newline is a path trick too."""

from __future__ import annotations

import pytest

from tcpkit.release.names import InvalidNameError, check_component, check_notebook, check_researcher
from tcpkit.release.store import InvalidDigestError, ObjectStore


@pytest.mark.parametrize(
    ("check", "good"),
    [(check_component, "statistics"), (check_notebook, "statistics.ipynb"), (check_researcher, "ada")],
)
def test_trailing_newline_and_separators_are_refused(check: object, good: str) -> None:
    assert check(good) == good  # type: ignore[operator]
    for bad in (good + "\n", good + "\n\n", "../" + good, good + "/x", ""):
        with pytest.raises(InvalidNameError):
            check(bad)  # type: ignore[operator]


def test_digest_with_trailing_newline_is_refused(tmp_path: object) -> None:
    from pathlib import Path

    store = ObjectStore(Path(str(tmp_path)) / "objects")
    digest = store.put_bytes(b"x")
    assert store.get_bytes(digest) == b"x"
    with pytest.raises(InvalidDigestError):
        store.get_bytes(digest + "\n")
