"""Cultural MCQ data (appendix D of the paper), behaviour CSVs, and preference pairs.

    from yapo_interp.data import load_cultural, split_items, build_preference_pairs
    items = load_cultural(countries=["egypt"])            # the shipped set, validated
    train, test = split_items(items, test_fraction=0.25, seed=0)
    pairs = build_preference_pairs(train, setting="nonlocalized", rejected="western")

``python -m yapo_interp.data [FILES...]`` validates dataset files and prints their counts.
"""

from yapo_interp.data.loaders import (
    CULTURAL_DIR, load_behaviour_csv, load_cultural, load_dataset_file, shipped_files)
from yapo_interp.data.pairs import (
    DEFAULT_OPTION_SEED, DEFAULT_TEST_FRACTION, DEFAULT_VALIDATION_FRACTION, REJECTED, SETTINGS,
    SPLIT_RULE, PreferencePair, Setting, build_preference_pairs, is_test_question,
    is_validation_question, limit_pairs_by_question, other_country_option, pair_prompt,
    setting_forms, split_items, validation_questions)
from yapo_interp.data.prompts import (
    MCQ_INSTRUCTION, format_prompt, format_response, mcq_prompt, parse_boxed_answer)
from yapo_interp.data.schema import (
    FORMS, TOPICS, CulturalItem, Form, Option, dataset_hash, find_name_forms, resolve_countries,
    resolve_languages, validate_items, validate_record)

__all__ = [
    "CULTURAL_DIR", "DEFAULT_OPTION_SEED", "DEFAULT_TEST_FRACTION", "DEFAULT_VALIDATION_FRACTION",
    "FORMS", "REJECTED", "SETTINGS", "SPLIT_RULE", "Setting", "is_test_question", "is_validation_question",
    "limit_pairs_by_question", "pair_prompt", "validation_questions", "MCQ_INSTRUCTION", "TOPICS", "CulturalItem", "Form", "Option",
    "PreferencePair", "build_preference_pairs", "dataset_hash", "find_name_forms",
    "format_prompt", "format_response", "load_behaviour_csv", "load_cultural",
    "load_dataset_file", "mcq_prompt", "other_country_option", "parse_boxed_answer",
    "resolve_countries", "resolve_languages", "setting_forms", "shipped_files", "split_items",
    "validate_items", "validate_record",
]
