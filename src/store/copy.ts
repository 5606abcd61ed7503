/**
 * Copies every registration from one store to another (`push-appserver copy-store`), so an operator
 * moves between SQLite and PostgreSQL without devices registering again. Nodes and secrets are kept.
 * It can run again, to catch up with a source that kept serving during an earlier copy:
 * - a node already in the target with the same secret and device key is present; when the source
 *   renewed it since (a later renewedAt) the source's registration replaces the target's, and a
 *   Push 2.0 key the source pinned since (a notification pins one without renewing) is pinned;
 * - a device that registered again with another token has a new node in the source, which removed
 *   the old one (core/registrations.ts); the target still holds the old node for the device, so the
 *   new one is refused there, and replaces it when the source no longer has the old node and the
 *   new one is newer: what the source did;
 * - a registration removed in the source stays in the target.
 */
import type { Registration, Store } from './types.ts';

const PAGE = 1000;
/** Writes made one by one (a page's inserts after its transaction was refused, updates), this many at once. */
const PARALLEL_WRITES = 32;

export interface CopyReport {
  copied: number;
  /** Already in the target (same node, secret and device key) and not older than the source's. */
  present: number;
  /** Older in the target than in the source (renewed, key pinned, or registered again) and brought up to date. */
  updated: number;
  /** One line per registration not copied, naming the node and why. */
  conflicts: string[];
}

interface Write {
  registration: Registration;
  write: () => Promise<unknown>;
}

async function inParallel<T>(items: T[], each: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += PARALLEL_WRITES) await Promise.all(items.slice(i, i + PARALLEL_WRITES).map(each));
}

/**
 * The node under which the target holds the device of `registration` when the source replaced it by
 * `registration`: another node, renewed before it, that the source no longer has (a source that
 * still has it holds it for another device, and that node is a conflict of its own).
 */
async function replacedNode(source: Store, target: Store, registration: Registration): Promise<string | undefined> {
  const there = await target.getByDevice(registration.app, registration.deviceKey);
  if (!there || there.node === registration.node || there.renewedAt >= registration.renewedAt) return undefined;
  return (await source.getByNode(there.node)) === undefined ? there.node : undefined;
}

export async function copyRegistrations(source: Store, target: Store): Promise<CopyReport> {
  const report: CopyReport = { copied: 0, present: 0, updated: 0, conflicts: [] };
  const refused = (registration: Registration, error: unknown): void => {
    report.conflicts.push(`${registration.node}: ${(error as Error).message}`);
  };
  const update = async ({ registration, write }: Write): Promise<void> => {
    try {
      await write();
      report.updated += 1;
    } catch (error) {
      refused(registration, error);
    }
  };
  const insert = async (registration: Registration): Promise<void> => {
    try {
      await target.insert(registration);
      report.copied += 1;
    } catch (error) {
      const replaces = await replacedNode(source, target, registration);
      if (replaces === undefined) refused(registration, error);
      else await update({ registration, write: () => target.insert(registration, replaces) });
    }
  };
  let after: string | undefined;
  for (;;) {
    const page = await source.list({ after, limit: PAGE });
    // Asked in one turn, a page's lookups are a few queries, not one each (store/lookup-batch.ts).
    const existing = await Promise.all(page.map((registration) => target.getByNode(registration.node)));
    const missing: Registration[] = [];
    const renewed: Registration[] = [];
    const pins: Write[] = [];
    for (const [index, registration] of page.entries()) {
      const there = existing[index];
      if (!there) missing.push(registration);
      else if (there.secret !== registration.secret || there.deviceKey !== registration.deviceKey) {
        report.conflicts.push(`${registration.node}: the target has another registration with this node`);
      } else if (registration.renewedAt > there.renewedAt) {
        // The source's registration takes the target's place whole, as a new one is copied: its
        // bookkeeping (push count, last push, last error) too. The target's is what an earlier copy
        // took of the same counters, the source's is where they went on (the old server kept
        // pushing), and the last push counts for expiry. Pushes the target made itself meanwhile
        // would be lost from its counts, which is why the last copy comes before the new server starts.
        renewed.push(registration);
      } else if (registration.push2Key && !there.push2Key) {
        const key = registration.push2Key;
        pins.push({ registration, write: async () => {
          // First key wins, as when the server pins one: the target may have pinned another since.
          if (!(await target.setPush2Key(registration.node, key))) throw new Error('the target pinned another Push 2.0 key for this node, or removed it');
        } });
      } else report.present += 1;
    }
    try {
      await target.insertMany(missing);
      report.copied += missing.length;
    } catch {
      // Something in the page was refused (the target holds the device under the node the source
      // replaced, or gained a conflicting row since the lookups): one by one, so each is replaced
      // or reported and the rest still arrive.
      await inParallel(missing, insert);
    }
    try {
      await target.insertMany(renewed, true);
      report.updated += renewed.length;
    } catch {
      // Refused when the target holds a row's device under another node (changed since the lookups):
      // one by one, so that row is reported and the rest still arrive.
      await inParallel(renewed, (registration) => update({ registration, write: () => target.insertMany([registration], true) }));
    }
    await inParallel(pins, update);
    if (page.length < PAGE) return report;
    after = page[page.length - 1].node;
  }
}
