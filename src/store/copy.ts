/**
 * Copies every registration from one store to another (`push-appserver copy-store`), so an operator
 * moves between SQLite and PostgreSQL without devices registering again. Nodes and secrets are kept;
 * a node already in the target with the same secret counts as present, so a copy can be run again.
 */
import type { Registration, Store } from './types.ts';

const PAGE = 1000;
/** When a page's one transaction is refused, inserts one by one, this many at once. */
const PARALLEL_INSERTS = 32;

export interface CopyReport {
  copied: number;
  present: number;
  /** One line per registration not copied, naming the node and why. */
  conflicts: string[];
}

export async function copyRegistrations(source: Store, target: Store): Promise<CopyReport> {
  const report: CopyReport = { copied: 0, present: 0, conflicts: [] };
  const insert = async (registration: Registration): Promise<void> => {
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
    // Asked in one turn, a page's lookups are a few queries, not one each (store/lookup-batch.ts).
    const existing = await Promise.all(page.map((registration) => target.getByNode(registration.node)));
    const missing: Registration[] = [];
    for (const [index, registration] of page.entries()) {
      const there = existing[index];
      if (!there) missing.push(registration);
      else if (there.secret === registration.secret && there.deviceKey === registration.deviceKey) report.present += 1;
      else report.conflicts.push(`${registration.node}: the target has another registration with this node`);
    }
    try {
      await target.insertMany(missing);
      report.copied += missing.length;
    } catch {
      // Something in the page was refused (the target gained a conflicting row since the lookups):
      // one by one, so the report names it and the rest still arrive.
      for (let i = 0; i < missing.length; i += PARALLEL_INSERTS) await Promise.all(missing.slice(i, i + PARALLEL_INSERTS).map(insert));
    }
    if (page.length < PAGE) return report;
    after = page[page.length - 1].node;
  }
}
