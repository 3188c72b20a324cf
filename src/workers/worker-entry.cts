/**
 * The file Piscina starts each codec worker with. Piscina loads a worker file with require()
 * first; where Node's require() of an ES module is on (Node 20.19+), a worker terminated while
 * that require is still evaluating the module graph (a store closed right after it opened, its
 * workers still loading the addon) aborts the whole process inside V8 ("IsGraphAsync must be
 * used on an instantiated module", seen about once in seven runs of the adversarial suite).
 * This CommonJS entry requires nothing: the codec worker (worker.ts, an ES module) is loaded
 * with import(), whose interruption is an ordinary rejection.
 */
import type { CodecTask, WorkerReply } from './tasks.js';

type Handler = (task: CodecTask) => Promise<WorkerReply>;

let handler: Promise<Handler> | undefined;

async function run(task: CodecTask): Promise<WorkerReply> {
  handler ??= import('./worker.js').then((m) => m.default);
  return (await handler)(task);
}

export = run;
