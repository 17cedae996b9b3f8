import json
from collections import Counter

import pytest

from smallfleet.data import holdout_split, load_examples, validate_classification
from smallfleet.errors import DataError


def jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_bad_json_line_names_file_and_line(tmp_path):
    p = jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "x"}, '{"text": "b", "label": ', {"text": "c", "label": "y"}])
    with pytest.raises(DataError, match=rf"{p}:2: not valid JSON"):
        load_examples(p)


def test_missing_field_in_some_rows_names_each_line(tmp_path):
    p = jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}, {"label": "y"}])
    with pytest.raises(DataError) as err:
        load_examples(p)
    assert f"{p}:2: missing field 'label'" in str(err.value)
    assert f"{p}:3: missing field 'text'" in str(err.value)


def test_label_column_that_does_not_exist_is_one_message_listing_fields(tmp_path):
    p = jsonl(tmp_path / "d.jsonl", [{"text": "a", "intent": "x"}, {"text": "b", "intent": "y"}])
    with pytest.raises(DataError, match=r"field 'label' does not exist in this file \(fields found: intent, text\)"):
        load_examples(p)


@pytest.mark.parametrize("name, content", [("e.jsonl", ""), ("e.jsonl", "\n\n"), ("e.csv", ""), ("e.csv", "text,label\n")])
def test_empty_file_is_an_error(tmp_path, name, content):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(DataError, match=rf"{p}: file is empty"):
        load_examples(p)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "d.parquet").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        load_examples(tmp_path / "d.parquet")


def test_csv_with_quoted_commas_and_line_numbers(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('review,stars\n"good, really",pos\n"bad ""very"" bad",neg\n')
    rows = load_examples(p, "review", "stars")
    assert [(r.text, r.label, r.line) for r in rows] == [("good, really", "pos", 2), ('bad "very" bad', "neg", 3)]


def test_empty_text_and_missing_label_are_errors_with_lines(tmp_path):
    p = jsonl(tmp_path / "d.jsonl", [{"text": "ok", "label": "x"}, {"text": "  ", "label": "x"}, {"text": "t", "label": ""}])
    rows = load_examples(p)
    with pytest.raises(DataError) as err:
        validate_classification(rows)
    assert f"{p}:2: empty text" in str(err.value) and f"{p}:3: missing label" in str(err.value)


def test_label_with_one_example_is_an_error(tmp_path):
    p = jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": "a"} for i in range(3)] + [{"text": "u", "label": "b"}])
    with pytest.raises(DataError, match=rf"{p}:4: label 'b' has 1 example"):
        validate_classification(load_examples(p))


def test_duplicates_dropped_and_leaks_warned_once_each(tmp_path):
    train = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(10)] + [{"text": "t1", "label": "b"}] * 3
    test = [{"text": "t1", "label": "b"}, {"text": "t2", "label": "a"}, {"text": "new", "label": "zzz"}]
    rows, report = validate_classification(
        load_examples(jsonl(tmp_path / "tr.jsonl", train)), None, load_examples(jsonl(tmp_path / "te.jsonl", test))
    )
    assert len(rows) == 10 and report.dropped_duplicates == 3
    joined = "\n".join(report.warnings)
    assert "dropped 3 exact duplicate" in joined
    assert "2 of 3 test rows also appear in the training data" in joined
    assert "never seen in training ('zzz')" in joined
    assert len(report.warnings) == 3


def test_stratified_split_is_seeded_and_keeps_every_label(tmp_path):
    rows = [{"text": f"t{i}", "label": "a" if i < 40 else "b" if i < 48 else "c"} for i in range(50)]
    examples = load_examples(jsonl(tmp_path / "d.jsonl", rows))
    train, valid, _ = holdout_split(examples, 0.25, seed=1, label=lambda ex: ex.label)
    again, _, _ = holdout_split(examples, 0.25, seed=1, label=lambda ex: ex.label)
    assert [e.text for e in train] == [e.text for e in again]
    assert Counter(e.label for e in valid) == {"a": 10, "b": 2, "c": 1}
    assert {e.label for e in train} == {"a", "b", "c"}
    assert not {e.text for e in train} & {e.text for e in valid}
