"""Issue 19: `--columns role=column` for files with a header, and delimiter sniffing."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from training.interactions import DataError
from training.readers import read_log

HEADED = "member,show,stars,ts\nm1,s1,5,100\nm2,s1,3,200\nm1,s2,4,300\n"


def write(path: Path, text: str) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def test_role_mapping_picks_columns_of_a_headed_file(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", HEADED.replace("stars", "grade"))
    inter = read_log(path, columns={"user": "member", "item": "show", "rating": "grade",
                                    "timestamp": "ts"})
    assert inter.users.to_list() == ["m1", "m2"] and inter.items.to_list() == ["s1", "s2"]
    assert inter.weights.tolist() == [5.0, 3.0, 4.0]
    assert inter.timestamps is not None and inter.timestamps.tolist() == [100, 200, 300]


def test_roles_left_out_of_the_mapping_are_found_by_name(tmp_path: Path) -> None:
    inter = read_log(write(tmp_path / "log.csv", HEADED), columns={"user": "member",
                                                                   "item": "show"})
    assert inter.weights.tolist() == [5.0, 3.0, 4.0]  # "stars" is a rating alias
    assert inter.timestamps is not None and inter.timestamps.tolist() == [100, 200, 300]


def test_mapping_to_a_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", HEADED)
    with pytest.raises(DataError, match=r"no column 'viewer'.*member, show, stars, ts"):
        read_log(path, columns={"user": "viewer", "item": "show"})


def test_mapping_with_an_unknown_role_names_the_roles(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", HEADED)
    with pytest.raises(DataError, match="unknown role.*viewer.*user, item, rating, timestamp"):
        read_log(path, columns={"viewer": "member", "item": "show"})


def test_mapping_for_parquet(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pd.DataFrame({"member": ["a", "b"], "show": ["x", "y"], "grade": [5, 1]}).to_parquet(path)
    inter = read_log(path, columns={"user": "member", "item": "show", "rating": "grade"})
    assert inter.users.to_list() == ["a", "b"] and inter.weights.tolist() == [5.0, 1.0]


@pytest.mark.parametrize("sep", [";", "\t", ",", "|"])
@pytest.mark.parametrize("name", ["log.csv", "log.tsv", "log.csv.gz"])
def test_delimiter_is_sniffed(tmp_path: Path, sep: str, name: str) -> None:
    path = write(tmp_path / name, HEADED.replace(",", sep).replace("member", "user")
                 .replace("show", "item"))
    inter = read_log(path)
    assert inter.users.to_list() == ["m1", "m2"] and inter.weights.tolist() == [5.0, 3.0, 4.0]


def test_sniffing_respects_quotes(tmp_path: Path) -> None:
    text = 'user;item;rating\n"a,1";x;5\n"b,2";y;4\n'
    inter = read_log(write(tmp_path / "log.csv", text))
    assert inter.users.to_list() == ["a,1", "b,2"]


def test_sniffing_a_headerless_file_with_positional_names(tmp_path: Path) -> None:
    inter = read_log(write(tmp_path / "log.csv", "u1;i1;4\nu2;i1;2\n"),
                     columns=["user", "item", "rating"])
    assert inter.users.to_list() == ["u1", "u2"] and inter.weights.tolist() == [4.0, 2.0]


def test_one_column_names_the_delimiter_it_saw(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user:item:rating\na:x:5\n")
    with pytest.raises(DataError, match=r"one column with the delimiter ','.*user:item:rating"):
        read_log(path)


def test_one_column_with_a_fixed_delimiter_names_it(tmp_path: Path) -> None:
    path = write(tmp_path / "user_artists.dat", "userID,artistID,weight\n1,2,3\n")
    with pytest.raises(DataError, match=r"one column with the delimiter '\\t'"):
        read_log(path)


def test_an_explicit_sep_is_not_sniffed(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user;item,x\na;b,c\n")
    inter = read_log(path, sep=";", columns={"item": "item,x"})
    assert inter.users.to_list() == ["a"] and inter.items.to_list() == ["b,c"]
    with pytest.raises(DataError, match="no user column"):  # sniffed: ',' splits it evenly
        read_log(path)
