import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { liveTensors, loadLatents, saveLatents, Tensor } from '../src';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'easyinv-latents-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

/** A .safetensors file written byte by byte, as the format describes it, independent of saveLatents. */
function safetensors(header: unknown, data: Buffer = Buffer.alloc(0), headerSize?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(headerSize ?? BigInt(json.length));
  const file = path.join(scratch, `${Math.random().toString(36).slice(2)}.safetensors`);
  fs.writeFileSync(file, Buffer.concat([size, json, data]));
  return file;
}

const floats = (...values: number[]) => Buffer.from(new Float32Array(values).buffer);
const f32 = (shape: number[], data_offsets: unknown) => ({ dtype: 'F32', shape, data_offsets });

describe('loadLatents', () => {
  test('reads a file written to the format\'s rules, whatever the order of its entries', async () => {
    const file = safetensors({ b: f32([2], [8, 16]), __metadata__: { steps: '4' }, a: f32([1, 2], [0, 8]) }, floats(1, 2, 3, 4));
    const { tensors, metadata } = loadLatents(file);
    expect(metadata).toEqual({ steps: '4' });
    expect(tensors.a.shape).toEqual([1, 2]);
    expect(Array.from(await tensors.a.toArray())).toEqual([1, 2]);
    expect(Array.from(await tensors.b.toArray())).toEqual([3, 4]);
  });

  test('reads back what saveLatents wrote', async () => {
    const file = path.join(scratch, 'round.safetensors');
    const latent = Tensor.fromArray([0.5, -1, 2, 3.25, 4, 5], [1, 1, 2, 3]);
    await saveLatents(file, { latent }, { method: 'ddim' });
    const { tensors, metadata } = loadLatents(file);
    expect(metadata).toEqual({ method: 'ddim' });
    expect(tensors.latent.shape).toEqual([1, 1, 2, 3]);
    expect(Array.from(await tensors.latent.toArray())).toEqual([0.5, -1, 2, 3.25, 4, 5]);
  });

  // Each malformed file names its problem, makes no tensor (so none leaks) and never reaches LibTorch.
  const bad: [string, () => string, RegExp][] = [
    ['a missing file', () => path.join(scratch, 'absent.safetensors'), /no such file/],
    ['a folder', () => scratch, /EISDIR|directory/],
    ['a file of 3 bytes', () => { const f = path.join(scratch, 'short'); fs.writeFileSync(f, 'abc'); return f; }, /too short/],
    ['a header size past the end', () => safetensors({}, Buffer.alloc(0), 2n ** 63n), /header is cut short/],
    ['a header that is not JSON', () => safetensors('{"a": '), /header is not JSON/],
    ['a header that is an array', () => safetensors([1, 2]), /header is not a JSON object/],
    ['a header that is null', () => safetensors('null'), /header is not a JSON object/],
    ['metadata of numbers', () => safetensors({ __metadata__: { steps: 4 } }), /__metadata__ is not an object of strings/],
    ['an entry that is a number', () => safetensors({ latent: 5 }), /tensor latent is not an object/],
    ['an F16 tensor', () => safetensors({ latent: { dtype: 'F16', shape: [2], data_offsets: [0, 4] } }, Buffer.alloc(4)), /dtype "F16"; easyinv reads F32/],
    ['a negative size', () => safetensors({ latent: f32([-1], [0, 0]) }), /shape \[-1\]; expected a list of non-negative integers/],
    ['a shape of strings', () => safetensors({ latent: f32(['2'] as never, [0, 8]) }, floats(1, 2)), /expected a list of non-negative integers/],
    ['an overflowing shape', () => safetensors({ latent: f32([2 ** 62, 4], [0, 0]) }), /shape \[4611686018427388000, 4\] has more elements than a tensor can hold/],
    ['sizes whose product wraps int64', () => safetensors({ latent: f32([2 ** 32, 2 ** 32], [0, 0]) }), /has more elements than a tensor can hold/],
    ['offsets past the data', () => safetensors({ latent: f32([2], [0, 8]) }, floats(1)), /data_offsets \[0,8\]; expected \[start, end\] within the 4 data bytes/],
    ['offsets reversed', () => safetensors({ latent: f32([0], [4, 0]) }, floats(1)), /data_offsets \[4,0\]/],
    ['fractional offsets', () => safetensors({ latent: f32([1], [0.5, 4.5]) }, floats(1, 2)), /data_offsets \[0.5,4.5\]/],
    ['offsets missing', () => safetensors({ latent: { dtype: 'F32', shape: [1] } }, floats(1)), /data_offsets undefined/],
    ['bytes that do not match the shape', () => safetensors({ latent: f32([3], [0, 8]) }, floats(1, 2)), /has 8 data bytes but shape \[3\] of F32 needs 12/],
    ['a length that is not a multiple of 4', () => safetensors({ latent: f32([1], [0, 5]) }, Buffer.alloc(5)), /has 5 data bytes but shape \[1\] of F32 needs 4/],
    ['overlapping tensors', () => safetensors({ a: f32([2], [0, 8]), b: f32([2], [4, 12]) }, floats(1, 2, 3)), /tensor b's data starts at byte 4, not 8/],
    ['a gap between tensors', () => safetensors({ a: f32([1], [0, 4]), b: f32([1], [8, 12]) }, floats(1, 2, 3)), /tensor b's data starts at byte 8, not 4/],
    ['trailing bytes', () => safetensors({ a: f32([1], [0, 4]) }, floats(1, 2)), /the tensors cover 4 of its 8 data bytes/],
  ];
  test.each(bad)('%s is a clear error', (_, make, message) => {
    const before = liveTensors();
    expect(() => loadLatents(make())).toThrow(message);
    expect(liveTensors()).toBe(before);
  });

  test('a device that cannot take the tensors is a clear error and leaks nothing', () => {
    const file = safetensors({ a: f32([1], [0, 4]), b: f32([1], [4, 8]) }, floats(1, 2));
    const before = liveTensors();
    expect(() => loadLatents(file, 'gpu')).toThrow(/cannot read latents from .*: tensor a: unknown device 'gpu'/);
    expect(liveTensors()).toBe(before);
  });
});
