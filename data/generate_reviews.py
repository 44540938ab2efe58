"""Generate ``reviews.csv``: synthetic but realistic customer reviews for an electronics shop.

Deterministic (seeded) and standard library only, so the committed CSV can be regenerated
byte for byte::

    python data/generate_reviews.py

The data is meant to exercise an LLM pipeline: positive, negative, mixed and neutral reviews,
sarcasm, ratings that contradict the text, eight languages, competitor mentions, empty and
whitespace-only texts, very long texts, exact duplicate texts, and texts containing commas,
double quotes and newlines (so the CSV needs proper quoting).
"""

# ruff: noqa: E501  (phrase pools are data; one line per pool reads better than wrapped strings)
from __future__ import annotations

import csv
import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED = 20260115
N_REVIEWS = 300
OUT = Path(__file__).with_name("reviews.csv")
FIRST_DAY = dt.date(2026, 1, 2)
LAST_DAY = dt.date(2026, 9, 30)


@dataclass(frozen=True)
class Product:
    name: str
    kind: str
    price: float
    weight: int
    competitors: tuple[str, ...]
    generic_aspects: tuple[str, ...]  # aspects available in the non-English phrase pools


# fmt: off
PRODUCTS = [
    Product("Aurora Wireless Headphones", "headphones", 129.99, 16,
            ("Sony WH-1000XM5", "Bose QuietComfort 45"), ("sound", "battery", "connectivity", "quality")),
    Product("Halo True Wireless Earbuds", "earbuds", 79.99, 16,
            ("AirPods Pro", "Galaxy Buds2 Pro"), ("sound", "battery", "connectivity", "quality")),
    Product("Nimbus Bluetooth Speaker", "speaker", 59.99, 12,
            ("JBL Flip 6", "UE Boom 3"), ("sound", "battery", "connectivity", "quality")),
    Product("Volt 65W USB-C Charger", "charger", 39.99, 12,
            ("Anker 735", "Apple 35W adapter"), ("quality", "price")),
    Product("Pulse Fitness Tracker", "tracker", 69.99, 10,
            ("Fitbit Charge 6", "Garmin Vivosmart 5"), ("battery", "connectivity", "quality")),
    Product("Orbit 4K Webcam", "webcam", 99.99, 9,
            ("Logitech Brio", "Logitech C920"), ("connectivity", "quality")),
    Product("Quill Mechanical Keyboard", "keyboard", 119.99, 9,
            ("Keychron K2", "Logitech MX Keys"), ("battery", "connectivity", "quality")),
    Product("Lumen Smart Bulb 4-Pack", "bulbs", 49.99, 8,
            ("Philips Hue", "IKEA Tradfri"), ("connectivity", "quality", "price")),
    Product("Strata Portable SSD 1TB", "ssd", 109.99, 8,
            ("Samsung T7", "SanDisk Extreme"), ("quality", "price")),
]
BY_NAME = {p.name: p for p in PRODUCTS}

# --------------------------------------------------------------------------------------------
# English phrase pools. Placeholders are filled per review: {product} {competitor} {price}
# {sale} {fast_days} {slow_days} {weeks} {hours} {short_hours} {minutes}.
# --------------------------------------------------------------------------------------------

EN_ASPECTS: dict[str, dict[str, dict[str, list[str]]]] = {
    "headphones": {
        "sound": {
            "pos": ["The sound is warm and detailed, with bass that's punchy but never muddy.",
                    "Vocals are crystal clear and the soundstage is wider than I expected at this price.",
                    "Noise cancelling is excellent; my train commute is finally quiet."],
            "neg": ["The bass is boomy and drowns out everything else, even with the EQ turned down.",
                    "There's a faint hiss whenever nothing is playing, and it drives me mad.",
                    "Noise cancelling creates an odd pressure in my ears and barely blocks the office chatter."],
        },
        "battery": {
            "pos": ["Battery life is ridiculous, I got about {hours} hours out of one charge.",
                    "I charge them maybe once a week, and a 10-minute top-up gives a few hours."],
            "neg": ["The battery barely lasts {short_hours} hours, nowhere near the advertised 40.",
                    "After two months the battery drains even when they're switched off."],
        },
        "connectivity": {
            "pos": ["Pairing with my phone and laptop at the same time works flawlessly.",
                    "The Bluetooth connection is rock solid, even two rooms away from my phone."],
            "neg": ["The Bluetooth connection drops every few minutes when my phone is in my pocket.",
                    "Switching between laptop and phone means re-pairing every single time.",
                    'The app keeps saying "device not found" while they are literally playing music.'],
        },
        "comfort": {
            "pos": ["Comfortable enough to wear all day, the ear cushions are soft and don't get hot.",
                    "Light, well balanced, and they fold flat into the case."],
            "neg": ["They clamp way too hard; I get a headache after an hour.",
                    "The headband cracked after {weeks} weeks of completely normal use."],
        },
    },
    "earbuds": {
        "sound": {
            "pos": ["Sound is surprisingly full for earbuds this small, with clean highs.",
                    "Transparency mode sounds natural, I can hold a conversation without taking them out."],
            "neg": ["They sound thin and tinny, with almost no bass unless I push them deep into my ears.",
                    "Call quality is awful; everyone says I sound like I'm in a tunnel."],
        },
        "battery": {
            "pos": ["I get around {hours} hours with the case, which covers a whole week of commuting.",
                    "The case charges wirelessly and lasts ages."],
            "neg": ["The left earbud dies about an hour before the right one, every time.",
                    "Battery went from about 8 hours to barely {short_hours} within {weeks} weeks."],
        },
        "connectivity": {
            "pos": ["They connect the moment I open the case, no fiddling at all.",
                    "Zero dropouts so far, even at the gym next to a dozen other Bluetooth devices."],
            "neg": ["The right earbud randomly disconnects and I have to put it back in the case.",
                    "Audio lags behind video by about half a second, so films are unwatchable."],
        },
        "fit": {
            "pos": ["They stay put during runs, and the three tip sizes actually make a difference.",
                    "So light I forget I'm wearing them."],
            "neg": ["They fall out every time I turn my head quickly.",
                    "After an hour my ears hurt, even with the smallest tips."],
        },
    },
    "speaker": {
        "sound": {
            "pos": ["For its size it's loud, and it doesn't distort even at full volume.",
                    "Plenty of bass for a small speaker; it easily fills our living room."],
            "neg": ["Above 70% volume it starts rattling and the bass just disappears.",
                    "Sounds muffled, like someone put a sock over it."],
        },
        "battery": {
            "pos": ["The battery lasted a whole weekend of camping without a recharge.",
                    "I got roughly {hours} hours of music at medium volume."],
            "neg": ["The battery died after {short_hours} hours at a barbecue, which was embarrassing.",
                    "It won't charge unless the cable is held at a very specific angle."],
        },
        "connectivity": {
            "pos": ["Pairing two of them in stereo took about ten seconds.",
                    "Connects instantly and remembers all my devices."],
            "neg": ["It drops the connection if I walk more than a few metres away.",
                    "Stereo pairing with a second unit simply never works."],
        },
        "durability": {
            "pos": ["It fell into the pool twice and still works perfectly.",
                    "The rubber shell feels tough, and it survived being thrown in a backpack for weeks."],
            "neg": ["It is sold as waterproof, but it stopped working after light rain.",
                    "The strap ripped off on the first day."],
        },
    },
    "charger": {
        "charging": {
            "pos": ["Charges my MacBook and my phone at the same time at full speed.",
                    "My laptop goes from 20 to 80% in about an hour, as fast as the original charger."],
            "neg": ["It only delivers 20W to my laptop, not the 65W on the box.",
                    "My phone shows \"charging slowly\" on this thing, which is kind of the opposite of the point."],
        },
        "heat": {
            "pos": ["It stays cool even when charging two devices at once.",
                    "Barely gets warm, even overnight."],
            "neg": ["It gets so hot I can't hold it after twenty minutes.",
                    "It smells like hot plastic when charging the laptop, which does not fill me with confidence."],
        },
        "build": {
            "pos": ["Small, solid, and the folding prongs are perfect for travel.",
                    "Feels well made and the USB-C ports grip the cable firmly."],
            "neg": ["One of the USB-C ports became loose after {weeks} weeks.",
                    "It's so bulky it blocks the neighbouring socket on my power strip."],
        },
    },
    "tracker": {
        "battery": {
            "pos": ["Battery lasts about nine days with the heart rate monitor on.",
                    "I charge it once a week while I'm in the shower, and that's it."],
            "neg": ["With GPS on, the battery is gone in {short_hours} hours.",
                    "It claims 10 days of battery; I get two."],
        },
        "tracking": {
            "pos": ["Step count matches my phone within a few percent, and sleep tracking seems accurate.",
                    "Heart rate tracking is surprisingly close to my chest strap."],
            "neg": ["It counted 3,000 steps during a car ride, so I don't trust any of the numbers.",
                    "Heart rate readings jump around wildly during workouts."],
        },
        "app": {
            "pos": ["The app is clean and syncs in the background without me noticing.",
                    "Sync with my phone is quick and the app doesn't nag me for a subscription."],
            "neg": ["The app needs a subscription to show anything useful, which isn't mentioned on the box.",
                    "It loses sync with the app every other day and I have to re-pair it."],
        },
        "strap": {
            "pos": ["The strap is comfortable enough to sleep with.",
                    "Swapping straps is easy and the clasp is secure."],
            "neg": ["The strap gave me a rash within a week.",
                    "The clasp opened on a run and I almost lost it."],
        },
    },
    "webcam": {
        "image": {
            "pos": ["The picture is sharp, and auto exposure handles my bright window well.",
                    "Colours look natural and the autofocus is quick."],
            "neg": ["In anything but daylight the image is grainy and blotchy.",
                    "Autofocus keeps hunting, so my face goes in and out of focus during calls."],
        },
        "mic": {
            "pos": ["The built-in mic is good enough that I stopped using my headset on calls.",
                    "The microphone picks up my voice clearly without the keyboard noise."],
            "neg": ["The microphone sounds hollow and picks up every keystroke.",
                    "People complained about an echo as soon as I switched to the built-in mic."],
        },
        "setup": {
            "pos": ["Plug and play on Windows, macOS and Linux, no drivers needed.",
                    "Set up in under a minute, and the privacy shutter is a nice touch."],
            "neg": ["The companion software crashes every time I try to change the field of view.",
                    "It keeps disconnecting from my USB hub, so I have to replug it before every meeting."],
        },
        "build": {
            "pos": ["The clip holds firmly on my monitor and also fits a tripod.",
                    "Feels sturdy, and the cable is long enough for a desk setup."],
            "neg": ["The clip is flimsy and the camera keeps tilting forward.",
                    "The cable is permanently attached and far too short."],
        },
    },
    "keyboard": {
        "typing": {
            "pos": ["The switches feel smooth and the stabilizers don't rattle at all.",
                    "Typing on it is a joy, with a satisfying, quiet thock."],
            "neg": ["Several keys chatter and register double letters.",
                    "The space bar rattles like a drawer full of cutlery."],
        },
        "build": {
            "pos": ["Aluminium frame, zero flex, and it's heavy enough not to slide around.",
                    "The keycaps are thick PBT and show no shine after months of use."],
            "neg": ["The case creaks when I press down on the corners.",
                    "The legend on the E key already rubbed off after {weeks} weeks."],
        },
        "connectivity": {
            "pos": ["Switching between three Bluetooth devices is instant.",
                    "The 2.4 GHz dongle has no noticeable lag, even for gaming."],
            "neg": ["It takes several seconds to wake up over Bluetooth, so the first letters get lost.",
                    "The Bluetooth connection stutters whenever my mouse is also connected."],
        },
        "software": {
            "pos": ["Remapping keys in the web configurator was straightforward.",
                    "The RGB software is actually usable, which is rare."],
            "neg": ["The configuration software is Windows-only, which nobody mentions on the product page.",
                    "A firmware update bricked it and support told me to \"try another USB port\"."],
        },
    },
    "bulbs": {
        "app": {
            "pos": ["The app is simple and schedules work reliably.",
                    "Works with our voice assistant out of the box, no extra hub."],
            "neg": ["The app wants an account, location access and my contacts just to turn on a light.",
                    "Schedules randomly stop working after a few days."],
        },
        "connectivity": {
            "pos": ["All four bulbs connected to the Wi-Fi on the first try.",
                    "They come back online quickly after a power cut."],
            "neg": ["Two of the four bulbs keep dropping off the Wi-Fi.",
                    "Every time the router restarts I have to set them all up again."],
        },
        "light": {
            "pos": ["The warm white is genuinely warm, not the usual bluish tone.",
                    "Colours are vivid and dimming goes down nice and low."],
            "neg": ["They flicker at low brightness, which gives me a headache.",
                    "The \"warm white\" looks greenish next to my other lamps."],
        },
    },
    "ssd": {
        "speed": {
            "pos": ["I get about 1,000 MB/s on my laptop, exactly as advertised.",
                    "Copying a 50 GB photo library took a few minutes."],
            "neg": ["Speed drops to USB stick levels after the first 20 GB of a large copy.",
                    "It only manages about 400 MB/s, not the 1,050 MB/s on the box."],
        },
        "build": {
            "pos": ["Tiny, light, and it survived a drop onto a tiled floor.",
                    "The rubber sleeve makes it feel indestructible in a bag."],
            "neg": ["The USB-C port is loose and the drive disconnects if I move the cable.",
                    "Mine died after {weeks} weeks and took a folder of photos with it."],
        },
        "heat": {
            "pos": ["Even during long transfers it only gets slightly warm.",
                    "No thermal throttling that I could notice."],
            "neg": ["It gets really hot during long transfers and then slows to a crawl.",
                    "Too hot to touch after a backup, which worries me."],
        },
    },
}

EN_COMMON: dict[str, dict[str, list[str]]] = {
    "shipping": {
        "pos": ["Arrived in {fast_days} days, well packed.",
                "Delivery was faster than promised.",
                "Shipped the same day I ordered it, and tracking worked perfectly."],
        "neg": ["It took {slow_days} days to arrive, and the tracking number never worked.",
                "The box arrived crushed; luckily the device inside survived.",
                "The courier left the parcel in the rain outside my door.",
                "I received the wrong colour and had to send it back first."],
    },
    "price": {
        "pos": ["At €{price} it's a bargain.",
                "Worth every cent.",
                "Cheaper than the big brands, and I honestly can't tell the difference."],
        "neg": ["Way overpriced for what you get.",
                "At €{price} I expected a lot more.",
                "It went on sale for €{sale} a week after I bought it, which stings."],
    },
    "support": {
        "pos": ["Customer support replaced my faulty unit within a week, no questions asked.",
                "Support answered my question the same day, and politely."],
        "neg": ["Support took {slow_days} days to answer and then just sent me a link to the manual.",
                "Customer service wants me to pay return shipping for a defective product."],
    },
}

EN_COMPETITOR = {
    "pos": ["I switched from the {competitor} and honestly don't miss it.",
            "Cheaper than the {competitor}, and I can't tell much of a difference.",
            "I prefer it to the {competitor} my brother has."],
    "neg": ["Should have just bought the {competitor}.",
            "My old {competitor} was better in every way.",
            "Returned it and ordered the {competitor} instead."],
    "mixed": ["Not quite as polished as the {competitor}, but close.",
              "The {competitor} is still better, but it also costs a lot more."],
}

EN_OPENERS = {
    "pos": ["Really happy with this purchase.", "Exceeded my expectations.", "Absolutely love it!",
            "Best purchase I've made this year.", "Solid buy.", "Very impressed so far.",
            "Bought this after reading a lot of reviews, and I'm glad I did.",
            "Second one I've bought, this time for my partner."],
    "neg": ["Very disappointed.", "DO NOT BUY.", "What a waste of money.",
            "I really wanted to like this, but no.", "Returned it after {slow_days} days.", "Avoid."],
    "mixed": ["Mixed feelings about this one.", "Good, but not great.", "It's okay for the price.",
              "Some things I love, some I really don't.", "Not bad, not great."],
}

EN_CLOSERS = {
    "pos": ["Would definitely recommend.", "Top marks from me.", "Would buy again.",
            "Highly recommended!", "Love it 😍", "No regrets."],
    "neg": ["Returning it.", "Sending it back for a refund.", "Save your money.",
            "Zero stars if I could.", "Never buying from this brand again."],
    "mixed": ["Would still recommend it if you can get it on sale.", "Keeping it for now, but I'm not thrilled.",
              "Fair enough for the money.", "If they fix the firmware, I'll update my review."],
}

EN_NEUTRAL = ["Bought it as a gift, so I can't say much about it yet.",
              "Arrived on time. Haven't had a chance to test it properly, will update.",
              "Replacement for my old {competitor}. Does the job.",
              "It works. Nothing special, nothing bad.",
              "Second unit for the office, same as the first one.",
              "The manual could be clearer, but I figured it out.",
              "Ordered on a Monday, arrived on the Thursday.",
              "Too early to tell after {fast_days} days."]

# --------------------------------------------------------------------------------------------
# Other languages: generic aspects, so a sentence fits any product that has that aspect.
# `but` introduces the negative half of a mixed review; `lower_after_but` follows the
# language's capitalisation after a colon.
# --------------------------------------------------------------------------------------------

LANGS: dict[str, dict[str, Any]] = {
    "de": {
        "join": " ", "but": "Einziger Minuspunkt: ", "lower_after_but": False,
        "open": {"pos": ["Super Produkt!", "Bin sehr zufrieden.", "Klare Kaufempfehlung.",
                         "Hat meine Erwartungen übertroffen."],
                 "neg": ["Leider eine große Enttäuschung.", "Finger weg!", "Schade um das Geld.",
                         "Ich bin wirklich enttäuscht."],
                 "mixed": ["Gemischte Gefühle.", "Grundsätzlich okay, aber mit Schwächen.",
                           "Für den Preis in Ordnung."]},
        "quality": {"pos": ["Die Verarbeitung ist hochwertig und fühlt sich sehr robust an.",
                            "Alles wirkt solide und gut durchdacht."],
                    "neg": ["Die Verarbeitung ist billig, das Plastik knarzt bei jeder Bewegung.",
                            "Nach drei Wochen ist schon ein Teil abgebrochen."]},
        "shipping": {"pos": ["Die Lieferung kam schon am nächsten Tag, top verpackt.",
                             "Schneller Versand, alles bestens."],
                     "neg": ["Die Lieferung hat fast zwei Wochen gedauert.",
                             "Der Karton war völlig zerdrückt, als er ankam."]},
        "price": {"pos": ["Preis-Leistung ist absolut in Ordnung.", "Für das Geld bekommt man wirklich viel."],
                  "neg": ["Für diesen Preis erwarte ich deutlich mehr.",
                          "Viel zu teuer für das, was geboten wird."]},
        "battery": {"pos": ["Der Akku hält locker mehrere Tage durch.", "Die Akkulaufzeit ist beeindruckend."],
                    "neg": ["Der Akku ist nach wenigen Stunden leer.",
                            "Die Akkulaufzeit ist deutlich kürzer als angegeben."]},
        "sound": {"pos": ["Der Klang ist klar und ausgewogen, der Bass kräftig.",
                          "Klanglich wirklich überraschend gut."],
                  "neg": ["Der Klang ist dumpf und blechern.", "Bei hoher Lautstärke verzerrt der Ton stark."]},
        "connectivity": {"pos": ["Die Bluetooth-Verbindung ist stabil, das Koppeln ging in Sekunden.",
                                 "Die Einrichtung über die App war kinderleicht."],
                         "neg": ["Die Verbindung bricht ständig ab.",
                                 "Die App findet das Gerät nur jedes zweite Mal."]},
        "close": {"pos": ["Würde ich jederzeit wieder kaufen.", "Volle Punktzahl!", "Absolute Empfehlung."],
                  "neg": ["Geht zurück.", "Nicht empfehlenswert.", "Nie wieder."],
                  "mixed": ["Mehr ist leider nicht drin.", "Mal sehen, ob ein Update hilft."]},
    },
    "fr": {
        "join": " ", "but": "Seul bémol : ", "lower_after_but": True,
        "open": {"pos": ["Très bon produit !", "Je suis ravi de cet achat.", "Excellent rapport qualité-prix.",
                         "Franchement, c'est parfait."],
                 "neg": ["Très déçu.", "À éviter absolument.", "Quelle déception…", "Produit de mauvaise qualité."],
                 "mixed": ["Avis mitigé.", "Correct, sans plus.", "Bien, mais peut mieux faire."]},
        "quality": {"pos": ["Les finitions sont soignées et l'ensemble paraît solide.",
                            "La qualité de fabrication est vraiment au rendez-vous."],
                    "neg": ["Le plastique fait très bon marché et grince.",
                            "Une pièce s'est cassée au bout de trois semaines."]},
        "shipping": {"pos": ["Livraison rapide, colis bien emballé.", "Reçu en 48 heures, impeccable."],
                     "neg": ["La livraison a pris presque deux semaines.", "Le colis est arrivé abîmé et ouvert."]},
        "price": {"pos": ["Pour ce prix, c'est une excellente affaire.", "Le rapport qualité-prix est imbattable."],
                  "neg": ["Beaucoup trop cher pour ce que c'est.", "À ce prix-là, je m'attendais à mieux."]},
        "battery": {"pos": ["L'autonomie est excellente, je recharge une fois par semaine.",
                            "La batterie tient largement la journée."],
                    "neg": ["La batterie se vide en quelques heures à peine.",
                            "L'autonomie annoncée est très loin de la réalité."]},
        "sound": {"pos": ["Le son est clair et équilibré, avec des basses présentes.",
                          "La qualité sonore m'a agréablement surpris."],
                  "neg": ["Le son est métallique et sature à volume élevé.", "Les basses sont inexistantes."]},
        "connectivity": {"pos": ["L'appairage Bluetooth est instantané et la connexion stable.",
                                 "L'application est simple et fonctionne bien."],
                         "neg": ["La connexion Bluetooth se coupe sans arrêt.",
                                 "L'application ne détecte l'appareil qu'une fois sur deux."]},
        "close": {"pos": ["Je recommande vivement !", "Je rachèterais sans hésiter.", "Il mérite ses bonnes notes."],
                  "neg": ["Je l'ai renvoyé.", "Je déconseille.", "Remboursement demandé."],
                  "mixed": ["À voir après une mise à jour.", "Je reste un peu sur ma faim."]},
    },
    "es": {
        "join": " ", "but": "Lo malo: ", "lower_after_but": True,
        "open": {"pos": ["¡Muy buen producto!", "Estoy encantado con la compra.", "Cumple con creces lo que promete.",
                         "Una compra excelente."],
                 "neg": ["Muy decepcionado.", "No lo recomiendo para nada.", "Una pérdida de dinero.",
                         "¡Qué decepción!"],
                 "mixed": ["Sentimientos encontrados.", "Está bien, sin más.", "Bueno, pero mejorable."]},
        "quality": {"pos": ["Los acabados son muy buenos y se nota robusto.", "La calidad de construcción es excelente."],
                    "neg": ["El plástico parece barato y cruje al tocarlo.",
                            "Se rompió una pieza a las tres semanas de uso."]},
        "shipping": {"pos": ["El envío llegó en dos días y muy bien embalado.", "Envío rapidísimo, todo perfecto."],
                     "neg": ["El pedido tardó casi tres semanas en llegar.",
                             "La caja llegó aplastada y con la cinta rota."]},
        "price": {"pos": ["Por este precio es una auténtica ganga.", "La relación calidad-precio es inmejorable."],
                  "neg": ["Demasiado caro para lo que ofrece.", "Por ese precio esperaba mucho más."]},
        "battery": {"pos": ["La batería dura muchísimo, la cargo una vez por semana.", "La autonomía es espectacular."],
                    "neg": ["La batería no dura ni media jornada.",
                            "La autonomía real no tiene nada que ver con la anunciada."]},
        "sound": {"pos": ["El sonido es nítido y los graves tienen pegada.", "Suena mucho mejor de lo que esperaba."],
                  "neg": ["El sonido es plano y distorsiona a volumen alto.", "Los graves brillan por su ausencia."]},
        "connectivity": {"pos": ["Se empareja al instante y la conexión es estable.",
                                 "La aplicación es sencilla y funciona sin problemas."],
                         "neg": ["La conexión Bluetooth se corta constantemente.",
                                 "La aplicación no encuentra el dispositivo la mitad de las veces."]},
        "close": {"pos": ["¡Lo recomiendo totalmente!", "Volvería a comprarlo sin dudar.", "Un acierto total."],
                  "neg": ["Lo he devuelto.", "No lo compréis.", "He pedido el reembolso."],
                  "mixed": ["Esperemos que una actualización lo arregle.", "Cumple, pero sin entusiasmo."]},
    },
    "it": {
        "join": " ", "but": "Unico difetto: ", "lower_after_but": True,
        "open": {"pos": ["Ottimo prodotto!", "Sono molto soddisfatto dell'acquisto.", "Supera le aspettative."],
                 "neg": ["Molto deluso.", "Sconsigliato.", "Soldi buttati."],
                 "mixed": ["Così così.", "Buono, ma con qualche difetto."]},
        "quality": {"pos": ["I materiali sono di qualità e sembra molto solido.",
                            "Costruzione eccellente, si sente che è fatto bene."],
                    "neg": ["La plastica sembra economica e scricchiola.", "Si è rotto un pezzo dopo tre settimane."]},
        "shipping": {"pos": ["Spedizione velocissima, arrivato in due giorni.", "Imballaggio perfetto e consegna puntuale."],
                     "neg": ["La consegna ha richiesto quasi due settimane.", "Il pacco è arrivato danneggiato."]},
        "price": {"pos": ["Per questo prezzo è un affare.", "Ottimo rapporto qualità-prezzo."],
                  "neg": ["Troppo caro per quello che offre.", "A questo prezzo mi aspettavo molto di più."]},
        "battery": {"pos": ["La batteria dura tantissimo.", "L'autonomia è davvero ottima."],
                    "neg": ["La batteria si scarica in poche ore.",
                            "L'autonomia è molto inferiore a quella dichiarata."]},
        "sound": {"pos": ["Il suono è pulito e i bassi sono profondi.", "La qualità audio mi ha sorpreso."],
                  "neg": ["Il suono è metallico e distorce ad alto volume.", "I bassi sono quasi inesistenti."]},
        "connectivity": {"pos": ["Si collega subito e la connessione è stabile.", "L'app è semplice e funziona bene."],
                         "neg": ["La connessione Bluetooth cade in continuazione.",
                                 "L'app non trova il dispositivo una volta su due."]},
        "close": {"pos": ["Lo consiglio!", "Lo ricomprerei subito.", "Promosso a pieni voti."],
                  "neg": ["Restituito.", "Non lo consiglio.", "Mai più."],
                  "mixed": ["Vediamo se un aggiornamento risolve.", "Nel complesso, sufficiente."]},
    },
    "nl": {
        "join": " ", "but": "Minpuntje: ", "lower_after_but": True,
        "open": {"pos": ["Top product!", "Erg tevreden met deze aankoop.", "Doet precies wat het moet doen."],
                 "neg": ["Erg teleurgesteld.", "Niet kopen!", "Zonde van het geld."],
                 "mixed": ["Gemengde gevoelens.", "Prima, maar niet geweldig."]},
        "quality": {"pos": ["De afwerking is netjes en het voelt stevig aan.", "De bouwkwaliteit is uitstekend."],
                    "neg": ["Het plastic voelt goedkoop en kraakt.", "Na drie weken brak er al een onderdeel af."]},
        "shipping": {"pos": ["Binnen een dag in huis, goed verpakt.", "Snelle levering, geen klachten."],
                     "neg": ["De levering duurde bijna twee weken.", "De doos kwam helemaal gedeukt aan."]},
        "price": {"pos": ["Voor deze prijs is het echt een koopje.", "De prijs-kwaliteitverhouding is prima."],
                  "neg": ["Veel te duur voor wat je krijgt.", "Voor dit geld had ik meer verwacht."]},
        "battery": {"pos": ["De batterij gaat dagen mee.", "De accuduur is indrukwekkend."],
                    "neg": ["De batterij is na een paar uur al leeg.", "De accuduur valt flink tegen."]},
        "sound": {"pos": ["Het geluid is helder en de bas is stevig.", "Klinkt veel beter dan ik had verwacht."],
                  "neg": ["Het geluid is blikkerig en vervormt op hoog volume.", "Van de bas is weinig te merken."]},
        "connectivity": {"pos": ["Koppelen ging in een paar seconden en de verbinding is stabiel.",
                                 "De app werkt eenvoudig en zonder problemen."],
                         "neg": ["De bluetoothverbinding valt steeds weg.", "De app vindt het apparaat maar af en toe."]},
        "close": {"pos": ["Aanrader!", "Zou het zo weer kopen.", "Echt een topper."],
                  "neg": ["Gaat retour.", "Geen aanrader.", "Nooit meer."],
                  "mixed": ["Hopelijk lost een update het op.", "Voldoende, meer niet."]},
    },
    "pl": {
        "join": " ", "but": "Minus: ", "lower_after_but": True,
        "open": {"pos": ["Świetny produkt!", "Jestem bardzo zadowolony z zakupu.", "Polecam z czystym sumieniem."],
                 "neg": ["Bardzo się zawiodłem.", "Nie polecam.", "Szkoda pieniędzy."],
                 "mixed": ["Mieszane uczucia.", "Ogólnie w porządku, ale bez zachwytu."]},
        "quality": {"pos": ["Wykonanie jest solidne, wszystko dobrze spasowane.", "Jakość wykonania naprawdę wysoka."],
                    "neg": ["Plastik jest tandetny i trzeszczy.", "Po trzech tygodniach coś się ułamało."]},
        "shipping": {"pos": ["Przesyłka dotarła następnego dnia, dobrze zapakowana.", "Szybka dostawa, wszystko w porządku."],
                     "neg": ["Dostawa trwała prawie dwa tygodnie.", "Paczka przyszła zgnieciona."]},
        "price": {"pos": ["Za tę cenę to świetna okazja.", "Stosunek jakości do ceny bardzo dobry."],
                  "neg": ["Zdecydowanie za drogie jak na to, co oferuje.", "Za taką cenę oczekiwałem znacznie więcej."]},
        "battery": {"pos": ["Bateria trzyma kilka dni.", "Czas pracy na baterii jest imponujący."],
                    "neg": ["Bateria rozładowuje się po kilku godzinach.",
                            "Czas pracy na baterii jest dużo krótszy niż deklarowany."]},
        "sound": {"pos": ["Dźwięk jest czysty, a bas mocny.", "Jakość dźwięku bardzo mnie zaskoczyła."],
                  "neg": ["Dźwięk jest płaski i zniekształca się przy głośnym słuchaniu.", "Basu praktycznie nie ma."]},
        "connectivity": {"pos": ["Parowanie trwa kilka sekund, połączenie jest stabilne.",
                                 "Aplikacja jest prosta i działa bez zarzutu."],
                         "neg": ["Połączenie Bluetooth ciągle się zrywa.", "Aplikacja co drugi raz nie widzi urządzenia."]},
        "close": {"pos": ["Polecam!", "Kupiłbym ponownie.", "Warto kupić."],
                  "neg": ["Odesłałem.", "Omijać szerokim łukiem.", "Nigdy więcej."],
                  "mixed": ["Zobaczymy, czy aktualizacja coś zmieni.", "Szału nie ma."]},
    },
    "ja": {
        "join": "", "but": "ただ、", "lower_after_but": False,
        "open": {"pos": ["とても良い製品です。", "買ってよかったです。", "期待以上でした。"],
                 "neg": ["残念な製品でした。", "買わない方がいいです。", "お金の無駄でした。"],
                 "mixed": ["良い点も悪い点もあります。", "値段なりだと思います。"]},
        "quality": {"pos": ["作りがしっかりしていて高級感があります。", "質感が良く、丈夫そうです。"],
                    "neg": ["プラスチックが安っぽく、きしむ音がします。", "三週間で部品が壊れました。"]},
        "shipping": {"pos": ["注文の翌日に届きました。梱包も丁寧でした。", "配送がとても早くて助かりました。"],
                     "neg": ["届くまでに二週間近くかかりました。", "箱が潰れた状態で届きました。"]},
        "price": {"pos": ["この価格でこの性能なら大満足です。", "コスパは最高です。"],
                  "neg": ["この値段にしては物足りないです。", "値段が高すぎると思います。"]},
        "battery": {"pos": ["バッテリーの持ちがとても良いです。", "一週間に一度の充電で十分です。"],
                    "neg": ["バッテリーが数時間で切れてしまいます。", "公称値よりバッテリーの持ちがかなり短いです。"]},
        "sound": {"pos": ["音質はクリアで、低音もしっかり出ています。", "この価格帯とは思えない音の良さです。"],
                  "neg": ["音がこもっていて、音量を上げると割れます。", "低音がほとんど聞こえません。"]},
        "connectivity": {"pos": ["ペアリングは一瞬で、接続も安定しています。", "アプリも使いやすく、設定は簡単でした。"],
                         "neg": ["Bluetoothの接続がすぐに切れます。", "アプリがデバイスを認識しないことがよくあります。"]},
        "close": {"pos": ["おすすめです。", "リピートしたいです。", "大満足です。"],
                  "neg": ["返品しました。", "おすすめしません。", "二度と買いません。"],
                  "mixed": ["アップデートで改善されることを期待します。", "まあまあです。"]},
    },
}
LANG_WEIGHTS = {"en": 68, "de": 9, "fr": 5, "es": 5, "it": 3, "nl": 3, "pl": 3, "ja": 4}
RATING_WEIGHTS = {1: 13, 2: 9, 3: 14, 4: 26, 5: 38}

# --------------------------------------------------------------------------------------------
# Hand-picked rows: (product, rating, language, text).
# --------------------------------------------------------------------------------------------

SARCASTIC = [
    ("Volt 65W USB-C Charger", 1, "en",
     "Great charger if you enjoy your laptop battery going DOWN while it's plugged in. Truly innovative."),
    ("Aurora Wireless Headphones", 2, "en",
     "10/10 would enjoy re-pairing my headphones every single morning again. Who needs coffee when you have "
     "a Bluetooth menu to wake you up?"),
    ("Lumen Smart Bulb 4-Pack", 1, "en",
     'The "smart" bulbs are smart enough to forget my Wi-Fi every time the router reboots. Genius.'),
    ("Pulse Fitness Tracker", 2, "en",
     "Finally, a fitness tracker that counts steps while I'm sitting on the couch. Very motivating, "
     "I've never been this active."),
    ("Strata Portable SSD 1TB", 1, "en",
     "Amazing SSD. Doubles as a hand warmer, and the data loss was a free bonus."),
    ("Orbit 4K Webcam", 2, "en",
     "Fantastic \"4K\" webcam. My colleagues now know exactly what I'd look like as an impressionist painting."),
    ("Nimbus Bluetooth Speaker", 1, "en",
     "Waterproof, they said. Well, it certainly doesn't make any sound underwater now. Or anywhere else."),
    ("Halo True Wireless Earbuds", 5, "en",
     "Oh sure, five stars. Who needs a left earbud anyway? Mono is the future."),
    ("Quill Mechanical Keyboard", 2, "en",
     "Love the new feature where the space bar sounds like a bag of marbles. Nobody at the office can "
     "ignore me now."),
    ("Aurora Wireless Headphones", 1, "de",
     "Ganz toll, die Geräuschunterdrückung unterdrückt vor allem die Musik. Genau dafür habe ich 130 € bezahlt."),
    ("Volt 65W USB-C Charger", 2, "fr",
     "Génial, un chargeur « rapide » qui met quatre heures à charger mon téléphone. Merci pour la patience "
     "que ça m'apprend."),
]

MISMATCHED = [  # the star rating contradicts the text, or the language label is wrong
    ("Halo True Wireless Earbuds", 5, "en",
     "Left earbud stopped charging after 9 days. Support wants me to pay for shipping to send it back. "
     "Clicked 5 stars by mistake, this is a 1 star review."),
    ("Volt 65W USB-C Charger", 1, "en",
     "Honestly a great charger, charges my laptop and phone at the same time without getting hot. One star "
     "because the delivery was three days late, but the product itself is perfect."),
    ("Nimbus Bluetooth Speaker", 4, "en",
     "Muy buen altavoz, suena fuerte y la batería dura todo el fin de semana. Lo único, el cable de carga es "
     "muy corto."),
]

# Exact duplicate texts. Most repeat on the same product (identical LLM requests, asked once);
# "Does exactly what it says on the box." is spread over products (different requests).
HALO, VOLT, AURORA, NIMBUS = (
    "Halo True Wireless Earbuds", "Volt 65W USB-C Charger", "Aurora Wireless Headphones", "Nimbus Bluetooth Speaker",
)
DUPLICATES = [  # (text, rating, language, one product per row)
    ("Great product, works as expected.", 5, "en", [HALO, HALO, HALO, VOLT]),
    ("Does exactly what it says on the box.", 5, "en", [VOLT, "Strata Portable SSD 1TB", "Orbit 4K Webcam"]),
    ("Stopped working after two weeks. Returned it.", 1, "en", [HALO, HALO, NIMBUS]),
    ("Good value for money.", 4, "en", [VOLT, VOLT]),
    ("Sehr zufrieden, gerne wieder!", 5, "de", [AURORA, AURORA]),
    ("Parfait, rien à redire.", 5, "fr", [NIMBUS, NIMBUS]),
]

EMPTY = [("", 5, "en"), ("", 4, "en"), ("   ", 3, "en"), ("\n", 5, "de"), ("", 1, "en")]

LONG_DE = (
    "Ich schreibe normalerweise keine Rezensionen, aber hier mache ich eine Ausnahme, weil mir die vielen "
    "Fünf-Sterne-Bewertungen ehrlich gesagt etwas zu euphorisch vorkommen.\n\n"
    "Zum Klang: Im Auslieferungszustand sind die Kopfhörer sehr basslastig. Mit dem Equalizer in der App lässt "
    "sich das aber gut korrigieren, danach klingen sie ausgewogen und detailreich. Stimmen sind klar, "
    "Streicher klingen natürlich. Für 130 € bin ich klanglich wirklich zufrieden.\n\n"
    "Zur Geräuschunterdrückung: Im Zug und im Großraumbüro funktioniert sie ordentlich, tiefe Frequenzen "
    "werden gut geschluckt. Bei Wind draußen entsteht allerdings ein unangenehmes Rauschen, und in ruhiger "
    "Umgebung hört man ein leises Zischen. Ein Sony-Kopfhörer ist hier spürbar besser, kostet aber auch "
    "fast das Doppelte.\n\n"
    "Zum Akku: Die angegebenen 40 Stunden erreiche ich mit ANC nicht, eher 28 bis 30. Das reicht mir für "
    "eine Arbeitswoche, ist aber eben nicht das, was auf der Verpackung steht.\n\n"
    "Zur Verbindung: Multipoint mit Laptop und Handy klappt meistens, aber etwa einmal am Tag hängt sich die "
    "Verbindung auf und ich muss die Kopfhörer aus- und wieder einschalten. Nervig, wenn man gerade in einer "
    "Videokonferenz sitzt.\n\n"
    "Zum Tragekomfort: Die Polster sind weich, nach zwei Stunden wird es aber warm an den Ohren. Brillenträger "
    "spüren nach einer Weile den Druck.\n\n"
    "Versand und Verpackung waren tadellos, die Lieferung kam nach zwei Tagen.\n\n"
    "Fazit: Gute Kopfhörer mit ein paar Kinderkrankheiten. Wenn ein Firmware-Update die Verbindungsprobleme "
    "behebt, gebe ich gerne einen Stern mehr. Bis dahin: drei Sterne."
)

EN_LONG_INTROS = [
    "I don't usually write reviews, but I've used the {product} every day for about {weeks} weeks and I think "
    "it deserves a proper write-up, because the short reviews here don't tell the whole story.",
    "Long review incoming, sorry. I bought the {product} to replace a {competitor} that finally died after "
    "four years, so that's my point of comparison for everything below.",
    "Some context first: I work from home, I'm on calls most of the day, and I'm fairly picky about gear. I "
    "researched for weeks before ordering the {product}, and here is what I found after a month.",
    "Bought the {product} in the January sale for €{sale}. Here's my honest take after {weeks} weeks, split "
    "into sections so you can skip to what matters to you.",
]
EN_LONG_UPDATES = {
    "pos": ["Update after {weeks} more weeks: still going strong, no issues at all, and I've since bought a second "
            "one as a gift.",
            "Update: a firmware update last week fixed the one small annoyance I had, so I'm even happier now."],
    "neg": ["Update after {weeks} more weeks: it has got worse, not better. I've contacted support twice and am "
            "still waiting for a real answer.",
            "Update: the replacement unit has exactly the same problem, so it's clearly not just a bad batch."],
}
EN_LONG_VERDICTS = {
    1: "Bottom line: I can't recommend it to anyone. One star, and that's generous.",
    2: "Bottom line: there are good ideas here, but too many rough edges. Two stars.",
    3: "Bottom line: decent, but not the no-brainer the marketing suggests. Three stars, could be four after an "
       "update.",
    4: "Bottom line: a very good product with a couple of flaws that are easy to live with. Four stars.",
    5: "Bottom line: genuinely impressed, this is the best thing I've bought in a long time. Five stars.",
}
EN_LONG_EXTRAS = [
    "A note on the packaging: it's mostly cardboard, no plastic blister, and everything fits back in the box "
    "if you need to return it. Small thing, but I appreciate it.",
    "For what it's worth, I'm not affiliated with the shop or the brand, and I paid full price. I've tried to "
    'be fair and mention both the good and the bad, because reviews that only say "great product!" are pretty '
    "useless when you're trying to decide.",
    "I'll try to remember to update this review in a few months.",
    "Context for the numbers above: I mostly use it at home and in the office, and occasionally on trains, so "
    "your experience may differ if you travel a lot.",
    "I've used it with my work laptop, a three-year-old Android phone and an iPad, and had no compatibility "
    "problems with any of them.",
]
ASPECT_TITLES = {"sound": "Sound", "battery": "Battery", "connectivity": "Connectivity", "comfort": "Comfort",
                 "fit": "Fit", "durability": "Durability", "charging": "Charging speed", "heat": "Heat",
                 "build": "Build quality", "tracking": "Tracking", "app": "App", "strap": "Strap",
                 "image": "Image quality", "mic": "Microphone", "setup": "Setup", "typing": "Typing feel",
                 "software": "Software", "light": "Light quality", "speed": "Speed", "shipping": "Shipping",
                 "price": "Price", "support": "Support"}
LONG_EN = [("Aurora Wireless Headphones", 4), ("Orbit 4K Webcam", 2), ("Quill Mechanical Keyboard", 5),
           ("Pulse Fitness Tracker", 1)]
# fmt: on


class Writer:
    """Composes review texts from the pools above with one seeded random generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def slots(self, product: Product) -> dict[str, object]:
        rng = self.rng
        return {
            "product": product.name,
            "competitor": rng.choice(product.competitors),
            "price": f"{product.price:.2f}",
            "sale": f"{product.price * 0.8:.2f}",
            "fast_days": rng.randint(2, 3),
            "slow_days": rng.randint(9, 21),
            "weeks": rng.randint(2, 8),
            "hours": rng.randint(25, 45),
            "short_hours": rng.randint(2, 4),
            "minutes": rng.choice([30, 40, 45]),
        }

    def en_pool(self, product: Product, aspect: str, polarity: str) -> list[str]:
        if aspect in EN_COMMON:
            return EN_COMMON[aspect][polarity]
        return EN_ASPECTS[product.kind][aspect][polarity]

    def en_aspects(self, product: Product, k: int) -> list[str]:
        """k distinct aspects; product aspects are far more common than shipping, price or support."""
        own = list(EN_ASPECTS[product.kind])
        chosen: list[str] = []
        while len(chosen) < k:
            pool = own if self.rng.random() < 0.75 else list(EN_COMMON)
            aspect = self.rng.choice(pool)
            if aspect not in chosen:
                chosen.append(aspect)
        return chosen

    def english(self, product: Product, sentiment: str, rating: int) -> str:
        rng = self.rng
        if sentiment == "neutral":
            parts = rng.sample(EN_NEUTRAL, rng.choice([1, 1, 2]))
            return " ".join(parts).format(**self.slots(product))
        if sentiment == "mixed":
            good, bad = self.en_aspects(product, 2)
            pos = rng.choice(self.en_pool(product, good, "pos"))
            neg = rng.choice(self.en_pool(product, bad, "neg"))
            if rng.random() < 0.3:
                text = f"Pros:\n- {pos}\n\nCons:\n- {neg}"
                if rng.random() < 0.5:
                    text += "\n\n" + rng.choice(EN_CLOSERS["mixed"])
            else:
                parts = [rng.choice(EN_OPENERS["mixed"])] if rng.random() < 0.6 else []
                if neg.startswith(("I ", "I'")):
                    neg = "But " + neg
                else:
                    connector = rng.choice(["But", "However,", "On the other hand,", "Unfortunately,"])
                    neg = f"{connector} {neg[0].lower()}{neg[1:]}"
                parts += [pos, neg]
                if rng.random() < 0.2:
                    parts.append(rng.choice(EN_COMPETITOR["mixed"]))
                if rng.random() < 0.5:
                    parts.append(rng.choice(EN_CLOSERS["mixed"]))
                text = " ".join(parts)
            return text.format(**self.slots(product))
        polarity = "pos" if sentiment == "positive" else "neg"
        aspects = self.en_aspects(product, rng.choice([1, 2, 2, 3]))
        body = [rng.choice(self.en_pool(product, a, polarity)) for a in aspects]
        if rng.random() < 0.15:
            body.append(rng.choice(EN_COMPETITOR[polarity]))
        if polarity == "pos" and rating == 4 and rng.random() < 0.5:
            bad = rng.choice([a for a in EN_ASPECTS[product.kind] if a not in aspects] or ["price"])
            gripe = rng.choice(self.en_pool(product, bad, "neg"))
            body.append(
                "One minor gripe: "
                + (gripe if gripe.startswith(("I ", "I'")) else gripe[0].lower() + gripe[1:])
            )
        opener = rng.choice(EN_OPENERS[polarity]) if rng.random() < 0.7 else None
        closer = rng.choice(EN_CLOSERS[polarity]) if rng.random() < 0.5 else None
        if opener and rng.random() < 0.25:  # a title-like first line
            text = opener + "\n" + " ".join(body + ([closer] if closer else []))
        elif len(body) >= 3 and rng.random() < 0.5:  # two paragraphs
            text = (
                " ".join(([opener] if opener else []) + body[:2])
                + "\n\n"
                + " ".join(body[2:] + ([closer] if closer else []))
            )
        else:
            text = " ".join(([opener] if opener else []) + body + ([closer] if closer else []))
        text = text.format(**self.slots(product))
        if len(text) < 90 and rng.random() < 0.25:  # the occasional lazy lowercase review
            text = text.lower().rstrip(".")
        return text

    def foreign(self, product: Product, lang: str, sentiment: str, rating: int) -> str:
        rng = self.rng
        pools = LANGS[lang]
        join = str(pools["join"])
        aspects = [*product.generic_aspects, "shipping", "price"]
        aspects = list(dict.fromkeys(aspects))

        def pick(aspect: str, polarity: str) -> str:
            return str(rng.choice(pools[aspect][polarity]))

        if sentiment == "neutral":  # no neutral pools: short praise or a mild mixed review instead
            sentiment = "positive" if rating >= 4 else "mixed"
        if sentiment == "mixed":
            good, bad = rng.sample(aspects, 2)
            neg = pick(bad, "neg")
            if pools["lower_after_but"]:
                neg = neg[0].lower() + neg[1:]
            parts = [pick("open", "mixed")] if rng.random() < 0.5 else []
            parts += [pick(good, "pos"), str(pools["but"]) + neg]
            if rng.random() < 0.5:
                parts.append(pick("close", "mixed"))
            return join.join(parts)
        polarity = "pos" if sentiment == "positive" else "neg"
        body = [pick(a, polarity) for a in rng.sample(aspects, rng.choice([1, 2, 2]))]
        parts = ([pick("open", polarity)] if rng.random() < 0.7 else []) + body
        if rng.random() < 0.6:
            parts.append(pick("close", polarity))
        return join.join(parts)

    def long_english(self, product: Product, rating: int) -> str:
        """A sectioned review of 1,500+ characters whose sections agree with the rating."""
        rng = self.rng
        slots = self.slots(product)
        aspects = [*EN_ASPECTS[product.kind], "shipping", "price", "support"]
        n_good = round(len(aspects) * {1: 0.0, 2: 0.25, 3: 0.5, 4: 0.75, 5: 1.0}[rating])
        good = set(rng.sample(aspects, n_good))
        paragraphs = [rng.choice(EN_LONG_INTROS)]
        for aspect in aspects:
            pool = self.en_pool(product, aspect, "pos" if aspect in good else "neg")
            paragraphs.append(f"{ASPECT_TITLES[aspect]}: " + " ".join(rng.sample(pool, min(2, len(pool)))))
        comp = "pos" if rating >= 4 else "neg" if rating <= 2 else "mixed"
        paragraphs.append(rng.choice(EN_COMPETITOR[comp]))
        paragraphs.append(rng.choice(EN_LONG_UPDATES["pos" if rating >= 4 else "neg"]))
        extras = iter(rng.sample(EN_LONG_EXTRAS, len(EN_LONG_EXTRAS)))
        while len("\n\n".join([*paragraphs, EN_LONG_VERDICTS[rating]]).format(**slots)) < 1500:
            paragraphs.append(next(extras))
        paragraphs.append(EN_LONG_VERDICTS[rating])
        return "\n\n".join(paragraphs).format(**slots)


def sentiment_for(rating: int, rng: random.Random) -> str:
    table = {
        5: [("positive", 92), ("neutral", 8)],
        4: [("positive", 70), ("mixed", 22), ("neutral", 8)],
        3: [("mixed", 70), ("neutral", 30)],
        2: [("negative", 60), ("mixed", 40)],
        1: [("negative", 100)],
    }[rating]
    return rng.choices([s for s, _ in table], [w for _, w in table])[0]


def generate() -> list[dict[str, object]]:
    rng = random.Random(SEED)
    writer = Writer(rng)
    rows: list[tuple[str, int, str, str]] = []  # product, rating, language, text

    rows += SARCASTIC + MISMATCHED
    for text, rating, lang, names in DUPLICATES:
        rows += [(name, rating, lang, text) for name in names]
    for text, rating, lang in EMPTY:
        rows.append((rng.choice(PRODUCTS).name, rating, lang, text))
    rows.append(("Aurora Wireless Headphones", 3, "de", LONG_DE))
    for name, rating in LONG_EN:
        rows.append((name, rating, "en", writer.long_english(BY_NAME[name], rating)))

    seen = {text for _, _, _, text in rows}
    products, weights = PRODUCTS, [p.weight for p in PRODUCTS]
    while len(rows) < N_REVIEWS:
        product = rng.choices(products, weights)[0]
        rating = rng.choices(list(RATING_WEIGHTS), list(RATING_WEIGHTS.values()))[0]
        lang = rng.choices(list(LANG_WEIGHTS), list(LANG_WEIGHTS.values()))[0]
        sentiment = sentiment_for(rating, rng)
        if lang == "en":
            text = writer.english(product, sentiment, rating)
        else:
            text = writer.foreign(product, lang, sentiment, rating)
        if text in seen:  # only the DUPLICATES rows share a text
            continue
        seen.add(text)
        rows.append((product.name, rating, lang, text))

    rng.shuffle(rows)
    span = (LAST_DAY - FIRST_DAY).days
    dates = sorted(FIRST_DAY + dt.timedelta(days=rng.randint(0, span)) for _ in rows)
    return [
        {
            "review_id": i,
            "product": product,
            "rating": rating,
            "language": lang,
            "review_text": text,
            "created_at": day.isoformat(),
        }
        for i, ((product, rating, lang, text), day) in enumerate(zip(rows, dates, strict=True), start=1)
    ]


def main() -> None:
    rows = generate()
    with OUT.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} reviews to {OUT}")


if __name__ == "__main__":
    main()
