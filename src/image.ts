// Images in and out with sharp, from and to files or in-memory bytes (Electron tools hold images in memory): PNG,
// JPEG and WebP (and whatever else libvips reads) in; PNG, JPEG or WebP out; tensors [B, 3, H, W] in [0, 1].
import * as fs from 'fs';
import * as path from 'path';
import type Sharp from 'sharp';

import { failure, optionError, rangeError, typeError } from './errors';
import { writeFileWhole } from './files';
import { addon, type Tensor } from './native';

// Loaded on first use: libvips is three quarters of the installed package, and code that never touches an image (a
// benchmark, a worker that inverts latents) runs without it.
let loadedSharp: typeof Sharp | undefined;
const sharp = ((...args: unknown[]) => Reflect.apply((loadedSharp ??= require('sharp') as typeof Sharp), undefined, args)) as typeof Sharp;

/** 'fill' stretches to a square, as the reference code's resize does; 'cover' crops to the centre square first. */
export type Fit = 'fill' | 'cover';

const smallestSide = 16;

function imageError(file: string, problem: string): Error {
  return failure(`cannot read image ${file}: ${problem}`);
}

export interface ReadOptions {
  /** Resize to size x size; without it the image keeps its own size. */
  size?: number;
  fit?: Fit;
  device?: string;
}

/** An image: the path of a file, or its encoded bytes (a PNG, JPEG or WebP file's contents). */
export type ImageSource = string | Uint8Array;

/** Reads an image (a file, or its bytes) as an RGB tensor [1, 3, H, W] in [0, 1] on `device`. */
export async function readImage(source: ImageSource, options: ReadOptions = {}): Promise<Tensor> {
  const { size, fit = 'fill', device = 'cpu' } = options;
  if (fit !== 'fill' && fit !== 'cover') optionError('fit', `must be 'fill' or 'cover', not ${fit}`);
  const file = typeof source === 'string' ? source : `<${source.byteLength} bytes in memory>`;
  if (typeof source === 'string') {
    const stat = fs.statSync(source, { throwIfNoEntry: false });
    if (stat === undefined) throw imageError(file, 'no such file');
    if (!stat.isFile()) throw imageError(file, 'not a file');
    if (stat.size === 0) throw imageError(file, 'the file is empty');
  } else if (!(source instanceof Uint8Array)) {
    typeError('an image is a file path, a Buffer or a Uint8Array of its encoded bytes');
  } else if (source.byteLength === 0) {
    throw imageError(file, 'it has no bytes');
  }
  let pixels: Buffer;
  let width = 0;
  let height = 0;
  try {
    const image = sharp(source, { failOn: 'truncated' }).rotate(); // EXIF orientation, as the photo is meant to be seen
    ({ width = 0, height = 0 } = await image.metadata());
    if (Math.min(width, height) < smallestSide) {
      throw imageError(file, `it is ${width}x${height} pixels; easyinv needs at least ${smallestSide} on each side`);
    }
    const rgb = image
      .removeAlpha() // as PIL's convert('RGB'): the colour channels, alpha dropped
      .toColourspace('srgb'); // grey becomes RGB
    const { data, info } = await (size === undefined ? rgb : rgb.resize(size, size, { fit, position: 'centre' }))
      .raw()
      .toBuffer({ resolveWithObject: true });
    pixels = data;
    [width, height] = [info.width, info.height];
  } catch (error) {
    if ((error as Error).message.startsWith('easyinv:')) throw error;
    throw imageError(file, `${(error as Error).message} (is it a complete PNG, JPEG or WebP file?)`);
  }
  return imageTensor(pixels, width, height, device);
}

/** Interleaved 8-bit RGB pixels as a tensor [1, 3, H, W] in [0, 1]. */
export function imageTensor(pixels: Uint8Array, width: number, height: number, device = 'cpu'): Tensor {
  const plane = width * height;
  const planes = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) planes[c * plane + i] = pixels[3 * i + c] / 255;
  }
  return addon.Tensor.fromArray(planes, [1, 3, height, width], { device });
}

/** 8-bit quantisation, as saving to PNG does: round(x * 255) / 255, clamped to [0, 1]. */
export async function quantize(images: Tensor): Promise<Tensor> {
  const scaled = await images.affine(255, 0.5);
  const clamped = await scaled.clamp(0, 255.5);
  const bytes = await clamped.to({ dtype: 'uint8' });
  const floats = await bytes.to({ dtype: 'float32' });
  const result = await floats.affine(1 / 255, 0);
  [scaled, clamped, bytes, floats].forEach((t) => t.dispose());
  return result;
}

/** Interleaved RGB bytes of the first image of `images` [B, 3, H, W] in [0, 1]. */
async function rgbBytes(images: Tensor): Promise<{ data: Buffer; width: number; height: number }> {
  const [, channels, height, width] = images.shape;
  if (images.shape.length !== 4 || channels !== 3) {
    rangeError(`an image tensor has shape [B, 3, H, W], not [${images.shape.join(', ')}]`);
  }
  const values = await images.toArray();
  const plane = width * height;
  const data = Buffer.alloc(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) data[3 * i + c] = Math.round(Math.min(1, Math.max(0, values[c * plane + i])) * 255);
  }
  return { data, width, height };
}

export type ImageFormat = 'png' | 'jpeg' | 'webp';
const extensions: Record<string, ImageFormat> = { '.png': 'png', '.jpg': 'jpeg', '.jpeg': 'jpeg', '.webp': 'webp' };

/** The first image of `images` ([B, 3, H, W] in [0, 1]) encoded as PNG (lossless, the default), JPEG or WebP. */
export async function imageBytes(images: Tensor, format: ImageFormat = 'png'): Promise<Buffer> {
  if (!Object.values(extensions).includes(format)) optionError('format', `must be png, jpeg or webp, not ${format}`);
  const { data, width, height } = await rgbBytes(images);
  return sharp(data, { raw: { width, height, channels: 3 } }).toFormat(format, format === 'png' ? {} : { quality: 95 }).toBuffer();
}

/** Writes the first image of `images` ([B, 3, H, W] in [0, 1]) to `file`, in the format its extension names
 * (.png, .jpg/.jpeg, .webp) unless `format` says otherwise. */
export async function writeImage(images: Tensor, file: string, format?: ImageFormat): Promise<void> {
  const chosen = format ?? extensions[path.extname(file).toLowerCase()];
  if (chosen === undefined) {
    rangeError(`cannot tell the image format of ${file} from its extension: use .png, .jpg, .jpeg or .webp, or pass a format`);
  }
  writeFileWhole(file, await imageBytes(images, chosen));
}

/** Several images side by side, `columns` to a row (default all in one), with a caption under each, as a PNG file. */
export async function writeGrid(tiles: { image: Tensor; label: string }[], file: string, columns = tiles.length): Promise<void> {
  const pieces = await Promise.all(tiles.map(({ image }) => rgbBytes(image)));
  const { width, height } = pieces[0];
  const caption = 24, gap = 4;
  const left = (i: number) => (i % columns) * (width + gap);
  const top = (i: number) => Math.floor(i / columns) * (height + caption + gap);
  const composites = await Promise.all(pieces.flatMap(({ data }, i) => [
    sharp(data, { raw: { width, height, channels: 3 } }).png().toBuffer()
      .then((input) => ({ input, left: left(i), top: top(i) })),
    Promise.resolve({
      input: Buffer.from(
        `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${caption}">` +
          `<text x="${width / 2}" y="17" font-family="sans-serif" font-size="14" text-anchor="middle">${escapeXml(tiles[i].label)}</text></svg>`,
      ),
      left: left(i),
      top: top(i) + height,
    }),
  ]));
  const rows = Math.ceil(tiles.length / columns);
  await sharp({
    create: { width: Math.min(columns, tiles.length) * (width + gap) - gap, height: rows * (height + caption + gap) - gap, channels: 3, background: '#ffffff' },
  }).composite(composites).png().toBuffer().then((png) => writeFileWhole(file, png));
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c] as string);
}
