"""Synthetic annotated resumes: the project's embedded default data (demo, ``make run``, every test).

Resumes are built piece by piece; each labelled piece records its own offsets as it is appended,
so every gold span is exact (``text[start:end]`` is the entity, no edge whitespace, no overlaps).
Labels are the raw names of the real corpus (keys of ``resume_ner.config.DEFAULT_LABEL_MAP``).

Annotation conventions (the same as the real corpus):

- ``Years of Experience``: total experience phrases ("5+ years", "over 7 years" -> "7 years"),
  the date range of each job ("Jan 2019 - Present") and its duration ("(2 yrs 3 mos)").
- ``Graduation Year``: the year, or the whole range, of a degree ("2015", "2011 - 2015").
- ``Location``: "City", "City, Region" or "City, Country" as one span.
- Every mention of a covered entity is labelled, wherever it appears (URLs such as github.com/x aside);
  the unlabelled noise is made of phone numbers, links, street addresses, other dates (birth,
  certificates, awards), numbers, project names, languages, hobbies and boilerplate.

Generation is deterministic: the same ``(n, seed)`` gives byte-identical documents (for one
installed Faker version). The word lists and sentence templates are packaged data files in ``vocab/``.
"""

from __future__ import annotations

import functools
import json
import random
import re
import unicodedata
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from faker import Faker

from resume_ner.data.document import Document, Span
from resume_ner.io import write_text_atomic

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "COLLEGE_PATTERNS",
    "COMPANY_SUFFIXES",
    "DEGREES",
    "DESIGNATIONS",
    "JOB_SKILLS",
    "LABELS",
    "SOFT_SKILLS",
    "SYNTH_FILE",
    "TECH_TOOLS",
    "generate_resumes",
    "write_synthetic_resumes",
]

SYNTH_FILE = "resumes.jsonl"  # what write_synthetic_resumes writes in its directory

NAME = "Name"
EMAIL = "Email Address"
DESIGNATION = "Designation"
COMPANY = "Companies worked at"
LOCATION = "Location"
YEARS = "Years of Experience"
COLLEGE = "College Name"
DEGREE = "Degree"
GRAD_YEAR = "Graduation Year"
SKILL = "Job Specific Skills"
TOOL = "Tech Tools"
SOFT = "Soft Skills"

LABELS: tuple[str, ...] = (
    NAME,
    EMAIL,
    DESIGNATION,
    COMPANY,
    LOCATION,
    YEARS,
    COLLEGE,
    DEGREE,
    GRAD_YEAR,
    SKILL,
    TOOL,
    SOFT,
)

LOCALES: tuple[str, ...] = ("en_US", "en_GB", "en_IN")
_LOCALE_WEIGHTS = (0.4, 0.2, 0.4)

# --------------------------------------------------------------------------------------------------
# Vocabularies: packaged data files in vocab/ (UTF-8; a .txt file holds one item a line, in order)
# --------------------------------------------------------------------------------------------------

_VOCAB = resources.files("resume_ner.data") / "vocab"


@functools.cache
def _lines(name: str) -> tuple[str, ...]:
    """The items of ``vocab/<name>``, one a line, in file order (duplicates kept)."""
    return tuple(_VOCAB.joinpath(name).read_text(encoding="utf-8").splitlines())


@functools.cache
def _json(name: str) -> Any:
    """The parsed content of ``vocab/<name>``."""
    return json.loads(_VOCAB.joinpath(name).read_text(encoding="utf-8"))


_Track = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # (designations, job-specific skills, tech tools)


def _track(name: str) -> _Track:
    entry = _json("tracks.json")[name]
    return tuple(entry["designations"]), tuple(entry["skills"]), tuple(entry["tools"])


# Career tracks (the keys of tracks.json) and how often each is drawn.
_TRACK_SHARES = {"software": 0.3, "data": 0.2, "infra": 0.17, "qa": 0.1, "business": 0.13, "people": 0.1}
_TRACKS: tuple[_Track, ...] = tuple(_track(name) for name in _TRACK_SHARES)
_TRACK_WEIGHTS = tuple(_TRACK_SHARES.values())


def _unique(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for group in groups for item in group))


DESIGNATIONS: tuple[str, ...] = _unique(*(t[0] for t in _TRACKS))
JOB_SKILLS: tuple[str, ...] = _unique(*(t[1] for t in _TRACKS))
TECH_TOOLS: tuple[str, ...] = _unique(*(t[2] for t in _TRACKS))

SOFT_SKILLS: tuple[str, ...] = _lines("soft_skills.txt")

_DESIGNATION_PREFIXES = ("Senior", "Sr.", "Junior", "Lead", "Principal", "Associate")

_DEGREE_TYPES: tuple[tuple[str, bool], ...] = tuple(_json("degrees.json").items())  # (degree, takes a field)
_DEGREE_FIELDS = _lines("degree_fields.txt")
DEGREES: tuple[str, ...] = tuple(d for d, _ in _DEGREE_TYPES)
_SCHOOL_DEGREES = _lines("school_degrees.txt")

COLLEGE_PATTERNS: tuple[str, ...] = _lines("college_patterns.txt")  # fields: {city}, {region}, {first}, {last}
_SCHOOL_PATTERNS = _lines("school_patterns.txt")

COMPANY_SUFFIXES: tuple[str, ...] = _lines("company_suffixes.txt")
_COMPANY_WORDS = _lines("company_words.txt")
_WELL_KNOWN_COMPANIES = _lines("well_known_companies.txt")

_CITIES: dict[str, tuple[tuple[str, str], ...]] = {  # locale -> (city, region) pairs
    locale: tuple((city, region) for city, region in pairs) for locale, pairs in _json("cities.json").items()
}

# --------------------------------------------------------------------------------------------------
# Layout vocabularies
# --------------------------------------------------------------------------------------------------

_HEADINGS: dict[str, tuple[str, ...]] = {kind: tuple(names) for kind, names in _json("headings.json").items()}
_BULLETS = ("• ", "- ", "* ", "▪ ", "➢ ", "o ", "", "· ", "– ", "> ", "✓ ")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
)
_PRESENT = ("Present", "Current", "Till Date", "Now", "present", "till date", "Ongoing")
_RANGE_SEPS = (" - ", " – ", " to ", "-", " — ", " -  ")

_PROJECT_ADJ = _lines("project_adjectives.txt")
_PROJECT_NOUN = _lines("project_nouns.txt")
_CODE_NAMES = _lines("code_names.txt")
_METRICS = _lines("metrics.txt")
_AWARDS = _lines("awards.txt")
_CERTIFICATIONS = _lines("certifications.txt")
_TOOL_CERT_PATTERNS = _lines("tool_cert_patterns.txt")
_LANGUAGES = _lines("languages.txt")
_LANGUAGE_LEVELS = (
    "(Native)",
    "(Fluent)",
    "- professional working proficiency",
    "(Basic)",
    "(Intermediate)",
    "- read, write, speak",
    "",
)
_HOBBIES = _lines("hobbies.txt")
_COURSEWORK = _lines("coursework.txt")
_PROFICIENCY = ("(Advanced)", "(Intermediate)", "(Expert)", "(Basic)", "- advanced", "★★★★☆", "★★★☆☆")
_SKILL_GROUPS = _lines("skill_groups.txt")
_SKILL_LABELS = _lines("skill_labels.txt")
_SOFT_LABELS = ("Soft Skills", "Personal Skills", "Strengths", "Traits")
_ENV_LABELS = ("Environment", "Technologies used", "Tech stack", "Tools used", "Environment & Tools")

# Sentence templates: {slot}s are filled by ``_Resume._slot``; literal text must not name any entity.
_SUMMARY_TEMPLATES = _lines("summary_templates.txt")
_BULLET_TEMPLATES = _lines("bullet_templates.txt")
_PROJECT_TEMPLATES = _lines("project_templates.txt")

_REFERENCE_LINES = _lines("reference_lines.txt")
_DECLARATION = _lines("declarations.txt")
_EXTRA_LINES = _lines("extra_lines.txt")

_SLOT_RE = re.compile(r"\{(\w+)\}")
_WORD_RE = re.compile(r"[A-Za-z]{5,}")
_REFERENCE_YEARS = (2017, 2018, 2019, 2020, 2021, 2022, 2023, 2024)
_SHORT, _MEDIUM, _LONG = "short", "medium", "long"


@functools.cache
def _parse_template(template: str) -> tuple[str, ...]:
    """``"a {x} b"`` -> ``("a ", "x", " b")``: literals at even, slot names at odd positions."""
    return tuple(_SLOT_RE.split(template))


@functools.cache
def _faker(locale: str) -> Faker:
    return Faker(locale)


@functools.cache
def _vocabulary_pattern() -> re.Pattern[str]:
    """Matches any labelled vocabulary item as a whole word (to keep them out of unlabelled noise)."""
    items = sorted(set(DESIGNATIONS + JOB_SKILLS + TECH_TOOLS + SOFT_SKILLS), key=lambda v: (-len(v), v))
    return re.compile(r"(?<![\w.])(?:" + "|".join(map(re.escape, items)) + r")(?![\w])", re.IGNORECASE)


def _clean(text: str) -> str:
    """Faker output with inner whitespace collapsed and none at the edges."""
    return " ".join(text.split())


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


# --------------------------------------------------------------------------------------------------
# Text assembly with exact offsets
# --------------------------------------------------------------------------------------------------


class _Writer:
    """Appends text pieces and records the offsets of the labelled ones as they are appended."""

    __slots__ = ("_parts", "_pos", "spans")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._pos = 0
        self.spans: list[Span] = []

    def text(self, piece: str) -> None:
        if piece:
            self._parts.append(piece)
            self._pos += len(piece)

    def entity(self, piece: str, label: str) -> None:
        if not piece or piece != piece.strip():
            raise ValueError(f"entity {piece!r} ({label}) is empty or has edge whitespace")
        start = self._pos
        self.text(piece)
        self.spans.append(Span(start, self._pos, label))

    def piece(self, piece: str, label: str | None) -> None:
        if label is None:
            self.text(piece)
        else:
            self.entity(piece, label)

    def value(self) -> str:
        return "".join(self._parts)


class _Style:
    """Per-document layout choices, so that one resume is internally consistent."""

    def __init__(self, rng: random.Random) -> None:
        r = rng.random
        self.bullet = rng.choice(_BULLETS)
        self.alt_bullet = rng.choice(_BULLETS) if r() < 0.25 else self.bullet
        self.heading_case = rng.choices(("upper", "title", "asis", "lower"), (0.5, 0.3, 0.15, 0.05))[0]
        self.heading_colon = r() < 0.2
        self.heading_underline = rng.choice(("-", "=", "_")) if r() < 0.1 else ""
        self.heading_gap = "\n\n" if r() < 0.4 else "\n"
        self.section_gap = rng.choices(("\n\n", "\n", "\n\n\n"), (0.6, 0.15, 0.25))[0]
        self.list_sep = rng.choices(
            (", ", " | ", "; ", " · ", ",", "\n", " / ", ",  "), (0.4, 0.14, 0.08, 0.05, 0.07, 0.18, 0.04, 0.04)
        )[0]
        self.item_case = rng.choices(("asis", "lower", "title", "upper"), (0.78, 0.12, 0.06, 0.04))[0]
        self.trailing_ws = 0.15 if r() < 0.15 else 0.0
        self.typo_rate = 0.03 if r() < 0.35 else 0.0
        self.month_style = rng.choice(("short", "long", "num", "iso", "year", "short_apos", "short_dot"))
        self.range_sep = rng.choice(_RANGE_SEPS)
        self.present = rng.choice(_PRESENT)
        self.duration = rng.choice(("none", "none", "paren", "dot", "paren_long"))
        self.exp_layout = rng.randrange(7)
        self.edu_layout = rng.randrange(6)
        self.header_layout = rng.randrange(6)
        self.skills_layout = rng.randrange(5)
        self.company_upper = r() < 0.1
        self.designation_upper = r() < 0.08


# --------------------------------------------------------------------------------------------------
# One resume
# --------------------------------------------------------------------------------------------------


class _Job(TypedDict):
    """One planned job; ``start``/``end`` are month indices (``year * 12 + month``), ``end`` is None while current."""

    title: str
    company: str
    location: str
    start: int
    end: int | None


# (degree, college, start year, graduation year, location or None)
_Education = tuple[str, str, int, int, str | None]


class _Resume:
    def __init__(self, rng: random.Random, fake: Faker, locale: str) -> None:
        self.rng = rng
        self.fake = fake
        self.locale = locale
        self.w = _Writer()
        self.s = _Style(rng)
        self.cur_bullet = self.s.bullet
        self._used: set[str] = set()
        self.size = rng.choices((_SHORT, _MEDIUM, _LONG), (0.22, 0.56, 0.22))[0]

        track = rng.choices(_TRACKS, _TRACK_WEIGHTS)[0]
        designations, skills, tools = track
        other = rng.choice(_TRACKS)
        n_skills = {_SHORT: 6, _MEDIUM: 9, _LONG: 13}[self.size] + rng.randrange(5)
        n_tools = {_SHORT: 7, _MEDIUM: 10, _LONG: 15}[self.size] + rng.randrange(6)
        self.skills = self._sample(skills, n_skills) + self._sample(other[1], rng.randrange(3))
        self.tools = self._sample(tools, n_tools) + self._sample(other[2], rng.randrange(3))
        self.skills = list(dict.fromkeys(self.skills))
        self.tools = list(dict.fromkeys(self.tools))
        self.softs = self._sample(SOFT_SKILLS, 3 + rng.randrange(6))
        self.designations = list(designations)

        self.first = _clean(fake.first_name())
        self.last = _clean(fake.last_name())
        self.home = self._location()
        self.present_month = rng.choice(_REFERENCE_YEARS) * 12 + rng.randrange(12)
        self._plan_career()
        self._plan_education()
        self.email = self._email()

    # ---------------------------------------------------------------- planning

    def _sample(self, pool: tuple[str, ...], k: int) -> list[str]:
        return self.rng.sample(pool, min(k, len(pool)))

    def _plan_career(self) -> None:
        rng = self.rng
        n_jobs = {_SHORT: rng.randint(1, 2), _MEDIUM: rng.randint(2, 4), _LONG: rng.randint(4, 7)}[self.size]
        months = [rng.randint(7, 54 if n_jobs < 4 else 40) for _ in range(n_jobs)]
        end = self.present_month if rng.random() < 0.75 else self.present_month - rng.randint(1, 8)
        jobs: list[_Job] = []
        title = rng.choice(self.designations)
        for i, length in enumerate(months):  # most recent first
            start = end - length
            if i > 0 and rng.random() < 0.5:
                title = rng.choice(self.designations)
            jobs.append(
                {
                    "title": self._designation(title),
                    "company": self._company(),
                    "location": self._location() if rng.random() < 0.8 else self.home,
                    "start": start,
                    "end": None if (i == 0 and end == self.present_month) else end,
                }
            )
            end = start - (rng.randint(1, 6) if rng.random() < 0.3 else 0)
        self.jobs = jobs
        self.career_start = jobs[-1]["start"]
        self.total_years = max(1, (self.present_month - self.career_start) // 12)
        self.title = jobs[0]["title"]

    def _plan_education(self) -> None:
        rng = self.rng
        grad = self.career_start // 12 - (1 if rng.random() < 0.3 else 0)
        entries: list[_Education] = []
        with_master = rng.random() < 0.35
        if with_master:
            entries.append(self._degree_entry(grad, master=True))
            grad -= rng.choice((2, 2, 3)) + (3 if entries[0][0].startswith("Ph") else 0)
        entries.append(self._degree_entry(grad, master=False))
        if self.locale == "en_IN" and rng.random() < 0.35:
            entries.append((rng.choice(_SCHOOL_DEGREES), self._college(_SCHOOL_PATTERNS), grad - 5, grad - 4, None))
        self.education = entries

    def _degree_entry(self, grad: int, master: bool) -> _Education:
        rng = self.rng
        pool = [d for d in _DEGREE_TYPES if (d[0][0] == "M" or d[0].startswith("Ph")) == master]
        name, takes_field = rng.choice(pool)
        if takes_field and rng.random() < 0.85:
            joiner = rng.choice((" in ", " in ", ", ", " - ", " (", " of "))
            field = rng.choice(_DEGREE_FIELDS)
            name = f"{name}{joiner}{field}" + (")" if joiner == " (" else "")
        years = 2 if master else rng.choice((3, 4, 4))
        location = self._location() if rng.random() < 0.45 else None
        return name, self._college(COLLEGE_PATTERNS), grad - years, grad, location

    def _college(self, patterns: tuple[str, ...]) -> str:
        city, region = self._city_region()
        return self.rng.choice(patterns).format(
            city=city, region=region, first=_clean(self.fake.first_name()), last=_clean(self.fake.last_name())
        )

    def _city_region(self) -> tuple[str, str]:
        if self.rng.random() < 0.6:
            return self.rng.choice(_CITIES[self.locale])
        return _clean(self.fake.city()), _clean(self.fake.administrative_unit())

    def _location(self) -> str:
        city, region = self._city_region()
        form = self.rng.random()
        if form < 0.35:
            return city
        if form < 0.9:
            return f"{city}, {region}"
        country = {"en_US": "USA", "en_GB": "UK", "en_IN": "India"}[self.locale]
        return f"{city}, {country}"

    def _designation(self, title: str) -> str:
        rng = self.rng
        if rng.random() < 0.15 and not title.startswith(("Senior", "Sr", "Junior", "Lead", "Associate")):
            title = f"{rng.choice(_DESIGNATION_PREFIXES)} {title}"
        return title

    def _company(self) -> str:
        rng, fake = self.rng, self.fake
        kind = rng.random()
        if kind < 0.3:
            return _clean(fake.company())
        if kind < 0.65:
            return f"{rng.choice(_COMPANY_WORDS)} {rng.choice(COMPANY_SUFFIXES)}"
        if kind < 0.82:
            return f"{_clean(fake.last_name())} {rng.choice(COMPANY_SUFFIXES)}"
        return rng.choice(_WELL_KNOWN_COMPANIES)

    def _email(self) -> str:
        rng = self.rng
        first = re.sub(r"[^a-z]", "", _ascii(self.first).lower()) or "user"
        last = re.sub(r"[^a-z]", "", _ascii(self.last).lower()) or "name"
        local = rng.choice(
            (
                f"{first}.{last}",
                f"{first}{last}",
                f"{first[0]}.{last}",
                f"{first}_{last}",
                f"{first}{last}{rng.randint(1, 99)}",
                f"{last}.{first}",
                f"{first}.{last}{self.career_start // 12 % 100:02d}",
            )
        )
        return f"{local}@{self.fake.free_email_domain()}"

    # ---------------------------------------------------------------- writing primitives

    def nl(self, n: int = 1) -> None:
        if self.s.trailing_ws and self.rng.random() < self.s.trailing_ws:
            self.w.text(" ")
        self.w.text("\n" * n)

    def typo(self, text: str) -> str:
        """Swap two interior letters of one long word, now and then (never touches the ends of ``text``)."""
        if not self.s.typo_rate or self.rng.random() >= self.s.typo_rate:
            return text
        words = list(_WORD_RE.finditer(text))
        if not words:
            return text
        m = self.rng.choice(words)
        i = self.rng.randrange(m.start() + 1, m.end() - 2)
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]

    def case(self, item: str) -> str:
        mode = self.s.item_case if self.rng.random() < 0.85 else self.rng.choice(("asis", "lower", "upper"))
        if mode == "lower":
            return item.lower()
        if mode == "upper" and len(item) < 20:
            return item.upper()
        if mode == "title" and item.islower():
            return item.title()
        return item

    def ent(self, text: str, label: str) -> None:
        self.w.entity(self.typo(text), label)

    def heading(self, kind: str) -> None:
        h = self.rng.choice(_HEADINGS[kind])
        if self.s.heading_case == "upper":
            h = h.upper()
        elif self.s.heading_case == "title":
            h = h.title()
        elif self.s.heading_case == "lower":
            h = h.lower()
        if self.s.heading_colon:
            h += ":"
        self.cur_bullet = self.s.bullet if self.rng.random() < 0.8 else self.s.alt_bullet
        self.w.text(h)
        if self.s.heading_underline:
            self.w.text("\n" + self.s.heading_underline * len(h))
        self.w.text(self.s.heading_gap)

    def bullet(self) -> None:
        self.w.text(self.cur_bullet)

    def write_list(self, items: Sequence[tuple[str, str | None]], sep: str | None = None) -> None:
        sep = self.s.list_sep if sep is None else sep
        for i, (text, label) in enumerate(items):
            if i:
                if sep == "\n":
                    self.nl()
                    self.bullet()
                else:
                    self.w.text(sep)
            elif sep == "\n":
                self.bullet()
            self.w.piece(text, label)

    def month(self, m: int) -> str:
        year, mon = divmod(m, 12)
        style = self.s.month_style
        if style == "short":
            return f"{_MONTHS[mon][:3]} {year}"
        if style == "short_dot":
            return f"{_MONTHS[mon][:3]}. {year}" if mon != 4 else f"May {year}"
        if style == "long":
            return f"{_MONTHS[mon]} {year}"
        if style == "num":
            return f"{mon + 1:02d}/{year}"
        if style == "iso":
            return f"{year}-{mon + 1:02d}"
        if style == "short_apos":
            return f"{_MONTHS[mon][:3]} '{year % 100:02d}"
        return str(year)

    def date_range(self, start: int, end: int | None) -> str:
        stop = self.s.present if end is None else self.month(end)
        return f"{self.month(start)}{self.s.range_sep}{stop}"

    def duration(self, start: int, end: int | None) -> str | None:
        if self.s.duration == "none":
            return None
        months = (self.present_month if end is None else end) - start
        years, rest = divmod(months, 12)
        if self.s.duration == "paren_long":
            parts = [f"{years} year{'s' if years != 1 else ''}"] if years else []
            if rest:
                parts.append(f"{rest} month{'s' if rest != 1 else ''}")
        else:
            parts = [f"{years} yr{'s' if years != 1 else ''}"] if years else []
            if rest:
                parts.append(f"{rest} mo{'s' if rest != 1 else ''}")
        return " ".join(parts) or None

    def years_phrase(self) -> tuple[str, str, str]:
        """(before, labelled, after) for the total experience, e.g. ("over ", "7 years", "")."""
        rng, n = self.rng, self.total_years
        form = rng.randrange(9)
        if form == 0:
            return "", f"{n}+ years", ""
        if form == 1:
            return "", f"{n} years", ""
        if form == 2:
            return rng.choice(("over ", "Over ", "more than ")), f"{n} years", ""
        if form == 3 and n < len(_NUMBER_WORDS):
            return "", f"{_NUMBER_WORDS[n]} years", ""
        if form == 4:
            return "", f"{n}.{rng.randint(1, 9)} years", ""
        if form == 5:
            return "", f"{n}+ yrs", ""
        if form == 6:
            return "", f"{n} years {rng.randint(1, 11)} months", ""
        if form == 7:
            return "nearly ", f"{n + 1} years", ""
        return "", f"{n}+ Years", ""

    # ---------------------------------------------------------------- templates

    def pick(self, pool: list[str] | tuple[str, ...]) -> str:
        """A random item of ``pool`` not used yet in the current sentence (when there is one)."""
        for _ in range(6):
            item = self.rng.choice(pool)
            if item not in self._used:
                break
        self._used.add(item)
        return item

    def fill(self, template: str) -> None:
        self._used = set()
        parts = _parse_template(template)
        for i, part in enumerate(parts):
            if i % 2 == 0:
                self.w.text(self.typo(part) if part else part)
            else:
                self._slot(part)

    def _slot(self, name: str) -> None:
        rng, w = self.rng, self.w
        if name == "skill":
            self.ent(self.case(self.pick(self.skills)), SKILL)
        elif name == "tool":
            self.ent(self.pick(self.tools), TOOL)
        elif name == "soft_l":
            soft = self.pick(self.softs)
            self.ent(soft.lower() if rng.random() < 0.7 else soft, SOFT)
        elif name == "designation":
            self.ent(rng.choice(self.designations) if rng.random() < 0.3 else self.title, DESIGNATION)
        elif name == "company":
            self.ent(self.jobs[0]["company"], COMPANY)
        elif name == "loc":
            self.ent(rng.choice((self.home, self.jobs[0]["location"])), LOCATION)
        elif name == "yoe":
            before, phrase, after = self.years_phrase()
            w.text(before)
            self.ent(phrase, YEARS)
            w.text(after)
        elif name == "n":
            w.text(str(rng.choice((2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 40, 50, 120, 300))))
        elif name == "pct":
            w.text(f"{rng.randint(5, 70)}%")
        elif name == "money":
            w.text(rng.choice(("$", "£", "₹", "USD ", "INR ")) + f"{rng.randint(1, 99) * 10}K")
        elif name == "year":
            w.text(str(rng.randint(self.career_start // 12, self.present_month // 12)))
        elif name == "project":
            w.text(self.project_name())
        elif name == "metric":
            w.text(rng.choice(_METRICS))
        elif name == "award":
            w.text(rng.choice(_AWARDS))
        elif name == "cert":
            w.text(rng.choice(_CERTIFICATIONS))
        elif name == "ticket":
            w.text(str(rng.randint(1000, 99999)))
        else:  # pragma: no cover - a template names an unknown slot
            raise KeyError(name)

    def street(self) -> str:
        """A street address (unlabelled noise) that names no labelled entity, e.g. no "Jenkins Road"."""
        for _ in range(5):
            address = self.fake.street_address().replace("\n", ", ")
            if not _vocabulary_pattern().search(address):
                return address
        return f"{self.rng.randint(1, 99)}, Main Road"

    def project_name(self) -> str:
        if self.rng.random() < 0.35:
            return f"Project {self.rng.choice(_CODE_NAMES)}"
        return f"{self.rng.choice(_PROJECT_ADJ)} {self.rng.choice(_PROJECT_NOUN)}"

    # ---------------------------------------------------------------- sections

    def header(self) -> None:
        rng, w = self.rng, self.w
        layout = self.s.header_layout
        name = f"{self.first} {self.last}"
        name = rng.choices((name, name.upper(), name.lower()), (0.72, 0.2, 0.08))[0]
        phone = self.fake.phone_number()
        handle = re.sub(r"[^a-z]", "", _ascii(self.first + self.last).lower()) or "profile"
        link = rng.choice(
            (
                f"linkedin.com/in/{handle}-{rng.randrange(16**4):04x}",
                f"https://www.linkedin.com/in/{handle}",
                f"github.com/{handle}",
                f"https://{handle}.dev",
                f"www.{handle}.com",
            )
        )
        if layout == 5:
            w.text(rng.choice(("CURRICULUM VITAE", "Curriculum Vitae", "RESUME", "Resume")))
            self.nl(2)
        self.ent(name, NAME)
        if layout in (1, 2) and rng.random() < 0.8:
            w.text(rng.choice((" - ", "\n", " | ", ", ")))
            self.ent(self.title.upper() if self.s.designation_upper else self.title, DESIGNATION)
        self.nl()
        if layout == 0:
            self.ent(self.email, EMAIL)
            w.text(" | ")
            w.text(phone)
            w.text(" | ")
            self.ent(self.home, LOCATION)
            self.nl()
        elif layout == 1:
            self.ent(self.home, LOCATION)
            self.nl()
            w.text(rng.choice(("Phone: ", "Mobile: ", "Tel: ", "Ph: ")) + phone)
            self.nl()
            w.text(rng.choice(("Email: ", "E-mail: ", "Mail: ")))
            self.ent(self.email, EMAIL)
            self.nl()
        elif layout == 2:
            self.ent(self.email, EMAIL)
            self.nl()
            w.text(phone)
            self.nl()
        elif layout == 3:
            self.ent(self.home, LOCATION)
            w.text(rng.choice((" - Email me on: ", " — ", " · ")))
            self.ent(self.email, EMAIL)
            self.nl()
        elif layout == 4:
            w.text(phone)
            w.text(rng.choice(("  ", " · ", " | ")))
            self.ent(self.email, EMAIL)
            self.nl()
            self.ent(self.home, LOCATION)
            self.nl()
        else:
            w.text("Address: " + self.street() + ", ")
            self.ent(self.home, LOCATION)
            self.nl()
            w.text(rng.choice(("Mobile: ", "Contact: ")) + phone)
            self.nl()
            w.text(rng.choice(("E-mail: ", "Email ID: ")))
            self.ent(self.email, EMAIL)
            self.nl()
        if rng.random() < 0.55:
            w.text(link)
            self.nl()
        if rng.random() < 0.15:
            w.text(self.street())
            self.nl()

    def summary(self) -> None:
        rng = self.rng
        self.heading("summary")
        n = {_SHORT: (1, 3), _MEDIUM: (2, 4), _LONG: (3, 6)}[self.size]
        templates = rng.sample(_SUMMARY_TEMPLATES, rng.randint(*n))
        as_bullets = rng.random() < 0.25
        for i, template in enumerate(templates):
            if as_bullets:
                self.bullet()
            elif i:
                self.w.text(" " if rng.random() < 0.9 else "  ")
            self.fill(template)
            if as_bullets:
                self.nl()
        if not as_bullets:
            self.nl()

    def experience(self) -> None:
        self.heading("experience")
        for i, job in enumerate(self.jobs):
            if i:
                self.nl(self.rng.choice((1, 1, 2)))
            self._job(job)

    def _job(self, job: _Job) -> None:
        rng, w = self.rng, self.w
        title = job["title"].upper() if self.s.designation_upper else job["title"]
        company = job["company"].upper() if self.s.company_upper else job["company"]
        dates = self.date_range(job["start"], job["end"])
        dur = self.duration(job["start"], job["end"])

        def put_dates(in_parens: bool = False) -> None:
            self.ent(dates, YEARS)
            if dur:
                if self.s.duration == "dot" or in_parens:
                    w.text(" · ")
                    self.ent(dur, YEARS)
                else:
                    w.text(" (")
                    self.ent(dur, YEARS)
                    w.text(")")

        def put_loc(prefix: str) -> bool:
            if rng.random() < 0.85:
                w.text(prefix)
                self.ent(job["location"], LOCATION)
                return True
            return False

        layout = self.s.exp_layout
        if layout == 0:
            self.ent(title, DESIGNATION)
            self.nl()
            self.ent(company, COMPANY)
            put_loc(rng.choice((" - ", " -  ", ", ", " – ")))
            self.nl()
            put_dates()
            self.nl()
        elif layout == 1:
            self.ent(title, DESIGNATION)
            w.text(" | ")
            self.ent(company, COMPANY)
            w.text(" | ")
            put_dates()
            self.nl()
            if put_loc(""):
                self.nl()
        elif layout == 2:
            self.ent(company, COMPANY)
            put_loc(", ")
            self.nl()
            self.ent(title, DESIGNATION)
            w.text(rng.choice(("    ", "\t", " ", "   ")))
            put_dates()
            self.nl()
        elif layout == 3:
            put_dates()
            self.nl()
            self.ent(title, DESIGNATION)
            w.text(", ")
            self.ent(company, COMPANY)
            self.nl()
        elif layout == 4:
            self.ent(company, COMPANY)
            w.text(" (")
            put_dates(in_parens=True)
            w.text(")")
            self.nl()
            self.ent(title, DESIGNATION)
            put_loc(" - ")
            self.nl()
        elif layout == 5:
            self.ent(title, DESIGNATION)
            w.text(rng.choice((" at ", " @ ")))
            self.ent(company, COMPANY)
            self.nl()
            if put_loc(""):
                w.text(" · ")
            put_dates()
            self.nl()
        else:
            w.text("Company: ")
            self.ent(company, COMPANY)
            self.nl()
            w.text("Designation: " if rng.random() < 0.5 else "Role: ")
            self.ent(title, DESIGNATION)
            self.nl()
            w.text("Duration: ")
            put_dates()
            self.nl()
        n_bullets = {_SHORT: (1, 3), _MEDIUM: (2, 5), _LONG: (3, 7)}[self.size]
        if rng.random() < 0.12:
            w.text(rng.choice(("Responsibilities:", "Key Responsibilities:", "Roles & Responsibilities:")))
            self.nl()
        for template in rng.sample(_BULLET_TEMPLATES, rng.randint(*n_bullets)):
            self.bullet()
            self.fill(template)
            self.nl()
        if rng.random() < 0.35:
            w.text(rng.choice(_ENV_LABELS) + ": ")
            tools = self._sample(tuple(self.tools), rng.randint(2, 6))
            sep = self.s.list_sep if self.s.list_sep != "\n" else ", "
            self.write_list([(t, TOOL) for t in tools], sep)
            self.nl()

    def education_section(self) -> None:
        rng, w = self.rng, self.w
        self.heading("education")
        layout = self.s.edu_layout
        for i, (degree, college, start, grad, location) in enumerate(self.education):
            if i:
                self.nl(rng.choice((1, 1, 2)))

            def put_year(start: int = start, grad: int = grad) -> None:  # this iteration's years
                form = rng.randrange(5)
                if form == 0:
                    self.ent(f"{start}{self.s.range_sep}{grad}", GRAD_YEAR)
                elif form == 1:
                    w.text(rng.choice(("Class of ", "Graduated ", "Batch of ", "Passed out in ")))
                    self.ent(str(grad), GRAD_YEAR)
                elif form == 2:
                    w.text(_MONTHS[rng.choice((3, 4, 5, 6))] + " ")
                    self.ent(str(grad), GRAD_YEAR)
                else:
                    self.ent(str(grad), GRAD_YEAR)

            def put_loc(prefix: str, location: str | None = location) -> None:
                if location:
                    w.text(prefix)
                    self.ent(location, LOCATION)

            if layout == 0:
                self.ent(degree, DEGREE)
                self.nl()
                self.ent(college, COLLEGE)
                put_loc(rng.choice((", ", " - ", " -  ")))
                self.nl()
                put_year()
                self.nl()
            elif layout == 1:
                self.ent(degree, DEGREE)
                w.text(" | ")
                self.ent(college, COLLEGE)
                w.text(" | ")
                put_year()
                self.nl()
            elif layout == 2:
                put_year()
                w.text(rng.choice(("  ", "\t", " : ", " - ")))
                self.ent(degree, DEGREE)
                w.text(", ")
                self.ent(college, COLLEGE)
                put_loc(", ")
                self.nl()
            elif layout == 3:
                self.ent(college, COLLEGE)
                put_loc(" - ")
                self.nl()
                self.ent(degree, DEGREE)
                if rng.random() < 0.5:
                    w.text(rng.choice(("; GPA: ", "; CGPA: ", " with ")))
                    w.text(
                        rng.choice(
                            (
                                f"3.{rng.randint(0, 9)}/4.0",
                                f"{rng.randint(6, 9)}.{rng.randint(0, 9)}/10",
                                f"{rng.randint(55, 92)}%",
                            )
                        )
                    )
                self.nl()
                put_year()
                self.nl()
            elif layout == 4:
                self.ent(degree, DEGREE)
                w.text(" from ")
                self.ent(college, COLLEGE)
                w.text(" (")
                put_year()
                w.text(")")
                self.nl()
            else:
                self.bullet()
                self.ent(degree, DEGREE)
                w.text(" - ")
                self.ent(college, COLLEGE)
                w.text(", ")
                put_year()
                self.nl()
            if rng.random() < 0.15:
                w.text("Relevant coursework: " + ", ".join(rng.sample(_COURSEWORK, 3)))
                self.nl()
            elif rng.random() < 0.12:
                w.text(rng.choice(("Percentage: ", "Aggregate: ")) + f"{rng.randint(55, 95)}%")
                self.nl()

    def skills_section(self) -> None:
        rng, w = self.rng, self.w
        self.heading("skills")
        layout = self.s.skills_layout
        skills = [(self.case(s), SKILL) for s in self._sample(tuple(self.skills), len(self.skills))]
        tools = [(t, TOOL) for t in self._sample(tuple(self.tools), len(self.tools))]
        softs = [(self.case(s), SOFT) for s in self.softs]
        include_soft = not self.soft_section
        if layout == 0:  # labelled groups
            w.text(rng.choice(_SKILL_LABELS) + ": ")
            self.write_list(skills, self._inline_sep())
            self.nl()
            w.text(rng.choice(_SKILL_GROUPS) + ": ")
            self.write_list(tools, self._inline_sep())
            self.nl()
            if include_soft:
                w.text(rng.choice(_SOFT_LABELS) + ": ")
                self.write_list(softs, self._inline_sep())
                self.nl()
        elif layout == 1:  # one mixed list
            items = skills + tools + (softs if include_soft else [])
            rng.shuffle(items)
            self.write_list(items)
            self.nl()
        elif layout == 2:  # tools split into groups on their own lines
            k = max(1, len(tools) // rng.randint(2, 4))
            groups = rng.sample(_SKILL_GROUPS, min(len(_SKILL_GROUPS), (len(tools) + k - 1) // k))
            for g, name in enumerate(groups):
                chunk = tools[g * k : (g + 1) * k]
                if not chunk:
                    break
                self.bullet()
                w.text(name + ": ")
                self.write_list(chunk, self._inline_sep())
                self.nl()
            self.bullet()
            w.text(rng.choice(_SKILL_LABELS) + ": ")
            self.write_list(skills, self._inline_sep())
            self.nl()
            if include_soft:
                self.bullet()
                w.text(rng.choice(_SOFT_LABELS) + ": ")
                self.write_list(softs, self._inline_sep())
                self.nl()
        elif layout == 3:  # one item per line, with proficiency now and then
            items = skills + tools
            rng.shuffle(items)
            for text, label in items:
                self.bullet()
                self.w.entity(text, label)
                if rng.random() < 0.2:
                    w.text(" " + rng.choice(_PROFICIENCY))
                self.nl()
            if include_soft:
                self.nl()
                w.text(rng.choice(_SOFT_LABELS) + ":")
                self.nl()
                self.write_list(softs, "\n")
                self.nl()
        else:  # pipes on a few lines
            items = skills + tools
            rng.shuffle(items)
            step = rng.randint(4, 7)
            for j in range(0, len(items), step):
                self.write_list(items[j : j + step], " | ")
                self.nl()
            if include_soft:
                self.write_list(softs, " | ")
                self.nl()

    def _inline_sep(self) -> str:
        return self.s.list_sep if self.s.list_sep != "\n" else self.rng.choice((", ", " | "))

    def soft_skills_section(self) -> None:
        self.heading("soft")
        softs = [(self.case(s), SOFT) for s in self.softs]
        self.write_list(softs, "\n" if self.rng.random() < 0.6 else None)
        self.nl()

    def projects(self) -> None:
        rng, w = self.rng, self.w
        self.heading("projects")
        for i in range(rng.randint(1, 3 if self.size != _LONG else 4)):
            if i:
                self.nl()
            w.text(rng.choice(("Project: ", "Title: ", "")) + self.project_name())
            if rng.random() < 0.4:
                w.text(f" ({rng.randint(self.career_start // 12 - 2, self.present_month // 12)})")
            self.nl()
            for template in rng.sample(_PROJECT_TEMPLATES, rng.randint(1, 3)):
                self.bullet()
                self.fill(template)
                self.nl()

    def certifications(self) -> None:
        rng, w = self.rng, self.w
        self.heading("certifications")
        for _ in range(rng.randint(1, 4)):
            self.bullet()
            if rng.random() < 0.45:
                before, slot, after = _parse_template(rng.choice(_TOOL_CERT_PATTERNS))
                w.text(before)
                self.ent(rng.choice(self.tools), TOOL)
                w.text(after)
            else:
                w.text(rng.choice(_CERTIFICATIONS))
            if rng.random() < 0.6:
                opener = rng.choice((" - ", ", ", " (", " | Issued "))
                w.text(opener + self.month(rng.randint(self.career_start, self.present_month)))
                w.text(")" if opener == " (" else "")
            self.nl()

    def languages(self) -> None:
        self.heading("languages")
        items = [
            ((lang + " " + self.rng.choice(_LANGUAGE_LEVELS)).strip(), None)
            for lang in self.rng.sample(_LANGUAGES, self.rng.randint(1, 4))
        ]
        self.write_list(items)
        self.nl()

    def hobbies(self) -> None:
        self.heading("hobbies")
        self.write_list([(h, None) for h in self.rng.sample(_HOBBIES, self.rng.randint(2, 5))])
        self.nl()

    def awards(self) -> None:
        rng, w = self.rng, self.w
        self.heading("awards")
        for _ in range(rng.randint(1, 3)):
            self.bullet()
            w.text(f"{rng.choice(_AWARDS)}, {rng.randint(self.career_start // 12, self.present_month // 12)}")
            self.nl()

    def personal(self) -> None:
        rng, w = self.rng, self.w
        self.heading("personal")
        birth = self.career_start // 12 - rng.randint(21, 25)
        lines = [
            f"Date of Birth: {rng.randint(1, 28)} {rng.choice(_MONTHS)} {birth}",
            f"Nationality: {rng.choice(('Indian', 'British', 'American', 'Canadian'))}",
            f"Marital Status: {rng.choice(('Single', 'Married'))}",
            f"Passport No: {rng.choice('JKLMNPRSTZ')}{rng.randint(1000000, 9999999)}",
            "Permanent Address: " + self.street(),
        ]
        for line in rng.sample(lines, rng.randint(2, len(lines))):
            w.text(line)
            self.nl()
        if rng.random() < 0.3:
            w.text("Total Experience: ")
            _, phrase, _ = self.years_phrase()
            self.ent(phrase, YEARS)
            self.nl()
        if rng.random() < 0.3:
            self.fill(rng.choice(_EXTRA_LINES))
            self.nl()

    def additional(self) -> None:
        self.heading("additional")
        for template in self.rng.sample(_EXTRA_LINES, self.rng.randint(1, 3)):
            self.bullet()
            self.fill(template)
            self.nl()

    def references(self) -> None:
        self.heading("references")
        self.w.text(self.rng.choice(_REFERENCE_LINES))
        self.nl()

    def declaration(self) -> None:
        rng, w = self.rng, self.w
        self.heading("declaration")
        w.text(rng.choice(_DECLARATION))
        self.nl(2)
        w.text("Place: ")
        self.ent(self.home.split(",")[0], LOCATION)
        self.nl()
        w.text(f"Date: {rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{self.present_month // 12}")
        if rng.random() < 0.5:
            w.text(rng.choice(("\t\t", "    ", "\n")))
            name = f"{self.first} {self.last}"
            w.text("(")
            self.ent(name.upper() if rng.random() < 0.5 else name, NAME)
            w.text(")")
        self.nl()

    # ---------------------------------------------------------------- the whole document

    def build(self) -> tuple[str, list[Span]]:
        rng = self.rng
        self.soft_section = rng.random() < 0.35
        body = ["experience", "education", "skills"]
        optional = {
            _SHORT: (("projects", 0.15), ("certifications", 0.2), ("languages", 0.2), ("hobbies", 0.25)),
            _MEDIUM: (
                ("projects", 0.35),
                ("certifications", 0.4),
                ("languages", 0.3),
                ("hobbies", 0.3),
                ("awards", 0.25),
            ),
            _LONG: (
                ("projects", 0.8),
                ("certifications", 0.6),
                ("languages", 0.4),
                ("hobbies", 0.4),
                ("awards", 0.45),
                ("additional", 0.3),
            ),
        }[self.size]
        body += [name for name, p in optional if rng.random() < p]
        if self.soft_section:
            body.append("soft")
        rng.shuffle(body)
        if rng.random() < 0.6:  # most resumes lead with experience or skills
            lead = "experience" if rng.random() < 0.7 else "skills"
            body.remove(lead)
            body.insert(0, lead)
        tail = [
            name for name, p in (("personal", 0.25), ("references", 0.2), ("declaration", 0.15)) if rng.random() < p
        ]
        sections = (["summary"] if rng.random() < 0.88 else []) + body + tail
        writers = {
            "summary": self.summary,
            "experience": self.experience,
            "education": self.education_section,
            "skills": self.skills_section,
            "soft": self.soft_skills_section,
            "projects": self.projects,
            "certifications": self.certifications,
            "languages": self.languages,
            "hobbies": self.hobbies,
            "awards": self.awards,
            "additional": self.additional,
            "personal": self.personal,
            "references": self.references,
            "declaration": self.declaration,
        }
        self.header()
        for name in sections:
            self.w.text(self.s.section_gap)
            writers[name]()
        return self.w.value(), self.w.spans


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def generate_resumes(n: int, seed: int) -> list[Document]:
    """``n`` synthetic annotated resumes, identical for the same ``(n, seed)``.

    Ids are ``synth-<seed>-<i>``; spans use the raw label names in ``LABELS`` and are sorted by start.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        locale = rng.choices(LOCALES, _LOCALE_WEIGHTS)[0]
        fake = _faker(locale)
        fake.seed_instance(rng.getrandbits(64))
        doc_rng = random.Random(rng.getrandbits(64))
        text, spans = _Resume(doc_rng, fake, locale).build()
        docs.append(Document(id=f"synth-{seed}-{i}", text=text.rstrip() + "\n", spans=spans))
    return docs


def write_synthetic_resumes(out_dir: Path, n: int, seed: int) -> Path:
    """Write ``generate_resumes(n, seed)`` to ``out_dir/resumes.jsonl`` (``SYNTH_FILE``, Doccano JSONL), atomically."""
    lines = [json.dumps(doc.to_doccano(), ensure_ascii=False) for doc in generate_resumes(n, seed)]
    path = Path(out_dir) / SYNTH_FILE
    return write_text_atomic(path, "".join(line + "\n" for line in lines))
