"""Hand-written rules for "is this a math, counting or multi-step reasoning question?".

The step-by-step classifier (serve_app.prompt.classifier) reads which rules match a user turn
(`hits`) as features next to the turn's words, and names its verdicts after them. On their own
(`classify`) the rules were the whole policy until they met real traffic: precision 0.45 and
recall 0.56 on hand-labelled ShareGPT prompts, so a model trained on such prompts now weighs
them (docs/step-by-step-policy.md).

What is read: the whole turn if it has at most HEAD_CHARS + TAIL_CHARS characters, else its
first HEAD_CHARS and last TAIL_CHARS characters (joined by a newline), since the question sits
either before a pasted text ("count the words in: ...") or, more often, after it. The window
is lower-cased and curly apostrophes are made straight; nothing else is rewritten.

The rules, in order; the first that matches gives the verdict:

1. Negatives, which win over any math in the text:
   - `empty`: nothing but whitespace.
   - `greeting`: a short message made only of greetings and small-talk words ("hi there!",
     "thanks, bye").
   - `writing`: a request to write or generate text (a poem, story, email, essay, a list of
     ideas or examples, a riddle to tell) or to summarize, translate or rewrite one. A story
     about 2+2 needs no working out.
   - `coding`: code in the message (code lines, an error line, a traceback) or a request to
     write, fix or explain code: the answer is code, not a worked computation. A code fence
     alone decides nothing: it may hold a table to total, or code whose output is asked.
   - `no_solving`: the user asks not to solve ("don't calculate, just explain the idea").
   - `trivia`: who was the first / who first... (who first proved a theorem is history).
2. Signals, each a question that needs working out rather than recall:
   - `counting`: letters, vowels, words... in a given text ("how many r's are in
     strawberry", "count the vowels in ...", "the 3rd letter of ...", spelling backwards).
   - `proof`: prove / show that, about something mathematical.
   - `puzzle`: riddles, logic puzzles (knights and knaves, river crossing, who owns the
     zebra), "what comes next" and number sequences, chains of comparisons, syllogisms.
   - `probability`: the probability or odds of dice, coins, cards, draws...
   - `combinatorics`: the number of ways to arrange or choose things, of 4-digit codes...
   - `date_math`: a day, date, time or duration asked from concrete dates, times or spans
     ("what day is 100 days after Monday", "days between March 3 and June 17").
   - `unit_conversion`: a number with a unit to convert to another unit; how many units in
     a unit ("how many seconds in a week").
   - `number_theory`: is N prime / even / divisible / a leap year, gcd, lcm, factors, mod.
   - `statistics`: mean, median, average, variance... with at least two numbers.
   - `equation`: algebra (3x+5=20, x^2, solve for x), and calculus or algebra verbs
     (derivative, integrate, limit, simplify, factor, solve) applied to an expression.
   - `arithmetic`: an operator between numbers (17*23, 2^10, "seven times eight"), a
     percentage of a number, a function of a number (square root of 144), "what is 100-37",
     a bare expression, a number to write as a fraction / decimal / in binary, a comparison
     of two numbers, or a compute verb (calculate, calcule, berechne...) with a number.
   - `geometry`: area, perimeter, volume... of a named shape, with a number.
   - `word_problem`: at least two numbers and a question for a quantity (how many / much /
     long / far, what time, in total, what is the price, what do I pay; total / left / each
     / per in a message with a question mark).
3. Otherwise `no_signal`. Trivia ("how many moons does Jupiter have?"), concepts ("what is
   a prime number?"), advice and chat ask for no computation, so they land here.

A signal needs its object: "explain derivatives" is a concept, "derivative of x^2" is a
computation; "what is a prime" is a definition, "is 221 prime" is a check. English is covered
best; common French, Spanish and German cues (combien, cuántos, wie viele, calcule,
résoudre, resuelve, berechne...) are included where they cost a word in a list.

Speed matters, as the router runs this on every request: work is bounded by the window, and on
a long turn most patterns are not even scanned: each has cues, plain substrings that any text it matches holds, and a pattern whose cues are
absent is skipped (see the speed note by the patterns).
"""

from __future__ import annotations

import re
from itertools import islice
from typing import NamedTuple

# The turn's first HEAD_CHARS and last TAIL_CHARS characters are read: the question sits
# before or after any pasted text, and the cost of a verdict stays bounded.
HEAD_CHARS = 250
TAIL_CHARS = 750
CUES_FROM_CHARS = 60  # in a shorter window every pattern is scanned: cues would cost more
GREETING_MAX_CHARS = 80  # longer messages are never classified as a greeting


class Verdict(NamedTuple):
    applies: bool
    reason: str  # short label for metrics: "arithmetic", "counting", "greeting", "no_signal"...


def _words(fragments: str) -> str:
    """Space-separated regex fragments as one non-capturing alternation."""
    return "(?:" + "|".join(fragments.split()) + ")"


# --- building blocks --------------------------------------------------------------------------

_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    " fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy"
    " eighty ninety hundred thousand million billion"
)
_NUMBER_WORD = _words(_NUMBER_WORDS)
# A number in digits (1,250.5) or in English words (twenty-one, seven hundred and twelve).
_NUM = rf"(?:\d+(?:[.,]\d+)*|{_NUMBER_WORD}(?:(?:[- ]| and ){_NUMBER_WORD})*)"
_UNIT = _words(
    r"km kilomet(?:er|re)s? miles? mi m met(?:er|re)s? cm centimet(?:er|re)s? mm ft feet foot"
    r" inch(?:es)? yards? yd kg kilos? kilograms? g grams? lbs? pounds? oz ounces? stones?"
    r" tons? tonnes? l lit(?:er|re)s? ml millilit(?:er|re)s? gallons? gal quarts? pints? cups?"
    r" tbsp tablespoons? tsp teaspoons? \u00b0\s?[cf] [cf] degrees? celsius fahrenheit kelvin"
    r" mph km/h kph m/s knots? acres? hectares? seconds? secs? minutes? mins? hours? hrs? days?"
    r" weeks? months? years? bytes? bits? kb mb gb tb kib mib gib calories kcal joules? kwh"
    r" watts? horsepower hp psi"
)
_MONTH = _words(
    "january february march april may june july august september october november december"
    " jan feb apr jun jul aug sept? oct nov dec"
)
_WEEKDAY = _words("monday tuesday wednesday thursday friday saturday sunday")
_DURATION = _words(
    r"days? weeks? months? years? hours? minutes? jours? semaines mois ans d[i\u00ed]as"
    r" semanas meses a\u00f1os tagen? wochen monaten? jahren?"
)
_CODE_LANGUAGE = _words(
    r"python javascript typescript java c\+\+ c# rust golang ruby php swift kotlin bash"
    r" powershell sql haskell scala perl lua matlab html css react node\.?js pandas numpy vba"
    r" regexp? regular\sexpression"
)
_TEXT_UNIT = _words(
    "letters? vowels? consonants? characters? chars syllables? words? digits? spaces"
    " sentences occurrences instances"
)
_QUOTE = r"[\"'\u2018\u201c\u201d\u00ab\u00bb]?"  # an optional quote around a letter
_WHOLE_LANGUAGE = r"(?![^?\n]{0,40}\b(?:language|alphabet|dictionary|vocabulary)\b)"

# Speed: each pattern is one scan of the window. A scan for word starts (`\b(?:...)`) costs
# about the same whatever the number of alternatives, so they share one group per pattern; a
# pattern led by a digit, an operator or a space is several times cheaper to scan for.
#
# Still, a scan costs 40-100 us per 1000 characters, and some twenty patterns may run. So each
# pattern has cues, looked up before it is scanned: plain substrings that any text it matches
# holds. A substring search (`cue in text`) costs about 0.5 us per 1000 characters, most cues
# are absent from most turns, so most patterns are never scanned. `_cues` takes the ways a
# pattern can match: "a|b" is a way if the text holds a or b; ("0-9", "a|b") if it holds a
# digit too ("0-9" stands for any digit `\d` matches, non-ASCII ones too);
# ("who ", "who owns|who has ") looks the longer cues up only if their common part is there.
# Every text the pattern matches must fit one of its ways: a cue that is not truly necessary
# would change verdicts, so a change to a pattern goes with a change to its cues.

_DIGIT = "0-9"
_ANY_DIGIT = re.compile(r"\d")

_Clause = tuple[bool, tuple[str, ...]]  # (a digit is a cue, substrings): the text holds one


class _Cues(NamedTuple):
    digit: bool  # a digit is one way the pattern can match
    words: tuple[str, ...]  # so is each of these
    ascii_words: tuple[str, ...]  # the words that can be in an ASCII text
    ways: tuple[tuple[_Clause, ...], ...]  # ways of several clauses, each needed

    def found(self, text: str, has_digit: bool) -> bool:
        """False if the pattern cannot match `text`: none of its ways is in the text."""
        words = self.ascii_words if text.isascii() else self.words
        if (self.digit and has_digit) or any(map(text.__contains__, words)):
            return True
        return any(
            all((digit and has_digit) or any(map(text.__contains__, cues)) for digit, cues in way)
            for way in self.ways
        )


def _clause(cues: str) -> _Clause:
    cue_list = cues.split("|")
    return _DIGIT in cue_list, tuple(cue for cue in cue_list if cue != _DIGIT)


def _cues(*ways: str | tuple[str, ...]) -> _Cues:
    """The ways a pattern can match: a string of cues separated by "|", one of which the text
    holds, or a tuple of such strings, each of which has one cue in the text."""
    simple = [_clause(way) for way in ways if isinstance(way, str)]
    words = tuple(cue for _, cues in simple for cue in cues)
    return _Cues(
        any(digit for digit, _ in simple),
        words,
        tuple(cue for cue in words if cue.isascii()),
        tuple(
            tuple(sorted(map(_clause, way), key=lambda clause: not clause[0]))  # digit first
            for way in ways
            if not isinstance(way, str)
        ),
    )


def _has_digit(text: str) -> bool:
    r"""Whether `\d` matches in `text`: an ASCII digit, or another decimal digit (rare)."""
    if any(map(text.__contains__, "0123456789")):
        return True
    return not text.isascii() and _ANY_DIGIT.search(text) is not None


# --- negatives --------------------------------------------------------------------------------

_GREETING_WORD = (
    r"(?:hi|hello|hey|hiya|howdy|yo|sup|greetings|good (?:morning|afternoon|evening|night|day)"
    r"|thanks|thank you|thx|ty|cheers|bye|goodbye|see you|nice to meet you"
    r"|how are you(?: doing)?|how's it going|what'?s up|i'm (?:good|fine|ok)|ok(?:ay)?|cool"
    r"|great|nice|awesome|bonjour|salut|coucou|merci|(?:comment )?\u00e7a va|hola"
    r"|buen[oa]s(?: d[i\u00ed]as| tardes| noches)?|gracias|qu[e\u00e9] tal"
    r"|c[o\u00f3]mo est[a\u00e1]s|hallo|guten (?:morgen|tag|abend)|danke|servus"
    r"|wie geht'?s|ciao|there|everyone|all|again|so much|a lot|very much|friend|buddy|mate"
    r"|today|you|that'?s (?:all|it)|that is (?:all|it)|got it|perfect|makes sense|understood"
    r"|i see)"
)
_GREETING_MESSAGE = re.compile(rf"(?:{_GREETING_WORD}\b[\W_]*)+")
_WRITING = re.compile(
    r"\b(?:"
    # write / tell / give me + up to four small words + a kind of text
    r"(?:write|compose|draft|create|make up|come up with|invent|generate|give me|tell me"
    r"|suggest|recommend|brainstorm|list|send me|\u00e9cris|r\u00e9dige|escribe|redacta"
    r"|schreibe?|verfasse) (?:(?:me|us|a|an|the|some|my|few|\d+|one|two|three|four|five|ten"
    r"|several|short|long|funny|cute|rhyming|simple|new|good|nice|formal|professional|quick"
    r"|little|creative|catchy|brief|cover|list of|un|une|des|una|unos|einen?) ){0,4}"
    r"(?:poems?|poetry|stor(?:y|ies)|essays?|e-?mails?|letters?|haikus?|limericks?|songs?"
    r"|lyrics|jokes?|riddles?|puzzles?|tweets?|posts?|blog|articles?|speech(?:es)?"
    r"|summar(?:y|ies)|captions?|slogans?|names?|titles?|ideas?|tips|suggestions?|examples?"
    r"|questions?|quiz(?:zes)?|outlines?|descriptions?|bios?|reviews?|messages?|paragraphs?"
    r"|sonnets?|raps?|toasts?|novels?|plots?|dialogues?|fables?|tales?|things|reasons|facts"
    r"|books?|movies?|films?|courses?|resources?|websites?|apps?|podcasts?|games?|recipes?"
    r"|po[\u00e8e]mes?|histoires?|po[e\u00e9]mas?|cuentos?|historias?|gedichte?"
    r"|geschichten?|witze?)"
    # summarize, translate, rewrite a text
    r"|summari[sz]e|summary of|tl;?dr|translate|translation of|paraphrase|rephrase|reword"
    r"|rewrite|proofread|r\u00e9sume[rz]?|tradui[st]|traduire|traduce|traducir"
    r"|\u00fcbersetzen?|zusammenfass\w*"
    r")\b"
)
_WRITING_CUES = _cues(
    "write|compose|draft|create|make up|come up with|invent|generate|give me|tell me|suggest"
    "|recommend|brainstorm|list|send me|\u00e9cris|r\u00e9dige|escribe|redacta|schreib|verfasse"
    "|summar|tl;dr|tldr|translat|paraphrase|rephrase|reword|proofread|r\u00e9sume|tradu"
    "|\u00fcbersetze|zusammenfass"
)
# Code in the message: code lines, an error line (TypeError:), a traceback. A code fence alone
# decides nothing: it may hold a table to compute on, or code whose output is the question.
_CODE_TEXT = re.compile(
    r"error:(?<=[a-z]error:)|traceback \(most recent|#include\b"
    r"|\b(?:def \w+\(|class \w+[:(]|from [\w.]+ import \w|public (?:static|class)|function \w*\("
    r"|(?:const|let|var) \w+ = |console\.log\(|stack ?trace)"
)
_CODE_TEXT_CUES = _cues(
    "error:|trace|#include|def |class | import |public |function| = |console.log("
)
# A request about code: write, fix, refactor, explain this code.
_CODE_REQUEST = re.compile(
    r"\b(?:refactor|debug"
    r"|(?:write|implement|code|create|generate|fix|optimi[sz]e|review|rewrite|port|translate"
    r"|convert)\b[^.?!\n]{0,40}\b(?:functions? (?:that|to|which|for|in)|methods?|class(?:es)?"
    r"|scripts?|programs?|code|snippets?|algorithms?|apis?|endpoints?|quer(?:y|ies)|bugs?"
    rf"|unit tests?|{_CODE_LANGUAGE})"
    r"|(?:this|the following|my|the above|your) (?:code|script|snippet|query|program"
    rf"|stack ?trace|traceback|bug|exception|compiler error|error message|{_CODE_LANGUAGE})"
    rf"|in {_CODE_LANGUAGE}"
    r")(?!\w)"
)
_CODE_REQUEST_CUES = _cues(
    # refactor, (de)bug, the code words after a verb or "this", the languages ("in rust")
    "refactor|bug|function|method|class|script|program|code|snippet|algorithm|api|endpoint|quer"
    "|unit test|trace|exception|compiler error|error message|python|java|c++|c#|rust|golang|ruby"
    "|php|swift|kotlin|bash|powershell|sql|haskell|scala|perl|lua|matlab|html|css|react|node"
    "|pandas|numpy|vba|regex|regular"
)

# Who did something first: history, whatever the topic ("who first proved ...").
_WHO_FIRST = re.compile(r"\bwho (?:was|were|is) the (?:first|last|only)\b|\bwho first\b")
_WHO_FIRST_CUES = _cues(("who ", "who was the |who were the |who is the |who first"))
# The user asks for no working out: "don't solve it, just explain".
_NO_SOLVING = re.compile(
    r"\b(?:(?:don't|do not|no need to|without) (?:solv|calculat|comput|work)\w*"
    r"|just (?:explain|describe) the (?:idea|concept))"
)
_NO_SOLVING_CUES = _cues("don't |do not |no need to |without |just ")

# --- signals ----------------------------------------------------------------------------------

_COUNTING = re.compile(
    r"\b(?:"
    # how many r's are in strawberry / how many letter s in mississippi
    rf"how many (?:(?:of the )?(?:letters?|characters?) )?{_QUOTE}[a-z]{_QUOTE}(?:'?s)?"
    r" (?:(?:are|is|do|does|appear) )?(?:there )?(?:in|does|do|are|is)\b"
    # how many vowels / words ... in, or does ... have (not in a whole language)
    rf"|how many (?:\w+ )?{_TEXT_UNIT}\b{_WHOLE_LANGUAGE}"
    r"[^?\n]{0,40}\b(?:in|does|do|have|has|contain|appear)\b"
    r"|how many times (?:does|do|did|is|are|will|can)\b[^?\n]{0,60}"
    r"\b(?:appear|occur|show up|repeated|used|come up)"
    # how many items are in this list, how many are unique, how many squares on a chessboard
    r"|how many \w+ (?:are )?(?:there )?in (?:this|these|the following|the above|the given|"
    r"my|the) (?:list|text|sentence|paragraph|passage|string|word|phrase|array|sequence|set)\b"
    r"|how many (?:\w+ )?(?:items|entries|elements) (?:are )?(?:there )?in (?:total|all|the list"
    r"|this list|it|them)\b|how many (?:of them )?(?:are )?(?:unique|distinct)"
    r"|how many (?:squares|rectangles|triangles|diagonals|cubes) (?:are )?(?:there )?(?:in|on)\b"
    # count the vowels, the number of words in
    rf"|count (?:the |all |how many )?(?:number of )?(?:{_TEXT_UNIT}|{_QUOTE}[a-z]{_QUOTE}'?s"
    r"|times|items|elements|entries|lines|unique|distinct)\b"
    rf"|number of {_TEXT_UNIT} (?:in|of)\b{_WHOLE_LANGUAGE}"
    # the 3rd letter of, spell it backwards
    r"|(?:\d+(?:st|nd|rd|th)|first|second|third|fourth|fifth|last) (?:letter|character|word"
    r"|digit) (?:of|in)\b"
    r"|(?:spell|write|read)\b[^.?!\n]{0,30}\bbackwards?\b|reverse the (?:letters|word|string)"
    # combien de lettres, cuántas vocales, wie viele Buchstaben; combien de r dans fraise
    r"|(?:combien de|cu[a\u00e1]nt[oa]s|wie viele|wie oft)\b[^?\n]{0,30}\b(?:lettres?"
    r"|voyelles?|mots|caract[e\u00e8]res|letras?|vocales|palabras|caracteres|buchstaben|vokale"
    r"|w[\u00f6o]rter|zeichen)\b"
    rf"|(?:combien de|cu[a\u00e1]nt[oa]s|wie viele) {_QUOTE}[a-z]{_QUOTE} (?:y a-t-il|il y a"
    r"|dans|hay|tiene|en|hat|gibt es|sind|in)\b"
    r")"
)
_COUNTING_CUES = _cues(
    "how many|count |number of |backward|reverse the |combien de|cuant|cu\u00e1nt",
    ("wie ", "wie viele|wie oft"),
    (
        "letter |character |word |digit ",
        "letter of|letter in|character of|character in|word of|word in|digit of|digit in",
    ),
)
# A request to prove something (not "who first proved Fermat's Last Theorem?").
_PROOF = re.compile(
    r"\b(?:prove (?:that|the|this|it|why|whether|by|for|all|every|there)\b|prove:"
    r"|prove (?=\S*[\d=^\u221a])|disprove|(?:show|demonstrate|verify) that|proof (?:that|of|for)"
    r"|d\u00e9montre[rz]?|prouve[rz]?|montre[rz]? que|demuestra|demostrar|demuestre"
    r"|muestra que|beweise|beweisen|zeige,? dass)\b"
)
_PROOF_CUES = _cues(
    "prove|show that|demonstrate that|verify that|proof |montre|prouve|muestr|demostrar|beweise"
    "|zeige"
)
_MATH_CONTEXT = re.compile(
    r"[\d=<>^\u2264\u2265\u221a\u2211\u222b]|\b(?:theorem|lemma|corollary|integers?|primes?"
    r"|numbers?|irrational|rational|triangles?|angles?|functions?|sequences?|series|sets?"
    r"|subsets?|induction|infinite(?:ly)?|sums?|even|odd|divisible|equal|inequality"
    r"|polynomials?|matri(?:x|ces)|graphs?|converges?|convergent|continuous|bounded|sqrt"
    r"|square root|for all|for every|for any|[nxyk])\b"
)
_PUZZLE = re.compile(
    r"\b(?:riddle|brain ?teaser|logic (?:puzzle|problem|question|grid)|(?<!jigsaw )puzzle"
    r"|knights? and knaves?|knaves?|always (?:lies?|lying|tells? the truth)|truth-?tellers?"
    r"|one of them (?:lies|is lying)|(?:cross(?:ing)?|across) (?:a|the) river|river crossing"
    r"|who owns the|who (?:has|owns|lives in|drinks|plays) (?:which|what)|each (?:have|has|own"
    r"|owns) a different|(?:every|each) label is wrong|mislabel+ed"
    r"|what comes next|next (?:number|term|letter|shape|one) in (?:the|this) "
    r"(?:sequence|series|pattern)|missing (?:number|term|letter)"
    r"|(?:complete|continue) the (?:sequence|series|pattern)|find the pattern|enigma"
    r"|\u00e9nigme|acertijo|adivinanza|r\u00e4tsel)\b"
)
_PUZZLE_CUES = _cues(
    "riddle|teaser|logic |puzzle|knave|always l|truth|one of them |river| a different"
    "|label is wrong|mislabel|comes next|sequence|series|pattern|missing |enigma|\u00e9nigme"
    "|acertijo|adivinanza|r\u00e4tsel",
    ("who ", "who owns|who has |who lives in |who drinks |who plays "),
)
# A number sequence with a gap to fill: 2, 6, 12, 20, ? (its last three terms and the gap).
_NUMBER_SEQUENCE = re.compile(r"\d ?, ?\d+ ?, ?\d+ ?, ?(?:\?|_+|\.\.\.|\u2026)")
_NUMBER_SEQUENCE_CUES = _cues(("0-9", ",", "?|_|...|\u2026"))
_LOGIC_QUESTION = re.compile(
    r"\b(?:does it follow|can (?:we|you|i) conclude|must (?:also )?be (?:true|false)"
    r"|necessarily (?:true|false)|logically (?:follows?|valid)|valid (?:argument|syllogism)"
    r"|syllogism|who is (?:lying|telling the truth)|which (?:one )?is (?:lying|telling the truth)"
    r"|who (?:is|was) the (?:tallest|shortest|oldest|youngest|fastest|slowest|heaviest"
    r"|lightest|culprit|murderer|thief)|deduce|in what order)\b"
)
_LOGIC_QUESTION_CUES = _cues(
    "does it follow|conclude|be true|be false|necessarily|logically|valid |syllogism|lying"
    "|telling the truth|deduce|in what order",
    ("who ", "who is the |who was the "),
)
_LOGIC_PREMISE = re.compile(
    r"\b(?:(?:all|some|no|every|none of the) \w+ (?:are|is)|if|\w+er than|says?)\b"
)
_PROBABILITY = re.compile(
    r"\b(?:probabilit(?:y|ies)|odds|chances?|likelihood|how likely|expected value|monty hall"
    r"|probabilit\u00e9s?|probabilidad(?:es)?|wahrscheinlichkeit)\b"
)
_PROBABILITY_CUES = _cues(
    "probabili|odds|chance|likelihood|how likely|expected value|monty hall|wahrscheinlichkeit"
)
_RANDOM_CONTEXT = re.compile(
    rf"\d|\b(?:{_NUMBER_WORD}|dice|die|coins?|heads|tails|cards?|deck|aces?|marbles?|balls?"
    r"|urn|bag|jar|draw\w*|roll\w*|flip\w*|toss\w*|random\w*|lottery|birthdays?|doors?)\b"
)
_COMBINATORICS = re.compile(
    r"\b(?:how many (?:different |distinct |possible |unique )?(?:\d+-(?:digit|letter"
    r"|character) \w+|ways|combinations"
    r"|permutations|arrangements|outcomes|subsets|handshakes|paths|orderings|passwords"
    r"|license plates|codes)\b|permutations? of\b|\d+ ?choose ?\d|n?c\(\d+, ?\d+\)"
    r"|de combien de fa[\u00e7c]ons|de cu[a\u00e1]ntas (?:maneras|formas)"
    r"|auf wie viele (?:arten|weisen))"
)
_COMBINATORICS_CUES = _cues(
    "how many |permutation|choose|c(|combien de fa|cuantas|cu\u00e1ntas|auf wie viele"
)
_CHOICE_CONTEXT = re.compile(
    rf"\d|\b(?:{_NUMBER_WORD}|arrange\w*|choose|chosen|select\w*|pick\w*|seat\w*|sit"
    r"|line up|letters|digits|committee|team)\b"
)
_DATE_QUESTION = re.compile(
    r"\b(?:(?:what|which) (?:day|date|time|year|month|weekday)|when|how long|how old"
    rf"|{_DURATION} (?:between|until|till|since)"
    rf"|how (?:many|much) (?:{_DURATION}|time)|quel(?:le)? (?:jour|date|heure)"
    r"|qu[e\u00e9] (?:d[i\u00ed]a|fecha|hora)|welche[rns]? (?:tag|datum|wochentag)|wie lange"
    rf"|combien de {_DURATION}|cu[a\u00e1]nt[oa]s {_DURATION}|wie viele {_DURATION})\b"
)
_DATE_QUESTION_CUES = _cues(
    "when| between| until| till| since|quel|que |qu\u00e9 |welche|combien de|cuant|cu\u00e1nt",
    ("what ", "what day|what date|what time|what year|what month|what weekday"),
    ("which ", "which day|which date|which time|which year|which month|which weekday"),
    ("how ", "how long|how old"),
    (  # how many days
        "how many |how much ",
        " day| week| month| year| hour| minute| jour| semaine| mois| ans| dias| d\u00edas| semana"
        "| meses| a\u00f1os| tag| wochen| monat| jahr| time",
    ),
    ("wie ", "wie lange|wie viele"),
)
_DATE_ANCHOR = re.compile(
    r"\b(?:\d{1,2}(?::\d\d)? ?(?:am|pm|a\.m\.|p\.m\.)|\d{1,2}:\d\d\b"
    rf"|{_MONTH}\.? \d|\d{{1,2}}(?:st|nd|rd|th)? (?:of )?{_MONTH}\b"
    r"|\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b"
    rf"|\d+ {_DURATION} (?:after|before|from|later|ago|since|earlier|apr[e\u00e8]s|avant"
    r"|despu[e\u00e9]s|antes|nach|vor)\b"
    rf"|{_WEEKDAY}\b[^.?!\n]{{0,40}}\d)"
)
_DATE_ANCHOR_CUES = _cues("0-9")
_UNIT_CONVERSION = re.compile(
    rf"\b(?:\d[\d.,]* ?{_UNIT} (?:to|in|into|en|a|nach|zu) {_UNIT}"
    rf"|how many {_UNIT} (?:are (?:there )?)?(?:in|is|make|per) (?:an?|one|\d[\d.,]*) ?{_UNIT}"
    rf"|(?:convert\w*|conversion|convertir|convierte|umrechn\w*)\b[^\n]{{0,30}}?\d[\d.,]* ?"
    rf"{_UNIT})\b"
)
_UNIT_CONVERSION_CUES = _cues(
    ("0-9", " to | in | into | en | a | nach | zu "),  # 5 km to miles
    "how many ",  # how many feet in a mile
    ("0-9", "conver|convierte|umrechn"),  # convert 5 km
)
_NUMBER_THEORY = re.compile(
    r"\b(?:is \d[\d,]* (?:an? )?(?:prime|composite|even|odd|divisible|multiple|factor|perfect"
    r"|square|triangular|fibonacci)\b"
    r"|(?:gcd|gcf|hcf|lcm|greatest common (?:divisor|factor)|highest common factor"
    r"|least common (?:multiple|denominator)|prime factori[sz]ation|prime factors|factors"
    r"|divisors|multiples) (?:of )?\d"
    r"|divisible by \d|mod(?:ulo)? \d|remainder\b[^.?!\n]{0,40}\d"
    r"|primes? (?:numbers? )?(?:between|less than|below|under|up to|from|greater than) \d"
    r"|\d+(?:st|nd|rd|th) (?:prime|fibonacci|triangular|perfect)|is \d+ a leap year"
    r"|est-ce que \d+ est premier|es \d+ (?:un )?(?:n[u\u00fa]mero )?primo"
    r"|ist \d+ (?:eine )?primzahl)"
)
_NUMBER_THEORY_CUES = _cues(
    ("0-9", "is ", "composite|even|odd|divisible|square"),  # is 7 odd
    (
        "0-9",
        "gcd|gcf|hcf|lcm|common |factor|divisor|multiple|divisible by |mod |modulo |remainder"
        "|prime|fibonacci|triangular|perfect|leap year|premier|primo|primzahl",
    ),
)
_STATISTIC = re.compile(
    r"\b(?:(?:the|arithmetic|geometric|sample|population) mean|mean of|median|the mode|mode of"
    r"|average|standard deviation|std ?dev|variance|quartiles?|percentiles?|z-?scores?"
    r"|interquartile|correlation|moyenne|m[e\u00e9]diane|la media|media de|mediana|promedio"
    r"|durchschnitt|mittelwert)\b"
)
_STATISTIC_CUES = _cues(
    "mean|media|m\u00e9diane|mode|average|deviation|std|variance|quartile|percentile|z-score"
    "|zscore|correlation|moyenne|promedio|durchschnitt|mittelwert"
)
# A power of a variable: x^2, (x+1)^2, x**2. Led by the operator, then a look back at what
# it raises: a scan for a rare character is several times faster than one for a word start.
_POWER = re.compile(r"\^(?<=[a-z)]\^) ?[\d(a-z]|\*\*(?<=[a-z)]\*\*)[\d(]")
_POWER_CUES = _cues("^|**")
_ALGEBRA = re.compile(
    r"\b(?:"
    r"\d*[a-z][\u00b2\u00b3]"  # x², 3x³
    r"|\d+(?:\.\d+)?[a-z] ?[-+=<>\u2264\u2265]"  # 3x+5, 2y =
    r"|[a-z] ?[-+*/] ?\d+ ?[=<>\u2264\u2265]"  # x + 5 =, n/2 >
    r"|[xyz] ?[-+*/=<>] ?[\d(xyz]|[a-z] ?[=<>] ?-?\d"  # x = 5, y+3, c=0
    r"|[fgh] ?\( ?[a-z0-9] ?\) ?="  # f(x) =
    r"|solve for [a-z]\b|find (?:the value of )?[a-z](?: if| when| such|,|:|\?|$)"
    r")"
)
_ALGEBRA_CUES = _cues(
    "\u00b2|\u00b3|+|*|=|<|>|x-|x -|y-|y -|z-|z -|x/|x /|y/|y /|z/|z /|solve for |find ",
    ("0-9", "-|\u2264|\u2265"),  # 3x-5 (the other signs are cues above)
)
_CALCULUS_VERB = re.compile(
    r"\b(?:derivatives?|differentiate|integral|integrate|antiderivative|limit|lim|simplify"
    r"|factori[sz]e|factor|solve|evaluate|expand|roots?|zeros?|determinant|eigen\w*"
    r"|d[e\u00e9]riv[e\u00e9]e|derivada|ableitung|int[e\u00e9]grale?|r[e\u00e9]soudre"
    r"|r[e\u00e9]sous|resuelve|resolver|resuelva|l[\u00f6o]se|l[\u00f6o]sen|simplifie[rz]?"
    r"|simplifica|vereinfache|factorise[rz]?)\b"
)
_CALCULUS_VERB_CUES = _cues(
    "deriv|d\u00e9riv|differentiate|integ|int\u00e9g|lim|simplif|factor|solve|evaluate|expand"
    "|root|zero|determinant|eigen|ableitung|resou|r\u00e9sou|resuelv|lose|l\u00f6se|vereinfache"
)
_MATH_OBJECT = re.compile(
    r"[a-z)] ?(?:\^|\*\*)|[a-z][\u00b2\u00b3]|[\u221a\u2211\u222b]|d/d[xyt]|\[ ?\[? ?-?\d"
    r"|\d ?[-+*/] ?(?:\d|[a-z]\b)"
    r"|\b(?:\d+[a-z]\b|d[xyt]\b|(?:sin|cos|tan|log|ln|exp|sqrt)(?: ?\(| [a-z]\b| ?\d)"
    r"|[a-z] ?[+*/=] ?(?:\d|[a-z]\b)|[a-z] ?- ?\d)"
)
_MATH_OBJECT_CUES = _cues(
    "0-9|^|*|\u00b2|\u00b3|\u221a|\u2211|\u222b|+|/|=|dx|dy|dt|sin(|sin |cos(|cos |tan(|tan "
    "|log(|log |ln(|ln |exp(|exp |sqrt(|sqrt "
)
# 17*23, 2+2, 2^10, 12.5% of 80
_OPERATION = re.compile(
    r"\d ?(?:(?:\*\*|[+*^\u00d7\u00f7]) ?[(-]? ?\d|(?:%|percent|per cent|pour ?cent"
    r"|por ?ciento|prozent) (?:of|de|del|von) [$\u20ac\u00a3]?\d)"
)
_OPERATION_CUES = _cues(("0-9", "+|*|^|\u00d7|\u00f7|%|cent|ciento|prozent"))
# seven times eight, 3 mal 4, 15 squared: led by the space before the operator word, fast to
# scan for; the rule also wants two numbers in the message.
_WORD_OPERATION = re.compile(
    r" (?:(?:plus|minus|times|multiplied by|divided by|to the power of|raised to|modulo|mod"
    r"|fois|mal|m[a\u00e1]s|menos|moins|geteilt durch|divis[e\u00e9] par"
    rf"|dividido (?:por|entre)) {_NUM}|squared|cubed|factorial|au carr[e\u00e9]|al cuadrado)\b"
)
_WORD_OPERATION_CUES = _cues(
    " plus | minus | times | multiplied by | divided by | to the power of | raised to | mod"
    "| fois | mal | mas | m\u00e1s | menos | moins | geteilt durch | divis| dividido | squared"
    "| cubed| factorial| au carr| al cuadrado"
)
_ARITHMETIC = re.compile(
    r"\b(?:"
    # square root of 144
    r"(?:square root|cube root|sqrt|log(?:arithm)?|ln|sin|cos|tan|factorial"
    rf"|racine carr[e\u00e9]e|ra[i\u00ed]z cuadrada|wurzel) ?(?:of |de |aus )?\(? ?{_NUM}\b"
    # what percent of 80 is 20
    r"|what (?:percent(?:age)?|%) of\b|is what (?:percent|%)"
    # 0.375 as a fraction, convert 1/7 to a decimal; is 0.999... equal to 1
    r"|(?:as|to|into) an? (?:fraction|decimal|percentage|mixed number|improper fraction)"
    r"|(?:to|in|into) (?:binary|hexadecimal|hex|octal|roman numerals|scientific notation)\b"
    r"|is -?\d[\d.,]*(?:\.\.\.|\u2026)?(?: repeating)? (?:equal to|greater than|less than"
    r"|bigger than|smaller than|larger than) -?\d"
    # the sum of 3 and 4, multiply 6 by 7
    rf"|(?:sum|product|difference|quotient) (?:of|between) {_NUM} (?:and|,) {_NUM}\b"
    rf"|(?:add|multiply|divide|subtract) {_NUM} (?:and|by|from|to|with|into) {_NUM}\b"
    # what is 100-37, whats 144/12, what's 10!
    r"|(?:what(?:'s|s| is)|how much is|equals?|combien (?:fait|font)|cu[a\u00e1]nto es"
    r"|wie viel ist|was ist) (?:\(?-?\d[\d.,]*(?: ?[-/x] ?\(?-?\d[\d.,]*\)?)+ ?(?:[?.!=]|$)"
    r"|\d+!)"
    # calculate, calcule, berechne (with a number somewhere)
    r"|calculate|compute|evaluate|calcule[rz]?|calcular?|berechnen?|rechne"
    r")"
)
_ARITHMETIC_CUES = _cues(
    "root|sqrt|log|ln|sin|cos|tan|factorial|racine|cuadrada|wurzel|what percent|what %|fraction"
    "|decimal|percentage|mixed number|binary|hex|octal|roman numerals|scientific notation|sum "
    "|product |difference |quotient |add |multiply |divide |subtract |calcul|compute|evaluate"
    "|rechne",
    ("0-9", "than|equal to"),  # is 0.999... equal to 1
    (  # what is 100-37, what's 10!
        "0-9",
        "what|how much is|equal|combien |cuanto es|cu\u00e1nto es|wie viel ist|was ist",
        "-|/|x|!",
    ),
)
# The whole message is an expression such as 100-37 (other operators are caught above).
_BARE_EXPRESSION = re.compile(r"^[\d\s.,()%=?]*\d ?[-/x] ?[(-]?\d[\d\s.,()+\-*/x%=?]*$")
_BARE_EXPRESSION_CUES = _cues(("0-9", "-|/|x"))
_MEASURE = re.compile(
    r"\b(?:area|perimeter|volume|circumference|radius|diameter|hypotenuse|side length|diagonal"
    r"|angles?|aire|p[e\u00e9]rim[e\u00e8]tre|\u00e1rea|per[i\u00ed]metro|fl\u00e4che|umfang"
    r"|volumen)\b"
)
_MEASURE_CUES = _cues(
    "area|\u00e1rea|perim|p\u00e9rim|per\u00edm|volume|circumference|radius|diameter|hypotenuse"
    "|side length|diagonal|angle|aire|fl\u00e4che|umfang"
)
_SHAPE = re.compile(
    r"\b(?:circles?|squares?|triangles?|rectangles?|rectangular|spheres?|cubes?|cylinders?"
    r"|cones?|pyramids?|polygons?|hexagons?|pentagons?|trapezoids?|parallelograms?|rhombus"
    r"|ellipses?|prisms?|cercle|carr[e\u00e9]|c[i\u00ed]rculo|cuadrado|tri[a\u00e1]ngulo"
    r"|rect[a\u00e1]ngulo|kreis|quadrat|dreieck|rechteck)\b"
)
_SHAPE_CUES = _cues(
    "circle|square|triangle|rectang|sphere|cube|cylinder|cone|pyramid|polygon|hexagon|pentagon"
    "|trapezoid|parallelogram|rhombus|ellipse|prism|cercle|carr|rculo|cuadrado|triangulo"
    "|tri\u00e1ngulo|rect\u00e1ng|kreis|quadrat|dreieck|rechteck"
)
_QUANTITY_QUESTION = re.compile(
    r"\b(?:how (?:many|much|long|far|fast|old|often|tall|high|heavy|big|large|deep|wide)"
    r"|what time|combien|cu[a\u00e1]nt[oa]s?|wie (?:viele?|lange|weit|alt|oft|schnell)"
    r"|find|calculate|compute|determine|work out|figure out"
    r"|what(?:'s|s| is| was| will be| are| were) (?:the|their|her|his|my|our|its) (?:\w+ )?"
    r"(?:total|sum|difference|average|cost|price|speed|rate|ratio|percentage|share|distance"
    r"|profit|loss|change|remainder|balance|age|value|amount|density|area|volume)"
    r"|(?:do|will|would|should|does|did) (?:i|we|you|they|he|she) (?:\w+ )?(?:pay|owe|save"
    r"|spend|earn|get back|need)"
    r"|in total|altogether|in all|left over|how much more|how many more)\b"
)
_QUANTITY_QUESTION_CUES = _cues(
    "how |what|combien|cuant|cu\u00e1nt|wie |find|calculate|compute|determine|work out"
    "|figure out|pay|owe|save|spend|earn|get back|need|in total|altogether|in all|left over"
)
_QUANTITY_HINT = re.compile(r"\b(?:total|left|remain\w*|each|per)\b")  # needs a "?" too
_QUANTITY_HINT_CUES = _cues("total|left|remain|each|per")
_QUESTION_MARK = re.compile(r"\?")
_QUESTION_MARK_CUES = _cues("?")
# Every number a word problem may state: digits, number words, half, twice...
_NUMBER = re.compile(
    rf"\b(?:\d+(?:[.,]\d+)*|(?:{_NUMBER_WORD}|half|twice|double|triple|dozen|quarter)\b)"
)


class _Rule(NamedTuple):
    """A signal: at least `min_numbers` numbers, `pattern` found, `needs` found too (if set).
    The cheap checks go first: the count, then the cues of `pattern` and of `needs`."""

    reason: str
    pattern: re.Pattern[str]
    cues: _Cues
    needs: re.Pattern[str] | None = None
    needs_cues: _Cues | None = None  # None: no cheap condition (`needs` is rarely scanned)
    min_numbers: int = 0

    def matches(self, text: str, numbers: int, has_digit: bool | None) -> bool:
        """`has_digit` None: no cues are looked up (in a short text they cost more than they
        save)."""
        return (
            numbers >= self.min_numbers
            and (has_digit is None or self.cued(text, has_digit))
            and self.pattern.search(text) is not None
            and (self.needs is None or self.needs.search(text) is not None)
        )

    def cued(self, text: str, has_digit: bool) -> bool:
        return self.cues.found(text, has_digit) and (
            self.needs_cues is None or self.needs_cues.found(text, has_digit)
        )


_NEGATIVES = (
    ("writing", _WRITING, _WRITING_CUES),
    ("coding", _CODE_TEXT, _CODE_TEXT_CUES),
    ("coding", _CODE_REQUEST, _CODE_REQUEST_CUES),
    ("no_solving", _NO_SOLVING, _NO_SOLVING_CUES),
    ("trivia", _WHO_FIRST, _WHO_FIRST_CUES),
)
_SIGNALS = (
    _Rule("counting", _COUNTING, _COUNTING_CUES),
    _Rule("proof", _PROOF, _PROOF_CUES, needs=_MATH_CONTEXT),
    _Rule("puzzle", _PUZZLE, _PUZZLE_CUES),
    _Rule("puzzle", _NUMBER_SEQUENCE, _NUMBER_SEQUENCE_CUES, min_numbers=2),
    _Rule("puzzle", _LOGIC_QUESTION, _LOGIC_QUESTION_CUES, needs=_LOGIC_PREMISE),
    _Rule("probability", _PROBABILITY, _PROBABILITY_CUES, needs=_RANDOM_CONTEXT),
    _Rule("combinatorics", _COMBINATORICS, _COMBINATORICS_CUES, needs=_CHOICE_CONTEXT),
    _Rule(
        "date_math",
        _DATE_QUESTION,
        _DATE_QUESTION_CUES,
        needs=_DATE_ANCHOR,
        needs_cues=_DATE_ANCHOR_CUES,
        min_numbers=1,
    ),
    _Rule("unit_conversion", _UNIT_CONVERSION, _UNIT_CONVERSION_CUES),
    _Rule("number_theory", _NUMBER_THEORY, _NUMBER_THEORY_CUES, min_numbers=1),
    _Rule("statistics", _STATISTIC, _STATISTIC_CUES, min_numbers=2),
    _Rule("equation", _POWER, _POWER_CUES),
    _Rule("equation", _ALGEBRA, _ALGEBRA_CUES),
    _Rule(
        "equation",
        _CALCULUS_VERB,
        _CALCULUS_VERB_CUES,
        needs=_MATH_OBJECT,
        needs_cues=_MATH_OBJECT_CUES,
    ),
    _Rule("arithmetic", _BARE_EXPRESSION, _BARE_EXPRESSION_CUES, min_numbers=2),
    _Rule("arithmetic", _OPERATION, _OPERATION_CUES, min_numbers=2),
    _Rule("arithmetic", _WORD_OPERATION, _WORD_OPERATION_CUES, min_numbers=2),
    _Rule("geometry", _MEASURE, _MEASURE_CUES, needs=_SHAPE, needs_cues=_SHAPE_CUES, min_numbers=1),
    _Rule("arithmetic", _ARITHMETIC, _ARITHMETIC_CUES, min_numbers=1),
    _Rule("word_problem", _QUANTITY_QUESTION, _QUANTITY_QUESTION_CUES, min_numbers=2),
    _Rule(
        "word_problem",
        _QUANTITY_HINT,
        _QUANTITY_HINT_CUES,
        needs=_QUESTION_MARK,
        needs_cues=_QUESTION_MARK_CUES,
        min_numbers=2,
    ),
)
_MOST_NUMBERS_NEEDED = max(rule.min_numbers for rule in _SIGNALS)

# In a long ASCII text, `_count_numbers` counts the matches of `_NUMBER` without its scan for
# word starts: numbers in digits, then words that are number words (in ASCII, `\w` is a
# letter, a digit or "_", so the words `\b` bounds are the runs of those).
_DIGIT_NUMBER = re.compile(r"\d(?<!\w\d)\d*(?:[.,]\d+)*")  # `\b\d+(?:[.,]\d+)*`, led by a digit
_WORD_NUMBERS = frozenset(f"{_NUMBER_WORDS} half twice double triple dozen quarter".split())
_ASCII_NON_WORD_TO_SPACE = str.maketrans(
    {char: " " for char in map(chr, range(128)) if not (char.isalnum() or char == "_")}
)


def _count_numbers(text: str, has_digit: bool | None) -> int:
    """How many numbers `text` states (the matches of `_NUMBER`), counted up to the most any
    rule needs. `has_digit` None: a short text, scanned."""
    most = _MOST_NUMBERS_NEEDED
    if has_digit is None or not text.isascii():
        return sum(1 for _ in islice(_NUMBER.finditer(text), most))
    count = sum(1 for _ in islice(_DIGIT_NUMBER.finditer(text), most)) if has_digit else 0
    if count < most:
        words = text.translate(_ASCII_NON_WORD_TO_SPACE).split()
        count += sum(map(_WORD_NUMBERS.__contains__, words))
    return min(count, most)


def window(text: str) -> str:
    """The part of `text` that is read, normalized: see the module docstring."""
    if len(text) > HEAD_CHARS + TAIL_CHARS:
        text = f"{text[:HEAD_CHARS]}\n{text[-TAIL_CHARS:]}"
    return text.strip().lower().replace("\u2019", "'")


def classify(text: str) -> Verdict:
    """The rules' verdict on a user turn, and why."""
    return verdict(window(text))


def verdict(window: str) -> Verdict:
    """The rules' verdict on a window (see `window`)."""
    if not window:
        return Verdict(False, "empty")
    if len(window) <= GREETING_MAX_CHARS and _GREETING_MESSAGE.fullmatch(window):
        return Verdict(False, "greeting")
    # Cues pay off in a long window only: in a short one (has_digit None) every pattern is scanned.
    has_digit = _has_digit(window) if len(window) >= CUES_FROM_CHARS else None
    numbers = _count_numbers(window, has_digit)
    signal = next(
        (rule.reason for rule in _SIGNALS if rule.matches(window, numbers, has_digit)), None
    )
    if signal is None:
        return Verdict(False, "no_signal")
    # Negatives are read only to veto a signal: most turns have none, and each scan costs.
    for reason, pattern, cues in _NEGATIVES:
        if (has_digit is None or cues.found(window, has_digit)) and pattern.search(window):
            return Verdict(False, reason)
    return Verdict(True, signal)


def hits(window: str) -> list[str]:
    """Every rule that matches a window: "greeting", then "signal:<reason>" for each signal
    and "negative:<reason>" for each negative, in rule order."""
    if len(window) <= GREETING_MAX_CHARS and _GREETING_MESSAGE.fullmatch(window):
        return ["greeting"]
    has_digit = _has_digit(window) if len(window) >= CUES_FROM_CHARS else None
    numbers = _count_numbers(window, has_digit)
    found = [f"signal:{r.reason}" for r in _SIGNALS if r.matches(window, numbers, has_digit)]
    found += [
        f"negative:{reason}"
        for reason, pattern, cues in _NEGATIVES
        if (has_digit is None or cues.found(window, has_digit)) and pattern.search(window)
    ]
    return found
