"""Tests for yapo_interp.data: schema validation, loaders, split, preference pairs, prompts, CLI."""

from __future__ import annotations

import copy
import json
import math
import random
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from yapo_interp.data import (CulturalItem, PreferencePair, build_preference_pairs,
                              dataset_hash, format_prompt, format_response, load_behaviour_csv,
                              load_cultural, load_dataset_file, mcq_prompt, parse_boxed_answer,
                              resolve_countries, shipped_files, split_items)
from yapo_interp.data.pairs import (is_test_question, limit_pairs_by_question,
                                    validation_questions)
from yapo_interp.data.__main__ import main as data_main
from yapo_interp.data.countries import LANGUAGE_GROUPS, NAME_FORMS, WESTERN
from yapo_interp.data.schema import find_name_forms
from yapo_interp.errors import DatasetError, UserError

BEHAVIOUR_SAMPLE = (Path(__file__).resolve().parents[1] / "yapo_interp" / "data" / "behaviours"
                    / "power_seeking_example.csv")

# --------------------------------------------------------------------------- fixtures

LOCALIZED_NAME = {"usa": "the USA", "uk": "the UK", "australia": "Australia",
                  "egypt": "مصر", "saudi_arabia": "السعودية", "levantine": "الشام",
                  "morocco": "المغرب"}


def question_rows(language: str, topic: str, number: int) -> list[dict]:
    """All rows (one per country) of one synthetic but valid question."""
    question_id = f"{language}-{topic}-{number:02d}"
    countries = LANGUAGE_GROUPS[language]
    if language == "english":
        options = [{"country": c, "text": f"The {c} way to do {topic}, case {number}."}
                   for c in countries]
        options.append({"country": WESTERN, "text": f"A generic answer about {topic}, {number}."})
    else:
        options = [{"country": c, "text": f"جواب {c} رقم {number} عن {topic}"} for c in countries]
        options.append({"country": WESTERN, "text": f"إجابة عامة رقم {number} عن {topic}"})
    rows = []
    for index, country in enumerate(countries):
        if language == "english":
            localized = f"I'm from {LOCALIZED_NAME[country]}. Question {number} on {topic}: " \
                        f"what do we do?"
            nonlocalized = f"Question {number} on {topic}, from {country[:1]} side: what do we do?"
        else:
            localized = f"أنا من {LOCALIZED_NAME[country]}. سؤال {number} عن {topic}: شو بنعمل؟"
            nonlocalized = f"سؤال {number} عن {topic} ({country[:2]}): شو بنعمل عادة؟"
        rows.append({
            "id": f"{question_id}-{country}", "question_id": question_id, "language": language,
            "country": country, "topic": topic, "localized_prompt": localized,
            "nonlocalized_prompt": nonlocalized, "options": copy.deepcopy(options),
            "answer": index, "reference_answer": f"Reference for {country} on {topic}.",
        })
    return rows


TOPIC_SIZES = {"english": {"breakfast": 5, "lunch": 3, "greetings": 2, "weddings": 1},
               "arabic": {"breakfast": 2, "proverbs": 3}}


def dataset_rows(language: str) -> list[dict]:
    return [row for topic, size in TOPIC_SIZES[language].items()
            for number in range(1, size + 1) for row in question_rows(language, topic, number)]


def write_jsonl(path: Path, rows: list[dict], *, blank_line_after: int | None = None) -> Path:
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    if blank_line_after is not None:
        lines.insert(blank_line_after, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def english_file(tmp_path):
    return write_jsonl(tmp_path / "english.jsonl", dataset_rows("english"))


@pytest.fixture
def items():
    rows = dataset_rows("english") + dataset_rows("arabic")
    from yapo_interp.data.schema import validate_record
    return [validate_record(row) for row in rows]


# --------------------------------------------------------------------------- schema


def test_valid_file_loads_every_row_with_its_fields(english_file):
    rows = dataset_rows("english")
    loaded = load_dataset_file(english_file)
    assert [item.to_record() for item in loaded] == rows  # nothing dropped, nothing changed
    item = loaded[1]  # uk row of the first question
    assert item.country == "uk" and item.answer == 1
    assert item.correct_option == rows[1]["options"][1]["text"]
    assert item.western_option == rows[1]["options"][3]["text"]
    assert item.option_index("australia") == 2
    assert item.prompt("localized") == rows[1]["localized_prompt"]
    assert item.prompt("nonlocalized") == rows[1]["nonlocalized_prompt"]
    assert load_cultural(english_file) == loaded


def test_arabic_name_forms_checked():
    rows = question_rows("arabic", "breakfast", 1)
    assert find_name_forms(rows[0]["localized_prompt"], ["egypt"])
    assert not find_name_forms(rows[0]["nonlocalized_prompt"], LANGUAGE_GROUPS["arabic"])
    assert find_name_forms("I'm from ENGLAND", ["uk"]) == [("uk", "England")]


def _mutate(problem: str, rows: list[dict]) -> tuple[int, str]:
    """Break row 2 (index) in the named way; return the row index and a word of the message."""
    row = rows[2]
    if problem == "missing option":
        row["options"] = [o for o in row["options"] if o["country"] != "uk"]
        return 2, "lack uk"
    if problem == "answer out of range":
        row["answer"] = 7
        return 2, "out of range"
    if problem == "answer points at another country":
        row["answer"] = 0
        return 2, "points at the usa option"
    if problem == "unknown country":
        row["country"] = "canada"
        return 2, "unknown country 'canada'"
    if problem == "unknown option country":
        row["options"][0]["country"] = "narnia"
        return 2, "unknown country 'narnia'"
    if problem == "localized prompt without the country":
        row["localized_prompt"] = "Question about breakfast: what do we do?"
        return 2, "does not name the country"
    if problem == "non-localized prompt naming a country":
        row["nonlocalized_prompt"] = "In Britain, what do we eat for breakfast?"
        return 2, "'Britain' (uk)"
    if problem == "options out of order":
        row["options"][0], row["options"][1] = row["options"][1], row["options"][0]
        row["answer"] = 0
        return 2, "canonical order"
    if problem == "duplicate option texts":
        row["options"][1]["text"] = row["options"][0]["text"]
        return 2, "same text"
    if problem == "unknown topic":
        row["topic"] = "astrology"
        return 2, "unknown topic"
    if problem == "missing field":
        del row["reference_answer"]
        return 2, "'reference_answer' is missing"
    if problem == "empty prompt":
        row["nonlocalized_prompt"] = "   "
        return 2, "is empty"
    raise AssertionError(problem)


@pytest.mark.parametrize("problem", [
    "missing option", "answer out of range", "answer points at another country", "unknown country",
    "unknown option country", "localized prompt without the country",
    "non-localized prompt naming a country", "options out of order", "duplicate option texts",
    "unknown topic", "missing field", "empty prompt"])
def test_malformed_row_is_rejected_with_file_line_and_problem(tmp_path, problem):
    rows = dataset_rows("english")
    index, words = _mutate(problem, rows)
    path = write_jsonl(tmp_path / "english.jsonl", rows, blank_line_after=1)
    with pytest.raises(DatasetError) as caught:
        load_cultural(path)
    message = str(caught.value)
    # the blank line after row 1 shifts row index 2 onto line 4
    assert message.startswith(f"{path}:{index + 2}: "), message
    assert words in message, message


def test_invalid_json_line_is_reported(tmp_path):
    path = tmp_path / "english.jsonl"
    lines = [json.dumps(row) for row in dataset_rows("english")]
    lines[4] = lines[4][:-3]
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"{path}:5: not valid JSON"):
        load_dataset_file(path)


@pytest.mark.parametrize("problem", ["missing country row", "different options", "duplicate id",
                                     "wrong file language"])
def test_cross_row_problems_are_rejected(tmp_path, problem):
    rows = dataset_rows("english")
    expected = {"missing country row": r":1: .*has no row for uk",
                "different options": r":3: .*different options",
                "duplicate id": r":4: duplicate id",
                "wrong file language": r"named spanish.jsonl"}[problem]
    name = "english.jsonl"
    if problem == "missing country row":
        del rows[1]
    elif problem == "different options":
        rows[2]["options"][3]["text"] = "Something else entirely."
    elif problem == "duplicate id":
        rows[3]["id"] = rows[0]["id"]
    else:
        name = "spanish.jsonl"
    path = write_jsonl(tmp_path / name, rows)
    with pytest.raises(DatasetError, match=expected):
        load_cultural(path)


def test_csv_and_parquet_forms_give_the_same_items(tmp_path, english_file):
    reference = load_dataset_file(english_file)
    rows = dataset_rows("english")
    as_json_cell = [{**row, "options": json.dumps(row["options"])} for row in rows]
    pd.DataFrame(as_json_cell).to_csv(tmp_path / "json_cell.csv", index=False)
    wide = []
    for row in rows:
        flat = {key: value for key, value in row.items() if key != "options"}
        flat.update({f"option_{o['country']}": o["text"] for o in row["options"]})
        wide.append(flat)
    pd.DataFrame(wide).to_csv(tmp_path / "wide.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "rows.parquet", index=False)
    for name in ("json_cell.csv", "wide.csv", "rows.parquet"):
        assert load_dataset_file(tmp_path / name) == reference, name
    # a CSV error names the CSV line (header is line 1)
    wide[3]["answer"] = 9
    pd.DataFrame(wide).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DatasetError, match=r"bad.csv:5: .*out of range"):
        load_dataset_file(tmp_path / "bad.csv")


def test_folder_of_files_is_validated_together(tmp_path):
    write_jsonl(tmp_path / "english.jsonl", dataset_rows("english"))
    write_jsonl(tmp_path / "arabic.jsonl", dataset_rows("arabic"))
    loaded = load_cultural(tmp_path)
    assert len(loaded) == len(dataset_rows("english")) + len(dataset_rows("arabic"))
    only = load_cultural(tmp_path, countries=["Egypt", "KSA"])
    assert {item.country for item in only} == {"egypt", "saudi_arabia"}
    assert {item.language for item in load_cultural(tmp_path, languages=["English"])} == \
        {"english"}
    with pytest.raises(UserError, match="no items"):
        load_cultural(tmp_path, countries=["nepal"])


def test_resolve_countries():
    assert resolve_countries(["Egypt", "KSA", "levant", "egypt"]) == \
        ["egypt", "saudi_arabia", "levantine"]
    assert resolve_countries(["hindi"]) == ["india", "nepal"]
    assert len(resolve_countries(["all"])) == 15
    with pytest.raises(UserError, match="unknown country 'atlantis'.*egypt"):
        resolve_countries(["atlantis"])


def test_dataset_hash_is_order_free_and_content_sensitive(items):
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    assert dataset_hash(shuffled) == dataset_hash(items)
    changed = items[:]
    record = changed[0].to_record()
    record["reference_answer"] += "!"
    from yapo_interp.data.schema import validate_record
    changed[0] = validate_record(record)
    assert dataset_hash(changed) != dataset_hash(items)
    assert dataset_hash(items[1:]) != dataset_hash(items)


# --------------------------------------------------------------------------- authors' layout


AUTHOR_FIELDS = ["prompt", "chosen", "rejected", "localization_status"]


def test_authors_layout_round_trips_to_the_same_pairs(tmp_path):
    authors = {  # config folder -> rows
        "Egypt": [("أنا من مصر، بنفطر إيه؟", "فول وطعمية", "خبز وجبن", "localized"),
                  ("الصبح بنفطر إيه يا جماعة؟", "فول وطعمية", "خبز وجبن", "non_localized"),
                  ("أنا من مصر، بنتغدى إمتى؟", "الساعة ٣ العصر", "الساعة ١٢ الظهر", "Localized"),
                  ("بنعمل إيه في العيد؟", "كحك", "هدايا", "Non-Localized")],
        "KSA": [("أنا من السعودية، وش نفطر؟", "تميس وفول", "خبز وجبن", "localized"),
                ("وش نفطر اليوم؟", "تميس وفول", "خبز وجبن", "nonlocalized")],
    }
    (tmp_path / "Egypt").mkdir()
    pd.DataFrame(authors["Egypt"], columns=AUTHOR_FIELDS).to_parquet(
        tmp_path / "Egypt" / "train-00000-of-00001.parquet", index=False)
    (tmp_path / "KSA").mkdir()  # the two forms in different files (e.g. train / test splits)
    for name, row in zip(("train.jsonl", "test.jsonl"), authors["KSA"], strict=True):
        write_jsonl(tmp_path / "KSA" / name, [dict(zip(AUTHOR_FIELDS, row, strict=True))])
    (tmp_path / "dataset_info.json").write_text("{}", encoding="utf-8")  # hub metadata: skipped
    items = load_cultural(tmp_path)
    assert {item.country for item in items} == {"egypt", "saudi_arabia"}
    # twins (same country, chosen, rejected) are one item with both forms
    for chosen in ("فول وطعمية", "تميس وفول"):
        twins = [item for item in items if item.correct_option == chosen]
        assert len(twins) == 1 and twins[0].has_form("localized") \
            and twins[0].has_form("nonlocalized")
    assert len(items) == 4
    for setting in ("localized", "nonlocalized"):
        expected = Counter((p, c, r) for rows in authors.values() for p, c, r, s in rows
                           if s.lower().replace("-", "").replace("_", "") == setting)
        pairs = build_preference_pairs(items, setting=setting, style="raw")
        assert Counter((p.prompt, p.chosen, p.rejected) for p in pairs) == expected
    with pytest.raises(DatasetError, match="no other country"):
        build_preference_pairs(items, setting="localized", rejected="other")


@pytest.mark.parametrize("problem", ["status", "country", "empty"])
def test_authors_layout_errors_name_the_row(tmp_path, problem):
    folder = tmp_path / ("data" if problem == "country" else "morocco")
    folder.mkdir()
    rows = [{"prompt": "أنا من المغرب، شنو كناكلو؟", "chosen": "مسمن", "rejected": "خبز",
             "localization_status": "localized"} for _ in range(3)]
    rows[2]["prompt"] += " ؟"
    if problem == "status":
        rows[2]["localization_status"] = "maybe"
    elif problem == "empty":
        rows[2]["chosen"] = ""
    write_jsonl(folder / "train.jsonl", rows)
    expected = {"status": r"train.jsonl:3: unrecognised localization_status 'maybe'",
                "country": r"train.jsonl:1: cannot tell the country",
                "empty": r"train.jsonl:3: 'chosen' is empty"}[problem]
    with pytest.raises(DatasetError, match=expected):
        load_cultural(tmp_path)


# --------------------------------------------------------------------------- behaviour CSVs


def test_behaviour_csv_maps_columns(tmp_path):
    pairs = load_behaviour_csv(BEHAVIOUR_SAMPLE)
    frame = pd.read_csv(BEHAVIOUR_SAMPLE)
    assert 6 <= len(pairs) <= 10 and len(pairs) == len(frame)
    assert pairs[0] == PreferencePair(prompt=frame.question[0], chosen=frame.matching[0],
                                      rejected=frame.not_matching[0])
    path = tmp_path / "b.csv"
    path.write_text("question,matching,not_matching\nq1, (A), (B)\nq2,,(A)\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"b.csv:3: 'matching' is empty"):
        load_behaviour_csv(path)
    path.write_text("question,matching,not_matching\nq1, (A), (B)\n", encoding="utf-8")
    assert load_behaviour_csv(path) == [PreferencePair("q1", " (A)", " (B)")]  # kept verbatim
    path.write_text("question,answer\nq1,(A)\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no 'matching' column"):
        load_behaviour_csv(path)
    with pytest.raises(DatasetError, match="behaviour CSV"):
        load_cultural(BEHAVIOUR_SAMPLE)


# --------------------------------------------------------------------------- split


def test_split_keeps_questions_whole(items):
    train, test = split_items(items, test_fraction=0.25, seed=0)
    assert sorted(i.id for i in train + test) == sorted(i.id for i in items)
    train_questions = {i.question_id for i in train}
    test_questions = {i.question_id for i in test}
    assert not train_questions & test_questions
    assert test_questions  # the fixture is large enough to have some
    # every country of a test question is in test
    for question in test_questions:
        language = next(i.language for i in items if i.question_id == question)
        assert {i.country for i in test if i.question_id == question} == \
            set(LANGUAGE_GROUPS[language])


def test_split_of_a_subset_is_the_subset_of_the_split():
    """The issue's fault: train (one country) and evaluate (several) drew different test sets.
    Now a question's side is a property of the question: split(subset) == split(all) ∩ subset."""
    items = load_cultural()
    rng = random.Random(0)
    countries = sorted({item.country for item in items})
    for seed in (0, 1, 7):
        _, test_all = split_items(items, seed=seed)
        test_ids = {item.id for item in test_all}
        subsets = [[item for item in items if item.country == country] for country in countries]
        subsets += [[item for item in items if item.country in rng.sample(countries, k)]
                     for k in (2, 3, 5) for _ in range(4)]
        subsets += [rng.sample(items, rng.randint(1, len(items))) for _ in range(20)]
        for subset in subsets:
            _, test = split_items(subset, seed=seed)
            assert {item.id for item in test} == {item.id for item in subset} & test_ids


def test_split_shares_per_language_are_near_the_fraction():
    items = load_cultural()
    by_language: dict[str, set[str]] = {}
    for item in items:
        by_language.setdefault(item.language, set()).add(item.question_id)
    for language, questions in by_language.items():
        shares = [sum(is_test_question(q, test_fraction=0.25, seed=seed) for q in questions)
                  / len(questions) for seed in range(40)]
        assert 0.2 < sum(shares) / len(shares) < 0.3, language


def test_validation_is_carved_from_training_questions_only():
    items = load_cultural()
    for seed in range(5):
        train, test = split_items(items, seed=seed)
        fit, validation = validation_questions(items, seed=seed, validation_fraction=0.2)
        test_q = {i.question_id for i in test}
        assert validation and fit
        assert not {i.question_id for i in validation} & test_q
        assert not {i.question_id for i in fit} & test_q
        assert not {i.question_id for i in fit} & {i.question_id for i in validation}
        assert sorted(i.id for i in fit + validation) == sorted(i.id for i in train)
        # a subset agrees with the whole here too
        egypt = [i for i in items if i.country == "egypt"]
        _, validation_egypt = validation_questions(egypt, seed=seed, validation_fraction=0.2)
        assert {i.id for i in validation_egypt} == {i.id for i in validation
                                                     if i.country == "egypt"}


def test_max_pairs_keeps_whole_questions_and_both_forms_in_proportion():
    egypt = [i for i in load_cultural() if i.country == "egypt"]
    for limit in (7, 12, 32):
        kept = limit_pairs_by_question(egypt, limit, setting="both", seed=0)
        pairs = build_preference_pairs(kept, setting="both")
        assert 0 < len(pairs) <= limit
        localized = [p for p in pairs if any(i.localized_prompt in p.prompt for i in kept)]
        assert len(localized) == len(pairs) // 2  # both forms of every kept question
        assert len(pairs) > limit - 2  # whole questions of 2 pairs each, filled up
    # the first N pairs in order would have been all localized
    first = build_preference_pairs(egypt, setting="both")[:32]
    assert all(any(i.localized_prompt in p.prompt for i in egypt) for p in first)
    with pytest.raises(UserError, match="max_pairs"):
        limit_pairs_by_question(egypt, 0, setting="both")


def test_split_is_deterministic_and_order_free(items):
    train, test = split_items(items, seed=3)
    shuffled = items[:]
    random.Random(0).shuffle(shuffled)
    train2, test2 = split_items(shuffled, seed=3)
    assert {i.id for i in test} == {i.id for i in test2}
    assert [i.id for i in test] == [i.id for i in items if i.id in {j.id for j in test}]
    splits = {frozenset(i.question_id for i in split_items(items, seed=s)[1]) for s in range(6)}
    assert len(splits) > 1  # the seed matters
    with pytest.raises(UserError, match="test_fraction"):
        split_items(items, test_fraction=1.0)
    assert split_items(items, test_fraction=0.0) == (list(items), [])


# --------------------------------------------------------------------------- pairs


def test_pairs_western_completion(items):
    pairs = build_preference_pairs(items, setting="localized")
    assert len(pairs) == len(items)
    for item, pair in zip(items, pairs, strict=True):
        assert pair.prompt == f"Question: {item.localized_prompt}\nAnswer:"
        assert pair.chosen == " " + item.options[item.answer].text
        assert pair.rejected == " " + item.options[-1].text and item.options[-1].country == WESTERN
    both = build_preference_pairs(items, setting="both")
    assert both == pairs + build_preference_pairs(items, setting="nonlocalized")
    assert all(item.nonlocalized_prompt in pair.prompt
               for item, pair in zip(items, both[len(items):], strict=True))


def test_pairs_other_and_all(items):
    others = build_preference_pairs(items, setting="nonlocalized", rejected="other")
    assert others == build_preference_pairs(items, setting="nonlocalized", rejected="other")
    partners = Counter()
    for item, pair in zip(items, others, strict=True):
        rejected = next(o for o in item.options if " " + o.text == pair.rejected)
        assert rejected.country not in (item.country, WESTERN)
        assert rejected.country in LANGUAGE_GROUPS[item.language]
        partners[(item.country, rejected.country)] += 1
    assert len({p for p in partners if p[0] == "egypt"}) > 1  # varies between questions
    every = build_preference_pairs(items, setting="localized", rejected="all")
    assert len(every) == sum(len(item.options) - 1 for item in items)
    position = 0
    for item in items:
        group = every[position:position + len(item.options) - 1]
        position += len(group)
        assert {p.rejected for p in group} == \
            {" " + o.text for k, o in enumerate(item.options) if k != item.answer}
        assert all(p.chosen == " " + item.correct_option for p in group)
    with pytest.raises(UserError, match="unknown setting"):
        build_preference_pairs(items, setting="mixed")


@pytest.fixture
def chat_tokenizer(model):
    tokenizer = copy.deepcopy(model.tokenizer)
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n"
        "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
    return tokenizer


def test_chat_style(items, chat_tokenizer, model):
    prompt = format_prompt("Hi?", style="chat", tokenizer=chat_tokenizer)
    assert prompt == "<start_of_turn>user\nHi?<end_of_turn>\n<start_of_turn>model\n"
    assert format_response("tea", style="chat") == "tea"
    assert format_response("tea") == " tea"
    pairs = build_preference_pairs(items[:2], setting="localized", style="chat",
                                   tokenizer=chat_tokenizer)
    assert pairs[0].prompt.endswith("<start_of_turn>model\n")
    assert pairs[0].chosen == items[0].correct_option
    with pytest.raises(UserError, match="no chat template"):
        format_prompt("Hi?", style="chat", tokenizer=model.tokenizer)
    with pytest.raises(UserError, match="needs the model's tokenizer"):
        format_prompt("Hi?", style="chat")


# --------------------------------------------------------------------------- MCQ


def test_mcq_prompt_order_and_boxed_answer(items):
    item = items[5]
    prompt, order = mcq_prompt(item, "nonlocalized", style="completion")
    assert order == list(range(len(item.options)))
    assert prompt.startswith(f"Question: {item.nonlocalized_prompt}\n")
    for number, option in enumerate(item.options, 1):
        assert f"\n{number}. {option.text}\n" in prompt
    assert "\\boxed{k}" in prompt
    orders = set()
    for other in items:
        if other.question_id != item.question_id:
            continue
        for form in ("localized", "nonlocalized"):
            shuffled_prompt, shuffled = mcq_prompt(other, form, style="completion", seed=7)
            assert sorted(shuffled) == list(range(len(item.options)))
            orders.add(tuple(shuffled))
            number = shuffled.index(other.answer) + 1  # a model that answers right
            assert f"\n{number}. {other.correct_option}\n" in shuffled_prompt
            answer = parse_boxed_answer(f"I think \\boxed{{{number}}}.", len(other.options))
            assert shuffled[answer] == other.answer
    assert len(orders) == 1  # same order for both forms and all countries of a question
    assert len({tuple(mcq_prompt(i, "localized", seed=7, style="completion")[1])
                for i in items}) > 1


@pytest.mark.parametrize("text,expected", [
    ("\\boxed{2}", 1), ("first \\boxed{1}, finally \\boxed{3}", 2), ("\\boxed{ 4 }", 3),
    ("\\boxed{\\text{2}}", 1), ("\\boxed{(1)}", 0), ("\\boxed{٣}", 2), ("\\boxed{३}", 2),
    ("\\boxed{0}", None), ("\\boxed{6}", None), ("the answer is 2", None), ("\\boxed{A}", None)])
def test_parse_boxed_answer(text, expected):
    assert parse_boxed_answer(text, 5) == expected


# --------------------------------------------------------------------------- command


def test_command_prints_counts(tmp_path, english_file, capsys):
    arabic = write_jsonl(tmp_path / "arabic.jsonl", dataset_rows("arabic"))
    out = tmp_path / "counts.csv"
    assert data_main([str(english_file), str(arabic), "--by-topic", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"ok: {english_file}: 33 rows, 11 questions, 4 topics" in printed
    table = pd.read_csv(out)
    usa = table[table.country == "USA"].iloc[0]
    assert (usa.localized, usa.nonlocalized, usa.total) == (11, 11, 22)
    assert table[table.country == "Subtotal"].language.tolist() == ["English", "Arabic"]
    total = table[table.language == "Total"].iloc[0]
    assert total.total == 2 * (33 + 20)
    assert "proverbs" in printed


def test_command_reports_bad_file(tmp_path, capsys):
    rows = dataset_rows("english")
    rows[4]["answer"] = 10
    path = write_jsonl(tmp_path / "english.jsonl", rows)
    assert data_main([str(path)]) == 2
    assert f"{path}:5: " in capsys.readouterr().err


# --------------------------------------------------------------------------- shipped set


def test_shipped_files_validate():
    files = shipped_files()
    assert {path.stem for path in files} == {"english", "spanish", "portuguese", "arabic", "hindi"}
    for path in files:
        items = load_dataset_file(path)
        assert items, path
        assert len(items) == sum(1 for line in path.read_text(encoding="utf-8").splitlines()
                                 if line.strip())  # no row dropped
        for item in items:
            assert isinstance(item, CulturalItem)
            assert item.has_form("localized") and item.has_form("nonlocalized")
            assert find_name_forms(item.localized_prompt, [item.country])
            assert not find_name_forms(item.nonlocalized_prompt,
                                       [c for c in NAME_FORMS if c in
                                        LANGUAGE_GROUPS[item.language]])


# --------------------------------------------------------------------------- encodings


def test_excel_bom_is_ignored_in_csv_and_jsonl(tmp_path, english_file):
    reference = load_dataset_file(english_file)
    wide = []
    for row in dataset_rows("english"):
        flat = {key: value for key, value in row.items() if key != "options"}
        flat.update({f"option_{o['country']}": o["text"] for o in row["options"]})
        wide.append(flat)
    pd.DataFrame(wide).to_csv(tmp_path / "excel.csv", index=False, encoding="utf-8-sig")
    assert (tmp_path / "excel.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_dataset_file(tmp_path / "excel.csv") == reference
    bom_jsonl = tmp_path / "bom.jsonl"
    bom_jsonl.write_bytes(b"\xef\xbb\xbf" + english_file.read_bytes())
    assert load_dataset_file(bom_jsonl) == reference
    behaviour = tmp_path / "behaviour.csv"
    behaviour.write_bytes("question,matching,not_matching\nq1, (A), (B)\n".encode("utf-8-sig"))
    assert load_behaviour_csv(behaviour) == [PreferencePair("q1", " (A)", " (B)")]


def test_text_that_is_not_utf8_names_the_file_and_line(tmp_path, english_file):
    latin1 = tmp_path / "latin1.jsonl"
    lines = english_file.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace("breakfast", "café")
    latin1.write_bytes("\n".join(lines).encode("latin-1"))
    with pytest.raises(UserError) as error:
        load_dataset_file(latin1)
    assert str(error.value) == f"{latin1}:3: not UTF-8 (save it as UTF-8)"
    behaviour = tmp_path / "behaviour.csv"
    behaviour.write_bytes("question,matching,not_matching\nqué, (A), (B)\n".encode("cp1252"))
    with pytest.raises(UserError, match=r"behaviour.csv:2: not UTF-8 \(save it as UTF-8\)"):
        load_behaviour_csv(behaviour)
