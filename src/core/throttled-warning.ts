/**
 * A WARN that says "this keeps happening" without a line per occurrence: the first occurrence is
 * logged at once, later ones are counted and summed up in at most one line per interval. A flood of
 * rejected requests must not become a flood of log lines (issue #10).
 */
import type { Logger } from '../log.ts';

export class ThrottledWarning {
  private readonly logger: Logger;
  private readonly message: string;
  private readonly intervalMs: number;
  private readonly now: () => number;
  private lastAt = Number.NEGATIVE_INFINITY;
  private suppressed = 0;

  constructor(logger: Logger, message: string, intervalMs = 60_000, now: () => number = Date.now) {
    this.logger = logger;
    this.message = message;
    this.intervalMs = intervalMs;
    this.now = now;
  }

  /** Notes one occurrence; the fields of the one that gets logged are shown. */
  note(fields: Record<string, unknown> = {}): void {
    const now = this.now();
    if (now - this.lastAt < this.intervalMs) {
      this.suppressed += 1;
      return;
    }
    const more = this.suppressed;
    this.suppressed = 0;
    this.lastAt = now;
    this.logger.warn(this.message, more > 0 ? { ...fields, more_since_last_warning: more } : fields);
  }
}
