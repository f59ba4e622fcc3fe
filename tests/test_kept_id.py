"""The node id kept in a state folder: made once, read back, one running node per folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from mycelium_p2p.node.kept_id import ID_FILE, StateDirError, claim


def test_the_id_is_made_once_and_read_back(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "state"  # made with its parents
    made, lock = claim(folder)
    lock.close()
    again, lock = claim(folder)
    lock.close()
    assert made == again and len(made) == 12 and int(made, 16) >= 0
    assert (folder / ID_FILE).read_text() == made + "\n"


def test_one_running_node_per_folder(tmp_path: Path) -> None:
    _, held = claim(tmp_path)
    try:
        with pytest.raises(StateDirError, match="in use by another running node"):
            claim(tmp_path)
    finally:
        held.close()
    _, lock = claim(tmp_path)  # free again once the holder is gone
    lock.close()


@pytest.mark.parametrize("content", ["not an id\n", "ABCDEF012345", "0123456789abc", "\n"])
def test_a_file_that_is_not_an_id_is_refused_by_name(tmp_path: Path, content: str) -> None:
    (tmp_path / ID_FILE).write_text(content)
    with pytest.raises(StateDirError, match="does not hold a node id"):
        claim(tmp_path)
    _, lock = claim_after_fix(tmp_path)
    lock.close()


def claim_after_fix(folder: Path) -> tuple[str, object]:
    """Removing the bad file (what the error says to do) makes the folder usable again."""
    (folder / ID_FILE).unlink()
    return claim(folder)


def test_a_folder_that_cannot_be_made_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StateDirError, match="cannot use state folder"):
        claim(tmp_path / "file" / "state")
