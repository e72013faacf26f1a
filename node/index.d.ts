// Types of statesafe for Node. Written by hand (the addon's own surface is private);
// checked with `tsc --strict` on examples/node. See docs/node.md.

import { EventEmitter } from 'node:events'

/** A JSON value as statesafe stores it; integers beyond 2^53 − 1 come back as `bigint`. */
export type JsonValue = null | boolean | number | bigint | string | JsonValue[] | { [key: string]: JsonValue }

export interface BackupPolicy {
  /** Keep the last `keep` replaced versions (0 disables backups). Default 5. */
  keep?: number
  /** Also keep the newest backup of each of the last `hourly` hours. */
  hourly?: number
  /** Also keep the newest backup of each of the last `daily` days. */
  daily?: number
}

export interface HistoryPolicy {
  /** Keep entries for the last `keep` generations (0 disables history). Default 1000. */
  keep?: number
  /** Documents larger than this are recorded without a patch. Default 64 KiB. */
  maxPatchBytes?: number
}

export interface Options<T> {
  /** The document `get`/`load` return, and `update` starts from, while the file does not exist (never for a damaged file). May hold BigInts. */
  default?: T
  /** How long a writer waits for the lock before `ELOCKTIMEOUT`; 0 tries once. Default 10 000. */
  lockTimeoutMs?: number
  /** `'full'` (default): fsync the file and its directory; `'none'`: atomic but not durable. */
  durability?: 'full' | 'none'
  /** How many replaced versions to keep, or a policy. Default 5. */
  backups?: number | BackupPolicy
  /** How many generations of history to keep, or a policy. Default 1000. */
  history?: number | HistoryPolicy
  /** A JSON Schema every version must satisfy (checked natively, before each commit and on load). */
  schema?: object
  /** A rule checked before each commit (and on reads): `true`/`undefined` accept, `false` or a reason refuse. */
  validate?: (state: T) => boolean | string | void
  /** Refuse commits larger than this many bytes (`ETOOLARGE`). */
  maxBytes?: number
  /** Refuse commits that would leave less free space than this (`ENOSPC`). */
  minFreeBytes?: number
  /** `'plain'` (default): the file is the document; `'sealed'`: an envelope with a checksum over every byte. */
  format?: 'plain' | 'sealed'
  /** `'pretty'` (default, two-space indent) or `'compact'`. */
  layout?: 'pretty' | 'compact'
  /** Create a new file with mode 0600 instead of 0644 less the umask. */
  private?: boolean
  /** What a damaged file does: `'restore'` (default: quarantine, restore newest valid backup) or `'fail'` (`ECORRUPT`). */
  recovery?: 'restore' | 'fail'
  /**
   * Keep a private copy of the document this store last committed through `update`, and
   * start the next `update` from it when the file, read under the lock, still holds
   * exactly that text (saves `JSON.parse` of the document). Costs one more copy of the
   * document in memory (JavaScript) and its text (native). Default `true`.
   */
  cache?: boolean
}

export interface Snapshot<T> {
  value: T
  /** 0 when the file does not exist, then +1 per commit. */
  generation: number
}

export interface ReplaceOptions {
  /** Compare-and-swap: write only if the file is still at this generation (0: only if it does not exist). */
  ifGeneration?: number
}

export interface Holder {
  pid: number
  host: string
  user: string
  command: string
  operation: string
  /** RFC 3339 time the lock was taken. */
  since: string
}

export type ErrorCode =
  | 'ENOENT' | 'EDELETED' | 'ECORRUPT' | 'ELOCKTIMEOUT' | 'ECONFLICT' | 'EINVALID' | 'ESERIALIZE' | 'EABORTED'
  | 'ENOSPC' | 'EACCES' | 'EROFS' | 'EOUTCOMEUNKNOWN' | 'EPOISONED' | 'EBADPATH' | 'EEXIST'
  | 'ETOOLARGE' | 'EUNRECOVERABLE' | 'EBADSCHEMA' | 'ENOGENERATION' | 'EMISMATCH' | 'EREMOTE'
  | 'EUNSAFE' | 'EIO' | 'ECLOSED' | 'ENESTED'
  | 'ETOODEEP' | 'EUSAGE'
  | 'EFINISHED' | 'ESTATESAFE'

/** Every failure of a store. `message` names the file and operation; `cause` is the OS error or the damage. */
export declare class StatesafeError extends Error {
  readonly name: 'StatesafeError'
  readonly code: ErrorCode
  /** What to do next. */
  readonly hint: string | null
  readonly kind?: string
  /** The file, or a PostgreSQL state's URL (its password redacted). */
  readonly path?: string
  /** The operation that failed (`rename`, `syncFile`, `syncDir`, ...), for I/O and EREMOTE errors. */
  readonly op?: string
  /** ELOCKTIMEOUT: who holds the lock (null if it could not be read). */
  readonly holder?: Holder | null
  readonly waitedMs?: number
  /** ECONFLICT: the generation expected, and the one found. */
  readonly expected?: number
  readonly actual?: number
  /** ECORRUPT: where the document stops being valid. */
  readonly line?: number | null
  readonly column?: number | null
  readonly reason?: string
  /** EINVALID: the rule that failed (`validate`, or the schema path) and where (a JSON Pointer). */
  readonly rule?: string
  readonly pointer?: string
  /** EOUTCOMEUNKNOWN: the generation written; ENOGENERATION: the one asked for; EMISMATCH: the one refused. */
  readonly generation?: number
  /** EMISMATCH: whether statesafe committed the refused version (else it was changed outside statesafe). */
  readonly committed?: boolean
  /** ETOOLARGE */
  readonly size?: number
  readonly limit?: number
  /** EDELETED (the state file was deleted while its sidecar shows committed
   * generations; never served as the `default`): `generation` is the last one known,
   * `newestBackup` the newest backup kept (or null), `sidecar` the sidecar directory.
   * `store.recover()` puts the newest provable version back; `store.replace(doc)`
   * starts over on purpose. */
  readonly newestBackup?: string | null
  readonly sidecar?: string
  /** EUNSAFE: which refusal it is (the core's names): `planted` (an object another
   * user may have planted, or one set up by hand) or `sidecar_without_file` (another
   * user's sidecar with no state file beside it: perhaps a deleted state's only
   * backups); `reason` says what is wrong with the object refused. */
  readonly what?: 'planted' | 'sidecar_without_file' | (string & {})
  /** EUNRECOVERABLE: where the damaged file is kept, and every backup tried. */
  readonly quarantined?: string | null
  readonly tried?: { path: string; reason: string }[]
  /** The error as the CLI prints it: `error: … / caused by: … / hint: …`. */
  describe(): string
}

export interface Latency {
  count: number
  totalMs: number
  meanMs: number
  p50Ms: number
  p99Ms: number
  maxMs: number
}

export interface Stats {
  commits: number
  /** Failed writes by kind (`lock_timeout`, `invalid`, ...). */
  failures: Record<string, number>
  recoveries: number
  externalChanges: number
  lockWaits: Latency
  fsync: Latency
  commit: Latency
  /** Updates that started from the store's cached copy (the file held exactly its text). */
  cacheHits: number
  /** Updates that offered the cached copy and read the file instead (it had changed). */
  cacheMisses: number
}

export interface RecoveredEvent {
  type: 'recovered'
  path: string
  damage: string
  quarantined: string
  /** The generation restored (a backup, or a backup carried forward by the history). */
  restoredFrom: number | null
  /** When the history's patches rebuilt it: the backup generation they were applied to. */
  rebuiltFrom: number | null
  generation: number
  message: string
}

/**
 * `recover()` found the state file deleted while its sidecar showed committed
 * generations (EDELETED) and put back the newest version it could prove.
 */
export interface UndeletedEvent {
  type: 'undeleted'
  path: string
  /** The last generation the sidecar knew. */
  known: number
  /** The generation whose document was put back. */
  restoredFrom: number
  /** When changes (the history's patches, the journal's records) rebuilt it: the generation of the whole copy they were applied to. */
  rebuiltFrom: number | null
  /** Where that whole copy was kept: a backup, or the history (an entry holding the whole document). */
  source: 'backup' | 'history'
  /** Journal mode: the first and last generation of the journal's records applied. */
  journal: [number, number] | null
  /** Journal mode: where the journal was kept when it holds generations the version put back lacks. */
  quarantined: string | null
  generation: number
  message: string
}

/**
 * A write that replaces the whole document (`replace`, `restore`) found the state
 * damaged: the damaged version was kept in quarantine (never in the backups), in the
 * same commit.
 */
export interface QuarantinedEvent {
  type: 'quarantined'
  path: string
  damage: string
  /** Where the damaged version is kept (a file, or `URL#quarantine=ID`). */
  quarantined: string
  /** The generation written over it. */
  generation: number
  message: string
}

/**
 * A read met a damaged file while the writers' lock was held (so it could not be
 * repaired now) and served the newest version that verifies: `served`, an older
 * generation than the damaged file's (rebuilt by the history's patches from backup
 * `rebuiltFrom`, when not null). The next write repairs the file.
 */
export interface DamageNotRepairedEvent {
  type: 'damageNotRepaired'
  path: string
  damage: string
  because: string
  served: number
  rebuiltFrom: number | null
  message: string
}

/** The first contact with a file statesafe never wrote: taken as generation `generation`. */
export interface AdoptedEvent {
  type: 'adopted'
  path: string
  generation: number
  message: string
}

export interface ExternalChangeEvent {
  type: 'externalChange'
  path: string
  generation: number
  message: string
}

/**
 * A commit stood, but a step after it failed (recording the history, pruning
 * backups, giving the sidecar the file's permissions, publishing a journal's durable
 * end): nothing to retry, something to fix.
 */
export interface BookkeepingFailedEvent {
  type: 'bookkeepingFailed'
  path: string
  /** The generation committed. */
  generation: number
  /** The step that failed ("recording history"). */
  what: string
  /** The error with its causes ("failed to record history in `…`: Is a directory (os error 21)"). */
  error: string
  message: string
}

export interface CommitEvent {
  type: 'commit'
  path: string
  generation: number
  operation: 'update' | 'replace' | 'restore' | 'recover'
}

export interface SpecialFilesystemEvent {
  type: 'specialFilesystem'
  path: string
  kind: string
  message: string
}

export interface CheckReport {
  ok: boolean
  path: string
  exists: boolean
  generation: number
  format: 'plain' | 'sealed' | null
  external: boolean
  problems: string[]
  backupsValid: number
  backupsDamaged: { path: string; reason: string }[]
  foreign: string[]
  quarantined: string[]
}

export interface BackupInfo {
  generation: number
  path: string
  size: number
  committedMs: number
}

export interface BackupList {
  /** Newest first. */
  backups: BackupInfo[]
  /** Files statesafe did not put there (listed, never touched). */
  foreign: string[]
}

export interface Writer {
  pid: number
  host: string
  user: string
  command: string
}

export interface HistoryEntry {
  generation: number
  time: string
  writer: Writer | null
  change:
    | { type: 'commit' }
    | { type: 'external' }
    | { type: 'restore'; from: number }
    | { type: 'recovery'; from: number | null; quarantined: string | null }
    | { type: 'damaged'; reason: string }
  /** RFC 6902 patch from the previous generation, when recorded. */
  patch: PatchOperation[] | null
  /**
   * The whole document this generation holds, on the entries that keep one (the first
   * of a history segment, after a gap, or without a previous version to patch);
   * `null` on the others, which hold `patch`.
   */
  snapshot: JsonValue | null
  note: string | null
  /**
   * The checksum of the document this generation holds (xxh3-64 of its canonical JSON,
   * 16 hex digits), verified whenever the version is rebuilt from the history; `null`
   * on entries written before statesafe recorded it and on documents too large to hold
   * as a tree (the note says so).
   */
  checksum: string | null
}

export type PatchOperation =
  | { op: 'add' | 'replace' | 'test'; path: string; value: JsonValue }
  | { op: 'remove'; path: string }
  | { op: 'move' | 'copy'; from: string; path: string }

export interface Settings {
  format: 'plain' | 'sealed'
  schema: object | null
  backups: Required<BackupPolicy>
  history: Required<HistoryPolicy>
  lockTimeoutMs: number | null
  maxBytes: number | null
  minFreeBytes: number | null
  recovery: 'restore-from-backup' | 'fail' | 'use-default'
}

export interface Info {
  path: string
  realPath: string
  exists: boolean
  /** The state file was deleted while its sidecar shows commits (every read is `EDELETED`; `recover()` puts it back); `generation` is then the last one known. */
  deleted: boolean
  generation: number
  format: 'plain' | 'sealed' | null
  size: number
  modifiedMs: number | null
  lastWriter: (Writer & { time: string }) | null
  backups: BackupInfo[]
  lockHolder: Holder | null
  settings: Settings
}

/** One state file. Async methods never block the event loop; `…Sync` twins block the calling thread. */
export declare class Store<T = JsonValue> extends EventEmitter {
  /** The file's path, made absolute at the opening against the working directory of
   * then (a later `process.chdir()` moves nothing); a PostgreSQL URL as given. */
  readonly path: string
  readonly closed: boolean

  /** The document, read without a lock (never blocks on writers). */
  get(): Promise<T>
  getSync(): T
  /** The document and its generation, read without a lock. */
  load(): Promise<Snapshot<T>>
  loadSync(): Snapshot<T>
  /** The current generation without parsing the document (0 when missing). */
  generation(): Promise<number>
  generationSync(): number

  /**
   * Locked read-modify-write: `fn` gets the document read under the lock, and either
   * changes it in place and returns nothing (or that same object), or leaves it alone
   * and returns a new document of the same JSON kind (a `null` state may become
   * anything); may be async. Anything else (`s => s.list.push(x)` changes the list AND
   * returns a number) is `EUSAGE`, nothing written. A throw or rejection writes nothing.
   * `ENESTED` at once from inside a function holding the lock of the same file (any
   * store of it).
   */
  update(fn: (state: T) => T | void | Promise<T | void>): Promise<Snapshot<T>>
  updateSync(fn: (state: T) => T | void): Snapshot<T>
  /**
   * Replaces the document; with `ifGeneration`, a compare-and-swap (`ECONFLICT`). Returns the new generation.
   * A number no double holds in a document `load` or `get` served keeps its file text
   * (docs/node.md, "Values"); `RangeError` (`ERANGE`) when where it went cannot be told.
   */
  replace(doc: T, options?: ReplaceOptions): Promise<number>
  replaceSync(doc: T, options?: ReplaceOptions): number
  /** Holds the writers' lock while `fn` runs; returns what `fn` returns. */
  withLock<R>(fn: () => R | Promise<R>): Promise<R>
  withLockSync<R>(fn: () => R): R

  check(): Promise<CheckReport>
  checkSync(): CheckReport
  /** Recovers a damaged file (or puts back a deleted one) now; `null` when it is sound. */
  recover(): Promise<RecoveredEvent | UndeletedEvent | null>
  recoverSync(): RecoveredEvent | UndeletedEvent | null
  backups(): Promise<BackupList>
  backupsSync(): BackupList
  /** Commits a past generation again as a new generation; returns it. A generation that is not a whole number 0 or more is a `TypeError` (`EBADARG`). */
  restore(generation: number): Promise<number>
  restoreSync(generation: number): number
  history(): Promise<HistoryEntry[]>
  historySync(): HistoryEntry[]
  diff(from: number, to: number): Promise<PatchOperation[]>
  diffSync(from: number, to: number): PatchOperation[]
  documentAt(generation: number): Promise<JsonValue>
  documentAtSync(generation: number): JsonValue
  info(): Promise<Info>
  infoSync(): Info
  stats(): Stats
  /** Later calls fail with `ECLOSED`; operations already running finish. */
  close(): void

  on(event: 'commit', listener: (e: CommitEvent) => void): this
  on(event: 'recovered', listener: (e: RecoveredEvent) => void): this
  on(event: 'undeleted', listener: (e: UndeletedEvent) => void): this
  on(event: 'quarantined', listener: (e: QuarantinedEvent) => void): this
  on(event: 'damageNotRepaired', listener: (e: DamageNotRepairedEvent) => void): this
  on(event: 'adopted', listener: (e: AdoptedEvent) => void): this
  on(event: 'externalChange', listener: (e: ExternalChangeEvent) => void): this
  on(event: 'specialFilesystem', listener: (e: SpecialFilesystemEvent) => void): this
  on(event: 'bookkeepingFailed', listener: (e: BookkeepingFailedEvent) => void): this
  once(event: 'commit', listener: (e: CommitEvent) => void): this
  once(event: 'recovered', listener: (e: RecoveredEvent) => void): this
  once(event: 'undeleted', listener: (e: UndeletedEvent) => void): this
  once(event: 'quarantined', listener: (e: QuarantinedEvent) => void): this
  once(event: 'damageNotRepaired', listener: (e: DamageNotRepairedEvent) => void): this
  once(event: 'adopted', listener: (e: AdoptedEvent) => void): this
  once(event: 'externalChange', listener: (e: ExternalChangeEvent) => void): this
  once(event: 'specialFilesystem', listener: (e: SpecialFilesystemEvent) => void): this
  once(event: 'bookkeepingFailed', listener: (e: BookkeepingFailedEvent) => void): this
}

/** Opens the state file at `path`; nothing is created until the first write. */
export declare function open<T = JsonValue>(path: string | URL, options?: Options<T>): Store<T>
/**
 * `open`, with the opening done on a thread of the addon: for a PostgreSQL URL, the
 * connection (bounded by its `connect_timeout`, default 10 s) never blocks the event
 * loop.
 */
export declare function openAsync<T = JsonValue>(path: string | URL, options?: Options<T>): Promise<Store<T>>
