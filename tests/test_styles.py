"""styles.csv: A1111's file read and written unchanged, and styles applied with A1111's rules."""

from __future__ import annotations

import pytest

from modules.image.styles import Style, StyleStore, UnknownStyleError, merge_prompt

A1111_CSV = (
    "name,prompt,negative_prompt\n"
    'cinematic,"cinematic still {prompt} . shallow depth of field, film grain","anime, cartoon, graphic"\n'
    "sharp,sharp focus,blurry\n"
    'quoted,"a ""quoted"" word, and a comma","line one\nline two"\n'
    "empty,,\n"
)


@pytest.fixture
def store(tmp_path) -> StyleStore:
    path = tmp_path / "styles.csv"
    path.write_text(A1111_CSV, encoding="utf-8")
    return StyleStore(path)


def test_loads_a1111_file(store):
    assert [style.name for style in store.list()] == ["cinematic", "sharp", "quoted", "empty"]
    assert store.get("quoted") == Style("quoted", 'a "quoted" word, and a comma', "line one\nline two")
    assert store.get("empty") == Style("empty")


def test_missing_file_means_no_styles(tmp_path):
    store = StyleStore(tmp_path / "nothing" / "styles.csv")
    assert store.list() == []
    assert store.apply("cat", "dog", []) == ("cat", "dog")


def test_placeholder_wraps_the_prompt(store):
    prompt, negative = store.apply("a fox", "", ["cinematic"])
    assert prompt == "cinematic still a fox . shallow depth of field, film grain"
    assert negative == "anime, cartoon, graphic"


def test_style_text_is_appended_and_empty_parts_skipped(store):
    assert store.apply("a fox", "ugly", ["sharp"]) == ("a fox, sharp focus", "ugly, blurry")
    assert store.apply("", "", ["sharp"]) == ("sharp focus", "blurry")
    assert store.apply("  a fox  ", "ugly", ["empty"]) == ("a fox", "ugly")


def test_styles_apply_in_order(store):
    prompt, negative = store.apply("a fox", "bad", ["sharp", "cinematic"])
    assert prompt == "cinematic still a fox, sharp focus . shallow depth of field, film grain"
    assert negative == "bad, blurry, anime, cartoon, graphic"
    assert store.apply("a fox", "bad", ["cinematic", "sharp"])[1] == "bad, anime, cartoon, graphic, blurry"


def test_merge_prompt_matches_a1111():
    assert merge_prompt("{prompt}, masterpiece, {prompt}", "cat") == "cat, masterpiece, cat"
    assert merge_prompt("style", "") == "style"
    assert merge_prompt("", "cat") == "cat"
    assert merge_prompt("", "") == ""


def test_unknown_style_lists_the_available_ones(store):
    with pytest.raises(UnknownStyleError) as caught:
        store.apply("a", "b", ["sharp", "nope"])
    assert isinstance(caught.value, ValueError)
    assert "nope" in str(caught.value) and "cinematic, sharp, quoted, empty" in str(caught.value)
    with pytest.raises(UnknownStyleError):
        store.get("nope")
    with pytest.raises(UnknownStyleError):
        store.delete("nope")


def test_save_and_delete_rewrite_the_file(store, tmp_path):
    store.save(Style("new", 'with "quotes", commas\nand lines', "bad"))
    store.save(Style("sharp", "very sharp focus", "blurry"))  # replaced in place
    store.delete("empty")
    text = (tmp_path / "styles.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "name,prompt,negative_prompt"
    assert 'quoted,"a ""quoted"" word, and a comma","line one\nline two"' in text
    assert 'new,"with ""quotes"", commas\nand lines",bad' in text
    assert [entry.name for entry in tmp_path.iterdir()] == ["styles.csv"]  # no temporary file left

    reloaded = StyleStore(tmp_path / "styles.csv")
    assert [style.name for style in reloaded.list()] == ["cinematic", "sharp", "quoted", "new"]
    assert reloaded.get("new") == Style("new", 'with "quotes", commas\nand lines', "bad")
    assert reloaded.get("sharp").prompt == "very sharp focus"


def test_save_creates_the_file_and_refuses_nameless_styles(tmp_path):
    store = StyleStore(tmp_path / "data" / "styles.csv")
    store.save(Style("only", "p"))
    assert (tmp_path / "data" / "styles.csv").read_text(encoding="utf-8") == "name,prompt,negative_prompt\nonly,p,\n"
    with pytest.raises(ValueError):
        store.save(Style("  ", "p"))


def test_description_column_and_legacy_text_column(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text("\ufeffname,prompt,negative_prompt,description\nA,pa,na,about A\n", encoding="utf-8")
    store = StyleStore(path)
    assert store.get("A") == Style("A", "pa", "na", "about A")
    store.save(Style("B", "pb"))
    assert path.read_text(encoding="utf-8") == "name,prompt,negative_prompt,description\nA,pa,na,about A\nB,pb,,\n"

    legacy = tmp_path / "legacy.csv"
    legacy.write_text("name,text\nold,old style text\n", encoding="utf-8")
    assert StyleStore(legacy).get("old").prompt == "old style text"


def test_reload_sees_outside_edits(store, tmp_path):
    (tmp_path / "styles.csv").write_text("name,prompt,negative_prompt\nother,x,y\n", encoding="utf-8")
    store.reload()
    assert store.names() == ["other"]
