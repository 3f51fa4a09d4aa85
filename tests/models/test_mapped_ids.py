"""The mapped id map (models/mapped_ids.py) answers as the in-memory dict (models/idmap.py).

Ids mix lengths (empty to 300 bytes), scripts (UTF-8 of 1 to 4 bytes a character, a lone
surrogate as a JSON list can carry), trailing NUL bytes (which a fixed-width numpy `S` array
would strip) and a pair with the same CRC-32 ("plumless", "buckeroo"), so that a hash
collision is looked up through its run.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from models.idmap import IdMap
from models.mapped_ids import map_ids, write_ids

ODD = ["plumless", "buckeroo", "", "a", "a\x00", "a\x00\x00", "é", "漢字カタカナ", "😀🎵",
       "\ud800", "x" * 300, "item 42", "42", "I42", "ǅ"]
UNKNOWN = ["b", "plumles", "a\x00\x00\x00", "x" * 299, "x" * 301, "漢字", "\udc00", " a",
           "A", "item42", "4", "none"]


def planted_ids(n: int = 2000) -> list[str]:
    """`ODD` among generated ids of very different lengths and scripts, shuffled."""
    rng = np.random.default_rng(0)
    made = [f"{'p' * int(rng.integers(0, 40))}-{i}-{'ü' * (i % 3)}" for i in range(n)]
    ids = [*ODD, *made]
    return [ids[i] for i in rng.permutation(len(ids))]


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> tuple[IdMap, IdMap]:
    ids = planted_ids()
    path = tmp_path_factory.mktemp("idmap") / "ids.npz"
    write_ids(path, ids)
    return IdMap.from_ids(ids), IdMap.mapped(map_ids(path))


def test_the_planted_pair_collides() -> None:
    assert zlib.crc32(b"plumless") == zlib.crc32(b"buckeroo")


def test_lookups_equal_the_dict(maps: tuple[IdMap, IdMap]) -> None:
    memory, mapped = maps
    assert mapped.is_mapped and not memory.is_mapped
    queries = [*memory.to_list(), *UNKNOWN]
    assert [mapped.get(x) for x in queries] == [memory.get(x) for x in queries]
    assert [mapped.get(x, -7) for x in UNKNOWN] == [-7] * len(UNKNOWN)
    np.testing.assert_array_equal(mapped.get_rows(queries), memory.get_rows(queries))
    np.testing.assert_array_equal(mapped.get_rows(queries, default=-9),
                                  memory.get_rows(queries, default=-9))
    assert [x in mapped for x in queries] == [x in memory for x in queries]
    assert all(mapped.row(x) == memory.row(x) for x in ODD)
    np.testing.assert_array_equal(mapped.rows(ODD), memory.rows(ODD))
    assert len(mapped) == len(memory) == len(ODD) + 2000
    assert mapped.ids.shape == memory.ids.shape
    assert mapped.get_rows([]).shape == (0,)


def test_unknown_ids_raise_naming_the_id(maps: tuple[IdMap, IdMap]) -> None:
    _, mapped = maps
    with pytest.raises(KeyError, match="plumles"):
        mapped.row("plumles")
    with pytest.raises(KeyError, match="'b'"):
        mapped.rows(["a", "b"])


def test_rows_to_ids_equal_the_dict(maps: tuple[IdMap, IdMap]) -> None:
    memory, mapped = maps
    assert mapped.to_list() == memory.to_list()
    assert list(mapped.ids) == list(memory.ids)
    rows = np.array([[3, 0], [len(memory) - 1, 7]])
    np.testing.assert_array_equal(mapped.ids[rows], memory.ids[rows])  # [2, 2] object arrays
    assert mapped.ids[rows].dtype == object
    assert mapped.ids[np.int64(5)] == memory.ids[5] and mapped.ids[-1] == memory.ids[-1]
    assert list(mapped.ids[2:9:3]) == list(memory.ids[2:9:3])
    mask = np.arange(len(memory)) % 7 == 0
    assert list(mapped.ids[mask]) == list(memory.ids[mask])
    np.testing.assert_array_equal(np.asarray(mapped.ids), memory.ids)
    with pytest.raises(IndexError):
        mapped.ids[len(memory)]
    sub = mapped.subset(np.array([4, 1]))
    assert sub.to_list() == [memory.ids[4], memory.ids[1]] and sub.row(memory.ids[1]) == 1


def test_extended_maps_append_rows(maps: tuple[IdMap, IdMap]) -> None:
    """Items PUT at run time get the rows after the version's; the mapped rows stay mapped."""
    memory, mapped = maps
    new = ["put-1", "ünïcode put", "put-2"]
    for base in (memory, mapped):
        grown = base.extended(new)
        assert grown.is_mapped == base.is_mapped and len(base) == len(memory)
        n = len(base)
        assert [grown.get(x) for x in new] == [n, n + 1, n + 2]
        assert grown.get("buckeroo") == memory.get("buckeroo")
        assert list(grown.get_rows(["put-2", "plumless", "nope"])) == [
            n + 2, memory.get("plumless"), -1]
        assert grown.ids[n + 1] == "ünïcode put" and grown.ids[-1] == "put-2"
        assert grown.to_list() == [*memory.to_list(), *new]
        with pytest.raises(ValueError, match="unique"):
            base.extended(["plumless"])
        with pytest.raises(ValueError, match="unique"):
            base.extended(["twice", "twice"])


def test_repeated_ids_are_refused_at_export(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="repeated id 'buckeroo'"):
        write_ids(tmp_path / "a.npz", ["plumless", "buckeroo", "c", "buckeroo"])
    with pytest.raises(ValueError, match="repeated id 'é'"):
        write_ids(tmp_path / "b.npz", ["é", "e", "é"])
    write_ids(tmp_path / "c.npz", ["plumless", "buckeroo"])  # same hash, different ids


def test_an_empty_map(tmp_path: Path) -> None:
    write_ids(tmp_path / "ids.npz", [])
    empty = IdMap.mapped(map_ids(tmp_path / "ids.npz"))
    assert len(empty) == 0 and empty.get("a") == -1 and empty.to_list() == []
    assert empty.extended(["a"]).get("a") == 0


def test_members_are_mapped_not_read(tmp_path: Path) -> None:
    """The service's map is file pages: every worker shares them (issue 21)."""
    path = tmp_path / "ids.npz"
    write_ids(path, planted_ids(5000))
    mapped = IdMap.mapped(map_ids(path))
    assert str(path.resolve()) in Path("/proc/self/maps").read_text()
    assert mapped.get("plumless") >= 0


def test_a_mapped_map_is_not_pickled(maps: tuple[IdMap, IdMap]) -> None:
    import pickle

    memory, mapped = maps
    assert pickle.loads(pickle.dumps(memory)).to_list() == memory.to_list()
    with pytest.raises(TypeError, match="mapped"):
        pickle.dumps(mapped)


def test_an_unknown_id_with_a_known_hash_is_unknown(tmp_path: Path) -> None:
    """"buckeroo" shares "plumless"'s CRC-32: the bytes tell them apart, one id or many."""
    write_ids(tmp_path / "ids.npz", ["x", "plumless", "y"])
    mapped = IdMap.mapped(map_ids(tmp_path / "ids.npz"))
    assert mapped.get("buckeroo") == -1 and "buckeroo" not in mapped
    assert mapped.get_rows(["buckeroo", "plumless", "y"]).tolist() == [-1, 1, 2]
