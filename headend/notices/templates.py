"""Notice texts: one template per kind and language, checked when loaded, rendered from integers.

A notice row carries its facts in ``detail`` as integers and plain text (``balance_fen``,
``start_at``, ``area`` ...); the text the customer reads is made here, at send time, in the
customer's language.  Each kind declares the fields its templates may use and what each field
is:

* ``yuan``: the detail holds ``<name>_fen`` (integer fen); rendered as yuan with two decimals,
  by integer arithmetic (``-1234`` -> ``-12.34``): no float touches money;
* ``time``: the detail holds ``<name>_at`` (Unix seconds); rendered as local ``YYYY-MM-DD HH:MM``;
* ``text``: rendered as given; ``int``: a whole number.

A template that names a field its kind does not declare is refused when the catalog is loaded
(``TemplateError``), so a typo never reaches a customer as a half-filled message.  Templates use
``{field}`` placeholders only (no attribute access, indexing or format specs).
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping

from headend.store import yuan

__all__ = ["KINDS", "LANGUAGES", "Kind", "TemplateError", "MissingField", "Catalog", "load_templates"]

LANGUAGES = ("zh", "en")


class TemplateError(ValueError):
    """A template file or template that cannot be used; the message names the kind, language and field."""


class MissingField(KeyError):
    """A notice's detail lacks a field its template needs (the stored message is sent instead)."""


@dataclass(frozen=True)
class Kind:
    """One kind of notice: its fields (name -> yuan/time/text/int) and whether it is urgent.

    Urgent notices go out during quiet hours and past the rate limit: a customer must hear about a
    cut before it happens and when supply is back, whatever the hour."""

    name: str
    fields: Mapping[str, str]
    urgent: bool = False


_COMMON = {"customer": "text", "name": "text", "meter": "text"}


def _kind(name: str, urgent: bool = False, **fields: str) -> Kind:
    return Kind(name, {**_COMMON, **fields}, urgent)


KINDS: dict[str, Kind] = {k.name: k for k in (
    _kind("alarm1_notice", balance="yuan", alarm="yuan"),
    _kind("alarm2_notice", balance="yuan", alarm="yuan"),
    _kind("cut_notice", True, balance="yuan", cut="time", notice_period_h="int"),
    _kind("cut", True, balance="yuan"),
    _kind("close_permitted", True, balance="yuan"),
    _kind("direct_close", True, balance="yuan"),
    _kind("restore", True, balance="yuan"),
    _kind("payment_received", amount="yuan", balance="yuan", channel="text"),
    _kind("payment_confirmed", amount="yuan", balance="yuan"),
    _kind("withholding_failed", amount="yuan", bank="text", reason="text"),
    _kind("outage_planned", area="text", start="time", end="time", reason="text"),
    _kind("outage_changed", area="text", start="time", end="time", reason="text"),
    _kind("outage_cancelled", area="text", start="time", reason="text"),
    _kind("outage_announce", area="text", start="time", end="time", reason="text"),
)}

# Built-in texts.  A [notices] templates file may replace any of them (same fields).
BUILTIN: dict[str, dict[str, str]] = {
    "alarm1_notice": {
        "zh": "【电费提醒】尊敬的用户{customer}，您的电费余额为{balance}元，已低于报警金额{alarm}元，请及时缴费。",
        "en": "Electricity: customer {customer}, your balance is {balance} yuan, below {alarm} yuan. Please top up.",
    },
    "alarm2_notice": {
        "zh": "【电费提醒】尊敬的用户{customer}，您的电费余额仅剩{balance}元，请尽快缴费，以免停电。",
        "en": "Electricity: customer {customer}, your balance is only {balance} yuan. Please top up soon to keep supply on.",
    },
    "cut_notice": {
        "zh": "【停电预告】尊敬的用户{customer}，您的电费余额为{balance}元，已欠费。如未缴费，将于{cut}后停电（提前{notice_period_h}小时通知）。",
        "en": "Electricity: customer {customer}, your balance is {balance} yuan. Supply will be cut after {cut}"
              " unless you top up ({notice_period_h} h notice).",
    },
    "cut": {
        "zh": "【停电通知】尊敬的用户{customer}，因电费余额不足（{balance}元），已停止供电。缴费后即可恢复。",
        "en": "Electricity: customer {customer}, supply has been cut: balance {balance} yuan. Top up to restore it.",
    },
    "close_permitted": {
        "zh": "【复电通知】尊敬的用户{customer}，已收到缴费，余额{balance}元。请按住电表按钮3秒恢复供电。",
        "en": "Electricity: customer {customer}, payment received, balance {balance} yuan."
              " Press the meter button for 3 s to restore supply.",
    },
    "direct_close": {
        "zh": "【复电通知】尊敬的用户{customer}，已收到缴费，余额{balance}元，正在为您恢复供电。",
        "en": "Electricity: customer {customer}, payment received, balance {balance} yuan. Supply is being restored.",
    },
    "restore": {
        "zh": "【复电通知】尊敬的用户{customer}，电表{meter}已恢复供电，当前余额{balance}元。",
        "en": "Electricity: customer {customer}, supply at meter {meter} is back on; balance {balance} yuan.",
    },
    "payment_received": {
        "zh": "【缴费成功】尊敬的用户{customer}，已收到您通过{channel}缴纳的电费{amount}元，余额{balance}元。",
        "en": "Electricity: customer {customer}, {amount} yuan received via {channel}; balance {balance} yuan.",
    },
    "payment_confirmed": {
        "zh": "【充值到表】尊敬的用户{customer}，{amount}元已充入电表{meter}，表内余额{balance}元。",
        "en": "Electricity: customer {customer}, {amount} yuan is now on meter {meter}; meter balance {balance} yuan.",
    },
    "withholding_failed": {
        "zh": "【代扣失败】尊敬的用户{customer}，{bank}代扣电费{amount}元未成功（{reason}），请通过其他渠道缴费。",
        "en": "Electricity: customer {customer}, the {bank} debit of {amount} yuan failed ({reason})."
              " Please pay another way.",
    },
    "outage_planned": {
        "zh": "【计划停电】尊敬的用户{customer}，因{reason}，{area}将于{start}至{end}停电，请提前做好准备。",
        "en": "Planned outage: customer {customer}, {area} will be without power from {start} to {end} ({reason}).",
    },
    "outage_changed": {
        "zh": "【停电变更】尊敬的用户{customer}，{area}计划停电时间改为{start}至{end}（{reason}）。",
        "en": "Outage changed: customer {customer}, the outage in {area} is now from {start} to {end} ({reason}).",
    },
    "outage_cancelled": {
        "zh": "【停电取消】尊敬的用户{customer}，原定{start}在{area}的停电（{reason}）已取消。",
        "en": "Outage cancelled: customer {customer}, the outage in {area} planned for {start} ({reason}) will not happen.",
    },
    "outage_announce": {
        "zh": "{area}因{reason}停电，预计{end}恢复供电。给您带来不便，敬请谅解。",
        "en": "{area} is without power because of {reason}. Supply is expected back by {end}. We apologise for the inconvenience.",
    },
}


def _placeholders(text: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"cannot read the placeholders: {exc}") from None
    out = []
    for _lit, field, spec, conv in parsed:
        if field is None:
            continue
        if not field.isidentifier() or spec or conv:
            raise TemplateError(f"placeholder {{{field}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}:"
                                " write a plain field name such as {balance}")
        out.append(field)
    return out


class Catalog:
    """The templates in use: kind -> language -> text, every placeholder checked against its kind."""

    def __init__(self, texts: Mapping[str, Mapping[str, str]], utc_offset_s: int = 8 * 3600) -> None:
        self._tz = timezone(timedelta(seconds=utc_offset_s))
        self._compiled: dict[tuple[str, str], tuple[str, tuple[tuple[str, str, str], ...]]] = {}
        for kind, by_lang in texts.items():
            spec = KINDS.get(kind)
            if spec is None:
                raise TemplateError(f"template for unknown notice kind {kind!r}; known: {', '.join(sorted(KINDS))}")
            for lang, text in by_lang.items():
                if lang not in LANGUAGES:
                    raise TemplateError(f"template {kind}.{lang}: unknown language; use one of {', '.join(LANGUAGES)}")
                if not isinstance(text, str) or not text.strip():
                    raise TemplateError(f"template {kind}.{lang}: must be non-empty text")
                try:
                    names = _placeholders(text)
                except TemplateError as exc:
                    raise TemplateError(f"template {kind}.{lang}: {exc}") from None
                unknown = [n for n in names if n not in spec.fields]
                if unknown:
                    raise TemplateError(
                        f"template {kind}.{lang} uses unknown field {{{unknown[0]}}}; a {kind} notice has"
                        f" {', '.join('{' + f + '}' for f in sorted(spec.fields))}")
                # (name, type, detail key) per placeholder, resolved once here and not per notice
                fields = tuple((n, spec.fields[n], _detail_key(n, spec.fields[n])) for n in dict.fromkeys(names))
                self._compiled[(kind, lang)] = (text, fields)
        missing = [f"{k}.{lang}" for k in KINDS for lang in LANGUAGES if (k, lang) not in self._compiled]
        if missing:
            raise TemplateError(f"no template for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")

    def kind(self, name: str) -> Kind:
        """The kind's declaration; TemplateError for a kind without templates."""
        k = KINDS.get(name)
        if k is None:
            raise TemplateError(f"no template for notice kind {name!r}")
        return k

    def has(self, kind: str) -> bool:
        """Whether notices of this kind are rendered from templates."""
        return kind in KINDS

    def render(self, kind: str, lang: str, detail: Mapping[str, Any]) -> str:
        """The text of one notice; MissingField if its detail lacks a field the template uses."""
        try:
            text, fields = self._compiled[(kind, lang)]
        except KeyError:
            raise TemplateError(f"no template for {kind}.{lang}") from None
        values: dict[str, str] = {}
        for name, typ, key in fields:
            v = detail.get(key)
            if v is None:
                raise MissingField(f"{kind} notice lacks {key!r} for {{{name}}}")
            if typ == "yuan":
                if type(v) is not int:     # money is integer fen; anything else is not guessed at
                    raise MissingField(f"{kind} notice: {key} is {v!r}, not integer fen")
                values[name] = yuan(v)
            elif typ == "time":
                values[name] = datetime.fromtimestamp(int(v), self._tz).strftime("%Y-%m-%d %H:%M")
            else:
                values[name] = str(v)
        return text.format_map(values)


def _detail_key(name: str, typ: str) -> str:
    return f"{name}_fen" if typ == "yuan" else f"{name}_at" if typ == "time" else name


def load_templates(path: str | Path | None = None, *, utc_offset_s: int = 8 * 3600) -> Catalog:
    """The built-in templates, with those in a TOML file (``[kind] zh = "..."; en = "..."``) replacing them.

    TemplateError names the file, kind, language and the field that is wrong."""
    texts = {k: dict(v) for k, v in BUILTIN.items()}
    if path is not None:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise TemplateError(f"template file {p} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise TemplateError(f"template file {p} is not valid TOML: {exc}") from None
        for kind, by_lang in data.items():
            if not isinstance(by_lang, dict):
                raise TemplateError(f"template file {p}: [{kind}] must be a table of language = \"text\"")
            texts.setdefault(kind, {}).update(by_lang)
        try:
            return Catalog(texts, utc_offset_s)
        except TemplateError as exc:
            raise TemplateError(f"template file {p}: {exc}") from None
    return Catalog(texts, utc_offset_s)
