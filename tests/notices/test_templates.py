"""Notice templates: checked when loaded, rendered from integers in the customer's language."""

from __future__ import annotations

import pytest

from headend.notices.templates import KINDS, LANGUAGES, MissingField, TemplateError, load_templates
from headend.store import yuan
from tests.notices.conftest import local


@pytest.mark.parametrize("fen, text", [(0, "0.00"), (5, "0.05"), (-5, "-0.05"), (1234, "12.34"), (-100, "-1.00"),
                                       (123456789, "1234567.89")])
def test_yuan_from_integer_fen(fen, text):
    assert yuan(fen) == text


def test_an_amount_that_is_not_integer_fen_is_not_rendered():
    with pytest.raises(MissingField, match="not integer fen"):
        load_templates().render("cut", "en", {"customer": "000000000042", "balance_fen": 12.5})


def test_every_kind_has_both_languages_and_renders():
    cat = load_templates()
    detail = {"customer": "000000000042", "meter": "000000000001", "balance_fen": -1234, "alarm_fen": 2000,
              "amount_fen": 5000, "channel": "counter", "bank": "ICBC", "reason": "line work", "area": "Area 1",
              "start_at": local("2026-12-02 08:00"), "end_at": local("2026-12-02 12:30"),
              "cut_at": local("2026-12-02 09:00"), "notice_period_h": 24}
    for kind in KINDS:
        for lang in LANGUAGES:
            assert "{" not in cat.render(kind, lang, detail)
    assert "-12.34" in cat.render("cut", "en", detail) and "-12.34元" in cat.render("cut", "zh", detail)
    assert "2026-12-02 12:30" in cat.render("outage_planned", "zh", detail)


def test_a_template_with_an_unknown_field_is_refused_when_loaded(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text('[alarm1_notice]\nen = "Balance {balance} yuan, due {due_date}"\n', encoding="utf-8")
    with pytest.raises(TemplateError) as e:
        load_templates(f)
    assert "alarm1_notice.en" in str(e.value) and "{due_date}" in str(e.value) and str(f) in str(e.value)


@pytest.mark.parametrize("text, what", [("{balance:.2f}", "plain field name"), ("{balance.real}", "plain field"),
                                        ("{balance", "placeholders"), ("", "non-empty")])
def test_bad_placeholders_are_refused(tmp_path, text, what):
    f = tmp_path / "t.toml"
    f.write_text(f'[alarm1_notice]\nzh = "{text}"\n', encoding="utf-8")
    with pytest.raises(TemplateError, match=what):
        load_templates(f)


def test_unknown_kind_or_language_refused(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text('[alarm9]\nen = "x"\n', encoding="utf-8")
    with pytest.raises(TemplateError, match="unknown notice kind"):
        load_templates(f)
    f.write_text('[alarm1_notice]\nfr = "x"\n', encoding="utf-8")
    with pytest.raises(TemplateError, match="unknown language"):
        load_templates(f)


def test_a_file_replaces_a_builtin_text(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text('[alarm1_notice]\nen = "Low: {balance}"\n', encoding="utf-8")
    cat = load_templates(f)
    assert cat.render("alarm1_notice", "en", {"balance_fen": 99}) == "Low: 0.99"
    assert "0.99元" in cat.render("alarm1_notice", "zh", {"balance_fen": 99, "customer": "1", "alarm_fen": 100})


def test_missing_fact_is_reported_not_guessed():
    with pytest.raises(MissingField):
        load_templates().render("cut", "en", {"customer": "000000000042"})
