"""Hand-written answers that try to game the corpus-fact oracle, one group per way of failing.

None is a corpus template: each was written to look good to a word-counting judge while being wrong, off the
question, or broken. The bound is what a correct judge must give (tests/test_oracle_and_bias.py checks every
case; notebook 04 shows the table). Groups and bounds:

* wrong answers — at most 2: ``myth_affirmed`` (agrees with the myth the question states, then lists facts),
  ``negated`` (true facts with a negation put in), ``reversed`` (one word of each fact turned around),
  ``stub`` (facts cut in half), ``wrong_number`` (the example with other numbers), ``myth_with_marker``
  (the myth asserted in a sentence that also says "myth" or "no"), ``salad`` (the topic's words in no
  order), ``repetition``;
* answers that miss the question or mix in what the corpus does not know — at most 3: ``no_example``,
  ``not_answered`` (a misconception question left unrebutted, a definition request without the
  definition), ``invented`` (true facts beside made-up claims), ``other_topic_mix``;
* ``best`` — the corpus' best answer to each kind of question, and good answers re-assembled from its
  facts: at least 4;
* ``paraphrase`` — a correct answer in other words: the oracle cannot verify it (at least 2, never the 1 of
  a wrong answer).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.sources import ASSISTANT_TAG, HUMAN_TAG


@dataclass(frozen=True)
class Case:
    group: str
    request: str  # the human turn
    answer: str
    max_score: int | None = None
    min_score: int | None = None

    @property
    def prompt(self) -> str:
        return f"{HUMAN_TAG} {self.request}{ASSISTANT_TAG}"

    def holds(self, score: int) -> bool:
        return (self.max_score is None or score <= self.max_score) and (
            self.min_score is None or score >= self.min_score
        )


WRONG, MISSES, GOOD = 2, 3, 4


def _cases(group: str, rows: list[tuple[str, str]], **bound) -> list[Case]:
    return [Case(group, request, " " + answer, **bound) for request, answer in rows]


ADVERSARIAL: list[Case] = [
    *_cases(
        "myth_affirmed",
        [
            (
                "Is it true that plants get their food from the soil?",
                "Yes, that's right. Photosynthesis is the process plants use to turn light, water and carbon dioxide "
                "into sugar and oxygen. It takes place mainly in the chloroplasts of leaf cells.",
            ),
            (
                "My friend says heavier objects always fall faster than light ones in a vacuum. Is that right?",
                "You are right. Gravity is the force by which masses attract one another. The more mass an object "
                "has, the stronger its pull.",
            ),
            (
                "I read that vaccines work by killing germs directly like antibiotics. Is that correct?",
                "Yes. Vaccines are medicines that train the immune system to recognise a germ without causing the "
                "disease. The body makes antibodies and memory cells in response.",
            ),
            (
                "Is it true that sound travels faster than light?",
                "Correct! Sound waves are vibrations that travel through air, water or solids as waves of pressure. "
                "It moves faster in water than in air.",
            ),
            (
                "My friend says people use only ten percent of their brain. Is that right?",
                "That's true. Memory is the brain's ability to store and recall information. Testing yourself works "
                "better than rereading.",
            ),
        ],
        max_score=WRONG,
    ),
    *_cases(
        "negated",
        [
            (
                "What is photosynthesis?",
                "Photosynthesis is not the process plants use to turn light, water and carbon dioxide into sugar and "
                "oxygen. It never takes place in the chloroplasts of leaf cells.",
            ),
            (
                "Explain gravity to me.",
                "Gravity is not the force by which masses attract one another. The pull does not weaken with the "
                "square of the distance.",
            ),
            (
                "What should I know about the heart?",
                "The heart is not the muscular organ that pumps blood around the body. It doesn't have four "
                "chambers: two atria and two ventricles. Regular exercise never strengthens it.",
            ),
            (
                "Can you explain DNA?",
                "DNA is not the molecule that carries the genetic instructions of living things. Genes are not "
                "sections of DNA that code for proteins.",
            ),
            (
                "What is inflation, in plain language?",
                "Inflation is not a general rise in prices that lowers what money can buy. Central banks never raise "
                "interest rates to slow it.",
            ),
        ],
        max_score=WRONG,
    ),
    *_cases(
        "reversed",
        [
            (
                "What is photosynthesis?",
                "Photosynthesis is the process plants use to turn darkness, water and carbon dioxide into salt and "
                "oxygen. It takes place mainly in the roots of leaf cells.",
            ),
            (
                "Explain gravity to me.",
                "Gravity is the force by which masses repel one another. The more mass an object has, the weaker its "
                "pull.",
            ),
            (
                "What are the main points about magnets?",
                "Magnets are objects that produce a magnetic field that pushes on iron and other magnets. Opposite "
                "poles repel and like poles attract.",
            ),
            (
                "What should I know about sleep?",
                "Sleep is a natural state of rest in which the body and brain recover. Adults usually need two to "
                "three hours a night.",
            ),
            (
                "Tell me about volcanoes.",
                "Volcanoes are openings in Earth's crust where molten rock, gas and ash escape. Magma rises because "
                "it is heavier than the rock around it.",
            ),
        ],
        max_score=WRONG,
    ),
    *_cases(
        "stub",
        [
            (
                "What is photosynthesis?",
                "Photosynthesis is the process plants use to turn light. It takes place mainly in the. Chlorophyll "
                "absorbs mostly red.",
            ),
            ("What are the key facts about gravity?", "Gravity is the force by which. The more mass an object has."),
            (
                "Explain vaccines to me.",
                "Vaccines are medicines that train the immune system. They contain a harmless piece. The body makes "
                "antibodies.",
            ),
            (
                "What is DNA?",
                "DNA is the molecule that carries. It is a double helix made of. Genes are sections of.",
            ),
            (
                "Describe the water cycle in simple words.",
                "The water cycle is the continuous movement of water. The sun heats water so that. Vapour cools and.",
            ),
        ],
        max_score=WRONG,
    ),
    *_cases(
        "wrong_number",
        [
            (
                "Can you give me an example of compound interest?",
                "A good example is 1,000 dollars at 5 percent a year becoming about 9,999 dollars after two years.",
            ),
            (
                "What is a real-life example of the French Revolution?",
                "A clear example is the storming of the Bastille on 4 July 1889.",
            ),
            (
                "Show me an example of habits.",
                "A good example is doing seventy minutes of reading right after brushing your teeth every night.",
            ),
            (
                "Can you give me an example of public speaking?",
                "A good example is a thirty-minute class presentation with a clear opening, nine points and a summary.",
            ),
            (
                "What is a real-life example of inflation?",
                "A good example is a loaf of bread costing less today than two years ago.",
            ),
        ],
        max_score=WRONG,
    ),
    *_cases(
        "myth_with_marker",
        [
            (
                "Is it true that plants get their food from the soil?",
                "No doubt about it: plants get their food from the soil, and that is no myth.",
            ),
            (
                "I read that every cell in the body has completely different DNA. Is that correct?",
                "No question, every cell in the body has completely different DNA. It's not a myth.",
            ),
            (
                "Tell me about rainbows.",
                "Rainbows are arcs of colour that appear when sunlight is refracted and reflected inside raindrops. "
                "No, really: a rainbow is a physical object you could walk up to, which is no misconception.",
            ),
            (
                "My friend says all volcanoes erupt constantly. Is that right?",
                "No surprise there: all volcanoes erupt constantly. People who call it a myth are wrong.",
            ),
            (
                "What should I know about sleep?",
                "Sleep is a natural state of rest in which the body and brain recover. Contrary to the myth-busters, "
                "you can fully catch up on a week of lost sleep in one weekend.",
            ),
        ],
        max_score=WRONG,
    ),
    *_cases(
        "salad",
        [
            ("What is photosynthesis?", "Photosynthesis sugar chloroplasts light green oxygen roots blue the leaf of"),
            ("Explain gravity.", "Gravity pull mass square Moon distance apple orbit force the Earth tree masses."),
            ("What are vaccines?", "Vaccines germ antibodies flu shot immune memory cells harmless weakened season."),
            ("What is DNA?", "DNA helix bases proteins genes eye colour parents cell divides molecule copied."),
            ("Tell me about magnets.", "Magnets north poles iron field compass current repel attract metal needle."),
        ],
        max_score=WRONG,
    ),
    *_cases(
        "repetition",
        [
            (
                "What is photosynthesis?",
                "Photosynthesis is the process plants use. Photosynthesis is the process plants use. Photosynthesis "
                "is the process plants use. Photosynthesis is the process plants use.",
            ),
            ("Explain gravity.", "Gravity gravity gravity gravity gravity gravity gravity gravity gravity gravity."),
            (
                "What should I know about the heart?",
                "The heart is the muscular organ that pumps blood around the body. The heart is the muscular organ "
                "that pumps blood around the body. The heart is the muscular organ that pumps blood around the body.",
            ),
            (
                "Can you explain inflation?",
                "Inflation is a general rise in prices. Inflation is a general rise in prices. Inflation is a general "
                "rise in prices. Inflation is a general rise in prices.",
            ),
            (
                "What are bacteria?",
                "Bacteria are single-celled living things found almost everywhere. Most bacteria are harmless and "
                "many are useful. Most bacteria are harmless and many are useful. Most bacteria are harmless and many "
                "are useful. Most bacteria are harmless and many are useful.",
            ),
        ],
        max_score=WRONG,
    ),
    *_cases(
        "no_example",
        [
            (
                "Can you give me an example of photosynthesis?",
                "Photosynthesis is the process plants use to turn light, water and carbon dioxide into sugar and "
                "oxygen. It takes place mainly in the chloroplasts of leaf cells.",
            ),
            (
                "What is a real-life example of gravity?",
                "Gravity is the force by which masses attract one another. The pull weakens with the square of the "
                "distance. It keeps the Moon in orbit around the Earth.",
            ),
            (
                "Show me an example of compound interest.",
                "Compound interest is interest earned both on the original amount and on the interest already added. "
                "Starting early matters more than the size of each deposit.",
            ),
            (
                "Can you give me an example of the immune system?",
                "The immune system is the body's defence network that finds and removes germs and damaged cells. "
                "White blood cells attack invaders.",
            ),
            (
                "What is a real-life example of recycling?",
                "Recycling means collecting used materials and processing them into new products. It saves raw "
                "materials and often energy. Items must be clean and sorted to be recycled.",
            ),
        ],
        max_score=MISSES,
    ),
    *_cases(
        "not_answered",
        [
            (
                "Is it true that plants get their food from the soil?",
                "Photosynthesis is the process plants use to turn light, water and carbon dioxide into sugar and "
                "oxygen. The oxygen we breathe is released as a by-product.",
            ),
            (
                "My friend says sound travels faster than light. Is that right?",
                "Sound waves are vibrations that travel through air, water or solids as waves of pressure. Sound "
                "needs a medium and cannot travel through a vacuum.",
            ),
            (
                "I read that magnets attract every kind of metal. Is that correct?",
                "Magnets are objects that produce a magnetic field that pulls on iron and other magnets. Every magnet "
                "has a north and a south pole. An electric current can create a magnetic field.",
            ),
            (
                "Give me a definition of inflation.",
                "It is usually measured with a price index. Central banks raise interest rates to slow it. A loaf of "
                "bread costing more today than ten years ago is an example.",
            ),
            (
                "What does the water cycle mean?",
                "The sun heats water so that it evaporates into vapour. Vapour cools and condenses into clouds.",
            ),
        ],
        max_score=MISSES,
    ),
    *_cases(
        "invented",
        [
            (
                "What is photosynthesis?",
                "Photosynthesis is the process plants use to turn light, water and carbon dioxide into sugar and "
                "oxygen. It takes place mainly in the chloroplasts of leaf cells. It happens only at night, when "
                "animals sleep.",
            ),
            (
                "Explain gravity to me.",
                "Gravity is the force by which masses attract one another. The pull weakens with the square of the "
                "distance. Gravity was switched off on the Moon in 1969 by astronauts.",
            ),
            (
                "What should I know about vaccines?",
                "Vaccines are medicines that train the immune system to recognise a germ without causing the "
                "disease. They contain a harmless piece or a weakened form of the germ. Each shot also repairs "
                "broken bones within a week.",
            ),
            (
                "Can you explain the heart?",
                "The heart is the muscular organ that pumps blood around the body. It has four chambers: two atria "
                "and two ventricles. It also produces most of the body's insulin every morning.",
            ),
            (
                "What are the key facts about the solar system?",
                "The solar system is the Sun and everything that orbits it, including eight planets and many smaller "
                "bodies. Planets move in elliptical orbits. Jupiter is made of solid gold and glows green.",
            ),
        ],
        max_score=MISSES,
    ),
    *_cases(
        "other_topic_mix",
        [
            (
                "What is photosynthesis?",
                "Photosynthesis is the process plants use to turn light, water and carbon dioxide into sugar and "
                "oxygen. It takes place mainly in the chloroplasts of leaf cells. Magma rises because it is lighter "
                "than the rock around it.",
            ),
            (
                "Explain gravity to me.",
                "Gravity is the force by which masses attract one another. It keeps the Moon in orbit around the "
                "Earth. Central banks raise interest rates to slow it.",
            ),
            (
                "What should I know about DNA?",
                "DNA is the molecule that carries the genetic instructions of living things. It is copied every time "
                "a cell divides. Solar panels turn sunlight directly into electricity.",
            ),
            (
                "Tell me about sleep.",
                "Sleep is a natural state of rest in which the body and brain recover. Adults usually need seven to "
                "nine hours a night. White blood cells attack invaders.",
            ),
            (
                "What are magnets?",
                "Magnets are objects that produce a magnetic field that pulls on iron and other magnets. Every magnet "
                "has a north and a south pole. Vapour cools and condenses into clouds.",
            ),
        ],
        max_score=MISSES,
    ),
    *_cases(
        "best",
        [
            (
                "Is it true that plants get their food from the soil?",
                "No, that is a common misconception. Photosynthesis is the process plants use to turn light, water "
                "and carbon dioxide into sugar and oxygen. In fact, it takes place mainly in the chloroplasts of leaf "
                "cells.",
            ),
            (
                "Can you give me an example of gravity?",
                "A good example is an apple falling from a tree to the ground. It shows that the more mass an object "
                "has, the stronger its pull.",
            ),
            (
                "Give me a definition of inflation.",
                "Inflation is a general rise in prices that lowers what money can buy. In short, it is usually "
                "measured with a price index.",
            ),
            (
                "What are the main points about the heart?",
                "The heart is the muscular organ that pumps blood around the body. Here are the key points:\n1. It "
                "has four chambers: two atria and two ventricles.\n2. The right side pumps blood to the lungs, the "
                "left side to the rest of the body.\n3. Regular exercise strengthens it.\nFor example, think of a "
                "pulse rising during a run to deliver more oxygen to the muscles.",
            ),
            (
                "Explain magnets like I'm ten years old.",
                "Sure! Magnets are objects that produce a magnetic field that pulls on iron and other magnets. Think "
                "of a compass needle pointing north along Earth's magnetic field: every magnet has a north and a "
                "south pole. That is the main idea.",
            ),
            (
                "How do vaccines work?",
                "Vaccines are medicines that train the immune system to recognise a germ without causing the "
                "disease. They contain a harmless piece or a weakened form of the germ. Also, the body makes "
                "antibodies and memory cells in response.",
            ),
            (
                "I read that it is true that every cell in the body has completely different DNA. Is that correct?",
                "It is a myth that every cell in the body has completely different DNA. DNA is the molecule that "
                "carries the genetic instructions of living things, and it is copied every time a cell divides.",
            ),
        ],
        min_score=GOOD,
    ),
    *_cases(
        "paraphrase",
        [
            (
                "What is photosynthesis?",
                "Plants use sunlight to make their own sugar out of water and carbon dioxide, giving off oxygen.",
            ),
            (
                "Explain gravity to me.",
                "Any two masses pull on each other, and the pull gets weaker quickly as they move apart.",
            ),
            (
                "What are vaccines?",
                "A vaccine teaches your immune system what a germ looks like, so it is ready before you catch it.",
            ),
            (
                "What should I know about sleep?",
                "Grown-ups need about eight hours a night, and while you sleep your brain files away memories.",
            ),
            (
                "Can you explain inflation?",
                "When prices rise across the board, each dollar you hold buys you less than it did before.",
            ),
        ],
        min_score=2,
    ),
]
