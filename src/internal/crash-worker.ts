/**
 * A Piscina task file that dies like a crashed codec worker (the thread exits mid-task). Used only
 * by the worker-failure tests through src/internal/testing.ts; the production worker has no
 * fault-injection code.
 */
export default function crash(): never {
  process.exit(70);
}
