#!/usr/bin/env python3
"""Writes CLIP's tokenizer (the one SD-V1-4's and SDXL's text encoders use) as a Hugging Face tokenizer.json.

It is built from OpenAI CLIP's merges list, bpe_simple_vocab_16e6.txt.gz (MIT licence, see weights/clip/LICENSE):
line 1 is a header, CLIP uses the next 49152-256-2 = 48894 merges. The vocabulary follows from them, in CLIP's order:
the 256 byte-level symbols (GPT-2's bytes_to_unicode values), the same with '</w>' appended, one token per merge (its
two halves joined), then '<|startoftext|>' (49406) and '<|endoftext|>' (49407). The pipeline (normaliser, CLIP's
split regex, byte-level mapping, BPE with end-of-word suffix, start/end tokens) is the one of Hugging Face's
CLIPTokenizerFast, so that @huggingface/tokenizers gives the same ids as openai/CLIP and diffusers.

Standard library only: /usr/bin/python3 test/python/make_tokenizer.py [--merges FILE.gz] [--out tokenizer.json]
"""
import argparse
import gzip
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MERGES = os.path.join(REPO, '..', 'shared', 'data', 'clip', 'bpe_simple_vocab_16e6.txt.gz')
DEFAULT_OUT = os.path.join(REPO, 'weights', 'clip', 'tokenizer.json')
MERGE_COUNT = 49152 - 256 - 2
START, END = '<|startoftext|>', '<|endoftext|>'
CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def byte_symbols():
    """GPT-2's byte-level alphabet in the order of bytes_to_unicode()'s values, which fixes the first 256 ids:
    printable bytes stand for themselves and come first, the others become chr(256 + n) in byte order."""
    printable = [*range(ord('!'), ord('~') + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def read_merges(path):
    with gzip.open(path, 'rt', encoding='utf-8') as f:
        lines = f.read().split('\n')[1:MERGE_COUNT + 1]
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != MERGE_COUNT or any(len(m) != 2 for m in merges):
        raise SystemExit(f'{path}: expected {MERGE_COUNT} merges of two symbols each')
    return merges


def tokenizer_json(merges):
    symbols = byte_symbols()
    tokens = symbols + [s + '</w>' for s in symbols] + [a + b for a, b in merges] + [START, END]
    vocab = {token: i for i, token in enumerate(tokens)}
    assert len(vocab) == 49408 and vocab[START] == 49406 and vocab[END] == 49407

    def special(content):
        return {'id': vocab[content], 'content': content, 'single_word': False, 'lstrip': False, 'rstrip': False,
                'normalized': True, 'special': True}

    return {
        'version': '1.0',
        'truncation': None,
        'padding': None,
        'added_tokens': [special(START), special(END)],
        'normalizer': {'type': 'Sequence', 'normalizers': [
            {'type': 'NFC'},
            {'type': 'Replace', 'pattern': {'Regex': r'\s+'}, 'content': ' '},
            {'type': 'Lowercase'},
        ]},
        'pre_tokenizer': {'type': 'Sequence', 'pretokenizers': [
            {'type': 'Split', 'pattern': {'Regex': CLIP_SPLIT}, 'behavior': 'Removed', 'invert': True},
            {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True, 'use_regex': False},
        ]},
        'post_processor': {'type': 'RobertaProcessing', 'sep': [END, vocab[END]], 'cls': [START, vocab[START]],
                           'trim_offsets': False, 'add_prefix_space': False},
        'decoder': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': True, 'use_regex': True},
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': END, 'continuing_subword_prefix': '',
                  'end_of_word_suffix': '</w>', 'fuse_unk': False, 'byte_fallback': False, 'ignore_merges': False,
                  'vocab': vocab, 'merges': [f'{a} {b}' for a, b in merges]},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--merges', default=DEFAULT_MERGES, help='bpe_simple_vocab_16e6.txt.gz')
    parser.add_argument('--out', default=DEFAULT_OUT, help='tokenizer.json to write')
    args = parser.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w', encoding='utf-8') as f:
        # One entry per line keeps the file diffable; ensure_ascii=False keeps it small.
        json.dump(tokenizer_json(read_merges(args.merges)), f, ensure_ascii=False, indent=1)
        f.write('\n')
    print(f'wrote {args.out} ({os.path.getsize(args.out)} bytes)')


if __name__ == '__main__':
    main()
