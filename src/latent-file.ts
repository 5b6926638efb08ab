// Latents on disk as safetensors (readable from Python with safetensors.torch.load_file), with string metadata.
import * as fs from 'fs';

import { failure } from './errors';
import { writeFileWhole } from './files';
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
  writeFileWhole(file, Buffer.concat([size, Buffer.from(json), ...chunks]));
}

interface Entry {
  name: string;
  shape: number[];
  start: number;
  end: number;
}

/** The tensors a safetensors header describes, checked against the format and the data's length: a problem in a
 * file is named here, before any tensor is made, so a bad file neither leaks nor reaches LibTorch. */
function headerEntries(header: unknown, dataLength: number): { entries: Entry[]; metadata: Record<string, string> } | string {
  if (header === null || typeof header !== 'object' || Array.isArray(header)) return 'its header is not a JSON object';
  const { __metadata__: metadata = {}, ...described } = header as Record<string, unknown>;
  if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata) ||
      !Object.values(metadata).every((v) => typeof v === 'string')) {
    return '__metadata__ is not an object of strings';
  }
  const entries: Entry[] = [];
  for (const [name, value] of Object.entries(described)) {
    const { dtype, shape, data_offsets: offsets } = (value ?? {}) as Record<string, unknown>;
    if (typeof value !== 'object' || value === null) return `tensor ${name} is not an object`;
    if (dtype !== 'F32') return `tensor ${name} has dtype ${JSON.stringify(dtype)}; easyinv reads F32`;
    if (!Array.isArray(shape) || !shape.every((n) => Number.isInteger(n) && n >= 0)) {
      return `tensor ${name} has shape ${JSON.stringify(shape)}; expected a list of non-negative integers`;
    }
    const elements = shape.reduce((product: number, n: number) => product * n, 1);
    if (!Number.isSafeInteger(elements * 4)) return `tensor ${name}: shape [${shape.join(', ')}] has more elements than a tensor can hold`;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((n) => Number.isSafeInteger(n) && n >= 0) ||
        offsets[0] > offsets[1] || offsets[1] > dataLength) {
      return `tensor ${name} has data_offsets ${JSON.stringify(offsets)}; expected [start, end] within the ${dataLength} data bytes`;
    }
    if (offsets[1] - offsets[0] !== elements * 4) {
      return `tensor ${name} has ${offsets[1] - offsets[0]} data bytes but shape [${shape.join(', ')}] of F32 needs ${elements * 4}`;
    }
    entries.push({ name, shape, start: offsets[0], end: offsets[1] });
  }
  // As the format's reference reader: the tensors tile the data exactly, with no gap and no overlap.
  let covered = 0;
  for (const entry of [...entries].sort((a, b) => a.start - b.start || a.end - b.end)) {
    if (entry.start !== covered) return `tensor ${entry.name}'s data starts at byte ${entry.start}, not ${covered} (overlapping or missing data)`;
    covered = entry.end;
  }
  if (covered !== dataLength) return `the tensors cover ${covered} of its ${dataLength} data bytes`;
  return { entries, metadata: metadata as Record<string, string> };
}

/** Reads a .safetensors file of float32 tensors onto `device`. */
export function loadLatents(file: string, device = 'cpu'): LatentFile {
  const fail = (problem: string): never => {
    throw failure(`cannot read latents from ${file}: ${problem}`);
  };
  let data: Buffer;
  try {
    data = fs.readFileSync(file);
  } catch (error) {
    return fail((error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message);
  }
  if (data.length < 8) fail('the file is too short to be a .safetensors file');
  const size = data.readBigUInt64LE(0);
  if (size > BigInt(data.length - 8)) fail('its header is cut short (is it a .safetensors file?)');
  const dataStart = 8 + Number(size);
  let header: unknown;
  try {
    header = JSON.parse(data.subarray(8, dataStart).toString('utf8'));
  } catch {
    return fail('its header is not JSON (is it a .safetensors file?)');
  }
  const described = headerEntries(header, data.length - dataStart);
  if (typeof described === 'string') return fail(described);
  const tensors: Record<string, Tensor> = {};
  for (const { name, shape, start, end } of described.entries) {
    const values = new Float32Array(data.buffer.slice(data.byteOffset + dataStart + start, data.byteOffset + dataStart + end));
    try {
      tensors[name] = addon.Tensor.fromArray(values, shape, { device });
    } catch (error) {
      Object.values(tensors).forEach((tensor) => tensor.dispose());
      fail(`tensor ${name}: ${(error as Error).message.replace(/^easyinv: /, '')}`);
    }
  }
  return { tensors, metadata: described.metadata };
}
