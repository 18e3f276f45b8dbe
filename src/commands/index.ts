import type { Command } from './common.js';
import { buildCommand } from './build.js';
import { verifyCommand } from './verify.js';
import { manifestCommand } from './manifest.js';
import { diffCommand } from './diff.js';
import { demoCommand } from './demo.js';
import { bootCommand } from './boot.js';
import { doctorCommand } from './doctor.js';
import { makeCommand } from './make.js';

export const COMMANDS: readonly Command[] = [
  buildCommand, verifyCommand, manifestCommand, diffCommand, bootCommand, makeCommand, doctorCommand, demoCommand,
];
