/**
 * Real redis-server processes for the remote tier's tests: a single node on a free loopback port
 * with its own temporary directory (no persistence), a 3-master cluster, and a TCP proxy that can
 * slow or stall the traffic in between. `redisServerMissing` says why the tests must skip.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

const SERVER = which('redis-server');
const CLI = which('redis-cli');

/** Why the remote tests cannot run here, or undefined when redis-server and redis-cli are on PATH. */
export const redisServerMissing: string | undefined =
  SERVER === undefined || CLI === undefined
    ? `redis-server${CLI === undefined ? '/redis-cli' : ''} not found on PATH (Debian: apt-get install redis-server; .ci/run installs it)`
    : undefined;

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A free loopback port whose cluster bus port (+10000) is free too. */
async function freePort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const p = 20000 + Math.floor(Math.random() * 30000);
    if ((await portFree(p)) && (await portFree(p + 10000))) return p;
  }
  throw new Error('no free port pair found');
}

/** Runs redis-cli against `port`; its stdout, trimmed. Throws on a non-zero exit. */
export function redisCli(port: number, ...args: string[]): string {
  const r = spawnSync(CLI!, ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${r.stderr || r.stdout}`);
  return r.stdout.trim();
}

/** One redis-server on 127.0.0.1, started by start() and stopped by stop(). */
export class RedisServer {
  readonly port: number;
  readonly dir: string;
  readonly #extra: string[];
  #proc: ChildProcess | undefined;

  private constructor(port: number, dir: string, extra: string[]) {
    this.port = port;
    this.dir = dir;
    this.#extra = extra;
  }

  /** Starts a server on a free port; `extra` are more redis-server arguments (e.g. cluster ones). */
  static async start(extra: string[] = []): Promise<RedisServer> {
    const s = new RedisServer(await freePort(), mkdtempSync(join(tmpdir(), 'kvtc-redis-')), extra);
    try {
      await s.restart();
    } catch (err) {
      await s.stop();
      throw err;
    }
    return s;
  }

  /** The redis:// URL of this server. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Whether the process is running. */
  get running(): boolean {
    return this.#proc !== undefined && this.#proc.exitCode === null && this.#proc.signalCode === null;
  }

  /** (Re)starts the process on the same port and directory and waits until it answers PING. */
  async restart(): Promise<void> {
    if (this.running) throw new Error('already running');
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--daemonize', 'no', ...this.#extra];
    this.#proc = spawn(SERVER!, args, { stdio: 'ignore' });
    for (let i = 0; i < 200; i++) {
      if (!this.running) throw new Error(`redis-server exited (${this.#proc.exitCode ?? this.#proc.signalCode}) on port ${this.port}`);
      // A server with --requirepass answers NOAUTH: it is up all the same.
      const r = spawnSync(CLI!, ['-h', '127.0.0.1', '-p', String(this.port), 'ping'], { encoding: 'utf8' });
      if (/PONG|NOAUTH/.test(`${r.stdout}${r.stderr}`)) return;
      await sleep(25);
    }
    await this.kill();
    throw new Error(`redis-server on port ${this.port} did not answer`);
  }

  /** Stops the process with `signal` and waits for it to exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.#proc;
    if (!p || !this.running) return;
    const exited = new Promise((resolve) => p.once('exit', resolve));
    p.kill(signal);
    await exited;
  }

  /** Kills the process and removes its directory. */
  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A Redis Cluster of `n` masters (no replicas), every slot assigned. */
export class RedisCluster {
  readonly nodes: RedisServer[];

  private constructor(nodes: RedisServer[]) {
    this.nodes = nodes;
  }

  static async start(n = 3): Promise<RedisCluster> {
    const nodes: RedisServer[] = [];
    try {
      for (let i = 0; i < n; i++) {
        nodes.push(await RedisServer.start(['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000']));
      }
      const r = spawnSync(CLI!, ['--cluster', 'create', ...nodes.map((s) => `127.0.0.1:${s.port}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`redis-cli --cluster create: ${r.stderr || r.stdout}`);
      for (let i = 0; i < 400; i++) {
        if (nodes.every((s) => /cluster_state:ok/.test(redisCli(s.port, 'cluster', 'info')))) return new RedisCluster(nodes);
        await sleep(25);
      }
      throw new Error('cluster did not reach cluster_state:ok');
    } catch (err) {
      for (const s of nodes) await s.stop();
      throw err;
    }
  }

  async stop(): Promise<void> {
    for (const s of this.nodes) await s.stop();
  }
}

/**
 * A TCP proxy in front of a server: each piece of data from the client waits `delayMs` before it
 * is passed on (order kept), and pause() holds all of it until resume(): a slow or a stalled server.
 */
export class SlowProxy {
  readonly port: number;
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  delayMs: number;
  #paused = false;
  readonly #waiting: (() => void)[] = [];

  private constructor(server: net.Server, port: number, delayMs: number) {
    this.#server = server;
    this.port = port;
    this.delayMs = delayMs;
  }

  static async start(targetPort: number, delayMs = 0): Promise<SlowProxy> {
    let proxy!: SlowProxy;
    const server = net.createServer((client) => {
      const upstream = net.connect(targetPort, '127.0.0.1');
      proxy.#sockets.add(client).add(upstream);
      let chain = Promise.resolve();
      client.on('data', (d) => {
        chain = chain.then(async () => {
          if (proxy.delayMs > 0) await sleep(proxy.delayMs);
          while (proxy.#paused) await new Promise<void>((r) => proxy.#waiting.push(r));
          if (!upstream.destroyed) upstream.write(d);
        });
      });
      upstream.on('data', (d) => client.destroyed || client.write(d));
      const end = (): void => {
        client.destroy();
        upstream.destroy();
      };
      client.on('close', end).on('error', end);
      upstream.on('close', end).on('error', end);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy = new SlowProxy(server, (server.address() as net.AddressInfo).port, delayMs);
    return proxy;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Holds every byte from clients until resume(). */
  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    for (const w of this.#waiting.splice(0)) w();
  }

  async close(): Promise<void> {
    this.resume();
    for (const s of this.#sockets) s.destroy();
    await new Promise((resolve) => this.#server.close(resolve));
  }
}
