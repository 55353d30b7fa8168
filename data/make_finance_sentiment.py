"""Generate a small synthetic finance-news sentiment dataset.

Writes two files next to this script:

* ``finance_sentiment.jsonl`` - 1200 instruction examples (400 positive,
  400 negative, 400 neutral), one JSON object per line with the keys
  ``instruction``, ``input`` (a headline) and ``output`` (the label).
* ``finance_news.txt`` - about 3000 lines of unlabeled finance-news-like text
  built from the same vocabulary, for briefly pre-training a tiny language
  model. It contains no sentiment label words, no instruction text and no
  headline (or fragment of one) that appears in the jsonl file.
* ``finance_sentiment.csv`` - the same 1200 headlines as ``text,label`` rows, for
  the sequence-classification objective.
* ``finance_sentiment_imbalanced.csv`` - 540 of them at neutral : positive :
  negative = 6 : 2 : 1 (360, 120, 60), for focal loss and class weights.
* ``finance_sentiment_old.jsonl`` and ``finance_sentiment_new.jsonl`` - the same 1200
  split by company: headlines about the last ``NEW_COMPANIES`` companies are the "new"
  month's data, the rest the "old" one's, for an update that continues an earlier search.

Everything is built from templates with ``random.Random(SEED)``, using only
the standard library, so running the script twice gives byte-identical files.

Run it from the repository root:

    python data/make_finance_sentiment.py
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

SEED = 20240611
PER_CLASS = 400
N_CORPUS_HEADLINES = 1500
N_CORPUS_REPORTS = 1500
MIN_WORDS, MAX_WORDS = 6, 16

OUT_DIR = Path(__file__).resolve().parent
JSONL_PATH = OUT_DIR / "finance_sentiment.jsonl"
CORPUS_PATH = OUT_DIR / "finance_news.txt"
CSV_PATH = OUT_DIR / "finance_sentiment.csv"
IMBALANCED_PATH = OUT_DIR / "finance_sentiment_imbalanced.csv"
IMBALANCED = {"neutral": 360, "positive": 120, "negative": 60}  # 6 : 2 : 1
OLD_PATH = OUT_DIR / "finance_sentiment_old.jsonl"
NEW_PATH = OUT_DIR / "finance_sentiment_new.jsonl"
NEW_COMPANIES = 10  # the last ones of COMPANIES: in the news only in the "new" month

INSTRUCTION = (
    "Classify the sentiment of this financial news headline as positive, negative or neutral."
)
LABELS = ("positive", "negative", "neutral")

# --------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------

# Each sector: (adjective for "<Adjective> group <company>", noun for the
# company in report lines, products or services it sells).
# fmt: off
SECTORS: dict[str, tuple[str, str, list[str]]] = {
    "banking": ("Banking", "bank", ["home loans", "credit cards", "business loans"]),
    "insurance": ("Insurance", "insurer", ["travel insurance", "car insurance", "life policies"]),
    "asset management": ("Asset management", "asset manager", ["index funds", "wealth management"]),
    "payments": ("Payments", "payments company", ["card payments", "online checkout services"]),
    "mining": ("Mining", "miner", ["copper", "iron ore", "lithium"]),
    "oil and gas": ("Oil", "oil producer", ["crude oil", "natural gas", "heating oil"]),
    "clean energy": ("Clean energy", "renewables developer", ["solar panels", "wind power"]),
    "utility": ("Utility", "utility", ["electricity", "water services"]),
    "retail": ("Retail", "retailer", ["clothing", "home goods", "groceries"]),
    "food": ("Food", "food company", ["frozen meals", "snacks", "breakfast cereals"]),
    "beverage": ("Beverage", "brewer", ["craft beer", "soft drinks"]),
    "agriculture": ("Farming", "farm group", ["grain", "dairy products"]),
    "software": ("Software", "software maker", ["cloud services", "security software"]),
    "semiconductor": ("Chip", "chipmaker", ["data center chips", "memory chips"]),
    "telecom": ("Telecom", "telecom operator", ["mobile plans", "broadband", "fiber networks"]),
    "media": ("Media", "media company", ["streaming subscriptions", "advertising"]),
    "pharmaceutical": ("Drug", "drugmaker", ["generic drugs", "cancer drugs", "vaccines"]),
    "health care": ("Health care", "hospital operator", ["outpatient care", "diagnostic tests"]),
    "shipping": ("Shipping", "shipper", ["container freight", "tanker charters"]),
    "logistics": ("Logistics", "logistics group", ["parcel delivery", "warehousing"]),
    "rail": ("Rail", "rail operator", ["rail freight", "commuter services"]),
    "airline": ("Airline", "airline", ["long-haul flights", "air cargo"]),
    "aerospace": ("Aerospace", "aerospace group", ["jet engines", "aircraft parts"]),
    "automotive": ("Auto", "carmaker", ["electric trucks", "electric cars"]),
    "steel": ("Steel", "steelmaker", ["steel pipes", "steel plate"]),
    "chemicals": ("Chemicals", "chemicals maker", ["fertilizer", "industrial coatings"]),
    "building materials": ("Building materials", "cement maker", ["cement", "concrete"]),
    "paper and packaging": ("Packaging", "paper maker", ["packaging", "pulp"]),
    "textiles": ("Textile", "textile maker", ["cotton fabric", "work uniforms"]),
    "real estate": ("Property", "landlord", ["office space", "rental homes"]),
}

# ~40 invented companies, each tied to a sector so headlines stay plausible.
COMPANIES: list[tuple[str, str]] = [
    ("Northwind Capital", "asset management"), ("Acme Bank", "banking"),
    ("Bluestone Mining", "mining"), ("Harbor Freight Lines", "shipping"),
    ("Crestview Insurance", "insurance"), ("Silverline Software", "software"),
    ("Redwood Energy", "oil and gas"), ("Pinecrest Foods", "food"),
    ("Ironbridge Steel", "steel"), ("Lakeshore Retail", "retail"),
    ("Summit Pharma", "pharmaceutical"), ("Orion Telecom", "telecom"),
    ("Granite Holdings", "building materials"), ("Maple Leaf Airways", "airline"),
    ("Copperfield Logistics", "logistics"), ("Eastgate Media", "media"),
    ("Brightwater Utilities", "utility"), ("Falcon Motors", "automotive"),
    ("Westbrook Financial", "asset management"), ("Sterling Chemicals", "chemicals"),
    ("Aurora Semiconductors", "semiconductor"), ("Kestrel Shipping", "shipping"),
    ("Oakmont Realty", "real estate"), ("Meridian Health", "health care"),
    ("Blue Harbor Bank", "banking"), ("Tidewater Oil", "oil and gas"),
    ("Evergreen Paper", "paper and packaging"), ("Cobalt Networks", "telecom"),
    ("Highland Brewing", "beverage"), ("Vantage Aerospace", "aerospace"),
    ("Riverside Textiles", "textiles"), ("Quarry Point Cement", "building materials"),
    ("Starling Payments", "payments"), ("Polaris Biotech", "pharmaceutical"),
    ("Windmere Renewables", "clean energy"), ("Atlas Insurance Group", "insurance"),
    ("Beacon Securities", "asset management"), ("Cedar Valley Farms", "agriculture"),
    ("Nimbus Cloud Systems", "software"), ("Juniper Rail", "rail"),
]

QUARTERS = [
    "first-quarter", "second-quarter", "third-quarter", "fourth-quarter",
    "Q1", "Q2", "Q3", "Q4",
]
QUARTER_WORDS = ["first", "second", "third", "fourth"]
ORDINALS = ["second", "third", "fourth", "fifth", "sixth"]
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
CITIES = [
    "London", "Frankfurt", "Chicago", "Toronto", "Singapore", "Zurich", "Dublin",
    "Boston", "Sydney", "Amsterdam", "Denver", "Oslo", "Madrid", "Austin",
]
ISSUES = [
    "accounting errors", "sales practices", "data privacy", "pricing", "safety lapses",
    "money laundering controls", "emissions reporting", "insider trading",
    "misleading disclosures", "billing errors",
]
CLIENTS = [
    "the Navy", "a European utility", "a state rail operator", "a Gulf airline",
    "the health ministry", "a national grid operator", "a large retailer",
]
PEOPLE = [
    "Maria Lopez", "James Chen", "Aisha Patel", "Tom Becker", "Sara Nilsen",
    "David Okafor", "Elena Rossi", "Mark Tanaka", "Laura Kim", "Peter Novak",
]
EXCHANGES = ["Nasdaq", "New York Stock Exchange", "London Stock Exchange", "Toronto exchange"]
METRICS = [
    "operating margin", "net profit", "revenue", "free cash flow", "order book",
    "operating costs", "net debt", "market share", "gross margin",
]
BANK_METRICS = ["lending margin", "loan book", "customer deposits", "net interest income"]
MOVES = ["improved", "weakened", "rose", "fell", "held steady"]
TOPICS = [
    "interest rates", "consumer demand", "inflation", "energy prices",
    "trade tariffs", "credit quality", "wage costs", "currency swings",
]
# fmt: on

# Slots that do not depend on the company; each draws one filler from the RNG.
SLOTS: dict[str, Callable[[random.Random], str]] = {
    "co2": lambda r: r.choice(COMPANIES)[0],
    "quarter": lambda r: r.choice(QUARTERS),
    "qword": lambda r: r.choice(QUARTER_WORDS),
    "nth": lambda r: r.choice(ORDINALS),
    "date": lambda r: f"{r.choice(MONTHS)} {r.randint(1, 28)}",
    "month": lambda r: r.choice(MONTHS),
    "weekday": lambda r: r.choice(WEEKDAYS),
    "year": lambda r: str(r.randint(2024, 2027)),
    "city": lambda r: r.choice(CITIES),
    "issue": lambda r: r.choice(ISSUES),
    "client": lambda r: r.choice(CLIENTS),
    "person": lambda r: r.choice(PEOPLE),
    "exchange": lambda r: r.choice(EXCHANGES),
    "metric": lambda r: r.choice(METRICS),
    "bankmetric": lambda r: r.choice(BANK_METRICS),
    "move": lambda r: r.choice(MOVES),
    "topic": lambda r: r.choice(TOPICS),
    "pct": lambda r: f"{r.randint(2, 45)}%",
    "bn": lambda r: f"{r.randint(1, 9)}.{r.randint(0, 9)}",
    "mn": lambda r: str(r.randint(5, 95) * 10),
    "jobs": lambda r: str(r.randint(2, 60) * 50),
    "cents": lambda r: str(r.randint(5, 95)),
    "count": lambda r: str(r.randint(3, 40)),
}

# --------------------------------------------------------------------------
# Headline phrase pools (the part after the company name)
# --------------------------------------------------------------------------

PHRASES: dict[str, list[str]] = {
    "positive": [
        "beats {quarter} profit forecasts",
        "raises full-year guidance",
        "shares surge {pct} after strong {quarter} results",
        "wins ${bn} billion contract from {client}",
        "reports record {quarter} revenue",
        "lifts dividend by {pct}",
        "posts {pct} jump in quarterly profit",
        "upgraded to buy by analysts",
        "announces ${bn} billion share buyback",
        "shares hit record high on strong demand for {product}",
        "swings to profit as sales of {product} soar",
        "wins credit rating upgrade",
        "widens margins as costs fall",
        "says sales jumped {pct} in {quarter}",
        "pays down ${bn} billion of debt ahead of schedule",
        "tops earnings estimates for {nth} straight quarter",
        "wins approval to expand {product} business",
        "stock soars after upbeat outlook",
        "raises profit target as demand for {product} booms",
    ],
    "negative": [
        "misses {quarter} revenue estimates",
        "cuts dividend",
        "suspends dividend to save cash",
        "shares slump {pct} after profit warning",
        "faces regulator probe over {issue}",
        "lowers full-year guidance",
        "posts surprise {quarter} loss",
        "to cut {jobs} jobs as demand weakens",
        "downgraded to sell by analysts",
        "shares plunge {pct} on weak outlook",
        "hit with ${mn} million fine over {issue}",
        "says cyberattack disrupted its {product} business",
        "says profit fell {pct} as costs rise",
        "warns of sharp drop in {product} sales",
        "loses ${bn} billion contract to rival",
        "has credit rating cut to junk",
        "files for bankruptcy protection",
        "sued by investors over {issue}",
        "misses earnings estimates for {nth} straight quarter",
    ],
    "neutral": [
        "holds annual shareholder meeting in {city}",
        "names new chief financial officer",
        "to report {quarter} results on {date}",
        "moves headquarters to {city}",
        "appoints {person} to board of directors",
        "to present at investor conference in {city}",
        "confirms date of annual general meeting",
        "completes previously announced name change",
        "opens new office in {city}",
        "publishes annual sustainability report",
        "schedules {quarter} earnings call for {date}",
        "names {person} head of investor relations",
        "files annual report with regulators",
        "keeps dividend unchanged at {cents} cents per share",
        "shares flat ahead of {quarter} results",
        "says chief executive to speak at {city} conference",
        "renames its {sector} division",
        "to hold capital markets day in {month}",
        "changes auditor after ten years",
    ],
}

# Sentence shapes wrapped around "<company> <phrase>".
SHAPES = [
    "{co} {p}",
    "{co} {p}",
    "{Sector} group {co} {p}",
    "{city}-based {co} {p}",
    "{co} {p}, filing shows",
    "{co} {p}, sources say",
    "Update: {co} {p}",
    "Breaking: {co} {p}",
]

# --------------------------------------------------------------------------
# One-sentence report lines for the unlabeled corpus
# --------------------------------------------------------------------------

REPORT_TEMPLATES = [
    "Analysts said the {org}'s {metric} {move} in the {qword} quarter.",
    "Analysts said the bank's {bankmetric} {move} in the {qword} quarter.",
    "{co} said its {metric} {move} by {pct} compared with a year earlier.",
    "Shares of {co} moved {pct} in {weekday} trading in {city}.",
    "The {sector} sector traded mixed as investors weighed {topic}.",
    "{co} chief executive {person} told reporters the outlook depends on {topic}.",
    "Investors will watch {co}'s {quarter} results on {date} for news on {topic}.",
    "{co} operates in the {sector} sector and is based in {city}.",
    "The board of {co} approved a dividend of {cents} cents per share.",
    "Regulators in {city} are reviewing {issue} at several {sector} companies.",
    "{co} reported revenue of ${bn} billion for the {qword} quarter.",
    "Trading volume in {co} shares was above average on {weekday}.",
    "Trading volume in {co} shares was below average on {weekday}.",
    "Analysts at {co2} expect the {metric} at {co} to change little in {year}.",
    "{co} employs about {jobs} people across {count} countries.",
    "{co} offers {product} to customers in {count} countries.",
    "The {org} said demand for {product} {move} during {month}.",
    "{co} is best known for its {product} business.",
    "{co} competes with {co2} for {product} customers.",
    "Fund managers said {topic} remains the main issue for the {sector} sector.",
    "The {org}'s shares are listed on the {exchange}.",
    "{co} said its {metric} {move} in {month} as {topic} shifted.",
    "A spokesperson for {co} declined to comment on {issue}.",
    "{co} last reported {quarter} results on {date}.",
    "Economists said {topic} will shape the {sector} sector in {year}.",
    "The annual meeting of {co} took place in {city} in {month}.",
]

_SLOT_RE = re.compile(r"\{(\w+)\}")
_LABEL_WORD_RE = re.compile(r"\b(positive|negative|neutral)\b", re.IGNORECASE)


def fill(template: str, rng: random.Random) -> str:
    """Replace every ``{slot}`` in ``template`` with a random filler.

    One company is drawn per call; ``{co}``, ``{Sector}``, ``{sector}``, ``{org}``
    and ``{product}`` all follow that company's sector.
    """
    company, sector = rng.choice(COMPANIES)
    adjective, org, products = SECTORS[sector]
    tied: dict[str, Callable[[], str]] = {
        "co": lambda: company,
        "Sector": lambda: adjective,
        "sector": lambda: sector,
        "org": lambda: org,
        "product": lambda: rng.choice(products),
    }

    def replace(match: re.Match[str]) -> str:
        slot = match.group(1)
        return tied[slot]() if slot in tied else SLOTS[slot](rng)

    return _SLOT_RE.sub(replace, template)


def make_headline(label: str, rng: random.Random) -> str:
    """Build one headline whose sentiment is ``label``."""
    phrase = rng.choice(PHRASES[label])
    shape = rng.choice(SHAPES)
    return fill(shape.replace("{p}", phrase), rng)


def is_valid_headline(text: str) -> bool:
    """Headlines must be plain ASCII and 6-16 words long."""
    return text.isascii() and MIN_WORDS <= len(text.split()) <= MAX_WORDS


def make_examples(rng: random.Random) -> list[dict[str, str]]:
    """Return PER_CLASS unique headlines per label, shuffled, as instruction rows."""
    seen: set[str] = set()
    rows: list[dict[str, str]] = []
    for label in LABELS:
        count = 0
        while count < PER_CLASS:
            headline = make_headline(label, rng)
            if headline in seen or not is_valid_headline(headline):
                continue
            seen.add(headline)
            rows.append({"instruction": INSTRUCTION, "input": headline, "output": label})
            count += 1
    rng.shuffle(rows)
    return rows


def overlaps(line: str, headlines: list[str]) -> bool:
    """True if ``line`` contains a dataset headline or is a fragment of one."""
    return any(h in line or line in h for h in headlines)


def make_corpus(rng: random.Random, headlines: list[str]) -> list[str]:
    """Return unlabeled headline-like and report lines, free of dataset headlines."""
    seen: set[str] = set()
    lines: list[str] = []

    def add(line: str) -> bool:
        if line in seen or _LABEL_WORD_RE.search(line) or overlaps(line, headlines):
            return False
        seen.add(line)
        lines.append(line)
        return True

    added = 0
    while added < N_CORPUS_HEADLINES:
        headline = make_headline(rng.choice(LABELS), rng)
        if is_valid_headline(headline) and add(headline):
            added += 1
    added = 0
    while added < N_CORPUS_REPORTS:
        if add(fill(rng.choice(REPORT_TEMPLATES), rng)):
            added += 1
    rng.shuffle(lines)
    return lines


def main(seed: int = SEED) -> None:
    rng = random.Random(seed)
    rows = make_examples(rng)
    headlines = [row["input"] for row in rows]
    corpus = make_corpus(rng, headlines)

    write_jsonl(JSONL_PATH, rows)
    with CORPUS_PATH.open("w", encoding="ascii", newline="\n") as f:
        f.write("\n".join(corpus) + "\n")

    write_csv(CSV_PATH, rows)
    # Its own generator, so the files above stay as they were.
    picked = random.Random(seed + 1).sample(rows, len(rows))
    taken = {label: [r for r in picked if r["output"] == label][:n]
             for label, n in IMBALANCED.items()}
    imbalanced = [r for r in rows if r in sum(taken.values(), [])]
    write_csv(IMBALANCED_PATH, imbalanced)

    newcomers = {name for name, _ in COMPANIES[-NEW_COMPANIES:]}
    new = [row for row in rows if company_of(row["input"]) in newcomers]
    write_jsonl(OLD_PATH, [row for row in rows if row not in new])
    write_jsonl(NEW_PATH, new)

    counts = {label: sum(row["output"] == label for row in rows) for label in LABELS}
    print(f"wrote {len(rows)} examples to {JSONL_PATH.name} and {CSV_PATH.name} {counts}")
    print(f"wrote {len(imbalanced)} examples to {IMBALANCED_PATH.name} {IMBALANCED}")
    print(f"wrote {len(rows) - len(new)} and {len(new)} examples to {OLD_PATH.name} and "
          f"{NEW_PATH.name}")
    print(f"wrote {len(corpus)} lines to {CORPUS_PATH.name}")


def company_of(headline: str) -> str:
    """The company a headline names (the longest name it contains)."""
    return max((name for name, _ in COMPANIES if name in headline), key=len)


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="ascii", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="ascii", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows([row["input"], row["output"]] for row in rows)


if __name__ == "__main__":
    main()
