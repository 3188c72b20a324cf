/**
 * One writing process per store directory. The disk tier keeps its accounting in memory, so a
 * second process writing the same LMDB environment would silently diverge from it (tried: both
 * wrote, and neither saw the other's records). A lock file names the owner (pid and the process
 * start time, so a recycled pid is not mistaken for it); a second opener gets E_LOCKED while the
 * owner lives, and takes the lock over when the owner is gone (killed -9 included), so a crash
 * never blocks a reopen.
 */
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { KvtcError } from '../errors.js';

export const LOCK_FILE = 'kvtc.lock';

interface Owner {
  pid: number;
  /** Process start time (clock ticks since boot, /proc/<pid>/stat field 22); '' where unknown. */
  start: string;
  host: string;
}

/** Start time of a live process, '' when /proc is not readable, undefined when it does not exist. */
function startOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    try {
      process.kill(pid, 0);
      return '';
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EPERM' ? '' : undefined;
    }
  }
}

function alive(o: Owner): boolean {
  if (o.host !== hostname()) return true; // cannot tell: a shared directory is someone else's
  const start = startOf(o.pid);
  if (start === undefined) return false;
  return start === '' || o.start === '' || start === o.start;
}

function readOwner(file: string): Owner | undefined {
  try {
    const o = JSON.parse(readFileSync(file, 'utf8')) as Partial<Owner>;
    if (typeof o.pid === 'number' && typeof o.start === 'string' && typeof o.host === 'string') return o as Owner;
  } catch {
    // unreadable or half-written: treated as stale
  }
  return undefined;
}

/**
 * Takes the directory's lock for this process; returns its release. Throws E_LOCKED when another
 * live process holds it.
 */
export function lockDirectory(dir: string): () => void {
  const file = join(dir, LOCK_FILE);
  const me: Owner = { pid: process.pid, start: startOf(process.pid) ?? '', host: hostname() };
  const body = JSON.stringify(me);
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      writeFileSync(file, body, { flag: 'wx' });
      return () => {
        // Only our own lock is removed (a takeover may have replaced a lock we thought stale).
        if (readOwner(file)?.pid === me.pid) {
          try {
            unlinkSync(file);
          } catch {
            // already gone
          }
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new KvtcError('E_IO', `cannot create the lock file ${file}: ${(err as Error).message}`, { cause: err });
      }
    }
    const owner = readOwner(file);
    if (owner && alive(owner)) {
      throw new KvtcError('E_LOCKED', `store directory ${dir} is in use by process ${owner.pid} on ${owner.host} (lock file ${LOCK_FILE}); one process writes a store directory at a time`);
    }
    // Stale: move it aside atomically (one of several racing openers wins the rename), then retry.
    try {
      renameSync(file, `${file}.stale-${process.pid}`);
      unlinkSync(`${file}.stale-${process.pid}`);
    } catch {
      // another opener took it over first; the next attempt sees its lock
    }
  }
  throw new KvtcError('E_LOCKED', `store directory ${dir}: could not take the lock file ${LOCK_FILE}`);
}
