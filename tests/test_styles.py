"""styles.csv: A1111's file read and written unchanged, and styles applied with A1111's rules."""

from __future__ import annotations

import csv
import os
import threading
import time

import pytest

from modules.errors import RequestError
from modules.image.styles import (
    MAX_NAME_LENGTH,
    MAX_TEXT_LENGTH,
    Style,
    StylesFileError,
    StyleStore,
    UnknownStyleError,
    check_style,
    merge_prompt,
)

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


# -- editing: what the style editor (app/ui/styles_editor.py) relies on --


@pytest.mark.parametrize(("style", "field", "words"), [
    (Style(""), "name", "needs a name"),
    (Style("   "), "name", "needs a name"),
    (Style("two\nlines"), "name", "one line"),
    (Style("tab\there"), "name", "one line"),
    (Style("x" * (MAX_NAME_LENGTH + 1)), "name", f"at most {MAX_NAME_LENGTH}"),
    (Style("long", "p" * (MAX_TEXT_LENGTH + 1)), "prompt", f"at most {MAX_TEXT_LENGTH}"),
    (Style("long", "", "n" * (MAX_TEXT_LENGTH + 1)), "negative_prompt", f"at most {MAX_TEXT_LENGTH}"),
    (Style("nul", "a\x00b"), "prompt", "NUL"),
])
def test_a_bad_style_names_its_field_and_changes_nothing(store, tmp_path, style, field, words):
    before = (tmp_path / "styles.csv").read_bytes()
    with pytest.raises(RequestError) as caught:
        store.save(style)
    assert caught.value.field == field and words in caught.value.message
    assert (tmp_path / "styles.csv").read_bytes() == before
    assert store.names() == ["cinematic", "sharp", "quoted", "empty"]


def test_a_name_is_saved_without_surrounding_spaces_and_save_says_what_it_replaced(store):
    assert store.save(Style("  spaced  ", "p")) is None
    assert store.get("spaced") == Style("spaced", "p")
    assert store.save(Style("spaced", "q")) == Style("spaced", "p")
    assert check_style(Style(" a ", "x" * MAX_TEXT_LENGTH)).name == "a"  # the longest allowed text is fine


def test_delete_returns_the_style_so_it_can_be_put_back(store, tmp_path):
    removed = store.delete("quoted")
    assert "quoted" not in StyleStore(tmp_path / "styles.csv").names()
    store.save(removed)
    assert StyleStore(tmp_path / "styles.csv").get("quoted") == removed


def test_an_edit_made_outside_is_seen_and_kept_by_the_next_save(store, tmp_path):
    """A hand edit (or an A1111 sharing the file) is read when the file changes, and a save from the studio
    re-reads the file first instead of writing its stale copy over the edit."""
    path = tmp_path / "styles.csv"
    path.write_text(path.read_text(encoding="utf-8") + "by hand,hand prompt,\n", encoding="utf-8")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))  # a coarse-clock filesystem's same mtime
    assert "by hand" in store.names()
    path.write_text("name,prompt,negative_prompt\nonly hand,x,\n", encoding="utf-8")
    store.save(Style("from studio", "y"))
    assert StyleStore(path).names() == ["only hand", "from studio"]


def test_a_file_that_cannot_be_read_is_never_overwritten(tmp_path, caplog):
    path = tmp_path / "styles.csv"
    broken = b"name,prompt,negative_prompt\nok,\xff\xfe not utf-8,\n"
    path.write_bytes(broken)
    store = StyleStore(path)  # the studio still starts, without styles, and says why
    assert store.list() == []
    assert "cannot be read" in caplog.text
    with pytest.raises(StylesFileError):
        store.save(Style("new", "p"))
    with pytest.raises(StylesFileError):
        store.reload()
    assert path.read_bytes() == broken


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(store, tmp_path, monkeypatch):
    path = tmp_path / "styles.csv"
    before = path.read_bytes()

    def fail(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        store.save(Style("new", "p"))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [entry.name for entry in tmp_path.iterdir()] == ["styles.csv"]
    assert "new" not in store.names()


def test_columns_of_other_tools_and_the_files_permissions_are_kept(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text("name,prompt,negative_prompt,preview\nA,pa,na,a.png\nB,pb,,b.png\n", encoding="utf-8")
    path.chmod(0o640)
    store = StyleStore(path)
    store.save(Style("A", "new pa", "na"))
    store.delete("B")
    store.save(Style("C", "pc"))
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    assert rows == [["name", "prompt", "negative_prompt", "preview"], ["A", "new pa", "na", "a.png"],
                    ["C", "pc", "", ""]]
    assert path.stat().st_mode & 0o777 == 0o640


def test_a1111s_reader_reads_what_the_store_writes(store, tmp_path):
    """A1111's own loader (``modules/styles.py``: DictReader, skipinitialspace, ``prompt`` or ``text``)."""
    store.save(Style("tricky, name", ' "quoted" {prompt}, then\nmore', "neg, with comma"))
    with (tmp_path / "styles.csv").open(encoding="utf-8-sig", newline="") as file:
        rows = {row["name"]: (row.get("prompt") or row.get("text", ""), row["negative_prompt"])
                for row in csv.DictReader(file, skipinitialspace=True)}
    assert rows["tricky, name"] == (' "quoted" {prompt}, then\nmore', "neg, with comma")
    assert rows["quoted"] == ('a "quoted" word, and a comma', "line one\nline two")


def test_concurrent_saves_and_deletes_from_several_threads_lose_nothing(tmp_path):
    """The UI and the API share one store: every save survives, and the file is whole after each write."""
    path = tmp_path / "styles.csv"
    store = StyleStore(path)
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            for index in range(20):
                store.save(Style(f"w{worker}-{index}", f"prompt {index}, with comma"))
                if index % 5 == 4:
                    store.delete(f"w{worker}-{index - 1}")
                StyleStore(path).names()  # a fresh reader never sees half a file
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    expected = {f"w{worker}-{index}" for worker in range(4) for index in range(20) if index % 5 != 3}
    assert set(StyleStore(path).names()) == expected
    assert [entry.name for entry in tmp_path.iterdir()] == ["styles.csv"]
