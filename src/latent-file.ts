// Latents on disk as safetensors (readable from Python with safetensors.torch.load_file), with string metadata.
import * as fs from 'fs';

import { addon, type Tensor } from './native';

export interface LatentFile {
  tensors: Record<string, Tensor>;
  metadata: Record<string, string>;
}

/** Writes tensors (as float32) and metadata to a .safetensors file. */
export async function saveLatents(file: string, tensors: Record<string, Tensor>, metadata: Record<string, string>): Promise<void> {
  const header: Record<string, unknown> = { __metadata__: metadata };
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const [name, tensor] of Object.entries(tensors)) {
    const values = await (await tensor.to({ device: 'cpu', dtype: 'float32' })).toArray();
    const bytes = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
    header[name] = { dtype: 'F32', shape: tensor.shape, data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // the format aligns the data to 8 bytes
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  fs.writeFileSync(file, Buffer.concat([size, Buffer.from(json), ...chunks]));
}

/** Reads a .safetensors file of float32 tensors onto `device`. */
export function loadLatents(file: string, device = 'cpu'): LatentFile {
  const fail = (problem: string): never => {
    throw new Error(`easyinv: cannot read latents from ${file}: ${problem}`);
  };
  if (!fs.existsSync(file)) fail('no such file');
  const data = fs.readFileSync(file);
  if (data.length < 8) fail('the file is too short to be a .safetensors file');
  const size = Number(data.readBigUInt64LE(0));
  if (size > data.length - 8) fail('its header is cut short (is it a .safetensors file?)');
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  try {
    header = JSON.parse(data.subarray(8, 8 + size).toString('utf8'));
  } catch {
    return fail('its header is not JSON (is it a .safetensors file?)');
  }
  const { __metadata__: metadata = {}, ...entries } = header as Record<string, any>;
  const tensors: Record<string, Tensor> = {};
  for (const [name, { dtype, shape, data_offsets: [start, end] }] of Object.entries(entries)) {
    if (dtype !== 'F32') fail(`tensor ${name} has dtype ${dtype}; easyinv writes F32`);
    if (8 + size + end > data.length) fail(`tensor ${name} is cut short`);
    const bytes = data.subarray(8 + size + start, 8 + size + end);
    const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    try {
      tensors[name] = addon.Tensor.fromArray(values, shape, { device });
    } catch (error) {
      Object.values(tensors).forEach((tensor) => tensor.dispose());
      fail(`tensor ${name}: ${(error as Error).message.replace(/^easyinv: /, '')}`);
    }
  }
  return { tensors, metadata };
}
