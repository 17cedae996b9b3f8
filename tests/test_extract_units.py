"""Extraction building blocks without a model: schema types and errors, value alignment,
BIO conversion, span scoring, data loading errors."""

import json

import pytest

from smallfleet.errors import ConfigError, DataError
from smallfleet.tasks.extract.align import Span, align_values, bio_to_spans, find_value, spans_to_bio
from smallfleet.tasks.extract.data import check_example, load_bio_rows, load_value_rows
from smallfleet.tasks.extract.metrics import field_scores, span_scores
from smallfleet.tasks.extract.schema import NormalizeError, Schema

SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "description": "order number"},
        "amount": {"type": "number"},
        "items": {"type": "integer"},
        "date": {"type": "string", "format": "date"},
        "plan": {"enum": ["Free", "Pro", "Platinum"]},
    },
    "required": ["order_id"],
}


def test_schema_normalizes_each_type():
    schema = Schema.from_dict(SCHEMA)
    record, problems = schema.normalize_record(
        {"order_id": " A-12\n", "amount": "RM 1,234.50", "items": "3", "date": "25/12/2018", "plan": "pro"}
    )
    assert problems == []
    assert record == {"order_id": "A-12", "amount": 1234.5, "items": 3, "date": "2018-12-25", "plan": "Pro"}
    assert schema.fields["date"].normalize("March 4, 2019") == "2019-03-04"
    assert schema.fields["amount"].normalize("12,50") == 12.5
    with pytest.raises(NormalizeError):
        schema.fields["items"].normalize("2.5")


def test_schema_reports_bad_values_and_missing_required():
    schema = Schema.from_dict(SCHEMA)
    _, problems = schema.normalize_record({"amount": "lots", "plan": "Gold"})
    assert "missing required field 'order_id'" in problems
    assert any(p.startswith("amount: 'lots' is not a valid number") for p in problems)
    assert any(p.startswith("plan: 'Gold' is not a valid enum") for p in problems)


def test_unknown_type_names_the_property_and_allowed_types(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"type": "object", "properties": {"when": {"type": "datetime"}}}))
    with pytest.raises(ConfigError) as err:
        Schema.from_file(path)
    assert str(err.value) == (
        f"{path}: property 'when' has unknown type 'datetime' (allowed: string, number, integer, date, enum)"
    )
    with pytest.raises(ConfigError, match="'required' names unknown properties"):
        Schema.from_dict({"properties": {"a": {"type": "string"}}, "required": ["b"]})


def test_alignment_tolerates_case_spacing_and_ocr_noise():
    text = "BOOK TA .K(TAMAN DAYA) SDN BND\nNO.53, JALAN SAGU 18,\nTAMAN DAYA\nTOTAL: 19.00\nCASH 9.00"
    assert find_value(text, "BOOK TA .K (TAMAN DAYA) SDN BHD") == [(0, 30)]  # OCR: BND for BHD
    assert find_value(text, "no.53, jalan sagu 18, taman daya") == [(31, 63)]  # line breaks vs spaces
    assert find_value(text, "9.00") == [(82, 86)]  # not inside 19.00
    spans, missing = align_values(text, {"total": "19.00", "date": "01/01/2020"})
    assert spans == [Span("total", 71, 76)] and missing == ["date"]


def test_a_value_missing_from_its_text_and_an_empty_text_get_clear_messages(tmp_path):
    with pytest.raises(DataError, match="field 'order_id': value '998877' does not occur in the text"):
        check_example("please cancel order 112233", {"order_id": "998877"})
    with pytest.raises(DataError, match="the text is empty"):
        check_example("  ", {"order_id": "1"})
    schema = Schema.from_dict(SCHEMA)
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"text": "cancel order 112233", "fields": {"order_id": "998877"}}) + "\n")
    with pytest.raises(DataError, match="none of the 1 gold value"):
        load_value_rows(one, schema, "text", "fields")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"text": "cancel order 112233", "fields": {"order_id": "112233"}})
        + "\n"
        + json.dumps({"text": "refund 5 dollars", "fields": {"order_id": "445566"}})
        + "\n"
    )
    data = load_value_rows(rows, schema, "text", "fields")
    assert data.values == 2 and data.unaligned == [f"{rows}:2: order_id = '445566' does not occur in the text"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"text": "", "fields": {}}) + "\n" + json.dumps({"text": "x", "fields": {"colour": "red"}}) + "\n"
    )
    with pytest.raises(DataError) as err:
        load_value_rows(bad, schema, "text", "fields")
    assert f"{bad}:1: empty text in field 'text'" in str(err.value)
    assert f"{bad}:2: value for 'colour', which the schema does not declare" in str(err.value)


def test_bio_rows_round_trip_and_errors(tmp_path):
    tokens, tags = (
        ["book", "a", "table", "in", "new", "york", "for", "two"],
        ["O", "O", "O", "O", "B-city", "I-city", "O", "B-n"],
    )
    text, spans, offsets = bio_to_spans(tokens, tags)
    assert [text[s.start : s.end] for s in spans] == ["new york", "two"]
    assert spans_to_bio(spans, offsets) == tags
    path = tmp_path / "bio.jsonl"
    path.write_text(
        json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n" + json.dumps({"tokens": [], "tags": []}) + "\n"
    )
    with pytest.raises(DataError) as err:
        load_bio_rows(path, "tokens", "tags")
    assert f"{path}:1: 2 tokens but 1 tags" in str(err.value) and f"{path}:2: empty text" in str(err.value)


def test_span_scores_follow_conlleval():
    gold = [["B-a", "I-a", "O", "B-b"], ["O", "B-a"]]
    pred = [["B-a", "I-a", "O", "B-a"], ["O", "I-a"]]  # a stray I- starts an entity, as in conlleval
    per_type, micro = span_scores(gold, pred)
    assert (micro["tp"], micro["fp"], micro["fn"]) == (2, 1, 1)
    assert micro["f1"] == pytest.approx(2 / 3)
    assert per_type["b"]["recall"] == 0.0


def test_field_scores_count_wrong_values_as_fp_and_fn():
    per_field, _, exact = field_scores(
        [{"a": "X 1", "b": 2.0}, {"a": "y"}], [{"a": "x  1", "b": 2}, {"a": "z", "b": 1}], ["a", "b"]
    )
    assert exact == [True, False]
    assert (per_field["a"]["tp"], per_field["a"]["fp"], per_field["a"]["fn"]) == (1, 1, 1)
    assert (per_field["b"]["tp"], per_field["b"]["fp"], per_field["b"]["fn"]) == (1, 1, 0)


def test_fleet_yaml_extract_task_resolves_schema_and_bio_fields(tmp_path):
    from smallfleet.config import FleetSpec

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "name: f\ntasks:\n"
        "  - {name: receipts, kind: extract, train: r.jsonl, schema: schemas/receipt.json, fields: {label: fields}}\n"
        "  - {name: slots, kind: extract, train: s.jsonl, fields: {tokens: tokens, tags: tags}}\n"
    )
    receipts, slots = FleetSpec.from_file(fleet).tasks
    assert receipts.settings.schema == tmp_path / "schemas" / "receipt.json" and receipts.fields.label == "fields"
    assert slots.settings.schema is None and (slots.fields.tokens, slots.fields.tags) == ("tokens", "tags")
    fleet.write_text("name: f\ntasks:\n  - {name: t, kind: classify, train: t.jsonl, schema: s.json}\n")
    with pytest.raises(ConfigError, match="task 't': unknown key 'schema'"):
        FleetSpec.from_file(fleet)


def test_decode_merges_pieces_of_one_word_and_reports_absence():
    import torch

    from smallfleet.tasks.extract.tagger import TokenScores, bio_labels, decode_spans

    labels = bio_labels(["total", "date"])  # O, B-total, I-total, B-date, I-date
    text = "TOTAL 30.30 RM"
    offsets = [(0, 5), (6, 8), (8, 9), (9, 11), (12, 14)]
    tags = [0, 1, 1, 2, 0]  # the model starts a new span on "." : still one value
    logits = torch.full((5, 5), -4.0)
    logits[torch.arange(5), torch.tensor(tags)] = 4.0
    spans, absent = decode_spans(TokenScores(offsets, logits), labels, temperature=1.0)
    assert [(s.span.field, text[s.span.start : s.span.end]) for s in spans] == [("total", "30.30")]
    assert 0.9 < spans[0].confidence < 1 and absent["date"] > 0.9 and absent["total"] < 0.1


def test_an_answer_becomes_a_training_row_in_the_tasks_own_format():
    from smallfleet.tasks import get_kind

    kind = get_kind("extract")
    bio = {"format": "bio", "fields": {"text": "text", "label": "label", "tokens": "words", "tags": "labels"}}
    row = kind.training_row(bio, "play  the song Hello by Adele", '{"song": "Hello", "artist": "Adele"}')
    assert row == {"words": ["play", "the", "song", "Hello", "by", "Adele"],
                   "labels": ["O", "O", "O", "B-song", "O", "B-artist"]}
    values = {"format": "values", "values_field": "fields", "fields": {"text": "body", "label": "label"}}
    assert kind.training_row(values, "cancel order 55", '{"order_id": "55"}') == {
        "body": "cancel order 55", "fields": {"order_id": "55"}}


def test_check_answer_normalizes_a_record_or_says_what_is_wrong():
    from smallfleet.tasks import get_kind

    kind = get_kind("extract")
    manifest = {"name": "orders", "schema": SCHEMA}
    answer = kind.check_answer(manifest, '{"date": "March 4, 2019", "amount": "12,50", "order_id": "A-1"}')
    assert json.loads(answer) == {"order_id": "A-1", "amount": 12.5, "date": "2019-03-04"}
    for bad, reason in [("not json", "not a JSON object"), ('{"order_id": "A", "amount": "lots"}', "amount"),
                        ('{"order_id": "A", "colour": "red"}', "unknown field 'colour'"),
                        ('{"amount": 3}', "missing required field 'order_id'")]:
        with pytest.raises(DataError, match=reason):
            kind.check_answer(manifest, bad)
