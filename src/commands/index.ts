import type { Command } from './common.js';
import { buildCommand } from './build.js';
import { verifyCommand } from './verify.js';
import { manifestCommand } from './manifest.js';
import { diffCommand } from './diff.js';
import { demoCommand } from './demo.js';

export const COMMANDS: readonly Command[] = [buildCommand, verifyCommand, manifestCommand, diffCommand, demoCommand];
