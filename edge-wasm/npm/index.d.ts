// Types of @distributary/edge-wasm. The class is wasm-bindgen's (see
// distributary_edge_wasm.d.ts); it is declared again here so that the
// optional arguments are optional in TypeScript too.
import type { EdgeReplicaOptions, LazyStats, QueryResult, SqlValue } from './distributary_edge_wasm.js';

export type { EdgeReplicaOptions, LazyStats, QueryResult, SqlValue };

/**
 * A read-only replica of a Distributary store: held in wasm memory (full
 * mode) or read page by page with range requests (lazy mode, `lazy: true`,
 * or by default for a store whose snapshot is over 16 MiB).
 */
export class EdgeReplica {
  private constructor();
  /**
   * Opens a replica of the store at `url` (an http(s) prefix: a CDN, a public
   * bucket, or a presigning proxy) and syncs it once. Rejects with the native
   * reader's message if that first sync fails.
   */
  static open(url: string, options?: EdgeReplicaOptions): Promise<EdgeReplica>;
  /** Applies what is new in the store, verified; resolves to the TXID reached. */
  sync(): Promise<number>;
  /**
   * Runs one read-only statement with positional parameters. A lazy replica
   * answers only from pages already fetched (else it throws: use queryAsync).
   */
  query(sql: string, params?: SqlValue[]): QueryResult;
  /**
   * Runs one read-only statement, fetching the pages it reaches (lazy mode;
   * resolves at once in full mode). Every row is as of one TXID, whatever
   * `sync()` does meanwhile.
   */
  queryAsync(sql: string, params?: SqlValue[]): Promise<QueryResult>;
  /** The database as a SQLite file, byte for byte the primary's at `txid` (full mode). */
  export(): Uint8Array;
  /** `export`, in both modes: a lazy replica fetches every page and checks the database checksum. */
  exportAsync(): Promise<Uint8Array>;
  /** Whether the replica reads pages on demand. */
  readonly lazy: boolean;
  /** Lazy mode: requests made, bytes received and bytes cached (null in full mode). */
  readonly stats: LazyStats | null;
  /** The TXID the replica is at (0 before anything was applied). */
  readonly txid: number;
  /** The generation followed (32 hex digits). */
  readonly generation: string;
  /** The rolling database checksum at `txid`, as the native reader prints it. */
  readonly checksum: string;
  /** The database's size in bytes. */
  readonly size: number;
  /** Releases the wasm memory now rather than at garbage collection. */
  free(): void;
  [Symbol.dispose](): void;
}

/**
 * Instantiates the wasm module from a compiled `WebAssembly.Module` (or its
 * bytes). Needed in Cloudflare Workers and workerd, which cannot compile wasm
 * at run time: `import wasm from '@distributary/edge-wasm/distributary_edge_wasm_bg.wasm'`.
 * Browsers and Node load the module on the first `EdgeReplica.open`.
 */
export function initialize(module: WebAssembly.Module | BufferSource): void;

/** Loads the wasm module beside this file (browsers, Node); `open` calls it. */
export function ready(): Promise<void>;

/**
 * Resolves once the OPFS cache has written every response it was given so
 * far (writes run in the background; await this before a page unloads if
 * the next load should find them).
 */
export function opfsIdle(): Promise<void>;
