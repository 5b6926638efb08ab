// Reconstruction quality: images [B, 3, H, W] in [0, 1] in, one number per image out, computed on the device.
import { loadModule, type Module } from './module';
import { addon, type Placement, type Tensor } from './native';

/** PSNR = 10 log10(1 / MSE) over all pixels and channels (data range 1). */
export const psnr = (a: Tensor, b: Tensor): Promise<number[]> => addon.psnr(a, b);

/** SSIM (Wang et al. 2004) as scikit-image's structural_similarity with gaussian_weights, sigma 1.5, data range 1. */
export const ssim = (a: Tensor, b: Tensor): Promise<number[]> => addon.ssim(a, b);

/**
 * LPIPS (Zhang et al. 2018; VGG, v0.1) through a TorchScript network made by tools/export_lpips.py, whose forward
 * takes two image batches in [-1, 1], as the lpips package does, and returns one distance per image.
 */
export async function lpips(a: Tensor, b: Tensor, net: Module): Promise<number[]> {
  const [x, y] = await Promise.all([a.affine(2, -1), b.affine(2, -1)]);
  const [xs, ys] = await Promise.all([x.to({ dtype: net.dtype }), y.to({ dtype: net.dtype })]);
  const distances = (await net.forward(xs, ys)) as Tensor;
  const wide = await distances.to({ dtype: 'float64' });
  const values = Array.from(await wide.toArray<Float64Array>());
  [x, y, xs, ys, distances, wide].forEach((t) => t.dispose());
  return values;
}

/** Loads an LPIPS network (a TorchScript file from tools/export_lpips.py). */
export const loadLpips = (file: string, placement?: Placement): Promise<Module> => loadModule(file, placement);
