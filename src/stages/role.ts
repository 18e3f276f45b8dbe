// The image's role for the boot stages, decided once per run (boot/role.ts)
// from the image's manifest, the portable prefix and --role / --portable.
import { decideRole, roleFacts, type RoleDecision } from '../boot/role.js';
import { imageManifestOf, type StageContext } from './context.js';
import { matchingUnits, portablePrefix } from './portable-names.js';

export async function roleOf(ctx: StageContext): Promise<RoleDecision> {
  if (ctx.role) return ctx.role;
  const manifest = await imageManifestOf(ctx, { hash: false });
  const matching = matchingUnits(manifest, portablePrefix(ctx.imageName)).length;
  ctx.role = decideRole(roleFacts(manifest, matching, ctx.opts.portable), ctx.opts.role);
  return ctx.role;
}
