from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """The path of a file in ../shared/data, or a skip saying it is absent."""

    def path(relative: str) -> Path:
        p = SHARED_DATA / relative
        if not p.exists():
            pytest.skip(f"{p} is absent: the shared data set is not beside this checkout (see README, Data)")
        return p

    return path
