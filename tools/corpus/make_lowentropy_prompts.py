#!/usr/bin/env python3
"""Writes data/lowentropy/prompts.txt: 200 prompts whose continuations the bundled model finds
predictable (docs/EVAL.md, "Low-entropy prompts"), one a line, in four groups:

  120 King James verse openings (the first 8 words of every 259th verse, Genesis 1:1 on), from
      Debian's bible-kjv (`bible`), the same text the model was trained on;
   30 counting sequences (digits, words and Roman numerals, several starts and steps);
   25 lists (days, months, letters, ordinals, planets) from several starting points;
   25 formulas of the training texts (scripture and State of the Union openings).

    python3 tools/corpus/make_lowentropy_prompts.py > data/lowentropy/prompts.txt
Deterministic: the same output on every run.
"""
import re
import subprocess
import sys

WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
            "tenth"]
PLANETS = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]
FORMULAS = [
    "And the evening and the morning were the",
    "And God said, Let there be",
    "And the LORD spake unto Moses, saying,",
    "Thus saith the LORD God of Israel,",
    "And it came to pass, when",
    "Verily, verily, I say unto",
    "Blessed are the poor in spirit: for",
    "In the beginning God created the",
    "The LORD is my shepherd; I shall",
    "Our Father which art in heaven, Hallowed be",
    "And he said unto them, He that hath ears to",
    "Hear, O Israel: The LORD our God is",
    "For God so loved the world, that he",
    "Now the rest of the acts of",
    "and he reigned in his stead. And",
    "Grace be unto you, and peace, from God our",
    "And these are the generations of",
    "Fellow-Citizens of the Senate and House of",
    "To the Senate and House of Representatives of the",
    "Gentlemen of the Senate and Gentlemen of the House of",
    "Mr. Speaker, Mr. Vice President, members of",
    "I have the honor to transmit herewith the",
    "It is a truth universally acknowledged, that a single man in",
    "Call me Ishmael. Some years ago--never mind how",
    "And the word of the LORD came unto me, saying,",
]


def verses():
    out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], check=True, capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        m = re.match(r"^\S+\d+:\d+ (.*)$", line)
        if m:
            yield m.group(1).strip()


def main():
    lines = []
    all_verses = list(verses())
    assert len(all_verses) > 30000, "bible-kjv gave too few verses"
    for v in all_verses[::259][:120]:
        lines.append(" ".join(v.split()[:8]))
    for start, step in [(1, 1), (5, 1), (10, 1), (21, 1), (2, 2), (3, 3), (5, 5), (10, 10),
                        (100, 100), (1, 2), (12, 1), (50, 10), (7, 7), (1000, 1000), (31, 1)]:
        lines.append(", ".join(str(start + step * i) for i in range(5)) + ",")
    for start in range(12):
        lines.append(", ".join(WORDS[start:start + 4]) + ",")
    roman = ["I", "II", "III", "IV", "V", "VI"]
    for start in range(3):
        lines.append(", ".join(roman[start:start + 4]) + ",")
    for start in range(7):
        lines.append(", ".join(DAYS[(start + i) % 7] for i in range(3)) + ",")
    for start in range(0, 12, 2):
        lines.append(", ".join(MONTHS[(start + i) % 12] for i in range(3)) + ",")
    for start in range(5):
        lines.append(", ".join(chr(ord("A") + start + i) for i in range(4)) + ",")
    for start in range(4):
        lines.append(", ".join(ORDINALS[start:start + 3]) + ",")
    for start in range(3):
        lines.append(", ".join(PLANETS[start:start + 3]) + ",")
    lines += FORMULAS
    assert len(lines) == 200, len(lines)
    sys.stdout.write("".join(l + "\n" for l in lines))


if __name__ == "__main__":
    main()
