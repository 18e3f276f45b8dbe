// The library: everything the CLI does, usable without it.
export type {
  ContentMap,
  EntryType,
  Finding,
  InputTree,
  Manifest,
  ManifestEntry,
  Report,
  ReportError,
  StageResult,
  StageStatus,
} from './types.js';
export {
  EXIT,
  EnvironmentError,
  InputError,
  InternalError,
  InterruptedError,
  PartImageError,
  ToolError,
  UnreadableImageError,
  UsageError,
  asPartImageError,
  errorKind,
  hostErrorOf,
  type ErrorKind,
} from './errors.js';
export { readInput } from './input/index.js';
export { buildRawImage } from './build/index.js';
export { buildImage, verifyImage } from './pipeline.js';
export { diffManifests } from './manifest/diff.js';
export { serializeManifest, parseManifest } from './manifest/serialize.js';
export { loadManifest } from './source/load.js';
