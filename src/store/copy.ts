/**
 * Copies every registration from one store to another (`push-appserver copy-store`), so an operator
 * moves between SQLite and PostgreSQL without devices registering again. Nodes and secrets are kept;
 * a node already in the target with the same secret counts as present, so a copy can be run again.
 */
import type { Registration, Store } from './types.ts';

const PAGE = 1000;
/** Inserts in flight at once (the target's pool serves them in parallel). */
const PARALLEL = 8;

export interface CopyReport {
  copied: number;
  present: number;
  /** One line per registration not copied, naming the node and why. */
  conflicts: string[];
}

export async function copyRegistrations(source: Store, target: Store): Promise<CopyReport> {
  const report: CopyReport = { copied: 0, present: 0, conflicts: [] };
  const copyOne = async (registration: Registration): Promise<void> => {
    const existing = await target.getByNode(registration.node);
    if (existing) {
      if (existing.secret === registration.secret && existing.deviceKey === registration.deviceKey) report.present += 1;
      else report.conflicts.push(`${registration.node}: the target has another registration with this node`);
      return;
    }
    try {
      await target.insert(registration);
      report.copied += 1;
    } catch (error) {
      report.conflicts.push(`${registration.node}: ${(error as Error).message}`);
    }
  };
  let after: string | undefined;
  for (;;) {
    const page = await source.list({ after, limit: PAGE });
    for (let i = 0; i < page.length; i += PARALLEL) await Promise.all(page.slice(i, i + PARALLEL).map(copyOne));
    if (page.length < PAGE) return report;
    after = page[page.length - 1].node;
  }
}
