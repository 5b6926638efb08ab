// CLIP's BPE tokenizer (SD-V1-4's and SDXL's text encoders) over @huggingface/tokenizers, read from a tokenizer.json
// such as weights/clip/tokenizer.json (made by test/python/make_tokenizer.py).
import { readFileSync } from 'fs';
import * as path from 'path';
import { Tokenizer } from '@huggingface/tokenizers';
import { failure } from './errors';

/** Length of every id sequence the CLIP text encoder takes. */
export const CONTEXT_LENGTH = 77;
/** `<|endoftext|>`: ends the prompt and, unless the tokenizer.json names another pad token, also pads it. */
export const END_OF_TEXT = 49407;

export interface ClipTokenizer {
  /** Exactly CONTEXT_LENGTH ids: `<|startoftext|>`, the prompt's tokens, `<|endoftext|>`, then padding. */
  encode(text: string): number[];
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** CLIP's BPE vocabulary, shipped once with the package. */
export const CLIP_TOKENIZER_FILE = path.join(__dirname, '..', 'weights', 'clip', 'tokenizer.json');

/**
 * The tokenizers a manifest may name instead of giving a file of the bundle: CLIP's vocabulary with the padding of
 * the text encoder it feeds (the pad id). Such a bundle needs no 1.7 MB tokenizer file of its own.
 */
export const packagedTokenizers: Readonly<Record<string, number>> = {
  'clip-vit-large-patch14': END_OF_TEXT, // SD-V1's text encoder and SDXL's first
  'clip-vit-bigg-14': 0, // SDXL's second (OpenCLIP ViT-bigG/14): pads with "!"
};

/** A bundle's tokenizer: a name from packagedTokenizers, or a tokenizer.json file in the bundle's folder. */
export function bundleTokenizer(dir: string, entry: string): ClipTokenizer {
  return Object.hasOwn(packagedTokenizers, entry)
    ? loadTokenizer(CLIP_TOKENIZER_FILE, packagedTokenizers[entry])
    : loadTokenizer(path.join(dir, entry));
}

/** The tokenizer in `file`; it pads with `padId`, else with the pad token its JSON names, else <|endoftext|>. */
export function loadTokenizer(file: string, padId?: number): ClipTokenizer {
  let source: string;
  try {
    source = readFileSync(file, 'utf8');
  } catch (err) {
    throw failure(`cannot read tokenizer file ${file}: ${message(err)}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(source);
  } catch (err) {
    throw failure(`tokenizer file ${file} is not valid JSON: ${message(err)}`);
  }
  let tokenizer: Tokenizer;
  try {
    // The second argument is tokenizer_config.json, which only matters for decoding and chat templates.
    tokenizer = new Tokenizer(json as object, {});
  } catch (err) {
    throw failure(`tokenizer file ${file} is not a Hugging Face tokenizer.json: ${message(err)}`);
  }
  // SDXL's second tokenizer pads with its own pad token ("!", id 0), which its tokenizer.json records.
  const pad = padId ?? (json as { padding?: { pad_id?: number } | null }).padding?.pad_id ?? END_OF_TEXT;
  return {
    encode(text: string): number[] {
      // The post-processor adds <|startoftext|> and <|endoftext|>; cutting the body rather than the tail keeps
      // <|endoftext|> last, as diffusers' truncation=True does, because the encoder's pooled output is read there.
      const ids = tokenizer.encode(text).ids;
      if (ids.length > CONTEXT_LENGTH) return [...ids.slice(0, CONTEXT_LENGTH - 1), END_OF_TEXT];
      return ids.concat(new Array<number>(CONTEXT_LENGTH - ids.length).fill(pad));
    },
  };
}
