import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { bundleTokenizer, ClipTokenizer, CONTEXT_LENGTH, END_OF_TEXT, loadTokenizer } from '../src/tokenizer';

const TOKENIZER_FILE = join(__dirname, '..', 'weights', 'clip', 'tokenizer.json');
const START_OF_TEXT = 49406;

interface ReferenceCase {
  prompt: string;
  pieces: string[];
  ids: number[];
}
// Written by test/python/reference_tokenize.py, a pure-Python CLIP tokenizer that shares no code with the one tested here.
const reference: ReferenceCase[] = JSON.parse(
  readFileSync(join(__dirname, 'fixtures', 'tokenizer-reference.json'), 'utf8'),
);

function referenceCase(prompt: string): ReferenceCase {
  const found = reference.find((c) => c.prompt === prompt);
  if (!found) throw new Error(`no reference for ${JSON.stringify(prompt)}: rerun test/python/reference_tokenize.py`);
  return found;
}

function padded(ids: number[]): number[] {
  return [...ids, ...new Array<number>(CONTEXT_LENGTH - ids.length).fill(END_OF_TEXT)];
}

describe('CLIP tokenizer', () => {
  let tokenizer: ClipTokenizer;
  beforeAll(() => {
    tokenizer = loadTokenizer(TOKENIZER_FILE);
  });

  test('"a photo of a cat" gives CLIP\'s known ids, padded with <|endoftext|> to 77', () => {
    expect(tokenizer.encode('a photo of a cat')).toEqual(padded([49406, 320, 1125, 539, 320, 2368, 49407]));
  });

  test('an empty prompt is just the start and end tokens', () => {
    expect(tokenizer.encode('')).toEqual(padded([START_OF_TEXT, END_OF_TEXT]));
    expect(tokenizer.encode(' \t\n ')).toEqual(padded([START_OF_TEXT, END_OF_TEXT]));
  });

  test('case and extra whitespace do not change the ids', () => {
    const clean = tokenizer.encode('a photo of a cat, highly detailed');
    expect(tokenizer.encode('  A PHOTO\tof a\n\nCat ,  Highly   DETAILED ')).toEqual(clean);
  });

  test('a 200-word prompt is truncated to 77 ids that still end with <|endoftext|>', () => {
    const ids = tokenizer.encode('a photo of a cat '.repeat(40));
    expect(ids).toHaveLength(CONTEXT_LENGTH);
    expect(ids[0]).toBe(START_OF_TEXT);
    expect(ids[CONTEXT_LENGTH - 1]).toBe(END_OF_TEXT);
    expect(ids.slice(1, 6)).toEqual([320, 1125, 539, 320, 2368]);
    expect(ids.slice(1, -1)).not.toContain(END_OF_TEXT);
  });

  test('punctuation, digits and contractions split as in CLIP', () => {
    for (const prompt of [
      '(masterpiece:1.2), best quality, ultra-detailed <lora:style_v2>',
      "it's the dog's toy; don't say you'd've known, we'll see.",
      'price: $1,299.99 -- 50% off!?',
    ]) {
      expect(tokenizer.encode(prompt)).toEqual(referenceCase(prompt).ids);
    }
  });

  test('a long word splits into several BPE pieces', () => {
    const { prompt, pieces, ids } = referenceCase('photorealistic antidisestablishmentarianism');
    expect(pieces.length).toBeGreaterThan(4);
    expect(tokenizer.encode(prompt)).toEqual(ids);
  });

  test.each(reference.map((c) => [JSON.stringify(c.prompt).slice(0, 60), c.prompt, c.ids] as const))(
    'every reference prompt matches: %s',
    (_name, prompt, ids) => {
      expect(ids).toHaveLength(CONTEXT_LENGTH);
      expect(tokenizer.encode(prompt)).toEqual(ids);
    },
  );
});

test('a tokenizer.json with its own pad token (SDXL\'s second tokenizer pads with "!", id 0) pads with it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'easyinv-tokenizer-pad-'));
  const json = JSON.parse(readFileSync(join(__dirname, '..', 'weights', 'clip', 'tokenizer.json'), 'utf8'));
  json.padding = { strategy: { Fixed: 77 }, direction: 'Right', pad_to_multiple_of: null, pad_id: 0, pad_type_id: 0, pad_token: '!' };
  const file = join(dir, 'tokenizer_2.json');
  writeFileSync(file, JSON.stringify(json));
  const ids = loadTokenizer(file).encode('a photo of a cat');
  rmSync(dir, { recursive: true, force: true });
  expect(ids.slice(0, 7)).toEqual([49406, 320, 1125, 539, 320, 2368, 49407]);
  expect(ids.slice(7)).toEqual(new Array(70).fill(0));
});

test('a manifest may name a packaged tokenizer instead of a file: CLIP\'s vocabulary with its encoder\'s padding', () => {
  const empty = mkdtempSync(join(tmpdir(), 'easyinv-tokenizer-named-'));
  const large = bundleTokenizer(empty, 'clip-vit-large-patch14').encode('a photo of a cat');
  const bigG = bundleTokenizer(empty, 'clip-vit-bigg-14').encode('a photo of a cat');
  rmSync(empty, { recursive: true, force: true });
  expect(large).toEqual(loadTokenizer(TOKENIZER_FILE).encode('a photo of a cat'));
  expect(bigG.slice(0, 7)).toEqual(large.slice(0, 7));
  expect(large.slice(7)).toEqual(new Array(70).fill(END_OF_TEXT));
  expect(bigG.slice(7)).toEqual(new Array(70).fill(0));
  expect(() => bundleTokenizer(empty, 'clip-vit-huge')).toThrow(/^easyinv: cannot read tokenizer file .*clip-vit-huge: .*ENOENT/);
});

describe('loadTokenizer errors', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'easyinv-tokenizer-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('a missing file names the file', () => {
    const file = join(dir, 'missing.json');
    expect(() => loadTokenizer(file)).toThrow(/^easyinv: cannot read tokenizer file .*missing\.json: .*ENOENT/);
  });

  test('a file that is not JSON names the file and says so', () => {
    const file = join(dir, 'garbage.json');
    writeFileSync(file, 'this is not json {');
    expect(() => loadTokenizer(file)).toThrow(/^easyinv: tokenizer file .*garbage\.json is not valid JSON: /);
  });

  test('JSON that is not a tokenizer is rejected', () => {
    const file = join(dir, 'other.json');
    writeFileSync(file, '{"hello": "world"}');
    expect(() => loadTokenizer(file)).toThrow(/^easyinv: tokenizer file .*other\.json is not a Hugging Face tokenizer\.json: /);
  });
});
