// What in-process code writes to stderr (log lines, cleanup warnings), kept
// while it still reaches the terminal.

/** Runs `fn` with stderr teed into a string; returns fn's value and what was written. */
export async function withStderr<T>(fn: () => Promise<T>): Promise<{ value: T; text: string }> {
  const chunks: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    chunks.push(String(chunk));
    return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
  try {
    return { value: await fn(), text: chunks.join('') };
  } finally {
    process.stderr.write = write;
  }
}
