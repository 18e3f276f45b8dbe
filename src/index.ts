// The library: everything the CLI does, usable without it.
export * from './types.js';
export * from './errors.js';
export { readInput } from './input/index.js';
export { buildRawImage } from './build/index.js';
export { buildImage, verifyImage } from './pipeline.js';
export { diffManifests } from './manifest/diff.js';
export { serializeManifest, parseManifest } from './manifest/serialize.js';
export { loadManifest } from './source/load.js';
