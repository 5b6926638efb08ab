// The records `easyinv compare` writes and summarises.
import type { Stat } from '../statistics';

export type { Stat };

/** One line of results.jsonl: one image, one method, one dtype. */
export interface ResultLine {
  /** The image's path relative to the --images folder. */
  image: string;
  method: string;
  dtype: string;
  steps: number;
  /** null when the run has no LPIPS network. */
  lpips: number | null;
  ssim: number;
  psnr: number;
  invertSeconds: number;
  reconstructSeconds: number;
  unetCalls: number;
  /** Peak bytes on the device during the inversion; null on the CPU. */
  peakMemoryBytes: number | null;
}


export interface MethodRow {
  method: string;
  dtype: string;
  steps: number;
  lpips: Stat | null;
  ssim: Stat;
  psnr: Stat;
  seconds: Stat;
  unetCalls: number;
  peakMemoryBytes: number | null;
}

/** The paper's figures (SD-V1-4, 2,298 COCO images, one RTX 3090), shown beside ours for an SD-V1-4 bundle. */
export interface PaperRow {
  method: string;
  dtype: string;
  lpips: number;
  ssim: number;
  psnr: number;
  seconds: number;
}

export interface Summary {
  model: { name: string; family: string; device: string };
  /** Images that produced results. */
  images: number;
  /** Files that could not be read as images, or failed, with the reason. */
  skipped: { file: string; reason: string }[];
  lpipsNetwork: string | null;
  /** Table 1: per method, at the first dtype of the run. */
  table1: MethodRow[];
  /** Table 2: per method and dtype. */
  table2: MethodRow[];
  /** The paper's figures when the bundle is SD-V1-4, else null. */
  paper: { table1: PaperRow[]; table2: PaperRow[] } | null;
}

/** A per-image picture: the original and each method's reconstruction side by side. */
export interface Grid {
  image: string;
  dtype: string;
  /** Path of the PNG relative to the output folder (grids/...). */
  file: string;
}
