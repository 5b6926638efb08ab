// The ES module entry: the CommonJS library (dist/index.js) with its names as named exports, and no default
// or __esModule beside them. test/package.test.ts checks that the two list the same names.
import library from '../dist/index.js';

export const {
  Module, loadModule, Model, loadModel, readManifest, invert, reconstruct, methodNames, edit, editSettings,
  loadLpips, lpips, psnr, ssim, imageBytes, readImage, writeImage, writeGrid,
  quantize, loadLatents, saveLatents, alphaBars, makeSchedule, samplingTimesteps, ddimWeights, Tensor,
  capabilities, nvrtcCheck, setThreads, synchronize, emptyCache, cudaSettings, retainFreedMemory, liveTensors,
  notebookSettings,
} = library;
