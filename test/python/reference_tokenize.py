#!/usr/bin/env python3
"""Independent reference for src/tokenizer.ts: CLIP's BPE tokenizer re-implemented from the merges list alone.

It follows openai/CLIP's simple_tokenizer (byte-level symbols, CLIP's split regex, BPE with '</w>' on the last
symbol of each word) without sharing code with test/python/make_tokenizer.py or @huggingface/tokenizers, and writes the
ids of a few prompts to test/fixtures/tokenizer-reference.json for test/tokenizer.test.ts. Text is cleaned like
CLIPTokenizerFast (NFC, whitespace runs to one space, lower case); ftfy and HTML unescaping, which only the Python
CLIP package does, are left out, so the prompts below avoid mojibake and HTML entities. Python's re has no \\p{L},
so the split regex is a hand-written scanner over unicodedata categories.

Standard library only: /usr/bin/python3 test/python/reference_tokenize.py [--merges FILE.gz] [--out FILE.json]
"""
import argparse
import gzip
import json
import os
import re
import unicodedata

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MERGES = os.path.join(REPO, '..', 'shared', 'data', 'clip', 'bpe_simple_vocab_16e6.txt.gz')
DEFAULT_OUT = os.path.join(REPO, 'test', 'fixtures', 'tokenizer-reference.json')
START, END, CONTEXT = '<|startoftext|>', '<|endoftext|>', 77
SPECIALS = (START, END)
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")

PROMPTS = [
    'a photo of a cat',
    '  A PHOTO\tof a\n\nCat  ',
    'an astronaut riding a horse on mars, highly detailed, 8k, trending on artstation!!!',
    '(masterpiece:1.2), best quality, ultra-detailed <lora:style_v2>',
    "it's the dog's toy; don't say you'd've known, we'll see.",
    'photorealistic antidisestablishmentarianism',
    'caf\u00e9 na\u00efve r\u00e9sum\u00e9 se\u00f1or stra\u00dfe',
    'cafe\u0301 (decomposed accent)',
    'a cat <|endoftext|> a dog',
    'price: $1,299.99 -- 50% off!?',
    'the quick brown fox jumps over the lazy dog ' * 12,
]


def byte_table():
    """bytes_to_unicode(): printable bytes map to themselves, the rest to chr(256 + n); dict order is CLIP's."""
    kept = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    table = {b: chr(b) for b in kept}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


def load(merges_path):
    with gzip.open(merges_path, 'rt', encoding='utf-8') as f:
        pairs = [tuple(line.split()) for line in f.read().split('\n')[1:49152 - 256 - 2 + 1]]
    symbols = list(byte_table().values())
    vocab = symbols + [s + '</w>' for s in symbols] + [''.join(p) for p in pairs] + list(SPECIALS)
    return {tok: i for i, tok in enumerate(vocab)}, {p: i for i, p in enumerate(pairs)}


def is_letter(c):
    return unicodedata.category(c).startswith('L')


def is_number(c):
    return unicodedata.category(c).startswith('N')


def split_words(text):
    """CLIP's regex <|startoftext|>|<|endoftext|>|'s|...|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+ as a scanner:
    at each position the first alternative that matches wins, and whitespace matches nothing."""
    words, i = [], 0
    while i < len(text):
        fixed = next((w for w in SPECIALS + CONTRACTIONS if text.startswith(w, i)), None)
        if fixed:
            j = i + len(fixed)
        elif is_letter(text[i]):
            j = i + 1
            while j < len(text) and is_letter(text[j]):
                j += 1
        elif is_number(text[i]):
            j = i + 1
        elif not text[i].isspace():
            j = i + 1
            while j < len(text) and not (text[j].isspace() or is_letter(text[j]) or is_number(text[j])):
                j += 1
        else:
            i += 1
            continue
        words.append(text[i:j])
        i = j
    return words


def bpe(word, ranks):
    """Merges the lowest-ranked adjacent pair everywhere it occurs, until no known pair is left."""
    parts = list(word[:-1]) + [word[-1] + '</w>']
    while len(parts) > 1:
        pair = min(zip(parts, parts[1:]), key=lambda p: ranks.get(p, float('inf')))
        if pair not in ranks:
            break
        merged, k = [], 0
        while k < len(parts):
            if k + 1 < len(parts) and (parts[k], parts[k + 1]) == pair:
                merged.append(parts[k] + parts[k + 1])
                k += 2
            else:
                merged.append(parts[k])
                k += 1
        parts = merged
    return parts


def tokenize(prompt, vocab, ranks, table):
    """Returns (BPE pieces, 77 ids) the way diffusers calls the tokenizer: padding to 77, truncation keeping the end."""
    text = re.sub(r'\s+', ' ', unicodedata.normalize('NFC', prompt)).strip().lower()
    pieces = []
    for word in split_words(text):
        if word in SPECIALS:
            pieces.append(word)
        else:
            pieces += bpe(''.join(table[b] for b in word.encode('utf-8')), ranks)
    body = [vocab[p] for p in pieces][:CONTEXT - 2]
    ids = [vocab[START]] + body + [vocab[END]]
    return pieces, ids + [vocab[END]] * (CONTEXT - len(ids))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--merges', default=DEFAULT_MERGES, help='bpe_simple_vocab_16e6.txt.gz')
    parser.add_argument('--out', default=DEFAULT_OUT, help='JSON file to write')
    args = parser.parse_args()
    vocab, ranks = load(args.merges)
    table = byte_table()
    cases = []
    for prompt in PROMPTS:
        pieces, ids = tokenize(prompt, vocab, ranks, table)
        cases.append({'prompt': prompt, 'pieces': pieces, 'ids': ids})
    with open(args.out, 'w', encoding='utf-8') as f:
        f.write('[\n' + ',\n'.join(json.dumps(c, ensure_ascii=False) for c in cases) + '\n]\n')
    print(f'wrote {args.out} ({len(cases)} prompts)')


if __name__ == '__main__':
    main()
