// Reconstruction quality: images [B, 3, H, W] in [0, 1] in, one number per image out, computed on the device.
import { addon, type Tensor } from './native';

/** PSNR = 10 log10(1 / MSE) over all pixels and channels (data range 1). */
export const psnr = (a: Tensor, b: Tensor): Promise<number[]> => addon.psnr(a, b);

/** SSIM (Wang et al. 2004) as scikit-image's structural_similarity with gaussian_weights, sigma 1.5, data range 1. */
export const ssim = (a: Tensor, b: Tensor): Promise<number[]> => addon.ssim(a, b);
