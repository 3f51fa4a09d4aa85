"""Text readers: Amazon reviews, MovieLens and Last.fm item text, generic tables, errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from training.interactions import DataError
from training.text.readers import detect_item_text_format, read_item_text, read_reviews


def _amazon(path: Path, rows: list[dict]) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def test_reviews_join_summary_and_text_and_drop_blank_pairs(tmp_path: Path) -> None:
    path = _amazon(tmp_path / "reviews_X_5.json.gz", [
        {"reviewerID": "A1", "asin": "0012", "summary": "Great strings.",
         "reviewText": "Bright tone", "overall": 5.0},
        {"reviewerID": "A2", "asin": "0012", "summary": "", "reviewText": "", "overall": 1.0},
        {"reviewerID": "A2", "asin": "0099", "summary": "meh", "overall": 3.0},
        {"reviewerID": "A1", "asin": "0012", "summary": "again", "reviewText": "still good"},
    ])
    reviews = read_reviews(path)
    pairs = dict(zip(zip(reviews.user_ids, reviews.item_ids, strict=True), reviews.texts,
                     strict=True))
    # ids stay strings ("0012" is not 12); a pair reviewed twice gets both texts
    assert pairs == {("A1", "0012"): "Great strings. Bright tone. again. still good",
                     ("A2", "0099"): "meh"}
    assert len(reviews) == 2
    assert reviews.ratings is not None
    ratings = dict(zip(zip(reviews.user_ids, reviews.item_ids, strict=True),
                       reviews.ratings.tolist(), strict=True))
    assert ratings[("A1", "0012")] == 5.0 and ratings[("A2", "0099")] == 3.0


def test_reviews_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_reviews(tmp_path / "missing.json")
    path = _amazon(tmp_path / "r.json", [{"reviewerID": "A", "asin": "b", "overall": 4}])
    with pytest.raises(DataError, match="no review text"):
        read_reviews(path)


def _movielens(folder: Path, with_tags: bool = True) -> Path:
    folder.mkdir()
    (folder / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
        '2,"Heat, The (1995)",Action|Crime\n3,Nothing (2000),(no genres listed)\n')
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4,1\n")
    if with_tags:
        (folder / "tags.csv").write_text(
            "userId,movieId,tag,timestamp\n1,1,pixar,1\n2,1,Fun,2\n3,1,Pixar,3\n"
            "1,2,heist,4\n")
    return folder


def test_movielens_titles_genres_and_tags_by_frequency(tmp_path: Path) -> None:
    folder = _movielens(tmp_path / "ml")
    for path in (folder, folder / "ratings.csv", folder / "movies.csv"):
        assert detect_item_text_format(path) == "movielens"
        texts = read_item_text(path).as_dict()
        assert texts == {
            "1": "Toy Story (1995). Genres: Adventure, Animation. Tags: pixar, fun.",
            "2": "Heat, The (1995). Genres: Action, Crime. Tags: heist.",
            "3": "Nothing (2000).",
        }


def test_movielens_without_tags(tmp_path: Path) -> None:
    texts = read_item_text(_movielens(tmp_path / "ml", with_tags=False)).as_dict()
    assert texts["1"] == "Toy Story (1995). Genres: Adventure, Animation."


def test_lastfm_names_and_tags(tmp_path: Path) -> None:
    folder = tmp_path / "lastfm"
    folder.mkdir()
    (folder / "artists.dat").write_text(
        "id\tname\turl\tpictureURL\n1\tMALICE MIZER\thttp://a\thttp://b\n"
        "7\tBjörk\thttp://c\thttp://d\n", encoding="utf-8")
    (folder / "tags.dat").write_bytes("tagID\ttagValue\r\n1\tmetal\r\n2\tcafé\r\n".encode(
        "latin-1"))
    (folder / "user_taggedartists.dat").write_text(
        "userID\tartistID\ttagID\tday\tmonth\tyear\n2\t1\t1\t1\t4\t2009\n3\t1\t2\t1\t4\t2009\n"
        "4\t1\t2\t1\t4\t2009\n")
    (folder / "user_artists.dat").write_text("userID\tartistID\tweight\n2\t1\t10\n")
    assert detect_item_text_format(folder / "user_artists.dat") == "lastfm"
    texts = read_item_text(folder / "user_artists.dat").as_dict()
    assert texts == {"1": "MALICE MIZER. Tags: café, metal.", "7": "Björk."}


def test_generic_table(tmp_path: Path) -> None:
    path = tmp_path / "items.tsv"
    path.write_text("item_id\ttitle\tdescription\n0012\tRed guitar\tsix strings\n9\t\t\n")
    assert read_item_text(path).as_dict() == {"0012": "Red guitar. six strings"}
    bad = tmp_path / "bad.csv"
    bad.write_text("item,price\n1,3\n")
    with pytest.raises(DataError, match="no text column"):
        read_item_text(bad)


def test_item_text_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_item_text(tmp_path / "nothing.csv")
    odd = tmp_path / "x.bin"
    odd.write_text("")
    with pytest.raises(DataError, match="cannot tell the item-text format"):
        read_item_text(odd)
