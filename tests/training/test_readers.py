"""Readers: every format, detection from names, overrides, and each error's message."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.interactions import DataError
from training.readers import FORMATS, detect_format, read_log


def write(path: Path, text: str, newline: str = "\n") -> Path:
    data = text.replace("\n", newline).encode()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def ids(inter, rows: np.ndarray, which: str = "users") -> list[str]:
    return [str(x) for x in getattr(inter, which).ids[rows]]


@pytest.mark.parametrize("name, fmt", [
    ("u.data", "ml-100k"), ("u1.base", "ml-100k"), ("ua.test", "ml-100k"),
    ("ratings.dat", "ml-1m"), ("ratings.dat.gz", "ml-1m"), ("ratings.csv", "ml-latest"),
    ("reviews_Musical_Instruments_5.json.gz", "amazon"), ("Digital_Music_5.json", "amazon"),
    ("log.jsonl", "amazon"), ("user_artists.dat", "lastfm"), ("events.csv", "csv"),
    ("ratings_user_item_rating.csv.gz", "csv"), ("LOG.TSV", "tsv"), ("log.tsv.gz", "tsv"),
    ("log.parquet", "parquet"),
])
def test_detect_format_from_name(name: str, fmt: str) -> None:
    assert detect_format(Path("/some/dir") / name) == fmt
    assert fmt in FORMATS


def test_ml_100k(tmp_path: Path) -> None:
    path = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
                                      "196\t302\t5\t881250950\n")
    inter = read_log(path)
    assert inter.users.to_list() == ["196", "186"]  # rows by first appearance
    assert inter.items.to_list() == ["242", "302"]
    assert inter.user_rows.tolist() == [0, 1, 0]
    assert inter.item_rows.tolist() == [0, 1, 1]
    assert inter.weights.tolist() == [3.0, 3.0, 5.0]
    assert inter.weights.dtype == np.float32
    assert inter.timestamps is not None and inter.timestamps.dtype == np.int64
    assert inter.timestamps.tolist() == [881250949, 891717742, 881250950]


@pytest.mark.parametrize("name", ["ratings.dat", "ratings.dat.gz"])
def test_ml_1m(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, "1::1193::5::978300760\n1::661::3::978302109\n"
                                  "2::1193::4::978298413\n")
    inter = read_log(path)
    assert inter.users.to_list() == ["1", "2"]
    assert inter.items.to_list() == ["1193", "661"]
    assert inter.weights.tolist() == [5.0, 3.0, 4.0]
    assert inter.timestamps is not None and inter.timestamps.tolist()[0] == 978300760


def test_ml_latest(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n"
                                           "1,1,4.0,964982703\n1,3,4.5,964981247\n")
    inter = read_log(path)
    assert inter.items.to_list() == ["1", "3"]
    assert inter.weights.tolist() == [4.0, 4.5]
    assert inter.timestamps is not None and inter.timestamps.tolist() == [964982703, 964981247]


def amazon_lines() -> str:
    rows = [
        {"reviewerID": "A2IBPI", "asin": "0006428320", "reviewerName": "x", "helpful": [0, 0],
         "reviewText": "fine", "overall": 5.0, "summary": "s", "unixReviewTime": 1393545600,
         "reviewTime": "02 28, 2014"},
        {"reviewerID": "A14VAT", "asin": "B00004Y2UT", "overall": 3.0,
         "unixReviewTime": 1363392000, "reviewText": "ok"},
        {"reviewerID": "A2IBPI", "asin": "B00004Y2UT", "overall": 4.0,
         "unixReviewTime": 1377648000},
    ]
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.mark.parametrize("name", ["reviews_Musical_Instruments_5.json", "reviews_5.json.gz"])
def test_amazon(tmp_path: Path, name: str) -> None:
    inter = read_log(write(tmp_path / name, amazon_lines()))
    assert inter.users.to_list() == ["A2IBPI", "A14VAT"]
    assert inter.items.to_list() == ["0006428320", "B00004Y2UT"]  # leading zeros kept
    assert inter.weights.tolist() == [5.0, 3.0, 4.0]
    assert inter.timestamps is not None
    assert inter.timestamps.tolist() == [1393545600, 1363392000, 1377648000]


def test_lastfm_play_counts_crlf(tmp_path: Path) -> None:
    path = write(tmp_path / "user_artists.dat",
                 "userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n3\t51\t7\n", "\r\n")
    inter = read_log(path)
    assert inter.users.to_list() == ["2", "3"]
    assert inter.items.to_list() == ["51", "52"]
    assert inter.weights.tolist() == [13883.0, 11690.0, 7.0]
    assert inter.timestamps is None


@pytest.mark.parametrize("name", ["log.csv", "log.csv.gz"])
def test_generic_csv_and_gzip(tmp_path: Path, name: str) -> None:
    inter = read_log(write(tmp_path / name, "user,item,rating\n007,a,5\n8,b,1\n"))
    assert inter.users.to_list() == ["007", "8"]  # ids are strings, never re-formatted
    assert inter.weights.tolist() == [5.0, 1.0]
    assert inter.timestamps is None


def test_csv_aliases_and_no_rating(tmp_path: Path) -> None:
    inter = read_log(write(tmp_path / "log.csv", "User_ID,Item_Id,extra\nu1,i1,x\nu2,i1,y\n"))
    assert inter.users.to_list() == ["u1", "u2"]
    assert inter.items.to_list() == ["i1"]
    assert inter.weights.tolist() == [1.0, 1.0]  # no rating column: every weight is 1


def test_tsv(tmp_path: Path) -> None:
    inter = read_log(write(tmp_path / "log.tsv", "user\titem\tweight\ttimestamp\n"
                                                 "a\tx\t2\t10\nb\ty\t3\t20\n"))
    assert inter.weights.tolist() == [2.0, 3.0]
    assert inter.timestamps is not None and inter.timestamps.tolist() == [10, 20]


def test_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": [10, 11, 10], "item_id": ["a", "b", "b"],
                          "rating": [5, 2, 4],
                          "timestamp": pd.to_datetime([10, 86400, 1577836800], unit="s")})
    path = tmp_path / "log.parquet"
    frame.to_parquet(path)
    inter = read_log(path)
    assert inter.users.to_list() == ["10", "11"]
    assert inter.weights.tolist() == [5.0, 2.0, 4.0]
    assert inter.timestamps is not None
    assert inter.timestamps.tolist() == [10, 86400, 1577836800]


def test_parquet_positional_columns(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pd.DataFrame({"a": ["u1", "u2"], "b": ["i1", "i2"]}).to_parquet(path)
    inter = read_log(path, columns=["user", "item"])
    assert inter.items.to_list() == ["i1", "i2"]


def test_date_string_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item,time\na,x,1970-01-01T00:01:00Z\n"
                                       "a,y,1970-01-02 00:00:00\na,z,1970-01-03\n")
    inter = read_log(path)
    assert inter.timestamps is not None and inter.timestamps.tolist() == [60, 86400, 172800]


def test_positional_columns_for_headerless_file(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "u1,i1,4,100\nu2,i1,2,200\n")
    inter = read_log(path, columns=["user", "item", "rating", "timestamp"])
    assert inter.users.to_list() == ["u1", "u2"]
    assert inter.weights.tolist() == [4.0, 2.0]
    assert inter.timestamps is not None and inter.timestamps.tolist() == [100, 200]
    only_ids = read_log(path, columns=["user", "item"])  # trailing columns ignored
    assert only_ids.weights.tolist() == [1.0, 1.0] and only_ids.timestamps is None


def test_positional_columns_on_file_with_header_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item,rating\nu1,i1,4\n")
    with pytest.raises(DataError, match="columns="):
        read_log(path, columns=["user", "item", "rating"])


def test_format_override(tmp_path: Path) -> None:
    path = write(tmp_path / "export.txt", "u1\ti1\t5\t1\nu2\ti2\t3\t2\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_log(path)
    inter = read_log(path, fmt="ml-100k")
    assert inter.weights.tolist() == [5.0, 3.0]
    # a name that detects as ml-latest read as plain csv
    named = write(tmp_path / "ratings.csv", "user,item\na,b\n")
    assert read_log(named, fmt="CSV").items.to_list() == ["b"]


def test_sep_override(tmp_path: Path) -> None:
    inter = read_log(write(tmp_path / "log.csv", "user;item;rating\na;x;5\n"), sep=";")
    assert inter.users.to_list() == ["a"] and inter.weights.tolist() == [5.0]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "u.data"
    with pytest.raises(DataError, match="no such file") as err:
        read_log(missing)
    assert str(missing) in str(err.value)


def test_unknown_format_lists_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item\na,b\n")
    with pytest.raises(DataError, match="unknown format 'xlsx'") as err:
        read_log(path, fmt="xlsx")
    assert all(fmt in str(err.value) for fmt in FORMATS)


def test_unknown_name_lists_known_formats(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="ml-100k, ml-1m"):
        detect_format(tmp_path / "data.bin")


def test_missing_column_says_which_and_what_exists(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,product_code,rating\na,b,5\n")
    with pytest.raises(DataError, match="no item column") as err:
        read_log(path)
    assert "user, product_code, rating" in str(err.value)


def test_missing_json_field(tmp_path: Path) -> None:
    path = write(tmp_path / "x_5.json", json.dumps({"reviewerID": "a", "overall": 5}) + "\n")
    with pytest.raises(DataError, match="no item column"):
        read_log(path)


@pytest.mark.parametrize("name, text, message", [
    ("log.csv", "", "is empty"),
    ("log.csv.gz", "", "is empty"),
    ("log.csv", "user,item,rating\n", "no interactions"),
    ("u.data", "", "no interactions"),
    ("reviews_5.json", "", "is empty"),
])
def test_empty_file(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_log(write(tmp_path / name, text))


def test_missing_ids_and_bad_ratings_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="1 rows have no item id"):
        read_log(write(tmp_path / "a.csv", "user,item\na,x\nb,\n"))
    with pytest.raises(DataError, match="non-numeric .*'five'"):
        read_log(write(tmp_path / "b.csv", "user,item,rating\na,x,five\n"))
