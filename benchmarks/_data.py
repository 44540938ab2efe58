"""Synthetic customer reviews, generated inside DuckDB (deterministic, no downloads).

Each review has 20-400 words (log-normal, median 60, mean about 85: most reviews are short, a
few are long), in one of eight languages, about one product; about 10% of the rows repeat the
text (with the product and language) of another row, as copied and cross-posted reviews do.
"""

# ruff: noqa: E501  (sentence pools are data)
from __future__ import annotations

from pathlib import Path

import duckdb

PRODUCTS = [
    "Aurora Wireless Headphones", "Halo True Wireless Earbuds", "Nimbus Bluetooth Speaker",
    "Volt 65W USB-C Charger", "Pulse Fitness Tracker", "Orbit 4K Webcam", "Quill Mechanical Keyboard",
    "Lumen Smart Bulb 4-Pack", "Strata Portable SSD 1TB", "Echo Desk Microphone",
]

SENTENCES: dict[str, list[str]] = {
    "en": [
        "The sound is clear and the bass is punchy without being muddy.",
        "Battery life is about twenty hours, which is more than I expected.",
        "Pairing with my phone took a few seconds and it never dropped the connection.",
        "After two weeks the left side started crackling at high volume.",
        "The box arrived crushed but the product itself was fine.",
        "For this price it is hard to find anything better.",
        "Customer support answered quickly and sent a replacement.",
        "The app is clumsy and keeps asking me to log in again.",
        "I compared it with the Sony model and this one is lighter.",
        "Honestly it stopped working after a month, very disappointed.",
        "Build quality feels solid and the buttons have a nice click.",
        "It gets warm when charging but never hot.",
        "Setup was easy, even my parents managed it without help.",
        "The instructions were missing, so I had to search online.",
        "Would buy again, and I already recommended it to friends.",
        "Great, another gadget that dies the day after the warranty ends.",
    ],
    "de": [
        "Der Klang ist klar und der Bass kräftig, aber nicht dröhnend.",
        "Die Akkulaufzeit liegt bei etwa zwanzig Stunden, mehr als erwartet.",
        "Die Verbindung mit dem Handy klappte sofort und brach nie ab.",
        "Nach zwei Wochen knackte die linke Seite bei hoher Lautstärke.",
        "Der Karton kam zerdrückt an, das Gerät selbst war aber in Ordnung.",
        "Für diesen Preis findet man kaum etwas Besseres.",
        "Der Kundendienst hat schnell geantwortet und Ersatz geschickt.",
        "Die App ist umständlich und will ständig eine neue Anmeldung.",
        "Die Verarbeitung wirkt solide und die Tasten haben einen guten Druckpunkt.",
        "Leider ging es nach einem Monat kaputt, sehr enttäuschend.",
        "Die Einrichtung war einfach, sogar meine Eltern kamen damit klar.",
        "Würde ich wieder kaufen und habe es schon weiterempfohlen.",
    ],
    "fr": [
        "Le son est clair et les basses sont présentes sans être envahissantes.",
        "L'autonomie est d'environ vingt heures, plus que prévu.",
        "L'appairage avec mon téléphone a pris quelques secondes seulement.",
        "Au bout de deux semaines, le côté gauche grésille à fort volume.",
        "Le carton est arrivé écrasé mais le produit était intact.",
        "À ce prix, difficile de trouver mieux.",
        "Le service client a répondu vite et a envoyé un remplacement.",
        "L'application est pénible et demande sans cesse de se reconnecter.",
        "La finition est solide et les boutons sont agréables.",
        "Il a cessé de fonctionner après un mois, très déçu.",
        "L'installation était simple, même pour mes parents.",
        "Je le rachèterais et je l'ai déjà conseillé à des amis.",
    ],
    "es": [
        "El sonido es claro y los graves tienen fuerza sin saturar.",
        "La batería dura unas veinte horas, más de lo que esperaba.",
        "Se emparejó con mi móvil en segundos y nunca perdió la conexión.",
        "A las dos semanas el lado izquierdo empezó a crujir con volumen alto.",
        "La caja llegó aplastada, pero el producto estaba bien.",
        "Por este precio es difícil encontrar algo mejor.",
        "El servicio de atención respondió rápido y mandó un reemplazo.",
        "La aplicación es torpe y pide iniciar sesión una y otra vez.",
        "Los acabados se sienten sólidos y los botones responden bien.",
        "Dejó de funcionar al mes, muy decepcionado.",
        "La configuración fue sencilla, hasta mis padres pudieron.",
        "Lo volvería a comprar y ya se lo recomendé a mis amigos.",
    ],
    "it": [
        "Il suono è limpido e i bassi sono decisi ma non confusi.",
        "La batteria dura circa venti ore, più del previsto.",
        "L'abbinamento con il telefono è stato immediato e stabile.",
        "Dopo due settimane il lato sinistro gracchia ad alto volume.",
        "La scatola è arrivata schiacciata ma il prodotto era integro.",
        "A questo prezzo è difficile trovare di meglio.",
        "L'assistenza ha risposto subito e ha spedito un sostituto.",
        "L'app è scomoda e chiede continuamente di accedere di nuovo.",
        "La qualità costruttiva è buona e i tasti sono piacevoli.",
        "Ha smesso di funzionare dopo un mese, molto deluso.",
        "Lo ricomprerei e l'ho già consigliato agli amici.",
    ],
    "nl": [
        "Het geluid is helder en de bas is stevig zonder te dreunen.",
        "De batterij gaat ongeveer twintig uur mee, meer dan verwacht.",
        "Koppelen met mijn telefoon ging binnen een paar seconden.",
        "Na twee weken begon de linkerkant te kraken op hoog volume.",
        "De doos kwam geplet aan, maar het product was in orde.",
        "Voor deze prijs vind je weinig beters.",
        "De klantenservice reageerde snel en stuurde een vervanger.",
        "De app is onhandig en vraagt steeds opnieuw in te loggen.",
        "Het voelt stevig aan en de knoppen klikken prettig.",
        "Na een maand deed hij het niet meer, erg teleurgesteld.",
        "Ik zou hem opnieuw kopen en heb hem al aangeraden.",
    ],
    "pt": [
        "O som é limpo e os graves têm presença sem embolar.",
        "A bateria dura cerca de vinte horas, mais do que eu esperava.",
        "Emparelhou com o celular em segundos e nunca perdeu a conexão.",
        "Depois de duas semanas o lado esquerdo começou a chiar no volume alto.",
        "A caixa chegou amassada, mas o produto estava bom.",
        "Por esse preço é difícil achar algo melhor.",
        "O suporte respondeu rápido e mandou uma substituição.",
        "O aplicativo é confuso e pede login toda hora.",
        "O acabamento é sólido e os botões são firmes.",
        "Parou de funcionar depois de um mês, muito decepcionado.",
        "Compraria de novo e já recomendei aos amigos.",
    ],
    "pl": [
        "Dźwięk jest czysty, a bas mocny, ale nie dudniący.",
        "Bateria wytrzymuje około dwudziestu godzin, więcej niż się spodziewałem.",
        "Parowanie z telefonem trwało kilka sekund i połączenie nigdy nie zerwało się.",
        "Po dwóch tygodniach lewa strona zaczęła trzeszczeć przy dużej głośności.",
        "Pudełko przyszło zgniecione, ale produkt był w porządku.",
        "Za tę cenę trudno znaleźć coś lepszego.",
        "Obsługa klienta odpowiedziała szybko i wysłała zamiennik.",
        "Aplikacja jest niewygodna i ciągle każe logować się ponownie.",
        "Wykonanie jest solidne, a przyciski przyjemnie klikają.",
        "Przestał działać po miesiącu, bardzo rozczarowany.",
        "Kupiłbym ponownie i poleciłem go znajomym.",
    ],
}
# the first sentence carries numbers (a date, a price, weeks of use), so that short reviews differ
OPENINGS: dict[str, str] = {
    "en": "I bought it on the %D of the month for %P euros and have used it for %W weeks.",
    "de": "Ich habe es am %D. des Monats für %P Euro gekauft und nutze es seit %W Wochen.",
    "fr": "Je l'ai acheté le %D du mois pour %P euros et je l'utilise depuis %W semaines.",
    "es": "Lo compré el día %D del mes por %P euros y lo uso desde hace %W semanas.",
    "it": "L'ho comprato il %D del mese per %P euro e lo uso da %W settimane.",
    "nl": "Ik kocht het op de %De van de maand voor %P euro en gebruik het al %W weken.",
    "pt": "Comprei no dia %D do mês por %P euros e uso há %W semanas.",
    "pl": "Kupiłem go %D dnia miesiąca za %P euro i używam od %W tygodni.",
}
LANGUAGES = list(SENTENCES)
DUPLICATE_SHARE = 11  # percent of rows that copy another row's review


def _list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def reviews_sql(rows: int) -> str:
    """A select of ``rows`` synthetic reviews: review_id, product, language, rating, review_text, created_at."""
    pools = "[" + ", ".join(_list(SENTENCES[lang]) for lang in LANGUAGES) + "]"
    return f"""
    WITH ids AS (
        SELECT i AS review_id,
               CASE WHEN hash(i, 'dup') % 100 < {DUPLICATE_SHARE} THEN hash(i, 'src') % {rows} + 1 ELSE i END AS cid
        FROM range(1, {rows} + 1) t(i)
    ), shaped AS (
        SELECT review_id, cid,
               (hash(cid, 'lang') % {len(LANGUAGES)} + 1)::BIGINT AS lang,
               greatest(20, least(400, round(exp(ln(60) + 0.8 * sqrt(-2 * ln((hash(cid, 'u1') % 1000000 + 0.5) / 1e6))
                   * cos(2 * pi() * (hash(cid, 'u2') % 1000000 + 0.5) / 1e6)))))::INTEGER AS words
        FROM ids
    )
    SELECT review_id,
           {_list(PRODUCTS)}[(hash(cid, 'product') % {len(PRODUCTS)} + 1)::BIGINT] AS product,
           {_list(LANGUAGES)}[lang] AS language,
           (hash(review_id, 'rating') % 5 + 1)::INTEGER AS rating,
           array_to_string(list_slice(string_split(
               replace(replace(replace({_list([OPENINGS[lang] for lang in LANGUAGES])}[lang], '%D', (hash(cid, 'd') % 28 + 1)::VARCHAR),
                       '%P', (hash(cid, 'p') % 180 + 20)::VARCHAR), '%W', (hash(cid, 'w') % 60 + 1)::VARCHAR)
               || ' ' || array_to_string(
               list_transform(range(words // 5 + 1), lambda j: {pools}[lang][(hash(cid, j) % len({pools}[lang]) + 1)::BIGINT]),
               ' '), ' '), 1, words), ' ') AS review_text,
           DATE '2026-01-01' + (hash(review_id, 'day') % 270)::INTEGER AS created_at
    FROM shaped
    """


def write_reviews(path: Path, rows: int) -> Path:
    """Write ``rows`` reviews to a Parquet file (kept: the same size is generated once)."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with duckdb.connect() as conn:
        conn.execute("SET enable_progress_bar = false")
        conn.execute(f"COPY ({reviews_sql(rows)} ORDER BY review_id) TO '{tmp}' (FORMAT parquet)")
    tmp.replace(path)
    return path


def edit_reviews(source: Path, dest: Path, percent: int = 1) -> int:
    """Copy ``source`` with ``percent``% of the review texts changed; returns how many rows changed."""
    with duckdb.connect() as conn:
        conn.execute(f"""COPY (SELECT * REPLACE (CASE WHEN hash(review_id, 'edit') % 100 < {percent}
                              THEN review_text || ' Update: after a firmware update it works better.'
                              ELSE review_text END AS review_text)
                      FROM read_parquet('{source}') ORDER BY review_id) TO '{dest}' (FORMAT parquet)""")
        row = conn.execute(f"SELECT count(*) FROM read_parquet('{source}') WHERE hash(review_id, 'edit') % 100 < {percent}").fetchone()
    return int(row[0]) if row else 0


def describe(path: Path) -> dict[str, float]:
    """Rows, mean words, languages and the share of rows whose text appears in another row."""
    with duckdb.connect() as conn:
        row = conn.execute(f"""
            SELECT count(*), avg(len(string_split(review_text, ' '))), min(len(string_split(review_text, ' '))),
                   max(len(string_split(review_text, ' '))), count(DISTINCT language),
                   (count(*) - count(DISTINCT review_text)) / count(*), avg(strlen(review_text))
            FROM read_parquet('{path}')""").fetchone()
    assert row is not None
    keys = ("rows", "mean_words", "min_words", "max_words", "languages", "duplicate_share", "mean_bytes")
    return dict(zip(keys, (float(v) for v in row), strict=True))
