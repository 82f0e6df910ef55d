"""The trap guard: refuses a semantic-cache hit whose prompt differs in a way vectors miss.

Averaged or pooled sentence embeddings put "Cancel my subscription" and
"Don't cancel my subscription", "from MySQL to Postgres" and "from Postgres
to MySQL", or "for 5 users" and "for 50 users" within a hair of each other
(word-order swaps score cosine 1.0). Only the texts tell them apart, so
:class:`TrapGuard` compares the two prompts and names the first difference
that changes the answer:

* ``"number"``: digits, amounts, times, number words or ordinals differ;
* ``"date"``: weekdays, months or relative days (today, tomorrow, ...) differ;
* ``"negation"``: one side is negated and the other is not, or the prompts
  differ by an antonym ("open"/"closed", "add"/"remove", "most"/"least");
* ``"qualifier"``: one side adds a contrasting qualifier ("self-", "part-",
  "non-", "ex-", ...);
* ``"entity"``: a capitalised name on one side is absent from the other, or
  the same names come in another order.

    >>> g = TrapGuard()
    >>> g.check("Cancel my subscription", "Don't cancel my subscription")
    'negation'
    >>> g.check("How much is the Pro plan for 5 users?", "How much is the Pro plan for 50 users?")
    'number'
    >>> g.check("Migrate from MySQL to Postgres", "Migrate from Postgres to MySQL")
    'entity'
    >>> g.check("What are your opening hours?", "what are your opening hours") is None
    True

It is a cheap lexical check (a few microseconds), not a language model: it
misses reworded traps and refuses some genuine paraphrases that happen to
use an antonym pair. Word lists are plain sets; pass your own to extend them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import SequenceMatcher

__all__ = ["TrapGuard"]

_NEGATORS = frozenset(
    "not no never none nothing nobody nowhere neither nor without cannot cant dont doesnt "
    "didnt isnt arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt mustnt "
    "neednt".split()
)

_NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety hundred thousand million billion first second third fourth fifth sixth "
    "seventh eighth ninth tenth half quarter double twice triple dozen single".split()
)

_DATE_WORDS = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday weekday weekdays weekend "
    "weekends mondays tuesdays wednesdays thursdays fridays saturdays sundays january "
    "february march april june july august september october november december jan feb "
    "mar apr jun jul aug sep sept oct nov dec today tomorrow yesterday tonight morning "
    "afternoon evening night overnight midnight noon spring summer autumn winter "
    "christmas easter".split()
)

_ANTONYM_PAIRS = (
    "open closed, open close, opening closing, on off, in out, into out, add remove, "
    "adding removing, include exclude, included excluded, includes excludes, including "
    "excluding, allowed banned, allowed forbidden, allowed prohibited, permitted banned, safe "
    "unsafe, safe dangerous, eat avoid, compulsory optional, mandatory optional, required "
    "optional, most least, more less, more fewer, before after, up down, buy sell, buying "
    "selling, increase decrease, raise lower, start stop, start end, begin end, enable "
    "disable, activate deactivate, accept reject, approve reject, upgrade downgrade, join "
    "leave, refundable non-refundable, import export, deposit withdraw, arrive depart, "
    "arrival departure, first last, lowest highest, cheapest dearest, cheapest expensive, "
    "minimum maximum, min max, win lose, pass fail, legal illegal, possible impossible, "
    "valid invalid, public private, inside outside, above below, over under, early late, "
    "earliest latest, hot cold, same different, with without, like dislike, love hate, "
    "true false, left right, north south, east west, male female, men women, adult child, "
    "adults children, domestic international, incoming outgoing, upload download, send "
    "receive, lend borrow, give take, debit credit, import export, employed unemployed, "
    "employee employer, employees employers, permanent temporary, full part, "
    "increase reduce, pay refund, charge refund, paid unpaid, wet dry, best worst, good bad, "
    "cheap expensive, high low, higher lower, long short, longer shorter, big small, "
    "bigger smaller, large small, heavy light, fast slow, faster slower, slowest fastest, "
    "new old, newer older, young old, younger older, light dark, sweet savoury, "
    "vegetarian meat, online offline, internal external, manual automatic, single joint, "
    "encrypt decrypt, mount unmount, install uninstall, lock unlock, subscribe unsubscribe, "
    "follow unfollow, block unblock, pause resume, allow block, allow deny, grant revoke, "
    "connect disconnect, attach detach, freeze unfreeze, hide show, show hide, check-in "
    "check-out, login logout, sign-in sign-out, inbound outbound, entry exit, present absent"
)

_QUALIFIERS = frozenset("self part ex pre post anti semi zero".split())

_NUMBER_VALUES = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_VALUES.update(
    {
        "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
        "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000",
        "million": "1000000", "single": "1", "first": "1st", "second": "2nd", "third": "3rd",
        "fourth": "4th", "fifth": "5th", "sixth": "6th", "seventh": "7th", "eighth": "8th",
        "ninth": "9th", "tenth": "10th", "double": "2", "twice": "2", "half": "0.5",
    }
)  # fmt: skip

# "one" / "single" are as often articles as amounts.
_WEAK_NUMBERS = frozenset({"one", "single"})

# Capitalised words that open a clause or greet: never names.
_NOT_NAMES = frozenset(
    "hi hello hiya hey thanks thank cheers please morning evening afternoon okay ok so er um "
    "quick sorry dear yes no".split()
)

# Words whose change never changes the question: function words, fillers, greetings.
_STOPWORDS = frozenset(
    "a an the my your our their his her its this that these those i me we you it is are was "
    "were be been being am do does did can could would should will shall may might must to "
    "of for in on at by with from as and or if then so what whats how hows when whens where "
    "wheres who whos which why there theres any some get got have has had just please hi "
    "hello hiya hey thanks thank cheers okay ok er um uh quick question again really actually "
    "also still now there here about up into onto yeah like team morning many advance could "
    "tell one usually go possible able know need want way time much available offer "
    "provide".split()
)

# Light verbs and common nouns that paraphrases swap freely: each group is one word.
_SYNONYM_GROUPS = (
    "change update switch amend edit modify",
    "get receive obtain request order",
    "start begin commence",
    "make submit file send lodge create",
    "cost price charge fee",
    "shop store",
    "fastest quickest",
    "quote quotation estimate",
    "kids kid children child",
    "road street",
    "result grade mark",
    "register sign enrol enroll join",
    "finish end close",
    "author writer wrote",
)
_CANON = {w: g.split()[0] for g in _SYNONYM_GROUPS for w in g.split()}

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d[\d,.:]*(?:am|pm|st|nd|rd|th|%)?", re.IGNORECASE)


def _pairs(spec: str) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for pair in spec.split(","):
        words = pair.split()
        if len(words) != 2:
            continue
        a, b = words
        out.setdefault(a, set()).add(b)
        out.setdefault(b, set()).add(a)
    return {k: frozenset(v) for k, v in out.items()}


def _stem(w: str) -> str:
    # Enough to fold plurals and -ing/-ed for comparing bags of words.
    for suf in ("ing", "ed", "es", "s"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)]
    return w


class _Parsed:
    __slots__ = (
        "words", "bag", "stems", "numbers", "dates", "negations", "entities", "content", "raw",
    )  # fmt: skip

    def __init__(self, text: str) -> None:
        words: list[str] = []
        entities: list[str] = []
        negations = 0
        dates: list[str] = []
        clause_start = True
        last_end = 0
        for m in _WORD.finditer(text):
            tok = m.group(0)
            gap = text[last_end : m.start()]
            if any(c in gap for c in ".!?:;,\n"):
                clause_start = True
            last_end = m.end()
            low = tok.lower().replace("'", "")
            if low.endswith("nt") and low[:-2] + "nt" in _NEGATORS:
                negations += 1
            elif low.endswith("n't") or low in _NEGATORS:
                negations += 1
            if low.startswith("non-") or low.startswith("un-"):
                negations += 1
            if low in _DATE_WORDS and not (clause_start and low in _NOT_NAMES):
                dates.append(low)
            words.append(low)
            # A capitalised word that does not open a clause, or an acronym /
            # CamelCase anywhere, is taken for a name.
            if tok[0].isupper() and (not clause_start or any(c.isupper() for c in tok[1:])):
                if low not in _DATE_WORDS and low not in _NOT_NAMES and low != "i":
                    entities.append(low)
            clause_start = False
            if "-" in low:
                words.extend(p for p in low.split("-") if p)
        self.words = words
        self.content = [
            _CANON.get(w, _stem(w))
            for w in words
            if w not in _STOPWORDS and w not in _NEGATORS and "-" not in w
        ]
        self.raw = [w for w in words if w not in _STOPWORDS and w not in _NEGATORS and "-" not in w]
        self.bag = frozenset(words)
        self.stems = frozenset(_stem(w) for w in words)
        self.numbers = frozenset(
            _NUMBER_VALUES.get(w, w.replace(",", "").rstrip("."))
            for w in words
            if w[0].isdigit() or (w in _NUMBER_VALUES and w not in _WEAK_NUMBERS)
        )
        self.dates = frozenset(_stem(w) for w in dates)
        self.negations = negations
        self.entities = entities


class TrapGuard:
    """A lexical check of two prompts; :meth:`check` names the first trap found or
    returns ``None``.

    Args:
        numbers, dates, negation, qualifiers, entities: turn single checks off.
        extra_antonyms: more ``(a, b)`` word pairs that flip an answer.

        >>> TrapGuard(numbers=False).check("2 beds", "3 beds") is None
        True
    """

    def __init__(
        self,
        *,
        numbers: bool = True,
        dates: bool = True,
        negation: bool = True,
        qualifiers: bool = True,
        entities: bool = True,
        edits: bool = True,
        extra_antonyms: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.numbers = numbers
        self.dates = dates
        self.negation = negation
        self.qualifiers = qualifiers
        self.entities = entities
        self.edits = edits
        spec = _ANTONYM_PAIRS + "".join(f", {a.lower()} {b.lower()}" for a, b in extra_antonyms)
        self._antonyms = _pairs(spec)
        self._cache: dict[str, _Parsed] = {}

    def _parse(self, text: str) -> _Parsed:
        p = self._cache.get(text)
        if p is None:
            p = _Parsed(text)
            if len(self._cache) > 65536:
                self._cache.clear()
            self._cache[text] = p
        return p

    def check(self, cached: str, new: str) -> str | None:
        """The reason a hit of ``new`` on ``cached`` would be wrong, or ``None``."""
        a = self._parse(cached)
        b = self._parse(new)
        # A number or date that changed, or that one side adds: a cached
        # answer for "an appointment" is wrong for "an appointment at 3pm".
        if self.numbers and a.numbers != b.numbers:
            return "number"
        if self.dates and a.dates != b.dates:
            return "date"
        only_a = a.bag - b.bag
        only_b = b.bag - a.bag
        if self.negation:
            if (a.negations % 2) != (b.negations % 2):
                return "negation"
            for w in only_a:
                opp = self._antonyms.get(w)
                if opp and (opp & only_b):
                    return "negation"
        if self.qualifiers and (only_a & _QUALIFIERS or only_b & _QUALIFIERS):
            return "qualifier"
        if self.edits:
            reason = _small_edit(a.content, b.content, a.raw, b.raw)
            if reason:
                return reason
        if self.entities:
            # A name replaced by another one (a name only on one side is
            # usually a paraphrase adding or dropping detail).
            gone = [e for e in a.entities if e not in b.bag and _stem(e) not in b.stems]
            added = [e for e in b.entities if e not in a.bag and _stem(e) not in a.stems]
            if gone and added:
                return "entity"
            shared = [e for e in a.entities if e in set(b.entities)]
            if len(shared) >= 2:
                order_b = [e for e in b.entities if e in set(shared)]
                if _dedup(shared) != _dedup(order_b):
                    return "entity"
        return None

    def __call__(self, cached: str, new: str) -> str | None:
        return self.check(cached, new)


def _typo(a: str, b: str) -> bool:
    """Whether two words are one spelling apart (or share a stem)."""
    if a == b or _stem(a) == _stem(b) or _CANON.get(a, a) == _CANON.get(b, b):
        return True
    return min(len(a), len(b)) >= 4 and SequenceMatcher(None, a, b).ratio() >= 0.8


def _small_edit(a: list[str], b: list[str], raw_a: list[str], raw_b: list[str]) -> str | None:
    """``"modifier"`` when the content words of two prompts are the same but
    for one or two words swapped in or out (not typos): "billing" for
    "delivery" address, "extended" warranty, "kitten" for "puppy". Rewordings
    share too little for this rule to apply."""
    if len(a) < 2 or len(b) < 2:
        return None
    sm = SequenceMatcher(None, a, b, autojunk=False)
    same = sum(bl.size for bl in sm.get_matching_blocks())
    changed_a: list[str] = []
    changed_b: list[str] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag != "equal":
            changed_a += raw_a[i1:i2]
            changed_b += raw_b[j1:j2]
    # Typos and re-inflections pair up and cancel.
    for w in list(changed_a):
        m = next((x for x in changed_b if _typo(w, x)), None)
        if m is not None:
            changed_a.remove(w)
            changed_b.remove(m)
    n_changed = len(changed_a) + len(changed_b)
    if n_changed == 0 or n_changed > 2:
        return None
    if same >= 2 and same >= n_changed:
        return "modifier"
    return None


def _dedup(xs: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for x in xs:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out
