// The one error for an image that cannot be read as the kernel would read it.
import { InputError } from '../errors.js';
import type { Finding } from '../types.js';

/**
 * The image cannot be read the way the kernel would read it: a damaged
 * superblock, group descriptor, inode, extent tree or directory, or a file
 * shorter than its filesystem. Bad input (exit 2); a verification stage
 * turns it into an `unreadable` finding instead (see `finding`).
 */
export class UnreadableImageError extends InputError {
  readonly image: string;
  readonly why: string;
  constructor(image: string, why: string, cause?: unknown) {
    super(`${image} is not a readable ext4 image: ${why}; run part-image verify ${image} for the fsck findings`, undefined, cause);
    this.image = image;
    this.why = why;
  }

  /** The finding a verification stage reports for it. */
  get finding(): Finding {
    return { code: 'unreadable', message: `the image cannot be read as the kernel would read it: ${this.why}` };
  }
}
